//! Listeners: sockets in, events out. Each listener (and each TCP connection) frames, parses and
//! routes inline through its own [`Dispatcher`], then hands per-output batches to the outputs'
//! queues: no central router task, no extra hop.

pub mod ratelimit;
pub mod tcp;
pub mod tls;
pub mod udp;
pub mod unix;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::event::{Event, TlsPeer};
use crate::metrics::{self, ListenerMetrics, Metrics};
use crate::output::{Batch, OutputHandle};
use crate::parse::{ParseOptions, parse};
use crate::route::RuleTable;

/// What every listener shares: the rule table and the outputs' queues.
pub struct Pipeline {
    /// The ordered rules.
    pub routes: RuleTable,
    /// Output queues, indexed as `Config::outputs` (and so as `Rule::to`).
    pub outputs: Vec<OutputHandle>,
    /// All counters (for `unrouted`).
    pub metrics: Arc<Metrics>,
}

/// Per-task state for turning frames into routed batches: one per UDP/unix listener and one per
/// TCP connection, so nothing on the hot path is shared or locked.
pub struct Dispatcher {
    pipeline: Arc<Pipeline>,
    listener: Arc<str>,
    /// The authenticated peer of a TLS connection, put on every event it sends.
    tls_peer: Option<Arc<TlsPeer>>,
    metrics: Arc<ListenerMetrics>,
    /// One pending batch per output.
    batches: Vec<Batch>,
    route_buf: Vec<usize>,
    /// Counts accumulated since the last flush, added to the shared atomics once per flush.
    received: u64,
    parse_errors: u64,
    truncated: u64,
    unrouted: u64,
}

impl Dispatcher {
    /// A dispatcher for events read by `listener`.
    pub fn new(pipeline: Arc<Pipeline>, listener: Arc<str>) -> Dispatcher {
        let metrics = pipeline.metrics.listener(&listener);
        let batches = pipeline.outputs.iter().map(|_| Vec::new()).collect();
        Dispatcher {
            pipeline,
            listener,
            tls_peer: None,
            metrics,
            batches,
            route_buf: Vec::new(),
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
        let parsed = parse(&frame, &ParseOptions { received_at });
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
            listener: self.listener.clone(),
            tls_peer: self.tls_peer.clone(),
            truncated,
            parsed,
        };
        if !self.pipeline.routes.route(&ev, &mut self.route_buf) {
            self.unrouted += 1;
            return;
        }
        let ev = Arc::new(ev);
        for &o in &self.route_buf {
            if let Some(b) = self.batches.get_mut(o) {
                b.push(ev.clone());
            }
        }
    }

    /// Number of events waiting in pending batches.
    pub fn pending(&self) -> usize {
        self.batches.iter().map(Vec::len).sum()
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
    }

    /// Hands pending batches to the outputs, waiting for room where an output's policy is
    /// `block` (this is what stops a stream listener from reading: back-pressure).
    pub async fn flush(&mut self) {
        self.publish_counts();
        for (i, batch) in self.batches.iter_mut().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let batch = std::mem::take(batch);
            if let Some(out) = self.pipeline.outputs.get(i) {
                out.send(batch).await;
            }
        }
    }

    /// As [`Dispatcher::flush`], but gives up when `cut` fires (the shutdown deadline): what
    /// could not be handed over is counted as undelivered by its output.
    pub async fn flush_or_cut(&mut self, cut: &tokio_util::sync::CancellationToken) {
        self.publish_counts();
        for (i, batch) in self.batches.iter_mut().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let batch = std::mem::take(batch);
            let n = batch.len() as u64;
            if let Some(out) = self.pipeline.outputs.get(i) {
                tokio::select! {
                    _ = out.send(batch) => {}
                    _ = cut.cancelled() => out.count_undelivered(n),
                }
            }
        }
    }

    /// Hands pending batches to the outputs without ever waiting: what does not fit is dropped
    /// and counted by the output (datagram listeners must keep draining their socket).
    pub fn flush_nowait(&mut self) {
        self.publish_counts();
        for (i, batch) in self.batches.iter_mut().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let batch = std::mem::take(batch);
            if let Some(out) = self.pipeline.outputs.get(i) {
                out.try_send(batch);
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

    /// The kernel's count of datagrams dropped on this socket (UDP only; from /proc/net/udp).
    fn kernel_drops(&self) -> Option<u64> {
        match self {
            DatagramSocket::Udp(s) => udp::kernel_drops(s),
            DatagramSocket::Unix(_) => None,
        }
    }

    fn try_recv(&self, buf: &mut [u8]) -> std::io::Result<(usize, Option<SocketAddr>)> {
        match self {
            DatagramSocket::Udp(s) => s.try_recv_from(buf).map(|(n, a)| (n, Some(a))),
            DatagramSocket::Unix(s) => s.try_recv_from(buf).map(|(n, _)| (n, None)),
        }
    }
}

/// Datagrams read per wake-up before the batch is handed on.
const DATAGRAMS_PER_WAKE: usize = 256;
/// Size of the shared buffer datagrams are copied into (events slice it without copying again).
const DATAGRAM_CHUNK_BYTES: usize = 1 << 20;

/// Reads datagrams, one message each (RFC 5426), until `shutdown`; then drains what the kernel
/// still holds and returns. Never waits on an output: a full queue drops and counts.
pub async fn run_datagram(
    socket: DatagramSocket,
    settings: DatagramSettings,
    pipeline: Arc<Pipeline>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let name = settings.name.clone();
    let mut dispatcher = Dispatcher::new(pipeline, name.clone());
    let m = dispatcher.metrics().clone();
    let mut kernel_drops_tick = tokio::time::interval(KERNEL_DROPS_INTERVAL);
    // One byte more than the maximum, so a longer datagram is seen as longer and flagged.
    let mut scratch = vec![0u8; settings.max_message_size + 1];
    let mut chunk = bytes::BytesMut::with_capacity(DATAGRAM_CHUNK_BYTES);
    let mut error_log = metrics::LogLimiter::new(std::time::Duration::from_secs(10));
    let limiter = settings
        .rate_limit
        .map(|l| ratelimit::SourceLimiter::new(l, name.clone(), m.clone()));
    let mut reader = DatagramReader {
        socket: &socket,
        settings: &settings,
        limiter: limiter.as_ref(),
    };
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = kernel_drops_tick.tick() => {
                if let Some(n) = socket.kernel_drops() {
                    m.kernel_drops.store(n, std::sync::atomic::Ordering::Relaxed);
                }
                continue;
            }
            r = socket.readable() => if let Err(e) = r {
                tracing::error!(listener = %name, error = %e, "socket failed; listener stops");
                return;
            },
        }
        reader.read(&mut scratch, &mut chunk, &mut dispatcher, &mut error_log);
        dispatcher.flush_nowait();
    }
    // Shutdown: what the kernel already accepted is read, not lost.
    while reader.read(&mut scratch, &mut chunk, &mut dispatcher, &mut error_log) > 0 {
        dispatcher.flush_nowait();
    }
    dispatcher.flush_nowait();
    if let Some(n) = socket.kernel_drops() {
        m.kernel_drops
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }
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
    /// Per-source limit (per listener on unix sockets); `None` does not limit.
    pub rate_limit: Option<crate::config::RateLimit>,
}

/// What one datagram listener reads with.
struct DatagramReader<'a> {
    socket: &'a DatagramSocket,
    settings: &'a DatagramSettings,
    limiter: Option<&'a ratelimit::SourceLimiter>,
}

/// How often the kernel's drop counter is read.
const KERNEL_DROPS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

impl DatagramReader<'_> {
    /// Reads up to [`DATAGRAMS_PER_WAKE`] datagrams without waiting; returns how many.
    fn read(
        &mut self,
        scratch: &mut [u8],
        chunk: &mut bytes::BytesMut,
        dispatcher: &mut Dispatcher,
        error_log: &mut metrics::LogLimiter,
    ) -> usize {
        let (socket, settings) = (self.socket, self.settings);
        let max_message_size = settings.max_message_size;
        let now = Utc::now();
        let m = dispatcher.metrics().clone();
        for i in 0..DATAGRAMS_PER_WAKE {
            match socket.try_recv(scratch) {
                Ok((n, source)) => {
                    metrics::add(&m.bytes, n as u64);
                    if let (Some(nets), Some(addr)) = (&settings.allowed_sources, source)
                        && !crate::route::in_networks(nets, addr.ip())
                    {
                        metrics::add(&m.disallowed, 1);
                        continue;
                    }
                    let data = &scratch[..n.min(scratch.len())];
                    if is_blank(data) {
                        metrics::add(&m.empty_frames, 1);
                        continue;
                    }
                    if let Some(limiter) = self.limiter
                        && !limiter.admit(source.map(|a| a.ip()))
                    {
                        continue;
                    }
                    let truncated = n > max_message_size;
                    let keep = &data[..data.len().min(max_message_size)];
                    if chunk.capacity() - chunk.len() < keep.len() {
                        *chunk =
                            bytes::BytesMut::with_capacity(DATAGRAM_CHUNK_BYTES.max(keep.len()));
                    }
                    chunk.extend_from_slice(keep);
                    let frame = chunk.split().freeze();
                    dispatcher.push(frame, truncated, source, now);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return i,
                Err(e) => {
                    metrics::add(&m.read_errors, 1);
                    if let Some(suppressed) = error_log.allow() {
                        tracing::warn!(error = %e, suppressed, "datagram read failed");
                    }
                    return i;
                }
            }
        }
        DATAGRAMS_PER_WAKE
    }
}
