//! The alert engine's thread, `alert-engine`: it owns every rule's state ([`Engine`]), takes
//! batches of events from its queue ([`super::feed`]), judges the windows as they end (every
//! second at least, busy or idle) and turns each firing, re-send and resolution into an
//! alert event ([`super::notice`]) for the rule's `to` outputs (without waiting: an output
//! without room drops and counts it, in its `dropped_queue_full` and the rule's
//! `notices_dropped`) and, with `[daemon] alert_listener`, into the pipeline as if read by that
//! listener, so routes can write or forward it. Re-sends go to `alertmanager` outputs only,
//! which expire alerts that are not re-sent.
//!
//! It runs on the output threads' loop ([`crate::output::Sink`]), as one more sink.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use chrono::Utc;

use super::AlertRule;
use super::engine::Engine;
use super::feed::{ALERT_QUEUE_EVENTS, AlertFeed};
use super::notice::to_event;
use crate::event::{Event, ListenerName};
use crate::listen::{Dispatcher, Pipeline};
use crate::metrics::{self, AlertMetrics, Metrics};
use crate::output::{OutputHandle, QueueConfig, Sink, Wake, WhenFull};
use crate::parse::Zone;

/// How often the engine judges windows and re-sends when no event comes.
const TICK: Duration = Duration::from_secs(1);
/// How often the engine takes what its queue holds, unless a listener finds it holding
/// [`WAKE_EVENTS`] first: windows last seconds, so a few hundredths of a second late is nothing,
/// and the engine is not woken for each listener's batch.
const DRAIN_INTERVAL: Duration = Duration::from_millis(50);
/// Queued events that wake the engine at once. Few, although the queue has room for
/// [`ALERT_QUEUE_EVENTS`]: a queued event keeps its memory (and its read buffer) from being
/// reused, and the engine reads it after the listener's and outputs' caches have moved on.
/// Woken at a quarter of the room (16,384 events), one rule that only counted cost 28% of the
/// wall throughput of `benches/e2e.py --cases alerts`; at 1,024, 3-11%; at 256, within the
/// noise (-4% and 5%), for a wake-up per few listener batches (issue 17).
const WAKE_EVENTS: usize = 256;
/// Queued events at which the engine counts itself behind: new-pattern rules then skip the
/// lines whose template they would have to mask, so that every rule keeps counting every line
/// rather than the queue dropping lines unjudged by all (a quarter of its room: at 1M msg/s,
/// 16 ms of messages).
const BEHIND_EVENTS: usize = ALERT_QUEUE_EVENTS / 4;
/// At most one warning this often that the engine fell behind.
const BEHIND_WARN_INTERVAL: Duration = Duration::from_secs(60);
/// How often changed pattern tables are saved (and at the stop).
const SAVE_INTERVAL: Duration = Duration::from_secs(60);
/// The listener name alert events carry when no `alert_listener` injects them.
const ENGINE_LISTENER: &str = "alert-engine";

/// An output a rule's notices go to.
#[derive(Clone)]
pub struct Target {
    /// Its queue.
    pub handle: OutputHandle,
    /// Whether it is an `alertmanager` output (the one kind that takes re-sends).
    pub alertmanager: bool,
}

/// Where alert events enter the pipeline: `[daemon] alert_listener`.
pub struct Injector {
    /// The pipeline (weak: it holds the engine's queue, and the engine must not keep it).
    pub pipeline: Weak<Pipeline>,
    /// The listener name the events carry.
    pub listener: Arc<str>,
}

/// What the engine is started with.
pub struct EngineStart {
    /// The rules, in config order.
    pub rules: Vec<Arc<AlertRule>>,
    /// Per rule, its `to` outputs.
    pub targets: Vec<Vec<Target>>,
    /// The internal listener, if any.
    pub inject: Option<Injector>,
    /// Every counter (the rules' and the feed's).
    pub metrics: Arc<Metrics>,
    /// The engine this one replaces on a reload: the new one starts once it has saved its
    /// pattern tables.
    pub predecessor: Option<std::thread::JoinHandle<()>>,
}

/// Starts the engine's thread: the feed for dispatchers, and the thread to join at the stop.
pub fn start(s: EngineStart) -> anyhow::Result<(AlertFeed, std::thread::JoinHandle<()>)> {
    let mut checks = Vec::new();
    for r in &s.rules {
        checks.push(r.matchers.clone());
        checks.extend(r.total.clone());
    }
    let rule_metrics: Vec<Arc<AlertMetrics>> =
        s.rules.iter().map(|r| s.metrics.alert(&r.name)).collect();
    let listener = ListenerName::new((s.inject.as_ref()).map_or(ENGINE_LISTENER, |i| &*i.listener));
    let sink = AlertSink {
        rules: s.rules,
        rule_metrics,
        engine: None,
        targets: s.targets,
        inject: s.inject,
        listener,
        host: crate::sys::hostname().unwrap_or_default(),
        last_save: Instant::now(),
        last_behind_warning: None,
    };
    let queue = QueueConfig {
        max_events: ALERT_QUEUE_EVENTS,
        when_full: WhenFull::DropNewest,
        ..QueueConfig::default()
    };
    let running = crate::output::start_sink_thread(
        "alert-engine".into(),
        queue,
        Box::new(sink),
        TICK,
        s.metrics.alert_feed.clone(),
        s.predecessor,
        Wake::WhenHolding {
            poll: DRAIN_INTERVAL,
            events: WAKE_EVENTS,
        },
    )?;
    Ok((AlertFeed::new(checks, running.handle), running.thread))
}

struct AlertSink {
    rules: Vec<Arc<AlertRule>>,
    rule_metrics: Vec<Arc<AlertMetrics>>,
    /// Made at the first batch or tick, on the thread, after the predecessor has saved.
    engine: Option<Engine>,
    targets: Vec<Vec<Target>>,
    inject: Option<Injector>,
    listener: ListenerName,
    host: String,
    last_save: Instant,
    last_behind_warning: Option<Instant>,
}

impl AlertSink {
    fn engine(&mut self) -> &mut Engine {
        let (rules, metrics) = (&self.rules, &self.rule_metrics);
        self.engine
            .get_or_insert_with(|| Engine::new(rules, metrics.clone()))
    }

    /// Sends the engine's notices to their outputs and the internal listener.
    fn dispatch(&mut self) {
        let notices = self.engine().take_notices();
        if notices.is_empty() {
            return;
        }
        let now = Utc::now();
        let mut injected: Vec<Arc<Event>> = Vec::new();
        for n in notices {
            let ev = Arc::new(to_event(&n, &self.host, self.listener, now));
            for t in self.targets.get(n.rule).into_iter().flatten() {
                if n.resend && !t.alertmanager {
                    continue;
                }
                if t.handle.try_send(vec![ev.clone()]) > 0
                    && let Some(m) = self.rule_metrics.get(n.rule)
                {
                    metrics::add(&m.notices_dropped, 1);
                }
            }
            if !n.resend {
                injected.push(ev);
            }
        }
        let Some(inject) = &self.inject else { return };
        let Some(pipeline) = inject.pipeline.upgrade() else {
            return;
        };
        let mut d = Dispatcher::new(pipeline, inject.listener.clone(), Zone::Local);
        d.feed_no_alerts();
        for ev in injected {
            d.push_parsed(ev.raw.clone(), ev.parsed.clone(), false, None, now);
        }
        d.flush_nowait();
    }
}

impl Sink for AlertSink {
    fn write_batch(&mut self, batch: &[Arc<Event>]) {
        let now = Utc::now();
        let engine = self.engine();
        engine.advance(now);
        for ev in batch {
            engine.count(ev, now);
        }
        engine.publish();
        self.dispatch();
    }

    fn flush(&mut self) {}

    fn queued(&mut self, events: usize) {
        let fell_behind = self.engine().set_behind(events >= BEHIND_EVENTS);
        if fell_behind
            && self
                .last_behind_warning
                .is_none_or(|t| t.elapsed() >= BEHIND_WARN_INTERVAL)
        {
            tracing::warn!(
                queued = events,
                "alert engine behind its queue: new_pattern rules skip the lines they do not know by shape until it catches up (sluice_alert_patterns_skipped_total)"
            );
            self.last_behind_warning = Some(Instant::now());
        }
    }

    fn tick(&mut self) {
        self.engine().advance(Utc::now());
        self.dispatch();
        if self.last_save.elapsed() >= SAVE_INTERVAL {
            self.engine().save();
            self.last_save = Instant::now();
        }
    }

    fn close(&mut self) {
        self.engine().save();
    }
}
