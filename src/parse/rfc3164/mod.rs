//! RFC 3164 (BSD syslog), read tolerantly: `[TIMESTAMP SP [HOSTNAME SP]] [TAG] MSG`, as real
//! senders write it.
//!
//! - TIMESTAMP: `Mmm dd hh:mm:ss` (month case-insensitive, day space-padded or one digit), with
//!   an optional `.frac`/`,frac`, a year before the time (`Oct 11 2024 22:14:15`, Cisco) or after
//!   it (`Oct 11 22:14:15 2024`, LinkSys), a trailing `:` (Cisco), a leading year
//!   (`2024 Oct 11 …`, Brocade), or an RFC 3339 stamp (zone optional, SP allowed for `T`).
//!   Zone-less stamps are local time in the listener's zone (a DST gap or overlap is resolved by
//!   rule and flagged); a missing year is the receive year, unless that puts the stamp more than
//!   a month ahead (then it is last year's) or eleven behind (next year's).
//!   Only text that clearly is a stamp but is wrong (`Feb 30`, `25:00:00`,
//!   `22:14` without seconds) gets `bad_timestamp`, with MSG from the stamp on; anything else
//!   that is no stamp is simply not one.
//! - HOSTNAME, only after a TIMESTAMP: the next word, unless it looks like a TAG (ends with `:`,
//!   or holds `[`; an IPv6 shorthand ending in `::` stays a hostname). A word with `/` or bytes
//!   outside PRINTUSASCII is no hostname: from there on everything is MSG.
//! - TAG: 1 to 48 PRINTUSASCII bytes but `:`, `[` and `]`, ended by `:`, `[pid]` or, after a
//!   TIMESTAMP, a SP. Without a TIMESTAMP a first word ended by SP is text, not a TAG.
//!   One SP after `:` is part of the separator.
//! - Devices (`vendor.rs`): Cisco IOS `seq: ` (kept as `[meta sequenceId]`), `*`/`.` before the
//!   stamp (flagged [`ParseFlags::CLOCK_UNSYNCED`]) and ` ZONE:` after it; Cisco ASA's
//!   `HOST : %ASA-…`; FortiGate's header-less `date=… time=… devname=…`; AIX's
//!   `Message forwarded from HOST:`.

mod clock;
mod stamp;
mod vendor;

use chrono::TimeZone;

use super::{HOSTNAME, PID, TAG, set_message};
use crate::event::{
    Facility, ParseError, ParseErrorKind, ParseFlags, Parsed, Protocol, Severity, Span,
};
pub use clock::Clock;
use stamp::{Stamp, timestamp};
pub use stamp::{When, infer_year, localize};

/// Longest TAG taken as APP-NAME (RFC 3164 says 32; rsyslog keeps longer ones; 48 = RFC 5424).
pub const MAX_TAG: usize = 48;
/// Longest `[pid]` content taken as PROCID.
pub const MAX_PID: usize = 128;
/// Longest word taken as HOSTNAME.
pub const MAX_HOSTNAME: usize = 255;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parses the RFC 3164 message that starts at `start` (after the PRI, or 0 without one).
/// `facility` and `severity` come from the PRI; `when` dates year- or zone-less stamps. Never
/// panics.
pub fn parse<Tz: TimeZone>(
    frame: &[u8],
    start: usize,
    facility: Facility,
    severity: Severity,
    when: &When<'_, Tz>,
) -> Parsed {
    let mut p = Parsed::new(Protocol::Rfc3164, facility, severity, frame.len());
    let mut msg = header(frame, start, when, &mut p);
    if p.parse_error.is_none() && frame.get(msg..).is_some_and(|m| m.starts_with(BOM)) {
        msg += BOM.len();
    }
    // RFC 3164 has no MSG-UTF8 rule: any bytes are MSG, `msg_utf8` says whether they are UTF-8.
    let _ = set_message(&mut p, frame, msg);
    p
}

/// Reads TIMESTAMP, HOSTNAME and TAG into `p`; returns where MSG starts.
fn header<Tz: TimeZone>(frame: &[u8], start: usize, when: &When<'_, Tz>, p: &mut Parsed) -> usize {
    let start = vendor::cisco_sequence(frame, start, p).unwrap_or(start);
    // HP ProCurve and others put a SP between PRI and TIMESTAMP.
    let head = skip_spaces(frame, start);
    if let Some(msg) = vendor::fortigate(frame, head, when, p) {
        return msg;
    }
    // Cisco IOS marks a stamp of an unsynchronised clock with `*`, a non-authoritative one `.`.
    let marked = matches!(frame.get(head), Some(b'*' | b'.'));
    let mut pos = match timestamp(frame, head + usize::from(marked), when) {
        Stamp::Absent => return tag(frame, head, false, p).unwrap_or(start),
        Stamp::Bad { at } => {
            p.parse_error = Some(ParseError {
                kind: ParseErrorKind::BadTimestamp,
                at,
            });
            return head;
        }
        Stamp::Found {
            value,
            end,
            adjusted,
        } => {
            p.timestamp = value;
            if marked {
                p.flags.insert(ParseFlags::CLOCK_UNSYNCED);
            }
            if adjusted {
                p.flags.insert(ParseFlags::TIMESTAMP_ADJUSTED);
            }
            skip_spaces(frame, end)
        }
    };
    if let Some(tag_at) = vendor::aix_forwarded(frame, pos, p) {
        return tag(frame, tag_at, true, p).unwrap_or(tag_at);
    }
    // The next word, in one pass: whether it holds `[` and could be a HOSTNAME.
    let rest = frame.get(pos..).unwrap_or_default();
    let (mut len, mut bracket, mut host) = (0, false, true);
    for &b in rest.iter().take_while(|&&b| b != b' ') {
        len += 1;
        bracket |= b == b'[';
        host &= HOSTNAME.has(b);
    }
    let word = rest.get(..len).unwrap_or_default();
    if word.is_empty() {
        return pos;
    }
    let tag_like = bracket || (word.ends_with(b":") && !word.ends_with(b"::"));
    if !tag_like {
        if !host || len > MAX_HOSTNAME {
            return pos;
        }
        p.hostname = Some(Span::new(pos, pos + word.len()));
        pos = (pos + word.len() + 1).min(frame.len());
        // Cisco ASA with `logging device-id`: `HOST : %ASA-6-302015: …`.
        if frame.get(pos..).is_some_and(|r| r.starts_with(b": %")) {
            pos += 2;
        }
    }
    tag(frame, pos, true, p).unwrap_or(pos)
}

/// A word that can be a HOSTNAME: 1 to 255 PRINTUSASCII bytes, no `/` (a path, F03).
fn is_hostname(word: &[u8]) -> bool {
    (1..=MAX_HOSTNAME).contains(&word.len()) && word.iter().all(|&b| HOSTNAME.has(b))
}

/// TAG at `pos`: sets APP-NAME (and PROCID) and returns where MSG starts, or `None` (and leaves
/// `p` alone) when there is no TAG there. `space_ends_tag`: whether `word SP` (or a last word)
/// is a TAG.
fn tag(frame: &[u8], pos: usize, space_ends_tag: bool, p: &mut Parsed) -> Option<usize> {
    let rest = frame.get(pos..)?;
    let len = TAG.run(rest, MAX_TAG + 1);
    if len == 0 || len > MAX_TAG {
        return None;
    }
    let end = pos + len;
    let (procid, msg) = match rest.get(len) {
        Some(b':') => (None, after_colon(frame, end + 1)),
        // After HOSTNAME, the last word is the TAG, as rsyslog and syslog-ng read it.
        Some(b' ') | None if space_ends_tag => (None, end + 1),
        Some(b'[') => {
            let pid = frame.get(end + 1..)?;
            let pid = pid.get(..pid.len().min(MAX_PID + 1))?;
            // Short: a plain loop beats memchr's setup.
            let pid_len = pid.iter().position(|&b| b == b']')?;
            if pid_len == 0 || !pid.iter().take(pid_len).all(|&b| PID.has(b)) {
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
pub(super) fn after_colon(frame: &[u8], pos: usize) -> usize {
    if frame.get(pos) == Some(&b' ') {
        pos + 1
    } else {
        pos
    }
}

pub(super) fn skip_spaces(frame: &[u8], pos: usize) -> usize {
    let rest = frame.get(pos..).unwrap_or_default();
    pos + rest.iter().take_while(|&&b| b == b' ').count()
}
