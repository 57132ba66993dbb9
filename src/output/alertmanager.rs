//! The `alertmanager` output: alerts POSTed to Prometheus Alertmanager's
//! `/api/v2/alerts` (appended to `url`), as Prometheus and Loki's ruler send them: labels
//! (`alertname`, the group's fields, `severity`), annotations (`summary`, `description`,
//! `value`, `expected`), `startsAt`, `endsAt` and `generatorURL`. A firing alert's `endsAt`
//! lies four re-send intervals ahead, and the alert engine re-sends it every
//! `resend_interval` while it fires, so Alertmanager keeps it active; a resolution is the
//! same alert with `endsAt` at the time it cleared. Delivery, backlog and retries are those of
//! every HTTP output ([`super::alert_post`], [`super::delivery`]).

use super::alert_post::{AlertPost, Shape, path_with};
use super::http_client::HttpEndpoint;
use crate::decode::{Entry, Errors};
use crate::output::format::Format;
use crate::output::{OutputConfig, OutputDescriptors, OutputKindSpec, OutputStart, RunningOutput};

/// `kind = "alertmanager"`.
pub const KIND: &str = "alertmanager";
/// Appended to `url`.
pub const API_PATH: &str = "/api/v2/alerts";

/// The settings of an `alertmanager` output.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertmanagerSettings {
    /// Alertmanager's base URL and the request settings.
    pub endpoint: HttpEndpoint,
}

impl OutputKindSpec for AlertmanagerSettings {
    const KIND: &'static str = KIND;
    const DEFAULT_FORMAT: Format = Format::Json;
    const HAS_BACKLOG: bool = true;

    fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<Self> {
        Some(AlertmanagerSettings {
            endpoint: HttpEndpoint::decode(entry, errs)?,
        })
    }

    fn accepts_format(&self, format: Format) -> Result<(), String> {
        match format {
            Format::Json => Ok(()),
            _ => Err("alertmanager outputs send Alertmanager's JSON alerts: leave format out, or set format = \"json\"".into()),
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
        let path = path_with(&endpoint.url, API_PATH);
        super::http_client::start(output, ctx, move |p| {
            AlertPost::new(p, endpoint, path, Shape::Alertmanager)
        })
    }
}
