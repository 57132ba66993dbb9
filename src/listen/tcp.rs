//! The `tcp` listener: plain TCP, served by the stream server ([`super::stream`]) with RFC 6587
//! framing detected per frame.

use super::kind::{
    BoundSocket, Endpoint, ListenerDescriptors, ListenerKindSpec, StartContext, adopted,
    log_listening, wrong_socket,
};
use super::settings::{ConnectionSettings, Network};
use super::stream::StreamListener;
use crate::decode::{Entry, Errors};

/// `kind = "tcp"`.
pub const KIND: &str = "tcp";

/// The settings of a `tcp` listener.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpSettings {
    /// Address and sender filter.
    pub network: Network,
    /// Limits and framing of each connection.
    pub connections: ConnectionSettings,
}

impl ListenerKindSpec for TcpSettings {
    const KIND: &'static str = KIND;

    fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<TcpSettings> {
        let network = Network::decode(entry, errs);
        let connections = ConnectionSettings::decode(entry, errs);
        Some(TcpSettings {
            network: network?,
            connections: connections?,
        })
    }

    fn decode_endpoint(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<Endpoint> {
        Network::decode(entry, errs).map(|n| Endpoint::Tcp(n.address))
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::Tcp(self.network.address)
    }

    fn descriptors(&self) -> ListenerDescriptors {
        ListenerDescriptors {
            connections: self.connections.max_connections,
            sockets: 1,
        }
    }

    fn bind(&self) -> anyhow::Result<BoundSocket> {
        Ok(BoundSocket::Tcp(super::stream::bind(self.network.address)?))
    }

    fn adopt(&self, _name: &str, socket: socket2::Socket) -> anyhow::Result<BoundSocket> {
        Ok(BoundSocket::Tcp(adopted(socket, true)?.into()))
    }

    fn take_over(&self, _name: &str, socket: &mut BoundSocket) -> anyhow::Result<()> {
        match socket {
            BoundSocket::Tcp(_) => Ok(()),
            other => Err(wrong_socket(KIND, other)),
        }
    }

    fn start(
        &self,
        socket: BoundSocket,
        ctx: StartContext<'_>,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let BoundSocket::Tcp(listener) = socket else {
            return Err(wrong_socket(KIND, &socket));
        };
        log_listening(&ctx.config.name, KIND, listener.local_addr());
        let listener = StreamListener::tcp(listener)?;
        Ok(super::stream::serve(
            listener,
            &self.connections,
            self.network.allowed_sources.clone(),
            None,
            super::stream::Speech::Syslog,
            ctx,
        ))
    }
}
