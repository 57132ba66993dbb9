//! Retention for templated paths. A host that goes quiet is never rotated again, so the
//! per-rotation retention never looks at its segments; an hourly walk of the template's fixed
//! directory removes the segments (`NAME.N[.gz|.zst]`, `NAME-DATE[.N][.gz|.zst]`) of any
//! expansion of the template whose last line is older than `max_age`. Active files are left
//! alone, and so is everything that does not match the template and a segment suffix.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use regex::Regex;

use super::template::PathTemplate;
use crate::metrics::{self, OutputMetrics};

/// How often the walk runs (the first one at the output's first tick).
const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);
/// Bound on the entries one walk visits, so a huge tree cannot stall the output for long.
const MAX_ENTRIES_PER_SWEEP: usize = 1_000_000;

/// The periodic walk of one templated output.
pub struct Sweeper {
    root: PathBuf,
    depth: usize,
    pattern: Regex,
    max_age: Duration,
    next_at: Instant,
}

impl Sweeper {
    /// A sweeper for a templated path with `max_age`; `None` for a fixed path.
    pub fn new(template: &PathTemplate, max_age: Duration) -> Option<Sweeper> {
        if template.is_static() {
            return None;
        }
        let source = format!(
            r"^(?:{})(?:\.[0-9]+|-[0-9]{{8}}(?:[0-9]{{2}})?(?:\.[0-9]+)?)(?:\.gz|\.zst)?$",
            template.regex_source()
        );
        Some(Sweeper {
            root: template.static_dir(),
            depth: template.depth_below_static_dir(),
            pattern: Regex::new(&source).ok()?,
            max_age,
            next_at: Instant::now(),
        })
    }

    /// Runs the walk if it is due; returns how many segments it removed.
    pub fn run_if_due(&mut self, metrics: &Arc<OutputMetrics>) -> usize {
        if Instant::now() < self.next_at {
            return 0;
        }
        self.next_at = Instant::now() + SWEEP_INTERVAL;
        let mut budget = MAX_ENTRIES_PER_SWEEP;
        let removed = self.visit(&self.root.clone(), self.depth, &mut budget);
        metrics::add(&metrics.segments_removed, removed as u64);
        removed
    }

    fn visit(&self, dir: &Path, depth: usize, budget: &mut usize) -> usize {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            if *budget == 0 {
                break;
            }
            *budget -= 1;
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() && depth > 1 {
                removed += self.visit(&path, depth - 1, budget);
            } else if kind.is_file()
                && path.to_str().is_some_and(|p| self.pattern.is_match(p))
                && entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > self.max_age)
                && std::fs::remove_file(&path).is_ok()
            {
                removed += 1;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_segments_of_the_template_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let t =
            PathTemplate::parse(&format!("{}/{{hostname}}/app.log", dir.path().display())).unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(10 * 86_400);
        let files = [
            ("h1/app.log", true, false),
            ("h1/app.log.1.gz", true, true),
            ("h1/app.log.2", true, true),
            ("h1/app.log-20261101.zst", true, true),
            ("h1/app.log-2026110113.3.gz", true, true),
            ("h1/app.log.1.gz.tmp", true, false),
            ("h1/other.log.1.gz", true, false),
            ("h2/app.log.1.gz", false, false),
            ("app.log.1.gz", true, false),
        ];
        for (name, is_old, _) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let f = std::fs::File::create(&p).unwrap();
            if is_old {
                f.set_modified(old).unwrap();
            }
        }
        let mut s = Sweeper::new(&t, Duration::from_secs(86_400)).unwrap();
        let m = Arc::new(OutputMetrics::default());
        assert_eq!(s.run_if_due(&m), 4);
        for (name, _, gone) in files {
            assert_eq!(!dir.path().join(name).exists(), gone, "{name}");
        }
        assert_eq!(s.run_if_due(&m), 0, "not due again for an hour");
        assert!(Sweeper::new(&PathTemplate::parse("/x/a.log").unwrap(), s.max_age).is_none());
    }
}
