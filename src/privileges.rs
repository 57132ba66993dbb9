//! Dropping root after the sockets are bound: `[daemon] user`, `group` and
//! `supplementary_groups`. Runs before the async runtime starts threads, so every thread runs as
//! the new user from its start.

/// Whom to run as after binding, resolved from names at config time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The user as configured (name or number), for messages.
    pub user: String,
    /// Its uid.
    pub uid: u32,
    /// The primary gid: `group`, else the user's own group.
    pub gid: u32,
    /// Supplementary gids; empty clears root's.
    pub groups: Vec<u32>,
}

impl std::fmt::Display for RunAs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "user {} (uid {}, gid {})", self.user, self.uid, self.gid)
    }
}

/// Why privileges could not be dropped. The daemon must not run on as root then.
#[derive(Debug, thiserror::Error)]
pub enum DropError {
    /// A set*id call failed (not root, or no CAP_SETUID/CAP_SETGID).
    #[error("{call} failed: {source}")]
    Call {
        /// The call, with its argument.
        call: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// After the drop, root could be regained: the drop did not take.
    #[error("privileges could be regained after dropping to {0}")]
    Regained(String),
}

/// Sets the supplementary groups, then the gid, then the uid (in that order: after setuid there
/// is no right left to change groups), and checks that uid 0 and gid 0 cannot be taken back.
/// Call while single-threaded.
pub fn drop_to(run_as: &RunAs) -> Result<(), DropError> {
    let groups: Vec<libc::gid_t> = run_as.groups.clone();
    let call = |name: String, rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(DropError::Call {
                call: name,
                source: std::io::Error::last_os_error(),
            })
        }
    };
    // SAFETY: groups outlives the call and its length is passed with it.
    call(format!("setgroups({groups:?})"), unsafe {
        libc::setgroups(groups.len(), groups.as_ptr())
    })?;
    // SAFETY: plain system calls on integers. setresgid/setresuid set real, effective and saved
    // ids alike, so no saved id 0 is left to return to.
    call(format!("setresgid({})", run_as.gid), unsafe {
        libc::setresgid(run_as.gid, run_as.gid, run_as.gid)
    })?;
    call(format!("setresuid({})", run_as.uid), unsafe {
        libc::setresuid(run_as.uid, run_as.uid, run_as.uid)
    })?;
    if run_as.uid != 0 {
        // SAFETY: as above; both calls must fail for an unprivileged user.
        let regained =
            unsafe { libc::setuid(0) } == 0 || (run_as.gid != 0 && unsafe { libc::setgid(0) } == 0);
        if regained {
            return Err(DropError::Regained(run_as.to_string()));
        }
    }
    Ok(())
}

/// Runs `check` in a child process that has dropped to `run_as`, and returns its result (an
/// exit code): how `--check-config` sees the file system as the daemon will after its drop,
/// ACLs and read-only mounts included.
///
/// # Safety
///
/// Call while the process is single-threaded: the child of a fork may only use what no other
/// thread could have held locked.
pub unsafe fn check_as(run_as: &RunAs, check: impl FnOnce() -> u8) -> std::io::Result<u8> {
    // SAFETY: the caller guarantees a single thread, so the child inherits no held locks.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => {
            let code = match drop_to(run_as) {
                Ok(()) => check(),
                Err(e) => {
                    eprintln!("cannot drop privileges to {run_as}: {e}");
                    1
                }
            };
            std::process::exit(code.into())
        }
        pid => {
            let mut status = 0;
            // SAFETY: waits for the child just forked; status is a valid out-parameter.
            if unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status) as u8
            } else {
                1
            })
        }
    }
}

/// A user name or numeric id to a uid (for `owner`).
pub fn lookup_user(name: &str) -> Result<u32, String> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    lookup_passwd(name, |pwd| pwd.pw_uid)
}

/// A user name's primary gid (for `[daemon] user` without `group`).
pub fn lookup_user_gid(name: &str) -> Result<u32, String> {
    lookup_passwd(name, |pwd| pwd.pw_gid)
}

fn lookup_passwd(name: &str, field: fn(&libc::passwd) -> u32) -> Result<u32, String> {
    lookup(name, |c, buf| {
        // SAFETY: an all-zero passwd is a valid out-parameter; getpwnam_r writes into it and into
        // buf (its strings), within buf's length; result is set to null or to &pwd.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result = std::ptr::null_mut();
        let rc = unsafe {
            libc::getpwnam_r(
                c.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        (rc, (!result.is_null()).then_some(field(&pwd)))
    })
    .map_err(|e| format!("unknown user {name:?}{e}"))
}

/// A group name or numeric id to a gid (for `group`).
pub fn lookup_group(name: &str) -> Result<u32, String> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    lookup(name, |c, buf| {
        // SAFETY: as in lookup_user, with getgrnam_r and a zeroed group.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result = std::ptr::null_mut();
        let rc = unsafe {
            libc::getgrnam_r(
                c.as_ptr(),
                &mut grp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        (rc, (!result.is_null()).then_some(grp.gr_gid))
    })
    .map_err(|e| format!("unknown group {name:?}{e}"))
}

/// Runs a `get*nam_r` call, growing its string buffer on ERANGE. The error text is empty for "no
/// such name", else ": <reason>".
fn lookup(
    name: &str,
    call: impl Fn(&std::ffi::CString, &mut [libc::c_char]) -> (libc::c_int, Option<u32>),
) -> Result<u32, String> {
    let c = std::ffi::CString::new(name.as_bytes()).map_err(|_| ": contains NUL".to_string())?;
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        match call(&c, &mut buf) {
            (0, Some(id)) => return Ok(id),
            (0, None) => return Err(String::new()),
            (libc::ERANGE, _) if buf.len() < 1 << 20 => buf.resize(buf.len() * 2, 0),
            (rc, _) => return Err(format!(": {}", std::io::Error::from_raw_os_error(rc))),
        }
    }
}
