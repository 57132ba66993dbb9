//! The `unix_stream` listener: a unix stream socket (glibc's syslog(3) falls back to one;
//! syslog-ng's `unix-stream`), served by the stream server ([`super::stream`]).

use super::kind::{
    BoundSocket, Endpoint, ListenerDescriptors, ListenerKindSpec, StartContext, adopted,
    wrong_socket,
};
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

impl ListenerKindSpec for UnixStreamSettings {
    const KIND: &'static str = KIND;

    fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<UnixStreamSettings> {
        let socket = SocketFile::decode(entry, errs);
        // glibc's syslog(3) over a stream socket ends each message with a NUL.
        let connections = ConnectionSettings::decode(entry, errs);
        Some(UnixStreamSettings {
            socket: socket?,
            connections: connections?,
        })
    }

    fn decode_endpoint(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<Endpoint> {
        SocketFile::decode(entry, errs).map(|s| Endpoint::Unix {
            path: s.path,
            stream: true,
        })
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::Unix {
            path: self.socket.path.clone(),
            stream: true,
        }
    }

    fn descriptors(&self) -> ListenerDescriptors {
        ListenerDescriptors {
            connections: self.connections.max_connections,
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
        let listener = super::unix::bind_stream(&self.socket.path, self.socket.mode)?;
        Ok(BoundSocket::UnixStream(listener))
    }

    fn adopt(&self, _name: &str, socket: socket2::Socket) -> anyhow::Result<BoundSocket> {
        Ok(BoundSocket::UnixStream(adopted(socket, false)?.into()))
    }

    /// The socket file's mode applied anew.
    fn take_over(&self, _name: &str, socket: &mut BoundSocket) -> anyhow::Result<()> {
        match socket {
            BoundSocket::UnixStream(_) => {
                super::unix::set_mode(&self.socket.path, self.socket.mode)
            }
            other => Err(wrong_socket(KIND, other)),
        }
    }

    fn start(
        &self,
        socket: BoundSocket,
        ctx: StartContext<'_>,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let BoundSocket::UnixStream(listener) = socket else {
            return Err(wrong_socket(KIND, &socket));
        };
        tracing::info!(listener = %ctx.config.name, kind = KIND, path = %self.socket.path.display(), "listening");
        let listener = StreamListener::unix(listener)?;
        Ok(super::stream::serve(
            listener,
            &self.connections,
            None,
            None,
            super::stream::Speech::Syslog,
            ctx,
        ))
    }
}
