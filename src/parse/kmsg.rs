//! Kernel log records as /dev/kmsg gives them (the kernel's Documentation/ABI/testing/dev-kmsg):
//!
//! ```text
//! 6,1234,5678901,-;usb 1-1: new high-speed USB device number 2
//!  SUBSYSTEM=usb
//!  DEVICE=c189:1
//! ```
//!
//! `PRI,SEQ,MICROSECONDS-SINCE-BOOT,FLAGS[,…];TEXT`, then a ` KEY=VALUE` line per dictionary
//! entry. A record is not syslog, so it is rewritten as an RFC 5424 frame, which then goes
//! through the ordinary parser: every route, output and format treats kernel messages like any
//! other, and a forward in `raw` format still sends syslog. The frame is
//!
//! ```text
//! <6>1 2026-12-02T09:30:53.123456+01:00 HOST kernel - - [kmsg seq="1234" uptime_us="5678901" SUBSYSTEM="usb" DEVICE="c189:1"] usb 1-1: …
//! ```
//!
//! The stamp is boot time plus the record's monotonic offset, in the host's zone (as rsyslog
//! and journald show kernel lines). Records written to /dev/kmsg from user space (systemd in
//! early boot) carry their own facility and a `tag[pid]: ` prefix, which becomes APP-NAME and
//! PROCID. A pure function over bytes: the clock and host name are given.

use std::io::Write;

use bytes::Bytes;
use chrono::{DateTime, Datelike, Local, TimeDelta, Utc};

use super::ParseOptions;
use super::scan::{PRINT, SD_NAME, TAG};
use crate::event::{ParseError, ParseErrorKind, Parsed};

/// Wall-clock time of the kernel's monotonic zero, so a record's offset can be dated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootClock {
    boot: DateTime<Utc>,
}

impl BootClock {
    /// A clock whose monotonic zero was at `boot`.
    pub fn booted_at(boot: DateTime<Utc>) -> BootClock {
        BootClock { boot }
    }

    /// The host's clock now: CLOCK_REALTIME minus CLOCK_MONOTONIC, which the kernel's record
    /// stamps count (neither counts time suspended). Read again per batch, so a stepped wall
    /// clock is followed.
    pub fn now() -> BootClock {
        let since_boot = monotonic();
        let now = Utc::now();
        BootClock {
            boot: now - since_boot,
        }
    }

    /// The wall time `micros` after boot; `None` past what can be dated.
    pub fn at(&self, micros: u64) -> Option<DateTime<Utc>> {
        let micros = i64::try_from(micros).ok()?;
        self.boot
            .checked_add_signed(TimeDelta::microseconds(micros))
    }
}

/// CLOCK_MONOTONIC as a duration.
fn monotonic() -> TimeDelta {
    TimeDelta::from_std(crate::sys::monotonic()).unwrap_or_default()
}

/// What a record's header said, besides what went into the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The kernel's sequence number: a gap means records were overwritten before they were read.
    pub seq: u64,
}

/// The kernel's longest `tag[pid]: ` prefix kept as APP-NAME: RFC 5424's APP-NAME limit.
const APP_NAME_MAX: usize = 48;
/// RFC 5424's PROCID limit.
const PROCID_MAX: usize = 128;
/// RFC 5424's SD-NAME limit.
const SD_NAME_MAX: usize = 32;

/// Rewrites one record as an RFC 5424 frame into `out` (cleared first). A malformed header is
/// an error saying what and where; the caller keeps the record as it came, flagged.
pub fn to_rfc5424(
    record: &[u8],
    clock: &BootClock,
    hostname: &str,
    out: &mut Vec<u8>,
) -> Result<Record, ParseError> {
    out.clear();
    let fault = |kind, at| ParseError { kind, at };
    let header_end = memchr::memchr(b';', record)
        .ok_or_else(|| fault(ParseErrorKind::TruncatedHeader, record.len()))?;
    let header = &record[..header_end];
    let mut fields = header.split(|&b| b == b',');
    let mut at = 0;
    let mut number = |kind| {
        let field = fields.next().unwrap_or_default();
        let value = decimal(field).ok_or_else(|| fault(kind, at));
        at += field.len() + 1;
        value
    };
    let pri = number(ParseErrorKind::InvalidPri)?;
    let seq = number(ParseErrorKind::InvalidHeaderChar)?;
    let micros = number(ParseErrorKind::BadTimestamp)?;
    // The kernel keeps facilities up to 127; syslog's PRI stops at 191 (facility 23).
    if pri > 191 {
        return Err(fault(ParseErrorKind::InvalidPri, 0));
    }

    let body = &record[header_end + 1..];
    let text_end = memchr::memchr(b'\n', body).unwrap_or(body.len());
    let (mut text, dict) = body.split_at(text_end);
    let kernel = pri < 8;
    let (app, procid) = if kernel {
        (Some(&b"kernel"[..]), None)
    } else {
        match user_tag(text) {
            Some(t) => {
                text = t.rest;
                (Some(t.app), t.procid)
            }
            None => (None, None),
        }
    };

    // RFC 3339 has four-digit years only.
    let stamp = (clock.at(micros).map(|t| t.with_timezone(&Local)))
        .filter(|t| t.year() <= 9999)
        .ok_or_else(|| fault(ParseErrorKind::BadTimestamp, header_end))?;
    let host = match hostname.as_bytes() {
        h if !h.is_empty() && h.len() <= 255 && PRINT.run(h, 255) == h.len() => hostname,
        _ => "-",
    };
    let _ = write!(
        out,
        "<{pri}>1 {} {host} ",
        stamp.format("%Y-%m-%dT%H:%M:%S%.6f%:z")
    );
    nil_or(out, app);
    out.push(b' ');
    nil_or(out, procid);
    let _ = write!(out, " - [kmsg seq=\"{seq}\" uptime_us=\"{micros}\"");
    for line in dict.split(|&b| b == b'\n') {
        let Some(entry) = line.strip_prefix(b" ") else {
            continue;
        };
        let (key, value) = match memchr::memchr(b'=', entry) {
            Some(i) => (&entry[..i], &entry[i + 1..]),
            None => (entry, &b""[..]),
        };
        if key.is_empty() {
            continue;
        }
        out.push(b' ');
        // Kernel keys are upper-case words; anything else is made a valid SD-NAME.
        for &b in key.iter().take(SD_NAME_MAX) {
            out.push(if SD_NAME.has(b) { b } else { b'_' });
        }
        out.extend_from_slice(b"=\"");
        for &b in value {
            if matches!(b, b'"' | b'\\' | b']') {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    }
    out.push(b']');
    if !text.is_empty() {
        out.push(b' ');
        out.extend_from_slice(text);
    }
    Ok(Record { seq })
}

/// One record as a listener keeps it.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The RFC 5424 frame, or the record as it came when it is not one.
    pub frame: Bytes,
    /// The frame parsed; a record that is not one is flagged with why.
    pub parsed: Parsed,
    /// The frame was cut to the listener's `max_message_size`.
    pub truncated: bool,
    /// The kernel's sequence number, when the header had one.
    pub seq: Option<u64>,
}

/// [`to_rfc5424`], cut to `max_bytes` and parsed as any frame is (`scratch` is reused). A record
/// that is not one is kept as it came, with its fault as `parse_error`: nothing is dropped.
pub fn convert(
    record: &[u8],
    clock: &BootClock,
    hostname: &str,
    opts: &ParseOptions,
    max_bytes: usize,
    scratch: &mut Vec<u8>,
) -> Converted {
    let cut = |bytes: &[u8]| Bytes::copy_from_slice(&bytes[..bytes.len().min(max_bytes)]);
    match to_rfc5424(record, clock, hostname, scratch) {
        Ok(r) => {
            let frame = cut(scratch);
            Converted {
                parsed: super::parse(&frame, opts),
                truncated: scratch.len() > max_bytes,
                frame,
                seq: Some(r.seq),
            }
        }
        Err(e) => {
            let raw = super::trim_end(record);
            let frame = cut(raw);
            Converted {
                parsed: Parsed {
                    // Where the fault is in what is kept (the line end and any cut are gone).
                    parse_error: Some(ParseError {
                        at: e.at.min(frame.len()),
                        ..e
                    }),
                    // As `parse` reads any frame: a trailing LF or NUL (here one the cut
                    // exposed) is not part of MSG.
                    ..Parsed::unparsed(super::trim_end(&frame))
                },
                truncated: raw.len() > max_bytes,
                frame,
                seq: None,
            }
        }
    }
}

/// The length of the first whole record in `buf`, its line end included: the header line and
/// the ` KEY=VALUE` lines after it. A record is whole at a line end followed by a line that is
/// not a continuation, or at a line end that ends `buf` (/dev/kmsg gives one record per read;
/// a FIFO's writer must write each record at once).
pub fn record_len(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    loop {
        let end = from + memchr::memchr(b'\n', buf.get(from..)?)? + 1;
        match buf.get(end) {
            Some(b' ') => from = end,
            _ => return Some(end),
        }
    }
}

/// A `tag[pid]: ` prefix: the tag, the pid if any, and the text after it.
struct UserTag<'a> {
    app: &'a [u8],
    procid: Option<&'a [u8]>,
    rest: &'a [u8],
}

/// `tag[pid]: rest` or `tag: rest` at the start of a record written from user space.
fn user_tag(text: &[u8]) -> Option<UserTag<'_>> {
    let tag_len = TAG.run(text, APP_NAME_MAX + 1);
    if tag_len == 0 || tag_len > APP_NAME_MAX {
        return None;
    }
    let (tag, mut rest) = text.split_at(tag_len);
    let mut procid = None;
    if let Some(after) = rest.strip_prefix(b"[") {
        let n = memchr::memchr(b']', &after[..after.len().min(PROCID_MAX + 1)])?;
        let pid = &after[..n];
        if pid.is_empty() || PRINT.run(pid, PROCID_MAX) != n {
            return None;
        }
        procid = Some(pid);
        rest = &after[n + 1..];
    }
    let rest = rest.strip_prefix(b":")?;
    Some(UserTag {
        app: tag,
        procid,
        rest: rest.strip_prefix(b" ").unwrap_or(rest),
    })
}

fn nil_or(out: &mut Vec<u8>, field: Option<&[u8]>) {
    out.extend_from_slice(field.unwrap_or(b"-"));
}

/// A plain decimal number; `None` when empty, not digits, or beyond `u64`.
fn decimal(field: &[u8]) -> Option<u64> {
    if field.is_empty() {
        return None;
    }
    field.iter().try_fold(0u64, |v, &d| {
        let d = d.is_ascii_digit().then(|| u64::from(d - b'0'))?;
        v.checked_mul(10)?.checked_add(d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Facility, Protocol, Severity};
    use crate::parse::{ParseOptions, parse};

    fn clock() -> BootClock {
        BootClock::booted_at(
            DateTime::parse_from_rfc3339("2026-12-02T08:00:00Z")
                .unwrap()
                .to_utc(),
        )
    }

    fn rewrite(record: &[u8]) -> Result<(Vec<u8>, Record), ParseError> {
        let mut out = Vec::new();
        let r = to_rfc5424(record, &clock(), "host1", &mut out)?;
        Ok((out, r))
    }

    #[test]
    fn kernel_record_with_dictionary_becomes_rfc5424_with_structured_data() {
        let (frame, rec) = rewrite(
            b"6,1234,5678901,-;usb 1-1: new high-speed USB device\n SUBSYSTEM=usb\n DEVICE=c189:1\n",
        )
        .unwrap();
        assert_eq!(rec.seq, 1234);
        let p = parse(&frame, &ParseOptions::now());
        assert_eq!(p.parse_error, None, "{}", String::from_utf8_lossy(&frame));
        assert_eq!(p.protocol, Protocol::Rfc5424);
        assert_eq!((p.facility, p.severity), (Facility::Kern, Severity::Info));
        assert_eq!(p.app_name.unwrap().slice(&frame), b"kernel");
        assert_eq!(p.hostname.unwrap().slice(&frame), b"host1");
        assert_eq!(
            p.message.slice(&frame),
            b"usb 1-1: new high-speed USB device"
        );
        // Boot at 08:00:00Z plus 5.678901 s, in whatever zone the host has.
        let ts = p.timestamp.unwrap();
        assert_eq!(
            ts.to_utc(),
            DateTime::parse_from_rfc3339("2026-12-02T08:00:05.678901Z").unwrap()
        );
        let sd = String::from_utf8_lossy(&frame).into_owned();
        assert!(
            sd.contains(
                "[kmsg seq=\"1234\" uptime_us=\"5678901\" SUBSYSTEM=\"usb\" DEVICE=\"c189:1\"]"
            ),
            "{sd}"
        );
    }

    #[test]
    fn user_space_record_keeps_its_facility_tag_and_pid() {
        let (frame, _) = rewrite(b"30,7,100,-;systemd[1]: Started Journal Service.\n").unwrap();
        let p = parse(&frame, &ParseOptions::now());
        assert_eq!(p.parse_error, None);
        assert_eq!((p.facility, p.severity), (Facility::Daemon, Severity::Info));
        assert_eq!(p.app_name.unwrap().slice(&frame), b"systemd");
        assert_eq!(p.procid.unwrap().slice(&frame), b"1");
        assert_eq!(p.message.slice(&frame), b"Started Journal Service.");
        // Without a tag: no APP-NAME, the text whole.
        let (frame, _) = rewrite(b"14,8,100,-;just words here").unwrap();
        let p = parse(&frame, &ParseOptions::now());
        assert_eq!(p.app_name, None);
        assert_eq!(p.message.slice(&frame), b"just words here");
    }

    #[test]
    fn values_are_escaped_and_odd_keys_made_valid() {
        let (frame, _) = rewrite(b"3,1,1,c,extra;x\n A=q\"b]c\\d\n K Y=v\n =skipped\n").unwrap();
        let p = parse(&frame, &ParseOptions::now());
        assert_eq!(p.parse_error, None, "{}", String::from_utf8_lossy(&frame));
        let text = String::from_utf8_lossy(&frame).into_owned();
        assert!(text.contains(r#"A="q\"b\]c\\d" K_Y="v"]"#), "{text}");
        let els = p.structured_data.elements().next().unwrap();
        let params: Vec<_> = els
            .params()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(
            params.contains(&("A".to_string(), "q\"b]c\\d".to_string())),
            "{params:?}"
        );
    }

    #[test]
    fn empty_text_gives_a_frame_without_msg() {
        let (frame, _) = rewrite(b"4,2,3,-;").unwrap();
        let p = parse(&frame, &ParseOptions::now());
        assert_eq!(p.parse_error, None);
        assert!(p.message.is_empty());
        assert!(frame.ends_with(b"\"3\"]"));
    }

    #[test]
    fn convert_cuts_frames_and_keeps_what_is_not_a_record() {
        let mut scratch = Vec::new();
        let opts = ParseOptions::now();
        let c = convert(
            b"6,9,1,-;hello\n",
            &clock(),
            "h",
            &opts,
            64 * 1024,
            &mut scratch,
        );
        assert_eq!(
            (c.seq, c.truncated, c.parsed.parse_error),
            (Some(9), false, None)
        );
        assert_eq!(c.parsed.message.slice(&c.frame), b"hello");
        let c = convert(b"6,9,1,-;hello", &clock(), "h", &opts, 20, &mut scratch);
        assert_eq!((c.frame.len(), c.truncated), (20, true));
        let c = convert(b"garbage line\n", &clock(), "h", &opts, 1000, &mut scratch);
        assert_eq!(&c.frame[..], b"garbage line");
        assert_eq!(c.seq, None);
        assert_eq!(
            c.parsed.parse_error.unwrap().kind,
            ParseErrorKind::TruncatedHeader
        );
        assert_eq!(c.parsed.message.slice(&c.frame), b"garbage line");
        // Found by fuzzing: a cut that ends in NULs leaves them out of MSG, as `parse` does.
        let mut junk = b"junk".to_vec();
        junk.extend_from_slice(&[0; 600]);
        junk.extend_from_slice(b"tail");
        let c = convert(&junk, &clock(), "h", &opts, 480, &mut scratch);
        assert_eq!((c.frame.len(), c.truncated), (480, true));
        assert_eq!(c.parsed.message.slice(&c.frame), b"junk");
    }

    #[test]
    fn records_are_split_at_lines_that_do_not_continue() {
        let two = b"6,1,1,-;a\n K=v\n6,2,2,-;b\n";
        assert_eq!(record_len(two), Some(15));
        assert_eq!(record_len(&two[15..]), Some(10));
        assert_eq!(record_len(b"6,1,1,-;partial"), None);
        assert_eq!(record_len(b""), None);
        assert_eq!(record_len(b"\n"), Some(1));
    }

    #[test]
    fn malformed_headers_say_what_and_where() {
        let kind = |r: &[u8]| rewrite(r).unwrap_err();
        assert_eq!(
            kind(b"no header at all").kind,
            ParseErrorKind::TruncatedHeader
        );
        assert_eq!(kind(b"x,1,2,-;m").kind, ParseErrorKind::InvalidPri);
        assert_eq!(kind(b"192,1,2,-;m").kind, ParseErrorKind::InvalidPri);
        let e = kind(b"6,,2,-;m");
        assert_eq!((e.kind, e.at), (ParseErrorKind::InvalidHeaderChar, 2));
        let e = kind(b"6,1,99999999999999999999,-;m");
        assert_eq!((e.kind, e.at), (ParseErrorKind::BadTimestamp, 4));
        assert_eq!(kind(b"6,1;m").kind, ParseErrorKind::BadTimestamp);
        assert_eq!(kind(b"").kind, ParseErrorKind::TruncatedHeader);
    }

    #[test]
    fn hostile_hostname_and_huge_offsets_do_not_break_the_frame() {
        let mut out = Vec::new();
        to_rfc5424(b"6,1,2,-;m", &clock(), "bad host", &mut out).unwrap();
        let p = parse(&out, &ParseOptions::now());
        assert_eq!(p.parse_error, None, "{}", String::from_utf8_lossy(&out));
        assert_eq!(p.hostname, None);
        // Past year 9999, or past what chrono can date: a fault, not a malformed stamp.
        for micros in ["18446744073709551615", "300000000000000000"] {
            let record = format!("6,1,{micros},-;m");
            let e = to_rfc5424(record.as_bytes(), &clock(), "h", &mut out).unwrap_err();
            assert_eq!(e.kind, ParseErrorKind::BadTimestamp);
        }
    }

    proptest::proptest! {
        #[test]
        fn any_record_converts_to_a_clean_frame_or_a_fault(record in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut out = Vec::new();
            if to_rfc5424(&record, &clock(), "h", &mut out).is_ok() {
                let p = parse(&out, &ParseOptions::now());
                // The text is copied as it came: only a non-UTF-8 MSG may be flagged.
                proptest::prop_assert!(p.parse_error.is_none() || !p.msg_utf8, "{:?}", String::from_utf8_lossy(&out));
            }
        }
    }
}
