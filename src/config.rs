//! Configuration: TOML text -> raw serde structs (with spans) -> a validated [`Config`].
//!
//! Errors are collected, not returned at the first one: every `[listen.*]`, `[output.*]` and
//! `[[route]]` entry is deserialized on its own, and unknown keys are found with `serde_ignored`
//! rather than `deny_unknown_fields`, so one typo does not hide the next mistake. Each error names
//! `file:line:col` and the key path. No I/O happens here except in [`Config::check_environment`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::output::file::PathTemplate;
use crate::output::format::Format;
use crate::route::{Matcher, Rule, Selector};

/// The configuration sluice runs when no `--config` is given: UDP and TCP on 127.0.0.1:5514,
/// every message to stdout.
pub const EMBEDDED_DEFAULT: &str = r#"# sluice embedded default: listen on loopback, print everything.
[listen.udp]
kind = "udp"
address = "127.0.0.1:5514"

[listen.tcp]
kind = "tcp"
address = "127.0.0.1:5514"

[output.stdout]
kind = "stdout"
format = "traditional"

[[route]]
to = ["stdout"]
"#;

/// Default `max_message_size` for every listener.
pub const DEFAULT_MAX_MESSAGE_SIZE_BYTES: usize = 64 * 1024;
/// Largest `max_message_size` accepted (frames are addressed with `u32` spans).
pub const MAX_MAX_MESSAGE_SIZE_BYTES: usize = 64 * 1024 * 1024;
/// Default `max_connections` per TCP listener (rsyslog's imtcp default is 200; relays need more).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1000;
/// Default idle timeout for a TCP connection that sends nothing.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Default deadline for completing a frame once it has started (slowloris, hostile-inputs C03).
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// Default SO_RCVBUF asked for on UDP sockets (systemd's syslog.socket uses 8M).
pub const DEFAULT_UDP_RECEIVE_BUFFER_BYTES: usize = 8 * 1024 * 1024;
/// Default queue capacity per output, in events.
pub const DEFAULT_QUEUE_MAX_EVENTS: usize = 65_536;
/// Default bound on open files per templated file output.
pub const DEFAULT_MAX_OPEN_FILES: usize = 256;
/// Default interval at which file outputs flush buffered lines (so `tail -f` sees them).
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Default time open connections may keep sending after SIGTERM.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default interval of the periodic counter log line.
pub const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(300);

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from (file path or `<embedded default>`), for messages.
    pub origin: String,
    /// `[daemon]`.
    pub daemon: DaemonConfig,
    /// `[listen.*]`, sorted by name.
    pub listeners: Vec<ListenerConfig>,
    /// `[output.*]`, sorted by name; routes refer to them by index.
    pub outputs: Vec<OutputConfig>,
    /// `[[route]]` in order, compiled.
    pub routes: Vec<Rule>,
}

/// `[daemon]` settings.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// How long open connections may keep sending after SIGTERM before they are cut.
    pub shutdown_timeout: Duration,
    /// Interval of the periodic counters log line.
    pub stats_interval: Duration,
}

/// One `[listen.NAME]`.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// NAME.
    pub name: Arc<str>,
    /// Longer messages are cut and flagged `truncated`.
    pub max_message_size: usize,
    /// Only these sender networks are accepted (UDP and TCP); `None` accepts all.
    pub allowed_sources: Option<Vec<ipnet::IpNet>>,
    /// Kind-specific settings.
    pub kind: ListenerKind,
}

/// Listener kinds.
#[derive(Debug, Clone)]
pub enum ListenerKind {
    /// UDP datagrams, one message each (RFC 5426).
    Udp {
        /// Address to bind.
        address: SocketAddr,
        /// SO_RCVBUF to ask for.
        receive_buffer_bytes: usize,
    },
    /// TCP with RFC 6587 framing detected per frame.
    Tcp {
        /// Address to bind.
        address: SocketAddr,
        /// Connections beyond this are accepted and closed at once, counted.
        max_connections: usize,
        /// A connection that sends nothing this long is closed; `None` disables.
        idle_timeout: Option<Duration>,
        /// A frame that is not complete this long after it started closes the connection.
        frame_timeout: Option<Duration>,
        /// Also end LF-framed messages at NUL (hostile-inputs B05).
        nul_trailer: bool,
    },
    /// A unix datagram socket, like /dev/log.
    Unix {
        /// Socket path; a stale socket there is replaced.
        path: PathBuf,
        /// Permission bits of the socket file.
        mode: u32,
    },
}

impl ListenerKind {
    /// `udp`, `tcp` or `unix`.
    pub fn name(&self) -> &'static str {
        match self {
            ListenerKind::Udp { .. } => "udp",
            ListenerKind::Tcp { .. } => "tcp",
            ListenerKind::Unix { .. } => "unix",
        }
    }
}

/// One `[output.NAME]`.
#[derive(Debug, Clone)]
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

/// Output kinds.
#[derive(Debug, Clone)]
pub enum OutputKind {
    /// Standard output.
    Stdout,
    /// A file, its path possibly templated per event.
    File {
        /// Path template.
        path: PathTemplate,
        /// Bound on simultaneously open files (templated paths).
        max_open_files: usize,
        /// How often buffered lines are written out.
        flush_interval: Duration,
    },
}

/// What a full queue does to the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait for room: TCP and unix-stream senders are slowed (UDP still drops and counts).
    Block,
    /// Drop the event that does not fit, and count it.
    DropNewest,
}

/// The queue in front of an output: capacity and overflow policy side by side.
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    /// Capacity in events.
    pub max_events: usize,
    /// Overflow policy.
    pub when_full: WhenFull,
}

/// One configuration error, positioned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// File name (or `<embedded default>`).
    pub file: String,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub col: usize,
    /// Dotted key path, e.g. `output.siem.address`; empty for syntax errors.
    pub key: String,
    /// What is wrong, in plain words.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.col)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every error found in one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

// ---------------------------------------------------------------------------------------------
// Raw layer: what serde reads. Every field is optional and spanned so validation can point at it.

#[derive(Deserialize, Default)]
struct RawDaemon {
    shutdown_timeout: Option<Spanned<NumOrStr>>,
    stats_interval: Option<Spanned<NumOrStr>>,
}

#[derive(Deserialize)]
struct RawListener {
    kind: Spanned<String>,
    address: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    max_message_size: Option<Spanned<NumOrStr>>,
    max_connections: Option<Spanned<i64>>,
    idle_timeout: Option<Spanned<NumOrStr>>,
    frame_timeout: Option<Spanned<NumOrStr>>,
    receive_buffer_size: Option<Spanned<NumOrStr>>,
    nul_trailer: Option<Spanned<bool>>,
    allowed_sources: Option<Spanned<OneOrMany>>,
}

#[derive(Deserialize)]
struct RawOutput {
    kind: Spanned<String>,
    path: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
    queue: Option<RawQueue>,
    max_open_files: Option<Spanned<i64>>,
    flush_interval: Option<Spanned<NumOrStr>>,
}

#[derive(Deserialize)]
struct RawQueue {
    kind: Option<Spanned<String>>,
    max_events: Option<Spanned<i64>>,
    when_full: Option<Spanned<String>>,
}

#[derive(Deserialize)]
struct RawRoute {
    selector: Option<Spanned<String>>,
    listener: Option<Spanned<OneOrMany>>,
    hostname: Option<Spanned<toml::Value>>,
    app_name: Option<Spanned<toml::Value>>,
    message: Option<Spanned<toml::Value>>,
    source: Option<Spanned<OneOrMany>>,
    to: Option<Spanned<OneOrMany>>,
    stop: Option<Spanned<bool>>,
}

/// A size or duration: an integer, or a string with a unit.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum NumOrStr {
    Num(i64),
    Str(String),
}

/// A string or a list of strings.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Collects errors with positions computed from byte spans in the source text.
struct Errors<'a> {
    file: &'a str,
    text: &'a str,
    list: Vec<ConfigError>,
}

impl Errors<'_> {
    fn at(&mut self, span: std::ops::Range<usize>, key: impl Into<String>, msg: impl Into<String>) {
        let (line, col) = line_col(self.text, span.start);
        self.list.push(ConfigError {
            file: self.file.to_string(),
            line,
            col,
            key: key.into(),
            message: msg.into(),
        });
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, col)
}

/// Deserializes one spanned TOML value into `T`, reporting unknown keys and type errors.
fn decode<T: serde::de::DeserializeOwned>(
    errs: &mut Errors<'_>,
    key: &str,
    value: &Spanned<DeValue<'_>>,
) -> Option<T> {
    let mut unknown = Vec::new();
    let de = ValueDeserializer::from(value.clone());
    let result: Result<T, _> = serde_ignored::deserialize(de, |path| {
        // `?` is serde_ignored's segment for an Option's Some: not part of the key path.
        let key: Vec<String> = path
            .to_string()
            .split('.')
            .filter(|s| *s != "?")
            .map(str::to_string)
            .collect();
        unknown.push(key.join("."));
    });
    match result {
        Ok(v) => {
            for path in unknown {
                let span = find_key_span(value, &path).unwrap_or_else(|| value.span());
                errs.at(span, format!("{key}.{path}"), "unknown key");
            }
            Some(v)
        }
        Err(e) => {
            let span = e.span().unwrap_or_else(|| value.span());
            errs.at(span, key, e.message().trim().to_string());
            None
        }
    }
}

/// The span of the key at a dotted path below `value`, for pointing at unknown keys.
fn find_key_span(value: &Spanned<DeValue<'_>>, path: &str) -> Option<std::ops::Range<usize>> {
    let mut cur = value;
    let mut found = None;
    for part in path.split('.') {
        match cur.get_ref() {
            DeValue::Table(t) => {
                let (k, v) = t.iter().find(|(k, _)| k.get_ref().as_ref() == part)?;
                found = Some(k.span());
                cur = v;
            }
            DeValue::Array(a) => {
                cur = a.get(part.parse::<usize>().ok()?)?;
                found = Some(cur.span());
            }
            _ => return None,
        }
    }
    found
}

impl Config {
    /// Parses and validates configuration text. `file` names it in error messages.
    pub fn from_toml_str(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        let mut errs = Errors {
            file,
            text,
            list: Vec::new(),
        };
        let root = match DeTable::parse(text) {
            Ok(t) => t,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                errs.at(span, "", e.message().trim().to_string());
                return Err(ConfigErrors(errs.list));
            }
        };
        let mut daemon_raw = RawDaemon::default();
        let mut listen_raw: BTreeMap<String, (std::ops::Range<usize>, RawListener)> =
            BTreeMap::new();
        let mut output_raw: BTreeMap<String, (std::ops::Range<usize>, RawOutput)> = BTreeMap::new();
        let mut routes_raw: Vec<(usize, std::ops::Range<usize>, RawRoute)> = Vec::new();

        for (k, v) in root.get_ref().iter() {
            let name = k.get_ref().as_ref();
            match name {
                "daemon" => {
                    if let Some(d) = decode::<RawDaemon>(&mut errs, "daemon", v) {
                        daemon_raw = d;
                    }
                }
                "listen" | "output" => match v.get_ref() {
                    DeValue::Table(t) => {
                        for (ek, ev) in t.iter() {
                            let ename = ek.get_ref().to_string();
                            let key = format!("{name}.{ename}");
                            if !valid_name(&ename) {
                                errs.at(
                                    ek.span(),
                                    &key,
                                    "names may use only letters, digits, '_' and '-'",
                                );
                            }
                            if name == "listen" {
                                if let Some(l) = decode::<RawListener>(&mut errs, &key, ev) {
                                    listen_raw.insert(ename, (ek.span(), l));
                                }
                            } else if let Some(o) = decode::<RawOutput>(&mut errs, &key, ev) {
                                output_raw.insert(ename, (ek.span(), o));
                            }
                        }
                    }
                    _ => errs.at(
                        v.span(),
                        name,
                        format!("expected a table of named [{name}.NAME] entries"),
                    ),
                },
                "route" => match v.get_ref() {
                    DeValue::Array(a) => {
                        for (i, rv) in a.iter().enumerate() {
                            let key = format!("route[{i}]");
                            if let Some(r) = decode::<RawRoute>(&mut errs, &key, rv) {
                                routes_raw.push((i, rv.span(), r));
                            }
                        }
                    }
                    _ => errs.at(
                        v.span(),
                        "route",
                        "expected [[route]] entries (an array of tables)",
                    ),
                },
                _ => errs.at(
                    k.span(),
                    name,
                    "unknown key (expected daemon, listen, output or route)",
                ),
            }
        }

        let daemon = DaemonConfig {
            shutdown_timeout: duration_opt(
                &mut errs,
                "daemon.shutdown_timeout",
                &daemon_raw.shutdown_timeout,
            )
            .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
            stats_interval: duration_opt(
                &mut errs,
                "daemon.stats_interval",
                &daemon_raw.stats_interval,
            )
            .unwrap_or(DEFAULT_STATS_INTERVAL),
        };

        let listeners: Vec<ListenerConfig> = listen_raw
            .into_iter()
            .filter_map(|(name, (_, raw))| validate_listener(&mut errs, &name, raw))
            .collect();
        check_duplicate_binds(&mut errs, &listeners);

        // Every declared output is indexed, valid or not, so a route naming a broken output is not
        // also reported as naming a missing one. A `None` means the config is invalid anyway.
        let mut output_index: HashMap<String, usize> = HashMap::new();
        let mut validated: Vec<Option<OutputConfig>> = Vec::new();
        for (name, (_, raw)) in output_raw {
            output_index.insert(name.clone(), validated.len());
            validated.push(validate_output(&mut errs, &name, raw));
        }
        let listener_names: Vec<&str> = listeners.iter().map(|l| &*l.name).collect();
        let routes: Vec<Rule> = routes_raw
            .into_iter()
            .filter_map(|(i, span, raw)| {
                validate_route(&mut errs, i, span, raw, &output_index, &listener_names)
            })
            .collect();

        if listeners.is_empty() && errs.list.is_empty() {
            errs.at(
                0..0,
                "listen",
                "no listeners are configured: add at least one [listen.NAME]",
            );
        }
        if routes.is_empty() && errs.list.is_empty() {
            errs.at(0..0, "route", "no routes are configured: add a [[route]] with `to = [...]`, or every message is only counted as unrouted");
        }

        if errs.list.is_empty() {
            Ok(Config {
                origin: file.to_string(),
                daemon,
                listeners,
                outputs: validated.into_iter().flatten().collect(),
                routes,
            })
        } else {
            errs.list.sort_by_key(|e| (e.line, e.col));
            Err(ConfigErrors(errs.list))
        }
    }

    /// The embedded default configuration.
    pub fn embedded_default() -> Config {
        Config::from_toml_str(EMBEDDED_DEFAULT, "<embedded default>")
            .unwrap_or_else(|e| unreachable!("embedded default config is invalid: {e}"))
    }

    /// Checks what needs the file system but not sockets: each file output's directory exists or
    /// can be created, and each unix socket's directory exists. Returns human-readable problems.
    pub fn check_environment(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for o in &self.outputs {
            if let OutputKind::File { path, .. } = &o.kind {
                let dir = path.static_dir();
                if let Err(e) = creatable_dir(&dir) {
                    problems.push(format!(
                        "{}: output.{}.path: directory {} cannot be created: {e}",
                        self.origin,
                        o.name,
                        dir.display()
                    ));
                }
            }
        }
        for l in &self.listeners {
            if let ListenerKind::Unix { path, .. } = &l.kind {
                let dir = path.parent().unwrap_or(std::path::Path::new("."));
                let dir = if dir.as_os_str().is_empty() {
                    std::path::Path::new(".")
                } else {
                    dir
                };
                if !dir.is_dir() {
                    problems.push(format!(
                        "{}: listen.{}.path: directory {} does not exist",
                        self.origin,
                        l.name,
                        dir.display()
                    ));
                }
            }
        }
        problems
    }
}

/// Whether `dir` exists as a writable directory or could be created under its nearest existing
/// ancestor.
fn creatable_dir(dir: &std::path::Path) -> Result<(), String> {
    let mut cur = dir;
    loop {
        if cur.as_os_str().is_empty() {
            cur = std::path::Path::new(".");
        }
        match std::fs::metadata(cur) {
            Ok(m) if m.is_dir() => {
                return if writable(cur) {
                    Ok(())
                } else {
                    Err(format!("{} is not writable", cur.display()))
                };
            }
            Ok(_) => return Err(format!("{} is not a directory", cur.display())),
            Err(_) => match cur.parent() {
                Some(p) => cur = p,
                None => return Err("no existing ancestor".into()),
            },
        }
    }
}

fn writable(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: c is a valid NUL-terminated path; access(2) only reads it.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_duplicate_binds(errs: &mut Errors<'_>, listeners: &[ListenerConfig]) {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for l in listeners {
        let key = match &l.kind {
            // Port 0 asks the kernel for a fresh port each time: never a clash.
            ListenerKind::Udp { address, .. } | ListenerKind::Tcp { address, .. }
                if address.port() == 0 =>
            {
                continue;
            }
            ListenerKind::Udp { address, .. } => format!("udp {address}"),
            ListenerKind::Tcp { address, .. } => format!("tcp {address}"),
            ListenerKind::Unix { path, .. } => format!("unix {}", path.display()),
        };
        if let Some(other) = seen.insert(key.clone(), &l.name) {
            errs.list.push(ConfigError {
                file: errs.file.to_string(),
                line: 0,
                col: 0,
                key: format!("listen.{}", l.name),
                message: format!("binds the same {key} as listen.{other}"),
            });
        }
    }
}

/// Parses `64KiB`, `1GiB`, `10MB`, `512` (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected a number with a unit like \"64KiB\""))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "invalid size unit {other:?} in {s:?}: use B, KiB, MiB, GiB, kB, MB or GB"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Parses `10s`, `5m`, `1h`, `1d`, `250ms`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid duration {s:?}: expected a number with a unit like \"10s\"")
    })?;
    let ms: u64 = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "invalid duration unit {other:?} in {s:?}: use ms, s, m, h or d"
            ));
        }
    };
    n.checked_mul(ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {s:?} is too large"))
}

fn size_opt(errs: &mut Errors<'_>, key: &str, v: &Option<Spanned<NumOrStr>>) -> Option<u64> {
    let v = v.as_ref()?;
    let r = match v.get_ref() {
        NumOrStr::Num(n) => u64::try_from(*n).map_err(|_| "a size cannot be negative".to_string()),
        NumOrStr::Str(s) => parse_size(s),
    };
    r.map_err(|m| errs.at(v.span(), key, m)).ok()
}

fn duration_opt(
    errs: &mut Errors<'_>,
    key: &str,
    v: &Option<Spanned<NumOrStr>>,
) -> Option<Duration> {
    let v = v.as_ref()?;
    let r = match v.get_ref() {
        NumOrStr::Num(n) => u64::try_from(*n)
            .map(Duration::from_secs)
            .map_err(|_| "a duration cannot be negative".to_string()),
        NumOrStr::Str(s) => parse_duration(s),
    };
    r.map_err(|m| errs.at(v.span(), key, m)).ok()
}

fn positive(errs: &mut Errors<'_>, key: &str, v: &Option<Spanned<i64>>) -> Option<usize> {
    let v = v.as_ref()?;
    match usize::try_from(*v.get_ref()) {
        Ok(n) if n > 0 => Some(n),
        _ => {
            errs.at(
                v.span(),
                key,
                format!("must be a positive integer, got {}", v.get_ref()),
            );
            None
        }
    }
}

/// Reports every key that is set but does not apply to this kind.
fn reject_keys(
    errs: &mut Errors<'_>,
    prefix: &str,
    kind: &str,
    set: &[(&str, Option<std::ops::Range<usize>>)],
) {
    for (key, span) in set {
        if let Some(span) = span {
            errs.at(
                span.clone(),
                format!("{prefix}.{key}"),
                format!("not valid for kind = \"{kind}\""),
            );
        }
    }
}

fn validate_listener(
    errs: &mut Errors<'_>,
    name: &str,
    raw: RawListener,
) -> Option<ListenerConfig> {
    let p = format!("listen.{name}");
    let n_before = errs.list.len();
    let max_message_size = match size_opt(
        errs,
        &format!("{p}.max_message_size"),
        &raw.max_message_size,
    ) {
        Some(n) if n < 480 || n as usize > MAX_MAX_MESSAGE_SIZE_BYTES => {
            if let Some(v) = &raw.max_message_size {
                errs.at(
                    v.span(),
                    format!("{p}.max_message_size"),
                    format!("must be between 480 bytes (RFC 5424 §6.1) and 64MiB, got {n}"),
                );
            }
            DEFAULT_MAX_MESSAGE_SIZE_BYTES
        }
        Some(n) => n as usize,
        None => DEFAULT_MAX_MESSAGE_SIZE_BYTES,
    };
    let address = |errs: &mut Errors<'_>| -> Option<SocketAddr> {
        match &raw.address {
            None => {
                errs.at(
                    raw.kind.span(),
                    format!("{p}.address"),
                    "missing: give an address like \"0.0.0.0:514\"",
                );
                None
            }
            Some(a) => match a.get_ref().parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    errs.at(
                        a.span(),
                        format!("{p}.address"),
                        format!("invalid socket address {:?}: expected IP:PORT, like \"0.0.0.0:514\" or \"[::]:514\"", a.get_ref()),
                    );
                    None
                }
            },
        }
    };
    let span_of = |o: &Option<Spanned<NumOrStr>>| o.as_ref().map(|v| v.span());
    let kind = match raw.kind.get_ref().as_str() {
        "udp" => {
            reject_keys(
                errs,
                &p,
                "udp",
                &[
                    ("path", raw.path.as_ref().map(|v| v.span())),
                    ("mode", raw.mode.as_ref().map(|v| v.span())),
                    (
                        "max_connections",
                        raw.max_connections.as_ref().map(|v| v.span()),
                    ),
                    ("idle_timeout", span_of(&raw.idle_timeout)),
                    ("frame_timeout", span_of(&raw.frame_timeout)),
                    ("nul_trailer", raw.nul_trailer.as_ref().map(|v| v.span())),
                ],
            );
            let address = address(errs);
            let rcvbuf = size_opt(
                errs,
                &format!("{p}.receive_buffer_size"),
                &raw.receive_buffer_size,
            )
            .map_or(DEFAULT_UDP_RECEIVE_BUFFER_BYTES, |n| n as usize);
            ListenerKind::Udp {
                address: address?,
                receive_buffer_bytes: rcvbuf,
            }
        }
        "tcp" => {
            reject_keys(
                errs,
                &p,
                "tcp",
                &[
                    ("path", raw.path.as_ref().map(|v| v.span())),
                    ("mode", raw.mode.as_ref().map(|v| v.span())),
                    ("receive_buffer_size", span_of(&raw.receive_buffer_size)),
                ],
            );
            let address = address(errs);
            let max_connections =
                positive(errs, &format!("{p}.max_connections"), &raw.max_connections)
                    .unwrap_or(DEFAULT_MAX_CONNECTIONS);
            let idle = duration_opt(errs, &format!("{p}.idle_timeout"), &raw.idle_timeout);
            let frame = duration_opt(errs, &format!("{p}.frame_timeout"), &raw.frame_timeout);
            ListenerKind::Tcp {
                address: address?,
                max_connections,
                // 0 disables, for trusted peers (hostile-inputs C02).
                idle_timeout: match idle {
                    Some(d) if d.is_zero() => None,
                    Some(d) => Some(d),
                    None => Some(DEFAULT_IDLE_TIMEOUT),
                },
                frame_timeout: match frame {
                    Some(d) if d.is_zero() => None,
                    Some(d) => Some(d),
                    None => Some(DEFAULT_FRAME_TIMEOUT),
                },
                nul_trailer: raw.nul_trailer.as_ref().is_some_and(|v| *v.get_ref()),
            }
        }
        "unix" => {
            reject_keys(
                errs,
                &p,
                "unix",
                &[
                    ("address", raw.address.as_ref().map(|v| v.span())),
                    (
                        "allowed_sources",
                        raw.allowed_sources.as_ref().map(|v| v.span()),
                    ),
                    (
                        "max_connections",
                        raw.max_connections.as_ref().map(|v| v.span()),
                    ),
                    ("idle_timeout", span_of(&raw.idle_timeout)),
                    ("frame_timeout", span_of(&raw.frame_timeout)),
                    ("receive_buffer_size", span_of(&raw.receive_buffer_size)),
                    ("nul_trailer", raw.nul_trailer.as_ref().map(|v| v.span())),
                ],
            );
            let Some(path) = &raw.path else {
                errs.at(
                    raw.kind.span(),
                    format!("{p}.path"),
                    "missing: give a socket path like \"/dev/log\"",
                );
                return None;
            };
            let mode = match &raw.mode {
                None => 0o666,
                Some(m) => match parse_mode(m.get_ref()) {
                    Ok(v) => v,
                    Err(msg) => {
                        errs.at(m.span(), format!("{p}.mode"), msg);
                        0o666
                    }
                },
            };
            ListenerKind::Unix {
                path: PathBuf::from(path.get_ref()),
                mode,
            }
        }
        "tls" => {
            errs.at(
                raw.kind.span(),
                format!("{p}.kind"),
                "kind \"tls\" is not available in this build yet: use \"tcp\" behind a TLS terminator",
            );
            return None;
        }
        other => {
            errs.at(
                raw.kind.span(),
                format!("{p}.kind"),
                format!("unknown listener kind {other:?}: expected \"udp\", \"tcp\" or \"unix\""),
            );
            return None;
        }
    };
    let allowed_sources = raw
        .allowed_sources
        .as_ref()
        .map(|s| cidr_list(errs, &format!("{p}.allowed_sources"), s));
    if errs.list.len() > n_before {
        return None;
    }
    Some(ListenerConfig {
        name: name.into(),
        max_message_size,
        allowed_sources,
        kind,
    })
}

/// Parses an octal permission string like `"0666"`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("invalid mode {s:?}: expected octal like \"0640\""))
}

fn validate_output(errs: &mut Errors<'_>, name: &str, raw: RawOutput) -> Option<OutputConfig> {
    let p = format!("output.{name}");
    let n_before = errs.list.len();
    let format = match &raw.format {
        None => Format::Traditional,
        Some(f) => match Format::from_name(f.get_ref()) {
            Some(f) => f,
            None => {
                errs.at(
                    f.span(),
                    format!("{p}.format"),
                    format!("unknown format {:?}: expected traditional, precise, rfc3164, rfc5424, json or raw", f.get_ref()),
                );
                Format::Traditional
            }
        },
    };
    let mut queue = QueueConfig {
        max_events: DEFAULT_QUEUE_MAX_EVENTS,
        when_full: WhenFull::Block,
    };
    if let Some(q) = &raw.queue {
        if let Some(k) = &q.kind
            && k.get_ref() != "memory"
        {
            errs.at(
                k.span(),
                format!("{p}.queue.kind"),
                format!(
                    "queue kind {:?} is not available in this build yet: only \"memory\"",
                    k.get_ref()
                ),
            );
        }
        if let Some(n) = positive(errs, &format!("{p}.queue.max_events"), &q.max_events) {
            queue.max_events = n;
        }
        if let Some(w) = &q.when_full {
            match w.get_ref().as_str() {
                "block" => queue.when_full = WhenFull::Block,
                "drop_newest" => queue.when_full = WhenFull::DropNewest,
                other => errs.at(
                    w.span(),
                    format!("{p}.queue.when_full"),
                    format!("unknown policy {other:?}: expected \"block\" or \"drop_newest\""),
                ),
            }
        }
    }
    let kind = match raw.kind.get_ref().as_str() {
        "stdout" => {
            reject_keys(
                errs,
                &p,
                "stdout",
                &[
                    ("path", raw.path.as_ref().map(|v| v.span())),
                    (
                        "max_open_files",
                        raw.max_open_files.as_ref().map(|v| v.span()),
                    ),
                    (
                        "flush_interval",
                        raw.flush_interval.as_ref().map(|v| v.span()),
                    ),
                ],
            );
            OutputKind::Stdout
        }
        "file" => {
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
            let max_open_files =
                positive(errs, &format!("{p}.max_open_files"), &raw.max_open_files)
                    .unwrap_or(DEFAULT_MAX_OPEN_FILES);
            let flush_interval =
                duration_opt(errs, &format!("{p}.flush_interval"), &raw.flush_interval)
                    .unwrap_or(DEFAULT_FLUSH_INTERVAL);
            OutputKind::File {
                path: template,
                max_open_files,
                flush_interval,
            }
        }
        "forward" => {
            errs.at(
                raw.kind.span(),
                format!("{p}.kind"),
                "kind \"forward\" is not available in this build yet: expected \"file\" or \"stdout\"",
            );
            return None;
        }
        other => {
            errs.at(
                raw.kind.span(),
                format!("{p}.kind"),
                format!("unknown output kind {other:?}: expected \"file\" or \"stdout\""),
            );
            return None;
        }
    };
    if errs.list.len() > n_before {
        return None;
    }
    Some(OutputConfig {
        name: name.into(),
        format,
        queue,
        kind,
    })
}

fn matcher(
    errs: &mut Errors<'_>,
    key: &str,
    v: &Option<Spanned<toml::Value>>,
    substring: bool,
) -> Option<Matcher> {
    let v = v.as_ref()?;
    let bad = |errs: &mut Errors<'_>| {
        errs.at(
            v.span(),
            key,
            "expected a string, a list of strings, or { regex = \"...\" }",
        );
        None
    };
    match v.get_ref() {
        toml::Value::String(s) => Some(Matcher::literal(vec![s.clone()], substring)),
        toml::Value::Array(a) => {
            let mut list = Vec::new();
            for item in a {
                match item.as_str() {
                    Some(s) => list.push(s.to_string()),
                    None => return bad(errs),
                }
            }
            Some(Matcher::literal(list, substring))
        }
        toml::Value::Table(t) if t.len() == 1 && t.contains_key("regex") => {
            let Some(re) = t.get("regex").and_then(|r| r.as_str()) else {
                return bad(errs);
            };
            match Matcher::regex(re) {
                Ok(m) => Some(m),
                Err(e) => {
                    errs.at(v.span(), key, format!("invalid regex: {e}"));
                    None
                }
            }
        }
        _ => bad(errs),
    }
}

fn validate_route(
    errs: &mut Errors<'_>,
    index: usize,
    span: std::ops::Range<usize>,
    raw: RawRoute,
    outputs: &HashMap<String, usize>,
    listeners: &[&str],
) -> Option<Rule> {
    let p = format!("route[{index}]");
    let n_before = errs.list.len();
    let selector = match &raw.selector {
        None => None,
        Some(s) => match Selector::parse(s.get_ref()) {
            Ok(sel) => Some(sel),
            Err(msg) => {
                errs.at(
                    s.span(),
                    format!("{p}.selector"),
                    format!("invalid selector {:?}: {msg}", s.get_ref()),
                );
                None
            }
        },
    };
    let listener = raw.listener.as_ref().map(|l| {
        let names = l.get_ref().clone().into_vec();
        for n in &names {
            if !listeners.contains(&n.as_str()) {
                errs.at(
                    l.span(),
                    format!("{p}.listener"),
                    format!(
                        "no listener named {n:?} (defined: {})",
                        listeners.join(", ")
                    ),
                );
            }
        }
        names.into_iter().map(Arc::<str>::from).collect::<Vec<_>>()
    });
    let hostname = matcher(errs, &format!("{p}.hostname"), &raw.hostname, false);
    let app_name = matcher(errs, &format!("{p}.app_name"), &raw.app_name, false);
    let message = matcher(errs, &format!("{p}.message"), &raw.message, true);
    let source = raw
        .source
        .as_ref()
        .map(|s| cidr_list(errs, &format!("{p}.source"), s));
    let mut to = Vec::new();
    match &raw.to {
        None => errs.at(
            span,
            format!("{p}.to"),
            "missing: name one or more outputs, like to = [\"syslog\"]",
        ),
        Some(t) => {
            let names = t.get_ref().clone().into_vec();
            if names.is_empty() {
                errs.at(t.span(), format!("{p}.to"), "names no output");
            }
            for n in names {
                match outputs.get(&n) {
                    Some(&i) => to.push(i),
                    None => {
                        let mut known: Vec<&str> = outputs.keys().map(String::as_str).collect();
                        known.sort_unstable();
                        errs.at(
                            t.span(),
                            format!("{p}.to"),
                            format!("no output named {n:?} (defined: {})", known.join(", ")),
                        );
                    }
                }
            }
        }
    }
    if errs.list.len() > n_before {
        return None;
    }
    Some(Rule {
        selector,
        listener,
        hostname,
        app_name,
        message,
        source,
        to,
        stop: raw.stop.as_ref().is_some_and(|s| *s.get_ref()),
    })
}

/// Parses a list of networks, reporting each bad one.
fn cidr_list(errs: &mut Errors<'_>, key: &str, v: &Spanned<OneOrMany>) -> Vec<ipnet::IpNet> {
    v.get_ref()
        .clone()
        .into_vec()
        .into_iter()
        .filter_map(|c| {
            parse_cidr(&c)
                .map_err(|msg| errs.at(v.span(), key, msg))
                .ok()
        })
        .collect()
}

/// Parses `10.0.0.0/8`, `::1/128` or a bare address (a host route).
fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(n) = s.parse::<ipnet::IpNet>() {
        return Ok(n.trunc());
    }
    s.parse::<std::net::IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| {
            format!("invalid network {s:?}: expected CIDR like \"10.0.0.0/8\" or an address")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match Config::from_toml_str(text, "t.toml") {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded_default();
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.outputs.len(), 1);
        assert_eq!(c.routes.len(), 1);
    }

    #[test]
    fn reports_every_error_with_line_and_key() {
        let text = r#"
[listen.udp]
kind = "udp"
address = "127.0.0.1:5514"
colour = "blue"

[output.a]
kind = "stdout"

[[route]]
to = ["nosuch"]

[[route]]
selector = "auth.bogus"
to = ["a"]
"#;
        let errs = errors(text);
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert_eq!(errs[0], "t.toml:5:1: listen.udp.colour: unknown key");
        assert!(
            errs[1].starts_with("t.toml:11:6: route[0].to: no output named \"nosuch\""),
            "{}",
            errs[1]
        );
        assert!(
            errs[2].starts_with("t.toml:14:12: route[1].selector: invalid selector"),
            "{}",
            errs[2]
        );
    }

    #[test]
    fn bad_address_names_key_and_value() {
        let errs = errors(
            "[listen.x]\nkind = \"tcp\"\naddress = \"siem:abc\"\n[output.o]\nkind=\"stdout\"\n[[route]]\nto=\"o\"\n",
        );
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0]
                .starts_with("t.toml:3:11: listen.x.address: invalid socket address \"siem:abc\""),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn syntax_error_has_position() {
        let errs = errors("[listen.x\nkind = 1\n");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("t.toml:1:"), "{}", errs[0]);
    }

    #[test]
    fn type_error_has_position() {
        let errs = errors(
            "[listen.x]\nkind = \"tcp\"\naddress = \"127.0.0.1:1\"\nmax_connections = \"many\"\n[output.o]\nkind=\"stdout\"\n[[route]]\nto=\"o\"\n",
        );
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("t.toml:4:"), "{}", errs[0]);
    }

    #[test]
    fn keys_of_other_kinds_are_rejected() {
        let errs = errors(
            "[listen.x]\nkind = \"udp\"\naddress = \"127.0.0.1:1\"\npath = \"/dev/log\"\n[output.o]\nkind=\"stdout\"\n[[route]]\nto=\"o\"\n",
        );
        assert_eq!(
            errs,
            vec!["t.toml:4:8: listen.x.path: not valid for kind = \"udp\"".to_string()]
        );
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert!(parse_size("10XB").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5 fortnights").is_err());
    }

    #[test]
    fn nested_unknown_key_in_queue() {
        let errs = errors(
            "[listen.x]\nkind = \"udp\"\naddress = \"127.0.0.1:1\"\n[output.o]\nkind=\"stdout\"\nqueue = { max_events = 10, colour = 1 }\n[[route]]\nto=\"o\"\n",
        );
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("t.toml:6:28: output.o.queue.colour: unknown key"),
            "{}",
            errs[0]
        );
    }
}
