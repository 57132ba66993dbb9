//! Users and groups: the set*id calls that drop root, and the reentrant passwd and group
//! lookups.

use std::ffi::CStr;
use std::io;

/// A return code of 0 as `Ok`, else the OS error, read at once (before anything may reset it).
fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// setgroups(2): the supplementary groups; empty clears them.
pub fn set_groups(groups: &[u32]) -> io::Result<()> {
    // SAFETY: the pointer and length describe `groups`, which outlives the call; the kernel only
    // reads from it.
    check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) })
}

/// setresgid(2) with the real, effective and saved gid all set to `gid`, so no saved id is left
/// to return to.
pub fn set_resgid(gid: u32) -> io::Result<()> {
    // SAFETY: a system call on integers; no memory is passed.
    check(unsafe { libc::setresgid(gid, gid, gid) })
}

/// setresuid(2) with the real, effective and saved uid all set to `uid`.
pub fn set_resuid(uid: u32) -> io::Result<()> {
    // SAFETY: a system call on integers; no memory is passed.
    check(unsafe { libc::setresuid(uid, uid, uid) })
}

/// setuid(2).
pub fn set_uid(uid: u32) -> io::Result<()> {
    // SAFETY: a system call on an integer; no memory is passed.
    check(unsafe { libc::setuid(uid) })
}

/// setgid(2).
pub fn set_gid(gid: u32) -> io::Result<()> {
    // SAFETY: a system call on an integer; no memory is passed.
    check(unsafe { libc::setgid(gid) })
}

/// What the passwd database holds for a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

/// Why a passwd or group lookup failed.
#[derive(Debug)]
pub enum LookupError {
    /// No entry has that name.
    NotFound,
    /// The lookup itself failed (errno-style code from `get*nam_r`).
    Os(io::Error),
}

/// The user named `name`, with getpwnam_r(3).
pub fn user_by_name(name: &CStr) -> Result<User, LookupError> {
    lookup(|buf| {
        // SAFETY: all-zero bytes are a valid passwd (null pointers and zero ids).
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result = std::ptr::null_mut();
        // SAFETY: `name` is NUL-terminated; getpwnam_r writes the entry into `pwd`, its strings
        // into `buf` within the length passed, and sets `result` to null or to `&pwd`. All of
        // them outlive the call, and only the integer fields are read after it.
        let rc = unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        let user = User {
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        };
        (rc, (!result.is_null()).then_some(user))
    })
}

/// The gid of the group named `name`, with getgrnam_r(3).
pub fn group_by_name(name: &CStr) -> Result<u32, LookupError> {
    lookup(|buf| {
        // SAFETY: all-zero bytes are a valid group (null pointers and a zero gid).
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result = std::ptr::null_mut();
        // SAFETY: as in `user_by_name`, with getgrnam_r and `grp`.
        let rc = unsafe {
            libc::getgrnam_r(
                name.as_ptr(),
                &mut grp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        (rc, (!result.is_null()).then_some(grp.gr_gid))
    })
}

/// Runs a `get*nam_r` call, growing its string buffer on ERANGE (up to 1 MiB).
fn lookup<T>(
    call: impl Fn(&mut [libc::c_char]) -> (libc::c_int, Option<T>),
) -> Result<T, LookupError> {
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        match call(&mut buf) {
            (0, Some(found)) => return Ok(found),
            (0, None) => return Err(LookupError::NotFound),
            (libc::ERANGE, _) if buf.len() < 1 << 20 => buf.resize(buf.len() * 2, 0),
            (rc, _) => return Err(LookupError::Os(io::Error::from_raw_os_error(rc))),
        }
    }
}
