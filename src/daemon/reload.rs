//! Reload: replacing the running configuration. Unchanged listeners keep their sockets and
//! connections, unchanged outputs their queues and files; a changed listener on the same
//! endpoint takes its predecessor's socket over; routes switch between two batches.

use std::sync::Arc;

use super::bind::BoundListener;
use super::{Daemon, RunningListener};
use crate::config::Config;
use crate::output::ReopenFiles;

/// Why a reload did not take effect, or took effect only in part.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// Nothing changed: the running configuration stays.
    #[error("{0}")]
    Refused(String),
    /// The new configuration runs, but these listeners could not be started.
    #[error("applied, but {} listener(s) failed to start: {}", .0.len(), .0.join("; "))]
    Partial(Vec<String>),
    /// The daemon is not running, or stopped before it answered.
    #[error("{0}")]
    NotRunning(&'static str),
}

/// A request to replace the running configuration, with where to say how it went.
#[derive(Debug)]
pub(super) struct ReloadRequest {
    pub(super) config: Config,
    pub(super) done: tokio::sync::oneshot::Sender<Result<(), ReloadError>>,
}

/// Steers a running daemon: SIGHUP's effects and configuration reloads.
#[derive(Debug, Clone)]
pub struct Control {
    hangup: Hangup,
    reload: tokio::sync::mpsc::UnboundedSender<ReloadRequest>,
}

impl Control {
    pub(super) fn new(
        hangup: Hangup,
    ) -> (Control, tokio::sync::mpsc::UnboundedReceiver<ReloadRequest>) {
        let (reload, rx) = tokio::sync::mpsc::unbounded_channel();
        (Control { hangup, reload }, rx)
    }

    /// SIGHUP's file reopening and certificate reloading.
    pub fn hangup(&self) -> &Hangup {
        &self.hangup
    }

    /// Replaces the running configuration with `config` (already validated). Unchanged
    /// listeners keep their sockets and connections, unchanged outputs their queues and files;
    /// routes switch between two batches. On [`ReloadError::Refused`] nothing changed.
    pub async fn reload(&self, config: Config) -> Result<(), ReloadError> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.reload
            .send(ReloadRequest { config, done })
            .map_err(|_| ReloadError::NotRunning("sluice is not running"))?;
        result
            .await
            .map_err(|_| ReloadError::NotRunning("sluice stopped before the reload finished"))?
    }

    /// [`Control::reload`] for callers outside the runtime.
    pub fn reload_blocking(&self, config: Config) -> Result<(), ReloadError> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.reload
            .send(ReloadRequest { config, done })
            .map_err(|_| ReloadError::NotRunning("sluice is not running"))?;
        result
            .blocking_recv()
            .map_err(|_| ReloadError::NotRunning("sluice stopped before the reload finished"))?
    }
}

/// SIGHUP, fanned out: file outputs reopen their files (after logrotate moved them), TLS
/// listeners reload their certificates.
#[derive(Debug, Clone)]
pub struct Hangup {
    watch: Arc<tokio::sync::watch::Sender<u64>>,
    pub(super) files: ReopenFiles,
}

impl Hangup {
    pub(super) fn new(files: ReopenFiles) -> Hangup {
        Hangup {
            watch: Arc::new(tokio::sync::watch::channel(0).0),
            files,
        }
    }

    /// Tells every subscriber that SIGHUP arrived.
    pub fn signal(&self) {
        self.files.request();
        self.watch.send_modify(|n| *n += 1);
    }

    /// A receiver that sees each later [`Hangup::signal`].
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.watch.subscribe()
    }
}

impl RunningListener {
    /// Whether this listener's socket serves `endpoint`: as configured, or as bound (a port 0
    /// in the configuration became a real one).
    fn serves(&self, endpoint: &crate::listen::Endpoint) -> bool {
        self.config.kind.endpoint() == *endpoint
            || self.socket.bound_endpoint().as_ref() == Some(endpoint)
    }
}

impl Daemon {
    /// Applies a new configuration; on [`ReloadError::Refused`] nothing has changed.
    pub(super) async fn reload(&mut self, new: Config) -> Result<(), ReloadError> {
        let fresh = self.bind_changed_listeners(&new)?;
        // Outputs: unchanged ones keep their queue and files; changed and new ones start now.
        // On error, dropping `outputs` and `fresh` closes the queues just started (their
        // threads end) and the sockets just bound.
        // An output whose dead-letter output starts anew starts anew too, so that it hands its
        // refusals to the new one (dead-letter outputs start first).
        let mut outputs: Vec<(crate::output::OutputConfig, crate::output::OutputHandle)> =
            Vec::new();
        let mut restarted: Vec<Arc<str>> = Vec::new();
        for o in super::start_order(&new.outputs) {
            let target_restarted = o
                .kind
                .dead_letter()
                .is_some_and(|t| restarted.iter().any(|r| &**r == t));
            match self.outputs.iter().find(|(old, _)| *old == o) {
                Some((_, h)) if !target_restarted => outputs.push((o, h.clone())),
                _ => {
                    let h = self
                        .start_output(&o, &outputs)
                        .map_err(ReloadError::Refused)?;
                    restarted.push(o.name.clone());
                    outputs.push((o, h));
                }
            }
        }
        let started = restarted.len();
        let outputs = super::config_order(&new.outputs, outputs);
        let old = std::mem::replace(&mut self.config, new);
        self.install(outputs);
        // Stop listeners that are gone or changed: they accept no more, and their open
        // connections finish on their own (peer close or idle timeout), routed by the new
        // rules from their next batch on.
        let (keep, retire): (Vec<_>, Vec<_>) = std::mem::take(&mut self.listeners)
            .into_iter()
            .partition(|r| self.config.listeners.contains(&r.config));
        self.listeners = keep;
        for r in retire {
            r.stop.cancel();
            self.stopping.push(r.task);
        }
        let mut failed = Vec::new();
        for mut b in fresh {
            // Past the reload's last step that can fail.
            b.config
                .kind
                .complete_take_over(&b.config.name, &mut b.socket);
            let name = b.config.name.clone();
            if let Err(e) = self.spawn_listener(b) {
                failed.push(format!("listener {name}: {e:#}"));
            }
        }
        if old.daemon.state_dir != self.config.daemon.state_dir {
            tracing::warn!("daemon.state_dir changes take effect at the next start");
        }
        tracing::info!(
            outputs_started = started,
            listeners = self.listeners.len(),
            "reload applied"
        );
        if failed.is_empty() {
            Ok(())
        } else {
            Err(ReloadError::Partial(failed))
        }
    }

    /// Binds what the new configuration's changed and new listeners need, before anything
    /// changes, so a bind failure leaves the running configuration untouched. A changed
    /// listener on a running one's endpoint takes that socket over: no moment without a
    /// socket, and no privilege needed to bind it again.
    fn bind_changed_listeners(&self, new: &Config) -> Result<Vec<BoundListener>, ReloadError> {
        let unchanged =
            |l: &crate::listen::ListenerConfig| self.listeners.iter().any(|r| r.config == *l);
        let mut fresh = Vec::new();
        for l in new.listeners.iter().filter(|l| !unchanged(l)) {
            let endpoint = l.kind.endpoint();
            let socket = match self.listeners.iter().find(|r| r.serves(&endpoint)) {
                Some(r) => r
                    .socket
                    .try_clone()
                    .map_err(anyhow::Error::from)
                    .and_then(|mut s| l.kind.take_over(&l.name, &mut s).map(|()| s)),
                None => l.kind.bind(),
            };
            let socket =
                socket.map_err(|e| ReloadError::Refused(format!("listener {}: {e:#}", l.name)))?;
            fresh.push(BoundListener {
                config: l.clone(),
                socket,
            });
        }
        Ok(fresh)
    }
}
