//! `[daemon] metrics_address`: every counter of [`Metrics`] in the Prometheus/OpenMetrics text
//! format at `/metrics`, over hyper. Values are read from the live atomics at each scrape (a
//! prometheus-client `Collector`), so the data path keeps its batch counters and nothing is
//! counted twice.
//!
//! The endpoint serves at most [`METRICS_MAX_CONNECTIONS`] connections at once, one request each,
//! within [`METRICS_CONNECTION_TIMEOUT`]: idle or slow connections cannot hold the descriptors
//! the listeners and file outputs need (issue 21).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::backoff::{self, Backoff, FAILURE_LOG_INTERVAL};
use crate::listen::stream::{ACCEPT_RETRY_MAX, ACCEPT_RETRY_MIN};
use crate::metrics::{self, LogLimiter, Metrics};

/// Connections served at once; more are closed unserved and counted in
/// `sluice_metrics_connections_refused_total`. A scraper needs one or two.
pub const METRICS_MAX_CONNECTIONS: usize = 64;
/// A connection must send its request and be answered within this long, or it is closed: a
/// scrape takes milliseconds, and a connection that sends nothing must not keep its slot.
pub const METRICS_CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Output fields that are levels, not totals.
const OUTPUT_GAUGES: [&str; 5] = [
    "queue_depth",
    "files_open",
    "in_flight",
    "requests_in_flight",
    "senders_waiting",
];
/// Listener fields that are levels, not totals (`tail` listeners).
const LISTENER_GAUGES: [&str; 3] = ["files_open", "bytes_behind", "files_waiting"];
/// Alert rule fields that are levels, not totals.
const ALERT_GAUGES: [&str; 3] = ["firing", "groups", "patterns"];

#[derive(Debug)]
struct MetricsCollector(Arc<Metrics>);

type Labels = Vec<(String, String)>;

/// One metric family: `sluice_<scope>_<field>` with one sample per listener or output.
fn encode_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    gauge: bool,
    samples: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let kind = if gauge {
        MetricType::Gauge
    } else {
        MetricType::Counter
    };
    let mut m = encoder.encode_descriptor(name, "", None, kind)?;
    for (labels, v) in samples {
        let f = m.encode_family(labels)?;
        if gauge {
            ConstGauge::new(*v as i64).encode(f)?;
        } else {
            ConstCounter::new(*v).encode(f)?;
        }
    }
    Ok(())
}

impl Collector for MetricsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let scopes = [
            (
                "listener",
                self.0
                    .listeners()
                    .iter()
                    .map(|(n, m)| (n.clone(), m.snapshot()))
                    .collect::<Vec<_>>(),
            ),
            (
                "output",
                self.0
                    .outputs()
                    .iter()
                    .map(|(n, m)| (n.clone(), m.snapshot()))
                    .collect(),
            ),
            (
                "route",
                self.0
                    .routes()
                    .iter()
                    .map(|(n, m)| (n.clone(), m.snapshot()))
                    .collect(),
            ),
            (
                "alert",
                self.0
                    .alerts()
                    .iter()
                    .map(|(n, m)| (n.clone(), m.snapshot()))
                    .collect(),
            ),
        ];
        for (scope, rows) in &scopes {
            let Some((_, first)) = rows.first() else {
                continue;
            };
            for (i, (field, _)) in first.iter().enumerate() {
                let samples: Vec<(Labels, u64)> = rows
                    .iter()
                    .map(|(n, snap)| (vec![(scope.to_string(), n.to_string())], snap[i].1))
                    .collect();
                let gauge = (*scope == "output" && OUTPUT_GAUGES.contains(field))
                    || (*scope == "listener" && LISTENER_GAUGES.contains(field))
                    || (*scope == "alert" && ALERT_GAUGES.contains(field));
                encode_family(&mut encoder, &format!("{scope}_{field}"), gauge, &samples)?;
            }
        }
        let latencies = self.0.request_latencies();
        if !latencies.is_empty() {
            let mut m = encoder.encode_descriptor(
                "output_request_seconds",
                "how long the requests of outputs that send requests took",
                None,
                MetricType::Histogram,
            )?;
            for (name, h) in latencies {
                let (sum, count, buckets) = h.snapshot();
                let labels: Labels = vec![("output".to_string(), name.to_string())];
                m.encode_family(&labels)?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                        sum, count, &buckets, None,
                    )?;
            }
        }
        let per_broker: Vec<(Labels, u64)> = self
            .0
            .all_broker_connects()
            .iter()
            .flat_map(|(output, b)| {
                b.snapshot().into_iter().map(move |(broker, n)| {
                    (
                        vec![
                            ("output".to_string(), output.to_string()),
                            ("broker".to_string(), broker),
                        ],
                        n,
                    )
                })
            })
            .collect();
        if !per_broker.is_empty() {
            encode_family(&mut encoder, "output_broker_connects", false, &per_broker)?;
        }
        // Single samples without labels: `sluice_unrouted_total N`, not `..._total{} N`.
        for (name, help, counter) in [
            ("unrouted", "events that matched no route", &self.0.unrouted),
            (
                "alert_feed_queued",
                "events handed to the alert engine's queue",
                &self.0.alert_feed.queued,
            ),
            (
                "alert_feed_dropped",
                "events the alert engine's full queue dropped",
                &self.0.alert_feed.dropped_queue_full,
            ),
            (
                "metrics_connections_refused",
                "connections to this endpoint closed unserved: too many were open",
                &self.0.metrics_connections_refused,
            ),
        ] {
            let m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(metrics::get(counter)).encode(m)?;
        }
        Ok(())
    }
}

/// The registry behind `/metrics`: every family prefixed `sluice_`, counters suffixed `_total`.
pub fn registry(metrics: Arc<Metrics>) -> Registry {
    let mut r = Registry::with_prefix("sluice");
    r.register_collector(Box::new(MetricsCollector(metrics)));
    r
}

/// Serves `/metrics` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let registry = Arc::new(registry(metrics.clone()));
    let slots = Arc::new(Semaphore::new(METRICS_MAX_CONNECTIONS));
    let mut accept_retry = Backoff::new(ACCEPT_RETRY_MIN, ACCEPT_RETRY_MAX);
    let mut refuse_log = LogLimiter::new(FAILURE_LOG_INTERVAL);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((s, _)) => {
                accept_retry.succeed();
                s
            }
            Err(e) => {
                // EMFILE leaves the connection queued and accept fails again at once: wait.
                let failure = accept_retry.fail();
                if let Some(suppressed) = failure.log {
                    tracing::warn!(error = %e, suppressed,
                        retry_in_ms = failure.delay.as_millis() as u64, "metrics: accept failed");
                }
                backoff::pause(failure.delay, &shutdown).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::add(&metrics.metrics_connections_refused, 1);
            if let Some(suppressed) = refuse_log.allow() {
                tracing::warn!(
                    suppressed,
                    max_connections = METRICS_MAX_CONNECTIONS,
                    "metrics: connection refused: too many open"
                );
            }
            drop(stream);
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(respond(&registry, &req)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            // One request per connection, so the timeout bounds the wait for the request, the
            // answer and any idle time alike.
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(io, service);
            match tokio::time::timeout(METRICS_CONNECTION_TIMEOUT, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "metrics: connection failed"),
                Err(_) => {
                    tracing::debug!("metrics: connection closed: no request answered in time")
                }
            }
            drop(slot);
        });
    }
}

fn respond<B>(registry: &Registry, req: &Request<B>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, ctype: &str, body: String| {
        Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, ctype)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    if req.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "text/plain", "see /metrics\n".into());
    }
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            text,
        ),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("encoding failed: {e}\n"),
        ),
    }
}
