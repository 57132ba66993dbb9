//! Joining the lines of one multi-line record (a Java stack trace, a Python traceback) into one
//! event: a pure state machine over lines and the clock the caller passes.

use std::time::{Duration, Instant};

use regex::bytes::Regex;

use super::lines::Line;

/// How a line is told to begin a new record or to continue the one before.
#[derive(Debug, Clone)]
pub enum Rule {
    /// A line matching the pattern starts a record; any other line continues the one before.
    Start(Regex),
    /// A line matching the pattern continues the record before; any other line starts one.
    Continue(Regex),
}

/// `multiline = { ... }`.
#[derive(Debug, Clone)]
pub struct MultilineConfig {
    /// Start or continue pattern.
    pub rule: Rule,
    /// Most lines in one event; the next line starts another.
    pub max_lines: usize,
    /// Most bytes in one event (LFs between lines counted); the line that would pass it starts
    /// another.
    pub max_bytes: usize,
    /// An event not continued for this long is handed on.
    pub timeout: Duration,
}

impl PartialEq for MultilineConfig {
    fn eq(&self, other: &Self) -> bool {
        let pattern = |r: &Rule| match r {
            Rule::Start(re) => (true, re.as_str().to_string()),
            Rule::Continue(re) => (false, re.as_str().to_string()),
        };
        pattern(&self.rule) == pattern(&other.rule)
            && self.max_lines == other.max_lines
            && self.max_bytes == other.max_bytes
            && self.timeout == other.timeout
    }
}

/// A line, or several joined with LFs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The lines, joined by LF.
    pub bytes: Vec<u8>,
    /// A line in it was cut to `max_line_bytes`, or the record was cut at `max_lines` or
    /// `max_bytes`.
    pub truncated: bool,
    /// File offset just past its last line.
    pub end: u64,
}

#[derive(Debug)]
struct Pending {
    bytes: Vec<u8>,
    lines: usize,
    truncated: bool,
    start: u64,
    end: u64,
    last_line_at: Instant,
}

/// Joins lines into records by a [`MultilineConfig`].
#[derive(Debug)]
pub struct Joiner {
    config: MultilineConfig,
    pending: Option<Pending>,
}

impl Joiner {
    /// A joiner with nothing held.
    pub fn new(config: MultilineConfig) -> Joiner {
        Joiner {
            config,
            pending: None,
        }
    }

    /// File offset of the first line held (not yet handed on), if any.
    pub fn held_from(&self) -> Option<u64> {
        self.pending.as_ref().map(|p| p.start)
    }

    /// Takes `line` (its `bytes`), read at `now`; pushes the record it ends, if any.
    pub fn push(&mut self, bytes: &[u8], line: &Line, now: Instant, out: &mut Vec<Record>) {
        let continues = match &self.config.rule {
            Rule::Start(re) => !re.is_match(bytes),
            Rule::Continue(re) => re.is_match(bytes),
        };
        if continues && let Some(p) = &mut self.pending {
            let fits = p.lines < self.config.max_lines
                && p.bytes.len() + 1 + bytes.len() <= self.config.max_bytes;
            if fits {
                p.bytes.push(b'\n');
                p.bytes.extend_from_slice(bytes);
                p.lines += 1;
                p.truncated |= line.truncated;
                p.end = line.end;
                p.last_line_at = now;
                return;
            }
            // Cut here: what is held goes as one event, flagged, and this line starts the next.
            p.truncated = true;
        }
        self.flush(out);
        let mut held = Vec::with_capacity(bytes.len().max(256));
        held.extend_from_slice(&bytes[..bytes.len().min(self.config.max_bytes)]);
        self.pending = Some(Pending {
            truncated: line.truncated || bytes.len() > self.config.max_bytes,
            bytes: held,
            lines: 1,
            start: line.start,
            end: line.end,
            last_line_at: now,
        });
    }

    /// Hands on what is held if no line continued it for `timeout` before `now`.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Record>) {
        if let Some(p) = &self.pending
            && now.saturating_duration_since(p.last_line_at) >= self.config.timeout
        {
            self.flush(out);
        }
    }

    /// When what is held would time out, if anything is.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending
            .as_ref()
            .map(|p| p.last_line_at + self.config.timeout)
    }

    /// Hands on what is held now.
    pub fn flush(&mut self, out: &mut Vec<Record>) {
        if let Some(p) = self.pending.take() {
            out.push(Record {
                bytes: p.bytes,
                truncated: p.truncated,
                end: p.end,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rule: Rule) -> MultilineConfig {
        MultilineConfig {
            rule,
            max_lines: 500,
            max_bytes: 1 << 20,
            timeout: Duration::from_secs(2),
        }
    }

    /// Feeds `text` line by line at `now`; returns the records and the joiner.
    fn feed(j: &mut Joiner, text: &str, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        let mut at = 0u64;
        for l in text.split_inclusive('\n') {
            let body = l.trim_end_matches('\n');
            let line = Line {
                range: 0..0,
                truncated: false,
                start: at,
                end: at + l.len() as u64,
            };
            at += l.len() as u64;
            j.push(body.as_bytes(), &line, now, &mut out);
        }
        out.into_iter()
            .map(|r| String::from_utf8(r.bytes.to_vec()).unwrap())
            .collect()
    }

    const JAVA: &str = "2024-05-01 10:00:00 ERROR request failed\n\
java.lang.IllegalStateException: boom\n\
\tat com.example.A.run(A.java:10)\n\
\tat com.example.B.call(B.java:20)\n\
Caused by: java.io.IOException: disk\n\
\t... 2 more\n\
2024-05-01 10:00:01 INFO next\n";

    #[test]
    fn start_pattern_joins_a_stack_trace() {
        let mut j = Joiner::new(config(Rule::Start(Regex::new(r"^\d{4}-").unwrap())));
        let now = Instant::now();
        let got = feed(&mut j, JAVA, now);
        assert_eq!(got.len(), 1);
        assert!(got[0].starts_with("2024-05-01 10:00:00 ERROR"));
        assert!(got[0].ends_with("\t... 2 more"));
        assert_eq!(got[0].lines().count(), 6);
        // The last record is held, from its first line's offset, until the timeout.
        assert_eq!(
            j.held_from(),
            Some(JAVA.find("2024-05-01 10:00:01").unwrap() as u64)
        );
        let mut out = Vec::new();
        j.poll(now + Duration::from_secs(1), &mut out);
        assert!(out.is_empty());
        j.poll(now + Duration::from_secs(2), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0].bytes[..], b"2024-05-01 10:00:01 INFO next");
        assert_eq!(out[0].end, JAVA.len() as u64);
        assert_eq!(j.held_from(), None);
    }

    #[test]
    fn continue_pattern_joins_indented_lines() {
        let mut j = Joiner::new(config(Rule::Continue(
            Regex::new(r"^(\s|Caused by:)").unwrap(),
        )));
        let got = feed(&mut j, JAVA, Instant::now());
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0], "2024-05-01 10:00:00 ERROR request failed");
        assert!(got[1].starts_with("java.lang.IllegalStateException"));
        assert_eq!(got[1].lines().count(), 5);
    }

    #[test]
    fn max_lines_and_max_bytes_cut_and_flag() {
        let mut j = Joiner::new(MultilineConfig {
            max_lines: 3,
            ..config(Rule::Start(Regex::new("^S").unwrap()))
        });
        let mut out = Vec::new();
        let now = Instant::now();
        for (i, l) in ["S1", "c", "c", "c", "c", "S2"].iter().enumerate() {
            let line = Line {
                range: 0..0,
                truncated: false,
                start: i as u64 * 10,
                end: i as u64 * 10 + 10,
            };
            j.push(l.as_bytes(), &line, now, &mut out);
        }
        assert_eq!(out.len(), 2);
        assert_eq!(&out[0].bytes[..], b"S1\nc\nc");
        assert!(out[0].truncated);
        assert_eq!(&out[1].bytes[..], b"c\nc");
        assert!(!out[1].truncated);
        assert_eq!(out[1].end, 50);

        let mut j = Joiner::new(MultilineConfig {
            max_bytes: 5,
            ..config(Rule::Start(Regex::new("^S").unwrap()))
        });
        let got = feed(&mut j, "S1\nabc\nS2345678\n", now);
        assert_eq!(got, vec!["S1", "abc"]);
        let mut out = Vec::new();
        j.flush(&mut out);
        assert_eq!(&out[0].bytes[..], b"S2345");
        assert!(out[0].truncated);
    }
}
