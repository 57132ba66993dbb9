//! Syslog parsing: one framed message in, a [`Parsed`] out. Pure functions over `&[u8]`, no I/O.
//!
//! A frame is read in this order:
//! 1. A trailing run of LF, NUL and CRLF is dropped (UDP and unix datagrams carry them; a lone
//!    trailing CR stays). Spans still index the frame as given.
//! 2. PRI ([`pri`]). No `<` at all: user.notice with `pri_missing`, read as RFC 3164 from byte 0.
//!    A malformed PRI: user.notice, `invalid_pri`, the whole frame as MSG (as rsyslog does).
//! 3. `VERSION SP` right after the PRI, VERSION being `NONZERO-DIGIT 0*2DIGIT` (1 to 999, as the
//!    ABNF and go-syslog have it): RFC 5424, read strictly ([`rfc5424`]). Its PRI must then have no
//!    leading zero (`<013>1 …` is `invalid_pri`, like any malformed PRI). Anything else (`<13>0 …`,
//!    `<13>1000 …`, `<13>1x`) is RFC 3164 read tolerantly ([`rfc3164`]), where `<013>` is 13.
//!
//! The grammars use nom's `complete` parsers only (never `streaming`): the input is a whole
//! message, so running out of bytes is a fault or the end of the message, never "wait for more".
//! What every message goes through is cheaper than the grammar: byte-class tables for header
//! tokens and names (`scan.rs`), the usual timestamp shapes read at fixed places before nom reads
//! (and faults) anything else, and a [`rfc3164::Clock`] per batch that dates stamps near the
//! receive time without asking the time zone. Nothing is allocated but structured data (none
//! for Cisco's sequence number); every span indexes the frame (benches/parse.rs,
//! tests/parse_alloc.rs).

pub mod kmsg;
pub mod pri;
pub mod rfc3164;
pub mod rfc5424;
mod scan;

use chrono::{DateTime, Local, TimeZone, Utc};
use nom::error::ErrorKind;

use crate::event::{Facility, ParseError, ParseErrorKind, Parsed, Severity, Span};
use pri::Pri;
use rfc3164::{Clock, When};
pub(crate) use scan::{HOSTNAME, PID, PRINT, SD_NAME, TAG, find3, scan_text};

/// The zone that RFC 3164 stamps without an offset are read in: a listener's `timezone`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Zone {
    /// The host's zone ([`chrono::Local`]), following changes to `TZ` or /etc/localtime.
    #[default]
    Local,
    /// An IANA zone from the database compiled into sluice (chrono-tz), so the result does not
    /// depend on the host's tzdata.
    Named(chrono_tz::Tz),
}

impl Zone {
    /// Parses `local` or an IANA name (`Europe/Berlin`, `UTC`); case matters, as in the database.
    pub fn from_name(name: &str) -> Option<Zone> {
        match name {
            "local" => Some(Zone::Local),
            _ => name.parse().ok().map(Zone::Named),
        }
    }
}

/// What the parser needs to know besides the bytes: when the frame came and the listener's
/// zone. It works out the receive time in that zone once ([`rfc3164::Clock`]): build it once for
/// a batch of frames, not for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    received_at: DateTime<Utc>,
    zone: Zone,
    clock: Clock,
}

impl ParseOptions {
    /// Options for frames received at `received_at` on a listener in `zone`.
    pub fn new(received_at: DateTime<Utc>, zone: Zone) -> ParseOptions {
        let clock = match zone {
            Zone::Local => Clock::new(&received_at, &Local),
            Zone::Named(tz) => Clock::new(&received_at, &tz),
        };
        ParseOptions {
            received_at,
            zone,
            clock,
        }
    }

    /// Options for frames received now, zone-less stamps read in the host's zone.
    pub fn now() -> ParseOptions {
        ParseOptions::new(Utc::now(), Zone::Local)
    }

    /// When the frames were received: RFC 3164 stamps without a year get one from this.
    pub fn received_at(&self) -> DateTime<Utc> {
        self.received_at
    }

    /// The zone of RFC 3164 stamps that carry no offset.
    pub fn zone(&self) -> Zone {
        self.zone
    }
}

/// Parses one frame. Never fails and never panics: what does not parse ends up in MSG, with
/// `parse_error` saying what and where. Zone-less RFC 3164 stamps are read in `opts.zone()`.
pub fn parse(frame: &[u8], opts: &ParseOptions) -> Parsed {
    let received_at = opts.received_at;
    let clock = opts.clock;
    match opts.zone {
        Zone::Local => parse_with(
            frame,
            &When {
                received_at,
                zone: &Local,
                clock,
            },
        ),
        Zone::Named(tz) => parse_with(
            frame,
            &When {
                received_at,
                zone: &tz,
                clock,
            },
        ),
    }
}

/// [`parse`], reading zone-less RFC 3164 stamps in `zone` whatever `opts.zone()` says (for
/// tests with their own [`TimeZone`]).
pub fn parse_in<Tz: TimeZone>(frame: &[u8], opts: &ParseOptions, zone: &Tz) -> Parsed {
    let received_at = opts.received_at;
    let clock = Clock::new(&received_at, zone);
    parse_with(
        frame,
        &When {
            received_at,
            zone,
            clock,
        },
    )
}

fn parse_with<Tz: TimeZone>(frame: &[u8], when: &When<'_, Tz>) -> Parsed {
    let mut p = parse_grammar(frame, when);
    // Both grammars read header fields as runs of PRINTUSASCII classes (`scan.rs`); the
    // property test `plain_flags_never_hide_what_needs_escaping` holds them to it.
    p.fields_plain = true;
    p
}

fn parse_grammar<Tz: TimeZone>(frame: &[u8], when: &When<'_, Tz>) -> Parsed {
    let msg = trim_end(frame);
    match pri::parse_pri(msg) {
        Pri::Invalid { at } => invalid_pri(msg, at),
        Pri::Missing => {
            let (f, s) = (Facility::User, Severity::Notice);
            let mut p = rfc3164::parse(msg, 0, f, s, when);
            p.pri_missing = true;
            p
        }
        Pri::Valid {
            facility,
            severity,
            len,
        } => match version(msg, len) {
            // `<0…>` with more digits: the digit after the zero is where RFC 5424's PRIVAL ends.
            Some(_) if len > 3 && msg.get(1) == Some(&b'0') => invalid_pri(msg, 2),
            Some((version, start)) => rfc5424::parse(msg, start, version, facility, severity),
            None => rfc3164::parse(msg, len, facility, severity, when),
        },
    }
}

/// A frame whose PRI is malformed: user.notice, `invalid_pri` at `at`, the whole frame as MSG.
fn invalid_pri(msg: &[u8], at: usize) -> Parsed {
    Parsed {
        pri_missing: false,
        parse_error: Some(ParseError {
            kind: ParseErrorKind::InvalidPri,
            at,
        }),
        ..Parsed::unparsed(msg)
    }
}

/// `VERSION SP` at `at` (`NONZERO-DIGIT 0*2DIGIT`): the VERSION and where TIMESTAMP starts.
fn version(msg: &[u8], at: usize) -> Option<(u16, usize)> {
    let rest = msg.get(at..)?;
    let digits = rest
        .iter()
        .take(4)
        .take_while(|b| b.is_ascii_digit())
        .count();
    let well_formed = (1..=3).contains(&digits) && rest.first() != Some(&b'0');
    if !well_formed || rest.get(digits) != Some(&b' ') {
        return None;
    }
    let value = rest
        .get(..digits)?
        .iter()
        .fold(0u16, |v, d| v * 10 + u16::from(d - b'0'));
    Some((value, at + digits + 1))
}

/// `frame` without its trailing run of `\n`, `\0` and `\r\n` (hostile-inputs I06).
pub fn trim_end(frame: &[u8]) -> &[u8] {
    let mut rest = frame;
    loop {
        rest = match rest {
            [head @ .., b'\r', b'\n'] | [head @ .., b'\n' | b'\0'] => head,
            _ => return rest,
        };
    }
}

/// Result of the byte parsers in this module.
pub(crate) type Res<'a, O> = nom::IResult<&'a [u8], O>;

/// One ASCII digit in `lo..=hi`, as its value: a nom parser, without `satisfy`'s detour
/// through `char` (timestamps are checked digit by digit, so this is hot).
pub(crate) fn digit<'a>(lo: u8, hi: u8) -> impl Fn(&'a [u8]) -> Res<'a, u32> {
    move |i: &'a [u8]| match i.split_first() {
        Some((&b, rest)) if (lo..=hi).contains(&b) => Ok((rest, u32::from(b.saturating_sub(b'0')))),
        _ => Err(nom::Err::Error(nom::error::Error::new(i, ErrorKind::Digit))),
    }
}

/// The offset in `frame` where a nom parser over a suffix of `frame` stopped.
pub(crate) fn fault_pos(frame: &[u8], e: &nom::Err<nom::error::Error<&[u8]>>) -> usize {
    match e {
        nom::Err::Error(e) | nom::Err::Failure(e) => frame.len().saturating_sub(e.input.len()),
        nom::Err::Incomplete(_) => frame.len(),
    }
}

/// Two ASCII digits as a number.
pub(crate) fn two_digits(a: u8, b: u8) -> Option<u32> {
    let d = |x: u8| x.is_ascii_digit().then(|| u32::from(x - b'0'));
    Some(d(a)? * 10 + d(b)?)
}

/// Sets MSG to `frame[start..]`, known to be UTF-8 already, and records whether it is free of
/// control characters.
pub(crate) fn set_utf8_message(p: &mut Parsed, frame: &[u8], start: usize) {
    let start = start.min(frame.len());
    p.message = Span::new(start, frame.len());
    p.msg_utf8 = true;
    p.msg_plain = !scan_text(frame.get(start..).unwrap_or_default()).control;
}

/// Sets MSG to `frame[start..]` and records whether it is UTF-8 and free of control characters;
/// returns the decoding error.
pub(crate) fn set_message(
    p: &mut Parsed,
    frame: &[u8],
    start: usize,
) -> Result<(), std::str::Utf8Error> {
    let start = start.min(frame.len());
    p.message = Span::new(start, frame.len());
    let msg = frame.get(start..).unwrap_or_default();
    let scan = scan_text(msg);
    p.msg_plain = !scan.control;
    // ASCII is UTF-8; the general check pays its setup on every short message.
    let checked = if scan.ascii {
        Ok(())
    } else {
        std::str::from_utf8(msg).map(|_| ())
    };
    p.msg_utf8 = checked.is_ok();
    checked
}

#[cfg(test)]
mod tests;
