//! The `tcp` listener: plain TCP, served by the stream server ([`super::stream`]) with RFC 6587
//! framing detected per frame.

use super::kind::{StartContext, log_listening};
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

impl TcpSettings {
    /// Reads `[listen.NAME]` of kind `tcp`.
    pub fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<TcpSettings> {
        let network = Network::decode(entry, errs);
        let connections = ConnectionSettings::decode(entry, errs, false);
        Some(TcpSettings {
            network: network?,
            connections: connections?,
        })
    }

    pub(super) fn start(
        &self,
        listener: std::net::TcpListener,
        ctx: StartContext<'_>,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        log_listening(&ctx.config.name, KIND, listener.local_addr());
        let listener = StreamListener::tcp(listener)?;
        Ok(super::stream::serve(
            listener,
            &self.connections,
            self.network.allowed_sources.clone(),
            None,
            ctx,
        ))
    }
}
