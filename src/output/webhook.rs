//! The `webhook` output: alerts POSTed as generic JSON to `url` (chat bridges, incident
//! tools, scripts): `{"version":"1","source":"sluice","alerts":[...]}`, each alert with its
//! `status` (`firing` or `resolved`), `labels`, `annotations`, `startsAt`, `endsAt` and
//! `generatorURL`, the shape of Alertmanager's own webhook alerts. A firing alert is sent once
//! and its resolution once (the alert engine sends re-sends to `alertmanager` outputs only).
//! Failed requests are retried with a backoff from a bounded backlog ([`super::delivery`]).

use super::alert_post::{AlertPost, Shape, path_with};
use super::http_client::HttpEndpoint;
use crate::decode::{Entry, Errors};
use crate::output::format::Format;
use crate::output::{OutputConfig, OutputDescriptors, OutputKindSpec, OutputStart, RunningOutput};

/// `kind = "webhook"`.
pub const KIND: &str = "webhook";

/// The settings of a `webhook` output.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookSettings {
    /// Where alerts are POSTed, and the request settings.
    pub endpoint: HttpEndpoint,
}

impl OutputKindSpec for WebhookSettings {
    const KIND: &'static str = KIND;
    const DEFAULT_FORMAT: Format = Format::Json;
    const HAS_BACKLOG: bool = true;

    fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<Self> {
        Some(WebhookSettings {
            endpoint: HttpEndpoint::decode(entry, errs)?,
        })
    }

    fn accepts_format(&self, format: Format) -> Result<(), String> {
        match format {
            Format::Json => Ok(()),
            _ => Err(
                "webhook outputs send JSON alerts: leave format out, or set format = \"json\""
                    .into(),
            ),
        }
    }

    fn dead_letter(&self) -> Option<&str> {
        self.endpoint.dead_letter.as_deref()
    }

    fn descriptors(&self) -> OutputDescriptors {
        OutputDescriptors {
            files: 0,
            connections: 1,
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
        let endpoint = self.endpoint.clone();
        let path = path_with(&endpoint.url, "");
        super::http_client::start(output, ctx, move |p| {
            AlertPost::new(p, endpoint, path, Shape::Webhook)
        })
    }
}
