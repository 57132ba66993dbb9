//! RFC 5424, read strictly by its ABNF (§6), from the TIMESTAMP on (`PRI VERSION SP` is read).
//!
//! On the first fault the fields read so far are kept, the rest of the frame from the start of the
//! faulting field becomes MSG, and `parse_error` says what and where. Error offsets follow
//! influxdata/go-syslog's columns (the byte where the grammar stopped), so its corpus can pin them.

use std::collections::HashSet;

use chrono::{DateTime, FixedOffset, NaiveDate};
use memchr::memchr3;
use nom::Parser;
use nom::bytes::complete::take_while_m_n;
use nom::character::complete::{char, one_of};

use super::{Res, digit, fault_pos, is_print, set_message};
use crate::event::{
    Facility, ParseError, ParseErrorKind, ParseFlags, Parsed, Protocol, SdElement, Severity, Span,
};

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
        Ok(msg) if frame.get(msg..).is_some_and(|m| m.starts_with(BOM)) => {
            // MSG-UTF8 (§6.4): after a BOM the MSG must be UTF-8. It is kept either way.
            let text = msg + BOM.len();
            if let Err(e) = set_message(&mut p, frame, text) {
                p.parse_error = Some(ParseError {
                    kind: ParseErrorKind::InvalidUtf8,
                    at: text + utf8_fault(frame, text, &e),
                });
            }
        }
        // MSG-ANY: any bytes; `msg_utf8` says whether they happen to be UTF-8.
        Ok(msg) => {
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

/// Reads the header into `p`; returns where MSG starts.
fn header(frame: &[u8], start: usize, p: &mut Parsed) -> Result<usize, Fault> {
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
    let (sd, end, lossy) = structured_data(frame, pos)?;
    p.structured_data = sd;
    if lossy {
        p.flags.insert(ParseFlags::SD_NOT_UTF8);
    }
    match frame.get(end) {
        None => Ok(end),
        Some(b' ') => Ok(end + 1),
        Some(_) => Err(Fault::new(ParseErrorKind::MissingSpace, end, end)),
    }
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
    match token(input, max, is_print) {
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

/// Length of the run of at most `max` bytes at the start of `input` that satisfy `ok` (a plain
/// loop: header fields are short and this is the hottest scan).
fn token(input: &[u8], max: usize, ok: impl Fn(u8) -> bool) -> usize {
    let limit = input.len().min(max);
    let head = input.get(..limit).unwrap_or_default();
    head.iter().position(|&b| !ok(b)).unwrap_or(limit)
}

/// TIMESTAMP at `pos`: NILVALUE or a full RFC 3339 stamp (§6.2.3), and where it ends.
fn timestamp_field(
    frame: &[u8],
    pos: usize,
) -> Result<(Option<DateTime<FixedOffset>>, usize), Fault> {
    let input = frame.get(pos..).unwrap_or_default();
    if input.first() == Some(&b'-') {
        return Ok((None, pos + 1));
    }
    match stamp(input) {
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

/// `NILVALUE / 1*SD-ELEMENT` at `start`: the elements, where SD ends, and whether a
/// PARAM-VALUE was not UTF-8 (kept lossily).
fn structured_data(frame: &[u8], start: usize) -> Result<(Vec<SdElement>, usize, bool), Fault> {
    let invalid = |at| Fault::new(ParseErrorKind::SdInvalid, at, start);
    match frame.get(start) {
        None => return Err(Fault::new(ParseErrorKind::TruncatedHeader, start, start)),
        Some(b'-') => return Ok((Vec::new(), start + 1, false)),
        Some(b'[') => {}
        Some(_) => return Err(invalid(start)),
    }
    let mut elements: Vec<SdElement> = Vec::new();
    // Duplicate SD-IDs (§6.3.2): a scan while there are few elements, then a hash set, so
    // the check stays linear.
    let mut first_ids: [&[u8]; SCAN_IDS] = [&[]; SCAN_IDS];
    let mut ids: HashSet<&[u8]> = HashSet::new();
    let mut params_seen = 0usize;
    let mut lossy = false;
    let mut pos = start;
    while frame.get(pos) == Some(&b'[') {
        if elements.len() >= MAX_SD_ELEMENTS {
            return Err(invalid(pos));
        }
        let (id, id_end) = sd_name(frame, pos + 1).map_err(invalid)?;
        if let Some(at) = bad_enterprise_id(id) {
            return Err(invalid(pos + 1 + at));
        }
        let n = elements.len();
        let duplicate = if let Some(slot) = first_ids.get_mut(n) {
            *slot = id;
            first_ids.get(..n).is_some_and(|seen| seen.contains(&id))
        } else {
            if ids.is_empty() {
                ids.extend(first_ids);
            }
            !ids.insert(id)
        };
        if duplicate {
            return Err(invalid(id_end));
        }
        pos = id_end;
        let mut params = Vec::new();
        loop {
            match frame.get(pos) {
                Some(b']') => break,
                Some(b' ') if params_seen >= MAX_SD_PARAMS => return Err(invalid(pos + 1)),
                Some(b' ') => {
                    let (name, name_end) = sd_name(frame, pos + 1).map_err(invalid)?;
                    let open = expect(frame, name_end, b'=').map_err(invalid)?;
                    let value_start = expect(frame, open, b'"').map_err(invalid)?;
                    let (value, end) = param_value(frame, value_start).map_err(invalid)?;
                    lossy |= value.contains(char::REPLACEMENT_CHARACTER)
                        && std::str::from_utf8(frame.get(value_start..end).unwrap_or_default())
                            .is_err();
                    params.push((text(name), value));
                    params_seen += 1;
                    pos = end;
                }
                _ => return Err(invalid(pos)),
            }
        }
        pos += 1;
        elements.push(SdElement {
            id: text(id),
            params,
        });
    }
    Ok((elements, pos, lossy))
}

/// An SD-ID with `@` is `name@<private enterprise number>` (§6.3.2): one `@`, with something
/// on both sides. Returns the offending offset within `id`.
fn bad_enterprise_id(id: &[u8]) -> Option<usize> {
    let at = memchr::memchr(b'@', id)?;
    let rest = id.get(at + 1..).unwrap_or_default();
    if at == 0 {
        Some(0)
    } else if rest.is_empty() {
        Some(id.len())
    } else {
        memchr::memchr(b'@', rest).map(|second| at + 1 + second)
    }
}

/// Bytes as a `String`, invalid UTF-8 replaced by U+FFFD.
fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// `SD-NAME = 1*32PRINTUSASCII` except `=`, SP, `]` and `"`: the name and where it ends.
fn sd_name(frame: &[u8], pos: usize) -> Result<(&[u8], usize), usize> {
    let input = frame.get(pos..).unwrap_or_default();
    let is_name = |b: u8| is_print(b) && !matches!(b, b'=' | b']' | b'"');
    match token(input, MAX_SD_NAME, is_name) {
        0 => Err(pos),
        len => Ok((input.get(..len).unwrap_or_default(), pos + len)),
    }
}

/// The byte `want` at `pos`; where the input goes on, or the offending offset.
fn expect(frame: &[u8], pos: usize, want: u8) -> Result<usize, usize> {
    match frame.get(pos) {
        Some(&b) if b == want => Ok(pos + 1),
        _ => Err(pos),
    }
}

/// PARAM-VALUE starting at `start` (after the opening quote), unescaped, and the offset after
/// the closing quote. `\"`, `\\` and `\]` are escapes; a backslash before anything else is a
/// literal backslash (§6.3.3). An unescaped `]` or the end of input is the offending byte.
fn param_value(frame: &[u8], start: usize) -> Result<(String, usize), usize> {
    let mut pos = start;
    let mut escaped = false;
    let close = loop {
        let rest = frame.get(pos..).unwrap_or_default();
        let Some(k) = memchr3(b'"', b'\\', b']', rest) else {
            return Err(frame.len());
        };
        let at = pos + k;
        match frame.get(at) {
            Some(b'"') => break at,
            Some(b'\\') => {
                escaped = true;
                let escapes = matches!(frame.get(at + 1), Some(b'"' | b'\\' | b']'));
                pos = at + if escapes { 2 } else { 1 };
            }
            _ => return Err(at),
        }
    };
    let raw = frame.get(start..close).unwrap_or_default();
    let value = if escaped {
        let mut out = Vec::with_capacity(raw.len());
        let mut i = 0;
        while let Some(&b) = raw.get(i) {
            match (b, raw.get(i + 1)) {
                (b'\\', Some(&next @ (b'"' | b'\\' | b']'))) => {
                    out.push(next);
                    i += 2;
                }
                _ => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        text(&out)
    } else {
        text(raw)
    };
    Ok((value, close + 1))
}
