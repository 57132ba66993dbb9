//! Baselines: `sluice --learn-baseline FILE...` reads log files (one message per line, any
//! format sluice parses) and writes what normal looks like: events per minute, the error
//! ratio (severity err and worse), and the frequency of each message template. A
//! `kind = "baseline"` rule compares each window against it with the reference detector's
//! rules: a rate outside 0.5×–2× of the baseline's, or an error ratio above twice its.
//!
//! The rate is measured over the messages' own timestamps (first to last), so a file of last
//! week's logs gives last week's rate, not how fast the file was read. Lines without a
//! timestamp count as events but do not stretch the span.

use std::io::BufRead;
use std::path::Path;

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};

use super::pattern::{PatternTable, mask};
use crate::event::Severity;
use crate::parse::{ParseOptions, Zone, parse};

/// Templates a baseline keeps (the most frequent).
pub const MAX_BASELINE_PATTERNS: usize = 1000;

/// What normal traffic looked like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Messages read.
    pub events: u64,
    /// Of which with severity err or worse.
    pub errors: u64,
    /// Seconds between the first and the last timestamp.
    pub span_seconds: f64,
    /// `events` per minute over `span_seconds`.
    pub events_per_minute: f64,
    /// `errors / events`.
    pub error_ratio: f64,
    /// Templates (see [`super::pattern`]) with how often each was seen, most frequent first.
    pub patterns: Vec<(String, u64)>,
}

impl Baseline {
    /// Learns a baseline from `files`.
    pub fn learn(files: &[impl AsRef<Path>]) -> anyhow::Result<Baseline> {
        let mut events = 0u64;
        let mut errors = 0u64;
        let mut first: Option<DateTime<FixedOffset>> = None;
        let mut last: Option<DateTime<FixedOffset>> = None;
        let mut table = PatternTable::new(MAX_BASELINE_PATTERNS * 10);
        let opts = ParseOptions::new(Utc::now(), Zone::Local);
        for f in files {
            let f = f.as_ref();
            let file = std::fs::File::open(f)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?;
            for line in std::io::BufReader::new(file).split(b'\n') {
                let line = line.map_err(|e| anyhow::anyhow!("reading {}: {e}", f.display()))?;
                let line = line.strip_suffix(b"\r").unwrap_or(&line);
                if line.is_empty() {
                    continue;
                }
                let p = parse(line, &opts);
                events += 1;
                if p.severity <= Severity::Err {
                    errors += 1;
                }
                if let Some(t) = p.timestamp {
                    first = Some(first.map_or(t, |f| f.min(t)));
                    last = Some(last.map_or(t, |l| l.max(t)));
                }
                table.observe(&mask(p.message.slice(line)));
            }
        }
        if events == 0 {
            anyhow::bail!("no messages in the files given");
        }
        let span_seconds = match (first, last) {
            (Some(f), Some(l)) => (l - f).num_milliseconds() as f64 / 1000.0,
            _ => 0.0,
        };
        if span_seconds < 60.0 {
            anyhow::bail!(
                "the messages' timestamps span {span_seconds:.0} s: a baseline needs at least a minute of traffic"
            );
        }
        Ok(Baseline {
            events,
            errors,
            span_seconds,
            events_per_minute: events as f64 * 60.0 / span_seconds,
            error_ratio: errors as f64 / events as f64,
            patterns: table
                .frequencies()
                .into_iter()
                .take(MAX_BASELINE_PATTERNS)
                .map(|(t, n)| (String::from_utf8_lossy(t).into_owned(), n))
                .collect(),
        })
    }

    /// Writes it as JSON.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n")
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
    }

    /// Reads what [`save`](Self::save) wrote.
    pub fn load(path: &Path) -> Result<Baseline, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        let b: Baseline =
            serde_json::from_str(&text).map_err(|e| format!("not a baseline: {e}"))?;
        if !(b.events_per_minute.is_finite() && b.error_ratio.is_finite()) {
            return Err("not a baseline: rates must be numbers".into());
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_rate_error_ratio_and_patterns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut text = String::new();
        // 120 messages over 2 minutes (0..119 s plus the last at 120 s), 1 in 10 an error.
        for i in 0..=120 {
            let pri = if i % 10 == 0 { 11 } else { 14 };
            text.push_str(&format!(
                "<{pri}>1 2026-01-02T03:{:02}:{:02}Z web1 app - - - request {i} from 10.0.0.{} ok\n",
                i / 60,
                i % 60,
                i % 200
            ));
        }
        std::fs::write(&path, text).unwrap();
        let b = Baseline::learn(&[&path]).unwrap();
        assert_eq!(b.events, 121);
        assert_eq!(b.errors, 13);
        assert_eq!(b.span_seconds, 120.0);
        assert!((b.events_per_minute - 60.5).abs() < 1e-9);
        assert_eq!(
            b.patterns,
            vec![("request <N> from <IP> ok".to_string(), 121)]
        );
        let out = dir.path().join("baseline.json");
        b.save(&out).unwrap();
        assert_eq!(Baseline::load(&out).unwrap(), b);
    }

    #[test]
    fn refuses_too_short_or_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "<14>1 2026-01-02T03:00:00Z h a - - - x\n").unwrap();
        assert!(
            Baseline::learn(&[&path])
                .unwrap_err()
                .to_string()
                .contains("at least a minute")
        );
        std::fs::write(&path, "").unwrap();
        assert!(Baseline::learn(&[&path]).is_err());
    }
}
