//! The `unix_stream` listener: a unix stream socket (glibc's syslog(3) falls back to one;
//! syslog-ng's `unix-stream`), served by the stream server ([`super::stream`]).

use super::kind::StartContext;
use super::settings::{ConnectionSettings, SocketFile};
use super::stream::StreamListener;
use crate::decode::{Entry, Errors};

/// `kind = "unix_stream"`.
pub const KIND: &str = "unix_stream";

/// The settings of a `unix_stream` listener.
#[derive(Debug, Clone, PartialEq)]
pub struct UnixStreamSettings {
    /// The socket file.
    pub socket: SocketFile,
    /// Limits and framing of each connection.
    pub connections: ConnectionSettings,
}

impl UnixStreamSettings {
    /// Reads `[listen.NAME]` of kind `unix_stream`.
    pub fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<UnixStreamSettings> {
        let socket = SocketFile::decode(entry, errs);
        // glibc's syslog(3) over a stream socket ends each message with a NUL.
        let connections = ConnectionSettings::decode(entry, errs, true);
        Some(UnixStreamSettings {
            socket: socket?,
            connections: connections?,
        })
    }

    pub(super) fn start(
        &self,
        listener: std::os::unix::net::UnixListener,
        ctx: StartContext<'_>,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        tracing::info!(listener = %ctx.config.name, kind = KIND, path = %self.socket.path.display(), "listening");
        let listener = StreamListener::unix(listener)?;
        Ok(super::stream::serve(
            listener,
            &self.connections,
            None,
            None,
            ctx,
        ))
    }
}
