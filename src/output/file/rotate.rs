//! Rotation and retention of one output's files.
//!
//! The output thread decides when a file is rotated (size or interval, whichever comes first)
//! and does the renames itself: they are cheap, and doing them on one thread keeps segment
//! numbers consistent. Compression happens on the [`Compressor`] thread. The active file is
//! always plain, so `tail -f` and fail2ban keep working.
//!
//! Naming: `number` shifts `auth.log.1.gz` to `auth.log.2.gz` and so on (logrotate's default);
//! `date` names a segment after the local date it was started (`auth.log-20261122.gz`, with the
//! hour when the interval is shorter than a day, and `.1`, `.2` when a name is taken). A segment
//! being compressed keeps its plain name until its `.gz` is complete and synced, so a crash never
//! leaves a half-written archive under a final name; a plain segment left by a crash is
//! compressed at the next rotation of that file.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Local, Offset, TimeZone};

use super::compress::{Compression, Compressor, TEMP_SUFFIX};
use super::fs::{file_name_bytes, with_suffix};
use crate::metrics::{self, OutputMetrics};

/// Every form a segment may take on disk, plain first.
const SEGMENT_EXTENSIONS: [&str; 3] = ["", ".gz", ".zst"];

/// How rotated segments are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentNaming {
    /// `auth.log.1`, `auth.log.2`, ... newest first (logrotate's default).
    Number,
    /// `auth.log-20261122` (`-2026112213` for intervals under a day).
    Date,
}

/// `rotate = { size, interval, keep, max_age, compress, naming }` of a file output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotateConfig {
    /// Rotate before a line would take the active file past this size.
    pub size_bytes: Option<u64>,
    /// Rotate at every multiple of this interval of local time (`1d` at midnight, `1h` on the hour).
    pub interval: Option<Duration>,
    /// Keep at most this many segments per file.
    pub keep: Option<usize>,
    /// Remove segments whose last line is older than this.
    pub max_age: Option<Duration>,
    /// Compression of segments.
    pub compress: Compression,
    /// Naming of segments.
    pub naming: SegmentNaming,
}

impl RotateConfig {
    /// When a segment started at `started` is due for rotation by time: the first interval
    /// boundary (counted in local time from 1970-01-01 00:00) after it.
    pub fn deadline(&self, started: SystemTime) -> Option<SystemTime> {
        let interval_s = self.interval?.as_secs().max(1) as i64;
        let utc_s = started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let offset_s = local_offset_s(utc_s);
        let local_s = utc_s + offset_s;
        let boundary_local = (local_s.div_euclid(interval_s) + 1) * interval_s;
        let boundary_utc = boundary_local - offset_s;
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(boundary_utc.max(0) as u64))
    }
}

/// Seconds east of UTC of local time at `utc_s`.
fn local_offset_s(utc_s: i64) -> i64 {
    match Local.timestamp_opt(utc_s, 0) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
            i64::from(t.offset().fix().local_minus_utc())
        }
        chrono::LocalResult::None => 0,
    }
}

/// Rotates the files of one output and applies retention to their segments.
pub struct Rotator {
    cfg: RotateConfig,
    compressor: Option<Compressor>,
    metrics: Arc<OutputMetrics>,
    name: Arc<str>,
}

impl Rotator {
    /// A rotator; starts the compression thread when segments are compressed.
    pub fn new(
        name: Arc<str>,
        cfg: RotateConfig,
        metrics: Arc<OutputMetrics>,
    ) -> io::Result<Rotator> {
        let compressor = match cfg.compress {
            Compression::None => None,
            c => Some(Compressor::start(name.clone(), c, metrics.clone())?),
        };
        Ok(Rotator {
            cfg,
            compressor,
            metrics,
            name,
        })
    }

    /// The policy.
    pub fn config(&self) -> &RotateConfig {
        &self.cfg
    }

    /// Moves the active file at `path` aside as the newest segment (the caller has written out
    /// and dropped its handle, started at `started`) and applies retention. Returns false when
    /// `path` no longer names `id` (moved away by someone else): nothing is renamed then.
    pub fn rotate(
        &mut self,
        path: &Path,
        id: super::fs::FileId,
        started: SystemTime,
    ) -> io::Result<bool> {
        let segment = match self.cfg.naming {
            SegmentNaming::Number => {
                let first = with_suffix(path, ".1");
                self.settle_leftover(&first);
                if !id.is_at(path) {
                    return Ok(false);
                }
                self.shift_numbered(path);
                first
            }
            SegmentNaming::Date => {
                if !id.is_at(path) {
                    return Ok(false);
                }
                self.free_dated_name(path, started)
            }
        };
        std::fs::rename(path, &segment)?;
        metrics::add(&self.metrics.rotations, 1);
        if let Some(c) = &self.compressor {
            c.submit(segment);
        }
        match self.cfg.naming {
            SegmentNaming::Number => self.expire_numbered(path),
            SegmentNaming::Date => self.expire_dated(path),
        }
        Ok(true)
    }

    /// Waits for the previous compression of `first` (`auth.log.1`) and deals with what a crash
    /// may have left there, so the shift moves only finished archives.
    fn settle_leftover(&self, first: &Path) {
        let Some(c) = &self.compressor else { return };
        c.wait(first);
        let _ = std::fs::remove_file(with_suffix(
            &with_suffix(first, c.compression().extension()),
            TEMP_SUFFIX,
        ));
        if first.exists() {
            if with_suffix(first, c.compression().extension()).exists() {
                // Crashed after the archive was complete, before the plain copy was removed.
                let _ = std::fs::remove_file(first);
            } else {
                c.submit(first.to_path_buf());
                c.wait(first);
            }
        }
    }

    /// Renames `path.N[.ext]` to `path.N+1[.ext]` from the highest N down, removing what would
    /// pass `keep`.
    fn shift_numbered(&self, path: &Path) {
        let mut top = 0usize;
        while SEGMENT_EXTENSIONS
            .iter()
            .any(|ext| with_suffix(path, &format!(".{}{ext}", top + 1)).exists())
        {
            top += 1;
        }
        for n in (1..=top).rev() {
            for ext in SEGMENT_EXTENSIONS {
                let from = with_suffix(path, &format!(".{n}{ext}"));
                if !from.exists() {
                    continue;
                }
                if self.cfg.keep.is_some_and(|k| n + 1 > k) {
                    self.remove(&from);
                } else {
                    let to = with_suffix(path, &format!(".{}{ext}", n + 1));
                    if let Err(e) = std::fs::rename(&from, &to) {
                        tracing::warn!(output = %self.name, from = %from.display(), error = %e, "cannot shift segment");
                    }
                }
            }
        }
    }

    /// Removes numbered segments older than `max_age` (the oldest have the highest numbers).
    fn expire_numbered(&self, path: &Path) {
        let Some(max_age) = self.cfg.max_age else {
            return;
        };
        let mut n = 2;
        loop {
            let forms: Vec<PathBuf> = SEGMENT_EXTENSIONS
                .iter()
                .map(|ext| with_suffix(path, &format!(".{n}{ext}")))
                .filter(|p| p.exists())
                .collect();
            if forms.is_empty() {
                break;
            }
            for p in forms {
                if older_than(&p, max_age) {
                    self.remove(&p);
                }
            }
            n += 1;
        }
    }

    /// `path-STAMP`, or `path-STAMP.N` when that is taken in any form.
    fn free_dated_name(&self, path: &Path, started: SystemTime) -> PathBuf {
        let t: DateTime<Local> = started.into();
        let hourly = self
            .cfg
            .interval
            .is_some_and(|i| i < Duration::from_secs(86_400));
        let stamp = t.format(if hourly { "%Y%m%d%H" } else { "%Y%m%d" });
        let base = with_suffix(path, &format!("-{stamp}"));
        let taken = |p: &Path| {
            SEGMENT_EXTENSIONS.iter().any(|ext| {
                let form = with_suffix(p, ext);
                form.exists() || with_suffix(&form, TEMP_SUFFIX).exists()
            }) || self.compressor.as_ref().is_some_and(|c| c.is_busy(p))
        };
        if !taken(&base) {
            return base;
        }
        (1..)
            .map(|n| with_suffix(&base, &format!(".{n}")))
            .find(|p| !taken(p))
            .unwrap_or(base)
    }

    /// Retention and crash recovery for date-named segments: one directory listing per rotation.
    fn expire_dated(&self, path: &Path) {
        // Joined names must equal the ones rotate() made, also for a bare relative path.
        let dir = path.parent().unwrap_or(Path::new(""));
        let listed = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let Ok(entries) = std::fs::read_dir(listed) else {
            return;
        };
        let base = file_name_bytes(path);
        let mut segments: Vec<(DatedName, PathBuf)> = Vec::new();
        let mut plain: HashSet<PathBuf> = HashSet::new();
        let mut compressed: HashSet<PathBuf> = HashSet::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(parsed) = DatedName::parse(
                base,
                std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str()),
            ) else {
                continue;
            };
            let full = dir.join(entry.file_name());
            let busy = self
                .compressor
                .as_ref()
                .is_some_and(|c| c.is_busy(&dir.join(&parsed.stem)));
            if parsed.temp {
                if !busy {
                    // Left by a crash mid-compression; the plain segment is still there.
                    let _ = std::fs::remove_file(&full);
                }
                continue;
            }
            if busy {
                continue;
            }
            let stem = dir.join(&parsed.stem);
            if parsed.ext.is_empty() {
                plain.insert(stem.clone());
            } else {
                compressed.insert(stem.clone());
            }
            segments.push((parsed, full));
        }
        if let Some(c) = &self.compressor {
            for stem in &plain {
                if compressed.contains(stem) {
                    let _ = std::fs::remove_file(stem);
                    segments.retain(|(_, p)| p != stem);
                } else {
                    c.submit(stem.clone());
                    segments.retain(|(_, p)| p != stem);
                }
            }
        }
        // Newest first.
        segments.sort_by_key(|s| std::cmp::Reverse(s.0.order_key()));
        let mut kept = 0usize;
        for (_, full) in segments {
            let beyond_keep = self.cfg.keep.is_some_and(|k| kept >= k);
            let too_old = self.cfg.max_age.is_some_and(|a| older_than(&full, a));
            if beyond_keep || too_old {
                self.remove(&full);
            } else {
                kept += 1;
            }
        }
    }

    fn remove(&self, p: &Path) {
        match std::fs::remove_file(p) {
            Ok(()) => metrics::add(&self.metrics.segments_removed, 1),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(output = %self.name, path = %p.display(), error = %e, "cannot remove old segment")
            }
        }
    }

    /// Waits for every queued compression (at shutdown).
    pub fn finish(&mut self) {
        if let Some(c) = &mut self.compressor {
            c.finish();
        }
    }
}

fn older_than(p: &Path, age: Duration) -> bool {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|e| e > age)
}

/// A parsed `BASE-STAMP[.N][.gz|.zst][.tmp]` file name.
#[derive(Debug, PartialEq, Eq)]
struct DatedName {
    /// The plain segment's file name (`BASE-STAMP[.N]`).
    stem: String,
    stamp: u64,
    seq: u32,
    ext: &'static str,
    temp: bool,
}

impl DatedName {
    fn parse(base: &[u8], name: &[u8]) -> Option<DatedName> {
        let rest = name.strip_prefix(base)?.strip_prefix(b"-")?;
        let rest = std::str::from_utf8(rest).ok()?;
        let (rest, temp) = match rest.strip_suffix(TEMP_SUFFIX) {
            Some(r) => (r, true),
            None => (rest, false),
        };
        let (rest, ext) = [".gz", ".zst"]
            .into_iter()
            .find_map(|e| rest.strip_suffix(e).map(|r| (r, e)))
            .unwrap_or((rest, ""));
        let (stamp, seq) = match rest.split_once('.') {
            Some((s, n)) => (s, n.parse::<u32>().ok()?),
            None => (rest, 0),
        };
        if !(stamp.len() == 8 || stamp.len() == 10) || !stamp.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let stem_len = name.len() - ext.len() - if temp { TEMP_SUFFIX.len() } else { 0 };
        Some(DatedName {
            stem: String::from_utf8_lossy(&name[..stem_len]).into_owned(),
            // Day stamps sort as the first hour of that day.
            stamp: stamp.parse::<u64>().ok()? * if stamp.len() == 8 { 100 } else { 1 },
            seq,
            ext,
            temp,
        })
    }

    fn order_key(&self) -> (u64, u32) {
        (self.stamp, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(interval: Option<Duration>) -> RotateConfig {
        RotateConfig {
            size_bytes: None,
            interval,
            keep: None,
            max_age: None,
            compress: Compression::None,
            naming: SegmentNaming::Number,
        }
    }

    #[test]
    fn interval_deadlines_fall_on_local_boundaries() {
        let hour = cfg(Some(Duration::from_secs(3600)));
        let now = SystemTime::now();
        let d = hour.deadline(now).unwrap();
        let left = d.duration_since(now).unwrap();
        assert!(left <= Duration::from_secs(3600) && left > Duration::ZERO);
        let local: DateTime<Local> = d.into();
        assert_eq!(chrono::Timelike::minute(&local), 0);
        assert_eq!(chrono::Timelike::second(&local), 0);
        let day: DateTime<Local> = cfg(Some(Duration::from_secs(86_400)))
            .deadline(now)
            .unwrap()
            .into();
        assert_eq!(chrono::Timelike::hour(&day), 0);
        assert!(cfg(None).deadline(now).is_none());
    }

    #[test]
    fn dated_names_parse_and_order() {
        let p = |n: &str| DatedName::parse(b"auth.log", n.as_bytes());
        let a = p("auth.log-20261122.gz").unwrap();
        assert_eq!(
            (a.stem.as_str(), a.ext, a.temp),
            ("auth.log-20261122", ".gz", false)
        );
        let b = p("auth.log-20261122.2.zst.tmp").unwrap();
        assert_eq!(
            (b.stem.as_str(), b.seq, b.temp),
            ("auth.log-20261122.2", 2, true)
        );
        assert!(a.order_key() < b.order_key());
        assert!(p("auth.log-2026112301").unwrap().order_key() > b.order_key());
        for bad in [
            "auth.log.1.gz",
            "auth.log-2026.gz",
            "auth.log-x",
            "auth.logx-20261122",
        ] {
            assert!(p(bad).is_none(), "{bad}");
        }
    }
}
