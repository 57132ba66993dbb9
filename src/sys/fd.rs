//! Descriptors that std cannot hand out safely: the sockets systemd passes, and files watched by
//! the tokio reactor.

use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::Interest;
use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};

/// The first descriptor systemd passes (SD_LISTEN_FDS_START).
pub const LISTEN_FDS_START: RawFd = 3;

/// Whether [`take_listen_fds`] has run.
static LISTEN_FDS_TAKEN: AtomicBool = AtomicBool::new(false);

/// The descriptors systemd passed with socket activation (sd_listen_fds(3)): `LISTEN_FDS` of
/// them from [`LISTEN_FDS_START`] on, when `LISTEN_PID` is this process; none otherwise. Entry
/// `i` is descriptor `LISTEN_FDS_START + i`, or an error if that one is not open. Only the first
/// call in a process takes them; later calls get none. The variables are left in place.
pub fn take_listen_fds() -> Vec<io::Result<OwnedFd>> {
    let var = |k: &str| std::env::var(k).ok();
    let for_us = var("LISTEN_PID").and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let count = var("LISTEN_FDS").and_then(|n| n.parse::<i32>().ok());
    let Some(count) = count.filter(|_| for_us) else {
        return Vec::new();
    };
    if LISTEN_FDS_TAKEN.swap(true, Ordering::SeqCst) {
        return Vec::new();
    }
    (0..count.max(0))
        .map(|i| {
            let fd = LISTEN_FDS_START + i;
            // SAFETY: F_GETFD only reads the descriptor's flags; it fails on a closed one.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: the descriptor is open, and by systemd's contract (LISTEN_PID is this
            // process) it was passed to this process for it to own. Nothing else takes it: the
            // flag above lets only the first call in the process through, and std and the other
            // modules only wrap descriptors they opened themselves, which cannot have these
            // numbers while the passed ones are open.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .collect()
}

/// A file registered with the tokio reactor for readiness events: a non-blocking character
/// device or FIFO. Unlike a bare `AsyncFd<File>`, it gives only shared access to the file, so
/// the descriptor cannot be swapped for another while registered.
#[derive(Debug)]
pub struct ReadyFile(AsyncFd<File>);

impl ReadyFile {
    /// Registers `file` for `interest`. Must be called within a tokio runtime.
    pub fn new(file: File, interest: Interest) -> io::Result<ReadyFile> {
        // SAFETY: a `File` owns its descriptor, which stays open and the same until the File is
        // dropped with the AsyncFd; this type never hands out `&mut File` (nor the AsyncFd), so
        // nothing can close or replace it meanwhile.
        match unsafe { AsyncFd::register_with_interest(file, interest) } {
            Ok(fd) => Ok(ReadyFile(fd)),
            Err(e) => Err(io::Error::from(e)),
        }
    }

    /// Waits until the file may be readable; see [`AsyncFd::readable`].
    pub async fn readable(&self) -> io::Result<AsyncFdReadyGuard<'_, File>> {
        self.0.readable().await
    }

    /// The file, to read from (`Read` is implemented for `&File`).
    pub fn get_ref(&self) -> &File {
        self.0.get_ref()
    }
}
