//! Time stamps written field by field into the caller's buffer.
//!
//! chrono's `format` parses its strftime string and goes through `fmt::Write` for every stamp.
//! On a collector's stream, where consecutive messages carry different seconds (many hosts, clock
//! skew), a per-second cache misses and strftime took 12.7% of sluice's CPU (issue 18's
//! profile). These writers take the civil fields once and print fixed-width digits from them.
//! Each matches one chrono format exactly (the tests compare them over random instants); the
//! rare stamps they do not cover (a leap second, a year outside 0..=9999) go to chrono itself.

use std::fmt::Write as _;

use chrono::{
    DateTime, Datelike, FixedOffset, NaiveDate, Offset, SecondsFormat, TimeZone, Timelike, Utc,
};

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// The civil fields of an instant in its own offset.
#[derive(Clone, Copy)]
struct Civil {
    year: u32,
    /// 1..=12.
    month: u32,
    day: u32,
    /// Seconds since local midnight.
    secs: u32,
}

/// A date's civil fields: year, month (1..=12), day.
type Ymd = (u32, u32, u32);

/// The calendar date `days` after 1970-01-01, if its year has four digits (Howard Hinnant's
/// `civil_from_days`).
fn date_of_days(days: i64) -> Option<Ymd> {
    // Days since 0000-03-01, in 400-year eras of 146,097 days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (0..=9999)
        .contains(&year)
        .then_some((year as u32, month, day))
}

/// The local dates of the last UTC date and offset a thread wrote a stamp for. On a
/// collector's stream nearly every stamp falls on the same day or two, so the calendar is
/// worked out once per day, not per stamp: chrono's way (add the offset to the naive time,
/// then read month and day out of its packed date) cost 240 instructions for a BSD stamp, and
/// the plain arithmetic 200 (issue 18's profile).
#[derive(Clone, Copy)]
struct Days {
    utc_date: NaiveDate,
    offset_secs: i32,
    /// Local seconds since the local midnight of `dates[0]` at UTC midnight of `utc_date`.
    start_secs: u32,
    /// The local date at UTC midnight of `utc_date`, and the day after it (`None`: no
    /// four-digit year).
    dates: [Option<Ymd>; 2],
}

impl Days {
    fn new(utc_date: NaiveDate, offset_secs: i32) -> Days {
        let utc_days = i64::from(utc_date.num_days_from_ce()) - UNIX_EPOCH_DAYS_FROM_CE;
        let local = utc_days * 86_400 + i64::from(offset_secs);
        let local_days = local.div_euclid(86_400);
        Days {
            utc_date,
            offset_secs,
            start_secs: local.rem_euclid(86_400) as u32,
            dates: [date_of_days(local_days), date_of_days(local_days + 1)],
        }
    }
}

/// `DateTime::from_timestamp(0, 0)`'s `num_days_from_ce`.
const UNIX_EPOCH_DAYS_FROM_CE: i64 = 719_163;

thread_local! {
    static LAST_DAYS: std::cell::Cell<Option<Days>> = const { std::cell::Cell::new(None) };
}

/// `t`'s civil fields, or `None` where chrono must write it: a leap second (chrono shows
/// `:60`) or a year of other than four digits.
fn civil<Tz: TimeZone>(t: &DateTime<Tz>) -> Option<Civil> {
    let utc = t.naive_utc();
    let time = utc.time();
    if time.nanosecond() >= 1_000_000_000 {
        return None;
    }
    let (date, offset_secs) = (utc.date(), t.offset().fix().local_minus_utc());
    let days = match LAST_DAYS.get() {
        Some(d) if d.utc_date == date && d.offset_secs == offset_secs => d,
        _ => {
            let d = Days::new(date, offset_secs);
            LAST_DAYS.set(Some(d));
            d
        }
    };
    let secs = days.start_secs + time.num_seconds_from_midnight();
    let next = secs >= 86_400;
    let (year, month, day) = days.dates[usize::from(next)]?;
    Some(Civil {
        year,
        month,
        day,
        secs: secs - if next { 86_400 } else { 0 },
    })
}

fn push2(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&two(n));
}

/// `n` (< 100) as two digits.
fn two(n: u32) -> [u8; 2] {
    TWO_DIGITS[n as usize % 100]
}

const TWO_DIGITS: [[u8; 2]; 100] = {
    let mut t = [[0u8; 2]; 100];
    let mut n = 0;
    while n < 100 {
        t[n] = [b'0' + (n / 10) as u8, b'0' + (n % 10) as u8];
        n += 1;
    }
    t
};

// Stamps are built in a fixed-size array and appended at once: one capacity check instead of
// one per byte (a stamp per line, and on a mixed stream no two alike in a row).

/// `HH:MM:SS`.
fn clock(c: Civil) -> [u8; 8] {
    let secs = c.secs;
    let (h, m, s) = (two(secs / 3600), two(secs / 60 % 60), two(secs % 60));
    [h[0], h[1], b':', m[0], m[1], b':', s[0], s[1]]
}

/// `YYYY-MM-DDTHH:MM:SS`.
fn push_iso_seconds(out: &mut Vec<u8>, t: Civil) {
    let (y1, y2, mo, d) = (
        two(t.year / 100),
        two(t.year % 100),
        two(t.month),
        two(t.day),
    );
    let c = clock(t);
    out.extend_from_slice(&[
        y1[0], y1[1], y2[0], y2[1], b'-', mo[0], mo[1], b'-', d[0], d[1], b'T', c[0], c[1], c[2],
        c[3], c[4], c[5], c[6], c[7],
    ]);
}

/// `.` and the first `digits` digits of `nanos` (< 1e9).
fn push_fraction(out: &mut Vec<u8>, nanos: u32, digits: u32) {
    out.push(b'.');
    let mut div = 100_000_000;
    for _ in 0..digits {
        out.push(b'0' + (nanos / div % 10) as u8);
        div /= 10;
    }
}

/// `+HH:MM` or `-HH:MM`.
fn push_offset(out: &mut Vec<u8>, offset_secs: i32) {
    out.push(if offset_secs < 0 { b'-' } else { b'+' });
    let mins = offset_secs.unsigned_abs() / 60;
    push2(out, mins / 60);
    out.push(b':');
    push2(out, mins % 60);
}

fn chrono_format(out: &mut Vec<u8>, t: impl std::fmt::Display) {
    let mut s = String::new();
    let _ = write!(s, "{t}");
    out.extend_from_slice(s.as_bytes());
}

/// `%b %e %H:%M:%S`, the RFC 3164 stamp: `Dec  4 21:53:07`.
pub fn write_bsd(out: &mut Vec<u8>, t: DateTime<FixedOffset>) {
    let Some(c) = civil(&t) else {
        return chrono_format(out, t.format("%b %e %H:%M:%S"));
    };
    let [m1, m2, m3] = *MONTHS[c.month as usize - 1];
    let day = c.day;
    let d1 = if day < 10 {
        b' '
    } else {
        b'0' + (day / 10) as u8
    };
    let k = clock(c);
    out.extend_from_slice(&[
        m1,
        m2,
        m3,
        b' ',
        d1,
        b'0' + (day % 10) as u8,
        b' ',
        k[0],
        k[1],
        k[2],
        k[3],
        k[4],
        k[5],
        k[6],
        k[7],
    ]);
}

/// `%Y-%m-%dT%H:%M:%S%.6f%:z` (rsyslog's RSYSLOG_FileFormat): `2026-12-04T21:53:07.000123+01:00`.
pub fn write_precise(out: &mut Vec<u8>, t: DateTime<FixedOffset>) {
    let nanos = t.nanosecond();
    let Some(c) = civil(&t) else {
        return chrono_format(out, t.format("%Y-%m-%dT%H:%M:%S%.6f%:z"));
    };
    push_iso_seconds(out, c);
    push_fraction(out, nanos, 6);
    push_offset(out, t.offset().local_minus_utc());
}

/// `%Y-%m-%dT%H:%M:%S%.6fZ`: `2026-12-04T21:53:07.000123Z`.
pub fn write_utc_micros(out: &mut Vec<u8>, t: DateTime<Utc>) {
    let nanos = t.nanosecond();
    let Some(c) = civil(&t) else {
        return chrono_format(out, t.format("%Y-%m-%dT%H:%M:%S%.6fZ"));
    };
    push_iso_seconds(out, c);
    push_fraction(out, nanos, 6);
    out.push(b'Z');
}

/// RFC 3339 as `to_rfc3339_opts(SecondsFormat::AutoSi, true)` writes it: no fraction, or 3, 6
/// or 9 digits as the nanoseconds need, and `Z` for a zero offset.
pub fn write_rfc3339_auto(out: &mut Vec<u8>, t: DateTime<FixedOffset>) {
    let nanos = t.nanosecond();
    let Some(c) = civil(&t) else {
        return out.extend_from_slice(t.to_rfc3339_opts(SecondsFormat::AutoSi, true).as_bytes());
    };
    push_iso_seconds(out, c);
    if nanos == 0 {
    } else if nanos.is_multiple_of(1_000_000) {
        push_fraction(out, nanos, 3);
    } else if nanos.is_multiple_of(1_000) {
        push_fraction(out, nanos, 6);
    } else {
        push_fraction(out, nanos, 9);
    }
    match t.offset().local_minus_utc() {
        0 => out.push(b'Z'),
        secs => push_offset(out, secs),
    }
}

/// RFC 3339 as RFC 5424 needs it: fraction cut to microseconds (3 digits when they suffice),
/// `Z` for UTC, the offset otherwise. A stamp RFC 5424 cannot hold (year beyond 0..=9999, or an
/// offset with seconds, as old local mean times have) is written in UTC or as NILVALUE. A leap
/// second (nanoseconds >= 1e9) is written as `:59.999999`, since RFC 5424 has none.
pub fn write_rfc5424(out: &mut Vec<u8>, t: DateTime<FixedOffset>) {
    let t = if t.offset().local_minus_utc() % 60 == 0 {
        t
    } else {
        t.with_timezone(&Utc).fixed_offset()
    };
    // A leap second is held at :59 here (chrono keeps it as the 59th second with nanoseconds
    // past 1e9), so only the year can keep a stamp out.
    let nanos = t.nanosecond();
    let (t, nanos) = match nanos {
        0..1_000_000_000 => (t, nanos),
        _ => (t.with_nanosecond(999_999_999).unwrap_or(t), 999_999_999),
    };
    let Some(c) = civil(&t) else {
        out.push(b'-');
        return;
    };
    push_iso_seconds(out, c);
    let micros = nanos / 1000;
    if micros == 0 {
    } else if micros % 1000 == 0 {
        push_fraction(out, micros * 1000, 3);
    } else {
        push_fraction(out, micros * 1000, 6);
    }
    match t.offset().local_minus_utc() {
        0 => out.push(b'Z'),
        secs => push_offset(out, secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use proptest::prelude::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn instant(secs: i64, nanos: u32, offset_mins: i32) -> DateTime<FixedOffset> {
        let zone = FixedOffset::east_opt(offset_mins * 60).unwrap();
        zone.from_utc_datetime(&DateTime::from_timestamp(secs, nanos).unwrap().naive_utc())
    }

    /// Every writer against the chrono format it replaces.
    fn check(t: DateTime<FixedOffset>) {
        assert_eq!(
            text(|o| write_bsd(o, t)),
            t.format("%b %e %H:%M:%S").to_string()
        );
        assert_eq!(
            text(|o| write_precise(o, t)),
            t.format("%Y-%m-%dT%H:%M:%S%.6f%:z").to_string()
        );
        let utc = t.with_timezone(&Utc);
        assert_eq!(
            text(|o| write_utc_micros(o, utc)),
            utc.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
        );
        assert_eq!(
            text(|o| write_rfc3339_auto(o, t)),
            t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
        );
        // RFC 5424's: microseconds at most, `Z` for UTC, a leap second held at :59.
        let micros = t.nanosecond().min(999_999_999) / 1000;
        let fraction = match micros {
            0 => String::new(),
            m if m % 1000 == 0 => format!(".{:03}", m / 1000),
            m => format!(".{m:06}"),
        };
        let zone = match t.offset().local_minus_utc() {
            0 => "Z".to_string(),
            _ => t.format("%:z").to_string(),
        };
        let expected = if (0..=9999).contains(&t.year()) {
            format!("{}{fraction}{zone}", t.format("%Y-%m-%dT%H:%M:%S")).replace(":60", ":59")
        } else {
            "-".to_string()
        };
        assert_eq!(text(|o| write_rfc5424(o, t)), expected);
    }

    proptest! {
        #[test]
        fn writers_match_chrono(
            // Years 1 to 9999, any nanosecond, offsets of whole minutes up to +-23:59.
            secs in -62_135_596_800i64..253_402_300_799,
            nanos in prop_oneof![Just(0u32), 0..1_000u32, (0..1_000u32).prop_map(|n| n * 1_000_000), 0..1_000_000_000u32],
            offset_mins in -1439i32..=1439,
        ) {
            check(instant(secs, nanos, offset_mins));
        }
    }

    proptest! {
        #[test]
        fn runs_of_stamps_a_few_days_long_match_chrono(
            start in -62_135_596_800i64..253_402_000_000,
            offset_mins in -1439i32..=1439,
            steps in proptest::collection::vec(0i64..40_000, 1..20),
        ) {
            // Stamps near each other, as on a stream: the day worked out once is reused.
            let mut secs = start;
            for step in steps {
                secs += step;
                check(instant(secs, 0, offset_mins));
            }
        }
    }

    #[test]
    fn edges_match_chrono() {
        for (secs, nanos, offset) in [
            (0, 0, 0),
            (1_764_885_187, 123_000, 60),       // 2025-12-04
            (1_764_885_187, 999_999_999, -210), // -03:30
            (1_703_980_800, 0, 0),              // 2023-12-31T00:00:00Z
            (-62_135_596_800, 0, 0),            // 0001-01-01
            (253_402_300_799, 1, 0),            // 9999-12-31T23:59:59
            (951_782_400, 5_000_000, 840),      // 2000-02-29, +14:00
        ] {
            check(instant(secs, nanos, offset));
        }
    }

    #[test]
    fn leap_seconds_and_wide_years_fall_back_to_chrono() {
        let leap = Utc
            .with_ymd_and_hms(2016, 12, 31, 23, 59, 59)
            .unwrap()
            .with_nanosecond(1_500_000_000)
            .unwrap()
            .fixed_offset();
        check(leap);
        assert!(text(|o| write_bsd(o, leap)).ends_with(":60"));
        let far = Utc
            .with_ymd_and_hms(12026, 1, 2, 3, 4, 5)
            .unwrap()
            .fixed_offset();
        check(far);
        let before = Utc
            .with_ymd_and_hms(-5, 1, 2, 3, 4, 5)
            .unwrap()
            .fixed_offset();
        check(before);
    }
}
