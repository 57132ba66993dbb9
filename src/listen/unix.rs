//! The `unix` listener, a datagram socket like /dev/log: its settings and binding (shared with
//! `unix_stream`, its stream twin, in [`super::unix_stream`]). Reading is the shared datagram
//! loop in [`super::run_datagram`].

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::Path;

use anyhow::{Context, bail};

use super::kind::{
    BoundSocket, Endpoint, ListenerDescriptors, ListenerKindSpec, StartContext, adopted,
    wrong_socket,
};
use super::settings::SocketFile;
use crate::decode::{Entry, Errors};

/// `kind = "unix"`.
pub const KIND: &str = "unix";

/// The settings of a `unix` listener.
#[derive(Debug, Clone, PartialEq)]
pub struct UnixSettings {
    /// The socket file.
    pub socket: SocketFile,
}

impl ListenerKindSpec for UnixSettings {
    const KIND: &'static str = KIND;

    fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<UnixSettings> {
        Some(UnixSettings {
            socket: SocketFile::decode(entry, errs)?,
        })
    }

    fn decode_endpoint(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<Endpoint> {
        SocketFile::decode(entry, errs).map(|s| Endpoint::Unix {
            path: s.path,
            stream: false,
        })
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::Unix {
            path: self.socket.path.clone(),
            stream: false,
        }
    }

    fn descriptors(&self) -> ListenerDescriptors {
        ListenerDescriptors {
            connections: 0,
            sockets: 1,
        }
    }

    fn check_environment(
        &self,
        key: &str,
        problems: &mut Vec<String>,
        _tls: &mut crate::tls::FileCheck,
    ) {
        self.socket.check_environment(key, problems);
    }

    fn bind(&self) -> anyhow::Result<BoundSocket> {
        Ok(BoundSocket::Unix(bind(
            &self.socket.path,
            self.socket.mode,
        )?))
    }

    fn adopt(&self, _name: &str, socket: socket2::Socket) -> anyhow::Result<BoundSocket> {
        Ok(BoundSocket::Unix(adopted(socket, false)?.into()))
    }

    /// The socket file's mode applied anew.
    fn take_over(&self, _name: &str, socket: &mut BoundSocket) -> anyhow::Result<()> {
        match socket {
            BoundSocket::Unix(_) => set_mode(&self.socket.path, self.socket.mode),
            other => Err(wrong_socket(KIND, other)),
        }
    }

    fn start(
        &self,
        socket: BoundSocket,
        ctx: StartContext<'_>,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let BoundSocket::Unix(socket) = socket else {
            return Err(wrong_socket(KIND, &socket));
        };
        tracing::info!(listener = %ctx.config.name, kind = KIND, path = %self.socket.path.display(), "listening");
        let s = tokio::net::UnixDatagram::from_std(socket).context("registering unix socket")?;
        Ok(tokio::spawn(super::run_datagram(
            super::DatagramSocket::Unix(s),
            ctx.datagram_settings(None),
            ctx.pipeline.clone(),
            ctx.stop.clone(),
            ctx.hard_stop.clone(),
            Vec::new(),
        )))
    }
}

/// Binds a unix datagram socket at `path` with permission bits `mode` (0666 so every local
/// program can log). A stale socket file left by a dead daemon is replaced; a socket some live
/// process still serves is not stolen.
pub fn bind(path: &Path, mode: u32) -> anyhow::Result<UnixDatagram> {
    clear_stale(path, |p| {
        UnixDatagram::unbound().and_then(|probe| probe.connect(p))
    })?;
    let socket = UnixDatagram::bind(path)
        .with_context(|| format!("binding unix socket {}", path.display()))?;
    set_mode(path, mode)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// [`bind`] for a unix stream socket (`unix_stream`), listening.
pub fn bind_stream(path: &Path, mode: u32) -> anyhow::Result<UnixListener> {
    clear_stale(path, |p| UnixStream::connect(p).map(drop))?;
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding unix stream socket {}", path.display()))?;
    set_mode(path, mode)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Removes a socket file at `path` that nothing serves any more (`connect` is refused);
/// refuses to touch one a live process serves (a socket of the other type answers with
/// EPROTOTYPE, not a refusal), or a file that is not a socket.
fn clear_stale(path: &Path, connect: impl Fn(&Path) -> std::io::Result<()>) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            let stale = matches!(connect(path), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused);
            if !stale {
                bail!(
                    "{} is in use by another process (is another syslog daemon running?)",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Err(_) => Ok(()),
    }
}

pub(super) fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode {mode:o} on {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_stream_socket_is_replaced_and_a_served_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let first = bind_stream(&path, 0o666).unwrap();
        let e = bind_stream(&path, 0o666).unwrap_err();
        assert!(
            format!("{e:#}").contains("in use by another process"),
            "{e:#}"
        );
        // A daemon that died leaves the file behind: nobody accepts there any more.
        drop(first);
        let _second = bind_stream(&path, 0o640).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        // A live datagram socket (a running /dev/log) is not taken for a stale stream one.
        let dgram_path = dir.path().join("d.sock");
        let _dgram = bind(&dgram_path, 0o666).unwrap();
        let e = bind_stream(&dgram_path, 0o666).unwrap_err();
        assert!(
            format!("{e:#}").contains("in use by another process"),
            "{e:#}"
        );
        assert!(dgram_path.exists());
        std::fs::write(dir.path().join("plain"), "").unwrap();
        let e = bind_stream(&dir.path().join("plain"), 0o666).unwrap_err();
        assert!(format!("{e:#}").contains("is not a socket"), "{e:#}");
    }
}
