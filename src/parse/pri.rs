//! PRI: `"<" PRIVAL ">"` (RFC 5424 §6.2.1, RFC 3164 §4.1.1).
//!
//! PRIVAL is `1*3DIGIT` with a value of at most 191. Leading zeros are accepted as rsyslog does
//! (`<013>` is 13, `<00>` is 0): senders such as old `logger` builds emit them, and the three-digit
//! cap still bounds the work. More than three digits (`<0000013>`) is invalid.

use crate::event::{Facility, Severity};

/// The largest valid PRIVAL (local7.debug).
const MAX_PRIVAL: u16 = 191;

/// What the start of a frame says about its priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pri {
    /// A well-formed PRI.
    Valid {
        /// Facility (PRIVAL / 8).
        facility: Facility,
        /// Severity (PRIVAL % 8).
        severity: Severity,
        /// Length of the PRI in bytes, brackets included: the header goes on at this offset.
        len: usize,
    },
    /// The frame does not start with `<` (RFC 3164 §4.3.3: treat as user.notice).
    Missing,
    /// The frame starts with `<` but holds no valid PRI.
    Invalid {
        /// Offset of the offending byte (`input.len()` when the input ended).
        at: usize,
    },
}

/// Reads the PRI at the start of `input`. Never panics; looks at five bytes at most.
pub fn parse_pri(input: &[u8]) -> Pri {
    let Some((b'<', rest)) = input.split_first() else {
        return Pri::Missing;
    };
    // A hand-rolled scan: this runs for every message and is five bytes long.
    let mut value: u16 = 0;
    let mut digits = 0usize;
    for &b in rest.iter().take(4) {
        match b {
            b'0'..=b'9' if digits < 3 => {
                value = value * 10 + u16::from(b - b'0');
                digits += 1;
                if value > MAX_PRIVAL {
                    // The digit that pushed the value over 191 (always the third one).
                    return Pri::Invalid { at: digits };
                }
            }
            b'>' if digits > 0 => return valid(value, digits + 2),
            // A fourth digit, a sign, a space, another byte.
            _ => return Pri::Invalid { at: 1 + digits },
        }
    }
    // The input ended inside the PRI.
    Pri::Invalid { at: 1 + digits }
}

fn valid(value: u16, len: usize) -> Pri {
    let code = u8::try_from(value).unwrap_or(u8::MAX);
    match (Facility::from_code(code / 8), Severity::from_code(code % 8)) {
        (Some(facility), Some(severity)) => Pri::Valid {
            facility,
            severity,
            len,
        },
        _ => Pri::Invalid { at: 1 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ParseErrorKind;
    use crate::parse::tests::parse_utc as parse;

    fn valid(input: &[u8]) -> (u8, u8, usize) {
        match parse_pri(input) {
            Pri::Valid {
                facility,
                severity,
                len,
            } => (facility.code(), severity.code(), len),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    fn invalid_at(input: &[u8]) -> usize {
        match parse_pri(input) {
            Pri::Invalid { at } => at,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    /// The frame-level outcome of an invalid PRI: user.notice, whole frame as MSG, flag.
    fn assert_invalid_frame(frame: &[u8], at: usize) {
        let p = parse(frame);
        assert_eq!(
            (p.facility, p.severity, p.pri_missing),
            (Facility::User, Severity::Notice, false)
        );
        assert_eq!(p.message.slice(frame), frame);
        let e = p.parse_error.expect("flagged");
        assert_eq!(
            (e.kind, e.at),
            (ParseErrorKind::InvalidPri, at),
            "{frame:?}"
        );
    }

    #[test]
    fn valid_pris() {
        assert_eq!(valid(b"<0>"), (0, 0, 3));
        assert_eq!(valid(b"<13>hi"), (1, 5, 4));
        assert_eq!(valid(b"<34>1 "), (4, 2, 4));
        assert_eq!(valid(b"<191>"), (23, 7, 5));
        assert_eq!(valid(b"<165>1 x"), (20, 5, 5));
    }

    #[test]
    fn hostile_d01_pri_above_191() {
        assert_eq!(invalid_at(b"<192>hi"), 3);
        assert_eq!(invalid_at(b"<255>hi"), 3);
        assert_eq!(invalid_at(b"<999>hi"), 3);
        assert_invalid_frame(b"<192>hi", 3);
        assert_invalid_frame(b"<999>Oct 11 22:14:15 host tag: pri 999", 3);
    }

    #[test]
    fn hostile_d02_pri_more_than_three_digits() {
        assert_eq!(invalid_at(b"<4294967297>hi"), 3);
        assert_eq!(invalid_at(b"<99999999999999999999>hi"), 3);
        assert_eq!(invalid_at(b"<0000013>hi"), 4);
        assert_eq!(invalid_at(b"<1011>hi"), 4);
        assert_invalid_frame(b"<0000013>hi", 4);
        assert_invalid_frame(
            b"<8000000000000000000000000000000>1 2003-03-01T01:00:00.000Z h t - - - m",
            3,
        );
    }

    #[test]
    fn hostile_d03_signed_spaced_empty_or_cut_pri() {
        assert_eq!(invalid_at(b"<-1>hi"), 1);
        assert_eq!(invalid_at(b"<+1>hi"), 1);
        assert_eq!(invalid_at(b"< 1>hi"), 1);
        assert_eq!(invalid_at(b"<1 >hi"), 2);
        assert_eq!(invalid_at(b"<>hi"), 1);
        assert_eq!(invalid_at(b"<"), 1);
        assert_eq!(invalid_at(b"<13"), 3);
        assert_eq!(invalid_at(b"<1a>hello"), 2);
        assert_eq!(invalid_at(b"<x112>Mar  1 01:00:00 h t m"), 1);
        for frame in [&b"<-1>hi"[..], b"<+1>hi", b"< 1>hi", b"<>hi", b"<", b"<13"] {
            let at = invalid_at(frame);
            assert_invalid_frame(frame, at);
        }
    }

    #[test]
    fn hostile_d05_no_pri() {
        assert_eq!(parse_pri(b"Oct 11 22:14:15 host app: hi"), Pri::Missing);
        assert_eq!(parse_pri(b"hello"), Pri::Missing);
        assert_eq!(parse_pri(b""), Pri::Missing);
        assert_eq!(parse_pri(b"\0<13>hello"), Pri::Missing);
        assert_eq!(parse_pri(b"13>hello"), Pri::Missing);
        let p = parse(b"hello");
        assert!(p.pri_missing);
        assert_eq!((p.facility, p.severity), (Facility::User, Severity::Notice));
        assert_eq!(p.message.slice(b"hello"), b"hello");
        assert_eq!(p.parse_error, None);
    }

    /// D06: lenient like rsyslog, strict about the three-digit cap.
    #[test]
    fn hostile_d06_leading_zeros() {
        assert_eq!(valid(b"<013>hi"), (1, 5, 5));
        assert_eq!(valid(b"<00>hi"), (0, 0, 4));
        assert_eq!(valid(b"<002>x"), (0, 2, 5));
        assert_eq!(invalid_at(b"<0013>hi"), 4);
        let frame = b"<013>Oct 11 22:14:15 host tag: leading zero pri";
        let p = parse(frame);
        assert_eq!((p.facility, p.severity), (Facility::User, Severity::Notice));
        assert_eq!(p.parse_error, None);
        assert_eq!(p.message.slice(frame), b"leading zero pri");
    }
}
