//! Path templates: `/var/log/remote/{hostname}/{app_name}.log`, expanded per event.
//!
//! Template values are sanitised before they touch the path: `/`, NUL and control characters
//! become `_`, and `.`/`..` become `_`, so a hostile HOSTNAME cannot leave the directory
//! (hostile-inputs F03).

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use chrono::{Datelike, Local};

use crate::event::Event;
use crate::output::format::local_hostname;

/// A per-event field usable in a path template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Hostname,
    AppName,
    Facility,
    Severity,
    Year,
    Month,
    Day,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field(Field),
}

/// A file path with `{field}` placeholders, parsed once at config time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    parts: Vec<Part>,
}

impl PathTemplate {
    /// Parses a path; the error names an unknown or unclosed placeholder.
    pub fn parse(text: &str) -> Result<PathTemplate, String> {
        if text.is_empty() {
            return Err("empty path".into());
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in path {text:?}"))?;
            let field = match &after[..close] {
                "hostname" => Field::Hostname,
                "app_name" => Field::AppName,
                "facility" => Field::Facility,
                "severity" => Field::Severity,
                "year" => Field::Year,
                "month" => Field::Month,
                "day" => Field::Day,
                other => {
                    return Err(format!(
                        "unknown placeholder {{{other}}}: expected {{hostname}}, {{app_name}}, {{facility}}, {{severity}}, {{year}}, {{month}} or {{day}}"
                    ));
                }
            };
            parts.push(Part::Field(field));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        if text.ends_with('/') {
            return Err(format!("path {text:?} names a directory, not a file"));
        }
        Ok(PathTemplate { parts })
    }

    /// True when the path is the same for every event.
    pub fn is_static(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// A regular expression (unanchored) matching every path the template can expand to.
    pub fn regex_source(&self) -> String {
        let mut re = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(s) => re.push_str(&regex::escape(s)),
                Part::Field(Field::Year) => re.push_str("[0-9]{4}"),
                Part::Field(Field::Month | Field::Day) => re.push_str("[0-9]{2}"),
                // Sanitised values never hold '/'.
                Part::Field(_) => re.push_str("[^/]+"),
            }
        }
        re
    }

    /// How many path components an expansion has below [`static_dir`](Self::static_dir).
    pub fn depth_below_static_dir(&self) -> usize {
        let mut sample = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(s) => sample.push_str(s),
                Part::Field(_) => sample.push('x'),
            }
        }
        let path = Path::new(&sample);
        path.strip_prefix(self.static_dir())
            .map_or(1, |rest| rest.components().count())
    }

    /// The deepest directory that does not depend on any event (for `--check-config`).
    pub fn static_dir(&self) -> PathBuf {
        let mut prefix = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(s) => prefix.push_str(s),
                Part::Field(_) => {
                    // Everything after the last '/' of the prefix depends on the event.
                    let cut = prefix.rfind('/').map_or(0, |i| i + 1);
                    prefix.truncate(cut);
                    return PathBuf::from(if prefix.is_empty() { "." } else { &prefix });
                }
            }
        }
        Path::new(&prefix)
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p.to_path_buf()
                }
            })
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// Expands the template for `ev` into `out` (cleared first), as a path's bytes (see
    /// [`as_path`]): a `String` took a UTF-8 check per field, a tenth of the work of a
    /// templated file's line on a mixed stream. Returns true when some value had to be
    /// sanitised.
    pub fn expand(&self, ev: &Event, out: &mut Vec<u8>) -> bool {
        use std::io::Write as _;
        out.clear();
        let mut sanitized = false;
        let date = || ev.received_at.with_timezone(&Local);
        for p in &self.parts {
            match p {
                Part::Literal(s) => out.extend_from_slice(s.as_bytes()),
                Part::Field(f) => match f {
                    Field::Hostname => {
                        // The usual case in one pass over the bytes, without a UTF-8 check.
                        if let Some(h) = ev.span_bytes(ev.parsed.hostname)
                            && push_plain(h, out)
                        {
                            continue;
                        }
                        let fallback;
                        let host = match (ev.hostname(), ev.source) {
                            (Some(h), _) => h,
                            (None, Some(a)) => {
                                fallback = a.ip().to_string();
                                &fallback
                            }
                            (None, None) => local_hostname(),
                        };
                        sanitized |= push_sanitized(host, out);
                    }
                    Field::AppName => {
                        if let Some(a) = ev.span_bytes(ev.parsed.app_name)
                            && push_plain(a, out)
                        {
                            continue;
                        }
                        sanitized |= push_sanitized(ev.app_name().unwrap_or("-"), out);
                    }
                    Field::Facility => out.extend_from_slice(ev.facility().name().as_bytes()),
                    Field::Severity => out.extend_from_slice(ev.severity().name().as_bytes()),
                    Field::Year => {
                        let _ = write!(out, "{:04}", date().year());
                    }
                    Field::Month => {
                        let _ = write!(out, "{:02}", date().month());
                    }
                    Field::Day => {
                        let _ = write!(out, "{:02}", date().day());
                    }
                },
            }
        }
        sanitized
    }
}

/// An expanded path's bytes as a path (Unix paths are bytes; an expansion is UTF-8 anyway).
pub fn as_path(bytes: &[u8]) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(bytes))
}

/// Bytes a path component keeps as they are: printable ASCII and space, but `/` and `\\`.
static PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        table[b] = b != b'/' as usize && b != b'\\' as usize;
        b += 1;
    }
    table
};

/// Appends `value` when it is a component with nothing to replace, as host and program names
/// almost always are; returns false (and appends nothing) otherwise.
fn push_plain(value: &[u8], out: &mut Vec<u8>) -> bool {
    if value.is_empty()
        || value == b"."
        || value == b".."
        || !value.iter().all(|&b| PLAIN[usize::from(b)])
    {
        return false;
    }
    out.extend_from_slice(value);
    true
}

/// Appends `value` as one safe path component; returns true if anything was changed.
fn push_sanitized(value: &str, out: &mut Vec<u8>) -> bool {
    if push_plain(value.as_bytes(), out) {
        return false;
    }
    if value.is_empty() || value == "." || value == ".." {
        out.push(b'_');
        return true;
    }
    let mut changed = false;
    for c in value.chars() {
        if c == '/' || c == '\\' || c.is_control() {
            out.push(b'_');
            changed = true;
        } else {
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Parsed, Span};
    use bytes::Bytes;

    fn ev_with_host(host: &str) -> Event {
        let raw = format!("{host} app: m");
        let mut parsed = Parsed::unparsed(raw.as_bytes());
        parsed.hostname = Some(Span::new(0, host.len()));
        parsed.app_name = Some(Span::new(host.len() + 1, host.len() + 4));
        Event {
            raw: Bytes::from(raw),
            received_at: "2026-11-22T10:00:00Z".parse().unwrap(),
            source: None,
            listener: "t".into(),
            tls_peer: None,
            truncated: false,
            parsed,
        }
    }

    #[test]
    fn hostile_f03_path_traversal_is_neutralised() {
        let t = PathTemplate::parse("/var/log/remote/{hostname}/{app_name}.log").unwrap();
        let mut out = Vec::new();
        for (host, want) in [
            (
                "../../etc/cron.d/x",
                "/var/log/remote/.._.._etc_cron.d_x/app.log",
            ),
            ("..", "/var/log/remote/_/app.log"),
            (".", "/var/log/remote/_/app.log"),
            ("a/b", "/var/log/remote/a_b/app.log"),
            ("/abs", "/var/log/remote/_abs/app.log"),
            ("h\u{1b}st", "/var/log/remote/h_st/app.log"),
        ] {
            assert!(t.expand(&ev_with_host(host), &mut out), "{host}");
            assert_eq!(out, want.as_bytes());
            assert!(
                !as_path(&out)
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
            );
        }
        assert!(!t.expand(&ev_with_host("web1"), &mut out));
        assert_eq!(out, b"/var/log/remote/web1/app.log");
    }

    #[test]
    fn template_parsing() {
        assert!(
            PathTemplate::parse("/x/{nope}.log")
                .unwrap_err()
                .contains("unknown placeholder {nope}")
        );
        assert!(PathTemplate::parse("/x/{hostname").is_err());
        let t =
            PathTemplate::parse("/var/log/{year}/{month}/{day}/{facility}.{severity}.log").unwrap();
        assert_eq!(t.static_dir(), PathBuf::from("/var/log/"));
        let mut out = Vec::new();
        t.expand(&ev_with_host("h"), &mut out);
        assert_eq!(out, b"/var/log/2026/11/22/user.notice.log");
        assert_eq!(
            PathTemplate::parse("/var/log/syslog").unwrap().static_dir(),
            PathBuf::from("/var/log")
        );
        assert!(PathTemplate::parse("/var/log/syslog").unwrap().is_static());
        let t = PathTemplate::parse("/var/log/r/{hostname}/{year}-{month}.log").unwrap();
        assert_eq!(t.depth_below_static_dir(), 2);
        assert_eq!(
            t.regex_source(),
            r"/var/log/r/[^/]+/[0-9]{4}\-[0-9]{2}\.log"
        );
    }
}
