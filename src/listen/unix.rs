//! The `unix` listener: a datagram socket like /dev/log. Reading is the shared datagram loop in
//! [`super::run_datagram`].

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use anyhow::{Context, bail};

/// Binds a unix datagram socket at `path` with permission bits `mode` (0666 so every local
/// program can log). A stale socket file left by a dead daemon is replaced; a socket some live
/// process still serves is not stolen.
pub fn bind(path: &Path, mode: u32) -> anyhow::Result<UnixDatagram> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            let probe = UnixDatagram::unbound().context("creating probe socket")?;
            if probe.connect(path).is_ok() {
                bail!(
                    "{} is in use by another process (is another syslog daemon running?)",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?;
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Err(_) => {}
    }
    let socket = UnixDatagram::bind(path)
        .with_context(|| format!("binding unix socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode {mode:o} on {}", path.display()))?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}
