//! The settings of `kind = "file"` outputs: path template, limits, durability, rotation and the
//! mode and owner of created files.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Compression, FsyncPolicy, PathTemplate, Perms, RotateConfig, SegmentNaming};
use crate::decode::{
    Entry, Errors, NumOrStr, Part, duration_opt, id_opt, keys, mode_opt, positive, size_opt,
};
use crate::privileges::{lookup_group, lookup_user};

/// `kind = "file"`.
pub const KIND: &str = "file";
/// Smallest `rotate.size`: below this nearly every line would start a segment.
const MIN_ROTATE_SIZE_BYTES: u64 = 4 * 1024;
/// Shortest `rotate.interval`.
const MIN_ROTATE_INTERVAL: Duration = Duration::from_secs(1);
/// Default bound on open files per templated file output.
pub const DEFAULT_MAX_OPEN_FILES: usize = 256;
/// Default `max_files_per_day` of a file output.
pub const DEFAULT_MAX_FILES_PER_DAY: usize = 10_000;
/// Default `idle_timeout` of a templated file output (rsyslog's dynafile closeTimeout is 10 min).
pub const DEFAULT_FILE_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Default interval at which file outputs flush buffered lines (so `tail -f` sees them).
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// The settings of a `kind = "file"` output.
#[derive(Debug, Clone, PartialEq)]
pub struct FileOutputConfig {
    /// Path template.
    pub path: PathTemplate,
    /// Bound on simultaneously open files (templated paths).
    pub max_open_files: usize,
    /// Bound on distinct files written per day (templated paths; hostile input J01).
    pub max_files_per_day: usize,
    /// How often buffered lines are written out (and synced, with `fsync = "interval"`).
    pub flush_interval: Duration,
    /// Close a file that has had no line for this long; `None` keeps it open.
    pub idle_timeout: Option<Duration>,
    /// When data is forced to disk.
    pub fsync: FsyncPolicy,
    /// Rotation and retention, if sluice rotates this output's files.
    pub rotate: Option<RotateConfig>,
    /// Mode and owner of created files and directories.
    pub perms: Perms,
}

#[derive(Deserialize, Default)]
struct FileRaw {
    path: Option<Spanned<String>>,
    max_open_files: Option<Spanned<i64>>,
    max_files_per_day: Option<Spanned<i64>>,
    flush_interval: Option<Spanned<NumOrStr>>,
    idle_timeout: Option<Spanned<NumOrStr>>,
    fsync: Option<Spanned<String>>,
    rotate: Option<RawRotate>,
    file_mode: Option<Spanned<String>>,
    dir_mode: Option<Spanned<String>>,
    owner: Option<Spanned<NumOrStr>>,
    group: Option<Spanned<NumOrStr>>,
}

impl Part for FileRaw {
    const NESTED: &'static [crate::decode::Nested] = &[("rotate", keys::fields::<RawRotate>)];
}

#[derive(Deserialize, Default)]
struct RawRotate {
    size: Option<Spanned<NumOrStr>>,
    interval: Option<Spanned<NumOrStr>>,
    keep: Option<Spanned<i64>>,
    max_age: Option<Spanned<NumOrStr>>,
    compress: Option<Spanned<String>>,
    naming: Option<Spanned<String>>,
}

impl RawRotate {
    /// Where the table is, for errors about it as a whole: its first key's value.
    fn span(&self) -> Option<std::ops::Range<usize>> {
        [
            self.size.as_ref().map(|v| v.span()),
            self.interval.as_ref().map(|v| v.span()),
            self.keep.as_ref().map(|v| v.span()),
            self.max_age.as_ref().map(|v| v.span()),
            self.compress.as_ref().map(|v| v.span()),
            self.naming.as_ref().map(|v| v.span()),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|s| s.start)
    }
}

impl crate::output::OutputKindSpec for FileOutputConfig {
    const KIND: &'static str = KIND;

    fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<FileOutputConfig> {
        let raw = entry.part::<FileRaw>(errs)?;
        let before = errs.count();
        let p = entry.path.clone();
        let template = match &raw.path {
            None => {
                entry.missing(
                    errs,
                    "path",
                    "missing: give a file path like \"/var/log/syslog\"",
                );
                None
            }
            Some(path) => PathTemplate::parse(path.get_ref())
                .map_err(|msg| errs.at(path.span(), format!("{p}.path"), msg))
                .ok(),
        };
        let max_open_files = positive(errs, &format!("{p}.max_open_files"), &raw.max_open_files)
            .unwrap_or(DEFAULT_MAX_OPEN_FILES);
        let max_files_per_day = positive(
            errs,
            &format!("{p}.max_files_per_day"),
            &raw.max_files_per_day,
        )
        .unwrap_or(DEFAULT_MAX_FILES_PER_DAY);
        let flush_interval =
            match duration_opt(errs, &format!("{p}.flush_interval"), &raw.flush_interval) {
                Some(d) if d.is_zero() => {
                    if let Some(v) = &raw.flush_interval {
                        errs.at(
                            v.span(),
                            format!("{p}.flush_interval"),
                            "must be more than 0",
                        );
                    }
                    DEFAULT_FLUSH_INTERVAL
                }
                Some(d) => d,
                None => DEFAULT_FLUSH_INTERVAL,
            };
        let idle_timeout = duration_opt(errs, &format!("{p}.idle_timeout"), &raw.idle_timeout);
        let fsync = match &raw.fsync {
            None => FsyncPolicy::Never,
            Some(v) => FsyncPolicy::from_name(v.get_ref()).unwrap_or_else(|| {
                errs.at(
                    v.span(),
                    format!("{p}.fsync"),
                    format!(
                        "unknown fsync policy {:?}: expected \"never\", \"interval\" or \"every_batch\"",
                        v.get_ref()
                    ),
                );
                FsyncPolicy::Never
            }),
        };
        let rotate = raw
            .rotate
            .as_ref()
            .and_then(|r| validate_rotate(errs, &format!("{p}.rotate"), r, entry.kind.span()));
        let defaults = Perms::default();
        let perms = Perms {
            file_mode: mode_opt(errs, &format!("{p}.file_mode"), &raw.file_mode)
                .unwrap_or(defaults.file_mode),
            dir_mode: mode_opt(errs, &format!("{p}.dir_mode"), &raw.dir_mode)
                .unwrap_or(defaults.dir_mode),
            owner: id_opt(errs, &format!("{p}.owner"), &raw.owner, lookup_user),
            group: id_opt(errs, &format!("{p}.group"), &raw.group, lookup_group),
        };
        let template = template?;
        // A static path is one file: closing it when idle only costs a reopen.
        let idle_timeout = match idle_timeout {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None if template.is_static() => None,
            None => Some(DEFAULT_FILE_IDLE_TIMEOUT),
        };
        (errs.count() == before).then_some(FileOutputConfig {
            path: template,
            max_open_files,
            max_files_per_day,
            flush_interval,
            idle_timeout,
            fsync,
            rotate,
            perms,
        })
    }

    fn descriptors(&self) -> crate::output::OutputDescriptors {
        crate::output::OutputDescriptors {
            files: self.max_open_files,
            connections: 0,
        }
    }

    fn writes_files(&self) -> bool {
        true
    }

    /// The directory of the path's fixed part exists or can be created, and a file can be
    /// created in it.
    fn check_environment(
        &self,
        key: &str,
        problems: &mut Vec<String>,
        _tls: &mut crate::tls::FileCheck,
    ) {
        let dir = self.path.static_dir();
        if let Err(e) = crate::sys::creatable_dir(&dir) {
            problems.push(format!(
                "{key}.path: directory {} cannot be created: {e}",
                dir.display()
            ));
        }
    }

    fn start(
        &self,
        output: &crate::output::OutputConfig,
        ctx: crate::output::OutputStart<'_>,
    ) -> anyhow::Result<crate::output::RunningOutput> {
        let sink = super::FileSink::new(
            output.name.clone(),
            self,
            output.format,
            ctx.metrics.clone(),
            ctx.reopen,
        )?;
        crate::output::start_sink(
            output,
            Box::new(sink),
            self.flush_interval,
            ctx.metrics,
            ctx.predecessor,
        )
    }
}

fn validate_rotate(
    errs: &mut Errors<'_>,
    p: &str,
    raw: &RawRotate,
    fallback_span: std::ops::Range<usize>,
) -> Option<RotateConfig> {
    let n_before = errs.list.len();
    let size_bytes = size_opt(errs, &format!("{p}.size"), &raw.size);
    if let (Some(n), Some(v)) = (size_bytes, &raw.size)
        && n < MIN_ROTATE_SIZE_BYTES
    {
        errs.at(
            v.span(),
            format!("{p}.size"),
            format!("must be at least 4KiB, got {n} bytes"),
        );
    }
    let interval = match &raw.interval {
        Some(v) => match v.get_ref() {
            NumOrStr::Str(s) if s == "hourly" => Some(Duration::from_secs(3600)),
            NumOrStr::Str(s) if s == "daily" => Some(Duration::from_secs(86_400)),
            _ => duration_opt(errs, &format!("{p}.interval"), &raw.interval),
        },
        None => None,
    };
    if let (Some(d), Some(v)) = (interval, &raw.interval)
        && d < MIN_ROTATE_INTERVAL
    {
        errs.at(v.span(), format!("{p}.interval"), "must be at least 1s");
    }
    if size_bytes.is_none() && interval.is_none() && errs.list.len() == n_before {
        errs.at(
            raw.span().unwrap_or(fallback_span),
            p,
            "give size, interval or both: nothing would start a rotation",
        );
    }
    let keep = positive(errs, &format!("{p}.keep"), &raw.keep);
    let max_age = duration_opt(errs, &format!("{p}.max_age"), &raw.max_age);
    let compress = match &raw.compress {
        None => Compression::Gzip,
        Some(v) => Compression::from_name(v.get_ref()).unwrap_or_else(|| {
            errs.at(
                v.span(),
                format!("{p}.compress"),
                format!(
                    "unknown compression {:?}: expected \"gzip\", \"zstd\" or \"none\"",
                    v.get_ref()
                ),
            );
            Compression::None
        }),
    };
    let naming = match raw.naming.as_ref().map(|v| (v, v.get_ref().as_str())) {
        None | Some((_, "number")) => SegmentNaming::Number,
        Some((_, "date")) => SegmentNaming::Date,
        Some((v, other)) => {
            errs.at(
                v.span(),
                format!("{p}.naming"),
                format!("unknown naming {other:?}: expected \"number\" or \"date\""),
            );
            SegmentNaming::Number
        }
    };
    (errs.list.len() == n_before).then_some(RotateConfig {
        size_bytes,
        interval,
        keep,
        max_age,
        compress,
        naming,
    })
}
