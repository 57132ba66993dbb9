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
//! The hottest scans (PRI, header tokens, SD values) are plain byte loops and `memchr`. Nothing is
//! allocated except structured data; every span indexes the frame.

pub mod pri;
pub mod rfc3164;
pub mod rfc5424;

use chrono::{DateTime, Local, TimeZone, Utc};
use nom::error::ErrorKind;

use crate::event::{Facility, ParseError, ParseErrorKind, Parsed, Severity, Span};
use pri::Pri;

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

/// What the parser needs to know besides the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    /// When the frame was received: RFC 3164 stamps carry no year, which is inferred from this.
    pub received_at: DateTime<Utc>,
    /// The zone of RFC 3164 stamps that carry no offset.
    pub zone: Zone,
}

impl ParseOptions {
    /// Options for a frame received at `received_at`, zone-less stamps read in the host's zone.
    pub fn new(received_at: DateTime<Utc>) -> ParseOptions {
        ParseOptions {
            received_at,
            zone: Zone::Local,
        }
    }

    /// Options for a frame received now.
    pub fn now() -> ParseOptions {
        ParseOptions::new(Utc::now())
    }
}

/// Parses one frame. Never fails and never panics: what does not parse ends up in MSG, with
/// `parse_error` saying what and where. Zone-less RFC 3164 stamps are read in `opts.zone`.
pub fn parse(frame: &[u8], opts: &ParseOptions) -> Parsed {
    match opts.zone {
        Zone::Local => parse_in(frame, opts, &Local),
        Zone::Named(tz) => parse_in(frame, opts, &tz),
    }
}

/// [`parse`], reading zone-less RFC 3164 stamps in `zone` whatever `opts.zone` says (for tests
/// with their own [`TimeZone`]).
pub fn parse_in<Tz: TimeZone>(frame: &[u8], opts: &ParseOptions, zone: &Tz) -> Parsed {
    let msg = trim_end(frame);
    match pri::parse_pri(msg) {
        Pri::Invalid { at } => invalid_pri(msg, at),
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
        } => match version(msg, len) {
            // `<0…>` with more digits: the digit after the zero is where RFC 5424's PRIVAL ends.
            Some(_) if len > 3 && msg.get(1) == Some(&b'0') => invalid_pri(msg, 2),
            Some((version, start)) => rfc5424::parse(msg, start, version, facility, severity),
            None => rfc3164::parse(msg, len, facility, severity, &opts.received_at, zone),
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

/// PRINTUSASCII (RFC 5424): `%d33-126`.
pub(crate) fn is_print(b: u8) -> bool {
    (33..=126).contains(&b)
}

/// Sets MSG to `frame[start..]` and records whether it is UTF-8; returns the decoding error.
pub(crate) fn set_message(
    p: &mut Parsed,
    frame: &[u8],
    start: usize,
) -> Result<(), std::str::Utf8Error> {
    let start = start.min(frame.len());
    p.message = Span::new(start, frame.len());
    let checked = std::str::from_utf8(frame.get(start..).unwrap_or_default()).map(|_| ());
    p.msg_utf8 = checked.is_ok();
    checked
}

#[cfg(test)]
mod tests;
