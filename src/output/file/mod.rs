//! The `file` output: lines appended to files whose path may be templated per event
//! (`/var/log/remote/{hostname}/{app_name}.log`), rotated, compressed and expired by sluice, or
//! by an external logrotate.
//!
//! One thread owns every file of an output (this [`FileSink`]); a second one compresses rotated
//! segments ([`compress`]). Each file's lines are buffered and written with one `write` per
//! flush. Open files live in a bounded cache (`max_open_files`, least recently used closed first)
//! and idle ones are closed, so a flood of unique hostnames cannot exhaust file descriptors; the
//! number of distinct files written per day is capped (`max_files_per_day`), so it cannot exhaust
//! inodes either (hostile-inputs J01). Both limits are counted.
//!
//! Files are reopened on SIGHUP ([`ReopenFiles`]) and, at most once a second, when the path no
//! longer names the open file (moved or deleted by logrotate without a signal). A write that
//! fails (disk full, permission lost) keeps its lines and is retried; what cannot be kept is
//! counted as `dropped_write_error`. No partial line is ever repeated or skipped on retry.

pub mod compress;
pub mod fs;
pub mod rotate;
pub mod sweep;
pub mod template;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub use fs::Perms;
pub use rotate::{Compression, RotateConfig, SegmentNaming};
pub use template::PathTemplate;

use crate::config::FileOutputConfig;
use crate::event::Event;
use crate::metrics::{self, LogLimiter, OutputMetrics};
use crate::output::format::Format;
use crate::output::{ReopenFiles, Sink};
use fs::FileId;
use rotate::Rotator;

/// A file's buffer is written out once it holds this much, even mid-batch.
const FILE_BUFFER_BYTES: usize = 256 * 1024;
/// Lines kept per file while its writes fail; past this they are dropped and counted.
const MAX_RETAINED_BYTES: usize = 1024 * 1024;
/// Wait between retries of a failed write or open.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Wait after a failed rotation (the file keeps growing meanwhile).
const ROTATE_RETRY_INTERVAL: Duration = Duration::from_secs(60);
/// How often an open file is checked for having been moved or deleted (logrotate without HUP).
const IDENTITY_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How often write errors and limits may be logged.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The window of `max_files_per_day`.
const FILE_LIMIT_WINDOW: Duration = Duration::from_secs(86_400);

/// When written data is forced to stable storage (`fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Only at rotation and at stop: the kernel writes back on its own schedule.
    Never,
    /// Every `flush_interval`, for files written since the last sync.
    Interval,
    /// After every batch taken from the queue.
    EveryBatch,
}

impl FsyncPolicy {
    /// Parses a config name.
    pub fn from_name(name: &str) -> Option<FsyncPolicy> {
        Some(match name {
            "never" => FsyncPolicy::Never,
            "interval" => FsyncPolicy::Interval,
            "every_batch" => FsyncPolicy::EveryBatch,
            _ => return None,
        })
    }
}

/// An open file with what rotation needs to know about it.
struct Handle {
    file: std::fs::File,
    id: FileId,
    size_bytes: u64,
    /// When its first line was written (or, for a file found on disk, its last one).
    started: SystemTime,
    /// When it is due for rotation by time.
    rotate_at: Option<SystemTime>,
    checked_at: Instant,
    unsynced: bool,
}

/// One path's state in the cache.
struct Entry {
    handle: Option<Handle>,
    buf: Vec<u8>,
    buffered_events: u64,
    /// LRU clock value of the last event.
    last_used: u64,
    last_write: Instant,
    /// After a failure: no new attempt before this.
    retry_at: Option<Instant>,
    /// Over `max_files_per_day`: its events are dropped and counted.
    refused: bool,
    /// The last write stopped inside a line (disk full): the buffer starts with its rest.
    mid_line: bool,
    /// After a failed rotation: no new attempt before this.
    rotate_retry_at: Option<Instant>,
}

impl Entry {
    fn new(refused: bool) -> Entry {
        Entry {
            handle: None,
            buf: Vec::new(),
            buffered_events: 0,
            last_used: 0,
            last_write: Instant::now(),
            retry_at: None,
            refused,
            mid_line: false,
            rotate_retry_at: None,
        }
    }
}

/// Owns the open files of one file output.
pub struct FileSink {
    files: HashMap<PathBuf, Entry>,
    io: Io,
    template: PathTemplate,
    format: Format,
    max_open_files: usize,
    idle_timeout: Option<Duration>,
    reopen: ReopenFiles,
    seen_generation: u64,
    /// Monotonic use counter for least-recently-used eviction.
    clock: u64,
    path_buf: String,
    /// Distinct paths admitted in the current `max_files_per_day` window.
    admitted: HashSet<PathBuf>,
    window_start: Instant,
    max_files_per_day: usize,
    limit_log: LogLimiter,
    /// `max_age` for the segments of templated paths that are no longer written.
    sweeper: Option<sweep::Sweeper>,
}

/// Everything the write path needs besides the cache itself (a separate borrow).
struct Io {
    name: Arc<str>,
    perms: Perms,
    fsync: FsyncPolicy,
    rotator: Option<Rotator>,
    metrics: Arc<OutputMetrics>,
    error_log: LogLimiter,
    open_files: u64,
}

impl FileSink {
    /// A sink for one `[output.NAME]` of kind `file`; fails only if the compression thread cannot
    /// be started.
    pub fn new(
        name: Arc<str>,
        cfg: &FileOutputConfig,
        format: Format,
        metrics: Arc<OutputMetrics>,
        reopen: ReopenFiles,
    ) -> std::io::Result<FileSink> {
        let rotator = match cfg.rotate {
            Some(r) => Some(Rotator::new(name.clone(), r, metrics.clone())?),
            None => None,
        };
        Ok(FileSink {
            files: HashMap::new(),
            io: Io {
                name,
                perms: cfg.perms,
                fsync: cfg.fsync,
                rotator,
                metrics,
                error_log: LogLimiter::new(ERROR_LOG_INTERVAL),
                open_files: 0,
            },
            template: cfg.path.clone(),
            format,
            max_open_files: cfg.max_open_files.max(1),
            idle_timeout: cfg.idle_timeout,
            seen_generation: reopen.generation(),
            reopen,
            clock: 0,
            path_buf: String::new(),
            admitted: HashSet::new(),
            window_start: Instant::now(),
            max_files_per_day: cfg.max_files_per_day.max(1),
            limit_log: LogLimiter::new(ERROR_LOG_INTERVAL),
            sweeper: cfg
                .rotate
                .and_then(|r| r.max_age)
                .and_then(|age| sweep::Sweeper::new(&cfg.path, age)),
        })
    }

    /// Closes the least recently used file to make room.
    fn evict_one(&mut self) {
        let Some(victim) = self
            .files
            .iter()
            .min_by_key(|(_, f)| f.last_used)
            .map(|(p, _)| p.clone())
        else {
            return;
        };
        self.close_entry(&victim);
        metrics::add(&self.io.metrics.files_evicted, 1);
    }

    /// Writes out an entry and removes it from the cache; lines that still cannot be written are
    /// counted as dropped.
    fn close_entry(&mut self, path: &Path) {
        if let Some(mut e) = self.files.remove(path) {
            e.retry_at = None;
            self.io.write_out(path, &mut e);
            self.io.drop_lines(&mut e);
            self.io.close_handle(&mut e);
        }
    }

    /// Whether a new path may be written under `max_files_per_day`.
    fn admit(&mut self, path: &Path) -> bool {
        if self.window_start.elapsed() >= FILE_LIMIT_WINDOW {
            self.admitted.clear();
            self.window_start = Instant::now();
        }
        if self.admitted.contains(path) {
            return true;
        }
        if self.admitted.len() < self.max_files_per_day {
            self.admitted.insert(path.to_path_buf());
            return true;
        }
        if let Some(suppressed) = self.limit_log.allow() {
            tracing::warn!(output = %self.io.name, path = %path.display(), limit = self.max_files_per_day,
                suppressed, "max_files_per_day reached: lines for new files are dropped");
        }
        false
    }

    /// On SIGHUP: write out every buffer to the file it was meant for, then close every file so
    /// the next write opens the path anew.
    fn check_reopen(&mut self) {
        let generation = self.reopen.generation();
        if generation == self.seen_generation {
            return;
        }
        self.seen_generation = generation;
        for (path, e) in self.files.iter_mut() {
            self.io.write_out(path, e);
            if e.handle.is_some() {
                self.io.close_handle(e);
                metrics::add(&self.io.metrics.files_reopened, 1);
            }
        }
    }

    fn sync_written(&mut self) {
        for (path, e) in self.files.iter_mut() {
            self.io.sync(path, e);
        }
    }
}

impl Io {
    /// Writes the entry's buffer, opening, checking and rotating the file as needed. On failure
    /// the lines stay buffered for a retry after [`RETRY_INTERVAL`].
    fn write_out(&mut self, path: &Path, e: &mut Entry) {
        if e.buf.is_empty() {
            return;
        }
        let now = Instant::now();
        if e.retry_at.is_some_and(|t| now < t) {
            self.cap_retained(e);
            return;
        }
        // Each pass writes, opens, reopens or rotates; bounded so a file that is rotated away
        // under us on every pass cannot spin.
        for _ in 0..64 {
            if e.handle.is_none() {
                if let Err(err) = self.open(path, e) {
                    return self.fail(path, e, "open", err);
                }
            }
            let Some(h) = e.handle.as_mut() else { return };
            if now.duration_since(h.checked_at) >= IDENTITY_CHECK_INTERVAL {
                h.checked_at = now;
                if !h.id.is_at(path) {
                    // Moved or deleted: what follows goes to a new file at the path.
                    self.close_handle(e);
                    metrics::add(&self.metrics.files_reopened, 1);
                    continue;
                }
                // copytruncate (or a person) may have changed its size.
                if let Ok(m) = h.file.metadata() {
                    h.size_bytes = m.len();
                }
            }
            let room = self.rotator.as_ref().and_then(|r| {
                r.config()
                    .size_bytes
                    .map(|max| max.saturating_sub(h.size_bytes))
            });
            // After a failed rotation the file grows past its limits until the next attempt.
            let rotation_held = e.rotate_retry_at.is_some_and(|t| now < t);
            let room = room.filter(|_| !rotation_held);
            let time_due = !rotation_held && h.rotate_at.is_some_and(|t| SystemTime::now() >= t);
            let n = writable_prefix(&e.buf, room, h.size_bytes);
            if h.size_bytes > 0 && (time_due || n == 0) {
                self.rotate(path, e);
                continue;
            }
            let (written, err) = fs::write_counted(&mut h.file, &e.buf[..n]);
            h.size_bytes += written as u64;
            if written > 0 {
                h.unsynced = true;
                e.mid_line = e.buf[written - 1] != b'\n';
            }
            let events = if written == e.buf.len() {
                e.buffered_events
            } else {
                (memchr::memchr_iter(b'\n', &e.buf[..written]).count() as u64)
                    .min(e.buffered_events)
            };
            e.buf.drain(..written);
            e.buffered_events -= events;
            e.last_write = now;
            metrics::add(&self.metrics.written, events);
            if let Some(err) = err {
                return self.fail(path, e, "write", err);
            }
            e.retry_at = None;
            if e.buf.is_empty() {
                return;
            }
        }
    }

    /// Opens (or creates) the entry's path.
    fn open(&mut self, path: &Path, e: &mut Entry) -> std::io::Result<()> {
        let Some(o) = fs::open_append(path, &self.perms, true)? else {
            return Err(std::io::ErrorKind::NotFound.into());
        };
        if o.created {
            metrics::add(&self.metrics.files_created, 1);
        }
        let started = if o.size_bytes > 0 {
            o.modified
        } else {
            SystemTime::now()
        };
        e.handle = Some(Handle {
            file: o.file,
            id: o.id,
            size_bytes: o.size_bytes,
            started,
            rotate_at: self
                .rotator
                .as_ref()
                .and_then(|r| r.config().deadline(started)),
            checked_at: Instant::now(),
            unsynced: false,
        });
        self.open_files += 1;
        self.metrics
            .files_open
            .store(self.open_files, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn close_handle(&mut self, e: &mut Entry) {
        if let Some(h) = e.handle.take() {
            if h.unsynced && self.fsync != FsyncPolicy::Never {
                let _ = h.file.sync_data();
            }
            self.open_files = self.open_files.saturating_sub(1);
            self.metrics
                .files_open
                .store(self.open_files, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Closes the active file and hands it to the rotator; the next write creates a new one.
    fn rotate(&mut self, path: &Path, e: &mut Entry) {
        let Some(h) = e.handle.as_ref() else { return };
        let (id, started) = (h.id, h.started);
        self.close_handle(e);
        let Some(r) = self.rotator.as_mut() else {
            return;
        };
        match r.rotate(path, id, started) {
            Ok(_) => e.rotate_retry_at = None,
            Err(err) => {
                e.rotate_retry_at = Some(Instant::now() + ROTATE_RETRY_INTERVAL);
                // The file stays where it is and keeps growing; the next check tries again.
                metrics::add(&self.metrics.write_errors, 1);
                if let Some(suppressed) = self.error_log.allow() {
                    tracing::warn!(output = %self.name, path = %path.display(), error = %err,
                        suppressed, "rotation failed");
                }
            }
        }
    }

    fn fail(&mut self, path: &Path, e: &mut Entry, what: &str, err: std::io::Error) {
        metrics::add(&self.metrics.write_errors, 1);
        if let Some(suppressed) = self.error_log.allow() {
            tracing::warn!(output = %self.name, path = %path.display(), error = %err, op = what,
                buffered = e.buffered_events, suppressed, "file write failed; will retry");
        }
        // Reopen on retry: the file may have been removed, or the disk remounted.
        self.close_handle(e);
        e.retry_at = Some(Instant::now() + RETRY_INTERVAL);
        self.cap_retained(e);
    }

    /// Drops (and counts) buffered lines past [`MAX_RETAINED_BYTES`].
    fn cap_retained(&mut self, e: &mut Entry) {
        if e.buf.len() > MAX_RETAINED_BYTES {
            self.drop_lines(e);
        }
    }

    /// Drops every buffered line, counted. A line already partly in the file keeps its rest, so
    /// the next line does not join it.
    fn drop_lines(&mut self, e: &mut Entry) {
        if e.buf.is_empty() {
            return;
        }
        let keep = if e.mid_line {
            memchr::memchr(b'\n', &e.buf).map_or(e.buf.len(), |i| i + 1)
        } else {
            0
        };
        let kept_events = u64::from(keep > 0).min(e.buffered_events);
        metrics::add(
            &self.metrics.dropped_write_error,
            e.buffered_events - kept_events,
        );
        e.buf.truncate(keep);
        e.buffered_events = kept_events;
    }

    fn sync(&mut self, path: &Path, e: &mut Entry) {
        let Some(h) = e.handle.as_mut() else { return };
        if !h.unsynced {
            return;
        }
        h.unsynced = false;
        if let Err(err) = h.file.sync_data() {
            metrics::add(&self.metrics.write_errors, 1);
            if let Some(suppressed) = self.error_log.allow() {
                tracing::warn!(output = %self.name, path = %path.display(), error = %err,
                    suppressed, "fsync failed");
            }
        }
    }
}

/// How many bytes of `buf` to write now: all of it when it fits under the size limit; else
/// whole lines up to the limit; 0 when not even one line fits and the file is not empty
/// (rotate first). A single line larger than the limit goes alone into an empty file.
fn writable_prefix(buf: &[u8], room: Option<u64>, size_bytes: u64) -> usize {
    let Some(room) = room else { return buf.len() };
    if buf.len() as u64 <= room {
        return buf.len();
    }
    let within = memchr::memrchr(b'\n', &buf[..room as usize]).map_or(0, |i| i + 1);
    if within > 0 || size_bytes > 0 {
        return within;
    }
    memchr::memchr(b'\n', buf).map_or(buf.len(), |i| i + 1)
}

impl Sink for FileSink {
    fn write_batch(&mut self, batch: &[Arc<Event>]) {
        self.check_reopen();
        for ev in batch {
            if self.template.expand(ev, &mut self.path_buf) {
                metrics::add(&self.io.metrics.path_sanitized, 1);
            }
            self.clock += 1;
            if !self.files.contains_key(Path::new(&self.path_buf)) {
                if self.files.len() >= self.max_open_files {
                    self.evict_one();
                }
                let path = PathBuf::from(&self.path_buf);
                let refused = !self.admit(&path);
                self.files.insert(path, Entry::new(refused));
            }
            let Some(e) = self.files.get_mut(Path::new(&self.path_buf)) else {
                continue;
            };
            e.last_used = self.clock;
            if e.refused {
                metrics::add(&self.io.metrics.dropped_file_limit, 1);
                continue;
            }
            self.format.write_line(ev, &mut e.buf);
            e.buffered_events += 1;
            if e.buf.len() >= FILE_BUFFER_BYTES {
                self.io.write_out(Path::new(&self.path_buf), e);
            }
        }
        if self.io.fsync == FsyncPolicy::EveryBatch {
            self.flush();
            self.sync_written();
        }
    }

    fn flush(&mut self) {
        for (path, e) in self.files.iter_mut() {
            self.io.write_out(path, e);
        }
    }

    fn tick(&mut self) {
        self.check_reopen();
        // Retries, and lines written since the last flush.
        self.flush();
        let now = SystemTime::now();
        let mut idle = Vec::new();
        for (path, e) in self.files.iter_mut() {
            // A quiet file is rotated on time too, so yesterday's lines leave it at midnight.
            if let Some(h) = &e.handle
                && h.size_bytes > 0
                && h.rotate_at.is_some_and(|t| now >= t)
                && e.rotate_retry_at.is_none_or(|t| Instant::now() >= t)
            {
                self.io.rotate(path, e);
            }
            if self
                .idle_timeout
                .is_some_and(|t| e.last_write.elapsed() >= t && e.buf.is_empty())
            {
                idle.push(path.clone());
            }
        }
        for path in idle {
            self.close_entry(&path);
            metrics::add(&self.io.metrics.files_idle_closed, 1);
        }
        if self.io.fsync == FsyncPolicy::Interval {
            self.sync_written();
        }
        if let Some(s) = &mut self.sweeper {
            s.run_if_due(&self.io.metrics);
        }
    }

    fn close(&mut self) {
        self.check_reopen();
        let paths: Vec<PathBuf> = self.files.keys().cloned().collect();
        for path in paths {
            if let Some(mut e) = self.files.remove(&path) {
                e.retry_at = None;
                self.io.write_out(&path, &mut e);
                self.io.drop_lines(&mut e);
                if let Some(h) = &e.handle
                    && let Err(err) = h.file.sync_all()
                {
                    tracing::warn!(output = %self.io.name, path = %path.display(), error = %err, "fsync failed");
                }
                self.io.close_handle(&mut e);
            }
        }
        if let Some(r) = &mut self.io.rotator {
            r.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writable_prefix_cuts_at_line_ends() {
        let buf = b"aaaa\nbbbb\ncccc\n";
        assert_eq!(writable_prefix(buf, None, 100), 15);
        assert_eq!(writable_prefix(buf, Some(15), 100), 15);
        assert_eq!(writable_prefix(buf, Some(12), 100), 10);
        assert_eq!(writable_prefix(buf, Some(3), 100), 0, "rotate first");
        assert_eq!(writable_prefix(buf, Some(3), 0), 5, "one long line alone");
        assert_eq!(writable_prefix(b"abc", Some(1), 0), 3);
    }
}
