//! Wiring: [`bind`] every socket (before any runtime or privilege change), then [`run`] the
//! listeners and outputs until the shutdown token fires, and drain. Binding and systemd's
//! sockets are in `bind` and `activation`; replacing the configuration is in `reload`.
//!
//! Shutdown order (ARCHITECTURE.md, "Shutdown"): stop accepting; datagram listeners read their
//! sockets empty; open connections are read until their peer closes or `shutdown_timeout`
//! passes; then every output queue closes (its last sender is dropped), drains, flushes and
//! fsyncs.

mod activation;
mod bind;
mod reload;

pub use bind::{Bound, BoundListener, bind, bind_activated};
pub use reload::{Control, Hangup, ReloadError};

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::listen::{BoundSocket, ListenerConfig, Pipeline, Routing, StartContext};
use crate::metrics::Metrics;
use crate::output::{OutputConfig, OutputHandle, OutputStart};
use crate::route::RuleTable;
use crate::systemd::Notifier;

/// Serves `bound` under `config` until `shutdown` is cancelled, then drains and returns.
/// Meanwhile it applies configuration reloads sent through [`Bound::control`].
pub async fn run(config: Config, bound: Bound, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Bound {
        listeners,
        metrics,
        control,
        mut reload_rx,
        notifier,
        watchdog_interval,
        metrics_listener,
    } = bound;
    let mut d = Daemon::new(config, metrics.clone(), control.hangup().clone(), &shutdown);
    d.start(listeners)?;
    let exporter = match metrics_listener {
        Some(l) => Some(serve_metrics(l, metrics.clone(), shutdown.clone())?),
        None => None,
    };
    // Every socket is bound and every output (with its disk queue) started: systemd may now
    // start the units ordered after this one.
    let notifier = notifier.map(Arc::new);
    if let Some(n) = &notifier {
        n.notify("READY=1");
        if let Some(interval) = watchdog_interval {
            tokio::spawn(watchdog(n.clone(), interval, shutdown.clone()));
        }
    }
    tracing::info!(
        config = %d.config.origin,
        listeners = d.config.listeners.len(),
        outputs = d.config.outputs.len(),
        routes = d.config.routes.len(),
        "sluice started"
    );
    let stats = tokio::spawn(log_stats(
        metrics.clone(),
        d.config.daemon.stats_interval,
        shutdown.clone(),
    ));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(req) = reload_rx.recv() => d.apply_reload(req, notifier.as_deref()).await,
        }
    }
    if let Some(n) = &notifier {
        n.notify("STOPPING=1");
    }
    stats.abort();
    d.stop().await?;
    if let Some(e) = exporter {
        let _ = e.await;
    }
    tracing::info!(counters = %metrics.summary(), "stopped");
    Ok(())
}

/// Starts the Prometheus endpoint on its bound socket.
fn serve_metrics(
    listener: std::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    crate::listen::log_listening("metrics", "prometheus", listener.local_addr());
    let listener =
        tokio::net::TcpListener::from_std(listener).context("registering metrics socket")?;
    Ok(tokio::spawn(crate::exporter::serve(
        listener, metrics, shutdown,
    )))
}

/// Tells systemd every `interval` that the runtime still schedules tasks, until shutdown.
async fn watchdog(
    notifier: Arc<Notifier>,
    interval: std::time::Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => notifier.notify("WATCHDOG=1"),
        }
    }
}

/// Logs the counters every `interval` until shutdown.
async fn log_stats(
    metrics: Arc<Metrics>,
    interval: std::time::Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => tracing::info!(counters = %metrics.summary(), "stats"),
        }
    }
}

/// A listener task and how to stop it alone.
struct RunningListener {
    config: ListenerConfig,
    /// A duplicate of the task's socket.
    socket: BoundSocket,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// The running daemon: its configuration, listener tasks and output threads.
struct Daemon {
    config: Config,
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    hangup: Hangup,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
    /// Current outputs in config order (the routing's indices).
    outputs: Vec<(OutputConfig, OutputHandle)>,
    /// Every output thread ever started, by output name; joined at the end (a removed output's
    /// thread ends once its last batch is written).
    threads: Vec<(Arc<str>, std::thread::JoinHandle<()>)>,
    listeners: Vec<RunningListener>,
    /// Tasks of listeners removed by a reload, still finishing their connections.
    stopping: Vec<tokio::task::JoinHandle<()>>,
}

/// The outputs in the order they start: dead-letter outputs before those that hand them
/// events (the config allows no chains).
fn start_order(outputs: &[OutputConfig]) -> Vec<OutputConfig> {
    let (plain, using): (Vec<_>, Vec<_>) = outputs
        .iter()
        .cloned()
        .partition(|o| o.kind.dead_letter().is_none());
    plain.into_iter().chain(using).collect()
}

/// `started` (in start order) back in `config`'s order, which the routes' indices use.
fn config_order(
    config: &[OutputConfig],
    mut started: Vec<(OutputConfig, OutputHandle)>,
) -> Vec<(OutputConfig, OutputHandle)> {
    let mut ordered = Vec::with_capacity(started.len());
    for o in config {
        if let Some(i) = started.iter().position(|(c, _)| c.name == o.name) {
            ordered.push(started.swap_remove(i));
        }
    }
    ordered
}

/// Whether two versions of an output write to the same place: files, or a disk queue directory.
fn shares_resource(old: &OutputConfig, new: &OutputConfig, state_dir: &std::path::Path) -> bool {
    let held = old.resources(state_dir);
    new.resources(state_dir).iter().any(|r| held.contains(r))
}

impl Daemon {
    /// A daemon with no outputs or listeners yet, routing nowhere.
    fn new(
        config: Config,
        metrics: Arc<Metrics>,
        hangup: Hangup,
        shutdown: &CancellationToken,
    ) -> Daemon {
        let routing = Routing {
            routes: RuleTable::new(Vec::new()),
            outputs: Vec::new(),
            route_metrics: Vec::new(),
            alerts: None,
        };
        Daemon {
            pipeline: Arc::new(Pipeline::new(routing, metrics.clone())),
            metrics,
            hangup,
            shutdown: shutdown.clone(),
            // Cut open connections and stop output retries once shutdown_timeout has passed.
            hard_stop: CancellationToken::new(),
            outputs: Vec::new(),
            threads: Vec::new(),
            listeners: Vec::new(),
            stopping: Vec::new(),
            config,
        }
    }

    /// Starts every output, then every listener on its bound socket.
    fn start(&mut self, listeners: Vec<BoundListener>) -> anyhow::Result<()> {
        let mut outputs = Vec::new();
        for o in start_order(&self.config.outputs.clone()) {
            let handle = self
                .start_output(&o, &outputs)
                .map_err(|e| anyhow::anyhow!(e))?;
            outputs.push((o, handle));
        }
        let outputs = config_order(&self.config.outputs, outputs);
        self.install(outputs);
        for l in listeners {
            self.spawn_listener(l)?;
        }
        Ok(())
    }

    /// Applies one reload request, telling systemd and the requester how it went.
    async fn apply_reload(&mut self, req: reload::ReloadRequest, notifier: Option<&Notifier>) {
        if let Some(n) = notifier {
            n.notify(&format!(
                "RELOADING=1\nMONOTONIC_USEC={}",
                crate::sys::monotonic().as_micros()
            ));
        }
        let result = self.reload(req.config).await;
        if let Some(n) = notifier {
            n.notify("READY=1");
        }
        match &result {
            Ok(()) => tracing::info!(config = %self.config.origin, "configuration reloaded"),
            Err(e @ ReloadError::Partial(_)) => {
                tracing::error!(error = %e, "configuration reloaded, but not every listener started")
            }
            Err(e) => {
                tracing::error!(error = %e, "configuration reload failed; the running configuration stays")
            }
        }
        let _ = req.done.send(result);
    }

    /// Starts `o`; its dead-letter output, if it has one, is among `started`.
    fn start_output(
        &mut self,
        o: &OutputConfig,
        started: &[(OutputConfig, OutputHandle)],
    ) -> Result<OutputHandle, String> {
        let dead_letter = o.kind.dead_letter().and_then(|target| {
            let (_, handle) = started.iter().find(|(c, _)| &*c.name == target)?;
            Some(crate::output::delivery::DeadLetter {
                output: o.name.clone(),
                handle: handle.clone(),
                metrics: self.metrics.output(&o.name),
            })
        });
        // A changed output that keeps its name and kind owns the same files or disk queue
        // directory as the one it replaces: it takes over once that one has finished.
        let predecessor = self
            .outputs
            .iter()
            .find(|(old, _)| {
                old.name == o.name && shares_resource(old, o, &self.config.daemon.state_dir)
            })
            .and_then(|_| {
                let i = self.threads.iter().rposition(|(n, _)| *n == o.name)?;
                Some(self.threads.swap_remove(i).1)
            });
        let started = o
            .start(OutputStart {
                metrics: self.metrics.output(&o.name),
                give_up: self.hard_stop.clone(),
                state_dir: &self.config.daemon.state_dir,
                reopen: self.hangup.files.clone(),
                predecessor,
                dead_letter,
                all_metrics: self.metrics.clone(),
            })
            .map_err(|e| format!("starting output {}: {e:#}", o.name))?;
        self.threads.push((o.name.clone(), started.thread));
        Ok(started.handle)
    }

    /// Makes `outputs` (in config order) and the current config's routes the routing.
    fn install(&mut self, outputs: Vec<(OutputConfig, OutputHandle)>) {
        let alerts = self.start_alerts(&outputs);
        self.pipeline.replace(Routing {
            routes: RuleTable::new(self.config.routes.clone()),
            outputs: outputs.iter().map(|(_, h)| h.clone()).collect(),
            route_metrics: (self.config.routes.iter())
                .map(|r| self.metrics.route(&r.label))
                .collect(),
            alerts,
        });
        self.outputs = outputs;
    }

    /// Starts the alert engine for the current config's `[[alert]]` rules, if any, sending
    /// to `outputs` (in config order). A running engine (a reload's) hands over: the new one
    /// starts once the old one, released with the old routing, has saved its pattern tables.
    fn start_alerts(
        &mut self,
        outputs: &[(OutputConfig, OutputHandle)],
    ) -> Option<crate::alert::feed::AlertFeed> {
        use crate::alert::thread::{EngineStart, Injector, Target};
        const ENGINE: &str = "@alert-engine";
        let predecessor = self
            .threads
            .iter()
            .rposition(|(n, _)| &**n == ENGINE)
            .map(|i| self.threads.swap_remove(i).1);
        if self.config.alerts.is_empty() {
            if let Some(p) = predecessor {
                // Joined at the stop, with the outputs.
                self.threads.push((ENGINE.into(), p));
            }
            return None;
        }
        let targets = (self.config.alerts.iter())
            .map(|a| {
                (a.to.iter())
                    .filter_map(|&i| outputs.get(i))
                    .map(|(c, h)| Target {
                        handle: h.clone(),
                        alertmanager: matches!(c.kind, crate::output::OutputKind::Alertmanager(_)),
                    })
                    .collect()
            })
            .collect();
        let inject = (self.config.daemon.alert_listener.as_ref()).map(|name| Injector {
            pipeline: Arc::downgrade(&self.pipeline),
            listener: name.as_str().into(),
        });
        match crate::alert::thread::start(EngineStart {
            rules: self.config.alerts.clone(),
            targets,
            inject,
            metrics: self.metrics.clone(),
            predecessor,
        }) {
            Ok((feed, thread)) => {
                self.threads.push((ENGINE.into(), thread));
                Some(feed)
            }
            Err(e) => {
                tracing::error!(error = %e, "alert rules not started: the engine's thread could not be created");
                None
            }
        }
    }

    fn spawn_listener(&mut self, l: BoundListener) -> anyhow::Result<()> {
        let stop = self.shutdown.child_token();
        // Kept so that a changed listener on the same address can take the socket over.
        let socket = l
            .socket
            .try_clone()
            .context("duplicating the listening socket")?;
        let task = l.config.kind.start(
            l.socket,
            StartContext {
                config: &l.config,
                pipeline: self.pipeline.clone(),
                stop: stop.clone(),
                hard_stop: self.hard_stop.clone(),
                hangup: self.hangup.subscribe(),
                state_dir: &self.config.daemon.state_dir,
            },
        )?;
        self.listeners.push(RunningListener {
            config: l.config,
            socket,
            stop,
            task,
        });
        Ok(())
    }

    /// The orderly stop (see the module's documentation).
    async fn stop(self) -> anyhow::Result<()> {
        let timeout = self.config.daemon.shutdown_timeout;
        tracing::info!(?timeout, "shutting down: reading what senders already sent");
        let cutter = {
            let hard_stop = self.hard_stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                hard_stop.cancel();
            })
        };
        let tasks = self
            .listeners
            .into_iter()
            .map(|r| r.task)
            .chain(self.stopping);
        for t in tasks {
            if let Err(e) = t.await {
                tracing::error!(error = %e, "listener task failed");
            }
        }
        // The listeners held the only other references to the output queues: with these gone,
        // each output sees its queue close and drains.
        drop(self.pipeline);
        drop(self.outputs);
        let threads = self.threads;
        tokio::task::spawn_blocking(move || {
            for (_, t) in threads {
                let _ = t.join();
            }
        })
        .await
        .context("joining output threads")?;
        cutter.abort();
        Ok(())
    }
}
