//! Delivery through a backlog: the output thread of every kind that sends over a network
//! (`forward`, `http`). It moves batches from the output's channel into the backlog (encoded by
//! the kind's [`Transport`], applying the queue's bounds and `when_full`), and sends from the
//! head of the backlog. A record leaves the backlog only once the transport says the receiver
//! took it (or refused it for good, counted), so a failed attempt means the records are sent
//! again: a receiver may see duplicates, never gaps. Attempts that keep failing back off, with
//! jitter, and are logged at a bounded rate.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use toml::Spanned;

use crate::backoff::Backoff;
use crate::decode::{Entry, Errors, NumOrStr, duration_opt};
use crate::event::{Event, ListenerName};
use crate::metrics::{self, LogLimiter, OutputMetrics};
use crate::output::backlog::{Backlog, DiskQueue};
use crate::output::queue::{QueueConfig, QueueKind, WhenFull};
use crate::output::{Batch, OutputConfig, OutputHandle, Queued, RunningOutput};

/// Events an output's channel holds on their way into its backlog (the backlog is the queue
/// that `max_events`, `max_size` and `when_full` describe).
const STAGING_EVENTS: usize = 8192;
/// Wait after a failed attempt, doubling while attempts keep failing.
const RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest wait between attempts while they fail.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Wait after a failed disk queue sync, doubling while syncs keep failing (the loop would
/// otherwise try again on every pass).
const SYNC_RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest wait between disk queue syncs while they fail.
const SYNC_RETRY_MAX: Duration = Duration::from_secs(30);
/// What a record may add to its frame (an RFC 5424 header for an RFC 3164 frame, a JSON
/// document's keys); a record that needs more grows once.
const RECORD_OVERHEAD_BYTES: usize = 256;

/// `batch = { max_events, max_size, max_wait }`, as every batching output reads it.
#[derive(Deserialize, Default)]
pub(crate) struct BatchRaw {
    max_events: Option<Spanned<i64>>,
    max_size: Option<Spanned<NumOrStr>>,
    max_wait: Option<Spanned<NumOrStr>>,
}

/// An output's batch bounds: events and bytes per attempt, and how long a partial batch waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Records per attempt at most.
    pub max_events: usize,
    /// Bytes per attempt at most (one record that is larger goes alone).
    pub max_bytes: u64,
    /// How long a partial batch waits for more.
    pub max_wait: Duration,
}

impl BatchLimits {
    /// Reads `batch` (absent keys take `defaults`'); a size of 0 is refused.
    pub(crate) fn decode(
        raw: Option<&BatchRaw>,
        entry: &Entry<'_, '_>,
        errs: &mut Errors<'_>,
        defaults: BatchLimits,
    ) -> BatchLimits {
        let Some(b) = raw else {
            return defaults;
        };
        let max_wait = duration_opt(errs, &entry.key("batch.max_wait"), &b.max_wait)
            .unwrap_or(defaults.max_wait);
        let max_events =
            crate::decode::positive(errs, &entry.key("batch.max_events"), &b.max_events)
                .unwrap_or(defaults.max_events);
        let max_bytes =
            match crate::decode::size_opt(errs, &entry.key("batch.max_size"), &b.max_size) {
                Some(0) => {
                    if let Some(v) = &b.max_size {
                        errs.at(v.span(), entry.key("batch.max_size"), "must be more than 0");
                    }
                    defaults.max_bytes
                }
                Some(n) => n,
                None => defaults.max_bytes,
            };
        BatchLimits {
            max_events,
            max_bytes,
            max_wait,
        }
    }

    /// How many records from the head make one attempt: at most `max_events`, and as many as
    /// fit `max_bytes` counting `separator` bytes after each (at least one).
    pub fn fitting(&self, records: &[Vec<u8>], separator: usize) -> usize {
        let mut bytes = 0u64;
        records
            .iter()
            .take(self.max_events)
            .take_while(|r| {
                bytes += (r.len() + separator) as u64;
                bytes <= self.max_bytes
            })
            .count()
            .max(1)
    }
}

/// How a kind sends records to its receiver.
pub trait Transport: Send + 'static {
    /// Encodes one event as a backlog record, as it will be sent.
    fn encode(&self, event: &Event, out: &mut Vec<u8>);

    /// Bytes a record may add to its event's frame, so that encoding does not regrow it.
    fn record_overhead(&self) -> usize {
        RECORD_OVERHEAD_BYTES
    }

    /// Records per batch: a backlog holding this many makes a batch worth sending.
    fn batch_records(&self) -> usize;

    /// Records lent to one attempt from the head of the backlog: a transport with several
    /// requests in flight cuts them into batches and sends those at once.
    fn window_records(&self) -> usize {
        self.batch_records()
    }

    /// How long a partial batch may wait for more events before it is sent (`batch.max_wait`);
    /// zero sends as soon as events are queued.
    fn max_wait(&self) -> Duration {
        Duration::ZERO
    }

    /// Sends `records` (the head of the backlog, in order).
    fn send(&mut self, records: &[Vec<u8>]) -> Attempt;

    /// `count` records left the head of the backlog without being sent (`when_full =
    /// "drop_oldest"`): a transport that keeps records in flight from one attempt to the next
    /// forgets those.
    fn dropped_head(&mut self, _count: usize) {}

    /// Releases connections at the end.
    fn close(&mut self) {}
}

/// What became of an attempt.
#[derive(Debug)]
pub enum Attempt {
    /// The first `taken` records are done with: `accepted` by the receiver, the others
    /// refused for good (counted and logged by the transport). They leave the backlog.
    Done {
        /// Records, from the head, that leave the backlog (at least one).
        taken: usize,
        /// Of those, the ones the receiver took.
        accepted: usize,
    },
    /// The first `taken` records are done with, as for `Done`, but records after them failed
    /// and are kept: they are tried again after the backoff (a request of several in flight
    /// was refused for now while the ones before it were taken).
    Partial {
        /// Records, from the head, that leave the backlog (at least one).
        taken: usize,
        /// Of those, the ones the receiver took.
        accepted: usize,
        /// Why the rest failed, for the log.
        error: String,
        /// The receiver's own wait, if it gave one.
        retry_after: Option<Duration>,
    },
    /// Nothing left the backlog: try again after the backoff, or not before `retry_after`
    /// (an HTTP Retry-After).
    Failed {
        /// Why, for the log.
        error: String,
        /// The receiver's own wait, if it gave one.
        retry_after: Option<Duration>,
    },
}

/// Starts a delivering output's thread. Opening the disk queue happens here, so its errors
/// reach the caller, unless a `predecessor` (the reload's older version, on the same disk
/// queue) must finish first: then the thread opens it, and an error there drops and counts
/// what arrives.
pub fn start<T: Transport>(
    cfg: &OutputConfig,
    transport: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    metrics: Arc<OutputMetrics>,
    give_up: CancellationToken,
    state_dir: &std::path::Path,
    predecessor: Option<std::thread::JoinHandle<()>>,
) -> anyhow::Result<RunningOutput> {
    let (tx, rx) = mpsc::channel();
    let thread_name = format!("out-{}", cfg.name);
    let new_worker = {
        let (name, queue) = (cfg.name.clone(), cfg.queue);
        let (state_dir, metrics) = (state_dir.to_path_buf(), metrics.clone());
        move || -> anyhow::Result<Worker<T>> {
            let backlog = open_backlog(&name, &queue, &state_dir, &metrics)?;
            Ok(Worker::new(
                name,
                transport()?,
                queue,
                backlog,
                metrics,
                give_up,
            ))
        }
    };
    let staged = cfg.queue.max_events.min(STAGING_EVENTS);
    let room = Arc::new(Semaphore::new(staged));
    let thread_room = room.clone();
    let thread = match predecessor {
        None => {
            let worker = new_worker()?;
            std::thread::Builder::new()
                .name(thread_name)
                .spawn(move || worker.run(rx, thread_room))?
        }
        Some(prev) => {
            let name = cfg.name.clone();
            let metrics = metrics.clone();
            std::thread::Builder::new().name(thread_name).spawn(move || {
                let _ = prev.join();
                match new_worker() {
                    Ok(worker) => worker.run(rx, thread_room),
                    Err(e) => {
                        tracing::error!(output = %name, error = format!("{e:#}"), "output could not take over after a reload; its events are dropped");
                        metrics::add(&metrics.write_errors, 1);
                        // Their receipts, dropped unsettled, fail.
                        for q in rx {
                            metrics::add(&metrics.dropped_write_error, q.events.len() as u64);
                            thread_room.add_permits(q.events.len());
                        }
                    }
                }
            })?
        }
    };
    // The channel only stages: the backlog applies the policy, so senders wait here only when
    // the backlog itself is full under `block`.
    let staging = QueueConfig {
        max_events: staged,
        when_full: WhenFull::Block,
        ..cfg.queue
    };
    Ok(RunningOutput {
        handle: OutputHandle {
            tx,
            room,
            queue: staging,
            metrics,
            wake: None,
        },
        thread,
    })
}

/// The backlog of an output: in memory, or its disk queue under `state_dir/<name>`, recovered.
fn open_backlog(
    name: &str,
    queue: &QueueConfig,
    state_dir: &std::path::Path,
    metrics: &OutputMetrics,
) -> anyhow::Result<Backlog> {
    let backlog = match queue.kind {
        QueueKind::Memory => Backlog::memory(),
        QueueKind::Disk { sync } => {
            let dir = state_dir.join(name);
            let (q, recovery) = DiskQueue::open(&dir, sync)
                .map_err(|e| anyhow::anyhow!("opening disk queue {}: {e}", dir.display()))?;
            if recovery.quarantined_bytes > 0 {
                tracing::warn!(output = %name, dir = %dir.display(), bytes = recovery.quarantined_bytes,
                    "disk queue had a torn or corrupt tail: moved to .bad files, not replayed");
            }
            if recovery.records > 0 {
                tracing::info!(output = %name, records = recovery.records, "replaying disk queue backlog");
            }
            metrics::add(&metrics.quarantined_bytes, recovery.quarantined_bytes);
            Backlog::Disk(q)
        }
    };
    metrics
        .queue_depth
        .store(backlog.len(), std::sync::atomic::Ordering::Relaxed);
    Ok(backlog)
}

/// The output thread of a delivering output.
struct Worker<T> {
    name: Arc<str>,
    transport: T,
    queue: QueueConfig,
    backlog: Backlog,
    next_attempt: Instant,
    /// Paces attempts (and queue reads) that keep failing.
    retry: Backoff,
    /// Paces disk queue syncs that keep failing.
    sync_retry: Backoff,
    /// No sync attempt before this after a failed one.
    sync_retry_at: Option<Instant>,
    metrics: Arc<OutputMetrics>,
    /// Cancelled when `shutdown_timeout` has passed: stop retrying.
    give_up: CancellationToken,
    error_log: LogLimiter,
    /// When the head's partial batch started filling, for `max_wait`.
    filling_since: Option<Instant>,
    /// Records a disk backlog read for the attempt under way.
    read_buf: Vec<Vec<u8>>,
}

impl<T: Transport> Worker<T> {
    fn new(
        name: Arc<str>,
        transport: T,
        queue: QueueConfig,
        backlog: Backlog,
        metrics: Arc<OutputMetrics>,
        give_up: CancellationToken,
    ) -> Worker<T> {
        Worker {
            name,
            transport,
            queue,
            backlog,
            next_attempt: Instant::now(),
            retry: Backoff::new(RETRY_MIN, RETRY_MAX),
            sync_retry: Backoff::new(SYNC_RETRY_MIN, SYNC_RETRY_MAX),
            sync_retry_at: None,
            metrics,
            give_up,
            error_log: LogLimiter::new(Duration::from_secs(10)),
            filling_since: None,
            read_buf: Vec::new(),
        }
    }

    fn full(&self) -> bool {
        self.backlog.len() >= self.queue.max_events as u64
            || self
                .queue
                .max_bytes
                .is_some_and(|m| self.backlog.bytes() >= m)
    }

    /// The thread's loop; returns when the channel is closed and the backlog is delivered,
    /// persisted (disk) or given up (memory, after `shutdown_timeout`).
    fn run(mut self, rx: mpsc::Receiver<Queued>, room: Arc<Semaphore>) {
        let mut closed = false;
        loop {
            // Take in what the backlog has room for; under `block` the rest waits in the channel
            // and its senders wait in turn.
            while !(self.queue.when_full == WhenFull::Block && self.full()) {
                match rx.try_recv() {
                    Ok(q) => {
                        room.add_permits(q.events.len());
                        self.intake(q);
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            let delivered = if !self.backlog.is_empty()
                && Instant::now() >= self.next_attempt
                && (closed || self.give_up.is_cancelled() || self.batch_ready())
            {
                self.deliver_some()
            } else {
                false
            };
            self.maybe_sync();
            self.publish_depth();
            // The shutdown deadline also ends a worker whose senders are still blocked on it.
            if (closed || self.give_up.is_cancelled()) && self.finished(delivered) {
                break;
            }
            if !delivered {
                closed |= self.wait(&rx, &room, closed);
            }
        }
        // Batches still staged in the channel never reached the backlog (their receipts fail).
        let mut staged = 0;
        while let Ok(q) = rx.try_recv() {
            staged += q.events.len() as u64;
        }
        if staged > 0 {
            metrics::add(&self.metrics.undelivered_at_shutdown, staged);
            tracing::error!(output = %self.name, lost = staged, "shutdown_timeout passed: staged events not queued");
        }
        self.close();
        // Senders still waiting for room fail (and count their batch) instead of waiting forever.
        room.close();
    }

    /// Nothing to send right now: waits for input or the next attempt. Returns whether the
    /// channel closed.
    fn wait(&mut self, rx: &mpsc::Receiver<Queued>, room: &Semaphore, closed: bool) -> bool {
        let wait = if self.backlog.is_empty() {
            Duration::from_millis(500)
        } else {
            let due = match self.filling_since {
                Some(t) => self.next_attempt.max(t + self.transport.max_wait()),
                None => self.next_attempt,
            };
            due.saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(5), Duration::from_millis(200))
        };
        if closed || (self.queue.when_full == WhenFull::Block && self.full()) {
            std::thread::sleep(wait);
            return false;
        }
        match rx.recv_timeout(wait) {
            Ok(q) => {
                room.add_permits(q.events.len());
                self.intake(q);
                false
            }
            Err(mpsc::RecvTimeoutError::Timeout) => false,
            Err(mpsc::RecvTimeoutError::Disconnected) => true,
        }
    }

    /// Whether a stopping worker is done: everything delivered, or a disk backlog that will be
    /// replayed at the next start, or the shutdown deadline passed.
    fn finished(&mut self, progressing: bool) -> bool {
        if self.backlog.is_empty() {
            return true;
        }
        match self.backlog {
            // Keep delivering while the receiver takes it; otherwise keep it for next time.
            Backlog::Disk(_) => !progressing || self.give_up.is_cancelled(),
            Backlog::Memory { .. } => {
                if self.give_up.is_cancelled() {
                    let lost = self.backlog.len();
                    metrics::add(&self.metrics.undelivered_at_shutdown, lost);
                    tracing::error!(output = %self.name, lost, "shutdown_timeout passed: memory queue not delivered");
                    return true;
                }
                false
            }
        }
    }

    /// Syncs a disk backlog when due; after a failure, not again before the backoff has passed.
    fn maybe_sync(&mut self) {
        if self.sync_retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        match self.backlog.maybe_sync() {
            Ok(()) => {
                self.sync_retry.succeed();
                self.sync_retry_at = None;
            }
            Err(e) => {
                let failure = self.sync_retry.fail();
                if let Some(suppressed) = failure.log {
                    tracing::error!(output = %self.name, error = %e, suppressed,
                        retry_in_ms = failure.delay.as_millis() as u64, "disk queue sync failed");
                }
                self.sync_retry_at = Some(Instant::now() + failure.delay);
            }
        }
    }

    fn publish_depth(&self) {
        self.metrics
            .queue_depth
            .store(self.backlog.len(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the head makes a batch worth sending: a full one, or one that has waited
    /// `max_wait`.
    fn batch_ready(&self) -> bool {
        self.backlog.len() >= self.transport.batch_records() as u64
            || self
                .filling_since
                .is_none_or(|t| t.elapsed() >= self.transport.max_wait())
    }

    /// Encodes a batch into the backlog, applying the overflow policy, and settles its receipt:
    /// kept once appended (a disk backlog: written, and synced under `sync = "every_batch"`) or
    /// dropped under the policy, failed if the backlog could not take it.
    fn intake(&mut self, q: Queued) {
        let Queued {
            events: batch,
            receipt,
        } = q;
        if self.backlog.is_empty() {
            self.filling_since = Some(Instant::now());
        }
        let mut records = Vec::with_capacity(batch.len());
        for ev in &batch {
            // Room for the frame and what a format adds, so encoding does not regrow it.
            let mut r = Vec::with_capacity(ev.raw.len() + self.transport.record_overhead());
            self.transport.encode(ev, &mut r);
            records.push(r);
        }
        match self.queue.when_full {
            WhenFull::Block => {}
            WhenFull::DropNewest => self.drop_newest(&mut records),
            WhenFull::DropOldest => self.drop_oldest(&records),
        }
        let n = records.len() as u64;
        match self.backlog.push(records) {
            Ok(()) => {
                if let Some(r) = receipt {
                    r.keep();
                }
            }
            Err(e) => {
                metrics::add(&self.metrics.write_errors, 1);
                metrics::add(&self.metrics.dropped_write_error, n);
                if let Some(suppressed) = self.error_log.allow() {
                    tracing::error!(output = %self.name, error = %e, lost = n, suppressed, "queue write failed");
                }
                if let Some(r) = receipt {
                    r.fail();
                }
            }
        }
    }

    /// Keeps of `records` what fits, counting the rest.
    fn drop_newest(&self, records: &mut Vec<Vec<u8>>) {
        let room = (self.queue.max_events as u64).saturating_sub(self.backlog.len()) as usize;
        let mut keep = records.len().min(room);
        if let Some(max) = self.queue.max_bytes {
            let mut bytes = self.backlog.bytes();
            keep = records[..keep]
                .iter()
                .take_while(|r| {
                    bytes += r.len() as u64;
                    bytes <= max
                })
                .count();
        }
        metrics::add(
            &self.metrics.dropped_queue_full,
            (records.len() - keep) as u64,
        );
        records.truncate(keep);
    }

    /// Makes room for `records` at the head of the backlog, counting what it drops.
    fn drop_oldest(&mut self, records: &[Vec<u8>]) {
        let incoming: u64 = records.iter().map(|r| r.len() as u64).sum();
        let mut drop = (self.backlog.len() + records.len() as u64)
            .saturating_sub(self.queue.max_events as u64);
        if let Some(max) = self.queue.max_bytes
            && self.backlog.bytes() + incoming > max
        {
            // Make room by count of average records; exact enough for a byte bound.
            let avg = (self.backlog.bytes() / self.backlog.len().max(1)).max(1);
            drop = drop.max((self.backlog.bytes() + incoming - max).div_ceil(avg));
        }
        let drop = drop.min(self.backlog.len());
        if drop > 0 {
            match self.backlog.ack(drop as usize) {
                Ok(()) => self.transport.dropped_head(drop as usize),
                Err(e) => {
                    tracing::error!(output = %self.name, error = %e, "dropping oldest failed")
                }
            }
            metrics::add(&self.metrics.dropped_oldest, drop);
        }
    }

    /// Sends records from the head; returns true if some left the backlog.
    fn deliver_some(&mut self) -> bool {
        let records = match self
            .backlog
            .peek(self.transport.window_records(), &mut self.read_buf)
        {
            Ok(r) => r,
            Err(e) => {
                self.failed(&format!("reading the queue failed: {e}"), None);
                return false;
            }
        };
        let peeked = records.len();
        match self.transport.send(records) {
            Attempt::Done { taken, accepted } => {
                self.taken(taken.clamp(1, peeked), accepted);
                self.retry.succeed();
                true
            }
            Attempt::Partial {
                taken,
                accepted,
                error,
                retry_after,
            } => {
                self.taken(taken.clamp(1, peeked), accepted);
                self.failed(&error, retry_after);
                true
            }
            Attempt::Failed { error, retry_after } => {
                self.failed(&error, retry_after);
                false
            }
        }
    }

    /// `taken` records from the head are done with, `accepted` of them by the receiver.
    fn taken(&mut self, taken: usize, accepted: usize) {
        if let Err(e) = self.backlog.ack(taken) {
            tracing::error!(output = %self.name, error = %e, "acknowledging the queue failed");
        }
        // What is left has waited since then already; once empty, the next event starts a
        // batch afresh.
        if self.backlog.is_empty() {
            self.filling_since = None;
        }
        metrics::add(&self.metrics.written, accepted as u64);
    }

    /// Backs off after a failed attempt, with jitter so relays do not retry in step; the
    /// receiver's own wait, if longer, wins.
    fn failed(&mut self, error: &str, retry_after: Option<Duration>) {
        metrics::add(&self.metrics.retries, 1);
        let failure = self.retry.fail();
        if let Some(suppressed) = failure.log {
            tracing::warn!(output = %self.name, error, pending = self.backlog.len(),
                suppressed, retry_in_ms = failure.delay.as_millis() as u64, "delivery failed; will retry");
        }
        let jitter =
            Duration::from_millis(u64::from(std::process::id() ^ self.backlog.len() as u32) % 100);
        let delay = (failure.delay + jitter).max(retry_after.unwrap_or_default());
        self.next_attempt = Instant::now() + delay;
    }

    fn close(&mut self) {
        if let Err(e) = self.backlog.sync_now() {
            tracing::error!(output = %self.name, error = %e, "disk queue sync failed");
        }
        if let Backlog::Disk(_) = self.backlog
            && !self.backlog.is_empty()
        {
            tracing::info!(output = %self.name, records = self.backlog.len(), "disk queue keeps its backlog for the next start");
        }
        self.transport.close();
    }
}

/// Where an output hands the events a receiver refused for good (`dead_letter = "NAME"`):
/// another output, typically a file. Each refused record becomes an event of its own, an
/// RFC 5424 message from `sluice` with the output's name and the receiver's reason in
/// structured data and the record (as it was sent) as its message. Handing over never waits:
/// what the dead-letter output has no room for is counted there as dropped.
#[derive(Clone)]
pub struct DeadLetter {
    /// The refusing output's name.
    pub output: Arc<str>,
    /// The dead-letter output's queue.
    pub handle: OutputHandle,
    /// The refusing output's counters (`dead_lettered`).
    pub metrics: Arc<OutputMetrics>,
}

impl DeadLetter {
    /// Hands over `records` refused for `reason`.
    pub fn send(&self, records: &[&[u8]], reason: &str) {
        let now = chrono::Utc::now();
        let listener = ListenerName::new("dead_letter");
        let opts = crate::parse::ParseOptions::new(now, crate::parse::Zone::Local);
        let host = crate::output::format::local_hostname();
        let batch: Batch = records
            .iter()
            .map(|r| {
                let mut raw = format!(
                    "<11>1 {} {host} sluice - DEADLETTER [sluice@32473 output=\"{}\" reason=\"{}\"] ",
                    now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    sd_escape(&self.output),
                    sd_escape(reason),
                )
                .into_bytes();
                raw.extend_from_slice(r);
                let raw = bytes::Bytes::from(raw);
                let parsed = crate::parse::parse(&raw, &opts);
                Arc::new(Event {
                    raw,
                    received_at: now,
                    source: None,
                    listener,
                    tls_peer: None,
                    truncated: false,
                    parsed,
                })
            })
            .collect();
        let n = batch.len() as u64;
        self.handle.try_send(batch);
        metrics::add(&self.metrics.dead_lettered, n);
    }
}

/// A structured-data parameter value: `"`, `\` and `]` escaped (RFC 5424 §6.3.3), and cut so
/// a long reason stays readable.
fn sd_escape(s: &str) -> String {
    const MAX_REASON_CHARS: usize = 400;
    let mut out = String::with_capacity(s.len().min(MAX_REASON_CHARS) + 8);
    for c in s.chars().take(MAX_REASON_CHARS) {
        match c {
            '"' | '\\' | ']' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// What a delivering output does with events its receiver refused for good: counts them in
/// `rejected`, logs the receiver's reason at a bounded rate, and hands them to the dead-letter
/// output when there is one.
pub struct Refusals {
    output: Arc<str>,
    metrics: Arc<OutputMetrics>,
    dead_letter: Option<DeadLetter>,
    log: LogLimiter,
}

impl Refusals {
    /// Refusals of `output`, counted in `metrics`.
    pub fn new(
        output: Arc<str>,
        metrics: Arc<OutputMetrics>,
        dead_letter: Option<DeadLetter>,
    ) -> Refusals {
        Refusals {
            output,
            metrics,
            dead_letter,
            log: LogLimiter::new(Duration::from_secs(10)),
        }
    }

    /// Every one of `records` refused for `why`: the attempt is done, nothing accepted.
    pub fn refuse_all(&mut self, records: &[Vec<u8>], why: &str) -> Attempt {
        let refused: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        self.refuse(records.len(), &refused, why);
        Attempt::Done {
            taken: records.len(),
            accepted: 0,
        }
    }

    /// `count` events refused for `why`; `records` are the ones the receiver named (fewer when
    /// it only said how many, as Loki's partial 400 does: those are counted, not handed on).
    pub fn refuse(&mut self, count: usize, records: &[&[u8]], why: &str) {
        metrics::add(&self.metrics.rejected, count as u64);
        if let Some(d) = &self.dead_letter
            && !records.is_empty()
        {
            d.send(records, why);
        }
        if let Some(suppressed) = self.log.allow() {
            tracing::error!(output = %self.output, events = count, reason = why, suppressed,
                "the receiver refused events for good; they are counted in `rejected` and not sent again");
        }
    }
}
