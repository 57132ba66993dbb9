//! The queue in front of every output: capacity and overflow policy side by side, read from the
//! `queue = { ... }` table every output kind takes. Disk queues and `drop_oldest` need a backlog
//! (the forward output's); other kinds say so when given them.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::backlog::SyncPolicy;
use crate::decode::{Entry, Errors, NumOrStr, Part, duration_opt, keys, positive, size_opt};

/// Default queue capacity per output, in events.
pub const DEFAULT_QUEUE_MAX_EVENTS: usize = 65_536;
/// Default bound of a disk queue.
pub const DEFAULT_DISK_QUEUE_BYTES: u64 = 1 << 30;
/// Default fsync interval of a disk queue.
pub const DEFAULT_DISK_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// What a full queue does to the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait for room: TCP and unix-stream senders are slowed (UDP still drops and counts).
    Block,
    /// Drop the event that does not fit, and count it.
    DropNewest,
    /// Drop the oldest waiting event to make room, and count it (outputs with a backlog).
    DropOldest,
}

/// Where a queue keeps its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    /// In memory: lost if sluice is killed; drained for up to `shutdown_timeout` on stop.
    Memory,
    /// On disk under `[daemon] state_dir` (outputs with a backlog): kept across restarts and
    /// crashes.
    Disk {
        /// When appended events are fsynced.
        sync: SyncPolicy,
    },
}

/// The queue in front of an output: capacity and overflow policy side by side.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueConfig {
    /// Memory or disk.
    pub kind: QueueKind,
    /// Capacity in events.
    pub max_events: usize,
    /// Capacity in bytes (as formatted for the destination), if bounded so.
    pub max_bytes: Option<u64>,
    /// Overflow policy.
    pub when_full: WhenFull,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            kind: QueueKind::Memory,
            max_events: DEFAULT_QUEUE_MAX_EVENTS,
            max_bytes: None,
            when_full: WhenFull::Block,
        }
    }
}

#[derive(Deserialize, Default)]
pub(super) struct QueuePart {
    queue: Option<QueueRaw>,
}

impl Part for QueuePart {
    const NESTED: &'static [crate::decode::Nested] = &[("queue", keys::fields::<QueueRaw>)];
}

#[derive(Deserialize, Default)]
struct QueueRaw {
    kind: Option<Spanned<String>>,
    max_events: Option<Spanned<i64>>,
    max_size: Option<Spanned<NumOrStr>>,
    when_full: Option<Spanned<String>>,
    fsync: Option<Spanned<NumOrStr>>,
}

impl QueueConfig {
    /// Reads `queue`; `backlog` tells whether the kind has a backlog (disk queues, byte bounds
    /// and `drop_oldest` need one).
    pub(super) fn decode(
        entry: &mut Entry<'_, '_>,
        errs: &mut Errors<'_>,
        backlog: bool,
    ) -> Option<QueueConfig> {
        let mut queue = QueueConfig::default();
        let Some(q) = entry.part::<QueuePart>(errs)?.queue else {
            return Some(queue);
        };
        let before = errs.count();
        let p = entry.key("queue");
        let kind = entry.kind.get_ref().clone();
        let needs_backlog =
            |errs: &mut Errors<'_>, span: std::ops::Range<usize>, key: &str, what: &str| {
                if !backlog {
                    errs.at(
                        span,
                        format!("{p}.{key}"),
                        format!(
                            "{what} needs an output with a backlog (forward), not kind = \"{kind}\""
                        ),
                    );
                }
            };
        if let Some(n) = positive(errs, &format!("{p}.max_events"), &q.max_events) {
            queue.max_events = n;
        }
        if let Some(n) = size_opt(errs, &format!("{p}.max_size"), &q.max_size) {
            queue.max_bytes = Some(n);
            if let Some(v) = &q.max_size {
                needs_backlog(errs, v.span(), "max_size", "a size bound");
            }
        }
        if let Some(w) = &q.when_full {
            match w.get_ref().as_str() {
                "block" => queue.when_full = WhenFull::Block,
                "drop_newest" => queue.when_full = WhenFull::DropNewest,
                "drop_oldest" => {
                    queue.when_full = WhenFull::DropOldest;
                    needs_backlog(errs, w.span(), "when_full", "\"drop_oldest\"");
                }
                other => errs.at(
                    w.span(),
                    format!("{p}.when_full"),
                    format!("unknown policy {other:?}: expected \"block\", \"drop_newest\" or \"drop_oldest\""),
                ),
            }
        }
        let sync = match &q.fsync {
            None => SyncPolicy::Interval(DEFAULT_DISK_SYNC_INTERVAL),
            Some(v) => match v.get_ref() {
                NumOrStr::Str(s) if s == "every_batch" => SyncPolicy::EveryBatch,
                _ => duration_opt(errs, &format!("{p}.fsync"), &q.fsync).map_or(
                    SyncPolicy::Interval(DEFAULT_DISK_SYNC_INTERVAL),
                    SyncPolicy::Interval,
                ),
            },
        };
        match q.kind.as_ref().map(|k| (k.get_ref().as_str(), k.span())) {
            None | Some(("memory", _)) => {
                if let Some(v) = &q.fsync {
                    errs.at(
                        v.span(),
                        format!("{p}.fsync"),
                        "only applies to kind = \"disk\"",
                    );
                }
            }
            Some(("disk", span)) => {
                needs_backlog(errs, span, "kind", "a disk queue");
                queue.kind = QueueKind::Disk { sync };
                queue.max_bytes.get_or_insert(DEFAULT_DISK_QUEUE_BYTES);
            }
            Some((other, span)) => errs.at(
                span,
                format!("{p}.kind"),
                format!("unknown queue kind {other:?}: expected \"memory\" or \"disk\""),
            ),
        }
        (errs.count() == before).then_some(queue)
    }
}
