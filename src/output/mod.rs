//! Outputs: a bounded queue per output, and one thread that owns the output's resource.
//!
//! Listener tasks hand batches of `Arc<Event>` to an [`OutputHandle`]. The queue is bounded in
//! events by a semaphore whose permits the output returns after writing, and its overflow policy
//! sits beside the capacity ([`QueueConfig`]): `block` makes stream senders wait (back-pressure on
//! their sockets), `drop_newest` drops and counts. Datagram listeners never wait: they call
//! [`OutputHandle::try_send`], which drops and counts when full.
//!
//! Each output runs on its own OS thread, not on the async runtime, so a slow disk or a blocked
//! stdout pipe stalls only that output's queue, never the listeners of other outputs.

pub mod alert_post;
pub mod alertmanager;
pub mod backlog;
pub mod delivery;
pub mod elasticsearch;
pub mod file;
pub mod format;
pub mod forward;
pub mod http;
pub mod http_client;
pub mod kafka;
mod kind;
pub mod loki;
pub mod queue;
pub mod receipt;
pub mod relp;
pub mod stamp;
pub mod stdout;
pub mod webhook;

pub use kind::{
    OutputConfig, OutputDescriptors, OutputKind, OutputKindSpec, OutputResource, OutputStart,
};
pub use queue::{QueueConfig, QueueKind, WhenFull};
pub use receipt::{Receipt, ReceiptWait};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::event::Event;
use crate::metrics::{self, OutputMetrics};

/// Asks every file output to reopen its files: requested on SIGHUP, after logrotate moved them.
/// A generation number rather than a flag, so each output sees every request once, whenever its
/// thread next looks (at the latest one flush interval later).
#[derive(Debug, Clone, Default)]
pub struct ReopenFiles {
    generation: Arc<AtomicU64>,
}

impl ReopenFiles {
    /// Asks every file output to reopen its files.
    pub fn request(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Requests made so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// Events travelling together from a listener to an output.
pub type Batch = Vec<Arc<Event>>;

/// A batch in an output's channel, with the receipt of a listener that acknowledges its
/// messages (RELP; see [`receipt`]). `None` for every other listener: no cost.
pub struct Queued {
    /// The events.
    pub events: Batch,
    /// Settled by the output once the events are safe (or dropped under its policy).
    pub receipt: Option<Receipt>,
}

/// What an output thread does with batches. Implemented by [`file::FileSink`] and
/// [`stdout::StdoutSink`].
pub trait Sink: Send + 'static {
    /// Formats and buffers (or writes) a batch.
    fn write_batch(&mut self, batch: &[Arc<Event>]);
    /// Writes out everything buffered.
    fn flush(&mut self);
    /// Flushes, syncs to stable storage where that applies, and releases resources.
    fn close(&mut self);
    /// Periodic housekeeping while idle (close idle files and the like).
    fn tick(&mut self) {}
    /// Whether lines are still buffered after a flush (a write failed and will be retried):
    /// receipts wait until they are written.
    fn pending(&self) -> bool {
        false
    }
    /// Before a batch of a polled thread ([`Wake::WhenHolding`]): the events its queue holds,
    /// that batch's included (the alert engine sheds work when it has fallen behind).
    fn queued(&mut self, _events: usize) {}
}

/// One sender waiting for room, counted in a gauge for as long as it waits (also when its wait
/// is given up: a cut at the shutdown deadline drops it).
struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    fn new(gauge: &'a AtomicU64) -> Waiting<'a> {
        gauge.fetch_add(1, Ordering::Relaxed);
        Waiting(gauge)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The sending side of an output's queue. Cheap to clone; the output stops once every clone is
/// dropped and the queue is drained.
#[derive(Clone)]
pub struct OutputHandle {
    tx: mpsc::Sender<Queued>,
    /// Free capacity in events; the output thread returns permits as it writes.
    room: Arc<Semaphore>,
    queue: QueueConfig,
    metrics: Arc<OutputMetrics>,
    /// For a thread that drains its queue on a timer ([`Wake::WhenHolding`]): the thread, and
    /// the events its queue holds when a sender wakes it early.
    wake: Option<(std::thread::Thread, usize)>,
}

/// When a sink thread looks at its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// At every batch: outputs, whose latency is the time to write.
    EveryBatch,
    /// Every `poll`, or as soon as the queue holds `events` (the rest of its room is slack
    /// while the thread waits to be scheduled): a thread whose work has no hurry (the alert
    /// engine judges windows of seconds) is not woken for each small batch, which at moderate
    /// rates cost a context switch per batch of a few events.
    WhenHolding {
        /// The longest the thread sleeps.
        poll: Duration,
        /// Queued events that wake it at once.
        events: usize,
    },
}

impl OutputHandle {
    /// Queues a batch under the configured policy: waits for room with `block`, drops what does
    /// not fit (counted) with `drop_newest`.
    pub async fn send(&self, batch: Batch) {
        self.send_with(batch, None).await;
    }

    /// [`OutputHandle::send`] with a receipt the output settles once it holds the events
    /// (see [`receipt`]).
    pub async fn send_with(&self, mut batch: Batch, mut receipt: Option<Receipt>) {
        if self.queue.when_full == WhenFull::DropNewest {
            self.try_send_with(batch, receipt);
            return;
        }
        // A batch larger than the whole queue goes in pieces, each with its share of the receipt.
        while !batch.is_empty() {
            let take = batch.len().min(self.queue.max_events);
            let rest = batch.split_off(take);
            let share = if rest.is_empty() {
                receipt.take()
            } else {
                receipt.clone()
            };
            let permit = match self.room.try_acquire_many(take as u32) {
                Err(tokio::sync::TryAcquireError::NoPermits) => {
                    // Counted while it waits, so a test or an operator sees the jam.
                    let _waiting = Waiting::new(&self.metrics.senders_waiting);
                    self.room.acquire_many(take as u32).await.ok()
                }
                Ok(permit) => Some(permit),
                Err(tokio::sync::TryAcquireError::Closed) => None,
            };
            match permit {
                Some(permit) => {
                    permit.forget();
                    self.push(batch, share);
                }
                None => {
                    // The output has stopped: the events are lost, and the receipt says so.
                    self.count_dropped(batch.len());
                    if let Some(r) = share {
                        r.fail();
                    }
                }
            }
            batch = rest;
        }
        if let Some(r) = receipt {
            r.keep();
        }
    }

    /// Queues what fits without waiting; the rest is dropped and counted. Returns how many were
    /// dropped.
    pub fn try_send(&self, batch: Batch) -> usize {
        self.try_send_with(batch, None)
    }

    /// [`OutputHandle::try_send`] with a receipt. Events dropped because the queue is full count
    /// as kept for the receipt: dropping is the configured policy (see [`receipt`]).
    fn try_send_with(&self, mut batch: Batch, receipt: Option<Receipt>) -> usize {
        let room = self.room.available_permits().min(batch.len());
        let dropped = batch.len() - room;
        if room > 0 {
            match self.room.try_acquire_many(room as u32) {
                Ok(permit) => {
                    permit.forget();
                    batch.truncate(room);
                    self.push(batch, receipt);
                }
                Err(_) => {
                    // Raced with another sender; nothing was queued.
                    self.count_dropped(batch.len());
                    if let Some(r) = receipt {
                        r.keep();
                    }
                    return batch.len();
                }
            }
        } else if let Some(r) = receipt {
            r.keep();
        }
        self.count_dropped(dropped);
        dropped
    }

    fn push(&self, events: Batch, receipt: Option<Receipt>) {
        let n = events.len();
        metrics::add(&self.metrics.queued, n as u64);
        if let Err(mpsc::SendError(q)) = self.tx.send(Queued { events, receipt }) {
            self.count_dropped(n);
            if let Some(r) = q.receipt {
                r.fail();
            }
            return;
        }
        if let Some((t, events)) = &self.wake
            && self.depth() >= *events
        {
            t.unpark();
        }
    }

    /// Counts events that could not be handed over before the shutdown deadline.
    pub fn count_undelivered(&self, n: u64) {
        metrics::add(&self.metrics.undelivered_at_shutdown, n);
    }

    fn count_dropped(&self, n: usize) {
        metrics::add(&self.metrics.dropped_queue_full, n as u64);
    }

    /// Events currently queued.
    pub fn depth(&self) -> usize {
        self.queue
            .max_events
            .saturating_sub(self.room.available_permits())
    }
}

/// A started output: its handle, and the thread to join once every handle is dropped.
pub struct RunningOutput {
    /// Queue sender.
    pub handle: OutputHandle,
    /// The output's thread.
    pub thread: std::thread::JoinHandle<()>,
}

/// Starts the thread of an output without a backlog: `sink` writes what the queue hands it,
/// flushing at least every `flush_interval`. With a `predecessor` (a reload's older version of
/// the output, on the same files), the thread waits for it to finish first.
pub(crate) fn start_sink(
    cfg: &OutputConfig,
    sink: Box<dyn Sink>,
    flush_interval: Duration,
    metrics: Arc<OutputMetrics>,
    predecessor: Option<std::thread::JoinHandle<()>>,
) -> anyhow::Result<RunningOutput> {
    start_sink_thread(
        format!("out-{}", cfg.name),
        cfg.queue,
        sink,
        flush_interval,
        metrics,
        predecessor,
        Wake::EveryBatch,
    )
}

/// [`start_sink`] for a thread that is not an `[output]` (the alert engine): named
/// `thread_name`, behind a queue of `queue`, looking at it as `wake` says.
pub(crate) fn start_sink_thread(
    thread_name: String,
    queue: QueueConfig,
    sink: Box<dyn Sink>,
    flush_interval: Duration,
    metrics: Arc<OutputMetrics>,
    predecessor: Option<std::thread::JoinHandle<()>>,
    wake: Wake,
) -> anyhow::Result<RunningOutput> {
    let (tx, rx) = mpsc::channel();
    let room = Arc::new(Semaphore::new(queue.max_events));
    let thread_room = room.clone();
    let thread_metrics = metrics.clone();
    let thread = std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            if let Some(prev) = predecessor {
                let _ = prev.join();
            }
            match wake {
                Wake::EveryBatch => {
                    run_sink(sink, rx, thread_room, flush_interval, &thread_metrics)
                }
                Wake::WhenHolding { poll, .. } => run_sink_polled(
                    sink,
                    rx,
                    (thread_room, queue.max_events),
                    flush_interval,
                    poll,
                    &thread_metrics,
                ),
            }
        })?;
    Ok(RunningOutput {
        handle: OutputHandle {
            tx,
            room,
            queue,
            metrics,
            wake: match wake {
                Wake::EveryBatch => None,
                Wake::WhenHolding { events, .. } => Some((thread.thread().clone(), events)),
            },
        },
        thread,
    })
}

/// The output thread's loop: write batches as they come, flush when the queue runs dry or the
/// flush interval passes, tick at least once per interval (busy or not), and close (flush +
/// sync) when every sender is gone.
fn run_sink(
    mut sink: Box<dyn Sink>,
    rx: mpsc::Receiver<Queued>,
    room: Arc<Semaphore>,
    flush_interval: Duration,
    metrics: &OutputMetrics,
) {
    let mut receipts = Receipts::default();
    let mut last_flush = Instant::now();
    let mut last_tick = Instant::now();
    // A channel has no peek: a batch taken while checking for idleness waits here.
    let mut pending: Option<Queued> = None;
    loop {
        let next = match pending.take() {
            Some(b) => Ok(b),
            None => rx.recv_timeout(flush_interval),
        };
        match next {
            Ok(q) => {
                take_batch(&mut *sink, q, &room, &mut receipts, metrics);
                // Flush when the queue is momentarily empty (low latency when idle) or when the
                // interval has passed (bounded latency under sustained load).
                let idle = match rx.try_recv() {
                    Ok(b) => {
                        pending = Some(b);
                        false
                    }
                    Err(_) => true,
                };
                // A listener waiting for a receipt is answered once the lines are written out.
                if idle || receipts.waiting() || last_flush.elapsed() >= flush_interval {
                    sink.flush();
                    last_flush = Instant::now();
                    receipts.settle(&*sink, metrics);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        tick_when_due(
            &mut *sink,
            &mut last_tick,
            flush_interval,
            &mut receipts,
            metrics,
        );
    }
    close_sink(sink, receipts, &room, metrics);
}

/// [`run_sink`] for [`Wake::WhenHolding`]: sleeps `poll` (or until a sender finds the queue
/// holding its `events`), then takes every batch queued, flushing once the queue is empty; closes once
/// every sender is gone and the queue is empty.
fn run_sink_polled(
    mut sink: Box<dyn Sink>,
    rx: mpsc::Receiver<Queued>,
    (room, capacity): (Arc<Semaphore>, usize),
    flush_interval: Duration,
    poll: Duration,
    metrics: &OutputMetrics,
) {
    let mut receipts = Receipts::default();
    let mut last_tick = Instant::now();
    loop {
        // Parked first: a sender that finds the queue holding enough before the thread parks
        // leaves a token, and this returns at once.
        std::thread::park_timeout(poll.min(flush_interval));
        let mut took = false;
        let gone = loop {
            match rx.try_recv() {
                Ok(q) => {
                    sink.queued(capacity.saturating_sub(room.available_permits()));
                    take_batch(&mut *sink, q, &room, &mut receipts, metrics);
                    took = true;
                }
                Err(mpsc::TryRecvError::Empty) => break false,
                Err(mpsc::TryRecvError::Disconnected) => break true,
            }
        };
        if took {
            sink.flush();
            receipts.settle(&*sink, metrics);
        }
        if gone {
            break;
        }
        tick_when_due(
            &mut *sink,
            &mut last_tick,
            flush_interval,
            &mut receipts,
            metrics,
        );
    }
    close_sink(sink, receipts, &room, metrics);
}

/// Writes a batch taken off the queue, gives its room back and holds its receipt until the
/// next flush.
fn take_batch(
    sink: &mut dyn Sink,
    Queued { events, receipt }: Queued,
    room: &Semaphore,
    receipts: &mut Receipts,
    metrics: &OutputMetrics,
) {
    sink.write_batch(&events);
    room.add_permits(events.len());
    receipts.hold(receipt, metrics);
}

/// Ticks the sink once `flush_interval` has passed since its last tick, busy or not.
fn tick_when_due(
    sink: &mut dyn Sink,
    last_tick: &mut Instant,
    flush_interval: Duration,
    receipts: &mut Receipts,
    metrics: &OutputMetrics,
) {
    if last_tick.elapsed() >= flush_interval {
        sink.tick();
        *last_tick = Instant::now();
        receipts.settle(sink, metrics);
    }
}

/// The end of an output thread: the sink closes (flush + sync), the receipts left are answered,
/// and senders still waiting for room are let go.
fn close_sink(
    mut sink: Box<dyn Sink>,
    mut receipts: Receipts,
    room: &Semaphore,
    metrics: &OutputMetrics,
) {
    sink.close();
    receipts.settle(&*sink, metrics);
    room.close();
}

/// Receipts of batches a sink has taken but not yet written out.
#[derive(Default)]
struct Receipts {
    held: Vec<Receipt>,
    /// `dropped_write_error` when the first of them was taken.
    dropped_at_hold: u64,
}

impl Receipts {
    fn hold(&mut self, receipt: Option<Receipt>, metrics: &OutputMetrics) {
        if let Some(r) = receipt {
            if self.held.is_empty() {
                self.dropped_at_hold = metrics::get(&metrics.dropped_write_error);
            }
            self.held.push(r);
        }
    }

    fn waiting(&self) -> bool {
        !self.held.is_empty()
    }

    /// After a flush: fails the receipts if lines were dropped since they were taken (perhaps
    /// theirs), keeps them once nothing is left unwritten, and otherwise holds them for the
    /// sink's retry.
    fn settle(&mut self, sink: &dyn Sink, metrics: &OutputMetrics) {
        if self.held.is_empty() {
            return;
        }
        if metrics::get(&metrics.dropped_write_error) != self.dropped_at_hold {
            for r in self.held.drain(..) {
                r.fail();
            }
        } else if !sink.pending() {
            receipt::keep_all(&mut self.held);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Parsed;
    use std::sync::Mutex;

    /// Counts what it is handed, and whether it was closed.
    struct Counting(Arc<Mutex<(usize, bool)>>);

    impl Sink for Counting {
        fn write_batch(&mut self, batch: &[Arc<Event>]) {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).0 += batch.len();
        }
        fn flush(&mut self) {}
        fn close(&mut self) {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        }
    }

    fn event() -> Arc<Event> {
        let raw = bytes::Bytes::from_static(b"<13>Mar  1 00:00:00 host app: hello");
        Arc::new(Event {
            parsed: crate::event::Parsed::unparsed(&raw),
            raw,
            received_at: chrono::Utc::now(),
            source: None,
            listener: "t".into(),
            tls_peer: None,
            truncated: false,
        })
    }

    fn polled(poll: Duration) -> (RunningOutput, Arc<Mutex<(usize, bool)>>) {
        let seen = Arc::new(Mutex::new((0, false)));
        (polled_sink(Box::new(Counting(seen.clone())), poll), seen)
    }

    /// `sink` on a polled thread behind a queue of 100 events, woken at 25.
    fn polled_sink(sink: Box<dyn Sink>, poll: Duration) -> RunningOutput {
        let queue = QueueConfig {
            max_events: 100,
            when_full: WhenFull::DropNewest,
            ..QueueConfig::default()
        };
        start_sink_thread(
            "polled-test".into(),
            queue,
            sink,
            Duration::from_secs(60),
            Arc::default(),
            None,
            Wake::WhenHolding { poll, events: 25 },
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn wait_for(seen: &Mutex<(usize, bool)>, want: (usize, bool), within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if *seen.lock().unwrap_or_else(|e| e.into_inner()) == want {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn a_polled_sink_is_woken_once_its_queue_holds_its_events() {
        // A poll of an hour: only the wake-up can bring the events in time.
        let (running, seen) = polled(Duration::from_secs(3600));
        running.handle.try_send(vec![event(); 10]);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(seen.lock().unwrap_or_else(|e| e.into_inner()).0, 0);
        running.handle.try_send(vec![event(); 40]);
        assert!(wait_for(&seen, (50, false), Duration::from_secs(5)));
        // Beyond its room, the queue drops and counts: the sink took 50, 100 fit.
        let dropped = running.handle.try_send(vec![event(); 120]);
        assert_eq!(dropped, 20);
        assert!(wait_for(&seen, (150, false), Duration::from_secs(5)));
    }

    /// Records the backlog it is told of before each batch.
    struct Backlog(Arc<Mutex<Vec<usize>>>);

    impl Sink for Backlog {
        fn write_batch(&mut self, _: &[Arc<Event>]) {}
        fn flush(&mut self) {}
        fn close(&mut self) {}
        fn queued(&mut self, events: usize) {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(events);
        }
    }

    #[test]
    fn a_polled_sink_is_told_what_its_queue_holds_before_each_batch() {
        let told = Arc::new(Mutex::new(Vec::new()));
        let running = polled_sink(Box::new(Backlog(told.clone())), Duration::from_secs(3600));
        running.handle.try_send(vec![event(); 10]);
        running.handle.try_send(vec![event(); 40]);
        // Woken at 50: the first batch is taken with 50 queued, the second with its 40.
        let deadline = Instant::now() + Duration::from_secs(5);
        while told.lock().unwrap_or_else(|e| e.into_inner()).len() < 2 && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            *told.lock().unwrap_or_else(|e| e.into_inner()),
            vec![50, 40]
        );
    }

    #[test]
    fn a_polled_sink_takes_a_small_batch_at_its_interval_and_closes_when_released() {
        let (running, seen) = polled(Duration::from_millis(20));
        running.handle.try_send(vec![event(); 3]);
        assert!(wait_for(&seen, (3, false), Duration::from_secs(5)));
        running.handle.try_send(vec![event(); 2]);
        drop(running.handle);
        let _ = running.thread.join();
        assert_eq!(*seen.lock().unwrap_or_else(|e| e.into_inner()), (5, true));
    }

    fn batch(n: usize) -> Batch {
        (0..n)
            .map(|_| {
                Arc::new(Event {
                    raw: bytes::Bytes::from_static(b"<13>x"),
                    received_at: chrono::Utc::now(),
                    source: None,
                    listener: "tcp".into(),
                    truncated: false,
                    tls_peer: None,
                    parsed: Parsed::unparsed(b"<13>x"),
                })
            })
            .collect()
    }

    /// A `block` handle with room for 2 events whose queue nobody reads.
    fn handle() -> (OutputHandle, mpsc::Receiver<Queued>) {
        let (tx, rx) = mpsc::channel();
        let queue = QueueConfig {
            max_events: 2,
            ..QueueConfig::default()
        };
        let room = Arc::new(Semaphore::new(queue.max_events));
        let metrics = Arc::new(OutputMetrics::default());
        (
            OutputHandle {
                tx,
                room,
                queue,
                metrics,
                wake: None,
            },
            rx,
        )
    }

    #[tokio::test]
    async fn a_sender_waiting_for_room_is_counted_while_it_waits() {
        let (h, _rx) = handle();
        h.send(batch(2)).await;
        assert_eq!(
            metrics::get(&h.metrics.senders_waiting),
            0,
            "room was there"
        );
        let waiter = tokio::spawn({
            let h = h.clone();
            async move { h.send(batch(1)).await }
        });
        while metrics::get(&h.metrics.senders_waiting) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished());
        h.room.add_permits(1);
        waiter.await.unwrap();
        assert_eq!(metrics::get(&h.metrics.senders_waiting), 0);
        assert_eq!(metrics::get(&h.metrics.queued), 3);
    }

    #[tokio::test]
    async fn a_wait_given_up_is_no_longer_counted() {
        let (h, _rx) = handle();
        h.send(batch(2)).await;
        let cut = tokio::time::timeout(Duration::from_millis(10), h.send(batch(1))).await;
        assert!(cut.is_err(), "there was no room");
        assert_eq!(metrics::get(&h.metrics.senders_waiting), 0);
    }
}
