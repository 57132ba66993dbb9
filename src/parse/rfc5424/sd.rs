//! STRUCTURED-DATA (RFC 5424 §6.3): elements with unique SD-IDs, params with escaped values,
//! bounded in count so the work stays linear.

use std::collections::HashSet;

use super::{Fault, MAX_SD_ELEMENTS, MAX_SD_NAME, MAX_SD_PARAMS, SCAN_IDS, Utf8};
use crate::event::{ParseErrorKind, SdBuilder, StructuredData};
use crate::parse::{SD_NAME, find3};

/// `NILVALUE / 1*SD-ELEMENT` at `start`: the elements, where SD ends, and what it learnt about
/// UTF-8. The rest of the frame is checked for UTF-8 once, not value by value.
pub(super) fn structured_data(
    frame: &[u8],
    start: usize,
) -> Result<(StructuredData, usize, Utf8), Fault> {
    let invalid = |at| Fault::new(ParseErrorKind::SdInvalid, at, start);
    match frame.get(start) {
        None => return Err(Fault::new(ParseErrorKind::TruncatedHeader, start, start)),
        Some(b'-') => return Ok((StructuredData::default(), start + 1, Utf8::Unknown)),
        Some(b'[') => {}
        Some(_) => return Err(invalid(start)),
    }
    let tail = frame.get(start..).unwrap_or_default();
    // ASCII (the usual case) needs no check per value; otherwise values before the first bad
    // byte are known good, and the rest are checked one by one.
    let (mut utf8, valid_to) = if tail.iter().fold(0u8, |acc, &b| acc | b) < 0x80 {
        (Utf8::ToTheEnd, frame.len())
    } else {
        match std::str::from_utf8(tail) {
            Ok(_) => (Utf8::ToTheEnd, frame.len()),
            Err(e) => (Utf8::Values, start + e.valid_up_to()),
        }
    };
    let mut out = SdBuilder::new(start);
    // Duplicate SD-IDs (§6.3.2): a scan while there are few elements, then a hash set, so
    // the check stays linear.
    let mut first_ids: [&[u8]; SCAN_IDS] = [&[]; SCAN_IDS];
    let mut ids: HashSet<&[u8]> = HashSet::new();
    let (mut elements, mut params_seen) = (0usize, 0usize);
    let mut pos = start;
    while frame.get(pos) == Some(&b'[') {
        let n = elements;
        if n >= MAX_SD_ELEMENTS {
            return Err(invalid(pos));
        }
        let (id, id_end) = sd_name(frame, pos + 1).map_err(invalid)?;
        if let Some(at) = bad_enterprise_id(id) {
            return Err(invalid(pos + 1 + at));
        }
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
        out.element(pos + 1, id_end);
        elements += 1;
        pos = id_end;
        loop {
            match frame.get(pos) {
                Some(b']') => break,
                Some(b' ') if params_seen >= MAX_SD_PARAMS => return Err(invalid(pos + 1)),
                Some(b' ') => {
                    let name_end = sd_name(frame, pos + 1).map_err(invalid)?.1;
                    let open = expect(frame, name_end, b'=').map_err(invalid)?;
                    let value_start = expect(frame, open, b'"').map_err(invalid)?;
                    let (escaped, end) = param_value(frame, value_start).map_err(invalid)?;
                    let raw = frame.get(value_start..end - 1).unwrap_or_default();
                    let utf8_ok = end <= valid_to || std::str::from_utf8(raw).is_ok();
                    if !utf8_ok {
                        utf8 = Utf8::Lossy;
                    }
                    // A value with escapes or bad UTF-8 is stored unescaped and repaired; any
                    // other is the frame's bytes as they are.
                    let owned = (escaped || !utf8_ok).then_some(|t: &mut Vec<u8>| {
                        if utf8_ok {
                            unescape(raw, escaped, t);
                        } else {
                            unescape(String::from_utf8_lossy(raw).as_bytes(), escaped, t);
                        }
                    });
                    out.param((pos + 1, name_end), (value_start, end - 1), owned);
                    params_seen += 1;
                    pos = end;
                }
                _ => return Err(invalid(pos)),
            }
        }
        pos += 1;
    }
    Ok((out.finish(frame, pos), pos, utf8))
}

/// Appends a PARAM-VALUE (UTF-8) to `out`, with `\"`, `\\` and `\]` unescaped (§6.3.3); a
/// backslash before anything else is a literal backslash.
fn unescape(value: &[u8], escaped: bool, out: &mut Vec<u8>) {
    if !escaped {
        out.extend_from_slice(value);
        return;
    }
    let mut rest = value;
    while let Some(k) = rest.iter().position(|&b| b == b'\\') {
        out.extend_from_slice(rest.get(..k).unwrap_or_default());
        let after = rest.get(k + 1..).unwrap_or_default();
        match after.first() {
            Some(&b @ (b'"' | b'\\' | b']')) => {
                out.push(b);
                rest = after.get(1..).unwrap_or_default();
            }
            _ => {
                out.push(b'\\');
                rest = after;
            }
        }
    }
    out.extend_from_slice(rest);
}

/// An SD-ID with `@` is `name@<private enterprise number>` (§6.3.2): one `@`, with something
/// on both sides. Returns the offending offset within `id`.
fn bad_enterprise_id(id: &[u8]) -> Option<usize> {
    let at = id.iter().position(|&b| b == b'@')?;
    let rest = id.get(at + 1..).unwrap_or_default();
    if at == 0 {
        Some(0)
    } else if rest.is_empty() {
        Some(id.len())
    } else {
        rest.iter()
            .position(|&b| b == b'@')
            .map(|second| at + 1 + second)
    }
}

/// `SD-NAME = 1*32PRINTUSASCII` except `=`, SP, `]` and `"`: the name and where it ends.
fn sd_name(frame: &[u8], pos: usize) -> Result<(&[u8], usize), usize> {
    let input = frame.get(pos..).unwrap_or_default();
    match SD_NAME.run(input, MAX_SD_NAME) {
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

/// PARAM-VALUE starting at `start` (after the opening quote): whether it holds an escape, and
/// the offset after the closing quote. `\"`, `\\` and `\]` are escapes; a
/// backslash before anything else is a literal backslash (§6.3.3). An unescaped `]` or the end
/// of input is the offending byte.
fn param_value(frame: &[u8], start: usize) -> Result<(bool, usize), usize> {
    let mut pos = start;
    let mut escaped = false;
    let close = loop {
        let rest = frame.get(pos..).unwrap_or_default();
        let Some(k) = find3(rest, b'"', b'\\', b']') else {
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
    Ok((escaped, close + 1))
}
