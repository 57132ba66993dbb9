//! The `udp` listener: its settings, binding with a large receive buffer and SO_REUSEPORT
//! sockets, and reading many datagrams per system call (recvmmsg). The loop around it is the
//! shared datagram loop in [`super::run_datagram`].

use std::net::SocketAddr;
use std::os::fd::AsFd;

use anyhow::Context;
use serde::Deserialize;
use socket2::{Domain, Protocol, Socket, Type};
use toml::Spanned;

use super::kind::{
    BoundSocket, Endpoint, ListenerDescriptors, ListenerKindSpec, StartContext, adopted,
    log_listening, wrong_socket,
};
use super::settings::Network;
use crate::decode::{Entry, Errors, NumOrStr, Part, size_opt};

/// `kind = "udp"`.
pub const KIND: &str = "udp";
/// Most sockets one UDP listener may bind (`sockets`): past the cores of any host it serves.
pub const MAX_UDP_SOCKETS: usize = 64;
/// Default SO_RCVBUF asked for on UDP sockets (systemd's syslog.socket uses 8M).
pub const DEFAULT_UDP_RECEIVE_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// The settings of a `udp` listener.
#[derive(Debug, Clone, PartialEq)]
pub struct UdpSettings {
    /// Address and sender filter.
    pub network: Network,
    /// SO_RCVBUF to ask for, per socket.
    pub receive_buffer_bytes: usize,
    /// Sockets bound to the address with SO_REUSEPORT, each read by its own task: the kernel
    /// spreads senders over them, so parsing runs on several cores.
    pub sockets: usize,
}

#[derive(Deserialize, Default)]
struct UdpRaw {
    receive_buffer_size: Option<Spanned<NumOrStr>>,
    sockets: Option<Spanned<i64>>,
}

impl Part for UdpRaw {}

impl ListenerKindSpec for UdpSettings {
    const KIND: &'static str = KIND;

    fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<UdpSettings> {
        let network = Network::decode(entry, errs);
        let raw = entry.part::<UdpRaw>(errs)?;
        let before = errs.count();
        let receive_buffer_bytes = size_opt(
            errs,
            &entry.key("receive_buffer_size"),
            &raw.receive_buffer_size,
        )
        .map_or(DEFAULT_UDP_RECEIVE_BUFFER_BYTES, |n| n as usize);
        let sockets = match &raw.sockets {
            None => 1,
            Some(v) if (1..=MAX_UDP_SOCKETS as i64).contains(v.get_ref()) => *v.get_ref() as usize,
            Some(v) => {
                errs.at(
                    v.span(),
                    entry.key("sockets"),
                    format!(
                        "must be from 1 to {MAX_UDP_SOCKETS} (sockets sharing the port, each read by its own task), got {}",
                        v.get_ref()
                    ),
                );
                1
            }
        };
        (errs.count() == before).then_some(())?;
        Some(UdpSettings {
            network: network?,
            receive_buffer_bytes,
            sockets,
        })
    }

    fn decode_endpoint(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<Endpoint> {
        Network::decode(entry, errs).map(|n| Endpoint::Udp(n.address))
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::Udp(self.network.address)
    }

    fn descriptors(&self) -> ListenerDescriptors {
        ListenerDescriptors {
            connections: 0,
            sockets: self.sockets,
        }
    }

    fn bind(&self) -> anyhow::Result<BoundSocket> {
        let sockets = bind(
            self.network.address,
            self.receive_buffer_bytes,
            self.sockets,
        )?;
        Ok(BoundSocket::Udp(sockets))
    }

    /// A socket systemd passed, with more beside it if `sockets` asks for them.
    fn adopt(&self, name: &str, socket: socket2::Socket) -> anyhow::Result<BoundSocket> {
        let mut bound = vec![adopted(socket, true)?.into()];
        self.grow(&mut bound, name);
        Ok(BoundSocket::Udp(bound))
    }

    /// Sockets held by a predecessor, readied for these settings: the receive buffer applied
    /// anew. Where `sockets` shrank they are all kept (closing one would lose what it holds);
    /// where it grew, they are added once the reload can no longer fail.
    fn take_over(&self, name: &str, socket: &mut BoundSocket) -> anyhow::Result<()> {
        let BoundSocket::Udp(held) = socket else {
            return Err(wrong_socket(KIND, socket));
        };
        for s in held.iter() {
            if let Err(e) =
                socket2::SockRef::from(s).set_recv_buffer_size(self.receive_buffer_bytes)
            {
                tracing::warn!(listener = name, error = %e, "could not set SO_RCVBUF");
            }
        }
        if self.sockets < held.len() {
            tracing::warn!(
                listener = name,
                sockets = self.sockets,
                serving_with = held.len(),
                "fewer sockets take effect at restart: closing one now would lose the datagrams it holds"
            );
        }
        Ok(())
    }

    /// A socket joining the port takes senders at once, and would lose what it holds if the
    /// reload were abandoned: added only now.
    fn complete_take_over(&self, name: &str, socket: &mut BoundSocket) {
        if let BoundSocket::Udp(held) = socket {
            self.grow(held, name);
        }
    }

    /// One task per socket, so the sockets are read on as many cores; the first also reports
    /// the kernel's drops of them all.
    fn start(
        &self,
        socket: BoundSocket,
        ctx: StartContext<'_>,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let BoundSocket::Udp(sockets) = socket else {
            return Err(wrong_socket(KIND, &socket));
        };
        let name = &ctx.config.name;
        if let Some(first) = sockets.first() {
            log_listening(name, KIND, first.local_addr());
        }
        if sockets.len() > 1 {
            tracing::info!(listener = %name, sockets = sockets.len(), "sharing the port (SO_REUSEPORT)");
        }
        // The first reading task counts every socket's kernel drops.
        let drop_counted = sockets
            .iter()
            .map(|s| s.try_clone().map(std::os::fd::OwnedFd::from))
            .collect::<std::io::Result<Vec<_>>>()
            .context("duplicating the UDP sockets for their drop counts")?;
        // One rate limiter for all the sockets: a sender changing source port keeps its bucket.
        let settings = ctx.datagram_settings(self.network.allowed_sources.clone());
        // All registered before any task starts, so an error leaves no task behind.
        let sockets = sockets
            .into_iter()
            .map(|s| tokio::net::UdpSocket::from_std(s).context("registering UDP socket"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut readers = Vec::with_capacity(sockets.len());
        let mut drop_counted = Some(drop_counted);
        for s in sockets {
            readers.push(tokio::spawn(super::run_datagram(
                super::DatagramSocket::Udp(s),
                settings.clone(),
                ctx.pipeline.clone(),
                ctx.stop.clone(),
                ctx.hard_stop.clone(),
                drop_counted.take().unwrap_or_default(),
            )));
        }
        Ok(tokio::spawn(async move {
            for r in readers {
                // A reader's panic becomes the listener task's, which the stop reports.
                if let Err(e) = r.await
                    && e.is_panic()
                {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        }))
    }
}

impl UdpSettings {
    /// Adds sockets beside `bound` until there are `sockets`; where that fails (the first
    /// socket lacks SO_REUSEPORT, or the port cannot be bound any more), says so and serves
    /// with those there are.
    fn grow(&self, bound: &mut Vec<std::net::UdpSocket>, listener: &str) {
        if let Err(e) = add_sockets(bound, self.sockets, self.receive_buffer_bytes) {
            tracing::warn!(
                error = format!("{e:#}"),
                listener,
                sockets = self.sockets,
                serving_with = bound.len(),
                "could not bind every UDP socket asked for; serving with those bound (a socket systemd passes needs ReusePort=yes; after dropping privileges, a port below 1024 cannot be bound, and the kernel shares a port only among sockets of one user)"
            );
        }
    }
}

/// Binds `sockets` non-blocking UDP sockets to `address` (more than one share it with
/// SO_REUSEPORT: the kernel spreads senders over them by address and port, and each is read by
/// its own task), each asking for `receive_buffer_bytes` of receive buffer.
pub fn bind(
    address: SocketAddr,
    receive_buffer_bytes: usize,
    sockets: usize,
) -> anyhow::Result<Vec<std::net::UdpSocket>> {
    let address = if sockets > 1 && address.port() == 0 {
        // Autobind may give a SO_REUSEPORT socket a port that reuseport sockets of this user
        // already hold (the kernel counts them compatible), merging two listeners: take a port
        // nobody holds from a plain socket first.
        std::net::UdpSocket::bind(address)
            .and_then(|probe| probe.local_addr())
            .with_context(|| format!("binding UDP {address}"))?
    } else {
        address
    };
    // Let [::]:514 take IPv4 senders too, as rsyslog does.
    let first = bind_one(address, receive_buffer_bytes, sockets > 1, false)?;
    let mut bound = vec![first];
    add_sockets(&mut bound, sockets, receive_buffer_bytes)?;
    Ok(bound)
}

/// Binds more sockets beside `bound[0]`, at its address (so a port 0 becomes the port it got),
/// until there are `want`. Fails if `bound[0]` was bound without SO_REUSEPORT, as a socket
/// systemd passed without `ReusePort=yes` or one bound for `sockets = 1` is: the kernel would
/// refuse the address.
pub fn add_sockets(
    bound: &mut Vec<std::net::UdpSocket>,
    want: usize,
    receive_buffer_bytes: usize,
) -> anyhow::Result<()> {
    let Some(first) = bound.first() else {
        anyhow::bail!("no socket to add to");
    };
    if want <= bound.len() {
        return Ok(());
    }
    let address = first.local_addr().context("getsockname")?;
    let first = socket2::SockRef::from(first);
    anyhow::ensure!(
        first.reuse_port().unwrap_or(false),
        "{address} is bound without SO_REUSEPORT, so no second socket can share it"
    );
    // The same as the first (systemd may pass an IPv6-only one): the kernel groups only
    // sockets bound alike.
    let only_v6 = address.is_ipv6() && first.only_v6().unwrap_or(false);
    while bound.len() < want {
        bound.push(bind_one(address, receive_buffer_bytes, true, only_v6)?);
    }
    Ok(())
}

/// Binds one non-blocking UDP socket and asks for `receive_buffer_bytes` of receive buffer, so
/// bursts wait in the kernel rather than being dropped (hostile-inputs I03). SO_RCVBUFFORCE
/// (root, as at startup) gets the size asked for, as rsyslog's imudp does; without the privilege
/// SO_RCVBUF is capped at net.core.rmem_max, and a smaller result is logged.
fn bind_one(
    address: SocketAddr,
    receive_buffer_bytes: usize,
    reuse_port: bool,
    only_v6: bool,
) -> anyhow::Result<std::net::UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )
    .context("creating UDP socket")?;
    if address.is_ipv6() {
        let _ = socket.set_only_v6(only_v6);
    }
    if reuse_port {
        socket
            .set_reuse_port(true)
            .context("setting SO_REUSEPORT")?;
    }
    if crate::sys::net::force_recv_buffer_size(socket.as_fd(), receive_buffer_bytes).is_err()
        && let Err(e) = socket.set_recv_buffer_size(receive_buffer_bytes)
    {
        tracing::warn!(%address, error = %e, "could not set SO_RCVBUF");
    }
    if let Ok(got) = socket.recv_buffer_size()
        && got < receive_buffer_bytes
    {
        // Linux reports double the usable size; compare against the request as-is anyway.
        tracing::info!(%address, requested = receive_buffer_bytes, got,
            "SO_RCVBUF capped by the kernel (raise net.core.rmem_max for bursty senders)");
    }
    socket
        .bind(&address.into())
        .with_context(|| format!("binding UDP {address}"))?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Datagrams asked of one recvmmsg(2) call.
pub const DATAGRAMS_PER_CALL: usize = crate::sys::net::MAX_DATAGRAMS_PER_CALL;

/// Receives up to [`DATAGRAMS_PER_CALL`] datagrams with one system call, without waiting.
/// `buf` holds one slot of `slot_bytes` per datagram; datagram `i` lands at `i * slot_bytes`,
/// and `got` receives each one's length (at most `slot_bytes`: a longer one is cut there) and
/// sender. Fails with `WouldBlock` when none is waiting.
pub fn recv_batch(
    socket: &tokio::net::UdpSocket,
    buf: &mut [u8],
    slot_bytes: usize,
    got: &mut Vec<(usize, Option<SocketAddr>)>,
) -> std::io::Result<()> {
    got.clear();
    socket.try_io(tokio::io::Interest::READABLE, || {
        crate::sys::net::recv_datagrams(socket.as_fd(), buf, slot_bytes, got)
    })
}
