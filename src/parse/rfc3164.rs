//! RFC 3164 (BSD syslog), read tolerantly: `[TIMESTAMP SP [HOSTNAME SP]] [TAG] MSG`, as real
//! senders write it.
//!
//! - TIMESTAMP: `Mmm dd hh:mm:ss` (month case-insensitive, day space-padded or one digit), with
//!   an optional `.frac`/`,frac`, a year before the time (`Oct 11 2024 22:14:15`, Cisco) or after
//!   it (`Oct 11 22:14:15 2024`, LinkSys), a trailing `:` (Cisco), a leading year
//!   (`2024 Oct 11 …`, Brocade), or an RFC 3339 stamp (zone optional, SP allowed for `T`).
//!   Zone-less stamps are local time in the given zone; a missing year is inferred from the
//!   receive time. Only text that clearly is a stamp but is wrong (`Feb 30`, `25:00:00`,
//!   `22:14` without seconds) gets `bad_timestamp`, with MSG from the stamp on; anything else
//!   that is no stamp is simply not one.
//! - HOSTNAME, only after a TIMESTAMP: the next word, unless it looks like a TAG (ends with `:`,
//!   or holds `[`; an IPv6 shorthand ending in `::` stays a hostname). A word with `/` or bytes
//!   outside PRINTUSASCII is no hostname: from there on everything is MSG.
//! - TAG: 1 to 48 PRINTUSASCII bytes but `:`, `[` and `]`, ended by `:`, `[pid]` or, after a
//!   TIMESTAMP, a SP. Without a TIMESTAMP a first word ended by SP is text, not a TAG.
//!   One SP after `:` is part of the separator.

use chrono::{
    DateTime, Datelike, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    TimeDelta, TimeZone, Utc,
};
use memchr::memchr;
use nom::Parser;
use nom::bytes::complete::{take_while_m_n, take_while1};
use nom::character::complete::char;

use super::{Res, digit, is_print, rfc5424::fraction_nanos, set_message};
use crate::event::{Facility, ParseError, ParseErrorKind, Parsed, Protocol, Severity, Span};

/// Longest TAG taken as APP-NAME (RFC 3164 says 32; rsyslog keeps longer ones; 48 = RFC 5424).
pub const MAX_TAG: usize = 48;
/// Longest `[pid]` content taken as PROCID.
pub const MAX_PID: usize = 128;
/// Longest word taken as HOSTNAME.
pub const MAX_HOSTNAME: usize = 255;

/// A year-less stamp further ahead of the receive time than this belongs to the year before.
const FUTURE_SLACK: TimeDelta = TimeDelta::days(31);
/// A year-less stamp further behind than this belongs to the next year (`Jan 1` read on Dec 31).
const PAST_SLACK: TimeDelta = TimeDelta::days(334);

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parses the RFC 3164 message that starts at `start` (after the PRI, or 0 without one).
/// `facility` and `severity` come from the PRI; `received_at` and `zone` date year- or zone-less
/// stamps. Never panics.
pub fn parse<Tz: TimeZone>(
    frame: &[u8],
    start: usize,
    facility: Facility,
    severity: Severity,
    received_at: &DateTime<Utc>,
    zone: &Tz,
) -> Parsed {
    let mut p = Parsed::new(Protocol::Rfc3164, facility, severity, frame.len());
    let mut msg = header(frame, start, received_at, zone, &mut p);
    if p.parse_error.is_none() && frame.get(msg..).is_some_and(|m| m.starts_with(BOM)) {
        msg += BOM.len();
    }
    // RFC 3164 has no MSG-UTF8 rule: any bytes are MSG, `msg_utf8` says whether they are UTF-8.
    let _ = set_message(&mut p, frame, msg);
    p
}

/// Reads TIMESTAMP, HOSTNAME and TAG into `p`; returns where MSG starts.
fn header<Tz: TimeZone>(
    frame: &[u8],
    start: usize,
    received_at: &DateTime<Utc>,
    zone: &Tz,
    p: &mut Parsed,
) -> usize {
    // HP ProCurve and others put a SP between PRI and TIMESTAMP.
    let head = skip_spaces(frame, start);
    let mut pos = match timestamp(frame, head, received_at, zone) {
        Stamp::Absent => return tag(frame, head, false, p).unwrap_or(start),
        Stamp::Bad { at } => {
            p.parse_error = Some(ParseError {
                kind: ParseErrorKind::BadTimestamp,
                at,
            });
            return head;
        }
        Stamp::Found { value, end } => {
            p.timestamp = value;
            skip_spaces(frame, end)
        }
    };
    let rest = frame.get(pos..).unwrap_or_default();
    let word = rest
        .get(..memchr(b' ', rest).unwrap_or(rest.len()))
        .unwrap_or_default();
    if word.is_empty() {
        return pos;
    }
    let tag_like = word.contains(&b'[') || (word.ends_with(b":") && !word.ends_with(b"::"));
    if !tag_like {
        let hostname = word.len() <= MAX_HOSTNAME && word.iter().all(|&b| is_print(b) && b != b'/');
        if !hostname {
            return pos;
        }
        p.hostname = Some(Span::new(pos, pos + word.len()));
        pos = (pos + word.len() + 1).min(frame.len());
    }
    tag(frame, pos, true, p).unwrap_or(pos)
}

/// TAG at `pos`: sets APP-NAME (and PROCID) and returns where MSG starts, or `None` (and leaves
/// `p` alone) when there is no TAG there. `space_ends_tag`: whether `word SP` is a TAG.
fn tag(frame: &[u8], pos: usize, space_ends_tag: bool, p: &mut Parsed) -> Option<usize> {
    let rest = frame.get(pos..)?;
    let is_tag = |b: &u8| is_print(*b) && !matches!(b, b':' | b'[' | b']');
    let len = rest.iter().take(MAX_TAG + 1).position(|b| !is_tag(b))?;
    if len == 0 {
        return None;
    }
    let end = pos + len;
    let (procid, msg) = match rest.get(len) {
        Some(b':') => (None, after_colon(frame, end + 1)),
        Some(b' ') if space_ends_tag => (None, end + 1),
        Some(b'[') => {
            let pid = frame.get(end + 1..)?;
            let pid_len = pid.iter().take(MAX_PID + 1).position(|&b| b == b']')?;
            let ok = pid
                .get(..pid_len)?
                .iter()
                .all(|&b| is_print(b) && b != b'[');
            if pid_len == 0 || !ok {
                return None;
            }
            let close = end + 1 + pid_len;
            let msg = match frame.get(close + 1) {
                None => close + 1,
                Some(b':') => after_colon(frame, close + 2),
                Some(b' ') => close + 2,
                Some(_) => return None,
            };
            (Some(Span::new(end + 1, close)), msg)
        }
        _ => return None,
    };
    p.app_name = Some(Span::new(pos, end));
    p.procid = procid;
    Some(msg)
}

/// One SP after the TAG's colon belongs to the separator.
fn after_colon(frame: &[u8], pos: usize) -> usize {
    if frame.get(pos) == Some(&b' ') {
        pos + 1
    } else {
        pos
    }
}

fn skip_spaces(frame: &[u8], pos: usize) -> usize {
    let rest = frame.get(pos..).unwrap_or_default();
    pos + rest.iter().take_while(|&&b| b == b' ').count()
}

/// What is at the start of the header.
enum Stamp {
    /// Nothing that looks like a timestamp.
    Absent,
    /// Looks like a timestamp but is not a valid one; `at` is the offending byte.
    Bad { at: usize },
    /// A timestamp ending at `end` (`value` is `None` only if no zone offset could be found).
    Found {
        value: Option<DateTime<FixedOffset>>,
        end: usize,
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

fn timestamp<Tz: TimeZone>(
    frame: &[u8],
    pos: usize,
    received_at: &DateTime<Utc>,
    zone: &Tz,
) -> Stamp {
    let input = frame.get(pos..).unwrap_or_default();
    let offset_of = |rest: &[u8]| frame.len().saturating_sub(rest.len());
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
    let bad = Stamp::Bad {
        at: offset_of(s.date_at),
    };
    let naive = match s.year {
        Some(y) => NaiveDate::from_ymd_opt(y, s.month, s.day).map(|d| d.and_time(s.time)),
        None => {
            // Not `naive_local()`, which panics at the ends of chrono's range.
            let utc = received_at.naive_utc();
            let offset = zone.offset_from_utc_datetime(&utc).fix().local_minus_utc();
            let now = utc.checked_add_signed(TimeDelta::seconds(offset.into()));
            infer_year(s.month, s.day, s.time, now.unwrap_or(utc))
        }
    };
    let Some(naive) = naive else { return bad };
    let value = match s.offset {
        Some(secs) => match FixedOffset::east_opt(secs) {
            Some(off) => naive.and_local_timezone(off).single(),
            None => return bad,
        },
        None => localize(zone, naive),
    };
    Stamp::Found {
        value,
        end: offset_of(s.rest),
    }
}

/// `Mmm SP+ d[d] SP+ [yyyy SP+] hh:mm:ss [(.|,)frac] [: | SP yyyy]`. It counts as a stamp
/// (and faults become `Bad`) from a month name, a day and a digit after it on.
fn bsd(i: &[u8], year: Option<i32>) -> Lex<'_> {
    let month = i.get(..3).and_then(month_number).ok_or(None)?;
    let i = i.get(3..).unwrap_or_default();
    let (i, _) = spaces(i).map_err(|_| None)?;
    let date_at = i;
    let (i, day) = take_while_m_n(1, 2, is_digit)
        .parse(i)
        .map_err(|_: NomErr| None)?;
    let (i, _) = spaces(i).map_err(|_| None)?;
    if !i.first().is_some_and(u8::is_ascii_digit) {
        return Err(None);
    }
    let day = number(day);
    if !(1..=31).contains(&day) || NaiveDate::from_ymd_opt(2000, month, day).is_none() {
        return Err(Some(date_at));
    }
    let (i, year) = match (year, four_digits(i)) {
        (None, Some((rest, y))) if rest.first() == Some(&b' ') => (spaces(rest).bad()?.0, Some(y)),
        _ => (i, year),
    };
    let (i, time) = hms(i)?;
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
        offset: None,
    })
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
fn hms(i: &[u8]) -> Result<(&[u8], NaiveTime), Option<&[u8]>> {
    let (rest, (h, _, m, _, s)) = (two, char(':'), two, char(':'), two)
        .parse(i)
        .map_err(|e| Some(fault_rest(e, i)))?;
    let (rest, nanos) = match rest {
        [b'.' | b',', frac @ ..] => {
            let (after, digits) = take_while1(is_digit).parse(frac).bad()?;
            (after, fraction_nanos(digits))
        }
        _ => (rest, 0),
    };
    let time = NaiveTime::from_hms_nano_opt(h, m, s, nanos);
    time.map(|t| (rest, t)).ok_or(Some(i))
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

fn is_digit(b: u8) -> bool {
    b.is_ascii_digit()
}

fn number(digits: &[u8]) -> u32 {
    digits.iter().fold(0u32, |n, d| {
        n.saturating_mul(10).saturating_add(u32::from(d - b'0'))
    })
}

fn spaces(i: &[u8]) -> Res<'_, &[u8]> {
    take_while1(|b| b == b' ').parse(i)
}

fn two(i: &[u8]) -> Res<'_, u32> {
    let (i, (a, b)) = (digit(b'0', b'9'), digit(b'0', b'9')).parse(i)?;
    Ok((i, a * 10 + b))
}

/// Exactly four digits (not followed by a fifth) as a year.
fn four_digits(i: &[u8]) -> Option<(&[u8], i32)> {
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
    const MONTHS: [&[u8; 3]; 12] = [
        b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov",
        b"dec",
    ];
    let i = MONTHS.iter().position(|m| name.eq_ignore_ascii_case(*m))?;
    u32::try_from(i + 1).ok()
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

/// A local wall time as a fixed-offset time in `zone`. Ambiguous (DST overlap): the earliest.
/// Nonexistent (DST gap): shifted forward an hour, as the clock was; failing that, read with
/// the offset in force at that time in UTC. Never panics (E02).
pub fn localize<Tz: TimeZone>(zone: &Tz, naive: NaiveDateTime) -> Option<DateTime<FixedOffset>> {
    match zone.from_local_datetime(&naive) {
        LocalResult::Single(dt) => Some(dt.fixed_offset()),
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
    }
}
