//! Invariants of sluice's parsers, framer and config loader, on arbitrary input. Each function
//! panics when one does not hold. The fuzz targets call them; so do the stable test suite's
//! replay of fuzz/corpus (tests/fuzz_corpus.rs) and its property tests (tests/properties.rs),
//! which include this file by path.

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, FixedOffset, Utc};
use sluice::config::Config;
use sluice::event::{Event, Facility, Parsed, Protocol, SdElement, Severity, Span, StructuredData};
use sluice::framing::{Frame, FrameError, Framer, FramerOptions, FramerStats};
use sluice::output::format::{Format, write_rfc5424};
use sluice::parse::kmsg::{self, BootClock};
use sluice::parse::{ParseOptions, Zone, parse, trim_end};

/// Parsing: the first byte picks the receive time and the listener zone, the rest is a frame.
/// Never a panic; fields within the frame and printable; MSG runs to the end of the frame; `raw`
/// writes it back exactly; every line format writes one line; and the event survives being
/// written as RFC 5424 and parsed again.
pub fn parse_frame(data: &[u8]) {
    let Some((&pick, frame)) = data.split_first() else {
        return;
    };
    let opts = options(pick);
    let ev = event(frame, parse(frame, &opts));
    check_fields(frame, &ev.parsed);
    let mut out = Vec::new();
    Format::Raw.write_line(&ev, &mut out);
    assert_eq!(out.strip_suffix(b"\n"), Some(frame), "raw");
    for format in [
        Format::Traditional,
        Format::Precise,
        Format::Rfc3164,
        Format::Rfc5424,
        Format::Json,
    ] {
        out.clear();
        format.write_line(&ev, &mut out);
        let lf = out.iter().filter(|&&b| b == b'\n').count();
        assert!(lf == 1 && out.ends_with(b"\n"), "{format:?}: {out:?}");
    }
    if representable(&ev) {
        out.clear();
        write_rfc5424(&ev, &mut out);
        let back = event(&out, parse(&out, &opts));
        let shown = String::from_utf8_lossy(&out);
        assert_eq!(back.parsed.parse_error, None, "{shown}");
        assert_eq!(Fields::of(&back), Fields::of(&ev).written(), "{shown}");
    }
}

/// A kernel log record: the first byte picks the boot time and the frame limit, the rest is
/// what /dev/kmsg (or a FIFO) gave. A record becomes an RFC 5424 frame that parses cleanly (but
/// for a MSG that is not UTF-8 after a BOM) and then passes every check [`parse_frame`] makes;
/// anything else is kept as it came, flagged; nothing exceeds the limit.
pub fn kmsg_record(data: &[u8]) {
    let Some((&pick, record)) = data.split_first() else {
        return;
    };
    let boot = match pick % 3 {
        0 => "2026-12-02T08:00:00Z",
        1 => "1970-01-01T00:00:00Z",
        _ => "9999-12-31T23:59:59Z",
    };
    let clock = BootClock::booted_at(boot.parse().unwrap_or_default());
    let max = if pick & 0x80 == 0 { 64 * 1024 } else { 480 };
    let opts = options(pick / 3);
    let c = kmsg::convert(record, &clock, "host", &opts, max, &mut Vec::new());
    assert!(c.frame.len() <= max);
    if c.truncated {
        assert_eq!(c.frame.len(), max);
    }
    check_fields(&c.frame, &c.parsed);
    match c.seq {
        Some(_) if !c.truncated => {
            let clean = c.parsed.parse_error.is_none()
                || (!c.parsed.msg_utf8
                    && c.parsed
                        .parse_error
                        .is_some_and(|e| e.kind == sluice::event::ParseErrorKind::InvalidUtf8));
            assert!(
                clean,
                "{:?}: {}",
                c.parsed.parse_error,
                String::from_utf8_lossy(&c.frame)
            );
            assert_eq!(c.parsed.protocol, Protocol::Rfc5424);
        }
        Some(_) => {}
        None => {
            assert!(c.parsed.parse_error.is_some());
            assert!(trim_end(record).starts_with(&c.frame));
        }
    }
    parse_frame(&[&[pick][..], &c.frame].concat());
}

/// Receive times that stress year inference (leap day, new year, chrono's limits) and zones
/// with and without DST.
fn options(pick: u8) -> ParseOptions {
    let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap_or_default();
    let received_at = match pick % 5 {
        0 => at("2026-11-22T10:00:00Z"),
        1 => at("2024-02-29T12:00:00Z"),
        2 => at("2027-01-01T00:00:05Z"),
        3 => DateTime::<Utc>::MIN_UTC,
        _ => DateTime::<Utc>::MAX_UTC,
    };
    let zone = match (pick / 5) % 3 {
        0 => Zone::Named(chrono_tz::UTC),
        1 => Zone::Named(chrono_tz::Europe::Berlin),
        _ => Zone::Local,
    };
    ParseOptions::new(received_at, zone)
}

/// Every span lies in the frame, header fields are PRINTUSASCII (they become `&str`), MSG ends
/// where the frame does (less its trailing LF/NUL), and offsets and `msg_utf8` are right.
pub fn check_fields(frame: &[u8], p: &Parsed) {
    let end = trim_end(frame).len();
    for span in [p.hostname, p.app_name, p.procid, p.msgid]
        .into_iter()
        .flatten()
    {
        assert!(
            span.start < span.end && span.end as usize <= end,
            "{span:?}"
        );
        assert!(
            span.slice(frame).iter().all(|b| (33..=126).contains(b)),
            "{span:?}"
        );
    }
    assert!(
        p.message.start as usize <= end && p.message.end as usize == end,
        "{p:?}"
    );
    if let Some(e) = p.parse_error {
        assert!(e.at <= frame.len(), "{e}");
    }
    let utf8 = std::str::from_utf8(p.message.slice(frame)).is_ok();
    assert_eq!(p.msg_utf8, utf8);
}

/// An event around a parsed frame, as a listener makes it.
pub fn event(frame: &[u8], parsed: Parsed) -> Event {
    Event {
        raw: Bytes::copy_from_slice(frame),
        received_at: DateTime::<Utc>::UNIX_EPOCH,
        source: None,
        listener: "fuzz".into(),
        truncated: false,
        tls_peer: None,
        parsed,
    }
}

/// An event as RFC 5424's fields see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Fields {
    pub facility: Facility,
    pub severity: Severity,
    pub version: u16,
    /// The stamp and its offset (`DateTime` equality ignores the offset).
    pub timestamp: Option<(DateTime<FixedOffset>, i32)>,
    /// HOSTNAME, APP-NAME, PROCID, MSGID.
    pub header: [Option<String>; 4],
    pub sd: Vec<SdElement>,
    pub message: Vec<u8>,
}

impl Fields {
    pub fn of(ev: &Event) -> Fields {
        let own = |s: Option<&str>| s.map(str::to_string);
        Fields {
            facility: ev.facility(),
            severity: ev.severity(),
            version: ev.parsed.version,
            timestamp: ev
                .parsed
                .timestamp
                .map(|t| (t, t.offset().local_minus_utc())),
            header: [ev.hostname(), ev.app_name(), ev.procid(), ev.msgid()].map(own),
            sd: ev.parsed.structured_data.to_elements(),
            message: ev.message().to_vec(),
        }
    }

    /// What RFC 5424 keeps of these fields: version 1 for RFC 3164 events.
    fn written(mut self) -> Fields {
        if self.version == 0 {
            self.version = 1;
        }
        self
    }

    /// An RFC 5424 event with these fields: `raw` holds the header values and MSG.
    pub fn to_event(&self) -> Event {
        let mut raw = Vec::new();
        let mut span = |v: &[u8]| {
            let start = raw.len();
            raw.extend_from_slice(v);
            Span::new(start, raw.len())
        };
        let [h, a, p, m] = self.header.clone().map(|v| v.map(|v| span(v.as_bytes())));
        let message = span(&self.message);
        let parsed = Parsed {
            version: self.version,
            timestamp: self.timestamp.map(|(t, _)| t),
            hostname: h,
            app_name: a,
            procid: p,
            msgid: m,
            structured_data: StructuredData::from(self.sd.clone()),
            message,
            msg_utf8: std::str::from_utf8(&self.message).is_ok(),
            ..Parsed::new(Protocol::Rfc5424, self.facility, self.severity, 0)
        };
        event(&raw, parsed)
    }
}

/// Whether RFC 5424 can carry the event unchanged. It cannot carry a value `-` (that is
/// NILVALUE), a MSG that starts with a BOM but is not UTF-8 (MSG-UTF8), a fraction beyond
/// microseconds, an offset with seconds (local mean time), or a year beyond 0..=9999.
pub fn representable(ev: &Event) -> bool {
    let nil = [ev.hostname(), ev.app_name(), ev.procid(), ev.msgid()].contains(&Some("-"));
    let msg = ev.message();
    let bom = msg.starts_with(b"\xEF\xBB\xBF") && std::str::from_utf8(msg).is_err();
    let stamp = ev.parsed.timestamp.is_none_or(|t| {
        use chrono::Datelike;
        t.timestamp_subsec_nanos() % 1000 == 0
            && t.offset().local_minus_utc() % 60 == 0
            && (0..=9999).contains(&t.year())
    });
    !nil && !bom && stamp
}

/// Framing: the first two bytes pick `max_message_size` (small, to truncate often), the NUL
/// trailer and a chunk size; the rest is a TCP stream. Every call makes progress or asks for
/// more with a bounded buffer, frames are 1..=max bytes, errors are sticky, and any chunking
/// (the picked size, one byte at a time) gives what one-shot decoding gives.
pub fn framing(data: &[u8]) {
    let [a, b, stream @ ..] = data else {
        return;
    };
    let opts = FramerOptions {
        max_message_size: 1 + usize::from(a % 64),
        nul_trailer: b & 1 == 1,
    };
    let chunk = 1 + usize::from(b >> 1);
    let whole = decode_in_chunks(opts, stream, stream.len().max(1));
    assert_eq!(
        whole,
        decode_in_chunks(opts, stream, chunk),
        "chunks of {chunk}"
    );
    assert_eq!(whole, decode_in_chunks(opts, stream, 1), "byte by byte");
}

/// What a framer makes of a stream fed in chunks: frames, the error, counters.
type Decoded = (Vec<Frame>, Option<FrameError>, FramerStats);

fn decode_in_chunks(opts: FramerOptions, stream: &[u8], chunk: usize) -> Decoded {
    let mut framer = Framer::new(opts);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        if let Err(e) = drain(&mut framer, &mut buf, &mut frames, opts, false) {
            return (frames, Some(e), framer.stats().clone());
        }
    }
    let err = drain(&mut framer, &mut buf, &mut frames, opts, true).err();
    if err.is_none() {
        assert!(buf.is_empty(), "bytes left after EOF: {buf:?}");
    }
    (frames, err, framer.stats().clone())
}

/// Decodes until the framer asks for more bytes, checking each step.
fn drain(
    framer: &mut Framer,
    buf: &mut BytesMut,
    frames: &mut Vec<Frame>,
    opts: FramerOptions,
    eof: bool,
) -> Result<(), FrameError> {
    loop {
        let before = buf.len();
        let step = if eof {
            framer.decode_eof(buf)
        } else {
            framer.decode(buf)
        };
        match step {
            Ok(Some(frame)) => {
                assert!(buf.len() < before, "a frame without progress");
                assert!((1..=opts.max_message_size).contains(&frame.data.len()));
                frames.push(frame);
            }
            Ok(None) => {
                // The framer keeps at most a frame's start: max + 16 bytes (framing/mod.rs).
                assert!(
                    buf.len() <= opts.max_message_size + 16,
                    "buffer {}",
                    buf.len()
                );
                return Ok(());
            }
            Err(e) => {
                assert_eq!(framer.decode(buf), Err(e), "errors are sticky");
                return Err(e);
            }
        }
    }
}

/// Config: any text loads or gives errors, never a panic; every error points into the text and
/// they come sorted by position.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Err(errors) = Config::from_toml_str(text, "fuzz.toml") else {
        return;
    };
    assert!(!errors.0.is_empty());
    let lines = text.lines().count() + 1;
    for e in &errors.0 {
        assert!(e.line <= lines, "{e}");
        assert!(!e.to_string().is_empty());
    }
    let positions: Vec<_> = errors.0.iter().map(|e| (e.line, e.col)).collect();
    let mut sorted = positions.clone();
    sorted.sort();
    assert_eq!(positions, sorted);
}
