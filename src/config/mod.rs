//! Configuration: TOML text -> raw serde structs (with spans) -> a validated [`Config`].
//!
//! Errors are collected, not returned at the first one: every `[listen.*]`, `[output.*]` and
//! `[[route]]` entry is deserialized on its own, and unknown keys are found with `serde_ignored`
//! rather than `deny_unknown_fields`, so one typo does not hide the next mistake. Each error names
//! `file:line:col` and the key path. No I/O happens here except in [`Config::check_environment`].

mod file_output;
mod keys;
mod raw;
#[cfg(test)]
mod tests;
mod validate;

pub use keys::known_keys;
use raw::*;
use validate::*;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use crate::output::file::{FsyncPolicy, PathTemplate, Perms, RotateConfig};
use crate::output::format::Format;
use crate::parse::Zone;
use crate::route::Rule;

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
/// Most sockets one UDP listener may bind (`sockets`): past the cores of any host it serves.
pub const MAX_UDP_SOCKETS: usize = 64;
/// Default SO_RCVBUF asked for on UDP sockets (systemd's syslog.socket uses 8M).
pub const DEFAULT_UDP_RECEIVE_BUFFER_BYTES: usize = 8 * 1024 * 1024;
/// Where a `kmsg` listener reads when no `path` is given.
pub const DEFAULT_KMSG_PATH: &str = "/dev/kmsg";
/// Default queue capacity per output, in events.
pub const DEFAULT_QUEUE_MAX_EVENTS: usize = 65_536;
/// Default bound on open files per templated file output.
pub const DEFAULT_MAX_OPEN_FILES: usize = 256;
/// Default `max_files_per_day` of a file output.
pub const DEFAULT_MAX_FILES_PER_DAY: usize = 10_000;
/// Default `idle_timeout` of a templated file output (rsyslog's dynafile closeTimeout is 10 min).
pub const DEFAULT_FILE_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Default interval at which file outputs flush buffered lines (so `tail -f` sees them).
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Default time open connections may keep sending after SIGTERM.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default interval of the periodic counter log line.
pub const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(300);
/// Default `[daemon] state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/sluice";
/// Default bound of a disk queue.
pub const DEFAULT_DISK_QUEUE_BYTES: u64 = 1 << 30;
/// Default fsync interval of a disk queue.
pub const DEFAULT_DISK_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Default `rate_limit.interval`.
pub const DEFAULT_RATE_LIMIT_INTERVAL: Duration = Duration::from_secs(1);
/// Default time a TLS client has to finish its handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// How long open connections may keep sending after SIGTERM before they are cut.
    pub shutdown_timeout: Duration,
    /// Interval of the periodic counters log line.
    pub stats_interval: Duration,
    /// Where disk queues live.
    pub state_dir: PathBuf,
    /// `user`, `group`, `supplementary_groups`: whom to run as after binding; `None` stays.
    pub run_as: Option<crate::privileges::RunAs>,
    /// Where to serve Prometheus metrics at `/metrics`; `None` serves none.
    pub metrics_address: Option<SocketAddr>,
}

/// One `[listen.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// NAME.
    pub name: Arc<str>,
    /// Longer messages are cut and flagged `truncated`.
    pub max_message_size: usize,
    /// Only these sender networks are accepted (UDP and TCP); `None` accepts all.
    pub allowed_sources: Option<Vec<ipnet::IpNet>>,
    /// The zone of RFC 3164 stamps that carry no offset (`timezone`, default the host's).
    pub timezone: Zone,
    /// Per-source token bucket (hostile-inputs J02); `None` does not limit.
    pub rate_limit: Option<RateLimit>,
    /// Kind-specific settings.
    pub kind: ListenerKind,
}

/// `rate_limit = { messages, interval, burst }`: each source may send `messages` per `interval`
/// on average and `burst` at once; what is over is dropped before parsing and counted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Messages refilled per interval.
    pub messages: u32,
    /// The refill period (more than zero).
    pub interval: Duration,
    /// Bucket capacity: messages a quiet source may send at once.
    pub burst: u32,
}

/// How connections of a stream listener (`tcp`, `tls`, `unix_stream`) are limited and framed.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionSettings {
    /// Connections beyond this are accepted and closed at once, counted.
    pub max_connections: usize,
    /// A connection that sends nothing this long is closed; `None` disables.
    pub idle_timeout: Option<Duration>,
    /// A frame that is not complete this long after it started closes the connection.
    pub frame_timeout: Option<Duration>,
    /// Also end LF-framed messages at NUL (hostile-inputs B05; glibc's stream syslog).
    pub nul_trailer: bool,
}

/// Settings shared by the IP stream listeners (`tcp` and `tls`).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSettings {
    /// Address to bind.
    pub address: SocketAddr,
    /// Limits and framing of each connection.
    pub connections: ConnectionSettings,
}

/// Listener kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum ListenerKind {
    /// UDP datagrams, one message each (RFC 5426).
    Udp {
        /// Address to bind.
        address: SocketAddr,
        /// SO_RCVBUF to ask for, per socket.
        receive_buffer_bytes: usize,
        /// Sockets bound to the address with SO_REUSEPORT, each read by its own task: the
        /// kernel spreads senders over them, so parsing runs on several cores.
        sockets: usize,
    },
    /// TCP with RFC 6587 framing detected per frame.
    Tcp(StreamSettings),
    /// TLS (RFC 5425), framed as TCP.
    Tls {
        /// Connection handling, as for TCP.
        stream: StreamSettings,
        /// A handshake not finished this long after connect is cut (hostile-inputs C01).
        handshake_timeout: Duration,
        /// Certificates and client authentication.
        tls: crate::tls::ServerSettings,
    },
    /// A unix datagram socket, like /dev/log.
    Unix {
        /// Socket path; a stale socket there is replaced.
        path: PathBuf,
        /// Permission bits of the socket file.
        mode: u32,
    },
    /// A unix stream socket: what glibc's syslog(3) falls back to, syslog-ng's `unix-stream`.
    UnixStream {
        /// Socket path; a stale socket there is replaced.
        path: PathBuf,
        /// Permission bits of the socket file.
        mode: u32,
        /// Limits and framing of each connection.
        connections: ConnectionSettings,
    },
    /// The kernel's log buffer, /dev/kmsg (for hosts without journald).
    Kmsg {
        /// The device (or a FIFO carrying records, for tests and containers).
        path: PathBuf,
        /// Whether the records already in the buffer at start are read.
        read_existing: ReadExisting,
    },
}

/// Which of the records already in the kernel's buffer a `kmsg` listener reads when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadExisting {
    /// All of them while the system has been up less than [`ReadExisting::BOOT_WINDOW`] (the
    /// boot messages), else none (a restart does not log the buffer again). rsyslog's imkmsg
    /// default.
    AtBoot,
    /// All of them, every start.
    Always,
    /// Only records that arrive after the start.
    Never,
}

impl ReadExisting {
    /// Uptime under which `at_boot` reads the whole buffer (rsyslog's
    /// `expectedBootCompleteSeconds`).
    pub const BOOT_WINDOW: Duration = Duration::from_secs(90);

    /// Parses the config spelling.
    pub fn from_name(name: &str) -> Option<ReadExisting> {
        match name {
            "at_boot" => Some(ReadExisting::AtBoot),
            "always" => Some(ReadExisting::Always),
            "never" => Some(ReadExisting::Never),
            _ => None,
        }
    }
}

impl ListenerKind {
    /// What the listener binds or opens, as `udp ADDR`, `tcp ADDR` (also for TLS), `unix PATH`,
    /// `unix_stream PATH` or `kmsg PATH`: two listeners with one endpoint cannot run side by
    /// side, and a changed listener with its predecessor's endpoint takes its socket over.
    pub fn endpoint(&self) -> String {
        match self {
            ListenerKind::Udp { address, .. } => format!("udp {address}"),
            ListenerKind::Tcp(s) | ListenerKind::Tls { stream: s, .. } => {
                format!("tcp {}", s.address)
            }
            ListenerKind::Unix { path, .. } => format!("unix {}", path.display()),
            ListenerKind::UnixStream { path, .. } => format!("unix_stream {}", path.display()),
            ListenerKind::Kmsg { path, .. } => format!("kmsg {}", path.display()),
        }
    }

    /// `udp`, `tcp`, `tls`, `unix`, `unix_stream` or `kmsg`.
    pub fn name(&self) -> &'static str {
        match self {
            ListenerKind::Udp { .. } => "udp",
            ListenerKind::Tcp(_) => "tcp",
            ListenerKind::Tls { .. } => "tls",
            ListenerKind::Unix { .. } => "unix",
            ListenerKind::UnixStream { .. } => "unix_stream",
            ListenerKind::Kmsg { .. } => "kmsg",
        }
    }
}

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

/// Output kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputKind {
    /// Standard output.
    Stdout,
    /// A file, its path possibly templated per event.
    File(FileOutputConfig),
    /// Another syslog receiver (a relay or a SIEM).
    Forward(ForwardSettings),
}

/// Where and how a `forward` output sends.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardSettings {
    /// `host:port` of each collector (resolved at each connect); the first is the primary.
    pub addresses: Vec<String>,
    /// Failover (first that works, back to the first when it returns) or round robin.
    pub round_robin: bool,
    /// Transport.
    pub protocol: ForwardProtocol,
    /// Octet counting (RFC 5425/6587, the default on TCP and TLS) or LF.
    pub octet_counting: bool,
}

/// Forward transports.
#[derive(Debug, Clone, PartialEq)]
pub enum ForwardProtocol {
    /// One datagram per message (RFC 5426).
    Udp,
    /// Plain TCP.
    Tcp,
    /// TLS (RFC 5425).
    Tls(crate::tls::ClientSettings),
}

/// The settings of a `kind = "file"` output.
#[derive(Debug, Clone, PartialEq)]
pub struct FileOutputConfig {
    /// Path template.
    pub path: PathTemplate,
    /// Bound on simultaneously open files (templated paths).
    pub max_open_files: usize,
    /// Bound on distinct files written per day (templated paths; hostile-inputs J01).
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

/// What a full queue does to the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait for room: TCP and unix-stream senders are slowed (UDP still drops and counts).
    Block,
    /// Drop the event that does not fit, and count it.
    DropNewest,
    /// Drop the oldest waiting event to make room, and count it (forward outputs).
    DropOldest,
}

/// Where a queue keeps its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    /// In memory: lost if sluice is killed; drained for up to `shutdown_timeout` on stop.
    Memory,
    /// On disk under `[daemon] state_dir` (forward outputs): kept across restarts and crashes.
    Disk {
        /// When appended events are fsynced.
        sync: crate::output::backlog::SyncPolicy,
    },
}

/// The queue in front of an output: capacity and overflow policy side by side.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueConfig {
    /// Memory or disk.
    pub kind: QueueKind,
    /// Capacity in events.
    pub max_events: usize,
    /// Capacity in bytes (as formatted for the destination), if bounded so.
    pub max_bytes: Option<u64>,
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
            state_dir: daemon_raw.state_dir.as_ref().map_or_else(
                || PathBuf::from(DEFAULT_STATE_DIR),
                |v| PathBuf::from(v.get_ref()),
            ),
            run_as: validate_run_as(&mut errs, &daemon_raw),
            metrics_address: daemon_raw.metrics_address.as_ref().and_then(|v| {
                v.get_ref()
                    .parse()
                    .map_err(|_| {
                        errs.at(
                            v.span(),
                            "daemon.metrics_address",
                            format!("invalid socket address {:?}", v.get_ref()),
                        )
                    })
                    .ok()
            }),
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
    pub fn check_environment(&self) -> EnvironmentCheck {
        let mut problems = Vec::new();
        let mut tls = crate::tls::FileCheck::default();
        for o in &self.outputs {
            if let OutputKind::File(f) = &o.kind {
                let dir = f.path.static_dir();
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
            if let ListenerKind::Tls { tls: t, .. } = &l.kind {
                tls.cert_and_key(&t.cert_file, &t.key_file);
                if let Some(ca) = &t.client_ca_file {
                    tls.ca(ca);
                }
                if let Some(crl) = &t.client_crl_file {
                    tls.crl(crl);
                }
            }
            if let ListenerKind::Unix { path, .. } | ListenerKind::UnixStream { path, .. } = &l.kind
            {
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
        for o in &self.outputs {
            if let QueueKind::Disk { .. } = o.queue.kind {
                let dir = self.daemon.state_dir.join(&*o.name);
                if let Err(e) = creatable_dir(&dir) {
                    problems.push(format!(
                        "{}: output.{}.queue: disk queue directory {} cannot be created: {e}",
                        self.origin,
                        o.name,
                        dir.display()
                    ));
                }
            }
            if let OutputKind::Forward(ForwardSettings {
                protocol: ForwardProtocol::Tls(c),
                ..
            }) = &o.kind
            {
                if let Some(ca) = &c.ca_file {
                    tls.ca(ca);
                }
                if let (Some(cert), Some(key)) = (&c.cert_file, &c.key_file) {
                    tls.cert_and_key(cert, key);
                }
            }
        }
        let prefix = |m: String| format!("{}: {m}", self.origin);
        problems.extend(tls.errors.into_iter().map(prefix));
        EnvironmentCheck {
            errors: problems,
            warnings: tls.warnings.into_iter().map(prefix).collect(),
        }
    }
}

/// `[daemon] user`, `group`, `supplementary_groups`: names resolved now, so a typo fails the
/// config check rather than the start.
fn validate_run_as(errs: &mut Errors<'_>, d: &RawDaemon) -> Option<crate::privileges::RunAs> {
    use crate::output::file::fs::{lookup_group, lookup_user, lookup_user_gid};
    let Some(user) = &d.user else {
        for (key, span) in [
            ("daemon.group", d.group.as_ref().map(|g| g.span())),
            (
                "daemon.supplementary_groups",
                d.supplementary_groups.as_ref().map(|g| g.span()),
            ),
        ] {
            if let Some(span) = span {
                errs.at(
                    span,
                    key,
                    "needs daemon.user: groups are dropped together with the user",
                );
            }
        }
        return None;
    };
    let uid = file_output::id_opt(errs, "daemon.user", &d.user, lookup_user)?;
    let gid = match (&d.group, user.get_ref()) {
        (Some(_), _) => file_output::id_opt(errs, "daemon.group", &d.group, lookup_group)?,
        (None, NumOrStr::Str(name)) if name.parse::<u32>().is_err() => lookup_user_gid(name)
            .map_err(|m| errs.at(user.span(), "daemon.user", m))
            .ok()?,
        (None, _) => {
            errs.at(
                user.span(),
                "daemon.user",
                "a numeric user needs daemon.group (there is no user entry to take it from)",
            );
            return None;
        }
    };
    let mut groups = Vec::new();
    if let Some(list) = &d.supplementary_groups {
        for g in list.get_ref() {
            let id = match g {
                NumOrStr::Num(n) => u32::try_from(*n).map_err(|_| format!("invalid id {n}")),
                NumOrStr::Str(s) => lookup_group(s),
            };
            match id {
                Ok(id) => groups.push(id),
                Err(m) => errs.at(list.span(), "daemon.supplementary_groups", m),
            }
        }
    }
    let name = match user.get_ref() {
        NumOrStr::Num(n) => n.to_string(),
        NumOrStr::Str(s) => s.clone(),
    };
    Some(crate::privileges::RunAs {
        user: name,
        uid,
        gid,
        groups,
    })
}

/// What `--check-config` found outside the config text itself.
#[derive(Debug, Default)]
pub struct EnvironmentCheck {
    /// Problems that would stop sluice from working.
    pub errors: Vec<String>,
    /// Problems to fix soon (certificates about to expire).
    pub warnings: Vec<String>,
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
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match cur.parent() {
                Some(p) => cur = p,
                None => return Err("no existing ancestor".into()),
            },
            // Permission denied on the way: nothing below can be created either.
            Err(e) => return Err(format!("{}: {e}", cur.display())),
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
