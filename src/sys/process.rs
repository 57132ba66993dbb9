//! Calls that are sound only while the process has a single thread: forking, and changing the
//! environment. They are `unsafe fn`s: no check here can prove the condition, so the caller
//! states it (the `sluice` binary, first thing in `main`).

use std::io;

/// Runs `child` in a forked child process, which exits with the code it returns; returns that
/// code (1 if the child did not exit normally).
///
/// # Safety
///
/// Call while the process is single-threaded: the child of a fork may only use what no other
/// thread could have held locked (the allocator, stdio, the environment).
pub unsafe fn run_in_child(child: impl FnOnce() -> u8) -> io::Result<u8> {
    // SAFETY: the caller guarantees a single thread, so the child inherits no held locks.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => std::process::exit(child().into()),
        pid => {
            let mut status = 0;
            // SAFETY: waits for the child just forked; status is a valid out-parameter.
            if unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status) as u8
            } else {
                1
            })
        }
    }
}

/// Removes `keys` from the environment, so nothing this process starts inherits them.
///
/// # Safety
///
/// No other thread may read or write the environment meanwhile ([`std::env::remove_var`]'s
/// contract): call while the process is single-threaded.
pub unsafe fn remove_env_vars(keys: &[&str]) {
    for k in keys {
        // SAFETY: the caller guarantees no other thread reads or writes the environment.
        unsafe { std::env::remove_var(k) };
    }
}
