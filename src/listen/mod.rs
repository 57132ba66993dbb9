//! Listeners: sockets in, events out. Each listener (and each TCP connection) frames, parses and
//! routes inline through its own [`Dispatcher`], then hands per-output batches to the outputs'
//! queues: no central router task, no extra hop.

mod kind;
pub mod kmsg;
pub mod ratelimit;
pub mod relp;
pub mod settings;
pub mod stream;
pub mod tail;
pub mod tcp;
pub mod tls;
pub mod udp;
pub mod unix;
pub mod unix_stream;

pub use kind::{
    BoundSocket, Endpoint, ListenerConfig, ListenerDescriptors, ListenerKind, ListenerKindSpec,
    StartContext, log_listening,
};

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::backoff::{self, Backoff};
use crate::event::{Event, ListenerName, TlsPeer};
use crate::metrics::{self, ListenerMetrics, Metrics};
use arc_swap::ArcSwap;

use crate::output::{Batch, OutputHandle};
use crate::parse::{ParseOptions, Zone, parse};
use crate::route::RuleTable;

/// The rule table with the output queues its indices name. Replaced as a whole on reload, so a
/// batch is always routed and delivered under one configuration.
pub struct Routing {
    /// The ordered rules.
    pub routes: RuleTable,
    /// Output queues, indexed as `Config::outputs` (and so as `Rule::to`).
    pub outputs: Vec<OutputHandle>,
    /// Each rule's counters, in rule order.
    pub route_metrics: Vec<Arc<crate::metrics::RouteMetrics>>,
    /// The alert engine's feed, when `[[alert]]` rules are configured.
    pub alerts: Option<crate::alert::feed::AlertFeed>,
}

/// What every listener shares: the current routing and the counters.
pub struct Pipeline {
    routing: ArcSwap<Routing>,
    /// All counters (for `unrouted`).
    pub metrics: Arc<Metrics>,
}

impl Pipeline {
    /// A pipeline starting with `routing`.
    pub fn new(routing: Routing, metrics: Arc<Metrics>) -> Pipeline {
        Pipeline {
            routing: ArcSwap::from_pointee(routing),
            metrics,
        }
    }

    /// Switches every listener to `routing` from its next batch on. The old routing (and the
    /// queues only it names) is released when the last batch routed under it has been handed on.
    pub fn replace(&self, routing: Routing) {
        self.routing.store(Arc::new(routing));
    }
}

/// Per-task state for turning frames into routed batches: one per UDP/unix listener and one per
/// TCP connection, so nothing on the hot path is shared or locked.
pub struct Dispatcher {
    pipeline: Arc<Pipeline>,
    /// The listener's name, put on every event it reads.
    name: ListenerName,
    /// The authenticated peer of a TLS connection, put on every event it sends.
    tls_peer: Option<Arc<TlsPeer>>,
    /// The listener's `timezone` and the receive time: rebuilt once a second, not per frame.
    opts: ParseOptions,
    metrics: Arc<ListenerMetrics>,
    /// The routing the pending batches were built under (loaded at a batch's first event).
    routing: Option<Arc<Routing>>,
    /// One pending batch per output of `routing`.
    batches: Vec<Batch>,
    route_buf: Vec<usize>,
    /// Matches per rule of `routing` since the last flush.
    route_hits: Vec<u64>,
    /// Events for the alert engine, in arrival order, as where to take each from at the flush:
    /// the output batch and place a routed event went to (its reference is taken there and
    /// then), or [`OWN_ALERT`] for the next of `alert_own`. Taken as routed, right after the
    /// event was built, the reference count's locked increment waited for the event's stores
    /// and was half of this function's time (`perf`, issue 17).
    alert_marks: Vec<(u32, u32)>,
    /// Events for the alert engine that no route took, in arrival order.
    alert_own: Batch,
    /// False for the alert engine's own listener: its events do not feed the rules again.
    feeds_alerts: bool,
    /// Counts accumulated since the last flush, added to the shared atomics once per flush.
    received: u64,
    parse_errors: u64,
    truncated: u64,
    unrouted: u64,
}

/// In `Dispatcher::alert_marks`: an event no output batch holds.
const OWN_ALERT: u32 = u32::MAX;

impl Dispatcher {
    /// A dispatcher for events read by `listener`, whose zone-less stamps are in `zone`.
    pub fn new(pipeline: Arc<Pipeline>, listener: Arc<str>, zone: Zone) -> Dispatcher {
        let metrics = pipeline.metrics.listener(&listener);
        Dispatcher {
            pipeline,
            name: ListenerName::new(&listener),
            tls_peer: None,
            opts: ParseOptions::new(Utc::now(), zone),
            metrics,
            routing: None,
            batches: Vec::new(),
            route_buf: Vec::new(),
            route_hits: Vec::new(),
            alert_marks: Vec::new(),
            alert_own: Vec::new(),
            feeds_alerts: true,
            received: 0,
            parse_errors: 0,
            truncated: 0,
            unrouted: 0,
        }
    }

    /// Tags every later event with the connection's TLS peer.
    pub fn set_tls_peer(&mut self, peer: Option<TlsPeer>) {
        self.tls_peer = peer.map(Arc::new);
    }

    /// Events of this dispatcher feed no alert rule (the alert engine's own events).
    pub fn feed_no_alerts(&mut self) {
        self.feeds_alerts = false;
    }

    /// This listener's counters.
    pub fn metrics(&self) -> &Arc<ListenerMetrics> {
        &self.metrics
    }

    /// Parses and routes one frame into the pending batches. Never drops: a frame that does not
    /// parse is kept with its `parse_error`.
    pub fn push(
        &mut self,
        frame: Bytes,
        truncated: bool,
        source: Option<SocketAddr>,
        received_at: DateTime<Utc>,
    ) {
        let parsed = self.parse(&frame, received_at);
        self.push_parsed(frame, parsed, truncated, source, received_at);
    }

    /// Parses `frame` as [`Dispatcher::push`] would, for a listener that adds to the result
    /// before [`Dispatcher::push_parsed`] (a `tail` listener's file element).
    pub fn parse(&mut self, frame: &[u8], received_at: DateTime<Utc>) -> crate::event::Parsed {
        if self.opts.received_at().timestamp() != received_at.timestamp() {
            self.opts = ParseOptions::new(received_at, self.opts.zone());
        }
        parse(frame, &self.opts)
    }

    /// [`Dispatcher::push`] for a frame the listener parsed itself (kmsg records).
    pub fn push_parsed(
        &mut self,
        frame: Bytes,
        parsed: crate::event::Parsed,
        truncated: bool,
        source: Option<SocketAddr>,
        received_at: DateTime<Utc>,
    ) {
        self.received += 1;
        if parsed.parse_error.is_some() {
            self.parse_errors += 1;
        }
        if truncated {
            self.truncated += 1;
        }
        let ev = Event {
            raw: frame,
            received_at,
            source,
            listener: self.name,
            tls_peer: self.tls_peer.clone(),
            truncated,
            parsed,
        };
        let routing = match &self.routing {
            Some(r) => r,
            None => {
                let r = self.pipeline.routing.load_full();
                self.batches.resize_with(r.outputs.len(), Vec::new);
                self.route_hits.clear();
                self.route_hits.resize(r.route_metrics.len(), 0);
                self.routing.insert(r)
            }
        };
        let feed = self.feeds_alerts && routing.alerts.as_ref().is_some_and(|a| a.wants(&ev));
        if !routing
            .routes
            .route_counting(&ev, &mut self.route_buf, &mut self.route_hits)
        {
            self.unrouted += 1;
            if feed {
                self.alert_marks.push((OWN_ALERT, 0));
                self.alert_own.push(Arc::new(ev));
            }
            return;
        }
        // The last output takes the event itself: cloning it there and dropping ours was two
        // locked instructions per event, the costliest lines of this function (issue 8).
        let ev = Arc::new(ev);
        if let Some((&last, others)) = self.route_buf.split_last() {
            for &o in others {
                if let Some(b) = self.batches.get_mut(o) {
                    b.push(ev.clone());
                }
            }
            if let Some(b) = self.batches.get_mut(last) {
                if feed {
                    self.alert_marks.push((last as u32, b.len() as u32));
                }
                b.push(ev);
            }
        } else if feed {
            self.alert_marks.push((OWN_ALERT, 0));
            self.alert_own.push(ev);
        }
    }

    /// Number of events waiting in pending batches.
    pub fn pending(&self) -> usize {
        // Events, not references: an event routed and fed to the engine is one (counted
        // twice, a listener handed its events over twice as often with alert rules).
        self.batches.iter().map(Vec::len).sum::<usize>() + self.alert_own.len()
    }

    /// Hands the alert batch to the engine (never waiting), or drops it when the routing it
    /// was gathered under has no rules any more.
    fn flush_alerts(&mut self, routing: &Routing) {
        if self.alert_marks.is_empty() {
            return;
        }
        let mut own = std::mem::take(&mut self.alert_own).into_iter();
        let mut batch = Vec::with_capacity(self.alert_marks.len());
        for &(output, at) in &self.alert_marks {
            let ev = match output {
                OWN_ALERT => own.next(),
                o => self
                    .batches
                    .get(o as usize)
                    .and_then(|b| b.get(at as usize))
                    .cloned(),
            };
            batch.extend(ev);
        }
        self.alert_marks.clear();
        if let Some(feed) = &routing.alerts {
            feed.send(batch);
        }
    }

    fn publish_counts(&mut self) {
        metrics::add(&self.metrics.received, self.received);
        metrics::add(&self.metrics.parsed_ok, self.received - self.parse_errors);
        metrics::add(&self.metrics.parse_errors, self.parse_errors);
        metrics::add(&self.metrics.truncated, self.truncated);
        metrics::add(&self.pipeline.metrics.unrouted, self.unrouted);
        self.received = 0;
        self.parse_errors = 0;
        self.truncated = 0;
        self.unrouted = 0;
        if let Some(routing) = &self.routing {
            for (hits, m) in self.route_hits.iter_mut().zip(&routing.route_metrics) {
                metrics::add(&m.matched, std::mem::take(hits));
            }
        }
    }

    /// Hands pending batches to the outputs, waiting for room where an output's policy is
    /// `block` (this is what stops a stream listener from reading: back-pressure). Gives up when
    /// `cut` fires (the shutdown deadline): what could not be handed over is counted as
    /// undelivered by its output.
    pub async fn flush_or_cut(&mut self, cut: &tokio_util::sync::CancellationToken) {
        self.hand_over(cut, None).await;
    }

    /// [`Dispatcher::flush_or_cut`] with a receipt: each output the pending batches go to gets a
    /// share and settles it once it holds them (see [`crate::output::receipt`]). A batch cut at
    /// `hard_stop` fails its share.
    pub async fn flush_with_receipt(
        &mut self,
        cut: &tokio_util::sync::CancellationToken,
        receipt: crate::output::Receipt,
    ) {
        self.hand_over(cut, Some(&receipt)).await;
        receipt.keep();
    }

    async fn hand_over(
        &mut self,
        cut: &tokio_util::sync::CancellationToken,
        receipt: Option<&crate::output::Receipt>,
    ) {
        self.publish_counts();
        let Some(routing) = self.routing.take() else {
            return;
        };
        self.flush_alerts(&routing);
        for (batch, out) in self.batches.iter_mut().zip(&routing.outputs) {
            if batch.is_empty() {
                continue;
            }
            let batch = std::mem::take(batch);
            let n = batch.len() as u64;
            tokio::select! {
                _ = out.send_with(batch, receipt.cloned()) => {}
                _ = cut.cancelled() => out.count_undelivered(n),
            }
        }
    }

    /// [`Dispatcher::flush_or_cut`] when `wait`, else [`Dispatcher::flush_nowait`].
    pub async fn flush(&mut self, wait: bool, cut: &tokio_util::sync::CancellationToken) {
        if wait {
            self.flush_or_cut(cut).await;
        } else {
            self.flush_nowait();
        }
    }

    /// Hands pending batches to the outputs without ever waiting: what does not fit is dropped
    /// and counted by the output (UDP listeners must keep draining their socket).
    pub fn flush_nowait(&mut self) {
        self.publish_counts();
        let Some(routing) = self.routing.take() else {
            return;
        };
        self.flush_alerts(&routing);
        for (batch, out) in self.batches.iter_mut().zip(&routing.outputs) {
            if !batch.is_empty() {
                out.try_send(std::mem::take(batch));
            }
        }
    }
}

/// True for a datagram that holds nothing but line ends and NULs (hostile-inputs B07/I02).
pub(crate) fn is_blank(frame: &[u8]) -> bool {
    frame.iter().all(|&b| matches!(b, b'\n' | b'\r' | 0))
}

/// A bound datagram socket of either family.
pub enum DatagramSocket {
    /// UDP.
    Udp(tokio::net::UdpSocket),
    /// A unix datagram socket (/dev/log).
    Unix(tokio::net::UnixDatagram),
}

impl DatagramSocket {
    async fn readable(&self) -> std::io::Result<()> {
        match self {
            DatagramSocket::Udp(s) => s.readable().await,
            DatagramSocket::Unix(s) => s.readable().await,
        }
    }

    /// Receives what is waiting (several datagrams per call on UDP) into `scratch`, slot `i` of
    /// `slot_bytes` holding datagram `got[i]`; `WouldBlock` when nothing is.
    fn recv_batch(
        &self,
        scratch: &mut [u8],
        slot_bytes: usize,
        got: &mut Vec<(usize, Option<SocketAddr>)>,
    ) -> std::io::Result<()> {
        match self {
            DatagramSocket::Udp(s) => udp::recv_batch(s, scratch, slot_bytes, got),
            DatagramSocket::Unix(s) => {
                let (n, _) = s.try_recv_from(&mut scratch[..slot_bytes])?;
                got.clear();
                got.push((n, None));
                Ok(())
            }
        }
    }

    /// Datagrams one [`recv_batch`](Self::recv_batch) may return, so the slots `scratch` needs.
    fn slots(&self) -> usize {
        match self {
            DatagramSocket::Udp(_) => udp::DATAGRAMS_PER_CALL,
            DatagramSocket::Unix(_) => 1,
        }
    }
}

/// Datagrams read per wake-up before the batch is handed on.
const DATAGRAMS_PER_WAKE: usize = 256;
/// Size of the shared buffer datagrams are copied into (events slice it without copying again).
const DATAGRAM_CHUNK_BYTES: usize = 1 << 20;

/// Reads datagrams, one message each (RFC 5426), until `shutdown`; then drains what the kernel
/// still holds and returns. UDP never waits on an output: a full queue drops and counts. A unix
/// socket waits for room in `block` outputs (until `hard_stop`), as syslogd always has: its
/// senders then wait in send(2) once the socket's queue is full, and nothing is lost.
///
/// `drop_counted` are the UDP sockets (this one and those sharing its port) whose kernel drop
/// counts this task sums into the listener's `kernel_drops`, every [`KERNEL_DROPS_INTERVAL`] and
/// at the end; empty for the other tasks of a listener with several sockets, and for unix
/// sockets, which do not drop. The sum is of each socket's whole count, so a socket a changed
/// listener takes over on reload is not counted twice.
pub async fn run_datagram(
    socket: DatagramSocket,
    settings: DatagramSettings,
    pipeline: Arc<Pipeline>,
    shutdown: tokio_util::sync::CancellationToken,
    hard_stop: tokio_util::sync::CancellationToken,
    drop_counted: Vec<std::os::fd::OwnedFd>,
) {
    let flow_control = matches!(socket, DatagramSocket::Unix(_));
    let name = settings.name.clone();
    let mut dispatcher = Dispatcher::new(pipeline, name.clone(), settings.timezone);
    let m = dispatcher.metrics().clone();
    let mut kernel_drops_tick = tokio::time::interval(KERNEL_DROPS_INTERVAL);
    // One byte more than the maximum per slot, so a longer datagram is seen as longer and
    // flagged. Pages of slots no datagram reached are never touched, so cost no memory.
    let mut scratch = vec![0u8; (settings.max_message_size + 1) * socket.slots()];
    let mut chunk = bytes::BytesMut::with_capacity(DATAGRAM_CHUNK_BYTES);
    let mut reader = DatagramReader {
        socket: &socket,
        settings: &settings,
        limiter: settings.rate_limit.as_deref(),
        got: Vec::with_capacity(udp::DATAGRAMS_PER_CALL),
        retry: Backoff::new(READ_RETRY_MIN, READ_RETRY_MAX),
        pause: None,
    };
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = kernel_drops_tick.tick(), if !drop_counted.is_empty() => {
                count_kernel_drops(&drop_counted, &m);
                continue;
            }
            r = socket.readable() => if let Err(e) = r {
                tracing::error!(listener = %name, error = %e, "socket failed; listener stops");
                return;
            },
        }
        reader.read(&mut scratch, &mut chunk, &mut dispatcher);
        dispatcher.flush(flow_control, &hard_stop).await;
        // A failed read leaves the socket readable: without a pause it would fail again at once.
        if let Some(delay) = reader.pause.take() {
            backoff::pause(delay, &shutdown).await;
        }
    }
    // Shutdown: what the kernel already accepted is read, not lost.
    while reader.read(&mut scratch, &mut chunk, &mut dispatcher) > 0 {
        dispatcher.flush(flow_control, &hard_stop).await;
    }
    dispatcher.flush(flow_control, &hard_stop).await;
    // The last word: read + dropped is then what was sent to the sockets.
    count_kernel_drops(&drop_counted, &m);
}

/// Sets the listener's `kernel_drops` to the sum of its UDP sockets' kernel drop counts.
fn count_kernel_drops(sockets: &[std::os::fd::OwnedFd], m: &ListenerMetrics) {
    if sockets.is_empty() {
        return;
    }
    let mut total = 0u64;
    for s in sockets {
        match crate::sys::net::socket_drops(std::os::fd::AsFd::as_fd(s)) {
            Ok(n) => total += u64::from(n),
            Err(e) => {
                tracing::debug!(error = %e, "no kernel drop count for a socket");
                return;
            }
        }
    }
    m.kernel_drops
        .store(total, std::sync::atomic::Ordering::Relaxed);
}

/// Settings of one datagram listener.
#[derive(Debug, Clone)]
pub struct DatagramSettings {
    /// Listener name.
    pub name: Arc<str>,
    /// Longer datagrams are cut and flagged.
    pub max_message_size: usize,
    /// Only these sender networks are accepted; `None` accepts all.
    pub allowed_sources: Option<Vec<ipnet::IpNet>>,
    /// The zone of RFC 3164 stamps without an offset.
    pub timezone: Zone,
    /// Per-source limit (per listener on unix sockets); `None` does not limit. Shared by the
    /// tasks of a listener with several sockets: a sender whose datagrams come from several
    /// ports, and so land on several sockets, still has one budget.
    pub rate_limit: Option<Arc<ratelimit::SourceLimiter>>,
}

/// What one datagram listener reads with.
struct DatagramReader<'a> {
    socket: &'a DatagramSocket,
    settings: &'a DatagramSettings,
    limiter: Option<&'a ratelimit::SourceLimiter>,
    /// Length and sender of each datagram of the last receive call.
    got: Vec<(usize, Option<SocketAddr>)>,
    /// Paces receive calls that keep failing.
    retry: Backoff,
    /// Set by a failed receive: how long to wait before reading again.
    pause: Option<std::time::Duration>,
}

/// Wait after a failed receive, doubling while receives keep failing: short, since the kernel
/// keeps queueing datagrams meanwhile and a long wait could overflow its buffer.
const READ_RETRY_MIN: std::time::Duration = std::time::Duration::from_millis(10);
/// Longest wait between receives while they fail.
const READ_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// How often the kernel's drop counter is read.
const KERNEL_DROPS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

impl DatagramReader<'_> {
    /// Reads at least [`DATAGRAMS_PER_WAKE`] datagrams (when that many are waiting) without
    /// waiting; returns how many.
    fn read(
        &mut self,
        scratch: &mut [u8],
        chunk: &mut bytes::BytesMut,
        dispatcher: &mut Dispatcher,
    ) -> usize {
        let slot_bytes = self.settings.max_message_size + 1;
        let now = Utc::now();
        let m = dispatcher.metrics().clone();
        let mut count = 0;
        while count < DATAGRAMS_PER_WAKE {
            match self.socket.recv_batch(scratch, slot_bytes, &mut self.got) {
                Ok(()) => {
                    self.retry.succeed();
                    for (i, &(n, source)) in self.got.iter().enumerate() {
                        let data = &scratch[i * slot_bytes..][..n.min(slot_bytes)];
                        self.accept(data, n, source, now, chunk, dispatcher, &m);
                    }
                    count += self.got.len();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return count,
                Err(e) => {
                    metrics::add(&m.read_errors, 1);
                    let failure = self.retry.fail();
                    if let Some(suppressed) = failure.log {
                        tracing::warn!(listener = %self.settings.name, error = %e, suppressed,
                            retry_in_ms = failure.delay.as_millis() as u64, "datagram read failed");
                    }
                    self.pause = Some(failure.delay);
                    return count;
                }
            }
        }
        count
    }

    /// Filters one datagram of `n` bytes (`data` is what of it was received) and dispatches it.
    #[allow(clippy::too_many_arguments)]
    fn accept(
        &self,
        data: &[u8],
        n: usize,
        source: Option<SocketAddr>,
        now: DateTime<Utc>,
        chunk: &mut bytes::BytesMut,
        dispatcher: &mut Dispatcher,
        m: &ListenerMetrics,
    ) {
        metrics::add(&m.bytes, n as u64);
        if let (Some(nets), Some(addr)) = (&self.settings.allowed_sources, source)
            && !crate::route::in_networks(nets, addr.ip())
        {
            metrics::add(&m.disallowed, 1);
            return;
        }
        if is_blank(data) {
            metrics::add(&m.empty_frames, 1);
            return;
        }
        if let Some(limiter) = self.limiter
            && !limiter.admit(source.map(|a| a.ip()))
        {
            return;
        }
        let max_message_size = self.settings.max_message_size;
        let truncated = n > max_message_size;
        let keep = &data[..data.len().min(max_message_size)];
        if chunk.capacity() - chunk.len() < keep.len() {
            *chunk = bytes::BytesMut::with_capacity(DATAGRAM_CHUNK_BYTES.max(keep.len()));
        }
        chunk.extend_from_slice(keep);
        let frame = chunk.split().freeze();
        dispatcher.push(frame, truncated, source, now);
    }
}
