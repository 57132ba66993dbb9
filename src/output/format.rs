//! Line formats: how an [`Event`] becomes bytes in a file or on stdout.
//!
//! Every format writes straight into the caller's buffer (no per-event `String`). Line-oriented
//! formats escape control characters in fields and MSG as rsyslog does (`#012` for LF), so a
//! message can never forge a second line (hostile-inputs G04); `json` escapes per JSON and shows
//! bytes that are not UTF-8 as U+FFFD; `raw` writes the original frame exactly.
//! [`write_rfc5424`] is RFC 5424 for the wire (forwarding): nothing escaped but what §6.3.3
//! requires.

use std::io::Write as _;
use std::sync::OnceLock;

use chrono::{DateTime, FixedOffset, Local};

use crate::event::{Event, ParseFlags, Protocol, StructuredData};
use crate::output::stamp;
use crate::parse::rfc5424;

/// Output line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `Nov 22 10:00:00 host app[pid]: msg` (rsyslog's RSYSLOG_TraditionalFileFormat).
    Traditional,
    /// RFC 3339 timestamp with microseconds (rsyslog's RSYSLOG_FileFormat).
    Precise,
    /// `<PRI>Nov 22 10:00:00 host app[pid]: msg`.
    Rfc3164,
    /// `<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG`.
    Rfc5424,
    /// One JSON object per line: the event's fields (see `write_json`), `null` where absent.
    Json,
    /// The frame's original bytes.
    Raw,
}

impl Format {
    /// Parses a config name.
    pub fn from_name(name: &str) -> Option<Format> {
        Some(match name {
            "traditional" => Format::Traditional,
            "precise" => Format::Precise,
            "rfc3164" => Format::Rfc3164,
            "rfc5424" => Format::Rfc5424,
            "json" => Format::Json,
            "raw" => Format::Raw,
            _ => return None,
        })
    }

    /// Appends the event as one line, with its trailing LF, to `out`. Control characters are
    /// escaped (except in `raw`), so the line cannot be split.
    pub fn write_line(self, ev: &Event, out: &mut Vec<u8>) {
        self.write_message(ev, out, escape_line);
        out.push(b'\n');
    }

    /// Appends the event without a trailer and without escaping: for octet-counted transports,
    /// where a message's bytes travel as they are (hostile-inputs G04). RFC 5424 is written for
    /// the wire ([`write_rfc5424`]).
    pub fn write_verbatim(self, ev: &Event, out: &mut Vec<u8>) {
        match self {
            Format::Rfc5424 => write_rfc5424(ev, out),
            _ => self.write_message(ev, out, copy_bytes),
        }
    }

    fn write_message(self, ev: &Event, out: &mut Vec<u8>, esc: Escape) {
        match self {
            Format::Traditional => {
                stamp::write_bsd(out, event_time(ev));
                out.push(b' ');
                write_tail_3164(ev, out, esc);
            }
            Format::Precise => {
                stamp::write_precise(out, event_time(ev));
                out.push(b' ');
                write_tail_3164(ev, out, esc);
            }
            Format::Rfc3164 => {
                write_pri(ev, out);
                stamp::write_bsd(out, event_time(ev));
                out.push(b' ');
                write_tail_3164(ev, out, esc);
            }
            Format::Rfc5424 => write_rfc5424_as(ev, out, Style::File),
            // JSON escapes per JSON either way.
            Format::Json => write_json(ev, out),
            Format::Raw => out.extend_from_slice(&ev.raw),
        }
    }
}

/// How field and message bytes are copied: escaped for line-oriented outputs, or as they are.
type Escape = fn(&[u8], &mut Vec<u8>);

fn copy_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(bytes);
}

/// The time a line shows: the message's own, else when it was received (in local time).
fn event_time(ev: &Event) -> DateTime<FixedOffset> {
    ev.parsed
        .timestamp
        .unwrap_or_else(|| ev.received_at.with_timezone(&Local).fixed_offset())
}

fn write_pri(ev: &Event, out: &mut Vec<u8>) {
    let pri = u32::from(ev.facility().code()) * 8 + u32::from(ev.severity().code());
    out.push(b'<');
    push_decimal(out, pri);
    out.push(b'>');
}

/// `n` in decimal, without `fmt` (its machinery showed per record in profiles, issue 18).
pub(crate) fn push_decimal(out: &mut Vec<u8>, n: u32) {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// This machine's host name, for events that carry none and came over a unix socket.
pub fn local_hostname() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| crate::sys::hostname().unwrap_or_else(|| "localhost".to_string()))
}

/// HOSTNAME, or where the event came from when it has none (as rsyslog uses `fromhost`).
fn write_host(ev: &Event, out: &mut Vec<u8>, esc: Escape) {
    match (ev.span_bytes(ev.parsed.hostname), ev.source) {
        (Some(h), _) => esc(h, out),
        (None, Some(addr)) => {
            let _ = write!(out, "{}", addr.ip());
        }
        (None, None) => out.extend_from_slice(local_hostname().as_bytes()),
    }
}

/// `host app[pid]: msg` without the newline.
fn write_tail_3164(ev: &Event, out: &mut Vec<u8>, esc: Escape) {
    let field_esc = fields_escape(ev, esc);
    write_host(ev, out, field_esc);
    out.push(b' ');
    if let Some(app) = ev.span_bytes(ev.parsed.app_name) {
        field_esc(app, out);
        if let Some(pid) = ev.span_bytes(ev.parsed.procid) {
            out.push(b'[');
            field_esc(pid, out);
            out.push(b']');
        }
        out.extend_from_slice(b": ");
    }
    write_msg(ev, out, esc);
}

/// `esc` for the header fields, or a copy when the parser read them as printable.
fn fields_escape(ev: &Event, esc: Escape) -> Escape {
    if ev.parsed.fields_plain {
        copy_bytes
    } else {
        esc
    }
}

/// MSG through `esc`, or copied when the parser found nothing in it to escape.
fn write_msg(ev: &Event, out: &mut Vec<u8>, esc: Escape) {
    if ev.parsed.msg_plain {
        out.extend_from_slice(ev.message());
    } else {
        esc(ev.message(), out);
    }
}

/// Copies `bytes`, replacing control characters with `#ooo` (rsyslog's escaping), so one event
/// is always one line.
pub fn escape_line(bytes: &[u8], out: &mut Vec<u8>) {
    if !crate::parse::scan_text(bytes).control {
        out.extend_from_slice(bytes);
        return;
    }
    let mut rest = bytes;
    // Only lines that hold one get here (the scan is the fast pass), so bytewise is enough.
    while let Some(i) = rest.iter().position(|&b| is_control(b)) {
        out.extend_from_slice(&rest[..i]);
        let b = rest[i];
        out.extend_from_slice(&[b'#', b'0' + (b >> 6), b'0' + ((b >> 3) & 7), b'0' + (b & 7)]);
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// Appends `ev` as one RFC 5424 message, without a trailer, as it goes on the wire: fields as
/// the event has them (NILVALUE when absent; HOSTNAME is not filled in from the sender), MSG
/// bytes unescaped, TIMESTAMP with at most six fraction digits (§6.2.3). Parsing the result gives
/// the event's fields back (the round-trip property in tests/properties.rs). A
/// field value RFC 5424 cannot carry, which the parsers never produce, is written as NILVALUE.
pub fn write_rfc5424(ev: &Event, out: &mut Vec<u8>) {
    write_rfc5424_as(ev, out, Style::Wire);
}

/// How an RFC 5424 line is written: for a file (one event per line, like rsyslog's
/// RSYSLOG_SyslogProtocol23Format) or for the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    /// Control characters as `#ooo`, HOSTNAME filled in from the sender.
    File,
    /// Bytes as they are.
    Wire,
}

fn write_rfc5424_as(ev: &Event, out: &mut Vec<u8>, style: Style) {
    write_pri(ev, out);
    let version = match ev.parsed.protocol {
        Protocol::Rfc5424 if ev.parsed.version > 0 => ev.parsed.version,
        _ => 1,
    };
    push_decimal(out, u32::from(version));
    out.push(b' ');
    match ev.parsed.timestamp {
        Some(t) => stamp::write_rfc5424(out, t),
        None => out.push(b'-'),
    }
    out.push(b' ');
    let field_esc = fields_escape(ev, escape_line);
    match style {
        Style::File => write_host(ev, out, field_esc),
        Style::Wire => header_field(
            out,
            ev.span_bytes(ev.parsed.hostname),
            rfc5424::MAX_HOSTNAME,
            ev.parsed.fields_plain,
        ),
    }
    for (value, max) in [
        (ev.span_bytes(ev.parsed.app_name), rfc5424::MAX_APP_NAME),
        (ev.span_bytes(ev.parsed.procid), rfc5424::MAX_PROCID),
        (ev.span_bytes(ev.parsed.msgid), rfc5424::MAX_MSGID),
    ] {
        out.push(b' ');
        match style {
            Style::File => match value {
                Some(s) if !s.is_empty() => field_esc(s, out),
                _ => out.push(b'-'),
            },
            Style::Wire => header_field(out, value, max, ev.parsed.fields_plain),
        }
    }
    out.push(b' ');
    write_sd_5424(&ev.parsed.structured_data, out, style);
    let msg = ev.message();
    if msg.is_empty() {
        return;
    }
    out.push(b' ');
    match style {
        Style::File => write_msg(ev, out, escape_line),
        Style::Wire => {
            // A MSG that itself starts with a BOM keeps it behind a BOM the receiver strips.
            if msg.starts_with(BOM) {
                out.extend_from_slice(BOM);
            }
            out.extend_from_slice(msg);
        }
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A header field as RFC 5424 allows it (1 to `max` PRINTUSASCII), else NILVALUE. `printable`:
/// the parser read it so (`Parsed::fields_plain`), only the length is checked.
fn header_field(out: &mut Vec<u8>, value: Option<&[u8]>, max: usize, printable: bool) {
    match value {
        Some(v)
            if (1..=max).contains(&v.len())
                && (printable || v.iter().all(|b| (33..=126).contains(b))) =>
        {
            out.extend_from_slice(v);
        }
        _ => out.push(b'-'),
    }
}

fn write_sd_5424(sd: &StructuredData, out: &mut Vec<u8>, style: Style) {
    if sd.is_empty() {
        out.push(b'-');
        return;
    }
    for el in sd.elements() {
        out.push(b'[');
        out.extend_from_slice(el.id.as_bytes());
        for (k, v) in el.params() {
            out.push(b' ');
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b"=\"");
            for &b in v.as_bytes() {
                match b {
                    // §6.3.3: these three are escaped with a backslash.
                    b'"' | b'\\' | b']' => out.extend_from_slice(&[b'\\', b]),
                    _ if style == Style::File => escape_line(&[b], out),
                    _ => out.push(b),
                }
            }
            out.push(b'"');
        }
        out.push(b']');
    }
}

/// Writes `bytes` as a JSON string (with quotes); invalid UTF-8 becomes U+FFFD.
pub fn json_string(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let start = out.len();
    // ASCII is the rule: escaped in one pass that notices any other byte. Only then is the
    // text checked as UTF-8 (and written again).
    if json_escape(bytes, out) {
        match std::str::from_utf8(bytes) {
            Ok(_) => {}
            Err(_) => {
                out.truncate(start);
                for chunk in bytes.utf8_chunks() {
                    json_escape(chunk.valid().as_bytes(), out);
                    if !chunk.invalid().is_empty() {
                        out.extend_from_slice("\u{FFFD}".as_bytes());
                    }
                }
            }
        }
    }
    out.push(b'"');
}

/// Eight bytes at once, for the escaping scan.
const ONES: u64 = u64::from_le_bytes([1; 8]);
const HIGHS: u64 = ONES * 0x80;

/// Whether any byte of `w` may need escaping: below 0x20, `"`, `\\`, or 0x7f and above (these
/// include UTF-8 sequences, which the byte loop lets through). A carry or borrow can only flag
/// a byte above one that is flagged already, so the answer is exact.
#[inline]
fn may_need_escape(w: u64) -> bool {
    let zero_in = |v: u64| v.wrapping_sub(ONES) & !v;
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    let quote = zero_in(w ^ (ONES * u64::from(b'"')));
    let backslash = zero_in(w ^ (ONES * u64::from(b'\\')));
    let del_or_high = w.wrapping_add(ONES) | w;
    (control | quote | backslash | del_or_high) & HIGHS != 0
}

/// Escapes `bytes` (UTF-8 bytes above 0x7f pass as they are); returns whether it met any.
fn json_escape(bytes: &[u8], out: &mut Vec<u8>) -> bool {
    let mut start = 0;
    let mut i = 0;
    let mut high = false;
    while i < bytes.len() {
        // Whole words with nothing to escape are skipped (most messages are such).
        while let Some(word) = bytes.get(i..i + 8) {
            let w = u64::from_le_bytes(word.try_into().unwrap_or_default());
            if may_need_escape(w) {
                break;
            }
            i += 8;
        }
        let end = (i + 8).min(bytes.len());
        while i < end {
            let b = bytes[i];
            let esc: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0..=0x1f | 0x7f => b"",
                0x80.. => {
                    high = true;
                    i += 1;
                    continue;
                }
                _ => {
                    i += 1;
                    continue;
                }
            };
            out.extend_from_slice(&bytes[start..i]);
            if esc.is_empty() {
                let _ = write!(out, "\\u{:04x}", b);
            } else {
                out.extend_from_slice(esc);
            }
            i += 1;
            start = i;
        }
    }
    out.extend_from_slice(&bytes[start..]);
    high
}

/// Writes a socket address as `Display` does (`1.2.3.4:514`, `[::1]:514`), IPv4 without the
/// formatting machinery (a tenth of a JSON document's cost went there).
fn push_socket_addr(out: &mut Vec<u8>, a: &std::net::SocketAddr) {
    match a {
        std::net::SocketAddr::V4(v4) => {
            for (i, o) in v4.ip().octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_decimal(out, u32::from(*o));
            }
            out.push(b':');
            push_decimal(out, u32::from(v4.port()));
        }
        v6 => {
            let _ = write!(out, "{v6}");
        }
    }
}

pub(crate) fn json_opt(out: &mut Vec<u8>, v: Option<&str>) {
    match v {
        Some(s) => json_string(s.as_bytes(), out),
        None => out.extend_from_slice(b"null"),
    }
}

fn write_json(ev: &Event, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"received_at\":\"");
    stamp::write_utc_micros(out, ev.received_at);
    out.extend_from_slice(b"\",\"source\":");
    match ev.source {
        Some(a) => {
            out.push(b'"');
            push_socket_addr(out, &a);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"listener\":");
    json_string(ev.listener.as_bytes(), out);
    for (key, value) in [
        (&b",\"protocol\":\""[..], ev.parsed.protocol.name()),
        (b"\",\"facility\":\"", ev.facility().name()),
        (b"\",\"severity\":\"", ev.severity().name()),
    ] {
        out.extend_from_slice(key);
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(b"\",\"timestamp\":");
    match ev.parsed.timestamp {
        Some(t) => {
            out.push(b'"');
            stamp::write_rfc3339_auto(out, t);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"hostname\":");
    json_opt(out, ev.hostname());
    out.extend_from_slice(b",\"app_name\":");
    json_opt(out, ev.app_name());
    out.extend_from_slice(b",\"procid\":");
    json_opt(out, ev.procid());
    out.extend_from_slice(b",\"msgid\":");
    json_opt(out, ev.msgid());
    out.extend_from_slice(b",\"structured_data\":");
    write_sd_json(&ev.parsed.structured_data, out);
    out.extend_from_slice(b",\"message\":");
    json_string(ev.message(), out);
    if let Some(peer) = &ev.tls_peer {
        out.extend_from_slice(b",\"tls_peer\":{\"name\":");
        json_opt(out, peer.name.as_deref());
        out.extend_from_slice(b",\"fingerprint\":");
        json_string(peer.fingerprint.as_bytes(), out);
        out.push(b'}');
    }
    // Checked to be one JSON object when read, and not cut: written as it is.
    if ev.parsed.flags.contains(ParseFlags::MSG_JSON) && !ev.truncated {
        out.extend_from_slice(b",\"fields\":");
        out.extend_from_slice(ev.message());
    }
    if let Some(e) = ev.parsed.parse_error {
        let _ = write!(out, ",\"parse_error\":\"{e}\"");
    }
    if ev.truncated {
        out.extend_from_slice(b",\"truncated\":true");
    }
    out.push(b'}');
}

/// SD as `{"id":{"param":"value", "repeated":["a","b"]}}`, or `null` when there is none.
pub(crate) fn write_sd_json(sd: &StructuredData, out: &mut Vec<u8>) {
    if sd.is_empty() {
        out.extend_from_slice(b"null");
        return;
    }
    out.push(b'{');
    for (i, el) in sd.elements().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_string(el.id.as_bytes(), out);
        out.extend_from_slice(b":{");
        let mut first = true;
        for (j, (name, value)) in el.params().enumerate() {
            // Emit each distinct name once, at its first position; repeats become an array.
            if el.params().take(j).any(|(n, _)| n == name) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            json_string(name.as_bytes(), out);
            out.push(b':');
            let count = el.params().filter(|(n, _)| *n == name).count();
            if count == 1 {
                json_string(value.as_bytes(), out);
            } else {
                out.push(b'[');
                for (k, (_, v)) in el.params().filter(|(n, _)| *n == name).enumerate() {
                    if k > 0 {
                        out.push(b',');
                    }
                    json_string(v.as_bytes(), out);
                }
                out.push(b']');
            }
        }
        out.push(b'}');
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_match_serde_json_at_every_offset() {
        // Every ASCII byte, and a UTF-8 sequence, at each position of a word and past it.
        let mut samples: Vec<String> = Vec::new();
        for b in 0u8..0x80 {
            for at in 0..17 {
                let mut s = "abcdefghijklmnopq".to_string();
                s.insert(at, char::from(b));
                samples.push(s);
            }
        }
        samples.push("héllo wörld, 日本語 \u{7f} \u{1f600}".into());
        samples.push(String::new());
        for s in samples {
            let mut out = Vec::new();
            json_string(s.as_bytes(), &mut out);
            let back: String =
                serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{e}: {out:?}"));
            assert_eq!(back, s);
            // Control characters and DEL are escaped, nothing else below 0x80 is.
            assert!(!out.iter().any(|&b| b < 0x20 || b == 0x7f), "{out:?}");
        }
        let mut out = Vec::new();
        json_string(b"ok \xff\xfe then", &mut out);
        assert_eq!(out, "\"ok \u{FFFD}\u{FFFD} then\"".as_bytes());
    }
    use crate::event::{Facility, Parsed, Protocol, SdElement, Severity, Span};
    use bytes::Bytes;
    use chrono::Utc;

    fn ev(raw: &str) -> Event {
        let mut parsed = Parsed::unparsed(raw.as_bytes());
        parsed.protocol = Protocol::Rfc3164;
        parsed.facility = Facility::Auth;
        parsed.severity = Severity::Crit;
        Event {
            raw: Bytes::from(raw.to_string()),
            received_at: "2026-11-22T10:00:00.000123Z".parse().unwrap(),
            source: Some("10.0.0.5:51234".parse().unwrap()),
            listener: "tcp".into(),
            truncated: false,
            tls_peer: None,
            parsed,
        }
    }

    fn line(f: Format, e: &Event) -> String {
        let mut out = Vec::new();
        f.write_line(e, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// Byte-at-a-time escaping, as the reference for `escape_line`'s block-wise pass.
    fn escape_bytewise(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &b in bytes {
            if is_control(b) {
                out.extend_from_slice(&[
                    b'#',
                    b'0' + (b >> 6),
                    b'0' + ((b >> 3) & 7),
                    b'0' + (b & 7),
                ]);
            } else {
                out.push(b);
            }
        }
        out
    }

    #[test]
    fn blockwise_escaping_matches_bytewise() {
        // Every byte value at every position of a word, and next to bytes that carry borrows.
        for b in 0..=255u8 {
            for at in 0..17 {
                for filler in [b'a', 0x80, 0xff, 0x20, 0x7e, 0x1f] {
                    let mut input = vec![filler; 17];
                    input[at] = b;
                    let mut out = Vec::new();
                    escape_line(&input, &mut out);
                    assert_eq!(
                        out,
                        escape_bytewise(&input),
                        "byte {b:#x} at {at} among {filler:#x}"
                    );
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn escaping_matches_bytewise_on_any_input(input in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            let mut out = Vec::new();
            escape_line(&input, &mut out);
            proptest::prop_assert_eq!(out, escape_bytewise(&input));
        }
    }

    #[test]
    fn stamps_follow_the_second_and_the_offset() {
        let mut e = ev("x");
        for (stamp, traditional, precise) in [
            (
                "2026-11-02T03:04:05.5+01:00",
                "Nov  2 03:04:05",
                "2026-11-02T03:04:05.500000+01:00",
            ),
            (
                "2026-11-02T03:04:05.000001+01:00",
                "Nov  2 03:04:05",
                "2026-11-02T03:04:05.000001+01:00",
            ),
            (
                "2026-11-02T03:04:06+01:00",
                "Nov  2 03:04:06",
                "2026-11-02T03:04:06.000000+01:00",
            ),
            (
                "2026-11-02T02:04:06Z",
                "Nov  2 02:04:06",
                "2026-11-02T02:04:06.000000+00:00",
            ),
            (
                "2026-11-02T02:04:06-03:30",
                "Nov  2 02:04:06",
                "2026-11-02T02:04:06.000000-03:30",
            ),
        ] {
            let t: DateTime<FixedOffset> = stamp.parse().unwrap();
            e.parsed.timestamp = Some(t);
            assert!(
                line(Format::Traditional, &e).starts_with(traditional),
                "{stamp}"
            );
            assert!(line(Format::Precise, &e).starts_with(precise), "{stamp}");
            assert_eq!(
                line(Format::Precise, &e).split(' ').next().unwrap(),
                t.format("%Y-%m-%dT%H:%M:%S%.6f%:z").to_string(),
                "{stamp}"
            );
        }
    }

    #[test]
    fn control_characters_cannot_forge_lines() {
        let mut e = ev("ok\n<0>Oct 11 22:14:15 h kernel: FAKE\x1b[2J");
        e.parsed.timestamp = Some("2026-11-02T03:04:05+01:00".parse().unwrap());
        e.parsed.hostname = None;
        let l = line(Format::Traditional, &e);
        assert_eq!(
            l,
            "Nov  2 03:04:05 10.0.0.5 ok#012<0>Oct 11 22:14:15 h kernel: FAKE#033[2J\n"
        );
        assert_eq!(
            line(Format::Raw, &e).lines().count(),
            2,
            "raw keeps bytes exactly"
        );
        let j = line(Format::Json, &e);
        assert_eq!(j.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["message"], "ok\n<0>Oct 11 22:14:15 h kernel: FAKE\x1b[2J");
    }

    #[test]
    fn json_fields_and_flags() {
        let mut e = ev("app: \u{fffd}x");
        e.raw = Bytes::from_static(b"host app[7]: \xffx");
        e.parsed.hostname = Some(Span::new(0, 4));
        e.parsed.app_name = Some(Span::new(5, 8));
        e.parsed.procid = Some(Span::new(9, 10));
        e.parsed.message = Span::new(13, 15);
        e.truncated = true;
        e.parsed.structured_data = StructuredData::from(vec![SdElement {
            id: "a@1".into(),
            params: vec![
                ("x".into(), "1".into()),
                ("y".into(), "\"".into()),
                ("x".into(), "2".into()),
            ],
        }]);
        let v: serde_json::Value = serde_json::from_str(line(Format::Json, &e).trim_end()).unwrap();
        assert_eq!(v["received_at"], "2026-11-22T10:00:00.000123Z");
        assert_eq!(v["source"], "10.0.0.5:51234");
        assert_eq!(v["facility"], "auth");
        assert_eq!(v["severity"], "crit");
        assert_eq!(v["hostname"], "host");
        assert_eq!(v["procid"], "7");
        assert_eq!(v["msgid"], serde_json::Value::Null);
        assert_eq!(v["message"], "\u{fffd}x");
        assert_eq!(v["truncated"], true);
        assert_eq!(
            v["structured_data"]["a@1"]["x"],
            serde_json::json!(["1", "2"])
        );
        assert_eq!(v["structured_data"]["a@1"]["y"], "\"");
        let mut out = Vec::new();
        Format::Traditional.write_line(&e, &mut out);
        assert!(
            out.ends_with(b" host app[7]: \xffx\n"),
            "traditional keeps the bytes: {out:?}"
        );
    }

    #[test]
    fn rfc5424_output_escapes_sd() {
        let mut e = ev("m");
        e.parsed.timestamp = Some("2003-10-11T22:14:15.003Z".parse().unwrap());
        e.parsed.structured_data = StructuredData::from(vec![SdElement {
            id: "a@1".into(),
            params: vec![("x".into(), "q\"]\\".into())],
        }]);
        assert_eq!(
            line(Format::Rfc5424, &e),
            "<34>1 2003-10-11T22:14:15.003Z 10.0.0.5 - - - [a@1 x=\"q\\\"\\]\\\\\"] m\n"
        );
    }

    #[test]
    fn rfc5424_wire_form_keeps_bytes_and_caps_the_fraction() {
        let mut e = ev("line1\nline2\x01");
        e.parsed.timestamp = Some("2003-10-11T22:14:15.123456789+05:30".parse().unwrap());
        e.parsed.structured_data = StructuredData::from(vec![SdElement {
            id: "a@1".into(),
            params: vec![("x".into(), "q\"]\\\n".into())],
        }]);
        let mut out = Vec::new();
        write_rfc5424(&e, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<34>1 2003-10-11T22:14:15.123456+05:30 - - - - [a@1 x=\"q\\\"\\]\\\\\n\"] line1\nline2\x01"
        );
        let stamp = |s: &str| {
            let mut out = Vec::new();
            stamp::write_rfc5424(&mut out, s.parse().unwrap());
            String::from_utf8(out).unwrap()
        };
        assert_eq!(stamp("2003-10-11T22:14:15Z"), "2003-10-11T22:14:15Z");
        assert_eq!(
            stamp("2003-10-11T22:14:15.5-07:00"),
            "2003-10-11T22:14:15.500-07:00"
        );
        assert_eq!(
            stamp("2003-10-11T22:14:15.000001Z"),
            "2003-10-11T22:14:15.000001Z"
        );
        let lmt = chrono::FixedOffset::east_opt(3208).unwrap();
        let t = "1850-01-01T00:53:28Z".parse::<DateTime<Utc>>().unwrap();
        let mut out = Vec::new();
        stamp::write_rfc5424(&mut out, t.with_timezone(&lmt));
        assert_eq!(out, b"1850-01-01T00:53:28Z", "offset with seconds: in UTC");
        let far = chrono::NaiveDate::from_ymd_opt(10_000, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0);
        let mut out = Vec::new();
        stamp::write_rfc5424(&mut out, far.unwrap().and_utc().fixed_offset());
        assert_eq!(out, b"-");
    }

    #[test]
    fn rfc5424_wire_form_writes_nil_for_what_it_cannot_carry() {
        let mut e = ev("m");
        e.raw = Bytes::from_static(b"h\xc3\xb4st -");
        e.parsed.hostname = Some(Span::new(0, 5));
        e.parsed.app_name = Some(Span::new(6, 7));
        e.parsed.message = Span::new(7, 7);
        let mut out = Vec::new();
        write_rfc5424(&e, &mut out);
        assert_eq!(out, b"<34>1 - - - - - -");
        // A MSG that starts with a BOM gets one more, which the receiver strips.
        e.raw = Bytes::from_static(b"\xEF\xBB\xBFx");
        e.parsed.message = Span::new(0, 4);
        let mut out = Vec::new();
        write_rfc5424(&e, &mut out);
        assert!(out.ends_with(b"- \xEF\xBB\xBF\xEF\xBB\xBFx"), "{out:?}");
    }

    /// G05: `#ooo` escaping quadruples a message of control bytes; the output has no fixed
    /// buffer, so the whole of it is written.
    #[test]
    fn hostile_g05_escaping_expansion_at_the_maximum_size() {
        let max = crate::listen::settings::DEFAULT_MAX_MESSAGE_SIZE_BYTES;
        let e = ev(&"\x01".repeat(max));
        let l = line(Format::Traditional, &e);
        assert!(l.ends_with(&format!("{}\n", "#001".repeat(max))));
        let j = line(Format::Json, &e);
        assert!(j.contains(&"\\u0001".repeat(max)));
    }
}
