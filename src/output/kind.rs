//! The output kinds, as the config loader and the daemon see them: one enum with a variant per
//! kind module, and the exhaustive matches that reach each kind's settings, environment checks,
//! resources and start. A new kind is a module and a variant here; the compiler then names every
//! match that must handle it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::format::Format;
use super::queue::QueueConfig;
use super::{ReopenFiles, RunningOutput, file, forward, stdout};
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

/// Output kinds, each with its module's settings.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputKind {
    /// Standard output.
    Stdout(stdout::StdoutSettings),
    /// A file, its path possibly templated per event.
    File(file::FileOutputConfig),
    /// Another syslog receiver (a relay or a SIEM).
    Forward(forward::ForwardSettings),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputDescriptors {
    /// Files it may keep open (`max_open_files`).
    pub files: usize,
    /// Connections to collectors.
    pub connections: usize,
}

#[derive(Deserialize, Default)]
struct FormatPart {
    format: Option<Spanned<String>>,
}

impl Part for FormatPart {}

impl OutputKind {
    /// Every kind's `kind = "..."` spelling, in the order messages list them.
    pub const NAMES: [&'static str; 3] = [file::KIND, stdout::KIND, forward::KIND];

    /// Reads `[output.NAME]` whose kind the loader found in `entry.kind`.
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
        let format = entry.part::<FormatPart>(errs).and_then(|f| match &f.format {
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
        let kind = entry.kind.get_ref().clone();
        Some(match kind.as_str() {
            stdout::KIND => OutputKind::Stdout(stdout::StdoutSettings::decode(entry, errs)?),
            file::KIND => OutputKind::File(file::FileOutputConfig::decode(entry, errs)?),
            forward::KIND => OutputKind::Forward(forward::ForwardSettings::decode(entry, errs)?),
            other => {
                let names: Vec<String> = Self::NAMES.iter().map(|n| format!("{n:?}")).collect();
                errs.at(
                    entry.kind.span(),
                    entry.key("kind"),
                    format!(
                        "unknown output kind {other:?}: expected {}",
                        crate::decode::or_list(&names)
                    ),
                );
                return None;
            }
        })
    }

    /// The keys kind `kind` reads, found by reading an empty table the way its decoder does.
    pub fn keys_of(kind: &str) -> Vec<String> {
        let mut entry = Entry::probe(kind);
        let mut errs = Errors::new("", "");
        let _ = OutputKind::decode_output("probe", &mut entry, &mut errs);
        entry.probed_keys()
    }

    /// The descriptors it may hold at once, for the descriptor budget.
    pub fn descriptors(&self) -> OutputDescriptors {
        let (files, connections) = match self {
            OutputKind::Stdout(_) => (0, 0),
            OutputKind::File(f) => (f.max_open_files, 0),
            OutputKind::Forward(f) => (0, f.addresses.len()),
        };
        OutputDescriptors { files, connections }
    }

    /// The format lines are written in when `format` is not given.
    pub fn default_format(&self) -> Format {
        match self {
            OutputKind::Stdout(_) | OutputKind::File(_) => Format::Traditional,
            OutputKind::Forward(_) => Format::Rfc5424,
        }
    }

    /// Whether events wait in a backlog that can be on disk, bounded in bytes and drop the
    /// oldest: kinds that deliver over a network.
    pub fn has_backlog(&self) -> bool {
        match self {
            OutputKind::Stdout(_) | OutputKind::File(_) => false,
            OutputKind::Forward(_) => true,
        }
    }

    /// `stdout`, `file` or `forward`.
    pub fn name(&self) -> &'static str {
        match self {
            OutputKind::Stdout(_) => stdout::KIND,
            OutputKind::File(_) => file::KIND,
            OutputKind::Forward(_) => forward::KIND,
        }
    }
}

impl OutputConfig {
    /// What this output writes to, for a reload's hand-over.
    pub fn resources(&self, state_dir: &Path) -> Vec<OutputResource> {
        let mut held = match &self.kind {
            OutputKind::Stdout(_) | OutputKind::Forward(_) => Vec::new(),
            OutputKind::File(_) => vec![OutputResource::Files],
        };
        if let super::queue::QueueKind::Disk { .. } = self.queue.kind {
            held.push(OutputResource::DiskQueue(self.disk_queue_dir(state_dir)));
        }
        held
    }

    /// Where its disk queue lives, if it has one.
    pub fn disk_queue_dir(&self, state_dir: &Path) -> PathBuf {
        state_dir.join(&*self.name)
    }

    /// `--check-config` and the daemon's start: what needs the file system. Problems are pushed
    /// as `KEY: what`; TLS files go through `tls`.
    pub fn check_environment(
        &self,
        state_dir: &Path,
        problems: &mut Vec<String>,
        tls_files: &mut crate::tls::FileCheck,
    ) {
        let key = format!("output.{}", self.name);
        match &self.kind {
            OutputKind::Stdout(_) => {}
            OutputKind::File(f) => f.check_environment(&key, problems),
            OutputKind::Forward(f) => f.check_environment(&key, tls_files),
        }
        if let super::queue::QueueKind::Disk { .. } = self.queue.kind {
            let dir = self.disk_queue_dir(state_dir);
            if let Err(e) = crate::sys::creatable_dir(&dir) {
                problems.push(format!(
                    "{key}.queue: disk queue directory {} cannot be created: {e}",
                    dir.display()
                ));
            }
        }
    }

    /// Starts the output's thread and returns the handle to its queue. `give_up` is cancelled
    /// when the shutdown deadline passes: outputs that retry stop retrying. `predecessor` is
    /// the thread of the output this one replaces on a reload when both hold a resource: the
    /// new thread takes over once it has finished, while events already queue.
    pub fn start(
        &self,
        metrics: Arc<OutputMetrics>,
        give_up: tokio_util::sync::CancellationToken,
        state_dir: &Path,
        reopen: ReopenFiles,
        predecessor: Option<std::thread::JoinHandle<()>>,
    ) -> anyhow::Result<RunningOutput> {
        match &self.kind {
            OutputKind::Stdout(_) => super::start_sink(
                self,
                Box::new(stdout::StdoutSink::new(self.format, metrics.clone())),
                stdout::FLUSH_INTERVAL,
                metrics,
                predecessor,
            ),
            OutputKind::File(f) => super::start_sink(
                self,
                Box::new(file::FileSink::new(
                    self.name.clone(),
                    f,
                    self.format,
                    metrics.clone(),
                    reopen,
                )?),
                f.flush_interval,
                metrics,
                predecessor,
            ),
            OutputKind::Forward(f) => {
                forward::start(self, f, metrics, give_up, state_dir, predecessor)
            }
        }
    }
}
