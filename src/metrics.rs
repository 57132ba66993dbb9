//! Counters per listener and per output, plus the global `unrouted`. Plain relaxed atomics:
//! tasks add batch totals, never per-byte. They are logged periodically and at shutdown, and
//! tests read them directly.
//!
//! Invariant per listener: `received = parsed_ok + parse_errors`; every frame the framer threw
//! away appears in `frame_len_invalid`, `tls_on_plain_port` or `empty_frames`; every event an
//! output did not take appears in that output's `dropped_queue_full`; datagrams the kernel
//! (or kernel log records) dropped before sluice could read them appear in `kernel_drops`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

macro_rules! counters {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Default)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: AtomicU64,)*
        }

        impl $name {
            /// Every counter with its name, in declaration order.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($field), self.$field.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters!(
    /// Counters of one listener.
    ListenerMetrics {
        /// Frames (messages) read, whatever became of them.
        received,
        /// Bytes read from the socket.
        bytes,
        /// Frames that parsed cleanly.
        parsed_ok,
        /// Frames kept with a `parse_error` flag.
        parse_errors,
        /// Frames cut to `max_message_size`.
        truncated,
        /// Empty lines or datagrams skipped.
        empty_frames,
        /// LF-framed stream messages ended by a NUL instead of an LF (`nul_trailer`; Python's
        /// SysLogHandler over TCP, glibc's syslog(3) over a unix stream socket).
        nul_terminated,
        /// Connections closed for an invalid octet count.
        frame_len_invalid,
        /// RELP connections closed for a frame that is not RELP: a bad transaction number,
        /// command, DATALEN or trailer.
        relp_frame_invalid,
        /// RELP messages whose DATALEN was over `max_message_size`: kept cut to it and flagged
        /// `truncated`, the rest discarded as it arrived (the session goes on).
        relp_oversize,
        /// RELP connections closed for a command out of place: before `open`, after `close`, a
        /// transaction number out of sequence, an `open` without a usable `relp_version`.
        relp_session_errors,
        /// RELP messages answered `200 OK` (every output they were routed to holds them).
        relp_acked,
        /// RELP messages answered `500 error` (an output could not keep them; the sender resends).
        relp_refused,
        /// Connections closed because a TLS ClientHello arrived on a plain port.
        tls_on_plain_port,
        /// Octet-counted frames cut short by the peer closing (kept, flagged truncated), oversize
        /// ones included.
        truncated_at_eof,
        /// Connections accepted.
        connections,
        /// Accepted connections that have ended (for any reason); `connections - closed` are open.
        closed,
        /// Connections refused because `max_connections` was reached.
        sessions_rejected,
        /// Connections closed after `idle_timeout` without data.
        idle_timeouts,
        /// Connections closed because a frame did not complete within `frame_timeout`.
        frame_timeouts,
        /// Connections cut because they were still open at the end of `shutdown_timeout`.
        shutdown_cut,
        /// Socket read errors (connection resets and the like).
        read_errors,
        /// Messages or connections refused because the sender is not in `allowed_sources`.
        disallowed,
        /// TLS handshakes completed.
        tls_handshakes,
        /// TLS handshakes cut by `handshake_timeout` (hostile-inputs C01).
        tls_handshake_timeouts,
        /// TLS clients refused: certificate name not in `permitted_peers`.
        tls_peer_not_permitted,
        /// TLS clients refused: certificate fingerprint not pinned.
        tls_fingerprint_not_trusted,
        /// TLS clients refused: certificate expired or not yet valid.
        tls_certificate_expired,
        /// TLS clients refused: certificate on the CA's revocation list (`client_crl_file`).
        tls_certificate_revoked,
        /// TLS clients refused: certificate not from a trusted CA, malformed, or unfit (EKU).
        tls_certificate_untrusted,
        /// TLS clients refused: no certificate where one is required.
        tls_no_certificate,
        /// Other TLS handshake failures: plaintext, old protocol versions, no common suite.
        tls_handshake_failed,
        /// Messages dropped before parsing because their source was over `rate_limit`.
        rate_limited,
        /// Rate-limit buckets forgotten while still holding state, to keep at most 10000 sources.
        rate_limit_evictions,
        /// Datagrams the kernel dropped because the socket buffer was full (each socket's
        /// SO_MEMINFO count, as /proc/net/udp shows it); for kmsg, records the kernel overwrote
        /// before they were read (sequence gaps).
        kernel_drops,
        /// Files a `tail` listener is following now (a gauge).
        files_open,
        /// Bytes its files hold beyond what it has read, summed over them (a gauge).
        bytes_behind,
        /// Files its globs match that wait for a slot under `max_open_files` (a gauge).
        files_waiting,
        /// Files closed at their end, unchanged for a scan, to give their slot to a waiting
        /// file (reopened later where they stopped).
        files_parked,
        /// Scans of its globs completed (the first at start, then every `scan_interval` and
        /// whenever inotify reports a file created or removed). Counted after the gauges of the
        /// round are published, so a reader that sees the count rise and then reads
        /// `bytes_behind` sees what that scan found: tests wait on it for a quiet pipeline.
        scans,
        /// Files found shorter than the position read (truncated in place: copytruncate), each
        /// read again from the start.
        file_truncations,
        /// Bytes of deleted files let go by `close_deleted_after` before they were read.
        bytes_unread_at_close,
    }
);

counters!(
    /// Counters of one output.
    OutputMetrics {
        /// Events handed to the output's queue.
        queued,
        /// Events written.
        written,
        /// Events dropped because the queue was full (`when_full = "drop_newest"`).
        dropped_queue_full,
        /// Events dropped from the head of a full queue (`when_full = "drop_oldest"`).
        dropped_oldest,
        /// Events not delivered because `shutdown_timeout` ended the stop: still in a memory
        /// backlog, staged for it, or with a sender waiting for room.
        undelivered_at_shutdown,
        /// Events waiting in the output's backlog (forward outputs; a gauge).
        queue_depth,
        /// Connections (re)established to a collector or server.
        reconnects,
        /// Authentications the server refused (`kafka` outputs: a SASL mechanism, user or
        /// password the broker does not take), each refused connection counted once.
        auth_failures,
        /// Delivery attempts that failed and will be retried after a backoff (outputs with a
        /// backlog).
        retries,
        /// HTTP requests sent on a connection (`http`, `elasticsearch`, `loki` outputs; a
        /// connection refused sends none).
        requests,
        /// Bytes of request bodies sent, after compression (`http` outputs).
        bytes_sent,
        /// Messages sent in produce requests, retries included (`kafka` outputs).
        produced,
        /// Events sent and not yet acknowledged (`kafka`, `http`, `elasticsearch`, `loki`
        /// outputs; a gauge).
        in_flight,
        /// Requests sent and not yet answered (`http`, `elasticsearch`, `loki` outputs; a gauge,
        /// at most `max_in_flight`).
        requests_in_flight,
        /// Listeners waiting for room in the output's full queue under `when_full = "block"`
        /// (a gauge): while it is above 0 those listeners read nothing.
        senders_waiting,
        /// Events the receiver refused for good (an HTTP 4xx other than 408, 413 and 429):
        /// counted, logged, and not retried, so they never block the events after them.
        rejected,
        /// Refused events handed to the output's `dead_letter` output.
        dead_lettered,
        /// Labels a `loki` output moved to structured metadata because its label sets reached
        /// `max_streams`.
        labels_demoted,
        /// Bytes of a disk queue's torn or corrupt tail moved aside at start.
        quarantined_bytes,
        /// Failed I/O operations (open, write, fsync, rotate, queue append), each attempt
        /// counted once.
        write_errors,
        /// Events given up after failed writes (the retry buffer was full, or at stop).
        dropped_write_error,
        /// Events for files over `max_files_per_day`, dropped.
        dropped_file_limit,
        /// Path template values that had to be sanitised (hostile-inputs F03).
        path_sanitized,
        /// Files created.
        files_created,
        /// Files open now (a gauge, not a counter).
        files_open,
        /// Files closed to stay under `max_open_files`.
        files_evicted,
        /// Files closed after `idle_timeout` without a line.
        files_idle_closed,
        /// Files closed to be reopened: SIGHUP, or the path was moved or deleted.
        files_reopened,
        /// Files rotated by sluice.
        rotations,
        /// Rotated segments removed by `keep` or `max_age`.
        segments_removed,
        /// Segments that could not be compressed (they stay plain).
        compress_errors,
    }
);

counters!(
    /// Counters of one route (`[[route]]`), by its `name` or position.
    RouteMetrics {
        /// Events the route matched (an event matched by several routes counts in each).
        matched,
    }
);

counters!(
    /// Counters of one alert rule (`[[alert]]`), by its `name`.
    AlertMetrics {
        /// Events the rule counted (its selector and matchers matched).
        events,
        /// Alerts of the rule firing now, one per group (a gauge).
        firing,
        /// Times an alert of the rule started firing.
        fired,
        /// Times an alert of the rule was resolved.
        resolved,
        /// Groups the rule keeps state for now (a gauge).
        groups,
        /// Events of a new group refused because the rule already kept `max_groups`.
        groups_refused,
        /// Templates a `new_pattern` rule remembers (a gauge).
        patterns,
        /// Templates forgotten to stay within `max_patterns`.
        patterns_evicted,
        /// Lines a `new_pattern` rule skipped, their template unknown, while the engine was
        /// behind (its queue a quarter full): not learnt, never alerted on.
        patterns_skipped,
        /// Firing and resolution events an output's queue had no room for.
        notices_dropped,
    }
);

/// All counters of a running daemon.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Per listener, by name. A reload adds the listeners and outputs it brings; counters of
    /// removed ones stay (their totals remain true).
    listeners: RwLock<BTreeMap<Arc<str>, Arc<ListenerMetrics>>>,
    /// Per output, by name.
    outputs: RwLock<BTreeMap<Arc<str>, Arc<OutputMetrics>>>,
    /// Per route, by label (`name`, else position).
    routes: RwLock<BTreeMap<Arc<str>, Arc<RouteMetrics>>>,
    /// Request durations of the outputs that send requests (`http`, `elasticsearch`, `loki`),
    /// by output name.
    request_seconds: RwLock<BTreeMap<Arc<str>, Arc<LatencyHistogram>>>,
    /// Connections `kafka` outputs made, per broker, by output name.
    broker_connects: RwLock<BTreeMap<Arc<str>, Arc<BrokerConnects>>>,
    /// Per alert rule, by name.
    alerts: RwLock<BTreeMap<Arc<str>, Arc<AlertMetrics>>>,
    /// The alert engine's queue: events handed to it, and those dropped because it was full.
    pub alert_feed: Arc<OutputMetrics>,
    /// Events that matched no route.
    pub unrouted: AtomicU64,
    /// Connections to the metrics endpoint closed unserved because it already served
    /// [`crate::exporter::METRICS_MAX_CONNECTIONS`].
    pub metrics_connections_refused: AtomicU64,
}

impl Metrics {
    /// Counters for these listener and output names, all zero.
    pub fn new<'a>(
        listeners: impl IntoIterator<Item = &'a Arc<str>>,
        outputs: impl IntoIterator<Item = &'a Arc<str>>,
    ) -> Metrics {
        Metrics {
            listeners: RwLock::new(
                listeners
                    .into_iter()
                    .map(|n| (n.clone(), Arc::default()))
                    .collect(),
            ),
            outputs: RwLock::new(
                outputs
                    .into_iter()
                    .map(|n| (n.clone(), Arc::default()))
                    .collect(),
            ),
            routes: RwLock::default(),
            alerts: RwLock::default(),
            alert_feed: Arc::default(),
            request_seconds: RwLock::default(),
            broker_connects: RwLock::default(),
            unrouted: AtomicU64::new(0),
            metrics_connections_refused: AtomicU64::new(0),
        }
    }

    /// The counters of one route, registered on first use.
    pub fn route(&self, label: &str) -> Arc<RouteMetrics> {
        get_or_insert(&self.routes, label)
    }

    /// Every route's counters, by label.
    pub fn routes(&self) -> Vec<(Arc<str>, Arc<RouteMetrics>)> {
        snapshot_map(&self.routes)
    }

    /// The counters of one alert rule, registered on first use.
    pub fn alert(&self, name: &str) -> Arc<AlertMetrics> {
        get_or_insert(&self.alerts, name)
    }

    /// Every alert rule's counters, by name.
    pub fn alerts(&self) -> Vec<(Arc<str>, Arc<AlertMetrics>)> {
        snapshot_map(&self.alerts)
    }

    /// The counters of one listener, registered on first use.
    pub fn listener(&self, name: &str) -> Arc<ListenerMetrics> {
        get_or_insert(&self.listeners, name)
    }

    /// The counters of one output, registered on first use.
    pub fn output(&self, name: &str) -> Arc<OutputMetrics> {
        get_or_insert(&self.outputs, name)
    }

    /// The request-duration histogram of output `name`, created on first use.
    pub fn request_seconds(&self, name: &str) -> Arc<LatencyHistogram> {
        get_or_insert(&self.request_seconds, name)
    }

    /// Every request-duration histogram, by output name.
    pub fn request_latencies(&self) -> Vec<(Arc<str>, Arc<LatencyHistogram>)> {
        snapshot_map(&self.request_seconds)
    }

    /// The per-broker connection counters of output `name`, created on first use.
    pub fn broker_connects(&self, name: &str) -> Arc<BrokerConnects> {
        get_or_insert(&self.broker_connects, name)
    }

    /// Every output's per-broker connection counters, by output name.
    pub fn all_broker_connects(&self) -> Vec<(Arc<str>, Arc<BrokerConnects>)> {
        snapshot_map(&self.broker_connects)
    }

    /// Every listener's counters, by name.
    pub fn listeners(&self) -> Vec<(Arc<str>, Arc<ListenerMetrics>)> {
        snapshot_map(&self.listeners)
    }

    /// Every output's counters, by name.
    pub fn outputs(&self) -> Vec<(Arc<str>, Arc<OutputMetrics>)> {
        snapshot_map(&self.outputs)
    }

    /// One line per listener, output, route and alert rule with its non-zero counters, plus
    /// `unrouted` (and the alert engine's queue), for logs.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let mut add = |kind: &str, name: &str, snap: Vec<(&'static str, u64)>| {
            let fields: Vec<String> = snap
                .into_iter()
                .filter(|(_, v)| *v > 0)
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            s.push_str(&format!(
                "{kind}.{name}: {}; ",
                if fields.is_empty() {
                    "idle".to_string()
                } else {
                    fields.join(" ")
                }
            ));
        };
        for (n, m) in self.listeners() {
            add("listen", &n, m.snapshot());
        }
        for (n, m) in self.outputs() {
            add("output", &n, m.snapshot());
        }
        for (n, m) in self.routes() {
            add("route", &n, m.snapshot());
        }
        let alerts = self.alerts();
        for (n, m) in &alerts {
            add("alert", n, m.snapshot());
        }
        if !alerts.is_empty() {
            s.push_str(&format!(
                "alert_feed_queued={} alert_feed_dropped={}; ",
                self.alert_feed.queued.load(Ordering::Relaxed),
                self.alert_feed.dropped_queue_full.load(Ordering::Relaxed)
            ));
        }
        s.push_str(&format!(
            "unrouted={}",
            self.unrouted.load(Ordering::Relaxed)
        ));
        let refused = self.metrics_connections_refused.load(Ordering::Relaxed);
        if refused > 0 {
            s.push_str(&format!(" metrics_connections_refused={refused}"));
        }
        s
    }
}

fn get_or_insert<T: Default>(map: &RwLock<BTreeMap<Arc<str>, Arc<T>>>, name: &str) -> Arc<T> {
    // Looked up when tasks start, never per event; a poisoned lock only means a panic elsewhere.
    if let Some(m) = map.read().unwrap_or_else(|e| e.into_inner()).get(name) {
        return m.clone();
    }
    map.write()
        .unwrap_or_else(|e| e.into_inner())
        .entry(name.into())
        .or_default()
        .clone()
}

fn snapshot_map<T>(map: &RwLock<BTreeMap<Arc<str>, Arc<T>>>) -> Vec<(Arc<str>, Arc<T>)> {
    map.read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Connections one output made to each broker, by broker address (`host:port`): the brokers
/// are the cluster's, learned as it runs, so they are not fields.
#[derive(Debug, Default)]
pub struct BrokerConnects(RwLock<BTreeMap<String, u64>>);

impl BrokerConnects {
    /// `n` more connections to `broker`.
    pub fn add(&self, broker: &str, n: u64) {
        let mut m = self.0.write().unwrap_or_else(|e| e.into_inner());
        *m.entry(broker.to_string()).or_default() += n;
    }

    /// Every broker's count.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let m = self.0.read().unwrap_or_else(|e| e.into_inner());
        m.iter().map(|(b, n)| (b.clone(), *n)).collect()
    }
}

/// Adds `n` to a counter.
#[inline]
pub fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Sets a gauge.
#[inline]
pub fn set(gauge: &AtomicU64, n: u64) {
    gauge.store(n, Ordering::Relaxed);
}

/// Reads a counter.
#[inline]
pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Lets a repeated warning through at most once per interval and says how many were suppressed
/// in between, so a per-message fault cannot flood sluice's own log (hostile-inputs J04).
#[derive(Debug)]
pub struct LogLimiter {
    interval: std::time::Duration,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// A limiter passing one message per `interval`.
    pub const fn new(interval: std::time::Duration) -> LogLimiter {
        LogLimiter {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when this occurrence may be logged (`n` = occurrences suppressed since the last
    /// one logged), `None` when it should be suppressed.
    pub fn allow(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Upper bounds of the request-duration buckets, in seconds: from a fast local store to the
/// default request timeout.
pub const REQUEST_SECONDS_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How long requests took, in buckets (a Prometheus histogram): an output thread observes,
/// the exporter reads.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Requests per bucket of [`REQUEST_SECONDS_BUCKETS`], and one for longer ones.
    buckets: [AtomicU64; REQUEST_SECONDS_BUCKETS.len() + 1],
    /// Requests observed.
    count: AtomicU64,
    /// Their total duration, in microseconds.
    sum_micros: AtomicU64,
}

impl LatencyHistogram {
    /// Counts one request of `took`.
    pub fn observe(&self, took: std::time::Duration) {
        let secs = took.as_secs_f64();
        let i = REQUEST_SECONDS_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(REQUEST_SECONDS_BUCKETS.len());
        add(&self.buckets[i], 1);
        add(&self.count, 1);
        add(&self.sum_micros, took.as_micros() as u64);
    }

    /// Sum in seconds, count, and each bucket's upper bound with its own (not cumulative)
    /// count, the last one unbounded (`f64::MAX`, which the text encoder writes as `+Inf`).
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        // The text encoder writes `+Inf` for `f64::MAX`, as for its own histograms.
        let bounds = REQUEST_SECONDS_BUCKETS.iter().copied().chain([f64::MAX]);
        let buckets = bounds
            .zip(&self.buckets)
            .map(|(b, c)| (b, get(c)))
            .collect();
        (
            get(&self.sum_micros) as f64 / 1e6,
            get(&self.count),
            buckets,
        )
    }
}
