//! Device dialects of RFC 3164 that the general rules would misread: Cisco IOS sequence numbers,
//! FortiGate's header-less key=value lines and AIX's relay prefix. Each recognises its own shape
//! and otherwise returns `None`, leaving the frame to the general rules (hostile-inputs G08).

use std::sync::LazyLock;

use chrono::{NaiveDate, TimeZone};
use memchr::memmem::Finder;

use super::stamp::{When, date_time, four_digits, hms, two};
use super::{after_colon, is_hostname};
use crate::event::{ParseFlags, Parsed, Span, StructuredData};

/// Most digits of a Cisco sequence number (it counts up to 2^32).
const MAX_SEQUENCE_DIGITS: usize = 10;

/// Cisco IOS `service sequence-numbers` puts `123: ` before the stamp. It is kept as RFC 5424's
/// `[meta sequenceId="123"]` (§7.3.1), as syslog-ng does. Returns where the rest starts.
pub(super) fn cisco_sequence(frame: &[u8], pos: usize, p: &mut Parsed) -> Option<usize> {
    let rest = frame.get(pos..)?;
    if !rest.first()?.is_ascii_digit() {
        return None;
    }
    let digits = rest
        .iter()
        .take(MAX_SEQUENCE_DIGITS + 1)
        .take_while(|b| b.is_ascii_digit())
        .count();
    let ends = rest.get(digits) == Some(&b':') && matches!(rest.get(digits + 1), None | Some(b' '));
    if !(1..=MAX_SEQUENCE_DIGITS).contains(&digits) || !ends {
        return None;
    }
    let number = std::str::from_utf8(rest.get(..digits)?).ok()?;
    p.structured_data = StructuredData::single("meta", "sequenceId", number);
    Some(after_colon(frame, pos + digits + 1))
}

/// FortiGate sends key=value text without a header: `date=2024-01-15 time=10:30:00
/// devname="fw1" … tz="+0100" …`. The stamp comes from `date`, `time` and `tz` (else the
/// listener's zone), HOSTNAME from `devname`. MSG is the whole text. Returns where MSG starts.
pub(super) fn fortigate<Tz: TimeZone>(
    frame: &[u8],
    pos: usize,
    when: &When<'_, Tz>,
    p: &mut Parsed,
) -> Option<usize> {
    let text = frame.get(pos..)?;
    let (rest, year) = four_digits(text.strip_prefix(b"date=")?)?;
    let (rest, month) = two(rest.strip_prefix(b"-")?).ok()?;
    let (rest, day) = two(rest.strip_prefix(b"-")?).ok()?;
    let (rest, time) = hms(rest.strip_prefix(b" time=")?).ok()?;
    if !matches!(rest.first(), None | Some(b' ')) {
        return None;
    }
    NaiveDate::from_ymd_opt(year, month, day)?;
    let offset = value(frame, pos, &TZ).and_then(|tz| utc_offset(tz.slice(frame)));
    if let Some(Some((t, adjusted))) = date_time(when, Some(year), month, day, time, offset) {
        p.timestamp = Some(t);
        if adjusted {
            p.flags.insert(ParseFlags::TIMESTAMP_ADJUSTED);
        }
    }
    p.hostname = value(frame, pos, &DEVNAME).filter(|s| is_hostname(s.slice(frame)));
    Some(pos)
}

/// FortiGate keys, with their searchers built once.
static TZ: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b" tz="));
static DEVNAME: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b" devname="));

/// The value after `key` (` name=`) in the key=value text at `pos`, quoted or not.
fn value(frame: &[u8], pos: usize, key: &Finder<'_>) -> Option<Span> {
    let text = frame.get(pos..)?;
    let at = pos + key.find(text)? + key.needle().len();
    let rest = frame.get(at..)?;
    let (start, end) = match rest.strip_prefix(b"\"") {
        Some(quoted) => (at + 1, at + 1 + memchr::memchr(b'"', quoted)?),
        None => (at, at + memchr::memchr(b' ', rest).unwrap_or(rest.len())),
    };
    Some(Span::new(start, end))
}

/// `+hhmm` / `-hhmm` as seconds east of UTC.
fn utc_offset(tz: &[u8]) -> Option<i32> {
    let (sign, digits) = match tz {
        [b'+', rest @ ..] => (1, rest),
        [b'-', rest @ ..] => (-1, rest),
        _ => return None,
    };
    let (rest, h) = two(digits).ok()?;
    let (rest, m) = two(rest).ok()?;
    (rest.is_empty() && h <= 23 && m <= 59)
        .then(|| sign * i32::try_from(h * 3600 + m * 60).unwrap_or(0))
}

/// AIX syslogd relays as `Message forwarded from HOST: TAG…` after the stamp. Sets HOSTNAME and
/// returns where the TAG starts.
pub(super) fn aix_forwarded(frame: &[u8], pos: usize, p: &mut Parsed) -> Option<usize> {
    const PREFIX: &[u8] = b"Message forwarded from ";
    let rest = frame.get(pos..)?.strip_prefix(PREFIX)?;
    let len = memchr::memchr(b':', rest)?;
    if !is_hostname(rest.get(..len)?) {
        return None;
    }
    let at = pos + PREFIX.len();
    p.hostname = Some(Span::new(at, at + len));
    Some(after_colon(frame, at + len + 1))
}
