//! Syslog parsing: one framed message in, a [`Parsed`] out. Pure functions over `&[u8]`, no I/O.
//!
//! A frame is read in this order:
//! 1. A trailing run of LF, NUL and CRLF is dropped (UDP and unix datagrams carry them; a lone
//!    trailing CR stays). Spans still index the frame as given.
//! 2. PRI ([`pri`]). No `<` at all: user.notice with `pri_missing`, read as RFC 3164 from byte 0.
//!    A malformed PRI: user.notice, `invalid_pri`, the whole frame as MSG (as rsyslog does).
//! 3. `1` SP right after the PRI: RFC 5424, read strictly ([`rfc5424`]). Anything else, other
//!    VERSIONs included (`<13>2 …`), is RFC 3164 read tolerantly ([`rfc3164`]): a VERSION other
//!    than 1 promises a header format this parser does not know.
//!
//! The grammars use nom's `complete` parsers only (never `streaming`): the input is a whole
//! message, so running out of bytes is a fault or the end of the message, never "wait for more".
//! The hottest scans (PRI, header tokens, SD values) are plain byte loops and `memchr`. Nothing is
//! allocated except structured data; every span indexes the frame.

pub mod pri;
pub mod rfc3164;
pub mod rfc5424;

use chrono::{DateTime, Local, TimeZone, Utc};
use nom::error::ErrorKind;

use crate::event::{Facility, ParseError, ParseErrorKind, Parsed, Protocol, Severity, Span};
use pri::Pri;

/// What the parser needs to know besides the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    /// When the frame was received: RFC 3164 stamps carry no year, which is inferred from this.
    /// Stamps without a zone are read in the host's local zone ([`chrono::Local`]).
    pub received_at: DateTime<Utc>,
}

impl ParseOptions {
    /// Options for a frame received at `received_at`.
    pub fn new(received_at: DateTime<Utc>) -> ParseOptions {
        ParseOptions { received_at }
    }

    /// Options for a frame received now.
    pub fn now() -> ParseOptions {
        ParseOptions::new(Utc::now())
    }
}

/// Parses one frame. Never fails and never panics: what does not parse ends up in MSG, with
/// `parse_error` saying what and where. Zone-less RFC 3164 stamps are read in [`chrono::Local`].
pub fn parse(frame: &[u8], opts: &ParseOptions) -> Parsed {
    parse_in(frame, opts, &Local)
}

/// [`parse`], reading zone-less RFC 3164 stamps in `zone` instead of the local zone (for tests,
/// fuzzing and reproducible output).
pub fn parse_in<Tz: TimeZone>(frame: &[u8], opts: &ParseOptions, zone: &Tz) -> Parsed {
    let msg = trim_end(frame);
    match pri::parse_pri(msg) {
        Pri::Invalid { at } => Parsed {
            protocol: Protocol::Rfc3164,
            pri_missing: false,
            parse_error: Some(ParseError {
                kind: ParseErrorKind::InvalidPri,
                at,
            }),
            ..Parsed::unparsed(msg)
        },
        Pri::Missing => {
            let (f, s) = (Facility::User, Severity::Notice);
            let mut p = rfc3164::parse(msg, 0, f, s, &opts.received_at, zone);
            p.pri_missing = true;
            p
        }
        Pri::Valid {
            facility,
            severity,
            len,
        } => {
            if msg.get(len..).is_some_and(|rest| rest.starts_with(b"1 ")) {
                rfc5424::parse(msg, len + 2, facility, severity)
            } else {
                rfc3164::parse(msg, len, facility, severity, &opts.received_at, zone)
            }
        }
    }
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

/// PRINTUSASCII (RFC 5424): `%d33-126`.
pub(crate) fn is_print(b: u8) -> bool {
    (33..=126).contains(&b)
}

/// Sets MSG to `frame[start..]` and records whether it is UTF-8.
pub(crate) fn set_message(p: &mut Parsed, frame: &[u8], start: usize) {
    let start = start.min(frame.len());
    p.message = Span::new(start, frame.len());
    p.msg_utf8 = frame
        .get(start..)
        .is_some_and(|m| std::str::from_utf8(m).is_ok());
}

#[cfg(test)]
mod tests;
