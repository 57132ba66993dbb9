//! Dropping root after the sockets are bound: `[daemon] user`, `group` and
//! `supplementary_groups`. Runs before the async runtime starts threads, so every thread runs as
//! the new user from its start. The system calls themselves are in [`crate::sys::users`].

use std::ffi::{CStr, CString};

use crate::sys::users::{self as sys, LookupError};

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
    let failed = |call: String| move |source| DropError::Call { call, source };
    let groups = &run_as.groups;
    sys::set_groups(groups).map_err(failed(format!("setgroups({groups:?})")))?;
    sys::set_resgid(run_as.gid).map_err(failed(format!("setresgid({})", run_as.gid)))?;
    sys::set_resuid(run_as.uid).map_err(failed(format!("setresuid({})", run_as.uid)))?;
    if run_as.uid != 0 {
        // Both calls must fail for an unprivileged user.
        let regained = sys::set_uid(0).is_ok() || (run_as.gid != 0 && sys::set_gid(0).is_ok());
        if regained {
            return Err(DropError::Regained(run_as.to_string()));
        }
    }
    Ok(())
}

/// What `--check-config` runs in a child process (see [`crate::sys::process::run_in_child`]) to see the
/// file system as the daemon will after its drop, ACLs and read-only mounts included: drops to
/// `run_as`, then runs `check`. Returns the child's exit code. Drops the privileges of the
/// process that calls it, for good.
pub fn check_as(run_as: &RunAs, check: impl FnOnce() -> u8) -> u8 {
    match drop_to(run_as) {
        Ok(()) => check(),
        Err(e) => {
            eprintln!("cannot drop privileges to {run_as}: {e}");
            1
        }
    }
}

/// A user name or numeric id to a uid (for `owner`).
pub fn lookup_user(name: &str) -> Result<u32, String> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    lookup_passwd(name, |u| u.uid)
}

/// A user name's primary gid (for `[daemon] user` without `group`).
pub fn lookup_user_gid(name: &str) -> Result<u32, String> {
    lookup_passwd(name, |u| u.gid)
}

fn lookup_passwd(name: &str, field: fn(&sys::User) -> u32) -> Result<u32, String> {
    lookup(name, |c| sys::user_by_name(c).map(|u| field(&u)))
        .map_err(|e| format!("unknown user {name:?}{e}"))
}

/// A group name or numeric id to a gid (for `group`).
pub fn lookup_group(name: &str) -> Result<u32, String> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    lookup(name, sys::group_by_name).map_err(|e| format!("unknown group {name:?}{e}"))
}

/// Runs a lookup by name. The error text is empty for "no such name", else ": <reason>".
fn lookup(name: &str, call: impl FnOnce(&CStr) -> Result<u32, LookupError>) -> Result<u32, String> {
    let c = CString::new(name.as_bytes()).map_err(|_| ": contains NUL".to_string())?;
    call(&c).map_err(|e| match e {
        LookupError::NotFound => String::new(),
        LookupError::Os(e) => format!(": {e}"),
    })
}
