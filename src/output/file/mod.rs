//! The `file` output: lines appended to files whose path may be templated per event
//! (`/var/log/remote/{hostname}/{app_name}.log`), rotated, compressed and expired by sluice, or
//! by an external logrotate.
//!
//! One thread owns every file of an output (this [`FileSink`], its write path in `write.rs`); a
//! second one compresses rotated segments ([`compress`]). Each file's lines are buffered and written with one `write` per
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
mod settings;
pub mod sweep;
pub mod template;
mod write;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub use compress::Compression;
pub use fs::Perms;
pub use rotate::{RotateConfig, SegmentNaming};
pub use settings::{DEFAULT_MAX_OPEN_FILES, FileOutputConfig, KIND};
pub use template::PathTemplate;
use template::as_path;

use crate::backoff::Backoff;
use crate::event::Event;
use crate::metrics::{self, LogLimiter, OutputMetrics};
use crate::output::format::Format;
use crate::output::{ReopenFiles, Sink};
use fs::FileId;
use rotate::Rotator;

/// A file's buffer is written out once it holds this much, even mid-batch.
const FILE_BUFFER_BYTES: usize = 256 * 1024;
/// What a file's buffer holds before it first grows.
const ENTRY_BUFFER_START_BYTES: usize = 4096;
/// Every buffer of the output is written out once this much was formatted since the last
/// flush, even mid-batch. Under sustained load the output flushes only every `flush_interval`,
/// and a templated path's hundreds of buffers grew to a second's worth of lines: on a
/// collector's mixed stream, a third of sluice's page faults (issue 18).
const SINK_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// How often write errors and limits may be logged.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The window of `max_files_per_day`.
const FILE_LIMIT_WINDOW: Duration = Duration::from_secs(86_400);

/// When written data is forced to stable storage (`fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Only at an orderly stop (and archives before they replace their segment): the kernel
    /// writes back on its own schedule.
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
            // Room for a few lines from the start: a templated path's buffers otherwise grew
            // by doubling, copying their lines each time (1.4% of a collector's instructions).
            buf: Vec::with_capacity(if refused { 0 } else { ENTRY_BUFFER_START_BYTES }),
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
    /// By the path's bytes: `Path`'s hash walks components, and on a mixed stream every event is
    /// a lookup (with SipHash, 14% of a collector's instructions, issue 18). foldhash, seeded
    /// per process, halves what is left; hostile paths could only slow lookups in a map that
    /// `max_open_files` bounds.
    files: HashMap<Vec<u8>, Entry, foldhash::fast::RandomState>,
    io: Io,
    template: PathTemplate,
    format: Format,
    max_open_files: usize,
    idle_timeout: Option<Duration>,
    reopen: ReopenFiles,
    seen_generation: u64,
    /// Monotonic use counter for least-recently-used eviction.
    clock: u64,
    path_buf: Vec<u8>,
    /// The path of the run of events being written (see `write_batch`).
    run_path: Vec<u8>,
    /// Bytes formatted into the buffers since they were last written out.
    unflushed_bytes: usize,
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
    /// Paces retries of failed writes and opens, and their log lines.
    retry: Backoff,
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
            files: HashMap::default(),
            unflushed_bytes: 0,
            io: Io {
                name,
                perms: cfg.perms,
                fsync: cfg.fsync,
                rotator,
                metrics,
                error_log: LogLimiter::new(ERROR_LOG_INTERVAL),
                retry: Backoff::new(write::RETRY_MIN, write::RETRY_MAX),
                open_files: 0,
            },
            template: cfg.path.clone(),
            format,
            max_open_files: cfg.max_open_files.max(1),
            idle_timeout: cfg.idle_timeout,
            seen_generation: reopen.generation(),
            reopen,
            clock: 0,
            path_buf: Vec::new(),
            run_path: Vec::new(),
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
    fn close_entry(&mut self, path: &[u8]) {
        if let Some(mut e) = self.files.remove(path) {
            e.retry_at = None;
            self.io.write_out(as_path(path), &mut e);
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
            self.io.write_out(as_path(path), e);
            if e.handle.is_some() {
                self.io.close_handle(e);
                metrics::add(&self.io.metrics.files_reopened, 1);
            }
        }
    }

    /// Formats `run`, events that all go to `path`, into that file's buffer.
    fn write_run(&mut self, path: &[u8], run: &[Arc<Event>]) {
        self.clock += run.len() as u64;
        // One lookup for a file already open, the usual case.
        if let Some(e) = self.files.get_mut(path) {
            e.last_used = self.clock;
            self.unflushed_bytes += self.io.buffer_lines(as_path(path), e, run, self.format);
            return self.flush_over_budget();
        }
        if self.files.len() >= self.max_open_files {
            self.evict_one();
        }
        let refused = !self.admit(as_path(path));
        let e = self
            .files
            .entry(path.to_vec())
            .or_insert(Entry::new(refused));
        e.last_used = self.clock;
        self.unflushed_bytes += self.io.buffer_lines(as_path(path), e, run, self.format);
        self.flush_over_budget();
    }

    /// Writes every buffer out once the lines formatted since the last flush pass
    /// [`SINK_BUFFER_BYTES`].
    fn flush_over_budget(&mut self) {
        if self.unflushed_bytes >= SINK_BUFFER_BYTES {
            self.flush();
        }
    }

    fn sync_written(&mut self) {
        for (path, e) in self.files.iter_mut() {
            self.io.sync(as_path(path), e);
        }
    }
}

impl Sink for FileSink {
    fn write_batch(&mut self, batch: &[Arc<Event>]) {
        self.check_reopen();
        // Consecutive events to the same file are a run: one cache lookup per run, not per
        // event (hashing the path cost more than formatting the line, issue 8).
        let mut run_path = std::mem::take(&mut self.run_path);
        let mut run_start = 0;
        // A path without fields is the same for every event: one run, expanded once.
        let events = if self.template.is_static() {
            batch.first().map_or(&[][..], std::slice::from_ref)
        } else {
            batch
        };
        for (i, ev) in events.iter().enumerate() {
            if self.template.expand(ev, &mut self.path_buf) {
                metrics::add(&self.io.metrics.path_sanitized, 1);
            }
            if i == 0 {
                std::mem::swap(&mut run_path, &mut self.path_buf);
            } else if self.path_buf != run_path {
                self.write_run(&run_path, &batch[run_start..i]);
                run_start = i;
                std::mem::swap(&mut run_path, &mut self.path_buf);
            }
        }
        if !batch.is_empty() {
            self.write_run(&run_path, &batch[run_start..]);
        }
        self.run_path = run_path;
        if self.io.fsync == FsyncPolicy::EveryBatch {
            self.flush();
            self.sync_written();
        }
    }

    fn flush(&mut self) {
        for (path, e) in self.files.iter_mut() {
            self.io.write_out(as_path(path), e);
        }
        // Lines kept for a retry are bounded per file (`cap_retained`) and wait for their
        // backoff; only new lines count against the budget.
        self.unflushed_bytes = 0;
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
                self.io.rotate(as_path(path), e);
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

    fn pending(&self) -> bool {
        self.files.values().any(|e| !e.buf.is_empty())
    }

    fn close(&mut self) {
        self.check_reopen();
        let paths: Vec<Vec<u8>> = self.files.keys().cloned().collect();
        for path in paths {
            if let Some(mut e) = self.files.remove(&path) {
                e.retry_at = None;
                self.io.write_out(as_path(&path), &mut e);
                self.io.drop_lines(&mut e);
                if let Some(h) = &e.handle
                    && let Err(err) = h.file.sync_all()
                {
                    tracing::warn!(output = %self.io.name, path = %as_path(&path).display(), error = %err, "fsync failed");
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
    use crate::event::{Parsed, Span};

    fn event_from(host: &str, line: &str) -> Arc<Event> {
        let raw = format!("{host} {line}");
        let mut parsed = Parsed::unparsed(raw.as_bytes());
        parsed.hostname = Some(Span::new(0, host.len()));
        Arc::new(Event {
            raw: bytes::Bytes::from(raw),
            received_at: chrono::Utc::now(),
            source: None,
            listener: "t".into(),
            tls_peer: None,
            truncated: false,
            parsed,
        })
    }

    fn on_disk(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| std::fs::metadata(e.unwrap().path()).unwrap().len() as usize)
            .sum()
    }

    /// Under sustained load the output thread flushes only every `flush_interval`; a templated
    /// path's buffers together stay under the sink's budget meanwhile.
    #[test]
    fn many_files_write_out_once_their_buffers_pass_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = FileOutputConfig {
            path: PathTemplate::parse(&format!("{}/{{hostname}}.log", dir.path().display()))
                .unwrap(),
            max_open_files: 1000,
            max_files_per_day: settings::DEFAULT_MAX_FILES_PER_DAY,
            flush_interval: Duration::from_secs(3600),
            idle_timeout: None,
            fsync: FsyncPolicy::Never,
            rotate: None,
            perms: Perms::default(),
        };
        let mut sink = FileSink::new(
            "t".into(),
            &cfg,
            Format::Raw,
            Arc::default(),
            ReopenFiles::default(),
        )
        .unwrap();
        // 500 files of 10 KiB each at most: no file reaches FILE_BUFFER_BYTES on its own.
        let line = "x".repeat(1000);
        let batch: Vec<Arc<Event>> = (0..500)
            .map(|i| event_from(&format!("host{i}"), &line))
            .collect();
        let mut formatted = 0;
        for round in 0..10 {
            sink.write_batch(&batch);
            formatted += batch.iter().map(|e| e.raw.len() + 1).sum::<usize>();
            let buffered = formatted - on_disk(dir.path());
            assert!(
                buffered < SINK_BUFFER_BYTES,
                "round {round}: {buffered} bytes buffered"
            );
        }
        assert!(on_disk(dir.path()) > 0, "written out without a flush");
        sink.flush();
        assert_eq!(on_disk(dir.path()), formatted);
    }
}
