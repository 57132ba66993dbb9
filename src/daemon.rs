//! Wiring: [`bind`] every socket (before any runtime or privilege change), then [`run`] the
//! listeners and outputs until the shutdown token fires, and drain.
//!
//! Shutdown order (ARCHITECTURE.md, "Shutdown"): stop accepting; datagram listeners read their sockets empty;
//! open connections are read until their peer closes or `shutdown_timeout` passes; then every
//! output queue closes (its last sender is dropped), drains, flushes and fsyncs.

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ListenerConfig, ListenerKind, OutputConfig, StreamSettings};
use crate::listen::tcp::{StreamListener, TcpServer, TcpSettings};
use crate::listen::tls::TlsServer;
use crate::listen::{self, DatagramSocket, Pipeline, Routing};
use crate::metrics::Metrics;
use crate::output::{self, OutputHandle, ReopenFiles};
use crate::route::RuleTable;
use crate::systemd::{Activation, InheritedSocket, Notifier};

/// A listening socket, bound and not yet served.
#[derive(Debug)]
pub enum BoundSocket {
    /// UDP: one socket, or several sharing the port (`sockets`), never none.
    Udp(Vec<std::net::UdpSocket>),
    /// TCP.
    Tcp(std::net::TcpListener),
    /// Unix datagram.
    Unix(UnixDatagram),
    /// Unix stream, listening.
    UnixStream(std::os::unix::net::UnixListener),
    /// The kernel log (/dev/kmsg), opened.
    Kmsg(std::fs::File),
}

impl BoundSocket {
    /// Another descriptor for the same socket (dup(2)).
    fn try_clone(&self) -> std::io::Result<BoundSocket> {
        Ok(match self {
            BoundSocket::Udp(s) => BoundSocket::Udp(
                s.iter()
                    .map(std::net::UdpSocket::try_clone)
                    .collect::<std::io::Result<_>>()?,
            ),
            BoundSocket::Tcp(s) => BoundSocket::Tcp(s.try_clone()?),
            BoundSocket::Unix(s) => BoundSocket::Unix(s.try_clone()?),
            BoundSocket::UnixStream(s) => BoundSocket::UnixStream(s.try_clone()?),
            // Shares the read position: a listener taking over goes on where this one was.
            BoundSocket::Kmsg(f) => BoundSocket::Kmsg(f.try_clone()?),
        })
    }
}

/// One listener's config with its socket.
#[derive(Debug)]
pub struct BoundListener {
    /// Its configuration.
    pub config: ListenerConfig,
    /// Its socket.
    pub socket: BoundSocket,
}

/// Every socket of a configuration, bound, with the counters the daemon will keep.
#[derive(Debug)]
pub struct Bound {
    /// The listeners in config order.
    pub listeners: Vec<BoundListener>,
    metrics: Arc<Metrics>,
    control: Control,
    reload_rx: tokio::sync::mpsc::UnboundedReceiver<ReloadRequest>,
    notifier: Option<Notifier>,
    watchdog_interval: Option<std::time::Duration>,
    metrics_listener: Option<std::net::TcpListener>,
}

impl Bound {
    /// The real local address of an IP listener (after binding port 0, the port chosen).
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        let l = self.listeners.iter().find(|l| &*l.config.name == name)?;
        match &l.socket {
            BoundSocket::Udp(s) => s.first()?.local_addr().ok(),
            BoundSocket::Tcp(s) => s.local_addr().ok(),
            BoundSocket::Unix(_) | BoundSocket::UnixStream(_) | BoundSocket::Kmsg(_) => None,
        }
    }

    /// What main signals on SIGHUP.
    pub fn hangup(&self) -> Hangup {
        self.control.hangup.clone()
    }

    /// The handle that reloads the configuration of the daemon [`run`] starts.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// The counters [`run`] will update.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }
}

/// Binds every listener's socket. No runtime is needed, so this can run before privileges are
/// dropped.
pub fn bind(config: &Config) -> anyhow::Result<Bound> {
    bind_activated(config, Activation::default())
}

/// [`bind`], taking sockets systemd passed (socket activation) where they match a listener: by
/// local address or path and socket type, else by `FileDescriptorName=` equal to the listener's
/// name. Listeners without one are bound as usual; inherited sockets no listener wants are
/// closed with a warning.
pub fn bind_activated(config: &Config, activation: Activation) -> anyhow::Result<Bound> {
    let mut inherited = activation.sockets;
    let mut listeners = Vec::new();
    for l in &config.listeners {
        match take_inherited(&mut inherited, l)? {
            Some(socket) => {
                tracing::info!(listener = %l.name, "using a socket passed by systemd");
                listeners.push(BoundListener {
                    config: l.clone(),
                    socket,
                });
            }
            None => listeners.push(bind_listener(l)?),
        }
    }
    for s in inherited {
        tracing::warn!(
            name = s.name.as_deref().unwrap_or("-"),
            address = %describe(&s.socket),
            "systemd passed a socket no listener is configured for; closing it"
        );
    }
    let metrics = Arc::new(Metrics::new(
        config.listeners.iter().map(|l| &l.name),
        config.outputs.iter().map(|o| &o.name),
    ));
    let (reload_tx, reload_rx) = tokio::sync::mpsc::unbounded_channel();
    Ok(Bound {
        listeners,
        metrics,
        control: Control {
            hangup: Hangup {
                watch: Arc::new(tokio::sync::watch::channel(0).0),
                files: ReopenFiles::default(),
            },
            reload: reload_tx,
        },
        reload_rx,
        notifier: activation.notifier,
        watchdog_interval: activation.watchdog_interval,
        metrics_listener: config
            .daemon
            .metrics_address
            .map(|a| listen::tcp::bind(a).with_context(|| format!("metrics_address {a}")))
            .transpose()?,
    })
}

/// Binds one listener's socket.
fn bind_listener(l: &ListenerConfig) -> anyhow::Result<BoundListener> {
    let socket = match &l.kind {
        ListenerKind::Udp {
            address,
            receive_buffer_bytes,
            sockets,
        } => BoundSocket::Udp(listen::udp::bind(
            *address,
            *receive_buffer_bytes,
            *sockets,
        )?),
        ListenerKind::Tcp(stream) | ListenerKind::Tls { stream, .. } => {
            BoundSocket::Tcp(listen::tcp::bind(stream.address)?)
        }
        ListenerKind::Unix { path, mode } => BoundSocket::Unix(listen::unix::bind(path, *mode)?),
        ListenerKind::UnixStream { path, mode, .. } => {
            BoundSocket::UnixStream(listen::unix::bind_stream(path, *mode)?)
        }
        ListenerKind::Kmsg {
            path,
            read_existing,
        } => BoundSocket::Kmsg(listen::kmsg::open(path, *read_existing)?),
    };
    Ok(BoundListener {
        config: l.clone(),
        socket,
    })
}

/// Removes and converts the inherited socket meant for `l`, if any: one of the listener's socket
/// type with its address, else with its name. A match of the wrong address family (a unix
/// socket named after a UDP listener) is an error: the unit and the config disagree.
fn take_inherited(
    inherited: &mut Vec<InheritedSocket>,
    l: &ListenerConfig,
) -> anyhow::Result<Option<BoundSocket>> {
    let want_type = match l.kind {
        ListenerKind::Tcp(_) | ListenerKind::Tls { .. } | ListenerKind::UnixStream { .. } => {
            socket2::Type::STREAM
        }
        ListenerKind::Udp { .. } | ListenerKind::Unix { .. } => socket2::Type::DGRAM,
        // Not a socket: systemd cannot pass it.
        ListenerKind::Kmsg { .. } => return Ok(None),
    };
    let same_addr = |s: &InheritedSocket| {
        s.socket.r#type().ok() == Some(want_type)
            && s.socket.local_addr().is_ok_and(|a| match &l.kind {
                ListenerKind::Udp { address, .. } => serves(&s.socket, &a, *address),
                ListenerKind::Tcp(st) | ListenerKind::Tls { stream: st, .. } => {
                    serves(&s.socket, &a, st.address)
                }
                ListenerKind::Unix { path, .. } | ListenerKind::UnixStream { path, .. } => {
                    a.as_pathname() == Some(path.as_path())
                }
                ListenerKind::Kmsg { .. } => false,
            })
    };
    // By address first: FileDescriptorName= names every socket of a unit alike.
    let Some(i) = inherited.iter().position(same_addr).or_else(|| {
        inherited.iter().position(|s| {
            s.name.as_deref() == Some(&*l.name) && s.socket.r#type().ok() == Some(want_type)
        })
    }) else {
        return Ok(None);
    };
    let s = inherited.remove(i).socket;
    let local = s
        .local_addr()
        .context("getsockname on an inherited socket")?;
    s.set_nonblocking(true)
        .context("making an inherited socket non-blocking")?;
    Ok(Some(match l.kind {
        ListenerKind::Udp {
            sockets,
            receive_buffer_bytes,
            ..
        } if local.as_socket().is_some() => {
            let mut bound = vec![s.into()];
            grow_udp(&mut bound, sockets, receive_buffer_bytes, &l.name);
            BoundSocket::Udp(bound)
        }
        ListenerKind::Tcp(_) | ListenerKind::Tls { .. } if local.as_socket().is_some() => {
            BoundSocket::Tcp(s.into())
        }
        ListenerKind::Unix { .. } if local.is_unix() => BoundSocket::Unix(s.into()),
        ListenerKind::UnixStream { .. } if local.is_unix() => BoundSocket::UnixStream(s.into()),
        _ => anyhow::bail!(
            "listener {}: systemd passed a socket of another address family under its name ({})",
            l.name,
            describe(&s)
        ),
    }))
}

/// Whether a socket bound to `bound` takes what a listener configured for `want` expects: the
/// same address, or a dual-stack `[::]:port` (systemd's `ListenStream=514`) for `0.0.0.0:port`.
fn serves(s: &socket2::Socket, bound: &socket2::SockAddr, want: SocketAddr) -> bool {
    let Some(bound) = bound.as_socket() else {
        return false;
    };
    bound == want
        || (want.ip() == std::net::Ipv4Addr::UNSPECIFIED
            && bound.ip() == std::net::Ipv6Addr::UNSPECIFIED
            && bound.port() == want.port()
            && s.only_v6().is_ok_and(|v6| !v6))
}

/// An inherited socket's local address, for messages.
fn describe(s: &socket2::Socket) -> String {
    match s.local_addr() {
        Ok(a) => match (a.as_socket(), a.as_pathname()) {
            (Some(ip), _) => ip.to_string(),
            (None, Some(p)) => p.display().to_string(),
            _ => "an unnamed socket".to_string(),
        },
        Err(e) => format!("unknown address ({e})"),
    }
}

/// Adds UDP sockets beside `bound` until there are `want`; where that fails (the first socket
/// lacks SO_REUSEPORT, or the port cannot be bound any more), says so and serves with those
/// there are.
fn grow_udp(
    bound: &mut Vec<std::net::UdpSocket>,
    want: usize,
    receive_buffer_bytes: usize,
    listener: &str,
) {
    if let Err(e) = listen::udp::add_sockets(bound, want, receive_buffer_bytes) {
        tracing::warn!(
            error = format!("{e:#}"),
            listener,
            sockets = want,
            serving_with = bound.len(),
            "could not bind every UDP socket asked for; serving with those bound (a socket systemd passes needs ReusePort=yes; after dropping privileges, a port below 1024 cannot be bound, and the kernel shares a port only among sockets of one user)"
        );
    }
}

/// `l`, changed, on the socket its predecessor at the same address had: a duplicate of it, with
/// the receive buffer size and the unix socket's mode applied anew. Where `sockets` shrank, the
/// UDP sockets are kept (closing one would lose what it holds); where it grew, the reload adds
/// them once it can no longer fail.
fn take_over(socket: &BoundSocket, l: &ListenerConfig) -> anyhow::Result<BoundListener> {
    let mut socket = socket
        .try_clone()
        .context("duplicating the listening socket")?;
    match (&mut socket, &l.kind) {
        (
            BoundSocket::Udp(held),
            ListenerKind::Udp {
                receive_buffer_bytes,
                sockets,
                ..
            },
        ) => {
            for s in held.iter() {
                if let Err(e) =
                    socket2::SockRef::from(s).set_recv_buffer_size(*receive_buffer_bytes)
                {
                    tracing::warn!(listener = %l.name, error = %e, "could not set SO_RCVBUF");
                }
            }
            if *sockets < held.len() {
                tracing::warn!(listener = %l.name, sockets, serving_with = held.len(),
                    "fewer sockets take effect at restart: closing one now would lose the datagrams it holds");
            }
        }
        (BoundSocket::Unix(_), ListenerKind::Unix { path, mode })
        | (BoundSocket::UnixStream(_), ListenerKind::UnixStream { path, mode, .. }) => {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))
                .with_context(|| format!("setting mode {mode:o} on {}", path.display()))?;
        }
        _ => {}
    }
    Ok(BoundListener {
        config: l.clone(),
        socket,
    })
}

/// A request to replace the running configuration, with where to say how it went.
#[derive(Debug)]
struct ReloadRequest {
    config: Config,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// Steers a running daemon: SIGHUP's effects and configuration reloads.
#[derive(Debug, Clone)]
pub struct Control {
    hangup: Hangup,
    reload: tokio::sync::mpsc::UnboundedSender<ReloadRequest>,
}

impl Control {
    /// SIGHUP's file reopening and certificate reloading.
    pub fn hangup(&self) -> &Hangup {
        &self.hangup
    }

    /// Replaces the running configuration with `config` (already validated). Unchanged
    /// listeners keep their sockets and connections, unchanged outputs their queues and files;
    /// routes switch between two batches. On error nothing changed and the reason is returned.
    pub async fn reload(&self, config: Config) -> Result<(), String> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.reload
            .send(ReloadRequest { config, done })
            .map_err(|_| "sluice is not running".to_string())?;
        result
            .await
            .map_err(|_| "sluice stopped before the reload finished".to_string())?
    }

    /// [`Control::reload`] for callers outside the runtime.
    pub fn reload_blocking(&self, config: Config) -> Result<(), String> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.reload
            .send(ReloadRequest { config, done })
            .map_err(|_| "sluice is not running".to_string())?;
        result
            .blocking_recv()
            .map_err(|_| "sluice stopped before the reload finished".to_string())?
    }
}

/// SIGHUP, fanned out: file outputs reopen their files (after logrotate moved them), TLS
/// listeners reload their certificates.
#[derive(Debug, Clone)]
pub struct Hangup {
    watch: Arc<tokio::sync::watch::Sender<u64>>,
    files: ReopenFiles,
}

impl Hangup {
    /// Tells every subscriber that SIGHUP arrived.
    pub fn signal(&self) {
        self.files.request();
        self.watch.send_modify(|n| *n += 1);
    }

    /// A receiver that sees each later [`Hangup::signal`].
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.watch.subscribe()
    }
}

/// Serves `bound` under `config` until `shutdown` is cancelled, then drains and returns.
/// Meanwhile it applies configuration reloads sent through [`Bound::control`].
pub async fn run(config: Config, bound: Bound, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Bound {
        listeners,
        metrics,
        control,
        mut reload_rx,
        notifier,
        watchdog_interval,
        metrics_listener,
    } = bound;
    let mut d = Daemon {
        pipeline: Arc::new(Pipeline::new(
            Routing {
                routes: RuleTable::new(Vec::new()),
                outputs: Vec::new(),
                route_metrics: Vec::new(),
            },
            metrics.clone(),
        )),
        metrics: metrics.clone(),
        hangup: control.hangup,
        shutdown: shutdown.clone(),
        // Cut open connections and stop output retries once shutdown_timeout has passed.
        hard_stop: CancellationToken::new(),
        outputs: Vec::new(),
        threads: Vec::new(),
        listeners: Vec::new(),
        stopping: Vec::new(),
        config,
    };
    let mut outputs = Vec::new();
    for o in d.config.outputs.clone() {
        let handle = d.start_output(&o).map_err(|e| anyhow::anyhow!(e))?;
        outputs.push((o, handle));
    }
    d.install(outputs);
    for l in listeners {
        d.spawn_listener(l)?;
    }
    let exporter = match metrics_listener {
        Some(l) => {
            log_listening("metrics", "prometheus", l.local_addr());
            let l = tokio::net::TcpListener::from_std(l).context("registering metrics socket")?;
            Some(tokio::spawn(crate::exporter::serve(
                l,
                metrics.clone(),
                shutdown.clone(),
            )))
        }
        None => None,
    };
    // Every socket is bound and every output (with its disk queue) started: systemd may now
    // start the units ordered after this one.
    let notifier = notifier.map(Arc::new);
    if let Some(n) = &notifier {
        n.notify("READY=1");
        if let Some(interval) = watchdog_interval {
            tokio::spawn(watchdog(n.clone(), interval, shutdown.clone()));
        }
    }
    tracing::info!(
        config = %d.config.origin,
        listeners = d.config.listeners.len(),
        outputs = d.config.outputs.len(),
        routes = d.config.routes.len(),
        "sluice started"
    );

    let stats = {
        let metrics = metrics.clone();
        let interval = d.config.daemon.stats_interval;
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => tracing::info!(counters = %metrics.summary(), "stats"),
                }
            }
        })
    };

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(req) = reload_rx.recv() => {
                if let Some(n) = &notifier {
                    n.notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
                }
                let result = d.reload(req.config).await;
                if let Some(n) = &notifier {
                    n.notify("READY=1");
                }
                match &result {
                    Ok(()) => tracing::info!(config = %d.config.origin, "configuration reloaded"),
                    Err(e) => tracing::error!(error = %e, "configuration reload failed; the running configuration stays"),
                }
                let _ = req.done.send(result);
            }
        }
    }
    if let Some(n) = &notifier {
        n.notify("STOPPING=1");
    }
    stats.abort();
    d.stop().await?;
    if let Some(e) = exporter {
        let _ = e.await;
    }
    tracing::info!(counters = %metrics.summary(), "stopped");
    Ok(())
}

/// Tells systemd every `interval` that the runtime still schedules tasks, until shutdown.
async fn watchdog(
    notifier: Arc<Notifier>,
    interval: std::time::Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => notifier.notify("WATCHDOG=1"),
        }
    }
}

/// CLOCK_MONOTONIC in microseconds, as systemd wants it with RELOADING=1.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid pointer given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

impl RunningListener {
    /// Whether this listener's socket is the one `endpoint` names: as configured, or as bound
    /// (a port 0 in the configuration became a real one).
    fn serves_endpoint(&self, endpoint_wanted: &str) -> bool {
        let bound = match &self.socket {
            BoundSocket::Udp(s) => s
                .first()
                .and_then(|s| s.local_addr().ok())
                .map(|a| format!("udp {a}")),
            BoundSocket::Tcp(s) => s.local_addr().ok().map(|a| format!("tcp {a}")),
            BoundSocket::Unix(_) | BoundSocket::UnixStream(_) | BoundSocket::Kmsg(_) => None,
        };
        self.config.kind.endpoint() == endpoint_wanted || bound.as_deref() == Some(endpoint_wanted)
    }
}

/// A listener task and how to stop it alone.
struct RunningListener {
    config: ListenerConfig,
    /// A duplicate of the task's socket.
    socket: BoundSocket,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// The running daemon: its configuration, listener tasks and output threads.
struct Daemon {
    config: Config,
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    hangup: Hangup,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
    /// Current outputs in config order (the routing's indices).
    outputs: Vec<(OutputConfig, OutputHandle)>,
    /// Every output thread ever started, by output name; joined at the end (a removed output's
    /// thread ends once its last batch is written).
    threads: Vec<(Arc<str>, std::thread::JoinHandle<()>)>,
    listeners: Vec<RunningListener>,
    /// Tasks of listeners removed by a reload, still finishing their connections.
    stopping: Vec<tokio::task::JoinHandle<()>>,
}

/// Whether two versions of an output write to the same place: files, or a disk queue directory
/// (`state_dir/<name>`).
fn shares_resource(old: &OutputConfig, new: &OutputConfig) -> bool {
    use crate::config::{OutputKind, QueueKind};
    match (&old.kind, &new.kind) {
        (OutputKind::File(_), OutputKind::File(_)) => true,
        (OutputKind::Forward(_), OutputKind::Forward(_)) => {
            matches!(old.queue.kind, QueueKind::Disk { .. })
                && matches!(new.queue.kind, QueueKind::Disk { .. })
        }
        _ => false,
    }
}

impl Daemon {
    fn start_output(&mut self, o: &OutputConfig) -> Result<OutputHandle, String> {
        // A changed output that keeps its name and kind owns the same files or disk queue
        // directory as the one it replaces: it takes over once that one has finished.
        let predecessor = self
            .outputs
            .iter()
            .find(|(old, _)| old.name == o.name && shares_resource(old, o))
            .and_then(|_| {
                let i = self.threads.iter().rposition(|(n, _)| *n == o.name)?;
                Some(self.threads.swap_remove(i).1)
            });
        let started = output::start(
            o,
            self.metrics.output(&o.name),
            self.hard_stop.clone(),
            &self.config.daemon.state_dir,
            self.hangup.files.clone(),
            predecessor,
        )
        .map_err(|e| format!("starting output {}: {e:#}", o.name))?;
        self.threads.push((o.name.clone(), started.thread));
        Ok(started.handle)
    }

    /// Makes `outputs` (in config order) and the current config's routes the routing.
    fn install(&mut self, outputs: Vec<(OutputConfig, OutputHandle)>) {
        self.pipeline.replace(Routing {
            routes: RuleTable::new(self.config.routes.clone()),
            outputs: outputs.iter().map(|(_, h)| h.clone()).collect(),
            route_metrics: (self.config.routes.iter())
                .map(|r| self.metrics.route(&r.label))
                .collect(),
        });
        self.outputs = outputs;
    }

    fn spawn_listener(&mut self, l: BoundListener) -> anyhow::Result<()> {
        let stop = self.shutdown.child_token();
        // Kept so that a changed listener on the same address can take the socket over.
        let socket = l
            .socket
            .try_clone()
            .context("duplicating the listening socket")?;
        let task = spawn_listener(
            l.socket,
            &l.config,
            self.pipeline.clone(),
            stop.clone(),
            self.hard_stop.clone(),
            &self.hangup,
        )?;
        self.listeners.push(RunningListener {
            config: l.config,
            socket,
            stop,
            task,
        });
        Ok(())
    }

    /// Applies a new configuration; on error nothing has changed.
    async fn reload(&mut self, new: Config) -> Result<(), String> {
        // Listeners: unchanged ones keep running. Bind new endpoints before changing anything,
        // so a bind failure leaves the running configuration untouched.
        // A changed listener that keeps its address takes over the running one's socket: no
        // moment without a socket, and no privilege needed to bind it again.
        let unchanged = |l: &ListenerConfig| self.listeners.iter().any(|r| r.config == *l);
        let mut fresh = Vec::new();
        for l in new.listeners.iter().filter(|l| !unchanged(l)) {
            let held = self
                .listeners
                .iter()
                .find(|r| r.serves_endpoint(&l.kind.endpoint()));
            let bound = match held {
                Some(r) => take_over(&r.socket, l),
                None => bind_listener(l),
            };
            fresh.push(bound.map_err(|e| format!("listener {}: {e:#}", l.name))?);
        }
        // Outputs: unchanged ones keep their queue and files; changed and new ones start now.
        let mut outputs = Vec::new();
        let mut started = 0;
        for o in &new.outputs {
            match self.outputs.iter().find(|(old, _)| old == o) {
                Some((_, h)) => outputs.push((o.clone(), h.clone())),
                None => match self.start_output(o) {
                    Ok(h) => {
                        started += 1;
                        outputs.push((o.clone(), h));
                    }
                    // Dropping `outputs` and `fresh` closes the queues just started (their
                    // threads end) and the sockets just bound.
                    Err(e) => return Err(e),
                },
            }
        }
        let old_daemon = std::mem::replace(&mut self.config, new);
        self.install(outputs);
        // Stop listeners that are gone or changed; their open connections finish on their own
        // under the old routing, which lives until their last batch.
        let (keep, retire): (Vec<_>, Vec<_>) = std::mem::take(&mut self.listeners)
            .into_iter()
            .partition(|r| self.config.listeners.contains(&r.config));
        self.listeners = keep;
        for r in retire {
            r.stop.cancel();
            self.stopping.push(r.task);
        }
        let mut errors = Vec::new();
        for mut b in fresh {
            if let (
                BoundSocket::Udp(held),
                ListenerKind::Udp {
                    sockets,
                    receive_buffer_bytes,
                    ..
                },
            ) = (&mut b.socket, &b.config.kind)
            {
                // A listener that took over fewer UDP sockets than it now wants adds them here,
                // past the reload's last step that can fail: a socket joining the port takes
                // senders at once, and would lose what it holds if the reload were abandoned.
                grow_udp(held, *sockets, *receive_buffer_bytes, &b.config.name);
            }
            if let Err(e) = self.spawn_listener(b) {
                errors.push(format!("{e:#}"));
            }
        }
        if old_daemon.daemon.state_dir != self.config.daemon.state_dir {
            tracing::warn!("daemon.state_dir changes take effect at the next start");
        }
        tracing::info!(
            outputs_started = started,
            listeners = self.listeners.len(),
            "reload applied"
        );
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("applied, but: {}", errors.join("; ")))
        }
    }

    /// The orderly stop described in the module docs (and ARCHITECTURE.md, "Shutdown").
    async fn stop(self) -> anyhow::Result<()> {
        let timeout = self.config.daemon.shutdown_timeout;
        tracing::info!(?timeout, "shutting down: reading what senders already sent");
        let cutter = {
            let hard_stop = self.hard_stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                hard_stop.cancel();
            })
        };
        let tasks = self
            .listeners
            .into_iter()
            .map(|r| r.task)
            .chain(self.stopping);
        for t in tasks {
            if let Err(e) = t.await {
                tracing::error!(error = %e, "listener task failed");
            }
        }
        // The listeners held the only other references to the output queues: with these gone,
        // each output sees its queue close and drains.
        drop(self.pipeline);
        drop(self.outputs);
        let threads = self.threads;
        tokio::task::spawn_blocking(move || {
            for (_, t) in threads {
                let _ = t.join();
            }
        })
        .await
        .context("joining output threads")?;
        cutter.abort();
        Ok(())
    }
}

/// Starts serving one bound socket; the task ends when `stop` is cancelled and its
/// connections are done.
fn spawn_listener(
    socket: BoundSocket,
    config: &ListenerConfig,
    pipeline: Arc<Pipeline>,
    stop: CancellationToken,
    hard_stop: CancellationToken,
    hangup: &Hangup,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let name = config.name.clone();
    match &socket {
        BoundSocket::Udp(s) => {
            if let Some(first) = s.first() {
                log_listening(&name, "udp", first.local_addr());
            }
            if s.len() > 1 {
                tracing::info!(listener = %name, sockets = s.len(), "sharing the port (SO_REUSEPORT)");
            }
        }
        BoundSocket::Tcp(s) => log_listening(&name, "tcp", s.local_addr()),
        BoundSocket::Unix(_) => {
            if let ListenerKind::Unix { path, .. } = &config.kind {
                tracing::info!(listener = %name, kind = "unix", path = %path.display(), "listening");
            }
        }
        BoundSocket::UnixStream(_) => {
            if let ListenerKind::UnixStream { path, .. } = &config.kind {
                tracing::info!(listener = %name, kind = "unix_stream", path = %path.display(), "listening");
            }
        }
        BoundSocket::Kmsg(_) => {
            if let ListenerKind::Kmsg { path, .. } = &config.kind {
                tracing::info!(listener = %name, kind = "kmsg", path = %path.display(), "reading");
            }
        }
    }
    let max = config.max_message_size;
    // Built only for datagram listeners: the rate limiter in it is shared by a listener's tasks.
    let datagram = || listen::DatagramSettings {
        name: name.clone(),
        max_message_size: max,
        allowed_sources: config.allowed_sources.clone(),
        timezone: config.timezone,
        rate_limit: config.rate_limit.map(|r| {
            Arc::new(listen::ratelimit::SourceLimiter::new(
                r,
                name.clone(),
                pipeline.metrics.listener(&name),
            ))
        }),
    };
    Ok(match (socket, &config.kind) {
        (BoundSocket::Udp(sockets), _) => {
            // One task per socket, so the sockets are read on as many cores; the first also
            // reports the kernel's drops of them all.
            let inodes: Vec<u64> = sockets
                .iter()
                .filter_map(listen::udp::socket_inode)
                .collect();
            let settings = datagram();
            // All registered before any task starts, so an error leaves no task behind.
            let sockets = sockets
                .into_iter()
                .map(|s| tokio::net::UdpSocket::from_std(s).context("registering UDP socket"))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut readers = Vec::with_capacity(sockets.len());
            for (i, s) in sockets.into_iter().enumerate() {
                readers.push(tokio::spawn(listen::run_datagram(
                    DatagramSocket::Udp(s),
                    settings.clone(),
                    pipeline.clone(),
                    stop.clone(),
                    hard_stop.clone(),
                    if i == 0 { inodes.clone() } else { Vec::new() },
                )));
            }
            tokio::spawn(async move {
                for r in readers {
                    // A reader's panic becomes the listener task's, which the stop reports.
                    if let Err(e) = r.await
                        && e.is_panic()
                    {
                        std::panic::resume_unwind(e.into_panic());
                    }
                }
            })
        }
        (BoundSocket::Unix(s), _) => {
            let s = tokio::net::UnixDatagram::from_std(s).context("registering unix socket")?;
            tokio::spawn(listen::run_datagram(
                DatagramSocket::Unix(s),
                datagram(),
                pipeline,
                stop,
                hard_stop,
                Vec::new(),
            ))
        }
        (BoundSocket::Kmsg(f), ListenerKind::Kmsg { path, .. }) => tokio::spawn(listen::kmsg::run(
            f,
            listen::kmsg::KmsgSettings {
                name,
                path: path.clone(),
                max_message_size: max,
                rate_limit: config.rate_limit,
                timezone: config.timezone,
            },
            pipeline,
            stop,
            hard_stop,
        )),
        (BoundSocket::Kmsg(_), kind) => {
            anyhow::bail!(
                "listener {name}: the kernel log was opened for kind {}",
                kind.name()
            )
        }
        (
            socket @ (BoundSocket::Tcp(_) | BoundSocket::UnixStream(_)),
            ListenerKind::Tcp(StreamSettings {
                connections: conns, ..
            })
            | ListenerKind::Tls {
                stream:
                    StreamSettings {
                        connections: conns, ..
                    },
                ..
            }
            | ListenerKind::UnixStream {
                connections: conns, ..
            },
        ) => {
            let tls = match &config.kind {
                ListenerKind::Tls {
                    handshake_timeout,
                    tls,
                    ..
                } => {
                    let server = TlsServer::new(tls, *handshake_timeout)
                        .map_err(|e| anyhow::anyhow!("listener {name}: {e}"))?;
                    tokio::spawn(listen::tls::reload_on_hangup(
                        name.clone(),
                        tls.clone(),
                        server.clone(),
                        hangup.subscribe(),
                        stop.clone(),
                    ));
                    Some(server)
                }
                _ => None,
            };
            let listener = match socket {
                BoundSocket::UnixStream(s) => StreamListener::Unix(
                    tokio::net::UnixListener::from_std(s)
                        .context("registering unix stream socket")?,
                ),
                BoundSocket::Tcp(s) => StreamListener::Tcp(
                    tokio::net::TcpListener::from_std(s).context("registering TCP socket")?,
                ),
                _ => anyhow::bail!("listener {name}: not a stream socket"),
            };
            let server = TcpServer {
                listener,
                settings: TcpSettings {
                    name,
                    max_message_size: max,
                    max_connections: conns.max_connections,
                    idle_timeout: conns.idle_timeout,
                    frame_timeout: conns.frame_timeout,
                    nul_trailer: conns.nul_trailer,
                    allowed_sources: config.allowed_sources.clone(),
                    tls,
                    timezone: config.timezone,
                    rate_limit: config.rate_limit.map(|r| {
                        Arc::new(listen::ratelimit::SourceLimiter::new(
                            r,
                            config.name.clone(),
                            pipeline.metrics.listener(&config.name),
                        ))
                    }),
                },
                pipeline,
                shutdown: stop,
                hard_stop,
            };
            tokio::spawn(server.run())
        }
        (BoundSocket::Tcp(_) | BoundSocket::UnixStream(_), kind) => {
            anyhow::bail!(
                "listener {name}: a stream socket was bound for kind {}",
                kind.name()
            )
        }
    })
}

fn log_listening(name: &str, kind: &str, addr: std::io::Result<SocketAddr>) {
    match addr {
        Ok(a) => tracing::info!(listener = %name, kind, address = %a, "listening"),
        Err(e) => {
            tracing::warn!(listener = %name, kind, error = %e, "listening on an unknown address")
        }
    }
}
