//! RFC 3164 timestamps as devices write them (see the parent module), year inference for
//! year-less stamps, and placing zone-less ones in the listener's zone.

use chrono::{
    DateTime, Datelike, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    TimeDelta, TimeZone, Utc,
};
use nom::Parser;
use nom::character::complete::char;

use super::clock::Clock;
use crate::parse::{Res, digit, rfc5424::fraction_nanos, two_digits};

/// A year-less stamp further ahead of the receive time than this belongs to the year before.
const FUTURE_SLACK: TimeDelta = TimeDelta::days(31);
/// A year-less stamp further behind than this belongs to the next year (`Jan 1` read on Dec 31).
const PAST_SLACK: TimeDelta = TimeDelta::days(334);

/// What is at the start of the header.
pub(super) enum Stamp {
    /// Nothing that looks like a timestamp.
    Absent,
    /// Looks like a timestamp but is not a valid one; `at` is the offending byte.
    Bad { at: usize },
    /// A timestamp ending at `end` (`value` is `None` only if no zone offset could be found);
    /// `adjusted` when it named a local time that the zone skips or repeats.
    Found {
        value: Option<DateTime<FixedOffset>>,
        end: usize,
        adjusted: bool,
    },
}

/// A lexed stamp: date and time checked for range, the year and zone as given.
struct Lexed<'a> {
    rest: &'a [u8],
    /// Where the day (or the date) starts: the offending spot when the date does not exist.
    date_at: &'a [u8],
    year: Option<i32>,
    month: u32,
    day: u32,
    time: NaiveTime,
    offset: Option<i32>,
}

/// `Err(None)`: no stamp here. `Err(Some(rest))`: a bad stamp, faulting where `rest` starts.
type Lex<'a> = Result<Lexed<'a>, Option<&'a [u8]>>;

/// What dating a stamp takes: when the frame came, the zone of stamps without an offset, and
/// the clock worked out from both (once per batch of frames).
pub struct When<'a, Tz> {
    /// When the frame was received.
    pub received_at: DateTime<Utc>,
    /// The listener's zone.
    pub zone: &'a Tz,
    /// `received_at` in `zone`.
    pub clock: Clock,
}

/// The RFC 3164 TIMESTAMP at `pos`, in any of the forms in the module docs.
pub(super) fn timestamp<Tz: TimeZone>(frame: &[u8], pos: usize, when: &When<'_, Tz>) -> Stamp {
    let input = frame.get(pos..).unwrap_or_default();
    let offset_of = |rest: &[u8]| frame.len().saturating_sub(rest.len());
    if let Some((rest, month, day, time)) = bsd_fixed(input)
        && let Some(placed) = date_time(when, None, month, day, time, None)
    {
        return Stamp::Found {
            value: placed.map(|(t, _)| t),
            end: offset_of(rest),
            adjusted: placed.is_some_and(|(_, adjusted)| adjusted),
        };
    }
    let lexed = match input.first() {
        Some(b'0'..=b'9') if input.get(4) == Some(&b'-') => iso(input),
        Some(b'0'..=b'9') => year_first(input),
        Some(_) => bsd(input, None),
        None => Err(None),
    };
    let s = match lexed {
        Ok(s) => s,
        Err(None) => return Stamp::Absent,
        Err(Some(rest)) => {
            return Stamp::Bad {
                at: offset_of(rest),
            };
        }
    };
    match date_time(when, s.year, s.month, s.day, s.time, s.offset) {
        Some(placed) => Stamp::Found {
            value: placed.map(|(t, _)| t),
            end: offset_of(s.rest),
            adjusted: placed.is_some_and(|(_, adjusted)| adjusted),
        },
        None => Stamp::Bad {
            at: offset_of(s.date_at),
        },
    }
}

/// A stamp's parts as a time: with the offset it came with, else in the listener's zone, and
/// a missing year inferred. `None` when there is no such date (or offset); `Some(None)` when the
/// zone cannot place it. The flag: placed by the DST rule of [`localize`].
pub(super) fn date_time<Tz: TimeZone>(
    when: &When<'_, Tz>,
    year: Option<i32>,
    month: u32,
    day: u32,
    time: NaiveTime,
    offset: Option<i32>,
) -> Option<Option<(DateTime<FixedOffset>, bool)>> {
    // Most stamps are near the receive time: the clock places them without the zone.
    if offset.is_none()
        && let Some(t) = when.clock.place(year, month, day, time)
    {
        return Some(Some((t, false)));
    }
    let naive = match year {
        Some(y) => NaiveDate::from_ymd_opt(y, month, day).map(|d| d.and_time(time)),
        None => {
            // The receive time as wall time, worked out once by the clock.
            let now = DateTime::from_timestamp(when.clock.now().0, 0).map(|t| t.naive_utc());
            infer_year(
                month,
                day,
                time,
                now.unwrap_or(when.received_at.naive_utc()),
            )
        }
    }?;
    place(naive, offset, when.zone)
}

/// A wall time with the offset it came with, else in `zone`; `None` for an offset out of range,
/// `Some(None)` if the zone cannot place it. The flag: placed by the DST rule of [`localize`].
fn place<Tz: TimeZone>(
    naive: NaiveDateTime,
    offset: Option<i32>,
    zone: &Tz,
) -> Option<Option<(DateTime<FixedOffset>, bool)>> {
    Some(match offset {
        Some(secs) => {
            let off = FixedOffset::east_opt(secs)?;
            naive.and_local_timezone(off).single().map(|t| (t, false))
        }
        None => localize(zone, naive),
    })
}

/// `Mmm SP+ d[d] SP+ [yyyy SP+] hh:mm:ss [(.|,)frac] [: | SP yyyy]`. It counts as a stamp
/// (and faults become `Bad`) from a month name, a day and a digit after it on.
/// `Mmm dd hh:mm:ss` (day space-padded) and then SP or the end: the stamp nearly every BSD
/// sender writes, read at fixed places. `None` for anything else, [`bsd`] included, which then
/// reads it; where both read a stamp, they read the same (tested).
fn bsd_fixed(i: &[u8]) -> Option<(&[u8], u32, u32, NaiveTime)> {
    let [
        m1,
        m2,
        m3,
        b' ',
        d1,
        d2,
        b' ',
        h1,
        h2,
        b':',
        mi1,
        mi2,
        b':',
        s1,
        s2,
        rest @ ..,
    ] = i
    else {
        return None;
    };
    // A year (LinkSys) or a zone (Cisco) after the time, or a fraction: the lexer's cases.
    let after = match rest {
        [] => rest,
        [b' ', after @ ..] => after,
        _ => return None,
    };
    if four_digits(after).is_some() || cisco_zone(rest).is_some() {
        return None;
    }
    let month = month_number(&[*m1, *m2, *m3])?;
    let day = two_digits(if *d1 == b' ' { b'0' } else { *d1 }, *d2)?;
    if !(1..=days_in(month)).contains(&day) {
        return None;
    }
    let (h, m, s) = (
        two_digits(*h1, *h2)?,
        two_digits(*mi1, *mi2)?,
        two_digits(*s1, *s2)?,
    );
    Some((rest, month, day, NaiveTime::from_hms_opt(h, m, s)?))
}

/// Cisco IOS may add ` ZONE` before the `:` (see [`cisco_zone`]).
fn bsd(i: &[u8], year: Option<i32>) -> Lex<'_> {
    let month = i.get(..3).and_then(month_number).ok_or(None)?;
    let i = spaces(i.get(3..).unwrap_or_default()).ok_or(None)?;
    let date_at = i;
    let digits = i.iter().take(2).take_while(|b| b.is_ascii_digit()).count();
    let (day, i) = i
        .split_at_checked(digits)
        .filter(|_| digits > 0)
        .ok_or(None)?;
    let i = spaces(i).ok_or(None)?;
    if !i.first().is_some_and(u8::is_ascii_digit) {
        return Err(None);
    }
    let day = number(day);
    if !(1..=days_in(month)).contains(&day) {
        return Err(Some(date_at));
    }
    let (i, year) = match (year, four_digits(i)) {
        (None, Some((rest, y))) if rest.first() == Some(&b' ') => {
            (spaces(rest).ok_or(None)?, Some(y))
        }
        _ => (i, year),
    };
    let (i, time) = hms(i)?;
    let (i, offset) = cisco_zone(i).map_or((i, None), |(rest, utc)| (rest, utc.then_some(0)));
    let (i, year) = match i.split_first() {
        Some((b':', rest)) => (rest, year),
        Some((b' ', rest)) if year.is_none() => match four_digits(rest) {
            Some((after, y)) if matches!(after.first(), None | Some(b' ')) => (after, Some(y)),
            _ => (i, year),
        },
        _ => (i, year),
    };
    end_of_stamp(i)?;
    Ok(Lexed {
        rest: i,
        date_at,
        year,
        month,
        day,
        time,
        offset,
    })
}

/// Cisco IOS `show-timezone`: ` ZONE` (2 to 5 capitals) before the stamp's `:`, when a `%` tag
/// follows (`… 00:01:02.345 CET: %SYS-5-CONFIG_I: …`). Returns what follows ZONE and whether it
/// is UTC (or GMT): other abbreviations are ambiguous (IST, CST), so the listener's zone applies.
fn cisco_zone(i: &[u8]) -> Option<(&[u8], bool)> {
    let word = i.strip_prefix(b" ")?;
    let len = word
        .iter()
        .take(6)
        .take_while(|b| b.is_ascii_uppercase())
        .count();
    let (zone, rest) = (word.get(..len)?, word.get(len..)?);
    let tagged = rest.strip_prefix(b":")?;
    let tagged = tagged.strip_prefix(b" ").unwrap_or(tagged);
    ((2..=5).contains(&len) && tagged.first() == Some(&b'%'))
        .then_some((rest, matches!(zone, b"UTC" | b"GMT")))
}

/// Brocade: `yyyy Mmm dd hh:mm:ss`.
fn year_first(i: &[u8]) -> Lex<'_> {
    let (rest, year) = four_digits(i).ok_or(None)?;
    let (rest, _) = char::<_, nom::error::Error<&[u8]>>(' ')
        .parse(rest)
        .map_err(|_| None)?;
    bsd(rest, Some(year))
}

/// RFC 3339, tolerantly: `yyyy-mm-dd(T|t|SP)hh:mm:ss[(.|,)frac][Z|±hh[:mm]]`. It counts as a
/// stamp from `yyyy-mm-dd` followed by `T`, or by SP and `hh:`, on.
fn iso(i: &[u8]) -> Lex<'_> {
    let date_at = i;
    let (rest, year) = four_digits(i).ok_or(None)?;
    let (rest, (_, month, _, day)) = (char('-'), two, char('-'), two)
        .parse(rest)
        .map_err(|_: NomErr| None)?;
    let i = match rest {
        [b'T' | b't', time @ ..] => time,
        [b' ', time @ ..] if matches!(time, [h1, h2, b':', ..] if h1.is_ascii_digit() && h2.is_ascii_digit()) => {
            time
        }
        _ => return Err(None),
    };
    if NaiveDate::from_ymd_opt(year, month, day).is_none() {
        return Err(Some(date_at));
    }
    let (i, time) = hms(i)?;
    let (i, offset) = match i.split_first() {
        Some((b'Z' | b'z', rest)) => (rest, Some(0)),
        Some((&sign @ (b'+' | b'-'), rest)) => {
            let (rest, h) = two(rest).bad()?;
            let (rest, m) = match rest {
                [b':', mm @ ..] => two(mm).bad()?,
                [b'0'..=b'9', ..] => two(rest).bad()?,
                _ => (rest, 0),
            };
            if h > 23 || m > 59 {
                return Err(Some(i));
            }
            let secs = i32::try_from(h * 3600 + m * 60).unwrap_or(0);
            (rest, Some(if sign == b'-' { -secs } else { secs }))
        }
        _ => (i, None),
    };
    end_of_stamp(i)?;
    Ok(Lexed {
        rest: i,
        date_at,
        year: Some(year),
        month,
        day,
        time,
        offset,
    })
}

/// `hh:mm:ss` and an optional `.frac` or `,frac` (any length; nanoseconds kept).
pub(super) fn hms(i: &[u8]) -> Result<(&[u8], NaiveTime), Option<&[u8]>> {
    // The grammar finds where a malformed time goes wrong.
    let (rest, (h, m, s)) = match fixed_hms(i) {
        Some(parsed) => parsed,
        None => {
            let (rest, (h, _, m, _, s)) = (two, char(':'), two, char(':'), two)
                .parse(i)
                .map_err(|e| Some(fault_rest(e, i)))?;
            (rest, (h, m, s))
        }
    };
    let (rest, nanos) = match rest {
        [b'.' | b',', frac @ ..] => {
            // `22:14:15.` with no digits is what some senders write for a zero fraction.
            let digits = frac.iter().take_while(|b| b.is_ascii_digit()).count();
            if digits == 0 && rest.first() == Some(&b',') {
                return Err(Some(frac));
            }
            let (digits, after) = frac.split_at_checked(digits).unwrap_or((frac, b""));
            (after, fraction_nanos(digits))
        }
        _ => (rest, 0),
    };
    let time = NaiveTime::from_hms_nano_opt(h, m, s, nanos);
    time.map(|t| (rest, t)).ok_or(Some(i))
}

/// Hours, minutes, seconds.
type Hms = (u32, u32, u32);

/// `hh:mm:ss` as digits at fixed places (the usual shape, read in one go).
fn fixed_hms(i: &[u8]) -> Option<(&[u8], Hms)> {
    let [h1, h2, b':', m1, m2, b':', s1, s2, rest @ ..] = i else {
        return None;
    };
    let (h, m) = (two_digits(*h1, *h2)?, two_digits(*m1, *m2)?);
    Some((rest, (h, m, two_digits(*s1, *s2)?)))
}

/// A stamp ends at SP or at the end of input.
fn end_of_stamp(i: &[u8]) -> Result<(), Option<&[u8]>> {
    match i.first() {
        None | Some(b' ') => Ok(()),
        Some(_) => Err(Some(i)),
    }
}

type NomErr<'a> = nom::Err<nom::error::Error<&'a [u8]>>;

/// Turns a nom failure into "bad stamp, faulting here".
trait Bad<'a, T> {
    fn bad(self) -> Result<T, Option<&'a [u8]>>;
}

impl<'a, T> Bad<'a, T> for Result<T, NomErr<'a>> {
    fn bad(self) -> Result<T, Option<&'a [u8]>> {
        self.map_err(|e| Some(fault_rest(e, &[])))
    }
}

fn fault_rest<'a>(e: NomErr<'a>, fallback: &'a [u8]) -> &'a [u8] {
    match e {
        nom::Err::Error(e) | nom::Err::Failure(e) => e.input,
        nom::Err::Incomplete(_) => fallback,
    }
}

fn number(digits: &[u8]) -> u32 {
    digits.iter().fold(0u32, |n, d| {
        n.saturating_mul(10).saturating_add(u32::from(d - b'0'))
    })
}

/// What follows one or more SP at the start of `i`; `None` without one.
fn spaces(i: &[u8]) -> Option<&[u8]> {
    let n = i.iter().take_while(|&&b| b == b' ').count();
    i.get(n..).filter(|_| n > 0)
}

pub(super) fn two(i: &[u8]) -> Res<'_, u32> {
    let (i, (a, b)) = (digit(b'0', b'9'), digit(b'0', b'9')).parse(i)?;
    Ok((i, a * 10 + b))
}

/// Exactly four digits (not followed by a fifth) as a year.
pub(super) fn four_digits(i: &[u8]) -> Option<(&[u8], i32)> {
    match i {
        [a, b, c, d, rest @ ..]
            if [a, b, c, d].iter().all(|x| x.is_ascii_digit())
                && !rest.first().is_some_and(u8::is_ascii_digit) =>
        {
            let year = [a, b, c, d]
                .iter()
                .fold(0i32, |y, x| y * 10 + i32::from(**x - b'0'));
            Some((rest, year))
        }
        _ => None,
    }
}

/// `Jan`..`Dec`, any case.
fn month_number(name: &[u8]) -> Option<u32> {
    let [a, b, c] = name else { return None };
    // ASCII letters to lower case; other bytes cannot match afterwards.
    Some(match [a | 0x20, b | 0x20, c | 0x20] {
        [b'j', b'a', b'n'] => 1,
        [b'f', b'e', b'b'] => 2,
        [b'm', b'a', b'r'] => 3,
        [b'a', b'p', b'r'] => 4,
        [b'm', b'a', b'y'] => 5,
        [b'j', b'u', b'n'] => 6,
        [b'j', b'u', b'l'] => 7,
        [b'a', b'u', b'g'] => 8,
        [b's', b'e', b'p'] => 9,
        [b'o', b'c', b't'] => 10,
        [b'n', b'o', b'v'] => 11,
        [b'd', b'e', b'c'] => 12,
        _ => return None,
    })
}

/// Days in `month` of a leap year: the most a year-less date can have.
fn days_in(month: u32) -> u32 {
    match month {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The year for a year-less stamp, given the receive time `now` in the same zone: the current
/// year, but a stamp over a month ahead is from last year and one over eleven months behind is
/// from next year (E03). Feb 29 goes to the latest leap year not over a month ahead (E01).
pub fn infer_year(
    month: u32,
    day: u32,
    time: NaiveTime,
    now: NaiveDateTime,
) -> Option<NaiveDateTime> {
    let year = now.year();
    let at = |y: i32| NaiveDate::from_ymd_opt(y, month, day).map(|d| d.and_time(time));
    if (month, day) == (2, 29) {
        return (year.saturating_sub(8)..=year.saturating_add(1))
            .rev()
            .filter_map(at)
            .find(|dt| dt.signed_duration_since(now) <= FUTURE_SLACK);
    }
    let this = at(year)?;
    let ahead = this.signed_duration_since(now);
    if ahead > FUTURE_SLACK {
        at(year.saturating_sub(1))
    } else if ahead < -PAST_SLACK {
        at(year.saturating_add(1))
    } else {
        Some(this)
    }
}

/// A local wall time as a fixed-offset time in `zone`, and whether a DST rule placed it.
/// Ambiguous (DST overlap): the earliest. Nonexistent (DST gap): shifted forward an hour, as the
/// clock was; failing that, read with the offset in force at that time in UTC. Never panics (E02).
pub fn localize<Tz: TimeZone>(
    zone: &Tz,
    naive: NaiveDateTime,
) -> Option<(DateTime<FixedOffset>, bool)> {
    let t = match zone.from_local_datetime(&naive) {
        LocalResult::Single(dt) => return Some((dt.fixed_offset(), false)),
        // chrono's `Local` does not always put the earlier instant first, so compare.
        LocalResult::Ambiguous(a, b) => Some(if a <= b { a } else { b }.fixed_offset()),
        LocalResult::None => naive
            .checked_add_signed(TimeDelta::hours(1))
            .and_then(|later| zone.from_local_datetime(&later).earliest())
            .map(|dt| dt.fixed_offset())
            .or_else(|| {
                let offset = zone.offset_from_utc_datetime(&naive).fix();
                naive.and_local_timezone(offset).single()
            }),
    };
    t.map(|t| (t, true))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{bsd, bsd_fixed};

    proptest! {
        /// The fixed-place reading agrees with the lexer wherever it reads a stamp.
        #[test]
        fn fixed_bsd_stamps_agree_with_the_lexer(
            text in "(Jan|Feb|Oct|oct|Foo) ( [0-9]|[0-3][0-9]|[0-9] ) ?[0-2][0-9]:[0-6][0-9]:[0-6][0-9](\\.5|:| [0-9]{4}| UTC: %X| host| )?",
        ) {
            if let Some((rest, month, day, time)) = bsd_fixed(text.as_bytes()) {
                let lexed = bsd(text.as_bytes(), None).ok();
                let lexed = lexed.map(|l| (l.rest, l.month, l.day, l.time, l.year, l.offset));
                prop_assert_eq!(lexed, Some((rest, month, day, time, None, None)));
            }
        }
    }
}
