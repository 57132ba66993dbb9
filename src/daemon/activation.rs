//! Socket activation: matching the sockets systemd passed to the listeners that want them.

use std::net::SocketAddr;

use crate::listen::{BoundSocket, Endpoint, ListenerConfig};
use crate::systemd::InheritedSocket;

/// Removes and converts the inherited socket meant for `l`, if any: one of the listener's
/// socket type with its endpoint, else with its name.
pub(super) fn take_inherited(
    inherited: &mut Vec<InheritedSocket>,
    l: &ListenerConfig,
) -> anyhow::Result<Option<BoundSocket>> {
    let endpoint = l.kind.endpoint();
    // Not a socket (the kernel log): systemd cannot pass it.
    let Some(want_type) = endpoint.socket_type() else {
        return Ok(None);
    };
    let same_endpoint = |s: &InheritedSocket| {
        s.socket.r#type().ok() == Some(want_type)
            && s.socket.local_addr().is_ok_and(|a| match &endpoint {
                Endpoint::Udp(want) | Endpoint::Tcp(want) => serves(&s.socket, &a, *want),
                Endpoint::Unix { path, .. } => a.as_pathname() == Some(path.as_path()),
                Endpoint::Kmsg(_) | Endpoint::Files(_) => false,
            })
    };
    // By endpoint first: FileDescriptorName= names every socket of a unit alike.
    let Some(i) = inherited.iter().position(same_endpoint).or_else(|| {
        inherited.iter().position(|s| {
            s.name.as_deref() == Some(&*l.name) && s.socket.r#type().ok() == Some(want_type)
        })
    }) else {
        return Ok(None);
    };
    let s = inherited.remove(i).socket;
    l.kind.adopt(&l.name, s).map(Some)
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
pub(super) fn describe(s: &socket2::Socket) -> String {
    match s.local_addr() {
        Ok(a) => match (a.as_socket(), a.as_pathname()) {
            (Some(ip), _) => ip.to_string(),
            (None, Some(p)) => p.display().to_string(),
            _ => "an unnamed socket".to_string(),
        },
        Err(e) => format!("unknown address ({e})"),
    }
}
