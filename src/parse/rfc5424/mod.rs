//! RFC 5424, read strictly by its ABNF (§6), from the TIMESTAMP on (`PRI VERSION SP` is read).
//!
//! On the first fault the fields read so far are kept, the rest of the frame from the start of the
//! faulting field becomes MSG, and `parse_error` says what and where. Error offsets follow
//! influxdata/go-syslog's columns (the byte where the grammar stopped), so its corpus can pin them.

mod sd;
mod stamp;

use super::{PRINT, set_message, set_utf8_message};
use crate::event::{
    Facility, ParseError, ParseErrorKind, ParseFlags, Parsed, Protocol, Severity, Span,
};
use sd::structured_data;
pub(crate) use stamp::fraction_nanos;
use stamp::timestamp_field;

/// HOSTNAME is at most 255 PRINTUSASCII bytes.
pub const MAX_HOSTNAME: usize = 255;
/// APP-NAME is at most 48 PRINTUSASCII bytes.
pub const MAX_APP_NAME: usize = 48;
/// PROCID is at most 128 PRINTUSASCII bytes.
pub const MAX_PROCID: usize = 128;
/// MSGID is at most 32 PRINTUSASCII bytes.
pub const MAX_MSGID: usize = 32;
/// SD-ID and PARAM-NAME are at most 32 bytes.
pub const MAX_SD_NAME: usize = 32;
/// More SD-ELEMENTs than this in one message is `sd_invalid` (bounds work and memory).
pub const MAX_SD_ELEMENTS: usize = 128;
/// More SD-PARAMs than this in one message (all elements together) is `sd_invalid`.
pub const MAX_SD_PARAMS: usize = 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";
/// Up to this many SD-ELEMENTs, duplicate SD-IDs are found by scanning; beyond, by hashing.
const SCAN_IDS: usize = 8;

/// A fault: its kind, the offending byte, and where the faulting field starts (MSG from there).
#[derive(Debug, Clone, Copy)]
struct Fault {
    kind: ParseErrorKind,
    at: usize,
    field: usize,
}

impl Fault {
    fn new(kind: ParseErrorKind, at: usize, field: usize) -> Fault {
        Fault { kind, at, field }
    }
}

/// Parses an RFC 5424 message whose TIMESTAMP starts at `start` (just after `PRI VERSION SP`).
/// `version`, `facility` and `severity` come from there. Never panics.
pub fn parse(
    frame: &[u8],
    start: usize,
    version: u16,
    facility: Facility,
    severity: Severity,
) -> Parsed {
    let mut p = Parsed::new(Protocol::Rfc5424, facility, severity, frame.len());
    p.version = version;
    match header(frame, start, &mut p) {
        // MSG-UTF8 that the SD parser found valid with the rest of the frame.
        Ok((msg, true)) if frame.get(msg..).is_some_and(|m| m.starts_with(BOM)) => {
            set_utf8_message(&mut p, frame, msg + BOM.len());
        }
        Ok((msg, _)) if frame.get(msg..).is_some_and(|m| m.starts_with(BOM)) => {
            // MSG-UTF8 (§6.4): after a BOM the MSG must be UTF-8. It is kept either way.
            let text = msg + BOM.len();
            if let Err(e) = set_message(&mut p, frame, text) {
                p.parse_error = Some(ParseError {
                    kind: ParseErrorKind::InvalidUtf8,
                    at: text + utf8_fault(frame, text, &e),
                });
            }
        }
        // The SD parser validated the rest of the frame already.
        Ok((msg, true)) => set_utf8_message(&mut p, frame, msg),
        // MSG-ANY: any bytes; `msg_utf8` says whether they happen to be UTF-8.
        Ok((msg, false)) => {
            let _ = set_message(&mut p, frame, msg);
        }
        Err(f) => {
            p.parse_error = Some(ParseError {
                kind: f.kind,
                at: f.at,
            });
            let _ = set_message(&mut p, frame, f.field);
        }
    }
    p
}

/// Offset (from `start`) of the first byte that cannot continue valid UTF-8: a byte that can
/// never start a sequence is itself the fault; otherwise the byte after the valid prefix is.
fn utf8_fault(frame: &[u8], start: usize, e: &std::str::Utf8Error) -> usize {
    let at = e.valid_up_to();
    match frame.get(start + at) {
        Some(0xC2..=0xF4) => {
            let rest = frame.len().saturating_sub(start + at);
            at + e.error_len().unwrap_or(rest)
        }
        _ => at,
    }
}

/// Reads the header into `p`; returns where MSG starts and whether the frame is known to be UTF-8
/// from there on.
fn header(frame: &[u8], start: usize, p: &mut Parsed) -> Result<(usize, bool), Fault> {
    let (timestamp, end) = timestamp_field(frame, start)?;
    // A complete, valid stamp followed by something else than SP is kept (go-syslog keeps it
    // too); a header field below can only be followed by a byte that makes the field invalid.
    let next = separator(frame, start, end, ParseErrorKind::MissingSpace);
    if keeps_field(&next) {
        p.timestamp = timestamp;
    }
    let mut pos = next?;
    for (max, slot) in [
        (MAX_HOSTNAME, &mut p.hostname),
        (MAX_APP_NAME, &mut p.app_name),
        (MAX_PROCID, &mut p.procid),
        (MAX_MSGID, &mut p.msgid),
    ] {
        let (value, end) = field(frame, pos, max)?;
        let next = separator(frame, pos, end, ParseErrorKind::InvalidHeaderChar);
        if keeps_field(&next) {
            *slot = value;
        }
        pos = next?;
    }
    let (sd, end, utf8) = structured_data(frame, pos)?;
    p.structured_data = sd;
    if utf8 == Utf8::Lossy {
        p.flags.insert(ParseFlags::SD_NOT_UTF8);
    }
    let rest_utf8 = utf8 == Utf8::ToTheEnd;
    match frame.get(end) {
        None => Ok((end, rest_utf8)),
        Some(b' ') => Ok((end + 1, rest_utf8)),
        Some(_) => Err(Fault::new(ParseErrorKind::MissingSpace, end, end)),
    }
}

/// What the SD parser learnt about UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Utf8 {
    /// Nothing (SD is NILVALUE).
    Unknown,
    /// The frame is UTF-8 from SD to its end.
    ToTheEnd,
    /// Not to the end, but every PARAM-VALUE was.
    Values,
    /// A PARAM-VALUE was not UTF-8 and is kept lossily.
    Lossy,
}

/// A field that the input ends right after, or that lacks only its SP, is complete; the fault
/// lies after it.
fn keeps_field(next: &Result<usize, Fault>) -> bool {
    match next {
        Ok(_) => true,
        Err(f) => matches!(
            f.kind,
            ParseErrorKind::TruncatedHeader | ParseErrorKind::MissingSpace
        ),
    }
}

/// The SP after a header field that started at `field` and ended at `end`; another byte there
/// is a `bad` fault (`MissingSpace` faults after the field, others in it).
fn separator(frame: &[u8], field: usize, end: usize, bad: ParseErrorKind) -> Result<usize, Fault> {
    match frame.get(end) {
        Some(b' ') => Ok(end + 1),
        None => Err(Fault::new(ParseErrorKind::TruncatedHeader, end, end)),
        Some(_) if bad == ParseErrorKind::MissingSpace => Err(Fault::new(bad, end, end)),
        Some(_) => Err(Fault::new(bad, end, field)),
    }
}

/// `NILVALUE / 1*max PRINTUSASCII` at `pos`: the value (`None` for NIL) and where it ends.
fn field(frame: &[u8], pos: usize, max: usize) -> Result<(Option<Span>, usize), Fault> {
    let input = frame.get(pos..).unwrap_or_default();
    match PRINT.run(input, max) {
        // Empty field: an extra SP, a byte outside PRINTUSASCII, or the end of input.
        0 if input.is_empty() => Err(Fault::new(ParseErrorKind::TruncatedHeader, pos, pos)),
        0 => Err(Fault::new(ParseErrorKind::InvalidHeaderChar, pos, pos)),
        len => {
            let end = pos + len;
            Ok((
                (input.get(..len) != Some(b"-")).then(|| Span::new(pos, end)),
                end,
            ))
        }
    }
}
