//! Binding: every listener's socket before any runtime or privilege change, taking the sockets
//! systemd passed where they match.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use super::activation::{describe, take_inherited};
use super::reload::{Control, Hangup, ReloadRequest};
use crate::config::Config;
use crate::listen::{BoundSocket, ListenerConfig};
use crate::metrics::Metrics;
use crate::output::ReopenFiles;
use crate::systemd::{Activation, Notifier};

/// One listener's config with its socket.
#[derive(Debug)]
pub struct BoundListener {
    /// Its configuration.
    pub config: ListenerConfig,
    /// Its socket.
    pub socket: BoundSocket,
}

/// Every socket of a configuration, bound, with the counters the daemon will keep.
#[derive(Debug)]
pub struct Bound {
    /// The listeners in config order.
    pub listeners: Vec<BoundListener>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) control: Control,
    pub(super) reload_rx: tokio::sync::mpsc::UnboundedReceiver<ReloadRequest>,
    pub(super) notifier: Option<Notifier>,
    pub(super) watchdog_interval: Option<std::time::Duration>,
    pub(super) metrics_listener: Option<std::net::TcpListener>,
}

impl Bound {
    /// The real local address of an IP listener (after binding port 0, the port chosen).
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        let l = self.listeners.iter().find(|l| &*l.config.name == name)?;
        l.socket.local_addr()
    }

    /// What main signals on SIGHUP.
    pub fn hangup(&self) -> Hangup {
        self.control.hangup().clone()
    }

    /// The handle that reloads the configuration of the daemon [`super::run`] starts.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// The counters [`super::run`] will update.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }
}

/// Binds every listener's socket. No runtime is needed, so this can run before privileges are
/// dropped.
pub fn bind(config: &Config) -> anyhow::Result<Bound> {
    bind_activated(config, Activation::default())
}

/// [`bind`], taking sockets systemd passed (socket activation) where they match a listener: by
/// local address or path and socket type, else by `FileDescriptorName=` equal to the listener's
/// name. Listeners without one are bound as usual; inherited sockets no listener wants are
/// closed with a warning.
pub fn bind_activated(config: &Config, activation: Activation) -> anyhow::Result<Bound> {
    let mut inherited = activation.sockets;
    let mut listeners = Vec::new();
    for l in &config.listeners {
        let socket = match take_inherited(&mut inherited, l)
            .with_context(|| format!("listener {}", l.name))?
        {
            Some(socket) => {
                tracing::info!(listener = %l.name, "using a socket passed by systemd");
                socket
            }
            None => l
                .kind
                .bind()
                .with_context(|| format!("listener {}", l.name))?,
        };
        listeners.push(BoundListener {
            config: l.clone(),
            socket,
        });
    }
    for s in inherited {
        tracing::warn!(
            name = s.name.as_deref().unwrap_or("-"),
            address = %describe(&s.socket),
            "systemd passed a socket no listener is configured for; closing it"
        );
    }
    let metrics = Arc::new(Metrics::new(
        config.listeners.iter().map(|l| &l.name),
        config.outputs.iter().map(|o| &o.name),
    ));
    let (control, reload_rx) = Control::new(Hangup::new(ReopenFiles::default()));
    Ok(Bound {
        listeners,
        metrics,
        control,
        reload_rx,
        notifier: activation.notifier,
        watchdog_interval: activation.watchdog_interval,
        metrics_listener: config
            .daemon
            .metrics_address
            .map(|a| crate::listen::stream::bind(a).with_context(|| format!("metrics_address {a}")))
            .transpose()?,
    })
}
