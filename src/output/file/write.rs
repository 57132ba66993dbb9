//! The write path of a [`FileSink`](super::FileSink): open (or create), check that the path
//! still names the open file, rotate when due, write with as few syscalls as possible, and keep
//! what failed for a retry.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use std::sync::Arc;

use super::fs;
use super::{Entry, FILE_BUFFER_BYTES, FsyncPolicy, Handle, Io};
use crate::event::Event;
use crate::metrics;
use crate::output::format::Format;

/// Lines kept per file while its writes fail; past this they are dropped and counted.
const MAX_RETAINED_BYTES: usize = 1024 * 1024;
/// Wait after a failed write or open, doubling while they keep failing (across the output's
/// files: one cause, a full disk or no descriptor left, usually fails them all).
pub(super) const RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest wait between attempts while writes or opens fail: space freed on a full disk is
/// used within this long.
pub(super) const RETRY_MAX: Duration = Duration::from_secs(5);
/// Wait after a failed rotation (the file keeps growing meanwhile).
const ROTATE_RETRY_INTERVAL: Duration = Duration::from_secs(60);
/// How often an open file is checked for having been moved or deleted (logrotate without HUP).
const IDENTITY_CHECK_INTERVAL: Duration = Duration::from_secs(1);

impl Io {
    /// Formats `run` into `e`'s buffer, writing it out whenever it fills; counts the run as
    /// dropped if `max_files_per_day` refused the file. Returns the bytes formatted.
    pub(super) fn buffer_lines(
        &mut self,
        path: &Path,
        e: &mut Entry,
        run: &[Arc<Event>],
        format: Format,
    ) -> usize {
        if e.refused {
            metrics::add(&self.metrics.dropped_file_limit, run.len() as u64);
            return 0;
        }
        let mut formatted = 0;
        for ev in run {
            let before = e.buf.len();
            format.write_line(ev, &mut e.buf);
            formatted += e.buf.len() - before;
            e.buffered_events += 1;
            if e.buf.len() >= FILE_BUFFER_BYTES {
                self.write_out(path, e);
            }
        }
        formatted
    }

    /// Writes the entry's buffer, opening, checking and rotating the file as needed. On failure
    /// the lines stay buffered for a retry after the output's backoff.
    pub(super) fn write_out(&mut self, path: &Path, e: &mut Entry) {
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
            if e.handle.is_none()
                && let Err(err) = self.open(path, e)
            {
                return self.fail(path, e, "open", err);
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
            self.retry.succeed();
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

    pub(super) fn close_handle(&mut self, e: &mut Entry) {
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
    pub(super) fn rotate(&mut self, path: &Path, e: &mut Entry) {
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
        let failure = self.retry.fail();
        if let Some(suppressed) = failure.log {
            tracing::warn!(output = %self.name, path = %path.display(), error = %err, op = what,
                buffered = e.buffered_events, suppressed, retry_in_ms = failure.delay.as_millis() as u64,
                "file write failed; will retry");
        }
        // Reopen on retry: the file may have been removed, or the disk remounted.
        self.close_handle(e);
        e.retry_at = Some(Instant::now() + failure.delay);
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
    pub(super) fn drop_lines(&mut self, e: &mut Entry) {
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

    pub(super) fn sync(&mut self, path: &Path, e: &mut Entry) {
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
