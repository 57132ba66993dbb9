//! systemd integration, without libsystemd: the sd_notify protocol (one datagram of
//! `KEY=value` lines to `$NOTIFY_SOCKET`) and socket activation (`LISTEN_FDS` sockets from fd 3).
//!
//! Both are a few lines over std and socket2, so no crate is pulled in for them; the
//! `sd-notify` crate would cover only half and still leave matching inherited sockets to us.

use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::time::Duration;

/// The variables [`Activation::take_from_env`] reads, which the caller then removes (with
/// [`crate::sys::process::remove_env_vars`]) so nothing this process might start inherits them,
/// as sd_listen_fds(1) and sd_notify's unset do.
pub const ENV_VARS: [&str; 6] = [
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// What systemd handed this process: inherited sockets and where to report state.
#[derive(Debug, Default)]
pub struct Activation {
    /// Inherited sockets with their `FileDescriptorName=` (if systemd gave names).
    pub sockets: Vec<InheritedSocket>,
    /// Where to send READY=1, STOPPING=1 and WATCHDOG=1; `None` when not run by systemd.
    pub notifier: Option<Notifier>,
    /// Interval at which to send WATCHDOG=1 (half of `WatchdogSec=`); `None` when unset.
    pub watchdog_interval: Option<Duration>,
}

/// One socket from `LISTEN_FDS`.
#[derive(Debug)]
pub struct InheritedSocket {
    /// Its `FileDescriptorName=`, if systemd passed `LISTEN_FDNAMES`.
    pub name: Option<String>,
    /// The socket, close-on-exec.
    pub socket: socket2::Socket,
}

impl Activation {
    /// Reads the systemd variables ([`ENV_VARS`]) from the environment and takes the sockets
    /// passed with them, when `LISTEN_PID` is this process. Only the first call in a process
    /// gets sockets. The variables stay: removing them is not thread-safe, so the caller does it
    /// while it can promise a single thread.
    pub fn take_from_env() -> Activation {
        let var = |k: &str| std::env::var(k).ok();
        let pid = std::process::id();
        let mut sockets = Vec::new();
        let names: Vec<String> = var("LISTEN_FDNAMES")
            .map(|s| s.split(':').map(str::to_string).collect())
            .unwrap_or_default();
        for (i, fd) in crate::sys::fd::take_listen_fds().into_iter().enumerate() {
            let fd = match fd {
                Ok(fd) => fd,
                Err(e) => {
                    let fd = crate::sys::fd::LISTEN_FDS_START + i as i32;
                    tracing::warn!(fd, error = %e, "an inherited socket is not open; skipped");
                    continue;
                }
            };
            let socket = socket2::Socket::from(fd);
            if let Err(e) = socket.set_cloexec(true) {
                let fd = socket.as_raw_fd();
                tracing::warn!(fd, error = %e, "could not set close-on-exec on an inherited socket");
            }
            let name = names
                .get(i)
                .filter(|n| !n.is_empty() && *n != "unknown")
                .cloned();
            sockets.push(InheritedSocket { name, socket });
        }
        let notifier = var("NOTIFY_SOCKET").and_then(|p| match Notifier::new(&p) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(socket = %p, error = %e, "NOTIFY_SOCKET unusable; not notifying systemd");
                None
            }
        });
        let watchdog_for_us =
            var("WATCHDOG_PID").is_none_or(|p| p.parse::<u32>().ok() == Some(pid));
        let watchdog_interval = var("WATCHDOG_USEC")
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && watchdog_for_us)
            .map(|usec| Duration::from_micros(usec / 2));
        Activation {
            sockets,
            notifier,
            watchdog_interval,
        }
    }
}

/// A connected-to-nothing datagram socket and the address of systemd's notify socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: UnixAddr,
}

impl Notifier {
    /// For a `NOTIFY_SOCKET` value: a path, or `@name` for the abstract namespace.
    pub fn new(notify_socket: &str) -> std::io::Result<Notifier> {
        let addr = match notify_socket.strip_prefix('@') {
            Some(abstract_name) => UnixAddr::from_abstract_name(abstract_name.as_bytes())?,
            None => UnixAddr::from_pathname(notify_socket)?,
        };
        let socket = UnixDatagram::unbound()?;
        // A stuck service manager must not stall the daemon: give up on a full socket after 1s.
        socket.set_write_timeout(Some(Duration::from_secs(1)))?;
        Ok(Notifier { socket, addr })
    }

    /// Sends one state message such as `READY=1`. A failure is logged: systemd going away must
    /// not stop the daemon.
    pub fn notify(&self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.addr) {
            tracing::warn!(state, error = %e, "could not notify systemd");
        }
    }
}
