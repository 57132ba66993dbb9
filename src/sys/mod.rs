//! System calls that std does not wrap, each behind a safe function whose `// SAFETY:` comment
//! states what makes it sound. This is the one module of the crate allowed `unsafe` code: the
//! rest reaches libc, raw descriptors and the environment through here.
//!
//! Here: clocks, the host name, the effective user, the descriptor limit, transparent huge
//! pages, and whether a directory could take a new file. In submodules:
//! - [`users`]: dropping root (setgroups, setresgid, setresuid) and passwd/group lookups;
//! - [`net`]: recvmmsg(2) for UDP and SO_RCVBUFFORCE;
//! - [`fd`]: the sockets systemd passes, and files watched by the tokio reactor;
//! - [`inotify`]: directory watches that wake the tail listener;
//! - [`process`]: fork and environment changes, the two `unsafe fn`s, sound only while the
//!   process is single-threaded, which only the `sluice` binary's `main` can promise.

pub mod fd;
pub mod inotify;
pub mod net;
pub mod process;
pub mod users;

use std::path::Path;
use std::time::Duration;

/// A clock's reading.
fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid pointer given.
    unsafe { libc::clock_gettime(id, &mut ts) };
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// CLOCK_MONOTONIC: what systemd wants with RELOADING=1, and what kernel log stamps count from
/// (minus suspend).
pub fn monotonic() -> Duration {
    clock(libc::CLOCK_MONOTONIC)
}

/// CLOCK_BOOTTIME: time since boot, suspend included.
pub fn boottime() -> Duration {
    clock(libc::CLOCK_BOOTTIME)
}

/// The host name the kernel holds, if it is UTF-8 and not empty.
pub fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its full length; gethostname NUL-terminates or truncates.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match (rc, std::str::from_utf8(&buf[..end])) {
        (0, Ok(s)) if !s.is_empty() => Some(s.to_string()),
        _ => None,
    }
}

/// The soft and hard RLIMIT_NOFILE, `u64::MAX` standing for unlimited.
pub fn nofile_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the valid pointer given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Sets RLIMIT_NOFILE; raising the soft limit up to the hard one needs no privilege.
pub fn set_nofile_limit(soft: u64, hard: u64) -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads one valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Turns transparent huge pages off for this process and what it starts (PR_SET_THP_DISABLE).
///
/// mimalloc asks for huge pages on its arenas (MADV_HUGEPAGE). Queued events then touch fresh
/// memory scattered over many 2 MiB regions, and the kernel zeroes a whole 2 MiB page at the
/// first touch of each: on the mixed benchmark that zeroing was most of sluice's system time.
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and only sets a flag on the
    // process's memory map.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether transparent huge pages are off for this process (PR_GET_THP_DISABLE).
pub fn transparent_huge_pages_disabled() -> bool {
    // SAFETY: prctl with PR_GET_THP_DISABLE takes no pointers and returns the flag.
    unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1 }
}

/// Whether the process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `dir` exists as a directory a file can be created in, or could be created under its
/// nearest existing ancestor. A file is really created (and removed) in the directory found: a
/// permission check alone passes for root where the file system refuses (sysfs, a read-only
/// mount).
pub fn creatable_dir(dir: &Path) -> Result<(), String> {
    let mut cur = dir;
    loop {
        if cur.as_os_str().is_empty() {
            cur = Path::new(".");
        }
        match std::fs::metadata(cur) {
            Ok(m) if m.is_dir() => return can_create_in(cur),
            Ok(_) => return Err(format!("{} is not a directory", cur.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match cur.parent() {
                Some(p) => cur = p,
                None => return Err("no existing ancestor".into()),
            },
            // Permission denied on the way: nothing below can be created either.
            Err(e) => return Err(format!("{}: {e}", cur.display())),
        }
    }
}

/// Creates and removes a probe file in `dir`.
fn can_create_in(dir: &Path) -> Result<(), String> {
    let probe = dir.join(format!(".sluice-check-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!("{} does not take new files: {e}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creatable_below_a_temp_dir_and_not_below_a_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(creatable_dir(&dir.path().join("a/b")).is_ok());
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(creatable_dir(&file.join("sub")).is_err());
        // The probe leaves nothing behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn proc_takes_no_new_files_even_for_root() {
        assert!(creatable_dir(Path::new("/proc/sluice-test")).is_err());
    }

    #[test]
    fn transparent_huge_pages_turn_off() {
        disable_transparent_huge_pages().unwrap();
        assert!(transparent_huge_pages_disabled());
    }

    #[test]
    fn clocks_advance() {
        let a = monotonic();
        assert!(monotonic() >= a);
        assert!(boottime() >= a.min(boottime()));
    }
}
