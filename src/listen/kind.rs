//! The listener kinds, as the config loader and the daemon see them. Each kind is a module whose
//! settings type implements [`ListenerKindSpec`]: how it reads its table, what it holds
//! ([`Endpoint`]), what it checks on the machine, how it binds and starts. The `listener_kinds!`
//! invocation below registers it with one line, and generates the [`ListenerKind`] enum and its
//! exhaustive matches: a kind left out of any of them does not compile.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::settings::Limits;
use super::{Pipeline, kmsg, relp, tail, tcp, tls, udp, unix, unix_stream};
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
    /// Files a `tail` listener follows, by its globs. Two listeners may follow the same files
    /// (each keeps its own positions): never a clash.
    Files(Vec<String>),
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
            Endpoint::Kmsg(_) | Endpoint::Files(_) => None,
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
            Endpoint::Files(globs) => write!(f, "files {}", globs.join(", ")),
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
    /// Nothing: a `tail` listener opens its files itself, on its own thread.
    Files,
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
            BoundSocket::Files => BoundSocket::Files,
        })
    }

    /// The real local address of an IP socket (after binding port 0, the port chosen).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            BoundSocket::Udp(s) => s.first()?.local_addr().ok(),
            BoundSocket::Tcp(s) => s.local_addr().ok(),
            BoundSocket::Unix(_)
            | BoundSocket::UnixStream(_)
            | BoundSocket::Kmsg(_)
            | BoundSocket::Files => None,
        }
    }

    /// The endpoint this socket serves as bound: a port 0 in the configuration is the real
    /// port here. `None` for what has no address of its own.
    pub fn bound_endpoint(&self) -> Option<Endpoint> {
        match self {
            BoundSocket::Udp(_) => self.local_addr().map(Endpoint::Udp),
            BoundSocket::Tcp(_) => self.local_addr().map(Endpoint::Tcp),
            BoundSocket::Unix(_)
            | BoundSocket::UnixStream(_)
            | BoundSocket::Kmsg(_)
            | BoundSocket::Files => None,
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
    /// `[daemon] state_dir`, where a `tail` listener keeps its positions.
    pub state_dir: &'a std::path::Path,
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

/// What a listener kind's module provides, for its settings type.
pub trait ListenerKindSpec: Sized + Clone + PartialEq + std::fmt::Debug {
    /// Its `kind = "..."` spelling.
    const KIND: &'static str;

    /// Reads its keys from `[listen.NAME]` (the [`Limits`] every kind has are read apart).
    /// Every problem is reported; `None` when there was one.
    fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<Self>;

    /// The endpoint a table gives, read from the keys that give it alone, for a listener whose
    /// other settings may be invalid: two broken listeners on one port are still a clash.
    fn decode_endpoint(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<Endpoint>;

    /// What it binds or opens.
    fn endpoint(&self) -> Endpoint;

    /// The descriptors it may hold at once, for the descriptor budget.
    fn descriptors(&self) -> ListenerDescriptors;

    /// `--check-config`, the start and a reload: what needs the file system. Problems are
    /// pushed as `KEY: what`, `key` being `listen.NAME`; TLS files go through `tls`.
    fn check_environment(
        &self,
        key: &str,
        problems: &mut Vec<String>,
        tls: &mut crate::tls::FileCheck,
    ) {
        let _ = (key, problems, tls);
    }

    /// Binds the socket or opens the device. No runtime is needed, so this runs before
    /// privileges are dropped.
    fn bind(&self) -> anyhow::Result<BoundSocket>;

    /// Makes a socket systemd passed for its endpoint its own; one of another family is an
    /// error (the unit and the config disagree).
    fn adopt(&self, name: &str, socket: socket2::Socket) -> anyhow::Result<BoundSocket>;

    /// Readies `socket`, held by a predecessor on the same endpoint, for these settings.
    fn take_over(&self, name: &str, socket: &mut BoundSocket) -> anyhow::Result<()> {
        let _ = (name, socket);
        Ok(())
    }

    /// Once a reload can no longer fail: what taking over could not do before.
    fn complete_take_over(&self, name: &str, socket: &mut BoundSocket) {
        let _ = (name, socket);
    }

    /// Starts serving `socket` (what [`ListenerKindSpec::bind`] gave); the task ends when
    /// `ctx.stop` is cancelled and its connections are done.
    fn start(
        &self,
        socket: BoundSocket,
        ctx: StartContext<'_>,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>>;
}

/// The error of a kind handed a socket its `bind` does not make.
pub(super) fn wrong_socket(kind: &str, socket: &BoundSocket) -> anyhow::Error {
    anyhow::anyhow!("{socket:?} is not a socket a {kind} listener serves")
}

/// A socket systemd passed, checked to be of the family the listener serves (IP or unix) and
/// made non-blocking.
pub(super) fn adopted(socket: socket2::Socket, ip: bool) -> anyhow::Result<socket2::Socket> {
    let local = socket
        .local_addr()
        .context("getsockname on an inherited socket")?;
    if (local.as_socket().is_some()) != ip {
        anyhow::bail!(
            "systemd passed a socket of another address family under its name ({local:?})"
        );
    }
    socket
        .set_nonblocking(true)
        .context("making an inherited socket non-blocking")?;
    Ok(socket)
}

/// The socket methods of a [`ListenerKindSpec`] for a kind that listens exactly as `tcp` does,
/// through its `tcp: TcpSettings` field (tls, relp): where it listens, what it holds, binding,
/// adopting from systemd and taking over on reload are the TCP listener's.
macro_rules! tcp_socket_methods {
    () => {
        fn decode_endpoint(
            entry: &mut crate::decode::Entry<'_, '_>,
            errs: &mut crate::decode::Errors<'_>,
        ) -> Option<super::Endpoint> {
            super::tcp::TcpSettings::decode_endpoint(entry, errs)
        }

        fn endpoint(&self) -> super::Endpoint {
            self.tcp.endpoint()
        }

        fn descriptors(&self) -> super::kind::ListenerDescriptors {
            self.tcp.descriptors()
        }

        fn bind(&self) -> anyhow::Result<super::BoundSocket> {
            self.tcp.bind()
        }

        fn adopt(&self, name: &str, socket: socket2::Socket) -> anyhow::Result<super::BoundSocket> {
            self.tcp.adopt(name, socket)
        }

        fn take_over(&self, name: &str, socket: &mut super::BoundSocket) -> anyhow::Result<()> {
            self.tcp.take_over(name, socket)
        }
    };
}
pub(super) use tcp_socket_methods;

/// Generates [`ListenerKind`], a variant per registered kind, and its dispatch to
/// [`ListenerKindSpec`].
macro_rules! listener_kinds {
    ($($(#[$doc:meta])* $variant:ident($settings:ty),)+) => {
        /// Listener kinds, each with its module's settings.
        #[derive(Debug, Clone, PartialEq)]
        pub enum ListenerKind {
            $($(#[$doc])* $variant($settings),)+
        }

        impl ListenerKind {
            /// Every kind's `kind = "..."` spelling, in the order messages list them.
            pub const NAMES: &'static [&'static str] =
                &[$(<$settings as ListenerKindSpec>::KIND),+];

            /// Reads the kind named by `entry.kind`; `Err` for an unknown kind.
            fn decode_kind(
                entry: &mut Entry<'_, '_>,
                errs: &mut Errors<'_>,
            ) -> Result<Option<ListenerKind>, ()> {
                let kind = entry.kind.get_ref().clone();
                $(if kind == <$settings as ListenerKindSpec>::KIND {
                    return Ok(<$settings>::decode(entry, errs).map(ListenerKind::$variant));
                })+
                Err(())
            }

            /// The endpoint of the kind named by `entry.kind`, read alone.
            fn decode_endpoint_of_kind(
                entry: &mut Entry<'_, '_>,
                errs: &mut Errors<'_>,
            ) -> Option<Endpoint> {
                let kind = entry.kind.get_ref().clone();
                $(if kind == <$settings as ListenerKindSpec>::KIND {
                    return <$settings>::decode_endpoint(entry, errs);
                })+
                None
            }

            /// Its `kind = "..."` spelling.
            pub fn name(&self) -> &'static str {
                match self {
                    $(ListenerKind::$variant(_) => <$settings as ListenerKindSpec>::KIND,)+
                }
            }

            /// What the listener binds or opens.
            pub fn endpoint(&self) -> Endpoint {
                match self {
                    $(ListenerKind::$variant(s) => s.endpoint(),)+
                }
            }

            /// The descriptors it may hold at once.
            pub fn descriptors(&self) -> ListenerDescriptors {
                match self {
                    $(ListenerKind::$variant(s) => s.descriptors(),)+
                }
            }

            /// See [`ListenerKindSpec::check_environment`].
            pub fn check_environment(
                &self,
                key: &str,
                problems: &mut Vec<String>,
                tls: &mut crate::tls::FileCheck,
            ) {
                match self {
                    $(ListenerKind::$variant(s) => s.check_environment(key, problems, tls),)+
                }
            }

            /// See [`ListenerKindSpec::bind`].
            pub fn bind(&self) -> anyhow::Result<BoundSocket> {
                match self {
                    $(ListenerKind::$variant(s) => s.bind(),)+
                }
            }

            /// See [`ListenerKindSpec::adopt`].
            pub fn adopt(&self, name: &str, socket: socket2::Socket) -> anyhow::Result<BoundSocket> {
                match self {
                    $(ListenerKind::$variant(s) => s.adopt(name, socket),)+
                }
            }

            /// See [`ListenerKindSpec::take_over`].
            pub fn take_over(&self, name: &str, socket: &mut BoundSocket) -> anyhow::Result<()> {
                match self {
                    $(ListenerKind::$variant(s) => s.take_over(name, socket),)+
                }
            }

            /// See [`ListenerKindSpec::complete_take_over`].
            pub fn complete_take_over(&self, name: &str, socket: &mut BoundSocket) {
                match self {
                    $(ListenerKind::$variant(s) => s.complete_take_over(name, socket),)+
                }
            }

            /// See [`ListenerKindSpec::start`].
            pub fn start(
                &self,
                socket: BoundSocket,
                ctx: StartContext<'_>,
            ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
                let name = ctx.config.name.clone();
                match self {
                    $(ListenerKind::$variant(s) => s.start(socket, ctx),)+
                }
                .with_context(|| format!("listener {name}"))
            }
        }
    };
}

// The registry: one line per kind.
listener_kinds! {
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
    /// RELP, each message acknowledged once the outputs hold it; over TCP or TLS.
    Relp(relp::RelpSettings),
    /// Lines appended to files, followed across rotation (`paths` globs).
    Tail(tail::TailSettings),
}

impl ListenerKind {
    /// Reads the kind named by `entry.kind` from its table. `None` when the kind is unknown
    /// (reported) or its settings are not valid (each problem reported).
    pub fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<ListenerKind> {
        match ListenerKind::decode_kind(entry, errs) {
            Ok(kind) => kind,
            Err(()) => {
                entry.unknown_kind(errs, "listener", Self::NAMES);
                None
            }
        }
    }

    /// The endpoint of a listener whose settings may not all be valid, read from its address
    /// or path alone: two broken listeners on one port are still reported as a clash.
    pub fn endpoint_of(entry: &mut Entry<'_, '_>) -> Option<Endpoint> {
        // Problems were reported by the full read; this one only looks.
        ListenerKind::decode_endpoint_of_kind(entry, &mut Errors::new("", ""))
    }

    /// The keys kind `kind` reads, found by reading an empty table the way its decoder does.
    pub fn keys_of(kind: &str) -> Vec<String> {
        let mut entry = Entry::probe(kind);
        let mut errs = Errors::new("", "");
        let _ = Limits::decode(&mut entry, &mut errs);
        let _ = ListenerKind::decode(&mut entry, &mut errs);
        entry.probed_keys()
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
