//! Socket calls that std and socket2 do not wrap: reading many datagrams with one recvmmsg(2),
//! SO_RCVBUFFORCE, and a socket's drop count (SO_MEMINFO).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Most datagrams one [`recv_datagrams`] call takes.
pub const MAX_DATAGRAMS_PER_CALL: usize = 32;

/// SO_RCVBUFFORCE: like SO_RCVBUF but not capped by net.core.rmem_max; needs CAP_NET_ADMIN.
pub fn force_recv_buffer_size(socket: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    // The kernel doubles the value for its bookkeeping, as with SO_RCVBUF.
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: an open descriptor (borrowed for the call), and an option value that is a c_int
    // of the length passed, which the kernel only reads.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The kernel's count of what it dropped on this socket because its receive buffer was full:
/// SO_MEMINFO's SK_MEMINFO_DROPS, the counter /proc/net/udp shows as `drops`. A `u32` that wraps.
pub fn socket_drops(socket: BorrowedFd<'_>) -> io::Result<u32> {
    const DROPS: usize = libc::SK_MEMINFO_DROPS as usize;
    let mut info = [0u32; DROPS + 1];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: an open descriptor (borrowed for the call), and a buffer of `len` writable bytes;
    // the kernel writes at most `len` bytes and sets `len` to what it wrote.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if (len as usize) < std::mem::size_of_val(&info) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SO_MEMINFO without a drop count",
        ));
    }
    Ok(info[DROPS])
}

/// Receives up to [`MAX_DATAGRAMS_PER_CALL`] datagrams from a datagram socket with one
/// recvmmsg(2) call, without waiting. `buf` holds one slot of `slot_bytes` per datagram;
/// datagram `i` lands at `i * slot_bytes`, and `got` (cleared first) receives each one's length
/// (at most `slot_bytes`: a longer one is cut there) and sender. Fails with `WouldBlock` when
/// none is waiting. Allocates nothing while `got` has room for the batch.
pub fn recv_datagrams(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    slot_bytes: usize,
    got: &mut Vec<(usize, Option<SocketAddr>)>,
) -> io::Result<()> {
    got.clear();
    let slots = (buf.len() / slot_bytes.max(1)).min(MAX_DATAGRAMS_PER_CALL);
    // SAFETY (all three): plain C structs for which all-zero bytes are a valid value.
    let mut addrs: [libc::sockaddr_storage; MAX_DATAGRAMS_PER_CALL] = unsafe { std::mem::zeroed() };
    let mut iovs: [libc::iovec; MAX_DATAGRAMS_PER_CALL] = unsafe { std::mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; MAX_DATAGRAMS_PER_CALL] = unsafe { std::mem::zeroed() };
    for (i, slot) in buf.chunks_exact_mut(slot_bytes).take(slots).enumerate() {
        iovs[i] = libc::iovec {
            iov_base: slot.as_mut_ptr().cast(),
            iov_len: slot.len(),
        };
        let h = &mut hdrs[i].msg_hdr;
        h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        h.msg_iov = &mut iovs[i];
        h.msg_iovlen = 1;
    }
    // SAFETY: the descriptor is open (borrowed for the call). The first `slots` headers point at
    // one iovec each, whose buffer is a disjoint `slot_bytes` slot of `buf`, and at one
    // `sockaddr_storage` with its size; `buf`, `iovs` and `addrs` outlive the call and are not
    // otherwise borrowed meanwhile. The kernel writes at most `slots` headers, each within the
    // lengths given.
    let rc = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            hdrs.as_mut_ptr(),
            slots as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    for (h, addr) in hdrs.iter().zip(&addrs).take(rc as usize) {
        got.push((h.msg_len as usize, socket_addr(addr)));
    }
    Ok(())
}

/// The sender of a datagram, from the address recvmmsg filled in.
fn socket_addr(a: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(a.ss_family) {
        libc::AF_INET => {
            // SAFETY: ss_family says this storage holds a sockaddr_in, which it is large and
            // aligned enough for.
            let a = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_full_socket_counts_what_it_drops() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(socket_drops(rx.as_fd()).unwrap(), 0);
        // Far more than the smallest receive buffer holds, nothing read.
        let to = rx.local_addr().unwrap();
        for _ in 0..20_000 {
            tx.send_to(&[b'x'; 512], to).unwrap();
        }
        let mut queued = 0u32;
        let mut buf = vec![0u8; 512 * MAX_DATAGRAMS_PER_CALL];
        let mut got = Vec::with_capacity(MAX_DATAGRAMS_PER_CALL);
        while recv_datagrams(rx.as_fd(), &mut buf, 512, &mut got).is_ok() {
            queued += got.len() as u32;
        }
        assert!(queued > 0);
        assert_eq!(socket_drops(rx.as_fd()).unwrap() + queued, 20_000);
    }

    #[test]
    fn receives_a_batch_with_senders_and_cuts_at_the_slot() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut buf = vec![0u8; 4 * 8];
        let mut got = Vec::with_capacity(MAX_DATAGRAMS_PER_CALL);
        let e = recv_datagrams(rx.as_fd(), &mut buf, 8, &mut got).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        let to = rx.local_addr().unwrap();
        tx.send_to(b"one", to).unwrap();
        tx.send_to(b"twelve bytes", to).unwrap();
        // Loopback delivers synchronously; both are queued by now.
        recv_datagrams(rx.as_fd(), &mut buf, 8, &mut got).unwrap();
        let from = Some(tx.local_addr().unwrap());
        assert_eq!(got, [(3, from), (8, from)]);
        assert_eq!(&buf[..3], b"one");
        assert_eq!(&buf[8..16], b"twelve b");
    }
}
