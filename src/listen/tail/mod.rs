//! The `tail` listener: lines that programs write to files, each an event through the same
//! pipeline as a network message.
//!
//! One thread per listener, `tail-NAME`, owns its files: it finds them ([`discovery`]), reads
//! them ([`lines`]), joins multi-line records ([`multiline`]), routes the events through a
//! [`Dispatcher`] and waits for the outputs' queues to take them (on the runtime, through
//! `Handle::block_on`: file reads never run on the runtime's threads). Only then does it count
//! the lines as delivered, and every `checkpoint_interval` it saves those positions
//! ([`checkpoint`]). A restart or a crash resumes there: nothing is lost, and what was handed on
//! after the last save is read again (at most one `checkpoint_interval` of lines).
//!
//! Files are followed by device and inode, not by name. A name that points to a new inode is
//! a new file, read from 0; the old inode is read to its end before it is let go (renamed away:
//! once read to its end and unchanged for a `scan_interval`; deleted: once read to its end, or
//! after `close_deleted_after` at the latest). A file that shrinks was truncated in place
//! (copytruncate): it is read again from 0, and counted.
//!
//! At most `max_open_files` are held open; further matches wait, and at each scan a file read
//! to its end and unchanged since the scan before is closed (parked) to give its slot to the
//! one that waited longest, its position kept to go on from when its turn comes again.
//! Each event names its file in a `[file@32473 path="..."]` SD element, built once per file
//! ([`FileTag`]) and shared by its events.

pub mod checkpoint;
pub mod discovery;
pub mod lines;
pub mod multiline;

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use toml::Spanned;

use self::checkpoint::{FileId, Fingerprint, Position};
use self::discovery::Patterns;
use self::lines::{Line, LineSplitter};
use self::multiline::{Joiner, MultilineConfig, Record, Rule};
use super::kind::{
    BoundSocket, Endpoint, ListenerDescriptors, ListenerKindSpec, StartContext, wrong_socket,
};
use super::{Dispatcher, is_blank};
use crate::decode::{Entry, Errors, NumOrStr, OneOrMany, Part, choice, keys, positive, size_opt};
use crate::event::{
    Facility, ParseError, ParseErrorKind, ParseFlags, Parsed, Protocol, Severity, Span,
    StructuredData,
};
use crate::metrics::{self, ListenerMetrics};
use crate::output::format::local_hostname;

/// `kind = "tail"`.
pub const KIND: &str = "tail";
/// Default `scan_interval`.
pub const DEFAULT_SCAN_INTERVAL: Duration = Duration::from_secs(5);
/// Default `checkpoint_interval`: also the bound on lines read twice after a crash.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Default `close_deleted_after`.
pub const DEFAULT_CLOSE_DELETED_AFTER: Duration = Duration::from_secs(300);
/// Default `max_open_files`.
pub const DEFAULT_MAX_OPEN_FILES: usize = 1024;
/// SD-ID of the element naming the file a line was read from, `[file@32473 path="..."]`.
/// RFC 5424 §7.2.2: an ID of our own takes the `@` form with an enterprise number; sluice has
/// none registered and, as for its `sluice@32473` and `alert@32473` elements, uses 32473, the
/// number IANA reserves for documentation (RFC 5612), so it never clashes with a vendor's.
pub const FILE_SD_ID: &str = "file@32473";
/// PARAM-NAME of the file's path in [`FILE_SD_ID`].
pub const FILE_SD_PATH: &str = "path";
/// Default `multiline.max_lines`.
pub const DEFAULT_MULTILINE_MAX_LINES: usize = 500;
/// Default `multiline.max_bytes`.
pub const DEFAULT_MULTILINE_MAX_BYTES: usize = 1 << 20;
/// Default `multiline.timeout`.
pub const DEFAULT_MULTILINE_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest `max_line_bytes` and `multiline.max_bytes` (events address their bytes with u32).
const MAX_EVENT_BYTES: u64 = 64 << 20;
/// Bytes read from one file per round, before the round's events are handed on.
const READ_CHUNK_BYTES: usize = 256 * 1024;
/// How often files are looked at for growth when nothing wakes the thread sooner (inotify
/// wakes it at once where it works).
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Size of the chunks frames are copied into (events slice them).
const FRAME_CHUNK_BYTES: usize = 1 << 20;

/// How a line becomes an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseMode {
    /// MSG is the line; the PRI and APP-NAME are the listener's, HOSTNAME the host's.
    Plain,
    /// The line is a syslog message (RFC 5424 or 3164), parsed as one.
    Syslog,
    /// As `Plain`, and a line that is a JSON object is flagged so the JSON output keeps it as
    /// an object (`fields`); one that is not is kept with `parse_error = invalid_json`.
    Json,
}

/// Where a file no position is saved for is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// Files found at the listener's first start are read from their end; files that appear
    /// later from their beginning.
    End,
    /// Every file from its beginning.
    Beginning,
}

/// The settings of a `tail` listener.
#[derive(Debug, Clone, PartialEq)]
pub struct TailSettings {
    /// Globs of the files to follow (absolute).
    pub paths: Vec<String>,
    /// Globs of files not to follow.
    pub exclude: Vec<String>,
    /// APP-NAME of the events; `None`: the listener's name.
    pub app_name: Option<String>,
    /// Facility of the events (`Plain` and `Json`).
    pub facility: Facility,
    /// Severity of the events (`Plain` and `Json`).
    pub severity: Severity,
    /// How a line becomes an event.
    pub parse: ParseMode,
    /// Where files without a saved position start.
    pub start_at: StartAt,
    /// Joining multi-line records.
    pub multiline: Option<MultilineConfig>,
    /// Longer lines are cut and flagged; `None`: the listener's `max_message_size`.
    pub max_line_bytes: Option<usize>,
    /// Files followed at once.
    pub max_open_files: usize,
    /// How often the globs are looked at again.
    pub scan_interval: Duration,
    /// How often positions are saved.
    pub checkpoint_interval: Duration,
    /// Longest a deleted file is kept open while it is still being read.
    pub close_deleted_after: Duration,
}

#[derive(Deserialize, Default)]
struct TailRaw {
    paths: Option<Spanned<OneOrMany>>,
    exclude: Option<Spanned<OneOrMany>>,
    app_name: Option<Spanned<String>>,
    facility: Option<Spanned<String>>,
    severity: Option<Spanned<String>>,
    parse: Option<Spanned<String>>,
    start_at: Option<Spanned<String>>,
    multiline: Option<MultilineRaw>,
    max_line_bytes: Option<Spanned<NumOrStr>>,
    max_open_files: Option<Spanned<i64>>,
    scan_interval: Option<Spanned<NumOrStr>>,
    checkpoint_interval: Option<Spanned<NumOrStr>>,
    close_deleted_after: Option<Spanned<NumOrStr>>,
}

impl Part for TailRaw {
    const NESTED: &'static [crate::decode::Nested] = &[("multiline", keys::fields::<MultilineRaw>)];
}

#[derive(Deserialize, Default)]
struct MultilineRaw {
    start: Option<Spanned<String>>,
    #[serde(rename = "continue")]
    continue_: Option<Spanned<String>>,
    max_lines: Option<Spanned<i64>>,
    max_bytes: Option<Spanned<NumOrStr>>,
    timeout: Option<Spanned<NumOrStr>>,
}

/// Keys every listener has that mean nothing here: refused rather than ignored.
#[derive(Deserialize, Default)]
struct NotForTail {
    rate_limit: Option<Spanned<serde::de::IgnoredAny>>,
}

impl Part for NotForTail {}

/// A positive size up to [`MAX_EVENT_BYTES`].
fn event_bytes(errs: &mut Errors<'_>, key: &str, v: &Option<Spanned<NumOrStr>>) -> Option<usize> {
    let n = size_opt(errs, key, v)?;
    if n == 0 || n > MAX_EVENT_BYTES {
        if let Some(v) = v {
            errs.at(
                v.span(),
                key,
                format!("must be between 1 and 64MiB, got {n}"),
            );
        }
        return None;
    }
    Some(n as usize)
}

/// A duration above zero.
fn interval(
    errs: &mut Errors<'_>,
    key: &str,
    v: &Option<Spanned<NumOrStr>>,
    default: Duration,
) -> Option<Duration> {
    match v {
        None => Some(default),
        Some(_) => crate::decode::positive_duration(errs, key, v),
    }
}

/// A valid RFC 5424 APP-NAME: 1 to 48 printable ASCII characters.
fn valid_app_name(s: &str) -> bool {
    (1..=48).contains(&s.len()) && s.bytes().all(|b| (33..=126).contains(&b))
}

impl MultilineRaw {
    fn decode(
        &self,
        errs: &mut Errors<'_>,
        p: &str,
        fallback: std::ops::Range<usize>,
    ) -> Option<MultilineConfig> {
        let regex = |errs: &mut Errors<'_>, key: &str, v: &Spanned<String>| {
            regex::bytes::Regex::new(v.get_ref())
                .map_err(|e| {
                    errs.at(
                        v.span(),
                        format!("{p}.{key}"),
                        format!("invalid regular expression: {e}"),
                    )
                })
                .ok()
        };
        let rule = match (&self.start, &self.continue_) {
            (Some(s), None) => regex(errs, "start", s).map(Rule::Start),
            (None, Some(c)) => regex(errs, "continue", c).map(Rule::Continue),
            (Some(_), Some(c)) => {
                errs.at(
                    c.span(),
                    format!("{p}.continue"),
                    "give start or continue, not both",
                );
                None
            }
            (None, None) => {
                errs.at(
                    fallback,
                    p.to_string(),
                    "give start = \"REGEX\" (a line that begins a record) or continue = \"REGEX\" (a line that belongs to the one before)",
                );
                None
            }
        };
        let max_lines = match &self.max_lines {
            None => Some(DEFAULT_MULTILINE_MAX_LINES),
            v => positive(errs, &format!("{p}.max_lines"), v),
        };
        let max_bytes = match &self.max_bytes {
            None => Some(DEFAULT_MULTILINE_MAX_BYTES),
            v => event_bytes(errs, &format!("{p}.max_bytes"), v),
        };
        let timeout = interval(
            errs,
            &format!("{p}.timeout"),
            &self.timeout,
            DEFAULT_MULTILINE_TIMEOUT,
        );
        Some(MultilineConfig {
            rule: rule?,
            max_lines: max_lines?,
            max_bytes: max_bytes?,
            timeout: timeout?,
        })
    }
}

impl ListenerKindSpec for TailSettings {
    const KIND: &'static str = KIND;

    fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<TailSettings> {
        let before = errs.count();
        let raw = entry.part::<TailRaw>(errs)?;
        if let Some(not) = entry.part::<NotForTail>(errs)
            && let Some(r) = &not.rate_limit
        {
            errs.at(
                r.span(),
                entry.key("rate_limit"),
                "not valid for kind = \"tail\": lines are never dropped (the file is the buffer)",
            );
        }
        let globs = |errs: &mut Errors<'_>,
                     key: &str,
                     v: &Option<Spanned<OneOrMany>>,
                     check: fn(&str) -> Result<globset::Glob, String>| {
            let Some(v) = v else { return Vec::new() };
            let list = v.get_ref().clone().into_vec();
            for g in &list {
                if let Err(e) = check(g) {
                    errs.at(
                        v.span(),
                        key.to_string(),
                        format!("invalid glob {g:?}: {e}"),
                    );
                }
            }
            list
        };
        let paths = globs(
            errs,
            &entry.key("paths"),
            &raw.paths,
            discovery::include_glob,
        );
        if raw.paths.is_none() || (paths.is_empty() && raw.paths.is_some()) {
            match &raw.paths {
                Some(v) => errs.at(v.span(), entry.key("paths"), "give at least one glob"),
                None => entry.missing(
                    errs,
                    "paths",
                    "missing: the files to follow, like paths = [\"/var/log/nginx/*.log\"]",
                ),
            }
        }
        let exclude = globs(
            errs,
            &entry.key("exclude"),
            &raw.exclude,
            discovery::exclude_glob,
        );
        let app_name = raw.app_name.as_ref().and_then(|v| {
            if valid_app_name(v.get_ref()) {
                Some(v.get_ref().clone())
            } else {
                errs.at(
                    v.span(),
                    entry.key("app_name"),
                    "must be 1 to 48 printable ASCII characters without spaces (RFC 5424 APP-NAME)",
                );
                None
            }
        });
        let name = entry.path.strip_prefix("listen.").unwrap_or(&entry.path);
        if raw.app_name.is_none() && !valid_app_name(name) {
            entry.missing(
                errs,
                "app_name",
                "missing: the listener's name is not a valid APP-NAME, give one",
            );
        }
        let facility = match &raw.facility {
            None => Facility::User,
            Some(v) => Facility::from_name(v.get_ref()).unwrap_or_else(|| {
                errs.at(
                    v.span(),
                    entry.key("facility"),
                    format!("unknown facility {:?}", v.get_ref()),
                );
                Facility::User
            }),
        };
        let severity = match &raw.severity {
            None => Severity::Notice,
            Some(v) => Severity::from_name(v.get_ref()).unwrap_or_else(|| {
                errs.at(
                    v.span(),
                    entry.key("severity"),
                    format!("unknown severity {:?}", v.get_ref()),
                );
                Severity::Notice
            }),
        };
        let parse = choice(
            errs,
            &entry.key("parse"),
            &raw.parse,
            "value",
            &[
                ("none", ParseMode::Plain),
                ("syslog", ParseMode::Syslog),
                ("json", ParseMode::Json),
            ],
            ParseMode::Plain,
        );
        let start_at = choice(
            errs,
            &entry.key("start_at"),
            &raw.start_at,
            "value",
            &[("end", StartAt::End), ("beginning", StartAt::Beginning)],
            StartAt::End,
        );
        let multiline = raw
            .multiline
            .as_ref()
            .map(|m| m.decode(errs, &entry.key("multiline"), entry.kind.span()));
        let max_line_bytes = event_bytes(errs, &entry.key("max_line_bytes"), &raw.max_line_bytes);
        let max_open_files = match &raw.max_open_files {
            None => Some(DEFAULT_MAX_OPEN_FILES),
            v => positive(errs, &entry.key("max_open_files"), v),
        };
        let scan_interval = interval(
            errs,
            &entry.key("scan_interval"),
            &raw.scan_interval,
            DEFAULT_SCAN_INTERVAL,
        );
        let checkpoint_interval = interval(
            errs,
            &entry.key("checkpoint_interval"),
            &raw.checkpoint_interval,
            DEFAULT_CHECKPOINT_INTERVAL,
        );
        let close_deleted_after = interval(
            errs,
            &entry.key("close_deleted_after"),
            &raw.close_deleted_after,
            DEFAULT_CLOSE_DELETED_AFTER,
        );
        if errs.count() > before {
            return None;
        }
        Some(TailSettings {
            paths,
            exclude,
            app_name,
            facility,
            severity,
            parse,
            start_at,
            multiline: multiline.flatten(),
            max_line_bytes,
            max_open_files: max_open_files?,
            scan_interval: scan_interval?,
            checkpoint_interval: checkpoint_interval?,
            close_deleted_after: close_deleted_after?,
        })
    }

    fn decode_endpoint(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<Endpoint> {
        let raw = entry.part::<TailRaw>(errs)?;
        Some(Endpoint::Files(raw.paths?.into_inner().into_vec()))
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::Files(self.paths.clone())
    }

    fn descriptors(&self) -> ListenerDescriptors {
        ListenerDescriptors {
            connections: 0,
            // The files, the positions file while it is written, the inotify instance.
            sockets: self.max_open_files + 2,
        }
    }

    /// Nothing to bind: files are opened by the listener's thread.
    fn bind(&self) -> anyhow::Result<BoundSocket> {
        Ok(BoundSocket::Files)
    }

    fn adopt(&self, _name: &str, socket: socket2::Socket) -> anyhow::Result<BoundSocket> {
        anyhow::bail!("systemd passed a socket ({socket:?}) for a tail listener, which reads files")
    }

    fn take_over(&self, _name: &str, socket: &mut BoundSocket) -> anyhow::Result<()> {
        match socket {
            BoundSocket::Files => Ok(()),
            other => Err(wrong_socket(KIND, other)),
        }
    }

    fn start(
        &self,
        socket: BoundSocket,
        ctx: StartContext<'_>,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let BoundSocket::Files = socket else {
            return Err(wrong_socket(KIND, &socket));
        };
        let name = ctx.config.name.clone();
        let positions = checkpoint::path_for(ctx.state_dir, &name);
        if let Some(dir) = positions.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the positions directory {}", dir.display()))?;
        }
        let patterns = Patterns::new(&self.paths, &self.exclude).map_err(anyhow::Error::msg)?;
        let max_line_bytes = self
            .max_line_bytes
            .unwrap_or(ctx.config.limits.max_message_size);
        let app_name = self.app_name.clone().unwrap_or_else(|| name.to_string());
        let mut dispatcher =
            Dispatcher::new(ctx.pipeline, name.clone(), ctx.config.limits.timezone);
        let metrics = dispatcher.metrics().clone();
        let follower = Follower {
            name: name.clone(),
            settings: self.clone(),
            max_line_bytes,
            patterns,
            positions_path: positions,
            prefix: plain_prefix(self.facility, self.severity, local_hostname(), &app_name),
            files: Vec::new(),
            known: HashMap::new(),
            parked: HashMap::new(),
            waiting: Vec::new(),
            first_run: false,
            metrics,
            chunk: BytesMut::new(),
            line_buf: Vec::new(),
            records: Vec::new(),
            saved: Vec::new(),
            dirty: false,
            log: metrics::LogLimiter::new(Duration::from_secs(10)),
        };
        let rt = tokio::runtime::Handle::current();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let (stop, hard_stop) = (ctx.stop, ctx.hard_stop);
        tracing::info!(listener = %name, kind = KIND, paths = ?self.paths, "following files");
        std::thread::Builder::new()
            .name(format!("tail-{name}"))
            .spawn(move || {
                follower.run(&rt, &mut dispatcher, &stop, &hard_stop);
                drop(done_tx);
            })
            .context("starting the tail thread")?;
        Ok(tokio::spawn(async move {
            let _ = done_rx.await;
        }))
    }
}

/// `<PRI>1 - HOSTNAME APP-NAME - - `: the start of what a plain line is put after, so the event
/// is an RFC 5424 message (a `raw` output writes it as one); each file's [`FileTag`] adds its
/// SD element.
fn plain_prefix(facility: Facility, severity: Severity, host: &str, app: &str) -> Vec<u8> {
    let pri = u16::from(facility.code()) * 8 + u16::from(severity.code());
    // RFC 5424 HOSTNAME: 1 to 255 printable ASCII characters, else NIL.
    let printable =
        !host.is_empty() && host.len() <= 255 && host.bytes().all(|b| (33..=126).contains(&b));
    let host = if printable { host } else { "-" };
    format!("<{pri}>1 - {host} {app} - - ").into_bytes()
}

/// What every event of one file carries: its frame prefix, ending in the file's SD element
/// (`[file@32473 path="..."] `), and that element as parsed SD, shared by the events (built
/// once per file, not per line).
struct FileTag {
    prefix: Vec<u8>,
    /// The HOSTNAME and APP-NAME spans of `prefix`, found once rather than per line.
    fields: (Option<Span>, Option<Span>),
    sd: StructuredData,
    /// The path as the SD holds it (lossy UTF-8: PARAM-VALUE is UTF-8).
    path: String,
}

impl FileTag {
    fn new(base: &[u8], path: &Path) -> FileTag {
        let text = path.to_string_lossy().into_owned();
        let mut prefix = Vec::with_capacity(base.len() + text.len() + 24);
        prefix.extend_from_slice(base);
        prefix.extend_from_slice(b"[");
        prefix.extend_from_slice(FILE_SD_ID.as_bytes());
        prefix.extend_from_slice(b" ");
        prefix.extend_from_slice(FILE_SD_PATH.as_bytes());
        prefix.extend_from_slice(b"=\"");
        // RFC 5424 §6.3.3: `"`, `\` and `]` are escaped in a PARAM-VALUE.
        for b in text.bytes() {
            if matches!(b, b'"' | b'\\' | b']') {
                prefix.push(b'\\');
            }
            prefix.push(b);
        }
        prefix.extend_from_slice(b"\"] ");
        let mut sd = StructuredData::default();
        sd.push_element(FILE_SD_ID);
        sd.push_param(FILE_SD_PATH, &text);
        FileTag {
            fields: prefix_fields(base),
            prefix,
            sd: sd.shared(),
            path: text,
        }
    }
}

/// One positions file is one listener's at a time: a listener restarted by a reload waits for
/// its predecessor to save its last positions.
fn positions_lock(path: &Path) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    locks.entry(path.to_path_buf()).or_default().clone()
}

/// One file being followed.
struct Followed {
    id: FileId,
    /// The name it was last found under.
    path: PathBuf,
    /// Its events' prefix and SD, naming `path`.
    tag: FileTag,
    file: File,
    /// Offset of the next byte to read.
    pos: u64,
    /// Its size at the last look.
    size: u64,
    lines: LineSplitter,
    joiner: Option<Joiner>,
    /// Found by the last scan.
    matched: bool,
    /// Not found by the last scan and read to its end at this size: let go at the next scan
    /// if it is still that size.
    idle_at: Option<u64>,
    /// When it was seen deleted.
    deleted_at: Option<Instant>,
    /// Found by the scan and read to its end at this size: at the next scan, if it is still
    /// that size, it may give its slot to a file waiting for one (`max_open_files`).
    quiet_at: Option<u64>,
    /// Its first bytes, once [`checkpoint::FINGERPRINT_BYTES`] of them exist.
    fingerprint: Option<Fingerprint>,
}

impl Followed {
    /// The offset up to which every line was handed on.
    fn delivered(&self) -> u64 {
        self.joiner
            .as_ref()
            .and_then(Joiner::held_from)
            .unwrap_or_else(|| self.lines.consumed_to())
    }

    fn fingerprint(&mut self, upto: u64) -> Fingerprint {
        if let Some(f) = self.fingerprint {
            return f;
        }
        let f = fingerprint_of(&self.file, upto.min(checkpoint::FINGERPRINT_BYTES));
        if f.len == checkpoint::FINGERPRINT_BYTES {
            self.fingerprint = Some(f);
        }
        f
    }
}

/// The fingerprint of a file's first `len` bytes (fewer if it is shorter now).
fn fingerprint_of(file: &File, len: u64) -> Fingerprint {
    let mut head = vec![0u8; len as usize];
    let mut got = 0;
    while got < head.len() {
        match file.read_at(&mut head[got..], got as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    Fingerprint::of(&head[..got])
}

/// The state of one tail listener, owned by its thread.
struct Follower {
    name: Arc<str>,
    settings: TailSettings,
    max_line_bytes: usize,
    patterns: Patterns,
    positions_path: PathBuf,
    prefix: Vec<u8>,
    files: Vec<Followed>,
    /// Saved positions of files not open: not found yet, or waiting for a slot.
    known: HashMap<FileId, Position>,
    /// Files closed at their end to give their slot to a waiting file, and when: the longest
    /// closed is opened first.
    parked: HashMap<FileId, Instant>,
    /// Files the last scan found that wait for a slot (`max_open_files`), their positions in
    /// `known` (saved with the open files').
    waiting: Vec<FileId>,
    /// There was no positions file: `start_at = "end"` applies to the files found first.
    first_run: bool,
    metrics: Arc<ListenerMetrics>,
    chunk: BytesMut,
    line_buf: Vec<Line>,
    records: Vec<Record>,
    /// Positions whose lines reached the outputs' queues, as of the last hand-over.
    saved: Vec<Position>,
    /// `saved` changed since it was written.
    dirty: bool,
    log: metrics::LogLimiter,
}

/// What woke the thread while it waited.
#[derive(Debug, Default)]
struct Wake {
    stop: bool,
    rescan: bool,
}

impl Follower {
    fn run(
        mut self,
        rt: &tokio::runtime::Handle,
        dispatcher: &mut Dispatcher,
        stop: &CancellationToken,
        hard_stop: &CancellationToken,
    ) {
        let lock = positions_lock(&self.positions_path);
        let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
        self.load_positions();
        let _enter = rt.enter();
        let inotify = match crate::sys::inotify::Inotify::new()
            .and_then(|i| Ok((i.try_clone_file()?, i)))
            .and_then(|(f, i)| {
                Ok((
                    crate::sys::fd::ReadyFile::new(f, tokio::io::Interest::READABLE)?,
                    i,
                ))
            }) {
            Ok(pair) => Some(pair),
            Err(e) => {
                tracing::warn!(listener = %self.name, error = %e, "inotify unavailable: files are looked at every scan_interval and polled for growth");
                None
            }
        };
        let mut watched: Vec<PathBuf> = Vec::new();
        let mut inotify_buf = vec![0u8; 16 * 1024];
        self.scan(
            true,
            inotify.as_ref().map(|(_, i)| i),
            &mut watched,
            dispatcher,
        );
        if self.first_run {
            // From now on this is not the first run: files that appear while sluice is
            // stopped are read from their beginning at the next start, not skipped.
            self.handed_on();
            self.save();
        }
        self.publish_gauges();
        metrics::add(&self.metrics.scans, 1);
        tracing::info!(listener = %self.name, files = self.files.len(), first_run = self.first_run, "first scan done");
        let mut next_scan = Instant::now() + self.settings.scan_interval;
        let mut next_save = Instant::now() + self.settings.checkpoint_interval;
        let mut rescan = false;
        loop {
            if stop.is_cancelled() {
                break;
            }
            let now = Instant::now();
            let read = self.read_round(dispatcher, now);
            self.poll_joiners(dispatcher, now);
            let scanned = rescan || now >= next_scan;
            if scanned {
                self.scan(
                    false,
                    inotify.as_ref().map(|(_, i)| i),
                    &mut watched,
                    dispatcher,
                );
                next_scan = now + self.settings.scan_interval;
                rescan = false;
            }
            rt.block_on(dispatcher.flush_or_cut(hard_stop));
            if hard_stop.is_cancelled() {
                // What was cut is counted undelivered by its outputs: its lines stay unsaved,
                // so the next start reads them again.
                break;
            }
            self.handed_on();
            if scanned {
                // After `handed_on` published this round's gauges (see `scans`).
                metrics::add(&self.metrics.scans, 1);
            }
            if self.dirty && Instant::now() >= next_save {
                self.save();
                next_save = Instant::now() + self.settings.checkpoint_interval;
            }
            if read > 0 {
                continue;
            }
            let deadline = [
                Some(next_scan),
                Some(now + POLL_INTERVAL),
                self.dirty.then_some(next_save),
            ]
            .into_iter()
            .chain(
                self.files
                    .iter()
                    .map(|f| f.joiner.as_ref().and_then(Joiner::deadline)),
            )
            .flatten()
            .min()
            .unwrap_or(now + POLL_INTERVAL);
            let wake = rt.block_on(async {
                let mut wake = Wake::default();
                tokio::select! {
                    _ = stop.cancelled() => wake.stop = true,
                    _ = tokio::time::sleep_until(deadline.into()) => {}
                    r = async {
                        match &inotify {
                            Some((fd, _)) => fd.readable().await.map(|mut g| g.clear_ready()),
                            None => std::future::pending().await,
                        }
                    } => {
                        if let (Ok(()), Some((_, i))) = (r, &inotify) {
                            match i.drain(&mut inotify_buf) {
                                Ok(mask) => {
                                    use crate::sys::inotify::{CREATED, OVERFLOW, REMOVED};
                                    wake.rescan = mask & (CREATED | REMOVED | OVERFLOW) != 0;
                                }
                                Err(_) => wake.rescan = true,
                            }
                        }
                    }
                }
                wake
            });
            rescan |= wake.rescan;
            if wake.stop {
                break;
            }
        }
        self.publish_gauges();
        if self.dirty {
            self.save();
        }
        metrics::set(&self.metrics.files_open, 0);
        metrics::set(&self.metrics.files_waiting, 0);
        tracing::info!(listener = %self.name, "tail listener stopped; positions saved");
    }

    /// Reads the positions file; a damaged one is set aside with a warning, and every file is
    /// then read from its beginning (lines read twice rather than lost).
    fn load_positions(&mut self) {
        match checkpoint::load(&self.positions_path) {
            Ok(None) => self.first_run = true,
            Ok(Some(list)) => {
                self.known = list.into_iter().map(|p| (p.id, p)).collect();
            }
            Err(e) => {
                let aside = self.positions_path.with_extension("positions.corrupt");
                let _ = std::fs::rename(&self.positions_path, &aside);
                tracing::warn!(listener = %self.name, error = %e, moved_to = %aside.display(),
                    "positions file unreadable: set aside; files are read from their beginning");
            }
        }
    }

    /// Finds the files to follow; opens new ones, lets go of those no longer found once read.
    fn scan(
        &mut self,
        first: bool,
        inotify: Option<&crate::sys::inotify::Inotify>,
        watched: &mut Vec<PathBuf>,
        dispatcher: &mut Dispatcher,
    ) {
        let (paths, dirs) = self.patterns.scan();
        if let Some(i) = inotify {
            for d in &dirs {
                if !watched.contains(d) && i.watch_dir(d).is_ok() {
                    watched.push(d.clone());
                }
            }
        }
        for f in &mut self.files {
            f.matched = false;
        }
        let mut waiting: Vec<(Option<Instant>, FileId, PathBuf)> = Vec::new();
        let mut found: Vec<FileId> = Vec::new();
        for path in paths {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let id = FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            };
            found.push(id);
            if let Some(f) = self.files.iter_mut().find(|f| f.id == id) {
                f.matched = true;
                if f.path != path {
                    f.tag = FileTag::new(&self.prefix, &path);
                    f.path = path;
                }
                continue;
            }
            if self.files.len() >= self.settings.max_open_files {
                if first && self.first_run && self.settings.start_at == StartAt::End {
                    self.start_waiting_at_end(id, &path, meta.len());
                }
                waiting.push((self.parked.get(&id).copied(), id, path));
                continue;
            }
            self.open(path, first, true);
        }
        if first && !self.known.is_empty() {
            // A file renamed while sluice was down (rotated away) is still read to its end.
            self.find_renamed(&dirs);
        }
        // Files that closed their handle for a waiting file and are no longer found by name
        // (rotated away) are looked for by inode, to be read to their end.
        let vanished = self.parked.keys().filter(|id| !found.contains(id)).count();
        // Parked now, they wait behind the others.
        let now = Instant::now();
        for (id, path) in self.park_quiet(waiting.len() + vanished, now) {
            waiting.push((Some(now), id, path));
        }
        if vanished > 0 {
            self.find_renamed(&dirs);
        }
        // The files that waited longest first: never opened, then those parked longest ago.
        waiting.sort_by_key(|w| w.0);
        self.waiting.clear();
        for (_, id, path) in waiting {
            if self.files.len() < self.settings.max_open_files {
                self.open(path, first, true);
            }
            if !self.files.iter().any(|f| f.id == id) {
                self.waiting.push(id);
            }
        }
        // Parked files neither found nor reopened are gone (deleted, or renamed out of the
        // globs' directories): nothing to resume.
        let (known, waiting) = (&mut self.known, &self.waiting);
        self.parked.retain(|id, _| {
            let keep = waiting.contains(id);
            if !keep {
                known.remove(id);
            }
            keep
        });
        if !self.waiting.is_empty()
            && let Some(suppressed) = self.log.allow()
        {
            tracing::warn!(listener = %self.name, waiting = self.waiting.len(), max_open_files = self.settings.max_open_files, suppressed,
                "more files match than max_open_files: the others wait for a file read to its end to give up its slot");
        }
        self.let_go(dispatcher);
        metrics::set(&self.metrics.files_open, self.files.len() as u64);
        metrics::set(&self.metrics.files_waiting, self.waiting.len() as u64);
    }

    /// A file found at the first start with `start_at = "end"` that must wait for a slot:
    /// its position is its end now, as if it had been opened.
    fn start_waiting_at_end(&mut self, id: FileId, path: &Path, size: u64) {
        if self.known.contains_key(&id) {
            return;
        }
        let Ok(file) = File::open(path) else { return };
        self.known.insert(
            id,
            Position {
                id,
                offset: size,
                fingerprint: fingerprint_of(&file, size.min(checkpoint::FINGERPRINT_BYTES)),
                path: path.to_path_buf(),
            },
        );
    }

    /// Closes up to `want` files that are found by name, read to their end and unchanged
    /// since the last scan, with no record held by their joiner, so that files waiting for a
    /// slot can be read. Their positions stay in `known` (and in the positions file): reopened,
    /// they go on where they stopped. A file that keeps growing keeps its slot.
    fn park_quiet(&mut self, want: usize, now: Instant) -> Vec<(FileId, PathBuf)> {
        let mut parked = Vec::new();
        let mut i = 0;
        while i < self.files.len() {
            let f = &mut self.files[i];
            let size = match f.file.metadata() {
                Ok(m) if f.matched => m.len(),
                _ => {
                    i += 1;
                    continue;
                }
            };
            let quiet = f.pos >= size && f.quiet_at == Some(size);
            let idle = f.joiner.as_ref().is_none_or(|j| j.held_from().is_none());
            if parked.len() >= want || !quiet || !idle {
                f.quiet_at = (f.pos >= size).then_some(size);
                i += 1;
                continue;
            }
            let mut f = self.files.remove(i);
            let position = Position {
                id: f.id,
                // A last line without an LF is read again when the file is reopened.
                offset: f.delivered(),
                fingerprint: f.fingerprint(size),
                path: f.path.clone(),
            };
            self.known.insert(f.id, position);
            self.parked.insert(f.id, now);
            metrics::add(&self.metrics.files_parked, 1);
            tracing::debug!(listener = %self.name, path = %f.path.display(), "file read to its end: its slot goes to a waiting file");
            parked.push((f.id, f.path));
            self.dirty = true;
        }
        parked
    }

    /// Opens `path` and decides where reading starts.
    fn open(&mut self, path: PathBuf, first: bool, matched: bool) {
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                metrics::add(&self.metrics.read_errors, 1);
                if let Some(suppressed) = self.log.allow() {
                    tracing::warn!(listener = %self.name, path = %path.display(), error = %e, suppressed, "cannot open file");
                }
                return;
            }
        };
        let Ok(meta) = file.metadata() else { return };
        let id = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        if self.files.iter().any(|f| f.id == id) {
            return;
        }
        let size = meta.len();
        let pos = match self.known.remove(&id) {
            Some(p) if fingerprint_of(&file, p.fingerprint.len) == p.fingerprint => {
                if p.offset > size {
                    metrics::add(&self.metrics.file_truncations, 1);
                    tracing::warn!(listener = %self.name, path = %path.display(), saved = p.offset, size,
                        "file is shorter than its saved position (truncated): reading it from the beginning");
                    0
                } else {
                    p.offset
                }
            }
            // Another file now has that inode, or none was saved.
            _ if first && self.first_run && self.settings.start_at == StartAt::End => size,
            _ => 0,
        };
        if self.parked.remove(&id).is_some() {
            // Its turn again after giving its slot to a waiting file: routine, not news.
            tracing::debug!(listener = %self.name, path = %path.display(), offset = pos, "following file again");
        } else {
            tracing::info!(listener = %self.name, path = %path.display(), offset = pos, "following file");
        }
        self.files.push(Followed {
            id,
            file,
            pos,
            size,
            lines: LineSplitter::new(self.max_line_bytes, pos),
            joiner: self.settings.multiline.clone().map(Joiner::new),
            matched,
            idle_at: None,
            deleted_at: None,
            quiet_at: None,
            fingerprint: None,
            tag: FileTag::new(&self.prefix, &path),
            path,
        });
        self.dirty = true;
    }

    /// Looks in the directories of the globs for files with saved positions under names the
    /// globs do not match (rotated while sluice was not running).
    fn find_renamed(&mut self, dirs: &[PathBuf]) {
        for d in dirs {
            let Ok(entries) = std::fs::read_dir(d) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                let id = FileId {
                    dev: meta.dev(),
                    ino: meta.ino(),
                };
                if meta.is_file()
                    && self.known.contains_key(&id)
                    && self.files.len() < self.settings.max_open_files
                {
                    let name = path.to_string_lossy();
                    if !discovery::is_compressed(&name) {
                        self.open(path, true, false);
                    }
                }
            }
        }
    }

    /// Closes files no longer found by name once they are read: deleted ones at their end (or
    /// after `close_deleted_after`), renamed ones at their end once they stop growing.
    fn let_go(&mut self, dispatcher: &mut Dispatcher) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.files.len() {
            let f = &mut self.files[i];
            if f.matched {
                f.idle_at = None;
                i += 1;
                continue;
            }
            let Ok(meta) = f.file.metadata() else {
                i += 1;
                continue;
            };
            let size = meta.len();
            let at_end = f.pos >= size;
            let deleted = meta.nlink() == 0;
            if deleted {
                f.deleted_at.get_or_insert(now);
            }
            let overdue = f.deleted_at.is_some_and(|t| {
                now.saturating_duration_since(t) >= self.settings.close_deleted_after
            });
            let close = (at_end && (deleted || f.idle_at == Some(size))) || overdue;
            if !close {
                f.idle_at = at_end.then_some(size);
                i += 1;
                continue;
            }
            let mut f = self.files.remove(i);
            if !at_end {
                let unread = size.saturating_sub(f.pos);
                metrics::add(&self.metrics.bytes_unread_at_close, unread);
                tracing::warn!(listener = %self.name, path = %f.path.display(), unread,
                    "deleted file still not read to its end after close_deleted_after: let go");
            }
            // Its last line without an LF, and a record held for more lines, go now.
            self.finish_file(&mut f, dispatcher, now);
            tracing::info!(listener = %self.name, path = %f.path.display(), deleted, "file let go");
            self.dirty = true;
        }
    }

    /// Reads what each file gained (up to [`READ_CHUNK_BYTES`] per file) and routes its lines.
    fn read_round(&mut self, dispatcher: &mut Dispatcher, now: Instant) -> usize {
        let mut total = 0;
        let mut files = std::mem::take(&mut self.files);
        for f in &mut files {
            let size = match f.file.metadata() {
                Ok(m) => m.len(),
                Err(_) => continue,
            };
            if size < f.pos {
                metrics::add(&self.metrics.file_truncations, 1);
                tracing::info!(listener = %self.name, path = %f.path.display(), was = f.pos, size,
                    "file truncated (copytruncate): reading it from the beginning");
                self.finish_file(f, dispatcher, now);
                f.lines.reset(0);
                f.pos = 0;
                f.fingerprint = None;
                self.dirty = true;
            }
            f.size = size;
            if size == f.pos {
                continue;
            }
            let want = READ_CHUNK_BYTES.min((size - f.pos) as usize);
            let space = f.lines.space(want);
            let n = loop {
                match f.file.read_at(space, f.pos) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        metrics::add(&self.metrics.read_errors, 1);
                        if let Some(suppressed) = self.log.allow() {
                            tracing::warn!(listener = %self.name, path = %f.path.display(), error = %e, suppressed, "read failed");
                        }
                        break 0;
                    }
                }
            };
            f.lines.filled(want, n, &mut self.line_buf);
            f.pos += n as u64;
            total += n;
            metrics::add(&self.metrics.bytes, n as u64);
            self.take_lines(f, dispatcher, now);
        }
        self.files = files;
        total
    }

    /// The lines in `line_buf` (of file `f`) become events, through its joiner if it has one.
    fn take_lines(&mut self, f: &mut Followed, dispatcher: &mut Dispatcher, now: Instant) {
        let mut lines = std::mem::take(&mut self.line_buf);
        let received_at = Utc::now();
        match &mut f.joiner {
            Some(j) => {
                for line in &lines {
                    j.push(f.lines.bytes(line), line, now, &mut self.records);
                }
                self.emit_records(&f.tag, dispatcher);
            }
            None => {
                for line in &lines {
                    self.emit(
                        &f.tag,
                        f.lines.bytes(line),
                        line.truncated,
                        dispatcher,
                        received_at,
                    );
                }
            }
        }
        lines.clear();
        self.line_buf = lines;
    }

    /// File `f` is let go or was truncated: its unfinished last line and the record its joiner
    /// holds become events.
    fn finish_file(&mut self, f: &mut Followed, dispatcher: &mut Dispatcher, now: Instant) {
        if let Some(line) = f.lines.rest() {
            self.line_buf.push(line);
        }
        self.take_lines(f, dispatcher, now);
        if let Some(j) = &mut f.joiner {
            j.flush(&mut self.records);
        }
        self.emit_records(&f.tag, dispatcher);
    }

    /// Records held past their timeout go.
    fn poll_joiners(&mut self, dispatcher: &mut Dispatcher, now: Instant) {
        // Out of `self` meanwhile, so each file's records go out with its tag.
        let mut files = std::mem::take(&mut self.files);
        for f in &mut files {
            if let Some(j) = &mut f.joiner {
                j.poll(now, &mut self.records);
                self.emit_records(&f.tag, dispatcher);
            }
        }
        self.files = files;
    }

    /// Turns `records` (of the file `tag` names) into events.
    fn emit_records(&mut self, tag: &FileTag, dispatcher: &mut Dispatcher) {
        if self.records.is_empty() {
            return;
        }
        let received_at = Utc::now();
        let mut records = std::mem::take(&mut self.records);
        for r in records.drain(..) {
            self.emit(tag, &r.bytes, r.truncated, dispatcher, received_at);
        }
        self.records = records;
    }

    /// One line or record of the file `tag` names as an event.
    fn emit(
        &mut self,
        tag: &FileTag,
        line: &[u8],
        truncated: bool,
        dispatcher: &mut Dispatcher,
        received_at: DateTime<Utc>,
    ) {
        if is_blank(line) {
            metrics::add(&self.metrics.empty_frames, 1);
            return;
        }
        if self.settings.parse == ParseMode::Syslog {
            // The frame is the sender's message as written; the file's element is added to
            // its parsed SD (the JSON and RFC 5424 formats show it, `raw` writes the line).
            let frame = copy_frame(&mut self.chunk, &[], line);
            let mut parsed = dispatcher.parse(&frame, received_at);
            parsed.structured_data.push_element(FILE_SD_ID);
            parsed.structured_data.push_param(FILE_SD_PATH, &tag.path);
            dispatcher.push_parsed(frame, parsed, truncated, None, received_at);
            return;
        }
        let (frame, parsed) = plain_event(
            tag,
            line,
            self.settings.parse,
            &mut self.chunk,
            self.settings.facility,
            self.settings.severity,
        );
        dispatcher.push_parsed(frame, parsed, truncated, None, received_at);
    }

    /// The events of this round reached the outputs' queues: their positions may be saved.
    fn handed_on(&mut self) {
        let mut saved = Vec::with_capacity(self.files.len());
        for f in &mut self.files {
            let offset = f.delivered();
            saved.push(Position {
                id: f.id,
                offset,
                fingerprint: f.fingerprint(f.size),
                path: f.path.clone(),
            });
        }
        saved.extend(
            self.waiting
                .iter()
                .filter_map(|id| self.known.get(id))
                .cloned(),
        );
        if saved != self.saved {
            self.saved = saved;
            self.dirty = true;
        }
        self.publish_gauges();
    }

    fn publish_gauges(&self) {
        let behind: u64 = self
            .files
            .iter()
            .map(|f| f.size.saturating_sub(f.pos))
            .sum();
        metrics::set(&self.metrics.bytes_behind, behind);
        metrics::set(&self.metrics.files_open, self.files.len() as u64);
        metrics::set(&self.metrics.files_waiting, self.waiting.len() as u64);
    }

    fn save(&mut self) {
        match checkpoint::save(&self.positions_path, &self.saved) {
            Ok(()) => self.dirty = false,
            Err(e) => {
                metrics::add(&self.metrics.read_errors, 1);
                if let Some(suppressed) = self.log.allow() {
                    tracing::error!(listener = %self.name, path = %self.positions_path.display(), error = %e, suppressed,
                        "cannot save positions: a restart would read lines again");
                }
            }
        }
    }
}

/// A plain (or JSON) line as an event: the frame is the tag's prefix (ending in the SD element
/// its `sd` holds parsed) + the line (copied into `chunk`), its fields set without parsing.
fn plain_event(
    tag: &FileTag,
    line: &[u8],
    mode: ParseMode,
    chunk: &mut BytesMut,
    facility: Facility,
    severity: Severity,
) -> (Bytes, Parsed) {
    let prefix = &tag.prefix;
    let len = prefix.len() + line.len();
    let frame = copy_frame(chunk, prefix, line);
    let mut parsed = Parsed::new(Protocol::Rfc5424, facility, severity, len);
    parsed.version = 1;
    // `<PRI>1 - HOST APP - - - `: the host after the fourth byte past `>`.
    (parsed.hostname, parsed.app_name) = tag.fields;
    parsed.structured_data = tag.sd.clone();
    parsed.message = Span::new(prefix.len(), len);
    parsed.msg_utf8 = std::str::from_utf8(line).is_ok();
    if mode == ParseMode::Json {
        if is_json_object(line) {
            parsed.flags.insert(ParseFlags::MSG_JSON);
        } else {
            parsed.parse_error = Some(ParseError {
                kind: ParseErrorKind::InvalidJson,
                at: prefix.len(),
            });
        }
    }
    (frame, parsed)
}

/// `prefix` + `line` copied into `chunk` and split off it. A full chunk is reused once every
/// frame cut from it has been dropped (written by the outputs), else another is allocated: no
/// allocation per line, and few fresh pages.
fn copy_frame(chunk: &mut BytesMut, prefix: &[u8], line: &[u8]) -> Bytes {
    let len = prefix.len() + line.len();
    if chunk.capacity() - chunk.len() < len {
        chunk.reserve(FRAME_CHUNK_BYTES.max(len));
    }
    chunk.extend_from_slice(prefix);
    chunk.extend_from_slice(line);
    chunk.split().freeze()
}

/// The HOSTNAME and APP-NAME spans of a [`plain_prefix`] (`None` for a NIL host).
fn prefix_fields(prefix: &[u8]) -> (Option<Span>, Option<Span>) {
    // Fields are separated by single spaces: PRI+VERSION, TIMESTAMP, HOSTNAME, APP-NAME.
    let mut starts = [0usize; 5];
    let mut n = 0;
    for (i, &b) in prefix.iter().enumerate() {
        if b == b' ' && n < 4 {
            n += 1;
            starts[n] = i + 1;
        }
    }
    let host = Span::new(starts[2], starts[3] - 1);
    let app = Span::new(starts[3], starts[4] - 1);
    let host = (host.slice(prefix) != b"-").then_some(host);
    (host, Some(app))
}

/// Whether `line` is one JSON object (validated, nothing kept).
fn is_json_object(line: &[u8]) -> bool {
    let trimmed = line.trim_ascii_start();
    trimmed.first() == Some(&b'{') && serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_line_is_an_rfc5424_event_with_the_listener_fields() {
        let base = plain_prefix(Facility::Local1, Severity::Info, "web1", "nginx");
        assert_eq!(base, b"<142>1 - web1 nginx - - ");
        let tag = FileTag::new(&base, Path::new("/var/log/a b/x\"y]z\\.log"));
        assert_eq!(
            tag.prefix,
            br#"<142>1 - web1 nginx - - [file@32473 path="/var/log/a b/x\"y\]z\\.log"] "#
        );
        let mut chunk = BytesMut::new();
        let (frame, p) = plain_event(
            &tag,
            b"GET / 200",
            ParseMode::Plain,
            &mut chunk,
            Facility::Local1,
            Severity::Info,
        );
        assert_eq!(p.message.slice(&frame), b"GET / 200");
        assert_eq!(p.hostname.unwrap().slice(&frame), b"web1");
        assert_eq!(p.app_name.unwrap().slice(&frame), b"nginx");
        assert!(p.msg_utf8);
        // The same fields as parsing the frame gives.
        let parsed = crate::parse::parse(&frame, &crate::parse::ParseOptions::now());
        assert_eq!(parsed.parse_error, None);
        assert_eq!(parsed.hostname, p.hostname);
        assert_eq!(parsed.app_name, p.app_name);
        assert_eq!(parsed.message, p.message);
        assert_eq!((parsed.facility, parsed.severity), (p.facility, p.severity));
        // The file's element, escaped in the frame, reads back as the path.
        assert_eq!(parsed.structured_data, p.structured_data);
        let elements = p.structured_data.to_elements();
        assert_eq!(elements[0].id, "file@32473");
        assert_eq!(
            elements[0].params,
            [("path".to_string(), "/var/log/a b/x\"y]z\\.log".to_string())]
        );

        let (_, p) = plain_event(
            &tag,
            b"caf\xe9",
            ParseMode::Plain,
            &mut chunk,
            Facility::Local1,
            Severity::Info,
        );
        assert!(!p.msg_utf8, "invalid UTF-8 is kept and flagged");
        let (_, p) = plain_event(
            &tag,
            br#"{"a":1}"#,
            ParseMode::Json,
            &mut chunk,
            Facility::Local1,
            Severity::Info,
        );
        assert!(p.flags.contains(ParseFlags::MSG_JSON));
        let (_, p) = plain_event(
            &tag,
            br#"{"a":"#,
            ParseMode::Json,
            &mut chunk,
            Facility::Local1,
            Severity::Info,
        );
        assert_eq!(p.parse_error.unwrap().kind, ParseErrorKind::InvalidJson);
        let (_, p) = plain_event(
            &tag,
            b"[1]",
            ParseMode::Json,
            &mut chunk,
            Facility::Local1,
            Severity::Info,
        );
        assert!(p.parse_error.is_some(), "an array is not an object");
    }
}
