//! The `udp` listener: binding with a large receive buffer. Reading is the shared datagram loop
//! in [`super::run_datagram`].

use std::net::SocketAddr;

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};

/// Binds a non-blocking UDP socket and asks for `receive_buffer_bytes` of SO_RCVBUF, so bursts
/// wait in the kernel rather than being dropped (hostile-inputs I03). The kernel caps the request
/// at net.core.rmem_max; a smaller result is logged.
pub fn bind(
    address: SocketAddr,
    receive_buffer_bytes: usize,
) -> anyhow::Result<std::net::UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )
    .context("creating UDP socket")?;
    if address.is_ipv6() {
        // Let [::]:514 take IPv4 senders too, as rsyslog does.
        let _ = socket.set_only_v6(false);
    }
    if let Err(e) = socket.set_recv_buffer_size(receive_buffer_bytes) {
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

/// The kernel's drop counter for this socket: the `drops` column of /proc/net/udp{,6} on the
/// line whose inode is the socket's. `None` where /proc is not available.
pub fn kernel_drops(socket: &tokio::net::UdpSocket) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::io::AsRawFd;
    let inode = std::fs::metadata(format!("/proc/self/fd/{}", socket.as_raw_fd()))
        .ok()?
        .ino()
        .to_string();
    let table = if socket.local_addr().ok()?.is_ipv6() {
        "/proc/net/udp6"
    } else {
        "/proc/net/udp"
    };
    let text = std::fs::read_to_string(table).ok()?;
    text.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        (cols.get(9) == Some(&inode.as_str())).then(|| cols.last()?.parse().ok())?
    })
}
