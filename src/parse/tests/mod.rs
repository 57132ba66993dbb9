//! Parser tests: helpers and frame-level hostile inputs. Grammar-specific tests sit in the
//! submodules; the go-syslog conformance corpus in `corpus`. Properties over any input are in
//! tests/properties.rs, through the fuzz targets' checks.

mod corpus;
mod dialects;
mod peers;
pub(crate) mod rfc3164;
mod rfc5424;

use chrono::{DateTime, TimeZone, Utc};

use super::{ParseOptions, Zone, parse_in, trim_end};
use crate::event::{Facility, ParseErrorKind, Parsed, Protocol, Severity, Span};

/// Fixed receive time for year inference: 2026-11-22T10:00:00Z.
pub(crate) fn opts() -> ParseOptions {
    ParseOptions::new(
        Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0)
            .single()
            .expect("valid"),
        Zone::Local,
    )
}

/// Parses with the fixed receive time, zone-less stamps read as UTC (reproducible).
pub(crate) fn parse_utc(frame: &[u8]) -> Parsed {
    parse_in(frame, &opts(), &Utc)
}

/// A header span as text.
pub(crate) fn text(frame: &[u8], span: Option<Span>) -> Option<&str> {
    span.map(|s| std::str::from_utf8(s.slice(frame)).expect("header fields are ASCII"))
}

/// MSG as go-syslog's and syslog-ng's corpora show it: bytes that are not UTF-8 as `\xNN`.
pub(crate) fn shown(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The parse error as a comparable pair.
pub(crate) fn err(p: &Parsed) -> Option<(ParseErrorKind, usize)> {
    p.parse_error.map(|e| (e.kind, e.at))
}

#[test]
fn hostile_i06_trailing_lf_nul_crlf_are_dropped() {
    for frame in [
        &b"<34>Oct 11 22:14:15 host tag: udp with lf\n"[..],
        b"<34>Oct 11 22:14:15 host tag: udp with lf\r\n",
        b"<34>Oct 11 22:14:15 host tag: udp with lf\0",
        b"<34>Oct 11 22:14:15 host tag: udp with lf\n\0\r\n\n",
    ] {
        let p = parse_utc(frame);
        assert_eq!(p.message.slice(frame), b"udp with lf", "{frame:?}");
    }
    // A lone trailing CR is content; so are embedded LF and NUL.
    assert_eq!(trim_end(b"a\r"), b"a\r");
    assert_eq!(trim_end(b"a\nb\0c"), b"a\nb\0c");
    assert_eq!(trim_end(b"\n\0\r\n"), b"");
    let f = b"<13>1 - h a - - - m\n";
    assert_eq!(parse_utc(f).message.slice(f), b"m");
}

/// D04: a PRI alone is an (empty) RFC 3164 event; `1 ` commits to RFC 5424 and is truncated.
#[test]
fn hostile_d04_pri_only() {
    for (frame, msg) in [(&b"<13>"[..], &b""[..]), (b"<13> ", b" "), (b"<13>1", b"1")] {
        let p = parse_utc(frame);
        assert_eq!(
            (p.protocol, p.parse_error),
            (Protocol::Rfc3164, None),
            "{frame:?}"
        );
        assert_eq!((p.facility, p.severity), (Facility::User, Severity::Notice));
        assert_eq!(p.message.slice(frame), msg);
    }
    let p = parse_utc(b"<13>1 ");
    assert_eq!(p.protocol, Protocol::Rfc5424);
    assert_eq!(err(&p), Some((ParseErrorKind::TruncatedHeader, 6)));
    assert_eq!(p.message, Span::new(6, 6));
}

/// D07: VERSION is `NONZERO-DIGIT 0*2DIGIT` (RFC 5424's ABNF, as go-syslog reads it), so 1 to
/// 999 are RFC 5424. Anything else after the PRI is RFC 3164 text, unflagged.
#[test]
fn hostile_d07_version_oddities() {
    for frame in [
        &b"<13>0 2003-10-11T22:14:15Z h a - - - m"[..],
        b"<13>01 2003-10-11T22:14:15Z h a - - - m",
        b"<13>1000 2003-10-11T22:14:15Z h a - - - m",
        b"<13>1x 2003-10-11T22:14:15Z h a - - - m",
    ] {
        let p = parse_utc(frame);
        assert_eq!((p.protocol, p.parse_error), (Protocol::Rfc3164, None));
        assert_eq!((p.timestamp, p.hostname, p.app_name), (None, None, None));
        assert_eq!(p.message.slice(frame), &frame[4..]);
    }
    for (frame, version) in [
        (&b"<13>1 2003-10-11T22:14:15Z h a - - - m"[..], 1),
        (b"<13>2 2003-10-11T22:14:15Z h a - - - m", 2),
        (b"<13>999 2003-10-11T22:14:15Z h a - - - m", 999),
    ] {
        let p = parse_utc(frame);
        assert_eq!(
            (p.protocol, p.version, p.parse_error),
            (Protocol::Rfc5424, version, None)
        );
        assert_eq!(
            (text(frame, p.hostname), p.message.slice(frame)),
            (Some("h"), &b"m"[..])
        );
    }
}

/// D06 for RFC 5424: PRIVAL has no leading zeros there, so `<013>1 …` is an invalid PRI (at the
/// byte after the zero, where go-syslog stops). RFC 3164 keeps rsyslog's leniency (pri.rs).
#[test]
fn hostile_d06_leading_zero_pri_is_invalid_in_rfc5424() {
    for frame in [
        &b"<013>1 - h a - - - m"[..],
        b"<00>1 - h a - - - m",
        b"<002>122 - - - - - -",
    ] {
        let p = parse_utc(frame);
        assert_eq!(err(&p), Some((ParseErrorKind::InvalidPri, 2)), "{frame:?}");
        assert_eq!((p.facility, p.severity), (Facility::User, Severity::Notice));
        assert_eq!(p.message.slice(frame), frame);
    }
    let p = parse_utc(b"<0>1 - h a - - - m");
    assert_eq!((p.protocol, p.parse_error), (Protocol::Rfc5424, None));
}

#[test]
fn hostile_g03_embedded_nul_kept() {
    let f = b"<167>Mar  6 16:57:54 172.20.245.8 test: msgnum:0 \0 test message\n";
    let p = parse_utc(f);
    assert_eq!(text(f, p.hostname), Some("172.20.245.8"));
    assert_eq!(p.message.slice(f), b"msgnum:0 \0 test message");
}

#[test]
fn hostile_g04_one_datagram_is_one_event() {
    let f = b"<13>Oct 11 22:14:15 h a: ok\n<0>Oct 11 22:14:15 h kernel: FAKE PANIC";
    let p = parse_utc(f);
    assert_eq!((p.facility, p.severity), (Facility::User, Severity::Notice));
    assert_eq!(p.message.slice(f), &f[25..]);
}

#[test]
fn hostile_g06_size_boundaries_parse_whole() {
    for size in [480, 2048, 8192, 65536, 1 << 20] {
        let head = "<13>1 - h a - - - ";
        let f = format!("{head}{}", "m".repeat(size - head.len()));
        let p = parse_utc(f.as_bytes());
        assert_eq!((p.parse_error, p.message.len()), (None, size - head.len()));
        let head = "<13>Oct 11 22:14:15 h a: ";
        let f = format!("{head}{}", "m".repeat(size - head.len()));
        assert_eq!(parse_utc(f.as_bytes()).message.len(), size - head.len());
    }
}

/// Extreme years and receive times, in the local zone and at the edges of chrono's range.
#[test]
fn extreme_years_and_receive_times_do_not_panic() {
    let frames = [
        &b"<13>0000-01-01T00:00:00 h a: x"[..],
        b"<13>9999-12-31T23:59:59 h a: x",
        b"<13>0001 Jan  1 00:00:00 h a: x",
        b"<13>9999 Dec 31 23:59:59 h a: x",
        b"<13>Feb 29 00:00:00 h a: x",
        b"<13>Jan  1 00:00:00 h a: x",
        b"<13>1 9999-12-31T23:59:59.999999-23:59 h a - - - x",
        b"<13>1 0000-01-01T00:00:00+23:59 h a - - - x",
    ];
    let east = chrono::FixedOffset::east_opt(86_399).expect("valid");
    for received_at in [
        DateTime::<Utc>::MIN_UTC,
        DateTime::<Utc>::MAX_UTC,
        opts().received_at(),
    ] {
        let o = ParseOptions::new(received_at, Zone::Local);
        for f in frames {
            let p = super::parse(f, &o);
            if received_at == opts().received_at() {
                assert_eq!(p.parse_error, None, "{f:?}");
            }
            parse_in(f, &o, &Utc);
            parse_in(f, &o, &east);
        }
    }
    let p = super::parse(b"<13>9999 Dec 31 23:59:59 h a: x", &opts());
    assert!(p.timestamp.is_some());
}

/// Bytes that steer both grammars (PRI, VERSION, stamps, separators, brackets, SD) mixed with
/// control characters and bytes above 0x7f, which header fields must never take in.
fn syslogish_frame() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let piece = prop_oneof![
        Just(b"<13>".to_vec()),
        Just(b"<165>1 ".to_vec()),
        Just(b"2026-11-22T10:00:00Z ".to_vec()),
        Just(b"Nov 22 10:00:00 ".to_vec()),
        Just(b"host ".to_vec()),
        Just(b"app[12]: ".to_vec()),
        Just(b"- - ".to_vec()),
        Just(b"[id k=\"v\"] ".to_vec()),
        proptest::collection::vec(
            prop_oneof![
                Just(b' '),
                Just(b':'),
                Just(b'['),
                Just(b']'),
                Just(b'\n'),
                Just(b'\t'),
                Just(0u8),
                Just(0x7f),
                Just(0xc3),
                Just(b'a')
            ],
            0..6
        ),
    ];
    proptest::collection::vec(piece, 0..8).prop_map(|p| p.concat())
}

proptest::proptest! {
    /// What lets line formats copy without escaping: header fields are printable whenever
    /// `fields_plain` says so, and MSG has no control character whenever `msg_plain` says so.
    #[test]
    fn plain_flags_never_hide_what_needs_escaping(frame in syslogish_frame()) {
        let p = parse_utc(&frame);
        if p.fields_plain {
            for span in [p.hostname, p.app_name, p.procid, p.msgid].into_iter().flatten() {
                let bytes = span.slice(&frame);
                proptest::prop_assert!(
                    bytes.iter().all(|&b| (33..=126).contains(&b)),
                    "{:?} in {:?}", bytes, frame
                );
            }
        }
        let msg = p.message.slice(&frame);
        let control = msg.iter().any(|&b| b < 0x20 || b == 0x7f);
        if p.msg_plain {
            proptest::prop_assert!(!control, "{:?}", frame);
        }
    }
}
