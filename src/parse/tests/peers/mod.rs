//! sluice against the test suites of rsyslog and syslog-ng (tests/data/rsyslog_vectors.txt,
//! tests/data/syslogng_vectors_all.txt). Every case is parsed and compared field by field with
//! what the peer expects. Where they differ, the case is pinned with its reason: an option
//! sluice does not have, or a deliberate difference, which then has a test named after the case
//! saying why (in `differences`).

mod by_hand;
mod differences;
mod rsyslog;
mod syslogng;

use chrono::{DateTime, FixedOffset};

use crate::event::{Parsed, SdElement};
use crate::output::format::escape_line;
pub(super) use crate::parse::tests::shown;

/// What a peer says a frame parses to. `None`: the peer's test does not check it.
#[derive(Debug, Default)]
struct Expect {
    /// The peer rejected the frame (syslog-ng's piggybacked error, rsyslog's `invld` PRI).
    error: bool,
    /// PRIVAL.
    pri: Option<u8>,
    /// `Some(None)`: the peer uses the receive time, so sluice must have no stamp.
    stamp: Option<Option<DateTime<FixedOffset>>>,
    /// `(microseconds, offset)` where only those are checked.
    stamp_parts: Option<(u32, i32)>,
    /// The stamp as `Mmm dd hh:mm:ss` in its own offset (rsyslog's default rendering).
    stamp_bsd: Option<String>,
    host: Option<Option<String>>,
    app: Option<Option<String>>,
    pid: Option<Option<String>>,
    msgid: Option<Option<String>>,
    /// Structured data as RFC 5424 text, `""` for none.
    sd: Option<String>,
    msg: Option<String>,
}

/// How sluice shows a frame, in the peers' terms.
struct Got<'a> {
    frame: &'a [u8],
    p: &'a Parsed,
}

impl Got<'_> {
    fn field(&self, span: Option<crate::event::Span>) -> Option<String> {
        span.map(|s| String::from_utf8_lossy(s.slice(self.frame)).into_owned())
    }

    /// Every way sluice's reading differs from `want`; empty when it agrees.
    fn diff(&self, want: &Expect, msg: impl Fn(&[u8]) -> String) -> Vec<String> {
        let p = self.p;
        let mut out = Vec::new();
        let mut check = |what: &str, same: bool, got: String| {
            if !same {
                out.push(format!("{what}: {got}"));
            }
        };
        if want.error || p.parse_error.is_some() {
            check(
                "error",
                want.error == p.parse_error.is_some(),
                format!("{:?}", p.parse_error),
            );
            if want.error {
                return out;
            }
        }
        let pri = p.facility.code() * 8 + p.severity.code();
        check("pri", want.pri.is_none_or(|w| w == pri), pri.to_string());
        let stamp = p.timestamp.map(|t| (t, t.offset().local_minus_utc()));
        if let Some(w) = want.stamp {
            let w = w.map(|t| (t, t.offset().local_minus_utc()));
            check("stamp", w == stamp, format!("{stamp:?}"));
        }
        if let Some((micros, offset)) = want.stamp_parts {
            let parts = p
                .timestamp
                .map(|t| (t.timestamp_subsec_micros(), t.offset().local_minus_utc()));
            check(
                "stamp",
                parts == Some((micros, offset)),
                format!("{parts:?}"),
            );
        }
        if let Some(w) = &want.stamp_bsd {
            let bsd = p.timestamp.map(|t| t.format("%b %e %H:%M:%S").to_string());
            check("stamp", bsd.as_ref() == Some(w), format!("{bsd:?}"));
        }
        for (what, want, got) in [
            ("host", &want.host, p.hostname),
            ("app", &want.app, p.app_name),
            ("pid", &want.pid, p.procid),
            ("msgid", &want.msgid, p.msgid),
        ] {
            if let Some(w) = want {
                check(
                    what,
                    *w == self.field(got),
                    format!("{:?}", self.field(got)),
                );
            }
        }
        if let Some(w) = &want.sd {
            let sd = sd_text(&p.structured_data.to_elements());
            check("sd", *w == sd, sd);
        }
        if let Some(w) = &want.msg {
            let m = msg(p.message.slice(self.frame));
            check("msg", *w == m, format!("{m:?}"));
        }
        out
    }
}

/// Structured data as RFC 5424 text (§6.3.3 escapes), `""` for none.
fn sd_text(sd: &[SdElement]) -> String {
    let mut out = String::new();
    for e in sd {
        out.push('[');
        out.push_str(&e.id);
        for (k, v) in &e.params {
            let v = v
                .replace('\\', r"\\")
                .replace('"', "\\\"")
                .replace(']', r"\]");
            out.push_str(&format!(" {k}=\"{v}\""));
        }
        out.push(']');
    }
    out
}

/// MSG with control characters as `#ooo`, as rsyslog escapes them on receipt.
fn rsyslog_escaped(bytes: &[u8]) -> String {
    let mut out = Vec::new();
    escape_line(bytes, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A quoted literal as the corpus files write them: Rust (`"…"`, `b"…"`, `r#"…"#`), JSON or C
/// escapes. Returns the bytes and the text after the closing quote.
fn literal(s: &str) -> Option<(Vec<u8>, &str)> {
    if let Some(raw) = s.strip_prefix("r#\"") {
        let end = raw.find("\"#")?;
        return Some((raw.get(..end)?.as_bytes().to_vec(), raw.get(end + 2..)?));
    }
    let body = s.strip_prefix("b\"").or_else(|| s.strip_prefix('"'))?;
    let mut out = Vec::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, body.get(i + 1..)?)),
            '\\' => {
                let (_, e) = chars.next()?;
                match e {
                    'n' => out.push(b'\n'),
                    'r' => out.push(b'\r'),
                    't' => out.push(b'\t'),
                    'b' => out.push(8),
                    '0' => out.push(0),
                    'x' => {
                        let hex: String =
                            (0..2).filter_map(|_| chars.next().map(|c| c.1)).collect();
                        out.push(u8::from_str_radix(&hex, 16).ok()?);
                    }
                    'u' => {
                        let rest = body.get(i + 2..)?;
                        let (hex, skip) = match rest.strip_prefix('{') {
                            Some(r) => (r.get(..r.find('}')?)?, r.find('}')? + 2),
                            None => (rest.get(..4)?, 4),
                        };
                        let ch = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
                        out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                        for _ in 0..skip {
                            chars.next();
                        }
                    }
                    other => out.extend_from_slice(other.encode_utf8(&mut [0; 4]).as_bytes()),
                }
            }
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    None
}

/// How a case compared: agreed, or pinned with a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pinned {
    /// The peer's test sets an option sluice does not have; the reading differs with it.
    Option(&'static str),
    /// sluice differs on purpose; `differences::<test>` says why.
    Differs(&'static str),
}

/// Runs `cases` (id, frame, expectation), prints and checks every disagreement against `pinned`.
fn compare(
    cases: &[(String, Vec<u8>, Expect)],
    pinned: &[(&str, Pinned)],
    parse: impl Fn(&[u8]) -> Parsed,
    msg: impl Fn(&[u8]) -> String,
) -> usize {
    let mut unexpected = Vec::new();
    let mut differing = Vec::new();
    for (id, frame, want) in cases {
        let p = parse(frame);
        let got = Got { frame, p: &p };
        let diff = got.diff(want, &msg);
        let pin = pinned.iter().find(|(c, _)| c == id).map(|(_, r)| *r);
        match (diff.is_empty(), pin) {
            (true, None) => {}
            (false, Some(reason)) => differing.push(format!("{id} {reason:?}: {diff:?}")),
            (false, None) => unexpected.push(format!("{id}: {diff:?}")),
            (true, Some(reason)) => unexpected.push(format!("{id} agrees now, pinned {reason:?}")),
        }
    }
    for d in &differing {
        eprintln!("{d}");
    }
    assert!(unexpected.is_empty(), "{unexpected:#?}");
    assert_eq!(differing.len(), pinned.len());
    cases.len()
}
