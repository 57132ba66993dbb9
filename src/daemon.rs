//! Wiring: [`bind`] every socket (before any runtime or privilege change), then [`run`] the
//! listeners and outputs until the shutdown token fires, and drain.
//!
//! Shutdown order (DESIGN.md §1): stop accepting; datagram listeners read their sockets empty;
//! open connections are read until their peer closes or `shutdown_timeout` passes; then every
//! output queue closes (its last sender is dropped), drains, flushes and fsyncs.

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ListenerConfig, ListenerKind};
use crate::listen::tcp::{TcpServer, TcpSettings};
use crate::listen::tls::TlsServer;
use crate::listen::{self, DatagramSocket, Pipeline};
use crate::metrics::Metrics;
use crate::output::{self, ReopenFiles};
use crate::route::RuleTable;
use crate::systemd::{Activation, InheritedSocket, Notifier};

/// A listening socket, bound and not yet served.
#[derive(Debug)]
pub enum BoundSocket {
    /// UDP.
    Udp(std::net::UdpSocket),
    /// TCP.
    Tcp(std::net::TcpListener),
    /// Unix datagram.
    Unix(UnixDatagram),
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
    hangup: Hangup,
    notifier: Option<Notifier>,
    watchdog_interval: Option<std::time::Duration>,
    metrics_listener: Option<std::net::TcpListener>,
}

impl Bound {
    /// The real local address of an IP listener (after binding port 0, the port chosen).
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        let l = self.listeners.iter().find(|l| &*l.config.name == name)?;
        match &l.socket {
            BoundSocket::Udp(s) => s.local_addr().ok(),
            BoundSocket::Tcp(s) => s.local_addr().ok(),
            BoundSocket::Unix(_) => None,
        }
    }

    /// What main signals on SIGHUP.
    pub fn hangup(&self) -> Hangup {
        self.hangup.clone()
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
/// `FileDescriptorName=` equal to the listener's name, else by local address or path and socket
/// type. Listeners without one are bound as usual; inherited sockets no listener wants are
/// closed with a warning.
pub fn bind_activated(config: &Config, activation: Activation) -> anyhow::Result<Bound> {
    let mut inherited = activation.sockets;
    let mut listeners = Vec::new();
    for l in &config.listeners {
        let socket = match take_inherited(&mut inherited, l)? {
            Some(s) => {
                tracing::info!(listener = %l.name, "using a socket passed by systemd");
                s
            }
            None => bind_one(l)?,
        };
        listeners.push(BoundListener {
            config: l.clone(),
            socket,
        });
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
    Ok(Bound {
        listeners,
        metrics,
        hangup: Hangup {
            watch: Arc::new(tokio::sync::watch::channel(0).0),
            files: ReopenFiles::default(),
        },
        notifier: activation.notifier,
        watchdog_interval: activation.watchdog_interval,
        metrics_listener: config
            .daemon
            .metrics_address
            .map(|a| listen::tcp::bind(a).with_context(|| format!("metrics_address {a}")))
            .transpose()?,
    })
}

fn bind_one(l: &ListenerConfig) -> anyhow::Result<BoundSocket> {
    Ok(match &l.kind {
        ListenerKind::Udp {
            address,
            receive_buffer_bytes,
        } => BoundSocket::Udp(listen::udp::bind(*address, *receive_buffer_bytes)?),
        ListenerKind::Tcp(stream) | ListenerKind::Tls { stream, .. } => {
            BoundSocket::Tcp(listen::tcp::bind(stream.address)?)
        }
        ListenerKind::Unix { path, mode } => BoundSocket::Unix(listen::unix::bind(path, *mode)?),
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
        ListenerKind::Tcp(_) | ListenerKind::Tls { .. } => socket2::Type::STREAM,
        ListenerKind::Udp { .. } | ListenerKind::Unix { .. } => socket2::Type::DGRAM,
    };
    let same_addr = |s: &InheritedSocket| {
        s.socket.r#type().ok() == Some(want_type)
            && s.socket.local_addr().is_ok_and(|a| match &l.kind {
                ListenerKind::Udp { address, .. } => serves(&s.socket, &a, *address),
                ListenerKind::Tcp(st) | ListenerKind::Tls { stream: st, .. } => {
                    serves(&s.socket, &a, st.address)
                }
                ListenerKind::Unix { path, .. } => a.as_pathname() == Some(path.as_path()),
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
        ListenerKind::Udp { .. } if local.as_socket().is_some() => BoundSocket::Udp(s.into()),
        ListenerKind::Tcp(_) | ListenerKind::Tls { .. } if local.as_socket().is_some() => {
            BoundSocket::Tcp(s.into())
        }
        ListenerKind::Unix { .. } if local.is_unix() => BoundSocket::Unix(s.into()),
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
pub async fn run(config: Config, bound: Bound, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = bound.metrics.clone();
    // Cut open connections and stop output retries once shutdown_timeout has passed.
    let hard_stop = CancellationToken::new();
    let mut handles = Vec::new();
    let mut threads = Vec::new();
    for o in &config.outputs {
        let started = output::start(
            o,
            metrics.output(&o.name),
            hard_stop.clone(),
            &config.daemon.state_dir,
            bound.hangup.files.clone(),
        )
        .with_context(|| format!("starting output {}", o.name))?;
        handles.push(started.handle);
        threads.push(started.thread);
    }
    let pipeline = Arc::new(Pipeline {
        routes: RuleTable::new(config.routes.clone()),
        outputs: handles,
        metrics: metrics.clone(),
    });

    let mut tasks = tokio::task::JoinSet::new();
    for l in bound.listeners {
        let name = l.config.name.clone();
        match &l.socket {
            BoundSocket::Udp(s) => log_listening(&name, "udp", s.local_addr()),
            BoundSocket::Tcp(s) => log_listening(&name, "tcp", s.local_addr()),
            BoundSocket::Unix(_) => {
                if let ListenerKind::Unix { path, .. } = &l.config.kind {
                    tracing::info!(listener = %name, kind = "unix", path = %path.display(), "listening");
                }
            }
        }
        let max = l.config.max_message_size;
        let datagram = listen::DatagramSettings {
            name: name.clone(),
            max_message_size: max,
            allowed_sources: l.config.allowed_sources.clone(),
        };
        match (l.socket, &l.config.kind) {
            (BoundSocket::Udp(s), _) => {
                let s = tokio::net::UdpSocket::from_std(s).context("registering UDP socket")?;
                tasks.spawn(listen::run_datagram(
                    DatagramSocket::Udp(s),
                    datagram,
                    pipeline.clone(),
                    shutdown.clone(),
                ));
            }
            (BoundSocket::Unix(s), _) => {
                let s = tokio::net::UnixDatagram::from_std(s).context("registering unix socket")?;
                tasks.spawn(listen::run_datagram(
                    DatagramSocket::Unix(s),
                    datagram,
                    pipeline.clone(),
                    shutdown.clone(),
                ));
            }
            (BoundSocket::Tcp(s), ListenerKind::Tcp(stream) | ListenerKind::Tls { stream, .. }) => {
                let tls = match &l.config.kind {
                    ListenerKind::Tls {
                        handshake_timeout,
                        tls,
                        ..
                    } => {
                        let server = TlsServer::new(tls, *handshake_timeout)
                            .map_err(|e| anyhow::anyhow!("listener {name}: {e}"))?;
                        tasks.spawn(listen::tls::reload_on_hangup(
                            name.clone(),
                            tls.clone(),
                            server.clone(),
                            bound.hangup.subscribe(),
                            shutdown.clone(),
                        ));
                        Some(server)
                    }
                    _ => None,
                };
                let listener =
                    tokio::net::TcpListener::from_std(s).context("registering TCP socket")?;
                let server = TcpServer {
                    listener,
                    settings: TcpSettings {
                        name,
                        max_message_size: max,
                        max_connections: stream.max_connections,
                        idle_timeout: stream.idle_timeout,
                        frame_timeout: stream.frame_timeout,
                        nul_trailer: stream.nul_trailer,
                        allowed_sources: l.config.allowed_sources.clone(),
                        tls,
                    },
                    pipeline: pipeline.clone(),
                    shutdown: shutdown.clone(),
                    hard_stop: hard_stop.clone(),
                };
                tasks.spawn(server.run());
            }
            (BoundSocket::Tcp(_), kind) => {
                anyhow::bail!(
                    "listener {name}: a TCP socket was bound for kind {}",
                    kind.name()
                )
            }
        }
    }
    if let Some(l) = bound.metrics_listener {
        log_listening("metrics", "prometheus", l.local_addr());
        let l = tokio::net::TcpListener::from_std(l).context("registering metrics socket")?;
        tasks.spawn(crate::exporter::serve(l, metrics.clone(), shutdown.clone()));
    }
    // Every socket is bound and every output (with its disk queue) started: systemd may now
    // start the units ordered after this one.
    let notifier = bound.notifier.map(Arc::new);
    if let Some(n) = &notifier {
        n.notify("READY=1");
        if let Some(interval) = bound.watchdog_interval {
            tasks.spawn(watchdog(n.clone(), interval, shutdown.clone()));
        }
    }
    // The listeners hold the only other references to the output queues: once they finish and
    // this one is gone, each output sees its queue close and drains.
    drop(pipeline);
    tracing::info!(
        config = %config.origin,
        listeners = config.listeners.len(),
        outputs = config.outputs.len(),
        routes = config.routes.len(),
        "sluice started"
    );

    let stats = {
        let metrics = metrics.clone();
        let interval = config.daemon.stats_interval;
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

    shutdown.cancelled().await;
    if let Some(n) = &notifier {
        n.notify("STOPPING=1");
    }
    tracing::info!(timeout = ?config.daemon.shutdown_timeout, "shutting down: reading what senders already sent");
    let cutter = {
        let hard_stop = hard_stop.clone();
        let timeout = config.daemon.shutdown_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            hard_stop.cancel();
        })
    };
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            tracing::error!(error = %e, "listener task failed");
        }
    }
    stats.abort();
    tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await
    .context("joining output threads")?;
    cutter.abort();
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

fn log_listening(name: &str, kind: &str, addr: std::io::Result<SocketAddr>) {
    match addr {
        Ok(a) => tracing::info!(listener = %name, kind, address = %a, "listening"),
        Err(e) => {
            tracing::warn!(listener = %name, kind, error = %e, "listening on an unknown address")
        }
    }
}
