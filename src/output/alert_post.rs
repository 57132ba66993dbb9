//! What the `alertmanager` and `webhook` outputs share: each event becomes one alert
//! ([`crate::alert::notice::AlertFields`]) encoded as a JSON record in the backlog, and a batch
//! of records is POSTed as one JSON body. Answers are handled as the `http` output handles
//! them: 2xx delivered; 408, 429, 5xx and connection errors retried after a backoff (and not
//! before `Retry-After`); 413 halves the batch; other 4xx refused for good, counted, logged
//! and handed to `dead_letter`.

use std::time::Duration;

use super::delivery::{Attempt, Refusals, Transport};
use super::http_client::{BodyShape, HttpClient, HttpEndpoint, TransportParts};
use crate::alert::notice::AlertFields;
use crate::event::Event;

/// How a batch of alerts becomes a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Alertmanager's `POST /api/v2/alerts`: a JSON array of alerts.
    Alertmanager,
    /// `{"version":"1","source":"sluice","alerts":[...]}`, each alert with its `status`.
    Webhook,
}

/// The transport of an alert-sending output.
pub struct AlertPost {
    shape: Shape,
    endpoint: HttpEndpoint,
    /// The request path (and query).
    path: String,
    client: HttpClient,
    refusals: Refusals,
}

impl AlertPost {
    /// A transport POSTing to `path` on `endpoint`.
    pub fn new(
        parts: TransportParts,
        endpoint: HttpEndpoint,
        path: String,
        shape: Shape,
    ) -> anyhow::Result<AlertPost> {
        let (client, refusals) = parts.split(endpoint.clone(), "application/json")?;
        Ok(AlertPost {
            shape,
            endpoint,
            path,
            client,
            refusals,
        })
    }
}

impl Transport for AlertPost {
    fn encode(&self, event: &Event, out: &mut Vec<u8>) {
        let alert = AlertFields::of(event);
        let json = match self.shape {
            Shape::Alertmanager => alert.alertmanager_json(),
            Shape::Webhook => alert.webhook_json(),
        };
        // Writing a Value to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &json);
    }

    fn batch_records(&self) -> usize {
        self.endpoint.batch.max_events
    }

    fn max_wait(&self) -> Duration {
        self.endpoint.batch.max_wait
    }

    fn send(&mut self, records: &[Vec<u8>]) -> Attempt {
        let shape = match self.shape {
            Shape::Alertmanager => BodyShape::JSON_ARRAY,
            // The alerts in an object that says what sent them.
            Shape::Webhook => BodyShape {
                open: br#"{"version":"1","source":"sluice","alerts":["#,
                close: b"]}",
                ..BodyShape::JSON_ARRAY
            },
        };
        self.client.send_records(
            hyper::Method::POST,
            &self.path,
            records,
            shape,
            &mut self.refusals,
        )
    }

    fn close(&mut self) {
        self.client.close();
    }
}

/// The path of `url`, with `suffix` appended (one `/` between them).
pub fn path_with(url: &hyper::Uri, suffix: &str) -> String {
    let base = url.path().trim_end_matches('/');
    let mut path = format!("{base}{suffix}");
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    path
}
