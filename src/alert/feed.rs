//! The hot path's side of alerting: a dispatcher asks [`AlertFeed::wants`] for each event
//! (each rule's selector and matchers through `Rule::check`, no lock, no allocation), keeps
//! the events that feed a rule in a batch of `Arc<Event>` (a reference count, not a copy), and
//! hands the batch to the engine's queue at its flush with [`AlertFeed::send`], which never
//! waits: alerting must not slow a listener down. The engine takes what its queue holds every
//! few hundredths of a second, or at once when a send finds a few hundred events queued
//! ([`crate::output::Wake::WhenHolding`]), so a listener's batch does not wake it. When the
//! engine falls behind, it first sheds new-pattern work ([`super::engine::Engine::set_behind`]),
//! and its queue (bounded at [`ALERT_QUEUE_EVENTS`]) drops what does not fit and counts it in
//! `sluice_alert_feed_dropped_total`.

use crate::event::Event;
use crate::output::{Batch, OutputHandle};
use crate::route::Rule;

/// The engine's queue, in events.
pub const ALERT_QUEUE_EVENTS: usize = 65_536;

/// What dispatchers need to feed the alert engine: the rules' matchers and its queue.
pub struct AlertFeed {
    /// Each rule's matchers, and each ratio's total selector.
    checks: Vec<Rule>,
    handle: OutputHandle,
}

impl AlertFeed {
    pub(super) fn new(checks: Vec<Rule>, handle: OutputHandle) -> AlertFeed {
        AlertFeed { checks, handle }
    }

    /// Whether `ev` feeds any rule.
    pub fn wants(&self, ev: &Event) -> bool {
        self.checks.iter().any(|r| r.check(ev).is_ok())
    }

    /// Queues `batch` for the engine without waiting; what does not fit is dropped and
    /// counted.
    pub fn send(&self, batch: Batch) {
        self.handle.try_send(batch);
    }
}
