//! The receive time in the listener's zone, worked out once for a batch of frames, so that
//! dating a stamp near it is integer arithmetic instead of time-zone lookups per message.

use chrono::{
    DateTime, Datelike, FixedOffset, NaiveDate, NaiveTime, Offset, TimeZone, Timelike, Utc,
};

/// The zone's offset is probed this far either side of the receive time...
const PROBE_SPAN_SECS: i64 = 36 * 3600;
/// ...this often. Real zones never change their offset twice within this step.
const PROBE_STEP_SECS: i64 = 6 * 3600;
/// The largest offset change a zone has made (Pacific/Apia skipped a day in 2011), plus slack:
/// a wall time this far inside the probed span cannot belong to an instant outside it.
const MAX_OFFSET_JUMP_SECS: i64 = 26 * 3600;

/// The receive time as wall time in a zone, and a stretch of wall time around it in which the
/// zone's offset is one and the same (no DST gap or overlap), so a wall time there is placed
/// without asking the zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// The receive time as wall time, in seconds since 1970-01-01T00:00 wall time.
    now: i64,
    /// The year of `now`.
    year: i32,
    /// The zone's offset at the receive time, in seconds east of UTC.
    offset: i32,
    /// Wall times (as `now`) that certainly have `offset`; empty when that is not known.
    steady: (i64, i64),
    /// The UTC dates from two days before the receive day (wall time) to two days after, and
    /// the first one's number of days since 1970: a stamp placed near the receive time finds
    /// its UTC date here instead of chrono working it out (a third of placing's cost).
    dates: (i64, [Option<NaiveDate>; DATES]),
}

/// How many UTC dates [`Clock`] keeps around the receive day.
const DATES: usize = 5;

impl Clock {
    /// The clock of a frame received at `received_at`, for stamps read in `zone`.
    pub fn new<Tz: TimeZone>(received_at: &DateTime<Utc>, zone: &Tz) -> Clock {
        let utc = received_at.timestamp();
        let offset_at = |secs: i64| {
            let t = DateTime::from_timestamp(secs, 0)?;
            Some(
                zone.offset_from_utc_datetime(&t.naive_utc())
                    .fix()
                    .local_minus_utc(),
            )
        };
        let unknown = Clock {
            now: utc,
            year: received_at.year(),
            offset: 0,
            steady: (1, 0),
            dates: (0, [None; DATES]),
        };
        let Some(offset) = offset_at(utc) else {
            return unknown;
        };
        let now = utc + i64::from(offset);
        let Some(year) = DateTime::from_timestamp(now, 0).map(|t| t.year()) else {
            return unknown;
        };
        let probes = PROBE_SPAN_SECS / PROBE_STEP_SECS;
        let steady =
            (-probes..=probes).all(|k| offset_at(utc + k * PROBE_STEP_SECS) == Some(offset));
        let reach = PROBE_SPAN_SECS - MAX_OFFSET_JUMP_SECS;
        let first_day = now.div_euclid(86_400) - 2;
        let epoch = NaiveDate::default();
        let dates = std::array::from_fn(|i| {
            epoch.checked_add_signed(chrono::TimeDelta::try_days(first_day + i as i64)?)
        });
        Clock {
            now,
            year,
            offset,
            dates: (first_day, dates),
            steady: if steady {
                (now - reach, now + reach)
            } else {
                (1, 0)
            },
        }
    }

    /// The receive time as wall time (seconds since 1970 wall time) and its year.
    pub fn now(&self) -> (i64, i32) {
        (self.now, self.year)
    }

    /// A wall time near the receive time, placed with the zone's offset; `None` when it is not
    /// in the steady stretch (or is no date), and the zone must be asked. A missing year is the
    /// receive year, which is what year inference gives so near the receive time.
    pub fn place(
        &self,
        year: Option<i32>,
        month: u32,
        day: u32,
        time: NaiveTime,
    ) -> Option<DateTime<FixedOffset>> {
        let year = year.unwrap_or(self.year);
        let date = days_from_civil(year, month, day)?;
        let wall = date * 86_400 + i64::from(time.num_seconds_from_midnight());
        if !(self.steady.0..=self.steady.1).contains(&wall) {
            return None;
        }
        let offset = FixedOffset::east_opt(self.offset)?;
        let utc = wall - i64::from(self.offset);
        let (utc_days, utc_secs) = (utc.div_euclid(86_400), utc.rem_euclid(86_400) as u32);
        let kept = usize::try_from(utc_days - self.dates.0)
            .ok()
            .and_then(|i| *self.dates.1.get(i)?);
        match kept {
            Some(date) => {
                let time =
                    NaiveTime::from_num_seconds_from_midnight_opt(utc_secs, time.nanosecond())?;
                Some(DateTime::from_naive_utc_and_offset(
                    date.and_time(time),
                    offset,
                ))
            }
            None => NaiveDate::from_ymd_opt(year, month, day)?
                .and_time(time)
                .and_local_timezone(offset)
                .single(),
        }
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar, `None` if there is no
/// such date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i32, month: u32, day: u32) -> Option<i64> {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(1..=days_in_month).contains(&day) {
        return None;
    }
    let (m, d) = (i64::from(month), i64::from(day));
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    Some(era * 146_097 + day_of_era - 719_468)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn days_from_civil_agrees_with_chrono(year in -5000i32..5000, month in 0u32..14, day in 0u32..33) {
            let chrono = NaiveDate::from_ymd_opt(year, month, day)
                .map(|d| d.signed_duration_since(NaiveDate::default()).num_days());
            prop_assert_eq!(days_from_civil(year, month, day), chrono);
        }
    }

    proptest! {
        /// Whatever the clock places, it places as the zone does: wall times up to three days
        /// either side of the receive time, in zones east and west, with half and quarter hours.
        #[test]
        fn placed_stamps_agree_with_the_zone(
            received in 0i64..4_102_444_800,
            zone in prop_oneof![
                Just(chrono_tz::Europe::Berlin),
                Just(chrono_tz::America::New_York),
                Just(chrono_tz::Asia::Kolkata),
                Just(chrono_tz::Pacific::Chatham),
                Just(chrono_tz::Pacific::Apia),
                Just(chrono_tz::UTC),
            ],
            delta in -259_200i64..259_200,
            nanos in prop_oneof![Just(0u32), 0..1_000_000_000u32],
        ) {
            let at = DateTime::from_timestamp(received, 0).unwrap_or_default();
            let clock = Clock::new(&at, &zone);
            let wall = DateTime::from_timestamp(clock.now().0 + delta, nanos)
                .unwrap_or_default()
                .naive_utc();
            let (date, time) = (wall.date(), wall.time());
            let placed = clock.place(Some(date.year()), date.month(), date.day(), time);
            if let Some(t) = placed {
                let want = zone.from_local_datetime(&wall).single().map(|t| t.fixed_offset());
                prop_assert_eq!(Some(t), want);
            }
        }
    }

    /// Near the receive time, the clock places a wall time as the zone does; around a DST
    /// change it does not claim to know.
    #[test]
    fn clock_places_as_the_zone_does() {
        let berlin = chrono_tz::Europe::Berlin;
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap_or_default();
        let noon = NaiveTime::from_hms_opt(12, 0, 0).unwrap_or_default();
        let c = Clock::new(&at("2025-07-01T10:00:00Z"), &berlin);
        let want = berlin.with_ymd_and_hms(2025, 7, 1, 12, 0, 0).single();
        assert_eq!(c.place(None, 7, 1, noon), want.map(|t| t.fixed_offset()));
        assert_eq!(
            c.place(None, 1, 1, noon),
            None,
            "far from now: ask the zone"
        );
        let c = Clock::new(&at("2025-03-30T00:30:00Z"), &berlin);
        assert_eq!(c.place(None, 3, 30, noon), None, "DST changes today");
        let c = Clock::new(&DateTime::<Utc>::MAX_UTC, &berlin);
        assert_eq!(c.place(None, 12, 31, noon), None);
    }
}
