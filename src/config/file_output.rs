//! Validation of `kind = "file"` outputs: path template, limits, durability, rotation and the
//! mode and owner of created files.

use toml::Spanned;

use super::raw::*;
use super::*;
use crate::output::file::fs::{lookup_group, lookup_user};
use crate::output::file::{Compression, SegmentNaming};

/// Smallest `rotate.size`: below this nearly every line would start a segment.
const MIN_ROTATE_SIZE_BYTES: u64 = 4 * 1024;
/// Shortest `rotate.interval`.
const MIN_ROTATE_INTERVAL: Duration = Duration::from_secs(1);

pub(super) fn validate_file_output(
    errs: &mut Errors<'_>,
    p: &str,
    raw: RawOutput,
) -> Option<FileOutputConfig> {
    let Some(path) = &raw.path else {
        errs.at(
            raw.kind.span(),
            format!("{p}.path"),
            "missing: give a file path like \"/var/log/syslog\"",
        );
        return None;
    };
    let template = match PathTemplate::parse(path.get_ref()) {
        Ok(t) => t,
        Err(msg) => {
            errs.at(path.span(), format!("{p}.path"), msg);
            return None;
        }
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
    // A static path is one file: closing it when idle only costs a reopen.
    let idle_timeout = match duration_opt(errs, &format!("{p}.idle_timeout"), &raw.idle_timeout) {
        Some(d) if d.is_zero() => None,
        Some(d) => Some(d),
        None if template.is_static() => None,
        None => Some(DEFAULT_FILE_IDLE_TIMEOUT),
    };
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
        .and_then(|r| validate_rotate(errs, &format!("{p}.rotate"), r, raw.kind.span()));
    let defaults = Perms::default();
    let perms = Perms {
        file_mode: mode_opt(errs, &format!("{p}.file_mode"), &raw.file_mode)
            .unwrap_or(defaults.file_mode),
        dir_mode: mode_opt(errs, &format!("{p}.dir_mode"), &raw.dir_mode)
            .unwrap_or(defaults.dir_mode),
        owner: id_opt(errs, &format!("{p}.owner"), &raw.owner, lookup_user),
        group: id_opt(errs, &format!("{p}.group"), &raw.group, lookup_group),
    };
    Some(FileOutputConfig {
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

fn mode_opt(errs: &mut Errors<'_>, key: &str, v: &Option<Spanned<String>>) -> Option<u32> {
    let v = v.as_ref()?;
    parse_mode(v.get_ref())
        .map_err(|m| errs.at(v.span(), key, m))
        .ok()
}

/// A user or group given by name or number, resolved now so `--check-config` reports it.
pub(super) fn id_opt(
    errs: &mut Errors<'_>,
    key: &str,
    v: &Option<Spanned<NumOrStr>>,
    lookup: fn(&str) -> Result<u32, String>,
) -> Option<u32> {
    let v = v.as_ref()?;
    let r = match v.get_ref() {
        NumOrStr::Num(n) => u32::try_from(*n).map_err(|_| format!("invalid id {n}")),
        NumOrStr::Str(s) => lookup(s),
    };
    r.map_err(|m| errs.at(v.span(), key, m)).ok()
}
