//! inotify(7): the tail listener is woken when a watched directory gains, loses or renames a
//! file, or a file in it is written. Only the two calls that create descriptors and watches are
//! `unsafe`; events are read through a `File` and decoded from bytes.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A file was created in, or moved into, the directory.
pub const CREATED: u32 = libc::IN_CREATE | libc::IN_MOVED_TO;
/// A file was deleted from, or moved out of, the directory.
pub const REMOVED: u32 = libc::IN_DELETE | libc::IN_MOVED_FROM;
/// A file in the directory was written.
pub const MODIFIED: u32 = libc::IN_MODIFY;
/// Events were lost: the kernel's queue overflowed (a rescan is due).
pub const OVERFLOW: u32 = libc::IN_Q_OVERFLOW;

/// An inotify instance, non-blocking and close-on-exec.
#[derive(Debug)]
pub struct Inotify(File);

impl Inotify {
    /// A new instance (`inotify_init1`).
    pub fn new() -> io::Result<Inotify> {
        // SAFETY: inotify_init1 takes flags only and returns a new descriptor or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        Ok(Inotify(File::from(unsafe { OwnedFd::from_raw_fd(fd) })))
    }

    /// Watches directory `dir` for files created, removed, moved and written.
    pub fn watch_dir(&self, dir: &Path) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let path = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
        let mask = CREATED | REMOVED | MODIFIED | libc::IN_ONLYDIR;
        // SAFETY: the descriptor is ours and open; `path` is a NUL-terminated string that lives
        // through the call.
        let wd = unsafe { libc::inotify_add_watch(self.0.as_raw_fd(), path.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The descriptor, to be registered with the reactor.
    pub fn try_clone_file(&self) -> io::Result<File> {
        self.0.try_clone()
    }

    /// Reads the events waiting and returns the union of their masks (0 when none waited).
    pub fn drain(&self, buf: &mut [u8]) -> io::Result<u32> {
        let mut mask = 0;
        loop {
            let n = match (&self.0).read(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(mask),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(mask);
            }
            mask |= event_masks(&buf[..n]);
        }
    }
}

/// The union of the masks of the `struct inotify_event`s in `buf` (wd, mask, cookie, len, then
/// `len` bytes of name).
fn event_masks(buf: &[u8]) -> u32 {
    let mut mask = 0;
    let mut at = 0;
    while let Some(head) = buf.get(at..at + 16) {
        let word = |i: usize| u32::from_ne_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        mask |= word(4);
        at += 16 + word(12) as usize;
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_and_written_file_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let ino = Inotify::new().unwrap();
        ino.watch_dir(dir.path()).unwrap();
        let mut buf = vec![0u8; 4096];
        assert_eq!(ino.drain(&mut buf).unwrap(), 0);
        std::fs::write(dir.path().join("a.log"), b"x\n").unwrap();
        let mask = ino.drain(&mut buf).unwrap();
        assert_ne!(mask & CREATED, 0, "{mask:#x}");
        assert_ne!(mask & MODIFIED, 0, "{mask:#x}");
        std::fs::remove_file(dir.path().join("a.log")).unwrap();
        assert_ne!(ino.drain(&mut buf).unwrap() & REMOVED, 0);
        assert!(ino.watch_dir(&dir.path().join("missing")).is_err());
    }
}
