//! The output kinds, as the config loader and the daemon see them. Each kind is a module whose
//! settings type implements [`OutputKindSpec`]: how it reads its table, its defaults, what it
//! holds, what it checks on the machine and how it starts. The `output_kinds!` invocation below
//! registers it with one line, and generates the [`OutputKind`] enum and its exhaustive
//! matches: a kind left out of any of them does not compile.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::format::Format;
use super::queue::{QueueConfig, QueueKind};
use super::{
    ReopenFiles, RunningOutput, alertmanager, elasticsearch, file, forward, http, kafka, loki,
    relp, stdout, webhook,
};
use crate::decode::{Entry, Errors, Part};
use crate::metrics::OutputMetrics;

/// One `[output.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputConfig {
    /// NAME.
    pub name: Arc<str>,
    /// Line format.
    pub format: Format,
    /// The bounded queue in front of the output.
    pub queue: QueueConfig,
    /// Kind-specific settings.
    pub kind: OutputKind,
}

/// What an output writes to that its next version, after a reload, must not write to at the
/// same time: the new version takes over once the old one has finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputResource {
    /// The output's files (whatever its path template: templates may overlap).
    Files,
    /// A disk queue directory.
    DiskQueue(PathBuf),
}

/// The descriptors an output may hold at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputDescriptors {
    /// Files it may keep open (`max_open_files`).
    pub files: usize,
    /// Connections to collectors.
    pub connections: usize,
}

/// What an output is started with, besides its configuration.
pub struct OutputStart<'a> {
    /// Its counters.
    pub metrics: Arc<OutputMetrics>,
    /// Cancelled when the shutdown deadline passes: outputs that retry stop retrying.
    pub give_up: tokio_util::sync::CancellationToken,
    /// `[daemon] state_dir`, where disk queues live.
    pub state_dir: &'a Path,
    /// SIGHUP's request to reopen files.
    pub reopen: ReopenFiles,
    /// The thread of the output this one replaces on a reload when both hold a resource: the
    /// new thread takes over once it has finished, while events already queue.
    pub predecessor: Option<std::thread::JoinHandle<()>>,
    /// Where events refused for good go, for kinds with `dead_letter`.
    pub dead_letter: Option<super::delivery::DeadLetter>,
    /// Every counter of the daemon: kinds that send requests take their request-duration
    /// histogram from it (the others show none).
    pub all_metrics: Arc<crate::metrics::Metrics>,
}

/// What an output kind's module provides, for its settings type.
pub trait OutputKindSpec: Sized + Clone + PartialEq + std::fmt::Debug {
    /// Its `kind = "..."` spelling.
    const KIND: &'static str;
    /// The format lines are written in when `format` is not given.
    const DEFAULT_FORMAT: Format = Format::Traditional;
    /// Whether events wait in a backlog that can be on disk, bounded in bytes and drop the
    /// oldest: kinds that deliver over a network.
    const HAS_BACKLOG: bool = false;

    /// Reads its keys from `[output.NAME]` (`format` and `queue` are read apart). Every
    /// problem is reported; `None` when there was one.
    fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<Self>;

    /// Whether it can write events in `format` (the output's `format` key); the error says
    /// why not.
    fn accepts_format(&self, format: Format) -> Result<(), String> {
        let _ = format;
        Ok(())
    }

    /// The descriptors it may hold at once, for the descriptor budget.
    fn descriptors(&self) -> OutputDescriptors {
        OutputDescriptors::default()
    }

    /// The output its events refused for good go to (`dead_letter`), if any.
    fn dead_letter(&self) -> Option<&str> {
        None
    }

    /// Whether it writes files (see [`OutputResource::Files`]).
    fn writes_files(&self) -> bool {
        false
    }

    /// `--check-config`, the start and a reload: what needs the file system. Problems are
    /// pushed as `KEY: what`, `key` being `output.NAME`; TLS files go through `tls`.
    fn check_environment(
        &self,
        key: &str,
        problems: &mut Vec<String>,
        tls: &mut crate::tls::FileCheck,
    ) {
        let _ = (key, problems, tls);
    }

    /// Starts the output's thread and returns the handle to its queue.
    fn start(&self, output: &OutputConfig, ctx: OutputStart<'_>) -> anyhow::Result<RunningOutput>;
}

/// Generates [`OutputKind`], a variant per registered kind, and its dispatch to
/// [`OutputKindSpec`].
macro_rules! output_kinds {
    ($($(#[$doc:meta])* $variant:ident($settings:ty),)+) => {
        /// Output kinds, each with its module's settings.
        #[derive(Debug, Clone, PartialEq)]
        pub enum OutputKind {
            $($(#[$doc])* $variant($settings),)+
        }

        impl OutputKind {
            /// Every kind's `kind = "..."` spelling, in the order messages list them.
            pub const NAMES: &'static [&'static str] =
                &[$(<$settings as OutputKindSpec>::KIND),+];

            /// Reads the kind named by `entry.kind`; `Err` for an unknown kind.
            fn decode_kind(
                entry: &mut Entry<'_, '_>,
                errs: &mut Errors<'_>,
            ) -> Result<Option<OutputKind>, ()> {
                let kind = entry.kind.get_ref().clone();
                $(if kind == <$settings as OutputKindSpec>::KIND {
                    return Ok(<$settings>::decode(entry, errs).map(OutputKind::$variant));
                })+
                Err(())
            }

            /// Its `kind = "..."` spelling.
            pub fn name(&self) -> &'static str {
                match self {
                    $(OutputKind::$variant(_) => <$settings as OutputKindSpec>::KIND,)+
                }
            }

            /// The format lines are written in when `format` is not given.
            pub fn default_format(&self) -> Format {
                match self {
                    $(OutputKind::$variant(_) => <$settings as OutputKindSpec>::DEFAULT_FORMAT,)+
                }
            }

            /// Whether events wait in a backlog (disk queues, byte bounds, `drop_oldest`).
            pub fn has_backlog(&self) -> bool {
                match self {
                    $(OutputKind::$variant(_) => <$settings as OutputKindSpec>::HAS_BACKLOG,)+
                }
            }

            /// The descriptors it may hold at once.
            pub fn descriptors(&self) -> OutputDescriptors {
                match self {
                    $(OutputKind::$variant(s) => s.descriptors(),)+
                }
            }

            fn accepts_format(&self, format: Format) -> Result<(), String> {
                match self {
                    $(OutputKind::$variant(s) => s.accepts_format(format),)+
                }
            }

            /// The output its events refused for good go to, if any.
            pub fn dead_letter(&self) -> Option<&str> {
                match self {
                    $(OutputKind::$variant(s) => s.dead_letter(),)+
                }
            }

            fn writes_files(&self) -> bool {
                match self {
                    $(OutputKind::$variant(s) => s.writes_files(),)+
                }
            }

            fn check_kind_environment(
                &self,
                key: &str,
                problems: &mut Vec<String>,
                tls: &mut crate::tls::FileCheck,
            ) {
                match self {
                    $(OutputKind::$variant(s) => s.check_environment(key, problems, tls),)+
                }
            }

            fn start_kind(
                &self,
                output: &OutputConfig,
                ctx: OutputStart<'_>,
            ) -> anyhow::Result<RunningOutput> {
                match self {
                    $(OutputKind::$variant(s) => s.start(output, ctx),)+
                }
            }
        }
    };
}

// The registry: one line per kind.
output_kinds! {
    /// Standard output.
    Stdout(stdout::StdoutSettings),
    /// A file, its path possibly templated per event.
    File(file::FileOutputConfig),
    /// Another syslog receiver (a relay or a SIEM).
    Forward(forward::ForwardSettings),
    /// Any HTTP endpoint: batches as NDJSON, a JSON array or lines.
    Http(http::HttpSettings),
    /// Elasticsearch or OpenSearch, through the bulk API.
    Elasticsearch(elasticsearch::ElasticsearchSettings),
    /// Grafana Loki, through the push API.
    Loki(loki::LokiSettings),
    /// A RELP receiver (rsyslog's imrelp): each message acknowledged before it leaves the backlog.
    Relp(relp::RelpOutputSettings),
    /// Prometheus Alertmanager, through `/api/v2/alerts`: alert events as alerts.
    Alertmanager(alertmanager::AlertmanagerSettings),
    /// A generic JSON webhook: alert events as alerts.
    Webhook(webhook::WebhookSettings),
    /// A Kafka topic: each message acknowledged by every in-sync replica before it leaves the
    /// backlog.
    Kafka(kafka::KafkaSettings),
}

#[derive(Deserialize, Default)]
struct FormatPart {
    format: Option<Spanned<String>>,
}

impl Part for FormatPart {}

impl OutputKind {
    /// Reads `[output.NAME]`: `format`, `queue` and the kind named by `entry.kind`.
    pub fn decode_output(
        name: &str,
        entry: &mut Entry<'_, '_>,
        errs: &mut Errors<'_>,
    ) -> Option<OutputConfig> {
        let before = errs.count();
        let kind = OutputKind::decode(entry, errs);
        // A kind that did not decode is reported already: read the rest without adding to it.
        let (default_format, backlog) = kind.as_ref().map_or((Format::Traditional, true), |k| {
            (k.default_format(), k.has_backlog())
        });
        let format_part = entry.part::<FormatPart>(errs);
        let format_span = format_part
            .as_ref()
            .and_then(|f| f.format.as_ref())
            .map(|v| v.span());
        let format = format_part.and_then(|f| match &f.format {
            None => Some(default_format),
            Some(v) => Format::from_name(v.get_ref()).or_else(|| {
                errs.at(
                    v.span(),
                    entry.key("format"),
                    format!("unknown format {:?}: expected traditional, precise, rfc3164, rfc5424, json or raw", v.get_ref()),
                );
                None
            }),
        });
        let queue = QueueConfig::decode(entry, errs, backlog);
        if let (Some(k), Some(f)) = (&kind, format)
            && let Err(why) = k.accepts_format(f)
        {
            let span = format_span.unwrap_or_else(|| entry.kind.span());
            errs.at(span, entry.key("format"), why);
        }
        if errs.count() > before {
            return None;
        }
        Some(OutputConfig {
            name: name.into(),
            format: format?,
            queue: queue?,
            kind: kind?,
        })
    }

    fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<OutputKind> {
        match OutputKind::decode_kind(entry, errs) {
            Ok(kind) => kind,
            Err(()) => {
                entry.unknown_kind(errs, "output", Self::NAMES);
                None
            }
        }
    }

    /// The keys kind `kind` reads, found by reading an empty table the way its decoder does.
    pub fn keys_of(kind: &str) -> Vec<String> {
        let mut entry = Entry::probe(kind);
        let mut errs = Errors::new("", "");
        let _ = OutputKind::decode_output("probe", &mut entry, &mut errs);
        entry.probed_keys()
    }
}

impl OutputConfig {
    /// What this output writes to, for a reload's hand-over.
    pub fn resources(&self, state_dir: &Path) -> Vec<OutputResource> {
        let mut held = Vec::new();
        if self.kind.writes_files() {
            held.push(OutputResource::Files);
        }
        if let QueueKind::Disk { .. } = self.queue.kind {
            held.push(OutputResource::DiskQueue(self.disk_queue_dir(state_dir)));
        }
        held
    }

    /// Where its disk queue lives, if it has one.
    pub fn disk_queue_dir(&self, state_dir: &Path) -> PathBuf {
        state_dir.join(&*self.name)
    }

    /// `--check-config`, the start and a reload: what needs the file system, the kind's and the
    /// disk queue's. Problems are pushed as `KEY: what`; TLS files go through `tls`.
    pub fn check_environment(
        &self,
        state_dir: &Path,
        problems: &mut Vec<String>,
        tls: &mut crate::tls::FileCheck,
    ) {
        let key = format!("output.{}", self.name);
        self.kind.check_kind_environment(&key, problems, tls);
        if let QueueKind::Disk { .. } = self.queue.kind {
            let dir = self.disk_queue_dir(state_dir);
            if let Err(e) = crate::sys::creatable_dir(&dir) {
                problems.push(format!(
                    "{key}.queue: disk queue directory {} cannot be created: {e}",
                    dir.display()
                ));
            }
        }
    }

    /// Starts the output's thread and returns the handle to its queue.
    pub fn start(&self, ctx: OutputStart<'_>) -> anyhow::Result<RunningOutput> {
        self.kind.start_kind(self, ctx)
    }
}
