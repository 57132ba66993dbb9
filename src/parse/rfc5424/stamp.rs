//! TIMESTAMP (RFC 5424 §6.2.3): RFC 3339 with upper-case `T` and `Z`, an offset, at most six
//! fraction digits, a calendar date and no leap second.

use chrono::{DateTime, FixedOffset, NaiveDate};
use nom::Parser;
use nom::bytes::complete::take_while_m_n;
use nom::character::complete::{char, one_of};

use super::Fault;
use crate::event::ParseErrorKind;
use crate::parse::{Res, digit, fault_pos, two_digits};

/// TIMESTAMP at `pos`: NILVALUE or a full RFC 3339 stamp (§6.2.3), and where it ends.
pub(super) fn timestamp_field(
    frame: &[u8],
    pos: usize,
) -> Result<(Option<DateTime<FixedOffset>>, usize), Fault> {
    let input = frame.get(pos..).unwrap_or_default();
    if input.first() == Some(&b'-') {
        return Ok((None, pos + 1));
    }
    match stamp_fast(input).map_or_else(|| stamp(input), Ok) {
        Ok((rest, stamp)) => {
            let end = frame.len().saturating_sub(rest.len());
            match stamp.to_datetime() {
                Some(dt) => Ok((Some(dt), end)),
                // Lexically fine but not a calendar date (Sep 31, Feb 29 2023).
                None => Err(Fault::new(ParseErrorKind::BadTimestamp, end, pos)),
            }
        }
        Err(e) => {
            let at = fault_pos(frame, &e);
            let kind = if at >= frame.len() {
                ParseErrorKind::TruncatedHeader
            } else {
                ParseErrorKind::BadTimestamp
            };
            Err(Fault::new(kind, at, pos))
        }
    }
}

/// The fields of an RFC 3339 stamp, range-checked digit by digit but not yet as a calendar date.
#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    year: i32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: u32,
    offset_secs: i32,
}

impl Stamp {
    fn to_datetime(&self) -> Option<DateTime<FixedOffset>> {
        let offset = FixedOffset::east_opt(self.offset_secs)?;
        NaiveDate::from_ymd_opt(self.year, self.month, self.day)?
            .and_hms_nano_opt(self.hour, self.minute, self.second, self.nanos)?
            .and_local_timezone(offset)
            .single()
    }
}

/// [`stamp`] for the shapes senders write, in one pass over fixed positions: `None` for
/// anything else, which `stamp` then reads (and faults) byte by byte. Same results where both
/// succeed (tested).
fn stamp_fast(i: &[u8]) -> Option<(&[u8], Stamp)> {
    let [
        y1,
        y2,
        y3,
        y4,
        b'-',
        mo1,
        mo2,
        b'-',
        d1,
        d2,
        b'T',
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
    let year = two_digits(*y1, *y2)? * 100 + two_digits(*y3, *y4)?;
    let (month, day) = (two_digits(*mo1, *mo2)?, two_digits(*d1, *d2)?);
    let (hour, minute) = (two_digits(*h1, *h2)?, two_digits(*mi1, *mi2)?);
    let second = two_digits(*s1, *s2)?;
    let in_range = (1..=12).contains(&month) && (1..=31).contains(&day);
    if !in_range || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let (rest, nanos) = match rest {
        [b'.', frac @ ..] => {
            let digits = frac
                .iter()
                .take(7)
                .take_while(|b| b.is_ascii_digit())
                .count();
            if !(1..=6).contains(&digits) {
                return None;
            }
            (frac.get(digits..)?, fraction_nanos(frac.get(..digits)?))
        }
        _ => (rest, 0),
    };
    let (rest, offset_secs) = match rest {
        [b'Z', rest @ ..] => (rest, 0),
        [sign @ (b'+' | b'-'), oh1, oh2, b':', om1, om2, rest @ ..] => {
            let (h, m) = (two_digits(*oh1, *oh2)?, two_digits(*om1, *om2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let secs = i32::try_from(h * 3600 + m * 60).ok()?;
            (rest, if *sign == b'-' { -secs } else { secs })
        }
        _ => return None,
    };
    let year = i32::try_from(year).ok()?;
    let stamp = Stamp {
        year,
        month,
        day,
        hour,
        minute,
        second,
        nanos,
        offset_secs,
    };
    Some((rest, stamp))
}

/// `full-date "T" full-time`: upper-case `T` and `Z`, offset required, 1 to 6 fraction digits,
/// seconds 00-59 (no leap second). Fails at the first byte that cannot continue the grammar.
fn stamp(i: &[u8]) -> Res<'_, Stamp> {
    let (i, (y1, y2, y3, y4)) = (d09(), d09(), d09(), d09()).parse(i)?;
    let (i, _) = char('-').parse(i)?;
    let (i, month) = month(i)?;
    let (i, _) = char('-').parse(i)?;
    let (i, day) = mday(i)?;
    let (i, _) = char('T').parse(i)?;
    let (i, hh) = hour(i)?;
    let (i, _) = char(':').parse(i)?;
    let (i, minute) = sexagesimal(i)?;
    let (i, _) = char(':').parse(i)?;
    let (i, second) = sexagesimal(i)?;
    let (i, nanos) = match i.split_first() {
        Some((b'.', rest)) => {
            let (i, digits) = take_while_m_n(1, 6, |b: u8| b.is_ascii_digit()).parse(rest)?;
            (i, fraction_nanos(digits))
        }
        _ => (i, 0),
    };
    let (i, sign) = one_of("Z+-").parse(i)?;
    let (i, offset_secs) = if sign == 'Z' {
        (i, 0)
    } else {
        let (i, h) = hour(i)?;
        let (i, _) = char(':').parse(i)?;
        let (i, m) = sexagesimal(i)?;
        let secs = i32::try_from(h * 3600 + m * 60).unwrap_or(0);
        (i, if sign == '-' { -secs } else { secs })
    };
    let year = i32::try_from(y1 * 1000 + y2 * 100 + y3 * 10 + y4).unwrap_or(0);
    let stamp = Stamp {
        year,
        month,
        day,
        hour: hh,
        minute,
        second,
        nanos,
        offset_secs,
    };
    Ok((i, stamp))
}

fn d09<'a>() -> impl Fn(&'a [u8]) -> Res<'a, u32> {
    digit(b'0', b'9')
}

/// `01`-`12`.
fn month(i: &[u8]) -> Res<'_, u32> {
    let (i, a) = digit(b'0', b'1').parse(i)?;
    let (lo, hi) = if a == 0 { (b'1', b'9') } else { (b'0', b'2') };
    let (i, b) = digit(lo, hi).parse(i)?;
    Ok((i, a * 10 + b))
}

/// `01`-`31` (the calendar check comes later).
fn mday(i: &[u8]) -> Res<'_, u32> {
    let (i, a) = digit(b'0', b'3').parse(i)?;
    let (lo, hi) = match a {
        0 => (b'1', b'9'),
        3 => (b'0', b'1'),
        _ => (b'0', b'9'),
    };
    let (i, b) = digit(lo, hi).parse(i)?;
    Ok((i, a * 10 + b))
}

/// `00`-`23`.
fn hour(i: &[u8]) -> Res<'_, u32> {
    let (i, a) = digit(b'0', b'2').parse(i)?;
    let (i, b) = digit(b'0', if a == 2 { b'3' } else { b'9' }).parse(i)?;
    Ok((i, a * 10 + b))
}

/// `00`-`59`.
fn sexagesimal(i: &[u8]) -> Res<'_, u32> {
    let (i, (a, b)) = (digit(b'0', b'5'), d09()).parse(i)?;
    Ok((i, a * 10 + b))
}

/// Nanoseconds from up to nine fraction digits (further digits are ignored).
pub(crate) fn fraction_nanos(digits: &[u8]) -> u32 {
    let mut nanos = 0u32;
    let mut scale = 1_000_000_000u32;
    for &d in digits.iter().take(9) {
        scale /= 10;
        nanos += u32::from(d.saturating_sub(b'0')).min(9) * scale;
    }
    nanos
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{stamp, stamp_fast};

    proptest! {
        /// The fast path reads what the grammar reads, wherever it reads anything.
        #[test]
        fn fast_stamps_agree_with_the_grammar(
            text in "[0-9]{4}-[0-3][0-9]-[0-3][0-9][Tt][0-2][0-9]:[0-6][0-9]:[0-6][0-9](\\.[0-9]{0,8})?([Zz]|[+-][0-2][0-9]:[0-6][0-9])?[ x]?",
        ) {
            if let Some(fast) = stamp_fast(text.as_bytes()) {
                prop_assert_eq!(Some(fast), stamp(text.as_bytes()).ok());
            }
        }
    }

    #[test]
    fn fast_path_takes_the_usual_shapes() {
        for s in [
            "2003-10-11T22:14:15.003Z",
            "2003-08-24T05:14:15.000003-07:00",
            "2003-10-11T22:14:15+01:00 ",
        ] {
            assert!(stamp_fast(s.as_bytes()).is_some(), "{s}");
        }
    }
}
