//! The `http` output: batches of events POSTed (or PUT) to a URL, as NDJSON, a JSON array or
//! formatted lines, through a memory or disk backlog ([`super::delivery`]). The escape hatch for
//! SIEM and log-store APIs that take HTTP (Splunk HEC, Graylog GELF over HTTP, Datadog, ...).
//!
//! An answer decides what becomes of a batch:
//! - 2xx: delivered; the events leave the backlog.
//! - 408, 429 and 5xx, a connection error or no answer within `timeout`: nothing leaves the
//!   backlog; the batch is sent again after a backoff, not before the server's `Retry-After`.
//! - 413: the batch is split in halves and sent again at once; a single event still too large
//!   is refused for good.
//! - Any other 4xx: refused for good. The events are counted in `rejected` and the answer is
//!   logged (at a bounded rate); they leave the backlog, so they never block the events after
//!   them.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::http_client::{BodyShape, HttpClient, HttpEndpoint};
use crate::decode::{Entry, Errors, Part, choice};
use crate::event::Event;
use crate::output::delivery::{Attempt, Refusals, Transport};
use crate::output::format::Format;
use crate::output::{OutputConfig, OutputDescriptors, OutputKindSpec, OutputStart, RunningOutput};

/// `kind = "http"`.
pub const KIND: &str = "http";

/// The settings of an `http` output.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// Where and how requests go.
    pub endpoint: HttpEndpoint,
    /// POST or PUT.
    pub method: hyper::Method,
    /// How a batch becomes a body.
    pub encoding: Encoding,
}

/// How a batch of events becomes a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// One JSON event per line (`application/x-ndjson`).
    Ndjson,
    /// One JSON array of events (`application/json`).
    JsonArray,
    /// Formatted lines, one per event (`text/plain`).
    Lines,
}

#[derive(Deserialize, Default)]
struct HttpRaw {
    method: Option<Spanned<String>>,
    encoding: Option<Spanned<String>>,
}

impl Part for HttpRaw {}

impl OutputKindSpec for HttpSettings {
    const KIND: &'static str = KIND;
    const DEFAULT_FORMAT: Format = Format::Json;
    const HAS_BACKLOG: bool = true;

    fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<HttpSettings> {
        let mut endpoint = HttpEndpoint::decode(entry, errs);
        let max_in_flight = super::http_client::decode_max_in_flight(entry, errs);
        if let Some(e) = &mut endpoint {
            e.max_in_flight = max_in_flight;
        }
        let raw = entry.part::<HttpRaw>(errs)?;
        let method = choice(
            errs,
            &entry.key("method"),
            &raw.method,
            "method",
            &[("post", false), ("put", true)],
            false,
        );
        let encoding = choice(
            errs,
            &entry.key("encoding"),
            &raw.encoding,
            "encoding",
            &[
                ("ndjson", Encoding::Ndjson),
                ("json_array", Encoding::JsonArray),
                ("lines", Encoding::Lines),
            ],
            Encoding::Ndjson,
        );
        Some(HttpSettings {
            endpoint: endpoint?,
            method: if method {
                hyper::Method::PUT
            } else {
                hyper::Method::POST
            },
            encoding,
        })
    }

    /// NDJSON and JSON arrays hold JSON events; lines take any format.
    fn accepts_format(&self, format: Format) -> Result<(), String> {
        match (self.encoding, format) {
            (Encoding::Ndjson | Encoding::JsonArray, Format::Json) | (Encoding::Lines, _) => Ok(()),
            (Encoding::Ndjson | Encoding::JsonArray, _) => Err(
                "encoding = \"ndjson\" and \"json_array\" carry JSON events: use format = \"json\", or encoding = \"lines\"".into(),
            ),
        }
    }

    fn dead_letter(&self) -> Option<&str> {
        self.endpoint.dead_letter.as_deref()
    }

    fn descriptors(&self) -> OutputDescriptors {
        OutputDescriptors {
            files: 0,
            connections: self.endpoint.max_in_flight,
        }
    }

    fn check_environment(
        &self,
        key: &str,
        problems: &mut Vec<String>,
        tls: &mut crate::tls::FileCheck,
    ) {
        self.endpoint.check_environment(key, problems, tls);
    }

    fn start(&self, output: &OutputConfig, ctx: OutputStart<'_>) -> anyhow::Result<RunningOutput> {
        let (settings, format) = (self.clone(), output.format);
        super::http_client::start(output, ctx, move |p| {
            HttpTransport::new(p, settings, format)
        })
    }
}

/// How an `http` output sends.
struct HttpTransport {
    settings: HttpSettings,
    format: Format,
    client: HttpClient,
    refusals: Refusals,
}

impl HttpTransport {
    fn new(
        parts: super::http_client::TransportParts,
        settings: HttpSettings,
        format: Format,
    ) -> anyhow::Result<HttpTransport> {
        let content_type = match settings.encoding {
            Encoding::Ndjson => "application/x-ndjson",
            Encoding::JsonArray => "application/json",
            Encoding::Lines => "text/plain; charset=utf-8",
        };
        let (client, refusals) = parts.split(settings.endpoint.clone(), content_type)?;
        Ok(HttpTransport {
            settings,
            format,
            client,
            refusals,
        })
    }
}

impl Transport for HttpTransport {
    fn encode(&self, event: &Event, out: &mut Vec<u8>) {
        // One line, escaped so it cannot split, without its LF (the encoding adds separators).
        self.format.write_line(event, out);
        out.pop();
    }

    fn batch_records(&self) -> usize {
        self.settings.endpoint.batch.max_events
    }

    fn window_records(&self) -> usize {
        self.settings.endpoint.batch.max_events * self.settings.endpoint.max_in_flight
    }

    fn max_wait(&self) -> Duration {
        self.settings.endpoint.batch.max_wait
    }

    fn send(&mut self, records: &[Vec<u8>]) -> Attempt {
        let path = self
            .settings
            .endpoint
            .url
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let shape = match self.settings.encoding {
            Encoding::Ndjson | Encoding::Lines => BodyShape::LINES,
            Encoding::JsonArray => BodyShape::JSON_ARRAY,
        };
        self.client.send_records(
            self.settings.method.clone(),
            &path,
            records,
            shape,
            &mut self.refusals,
        )
    }

    fn close(&mut self) {
        self.client.close();
    }
}
