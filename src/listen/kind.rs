//! The listener kinds, as the config loader and the daemon see them: one enum with a variant
//! per kind module, and the exhaustive matches that reach each kind's settings, environment
//! checks, resources, socket and start. A new kind is a module and a variant here; the compiler
//! then names every match that must handle it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::settings::Limits;
use super::{Pipeline, kmsg, tcp, tls, udp, unix, unix_stream};
use crate::decode::{Entry, Errors};

/// One `[listen.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// NAME.
    pub name: Arc<str>,
    /// What every kind has: message size bound, time zone, rate limit.
    pub limits: Limits,
    /// Kind-specific settings.
    pub kind: ListenerKind,
}

/// Listener kinds, each with its module's settings.
#[derive(Debug, Clone, PartialEq)]
pub enum ListenerKind {
    /// UDP datagrams, one message each (RFC 5426).
    Udp(udp::UdpSettings),
    /// TCP with RFC 6587 framing detected per frame.
    Tcp(tcp::TcpSettings),
    /// TLS (RFC 5425), framed as TCP.
    Tls(tls::TlsSettings),
    /// A unix datagram socket, like /dev/log.
    Unix(unix::UnixSettings),
    /// A unix stream socket: what glibc's syslog(3) falls back to, syslog-ng's `unix-stream`.
    UnixStream(unix_stream::UnixStreamSettings),
    /// The kernel's log buffer, /dev/kmsg (for hosts without journald).
    Kmsg(kmsg::KmsgConfig),
}

/// What a listener holds that no other may: two listeners with one endpoint cannot run side by
/// side, a changed listener with its predecessor's endpoint takes its socket over, and a socket
/// systemd passes is matched to the listener of its endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A UDP port.
    Udp(SocketAddr),
    /// A TCP port (`tcp` and `tls`).
    Tcp(SocketAddr),
    /// A unix socket file; `stream` tells the socket type.
    Unix {
        /// The socket file.
        path: PathBuf,
        /// A stream socket (`unix_stream`) rather than datagrams (`unix`).
        stream: bool,
    },
    /// A kernel log device.
    Kmsg(PathBuf),
}

impl Endpoint {
    /// Whether two listeners configured with these endpoints cannot both run. A port 0 asks
    /// the kernel for a fresh port each time: never a clash. A unix socket file, datagram or
    /// stream, is one listener's.
    pub fn clashes_with(&self, other: &Endpoint) -> bool {
        match (self, other) {
            (Endpoint::Udp(a), Endpoint::Udp(b)) | (Endpoint::Tcp(a), Endpoint::Tcp(b)) => {
                a == b && a.port() != 0
            }
            (Endpoint::Unix { path: a, .. }, Endpoint::Unix { path: b, .. }) => a == b,
            (Endpoint::Kmsg(a), Endpoint::Kmsg(b)) => a == b,
            _ => false,
        }
    }

    /// The socket type systemd would pass for it; `None` for what is not a socket.
    pub fn socket_type(&self) -> Option<socket2::Type> {
        match self {
            Endpoint::Udp(_) | Endpoint::Unix { stream: false, .. } => Some(socket2::Type::DGRAM),
            Endpoint::Tcp(_) | Endpoint::Unix { stream: true, .. } => Some(socket2::Type::STREAM),
            Endpoint::Kmsg(_) => None,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Udp(a) => write!(f, "udp {a}"),
            Endpoint::Tcp(a) => write!(f, "tcp {a}"),
            Endpoint::Unix { path, .. } => write!(f, "unix {}", path.display()),
            Endpoint::Kmsg(p) => write!(f, "kmsg {}", p.display()),
        }
    }
}

/// A listener's socket (or device), bound or opened and not yet served.
#[derive(Debug)]
pub enum BoundSocket {
    /// UDP: one socket, or several sharing the port (`sockets`), never none.
    Udp(Vec<std::net::UdpSocket>),
    /// TCP.
    Tcp(std::net::TcpListener),
    /// Unix datagram.
    Unix(std::os::unix::net::UnixDatagram),
    /// Unix stream, listening.
    UnixStream(std::os::unix::net::UnixListener),
    /// The kernel log (/dev/kmsg), opened.
    Kmsg(std::fs::File),
}

impl BoundSocket {
    /// Another descriptor for the same socket (dup(2)).
    pub fn try_clone(&self) -> std::io::Result<BoundSocket> {
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

    /// The real local address of an IP socket (after binding port 0, the port chosen).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            BoundSocket::Udp(s) => s.first()?.local_addr().ok(),
            BoundSocket::Tcp(s) => s.local_addr().ok(),
            BoundSocket::Unix(_) | BoundSocket::UnixStream(_) | BoundSocket::Kmsg(_) => None,
        }
    }

    /// The endpoint this socket serves as bound: a port 0 in the configuration is the real
    /// port here. `None` for what has no address of its own.
    pub fn bound_endpoint(&self) -> Option<Endpoint> {
        match self {
            BoundSocket::Udp(_) => self.local_addr().map(Endpoint::Udp),
            BoundSocket::Tcp(_) => self.local_addr().map(Endpoint::Tcp),
            BoundSocket::Unix(_) | BoundSocket::UnixStream(_) | BoundSocket::Kmsg(_) => None,
        }
    }
}

/// The descriptors a listener may hold at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerDescriptors {
    /// Connections it may accept (`max_connections`).
    pub connections: usize,
    /// Its own sockets or devices.
    pub sockets: usize,
}

/// What a listener task is started with.
pub struct StartContext<'a> {
    /// The listener.
    pub config: &'a ListenerConfig,
    /// Where its events go.
    pub pipeline: Arc<Pipeline>,
    /// Cancelled when the listener stops (shutdown, or a reload removing it).
    pub stop: CancellationToken,
    /// Cancelled when the shutdown deadline passes: cut connections, stop waiting for room.
    pub hard_stop: CancellationToken,
    /// Changes on each SIGHUP (TLS certificates are reloaded then).
    pub hangup: tokio::sync::watch::Receiver<u64>,
}

impl StartContext<'_> {
    /// The listener's per-source rate limiter, shared by its tasks and connections.
    pub(super) fn rate_limiter(&self) -> Option<Arc<super::ratelimit::SourceLimiter>> {
        let name = &self.config.name;
        self.config.limits.rate_limit.map(|r| {
            Arc::new(super::ratelimit::SourceLimiter::new(
                r,
                name.clone(),
                self.pipeline.metrics.listener(name),
            ))
        })
    }

    /// The settings of the shared datagram loop.
    pub(super) fn datagram_settings(
        &self,
        allowed_sources: Option<Vec<ipnet::IpNet>>,
    ) -> super::DatagramSettings {
        super::DatagramSettings {
            name: self.config.name.clone(),
            max_message_size: self.config.limits.max_message_size,
            allowed_sources,
            timezone: self.config.limits.timezone,
            rate_limit: self.rate_limiter(),
        }
    }
}

impl ListenerKind {
    /// Every kind's `kind = "..."` spelling, in the order messages list them.
    pub const NAMES: [&'static str; 6] = [
        udp::KIND,
        tcp::KIND,
        tls::KIND,
        unix::KIND,
        unix_stream::KIND,
        kmsg::KIND,
    ];

    /// Reads the kind named by `entry.kind` from its table. `None` when the kind is unknown
    /// (reported) or its settings are not valid (each problem reported).
    pub fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<ListenerKind> {
        let kind = entry.kind.get_ref().clone();
        Some(match kind.as_str() {
            udp::KIND => ListenerKind::Udp(udp::UdpSettings::decode(entry, errs)?),
            tcp::KIND => ListenerKind::Tcp(tcp::TcpSettings::decode(entry, errs)?),
            tls::KIND => ListenerKind::Tls(tls::TlsSettings::decode(entry, errs)?),
            unix::KIND => ListenerKind::Unix(unix::UnixSettings::decode(entry, errs)?),
            unix_stream::KIND => {
                ListenerKind::UnixStream(unix_stream::UnixStreamSettings::decode(entry, errs)?)
            }
            kmsg::KIND => ListenerKind::Kmsg(kmsg::KmsgConfig::decode(entry, errs)?),
            other => {
                let names: Vec<String> = Self::NAMES.iter().map(|n| format!("{n:?}")).collect();
                errs.at(
                    entry.kind.span(),
                    entry.key("kind"),
                    format!(
                        "unknown listener kind {other:?}: expected {}",
                        crate::decode::or_list(&names)
                    ),
                );
                return None;
            }
        })
    }

    /// The endpoint of a listener whose settings may not all be valid, read from its address
    /// or path alone: two broken listeners on one port are still reported as a clash.
    pub fn endpoint_of(entry: &mut Entry<'_, '_>) -> Option<Endpoint> {
        use super::settings::{Network, SocketFile};
        // Problems were reported by the full read; this one only looks.
        let mut quiet = Errors::new("", "");
        let kind = entry.kind.get_ref().clone();
        match kind.as_str() {
            udp::KIND => Network::decode(entry, &mut quiet).map(|n| Endpoint::Udp(n.address)),
            tcp::KIND | tls::KIND => {
                Network::decode(entry, &mut quiet).map(|n| Endpoint::Tcp(n.address))
            }
            unix::KIND | unix_stream::KIND => {
                SocketFile::decode(entry, &mut quiet).map(|s| Endpoint::Unix {
                    path: s.path,
                    stream: kind == unix_stream::KIND,
                })
            }
            kmsg::KIND => {
                kmsg::KmsgConfig::decode(entry, &mut quiet).map(|k| Endpoint::Kmsg(k.path))
            }
            _ => None,
        }
    }

    /// The keys kind `kind` reads, found by reading an empty table the way its decoder does.
    pub fn keys_of(kind: &str) -> Vec<String> {
        let mut entry = Entry::probe(kind);
        let mut errs = Errors::new("", "");
        let _ = Limits::decode(&mut entry, &mut errs);
        let _ = ListenerKind::decode(&mut entry, &mut errs);
        entry.probed_keys()
    }

    /// `udp`, `tcp`, `tls`, `unix`, `unix_stream` or `kmsg`.
    pub fn name(&self) -> &'static str {
        match self {
            ListenerKind::Udp(_) => udp::KIND,
            ListenerKind::Tcp(_) => tcp::KIND,
            ListenerKind::Tls(_) => tls::KIND,
            ListenerKind::Unix(_) => unix::KIND,
            ListenerKind::UnixStream(_) => unix_stream::KIND,
            ListenerKind::Kmsg(_) => kmsg::KIND,
        }
    }

    /// What the listener binds or opens.
    pub fn endpoint(&self) -> Endpoint {
        match self {
            ListenerKind::Udp(s) => Endpoint::Udp(s.network.address),
            ListenerKind::Tcp(s) => Endpoint::Tcp(s.network.address),
            ListenerKind::Tls(s) => Endpoint::Tcp(s.network.address),
            ListenerKind::Unix(s) => Endpoint::Unix {
                path: s.socket.path.clone(),
                stream: false,
            },
            ListenerKind::UnixStream(s) => Endpoint::Unix {
                path: s.socket.path.clone(),
                stream: true,
            },
            ListenerKind::Kmsg(s) => Endpoint::Kmsg(s.path.clone()),
        }
    }

    /// The descriptors it may hold at once, for the descriptor budget.
    pub fn descriptors(&self) -> ListenerDescriptors {
        let (connections, sockets) = match self {
            ListenerKind::Tcp(s) => (s.connections.max_connections, 1),
            ListenerKind::Tls(s) => (s.connections.max_connections, 1),
            ListenerKind::UnixStream(s) => (s.connections.max_connections, 1),
            ListenerKind::Udp(s) => (0, s.sockets),
            ListenerKind::Unix(_) | ListenerKind::Kmsg(_) => (0, 1),
        };
        ListenerDescriptors {
            connections,
            sockets,
        }
    }

    /// The sender networks it accepts; `None` for all (and for kinds without senders).
    pub fn allowed_sources(&self) -> Option<&[ipnet::IpNet]> {
        match self {
            ListenerKind::Udp(s) => s.network.allowed_sources.as_deref(),
            ListenerKind::Tcp(s) => s.network.allowed_sources.as_deref(),
            ListenerKind::Tls(s) => s.network.allowed_sources.as_deref(),
            ListenerKind::Unix(_) | ListenerKind::UnixStream(_) | ListenerKind::Kmsg(_) => None,
        }
    }

    /// `--check-config` and the daemon's start: what needs the file system. Problems are
    /// pushed as `KEY: what`, `key` being `listen.NAME`; TLS files go through `tls`.
    pub fn check_environment(
        &self,
        key: &str,
        problems: &mut Vec<String>,
        tls_files: &mut crate::tls::FileCheck,
    ) {
        match self {
            ListenerKind::Udp(_) | ListenerKind::Tcp(_) => {}
            ListenerKind::Tls(s) => s.check_environment(key, tls_files),
            ListenerKind::Unix(s) => s.socket.check_environment(key, problems),
            ListenerKind::UnixStream(s) => s.socket.check_environment(key, problems),
            ListenerKind::Kmsg(s) => s.check_environment(key, problems),
        }
    }

    /// Binds the socket or opens the device. No runtime is needed, so this runs before
    /// privileges are dropped.
    pub fn bind(&self) -> anyhow::Result<BoundSocket> {
        Ok(match self {
            ListenerKind::Udp(s) => BoundSocket::Udp(s.bind()?),
            ListenerKind::Tcp(s) => BoundSocket::Tcp(super::stream::bind(s.network.address)?),
            ListenerKind::Tls(s) => BoundSocket::Tcp(super::stream::bind(s.network.address)?),
            ListenerKind::Unix(s) => BoundSocket::Unix(unix::bind(&s.socket.path, s.socket.mode)?),
            ListenerKind::UnixStream(s) => {
                BoundSocket::UnixStream(unix::bind_stream(&s.socket.path, s.socket.mode)?)
            }
            ListenerKind::Kmsg(s) => BoundSocket::Kmsg(kmsg::open(&s.path, s.read_existing)?),
        })
    }

    /// Makes a socket systemd passed, of this listener's endpoint type and family, the
    /// listener's. A socket of another family (a unix socket named after a UDP listener) is an
    /// error: the unit and the config disagree.
    pub fn adopt(&self, name: &str, s: socket2::Socket) -> anyhow::Result<BoundSocket> {
        let local = s
            .local_addr()
            .context("getsockname on an inherited socket")?;
        s.set_nonblocking(true)
            .context("making an inherited socket non-blocking")?;
        let ip = local.as_socket().is_some();
        Ok(match self {
            ListenerKind::Udp(u) if ip => {
                let mut bound = vec![s.into()];
                u.grow(&mut bound, name);
                BoundSocket::Udp(bound)
            }
            ListenerKind::Tcp(_) | ListenerKind::Tls(_) if ip => BoundSocket::Tcp(s.into()),
            ListenerKind::Unix(_) if local.is_unix() => BoundSocket::Unix(s.into()),
            ListenerKind::UnixStream(_) if local.is_unix() => BoundSocket::UnixStream(s.into()),
            ListenerKind::Udp(_)
            | ListenerKind::Tcp(_)
            | ListenerKind::Tls(_)
            | ListenerKind::Unix(_)
            | ListenerKind::UnixStream(_)
            | ListenerKind::Kmsg(_) => anyhow::bail!(
                "systemd passed a socket of another address family under its name ({local:?})"
            ),
        })
    }

    /// `socket`, held by this listener's predecessor on the same endpoint, readied for this
    /// listener's settings: the receive buffer size and the socket file's mode applied anew.
    pub fn take_over(&self, name: &str, socket: &mut BoundSocket) -> anyhow::Result<()> {
        let wrong = |socket: &BoundSocket| {
            anyhow::anyhow!(
                "the socket held for its endpoint ({socket:?}) is not one a {} listener serves",
                self.name()
            )
        };
        match self {
            ListenerKind::Udp(u) => match socket {
                BoundSocket::Udp(held) => {
                    u.take_over(name, held);
                    Ok(())
                }
                other => Err(wrong(other)),
            },
            ListenerKind::Unix(u) => match socket {
                BoundSocket::Unix(_) => unix::set_mode(&u.socket.path, u.socket.mode),
                other => Err(wrong(other)),
            },
            ListenerKind::UnixStream(u) => match socket {
                BoundSocket::UnixStream(_) => unix::set_mode(&u.socket.path, u.socket.mode),
                other => Err(wrong(other)),
            },
            ListenerKind::Tcp(_) | ListenerKind::Tls(_) => match socket {
                BoundSocket::Tcp(_) => Ok(()),
                other => Err(wrong(other)),
            },
            ListenerKind::Kmsg(_) => match socket {
                BoundSocket::Kmsg(_) => Ok(()),
                other => Err(wrong(other)),
            },
        }
    }

    /// Once a reload can no longer fail: a UDP listener that took over fewer sockets than it
    /// wants adds them (a socket joining the port takes senders at once, and would lose what it
    /// holds if the reload were abandoned).
    pub fn complete_take_over(&self, name: &str, socket: &mut BoundSocket) {
        match self {
            ListenerKind::Udp(u) => {
                if let BoundSocket::Udp(held) = socket {
                    u.grow(held, name);
                }
            }
            ListenerKind::Tcp(_)
            | ListenerKind::Tls(_)
            | ListenerKind::Unix(_)
            | ListenerKind::UnixStream(_)
            | ListenerKind::Kmsg(_) => {}
        }
    }

    /// Starts serving `socket`; the task ends when `ctx.stop` is cancelled and its
    /// connections are done.
    pub fn start(
        &self,
        socket: BoundSocket,
        ctx: StartContext<'_>,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let name = ctx.config.name.clone();
        let kind = self.name();
        let wrong = |socket: BoundSocket| anyhow::anyhow!("{socket:?} was bound for kind {kind}");
        let task = match self {
            ListenerKind::Udp(s) => match socket {
                BoundSocket::Udp(sockets) => s.start(sockets, ctx),
                other => Err(wrong(other)),
            },
            ListenerKind::Tcp(s) => match socket {
                BoundSocket::Tcp(l) => s.start(l, ctx),
                other => Err(wrong(other)),
            },
            ListenerKind::Tls(s) => match socket {
                BoundSocket::Tcp(l) => s.start(l, ctx),
                other => Err(wrong(other)),
            },
            ListenerKind::Unix(s) => match socket {
                BoundSocket::Unix(u) => s.start(u, ctx),
                other => Err(wrong(other)),
            },
            ListenerKind::UnixStream(s) => match socket {
                BoundSocket::UnixStream(l) => s.start(l, ctx),
                other => Err(wrong(other)),
            },
            ListenerKind::Kmsg(s) => match socket {
                BoundSocket::Kmsg(f) => s.start(f, ctx),
                other => Err(wrong(other)),
            },
        };
        task.with_context(|| format!("listener {name}"))
    }
}

/// Logs where an IP listener listens.
pub fn log_listening(name: &str, kind: &str, addr: std::io::Result<SocketAddr>) {
    match addr {
        Ok(a) => tracing::info!(listener = %name, kind, address = %a, "listening"),
        Err(e) => {
            tracing::warn!(listener = %name, kind, error = %e, "listening on an unknown address")
        }
    }
}
