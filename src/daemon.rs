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
    let mut listeners = Vec::new();
    for l in &config.listeners {
        let socket = match &l.kind {
            ListenerKind::Udp {
                address,
                receive_buffer_bytes,
            } => BoundSocket::Udp(listen::udp::bind(*address, *receive_buffer_bytes)?),
            ListenerKind::Tcp(stream) | ListenerKind::Tls { stream, .. } => {
                BoundSocket::Tcp(listen::tcp::bind(stream.address)?)
            }
            ListenerKind::Unix { path, mode } => {
                BoundSocket::Unix(listen::unix::bind(path, *mode)?)
            }
        };
        listeners.push(BoundListener {
            config: l.clone(),
            socket,
        });
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
    })
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
            rate_limit: l.config.rate_limit,
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
                        name: name.clone(),
                        max_message_size: max,
                        max_connections: stream.max_connections,
                        idle_timeout: stream.idle_timeout,
                        frame_timeout: stream.frame_timeout,
                        nul_trailer: stream.nul_trailer,
                        allowed_sources: l.config.allowed_sources.clone(),
                        tls,
                        rate_limit: l.config.rate_limit.map(|r| {
                            Arc::new(listen::ratelimit::SourceLimiter::new(
                                r,
                                name.clone(),
                                metrics.listener(&name),
                            ))
                        }),
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

fn log_listening(name: &str, kind: &str, addr: std::io::Result<SocketAddr>) {
    match addr {
        Ok(a) => tracing::info!(listener = %name, kind, address = %a, "listening"),
        Err(e) => {
            tracing::warn!(listener = %name, kind, error = %e, "listening on an unknown address")
        }
    }
}
