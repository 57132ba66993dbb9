//! The stream server behind the listeners `tcp` (and `tls`, a handshake first, and `unix_stream`, from local
//! processes): RFC 6587 framing detected per frame, a connection cap, idle and
//! frame-completion deadlines, and back-pressure (a connection stops reading while an output it
//! feeds is full under `block`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::BytesMut;
use chrono::Utc;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::backoff::{self, Backoff};
use crate::framing::{FrameError, Framer, FramerOptions};
use crate::listen::ratelimit::{Bucket, SourceLimiter};
use crate::listen::tls::TlsServer;
use crate::listen::{Dispatcher, Pipeline};
use crate::metrics::{self, ListenerMetrics};

/// Pending connections the kernel may queue before accept.
const LISTEN_BACKLOG: i32 = 1024;
/// Wait after a failed accept (no descriptor left), doubling while it keeps failing: short, so
/// connections are taken again soon after descriptors free up.
pub const ACCEPT_RETRY_MIN: Duration = Duration::from_millis(50);
/// Longest wait between accept attempts while they fail.
pub const ACCEPT_RETRY_MAX: Duration = Duration::from_secs(1);
/// Bytes asked of each read once a connection is busy; frames are sliced out of this buffer
/// without copying.
pub(super) const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Bytes asked of a connection's first read. The chunk doubles after each read that fills it, up
/// to [`READ_CHUNK_BYTES`], so an idle or quiet connection holds a few KiB, not 64 (mimalloc
/// commits what it hands out: 1,000 idle connections cost 74 KiB each with 64 KiB buffers).
pub(super) const INITIAL_READ_CHUNK_BYTES: usize = 2 * 1024;
/// Pending events (summed over the outputs they go to) past which a connection hands them over
/// even while more data is waiting to be read.
const HANDOVER_EVENTS: usize = 1024;

/// Binds a non-blocking TCP listening socket with SO_REUSEADDR (restarts do not wait out
/// TIME_WAIT).
pub fn bind(address: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .context("creating TCP socket")?;
    socket.set_reuse_address(true)?;
    if address.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    socket
        .bind(&address.into())
        .with_context(|| format!("binding TCP {address}"))?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Settings of one TCP listener.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Listener name.
    pub name: Arc<str>,
    /// Longer messages are cut and flagged.
    pub max_message_size: usize,
    /// Connection cap.
    pub max_connections: usize,
    /// Close a connection silent this long.
    pub idle_timeout: Option<Duration>,
    /// Close a connection whose started frame does not complete this long.
    pub frame_timeout: Option<Duration>,
    /// Also end LF-framed messages at NUL.
    pub nul_trailer: bool,
    /// Only these sender networks are accepted; `None` accepts all.
    pub allowed_sources: Option<Vec<ipnet::IpNet>>,
    /// For a `tls` listener: the handshake each connection completes first.
    pub tls: Option<TlsServer>,
    /// The zone of RFC 3164 stamps without an offset.
    pub timezone: crate::parse::Zone,
    /// Per-source buckets, shared by the connections of one address; `None` does not limit.
    pub rate_limit: Option<Arc<SourceLimiter>>,
    /// What is spoken on each connection.
    pub protocol: Speech,
}

/// What a stream listener's connections speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speech {
    /// Syslog frames, RFC 6587 framing detected per frame (`tcp`, `tls`, `unix_stream`).
    Syslog,
    /// RELP sessions, each message acknowledged ([`super::relp`]).
    Relp,
}

/// A listening stream socket: TCP (`tcp`, `tls`) or unix (`unix_stream`).
pub enum StreamListener {
    /// TCP.
    Tcp(TcpListener),
    /// A unix stream socket.
    Unix(UnixListener),
}

/// An accepted connection.
enum Accepted {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream),
}

impl Accepted {
    fn peer(&self) -> Peer {
        match self {
            Accepted::Tcp(_, a) => Peer(Some(*a)),
            Accepted::Unix(_) => Peer(None),
        }
    }
}

/// The listening socket once stopping: accepted from without waiting.
enum StdListener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl StreamListener {
    async fn accept(&self) -> std::io::Result<Accepted> {
        match self {
            StreamListener::Tcp(l) => l.accept().await.map(|(s, a)| Accepted::Tcp(s, a)),
            StreamListener::Unix(l) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
        }
    }

    fn into_std(self) -> std::io::Result<StdListener> {
        let l = match self {
            StreamListener::Tcp(l) => StdListener::Tcp(l.into_std()?),
            StreamListener::Unix(l) => StdListener::Unix(l.into_std()?),
        };
        match &l {
            StdListener::Tcp(l) => l.set_nonblocking(true)?,
            StdListener::Unix(l) => l.set_nonblocking(true)?,
        }
        Ok(l)
    }
}

impl StdListener {
    fn accept(&self) -> std::io::Result<Accepted> {
        match self {
            StdListener::Tcp(l) => {
                let (s, a) = l.accept()?;
                s.set_nonblocking(true)?;
                Ok(Accepted::Tcp(TcpStream::from_std(s)?, a))
            }
            StdListener::Unix(l) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(true)?;
                Ok(Accepted::Unix(UnixStream::from_std(s)?))
            }
        }
    }
}

/// Who is at the other end: an IP sender, or a local process on a unix socket.
#[derive(Debug, Clone, Copy)]
pub(super) struct Peer(pub(super) Option<SocketAddr>);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("local"),
        }
    }
}

/// A stream listener task: `tcp`, `tls` or `unix_stream`.
pub struct StreamServer {
    /// The bound socket.
    pub listener: StreamListener,
    /// Settings.
    pub settings: StreamSettings,
    /// Shared routing and outputs.
    pub pipeline: Arc<Pipeline>,
    /// Stop accepting; connections keep reading until their peer closes.
    pub shutdown: CancellationToken,
    /// Cut every connection now (end of `shutdown_timeout`).
    pub hard_stop: CancellationToken,
}

impl StreamServer {
    /// Accepts until `shutdown`, then waits for its connections to finish.
    pub async fn run(self) {
        let metrics = self.pipeline.metrics.listener(&self.settings.name);
        let slots = Arc::new(Semaphore::new(self.settings.max_connections));
        let tracker = TaskTracker::new();
        let mut reject_log = metrics::LogLimiter::new(Duration::from_secs(10));
        let mut accept_retry = Backoff::new(ACCEPT_RETRY_MIN, ACCEPT_RETRY_MAX);
        // Shared by this listener's connections, so a flood of bad connections logs rarely
        // (hostile-inputs J04); the counters still count every one.
        let fault_log = Arc::new(std::sync::Mutex::new(metrics::LogLimiter::new(
            Duration::from_secs(10),
        )));
        let mut live = Some(self.listener);
        let mut backlog: Option<StdListener> = None;
        loop {
            let accepted = match (&backlog, &live) {
                // Stopping: connections the kernel completed before the stop are served, not left
                // unread in the accept queue (their senders believe the data was sent).
                (Some(std_listener), _) => match std_listener.accept() {
                    Ok(a) => Ok(a),
                    Err(_) => break,
                },
                (None, Some(listener)) => {
                    let accepted = tokio::select! {
                        biased;
                        _ = self.shutdown.cancelled() => None,
                        r = listener.accept() => Some(r),
                    };
                    match accepted {
                        Some(r) => r,
                        None => match live.take().map(StreamListener::into_std) {
                            Some(Ok(l)) => {
                                backlog = Some(l);
                                continue;
                            }
                            _ => break,
                        },
                    }
                }
                (None, None) => break,
            };
            let accepted = match accepted {
                Ok(x) => {
                    accept_retry.succeed();
                    x
                }
                Err(e) => {
                    // EMFILE and friends leave the connection queued, so accept fails again at
                    // once: wait instead of spinning, and log a line per interval, not per try.
                    let failure = accept_retry.fail();
                    if let Some(suppressed) = failure.log {
                        tracing::warn!(listener = %self.settings.name, error = %e, suppressed,
                            retry_in_ms = failure.delay.as_millis() as u64, "accept failed");
                    }
                    backoff::pause(failure.delay, &self.shutdown).await;
                    continue;
                }
            };
            let peer = accepted.peer();
            if let (Some(nets), Some(addr)) = (&self.settings.allowed_sources, peer.0)
                && !crate::route::in_networks(nets, addr.ip())
            {
                metrics::add(&metrics.disallowed, 1);
                if let Some(suppressed) = reject_log.allow() {
                    tracing::warn!(listener = %self.settings.name, %peer, suppressed, "connection refused: sender not in allowed_sources");
                }
                continue;
            }
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                metrics::add(&metrics.sessions_rejected, 1);
                if let Some(suppressed) = reject_log.allow() {
                    tracing::warn!(listener = %self.settings.name, %peer, suppressed,
                        max_connections = self.settings.max_connections, "connection refused: max_connections reached");
                }
                drop(accepted);
                continue;
            };
            metrics::add(&metrics.connections, 1);
            let settings = self.settings.clone();
            let dispatcher = Dispatcher::new(
                self.pipeline.clone(),
                self.settings.name.clone(),
                self.settings.timezone,
            );
            let metrics = metrics.clone();
            let hard_stop = self.hard_stop.clone();
            let stop = self.shutdown.clone();
            let fault_log = fault_log.clone();
            let span = tracing::debug_span!("conn", listener = %self.settings.name, %peer);
            tracker.spawn(
                async move {
                    let tls = settings.tls.clone();
                    let mut conn = Connection {
                        stream: (),
                        peer,
                        settings,
                        dispatcher,
                        metrics: metrics.clone(),
                        hard_stop,
                        stop,
                        fault_log,
                    };
                    match (accepted, tls) {
                        (Accepted::Tcp(stream, addr), Some(tls)) => {
                            // The handshake holds a connection slot, so its timeout matters (C01).
                            let handshake = tls.handshake(stream, addr, &metrics, &conn.fault_log);
                            let shaken = tokio::select! {
                                _ = conn.hard_stop.cancelled() => None,
                                r = handshake => r,
                            };
                            if let Some((stream, identity)) = shaken {
                                conn.dispatcher.set_tls_peer(identity);
                                conn.with(stream).run().await;
                            }
                        }
                        (Accepted::Tcp(stream, _), None) => conn.with(stream).run().await,
                        (Accepted::Unix(stream), _) => conn.with(stream).run().await,
                    }
                    drop(slot);
                    metrics::add(&metrics.closed, 1);
                }
                .instrument(span),
            );
        }
        drop(backlog);
        tracker.close();
        tracker.wait().await;
    }
}

/// One connection's state: shared by the syslog loop here and the RELP loop in
/// [`super::relp`].
pub(super) struct Connection<S> {
    pub(super) stream: S,
    pub(super) peer: Peer,
    pub(super) settings: StreamSettings,
    pub(super) dispatcher: Dispatcher,
    pub(super) metrics: Arc<ListenerMetrics>,
    pub(super) hard_stop: CancellationToken,
    /// The listener is stopping: a RELP session says `serverclose` and ends (its sender resends
    /// what was not answered); a syslog connection reads on until its peer closes.
    pub(super) stop: CancellationToken,
    pub(super) fault_log: Arc<std::sync::Mutex<metrics::LogLimiter>>,
}

impl Connection<()> {
    /// This connection's state around its (TLS-wrapped, TCP or unix) stream.
    fn with<S>(self, stream: S) -> Connection<S> {
        Connection {
            stream,
            peer: self.peer,
            settings: self.settings,
            dispatcher: self.dispatcher,
            metrics: self.metrics,
            hard_stop: self.hard_stop,
            stop: self.stop,
            fault_log: self.fault_log,
        }
    }
}

/// Why a connection ended.
pub(super) enum End {
    Eof,
    Framing(FrameError),
    /// A RELP connection broke the protocol (counted by its reason).
    Relp(super::relp::Fault),
    /// A RELP session ended with `serverclose` because the listener stops.
    Stopped,
    Idle,
    FrameTimeout,
    Cut,
    ReadError(std::io::Error),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    async fn run(mut self) {
        let end = match self.settings.protocol {
            Speech::Syslog => self.serve().await,
            Speech::Relp => super::relp::serve(&mut self).await,
        };
        self.dispatcher.flush_or_cut(&self.hard_stop).await;
        let m = &self.metrics;
        match end {
            End::Eof => tracing::debug!("peer closed"),
            End::Stopped => tracing::debug!("listener stopping: session closed"),
            End::Framing(e) => {
                match e {
                    FrameError::FrameLenInvalid => metrics::add(&m.frame_len_invalid, 1),
                    FrameError::TlsOnPlainPort => metrics::add(&m.tls_on_plain_port, 1),
                }
                let allowed = self.fault_log.lock().ok().and_then(|mut l| l.allow());
                if let Some(suppressed) = allowed {
                    tracing::warn!(peer = %self.peer, reason = %e, suppressed, "closing connection");
                }
            }
            End::Relp(fault) => {
                fault.count(m);
                let allowed = self.fault_log.lock().ok().and_then(|mut l| l.allow());
                if let Some(suppressed) = allowed {
                    tracing::warn!(peer = %self.peer, reason = %fault, suppressed, "closing RELP connection");
                }
            }
            End::Idle => {
                metrics::add(&m.idle_timeouts, 1);
                tracing::debug!("closing idle connection");
            }
            End::FrameTimeout => {
                metrics::add(&m.frame_timeouts, 1);
                let allowed = self.fault_log.lock().ok().and_then(|mut l| l.allow());
                if let Some(suppressed) = allowed {
                    tracing::info!(peer = %self.peer, suppressed, "closing connection: frame not completed within frame_timeout");
                }
            }
            End::Cut => {
                metrics::add(&m.shutdown_cut, 1);
                tracing::info!(peer = %self.peer, "closing connection: shutdown_timeout passed");
            }
            End::ReadError(e) => {
                metrics::add(&m.read_errors, 1);
                tracing::debug!(error = %e, "read failed");
            }
        }
    }

    async fn serve(&mut self) -> End {
        let mut framer = Framer::new(FramerOptions {
            max_message_size: self.settings.max_message_size,
            nul_trailer: self.settings.nul_trailer,
        });
        let mut read_chunk = INITIAL_READ_CHUNK_BYTES;
        let mut buf = BytesMut::with_capacity(read_chunk);
        let mut last_data = Instant::now();
        let mut frame_started: Option<Instant> = None;
        let mut reported = framer.stats().clone();
        // Looked up once: the map is not touched again for this connection.
        let limit = self.settings.rate_limit.clone().map(|l| {
            let bucket = l.bucket(self.peer.0.map(|a| a.ip()));
            (l, bucket)
        });
        loop {
            if buf.capacity() - buf.len() < read_chunk / 4 {
                buf.reserve(read_chunk);
            }
            let room = buf.capacity() - buf.len();
            // While the sender keeps the socket full, read on before handing events over: one
            // hand-over per burst instead of per read, so the output threads are woken far less
            // often (on a collector's many connections that waking was sluice's largest kernel
            // cost, issue 18). What is read and not yet handed over stays below
            // `HANDOVER_EVENTS` plus one read.
            let pending = self.dispatcher.pending();
            let ready = if pending > 0 && pending < HANDOVER_EVENTS {
                tokio::select! {
                    biased;
                    r = self.stream.read_buf(&mut buf) => Some(r),
                    _ = std::future::ready(()) => None,
                }
            } else {
                None
            };
            let read = match ready {
                Some(r) => r,
                None => {
                    if pending > 0 {
                        let held = self.hand_over().await;
                        // Time spent held back by our own outputs is not the sender's delay: it
                        // must not count towards the idle or frame deadlines.
                        last_data += held;
                        frame_started = frame_started.map(|t| t + held);
                    }
                    // While a frame is under way its completion deadline applies (slowloris,
                    // C03); between frames the idle timeout does (C02).
                    let (deadline, frame_deadline) = match (
                        frame_started,
                        self.settings.frame_timeout,
                        self.settings.idle_timeout,
                    ) {
                        (Some(t), Some(ft), _) => (Some(t + ft), true),
                        (_, _, Some(it)) => (Some(last_data + it), false),
                        _ => (None, false),
                    };
                    tokio::select! {
                        _ = self.hard_stop.cancelled() => return End::Cut,
                        r = self.stream.read_buf(&mut buf) => r,
                        _ = sleep_until_opt(deadline) => {
                            return if frame_deadline { End::FrameTimeout } else { End::Idle };
                        }
                    }
                }
            };
            let n = match read {
                Ok(n) => n,
                Err(e) => {
                    // A reset mid-frame: keep what the framer holds, as at EOF (C06, A12).
                    let _ = self.drain(&mut framer, &mut buf, true, &mut reported, limit.as_ref());
                    return End::ReadError(e);
                }
            };
            let eof = n == 0;
            if n == room {
                // The sender has more than we asked for: ask for more next time.
                read_chunk = (read_chunk * 2).min(READ_CHUNK_BYTES);
            }
            metrics::add(&self.metrics.bytes, n as u64);
            last_data = Instant::now();
            let completed =
                match self.drain(&mut framer, &mut buf, eof, &mut reported, limit.as_ref()) {
                    Ok(n) => n,
                    Err(e) => return End::Framing(e),
                };
            // What is pending is handed over by `run` when this returns.
            if eof {
                return End::Eof;
            }
            // The deadline runs from when the frame now pending began: a read that completed a
            // frame and ended inside the next one starts a new frame, so a steady stream whose
            // reads all end mid-frame is never mistaken for a slow one.
            frame_started = match (framer.in_frame(), completed) {
                (false, _) => None,
                (true, 0) => Some(frame_started.unwrap_or(last_data)),
                (true, _) => Some(last_data),
            };
        }
    }

    /// Hands the pending events to the outputs; back-pressure: this waits while a `block`
    /// output is full, and meanwhile the socket is not read, so the sender's TCP window closes.
    /// Returns how long that took.
    async fn hand_over(&mut self) -> std::time::Duration {
        let started = Instant::now();
        self.dispatcher.flush_or_cut(&self.hard_stop).await;
        started.elapsed()
    }

    /// Frames and dispatches everything complete in `buf` (everything at all when `eof`);
    /// returns how many frames that was.
    fn drain(
        &mut self,
        framer: &mut Framer,
        buf: &mut BytesMut,
        eof: bool,
        reported: &mut crate::framing::FramerStats,
        limit: Option<&(Arc<SourceLimiter>, Arc<std::sync::Mutex<Bucket>>)>,
    ) -> Result<usize, FrameError> {
        let now = Utc::now();
        let mut frames = 0;
        let result = loop {
            let next = if eof {
                framer.decode_eof(buf)
            } else {
                framer.decode(buf)
            };
            match next {
                Ok(Some(frame)) => {
                    frames += 1;
                    if frame.incomplete_at_eof {
                        metrics::add(&self.metrics.truncated_at_eof, 1);
                    }
                    if let Some((limiter, bucket)) = limit
                        && !limiter.admit_in(bucket, self.peer.0.map(|a| a.ip()))
                    {
                        continue;
                    }
                    self.dispatcher
                        .push(frame.data, frame.truncated, self.peer.0, now);
                }
                Ok(None) => break Ok(frames),
                Err(e) => break Err(e),
            }
        };
        let stats = framer.stats();
        metrics::add(
            &self.metrics.empty_frames,
            stats.empty_frames - reported.empty_frames,
        );
        metrics::add(
            &self.metrics.nul_terminated,
            stats.nul_terminated - reported.nul_terminated,
        );
        // An oversize frame cut by the peer was dispatched before the cut was known.
        metrics::add(
            &self.metrics.truncated_at_eof,
            stats.oversize_cut_at_eof - reported.oversize_cut_at_eof,
        );
        *reported = stats.clone();
        result
    }
}

pub(super) async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl StreamListener {
    /// A bound TCP socket, registered with the runtime.
    pub fn tcp(listener: std::net::TcpListener) -> anyhow::Result<StreamListener> {
        Ok(StreamListener::Tcp(
            TcpListener::from_std(listener).context("registering TCP socket")?,
        ))
    }

    /// A bound unix stream socket, registered with the runtime.
    pub fn unix(listener: std::os::unix::net::UnixListener) -> anyhow::Result<StreamListener> {
        Ok(StreamListener::Unix(
            UnixListener::from_std(listener).context("registering unix stream socket")?,
        ))
    }
}

/// Starts the stream server of a `tcp`, `tls` or `unix_stream` listener.
pub(super) fn serve(
    listener: StreamListener,
    connections: &crate::listen::settings::ConnectionSettings,
    allowed_sources: Option<Vec<ipnet::IpNet>>,
    tls: Option<TlsServer>,
    protocol: Speech,
    ctx: super::kind::StartContext<'_>,
) -> tokio::task::JoinHandle<()> {
    let limits = &ctx.config.limits;
    let server = StreamServer {
        listener,
        settings: StreamSettings {
            name: ctx.config.name.clone(),
            max_message_size: limits.max_message_size,
            max_connections: connections.max_connections,
            idle_timeout: connections.idle_timeout,
            frame_timeout: connections.frame_timeout,
            nul_trailer: connections.nul_trailer,
            allowed_sources,
            tls,
            timezone: limits.timezone,
            rate_limit: ctx.rate_limiter(),
            protocol,
        },
        pipeline: ctx.pipeline,
        shutdown: ctx.stop,
        hard_stop: ctx.hard_stop,
    };
    tokio::spawn(server.run())
}
