//! What every listener kind shares: the limits and parsing settings of `[listen.NAME]`
//! (`max_message_size`, `timezone`, `rate_limit`), the IP address and sender filter of the
//! network kinds, the socket file of the unix kinds, and the connection settings of the stream
//! kinds. Each is one struct read in one place; a kind takes the ones it needs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::decode::{
    Entry, Errors, NumOrStr, OneOrMany, Part, cidr_list, duration_opt, keys, parse_mode, positive,
    size_opt,
};
use crate::parse::Zone;

/// Default `max_message_size` for every listener.
pub const DEFAULT_MAX_MESSAGE_SIZE_BYTES: usize = 64 * 1024;
/// Largest `max_message_size` accepted (frames are addressed with `u32` spans).
pub const MAX_MAX_MESSAGE_SIZE_BYTES: usize = 64 * 1024 * 1024;
/// Smallest `max_message_size`: what RFC 5424 §6.1 says every receiver must take.
const MIN_MAX_MESSAGE_SIZE_BYTES: usize = 480;
/// Default `max_connections` per stream listener (rsyslog's imtcp default is 200; relays need
/// more).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1000;
/// Default idle timeout for a connection that sends nothing.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Default deadline for completing a frame once it has started (slowloris, hostile input C03).
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `rate_limit.interval`.
pub const DEFAULT_RATE_LIMIT_INTERVAL: Duration = Duration::from_secs(1);
/// Mode of a unix socket file when `mode` is not given: every local process may log.
const DEFAULT_SOCKET_MODE: u32 = 0o666;

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

/// The settings every listener kind has.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Longer messages are cut and flagged `truncated`.
    pub max_message_size: usize,
    /// The zone of RFC 3164 stamps that carry no offset (`timezone`, default the host's).
    pub timezone: Zone,
    /// Per-source token bucket (hostile input J02); `None` does not limit.
    pub rate_limit: Option<RateLimit>,
}

#[derive(Deserialize, Default)]
pub(super) struct LimitsRaw {
    max_message_size: Option<Spanned<NumOrStr>>,
    timezone: Option<Spanned<String>>,
    rate_limit: Option<RateLimitRaw>,
}

impl Part for LimitsRaw {
    const NESTED: &'static [crate::decode::Nested] =
        &[("rate_limit", keys::fields::<RateLimitRaw>)];
}

#[derive(Deserialize, Default)]
struct RateLimitRaw {
    messages: Option<Spanned<i64>>,
    interval: Option<Spanned<NumOrStr>>,
    burst: Option<Spanned<i64>>,
}

impl Limits {
    /// Reads the limits every kind has.
    pub fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<Limits> {
        let raw = entry.part::<LimitsRaw>(errs)?;
        let key = entry.key("max_message_size");
        let max_message_size = match size_opt(errs, &key, &raw.max_message_size) {
            Some(n)
                if n < MIN_MAX_MESSAGE_SIZE_BYTES as u64
                    || n > MAX_MAX_MESSAGE_SIZE_BYTES as u64 =>
            {
                if let Some(v) = &raw.max_message_size {
                    errs.at(
                        v.span(),
                        key,
                        format!("must be between 480 bytes (RFC 5424 §6.1) and 64MiB, got {n}"),
                    );
                }
                None
            }
            Some(n) => Some(n as usize),
            None if raw.max_message_size.is_some() => None,
            None => Some(DEFAULT_MAX_MESSAGE_SIZE_BYTES),
        };
        let timezone = match &raw.timezone {
            None => Some(Zone::Local),
            Some(tz) => Zone::from_name(tz.get_ref()).or_else(|| {
                errs.at(
                    tz.span(),
                    entry.key("timezone"),
                    format!(
                        "unknown time zone {:?}: expected an IANA name like \"Europe/Berlin\", \"UTC\", or \"local\"",
                        tz.get_ref()
                    ),
                );
                None
            }),
        };
        let rate_limit = match &raw.rate_limit {
            None => Some(None),
            Some(r) => r
                .decode(errs, &entry.key("rate_limit"), entry.kind.span())
                .map(Some),
        };
        Some(Limits {
            max_message_size: max_message_size?,
            timezone: timezone?,
            rate_limit: rate_limit?,
        })
    }
}

impl RateLimitRaw {
    /// Where the table is: its first key's value.
    fn span(&self) -> Option<std::ops::Range<usize>> {
        [
            self.messages.as_ref().map(|v| v.span()),
            self.interval.as_ref().map(|v| v.span()),
            self.burst.as_ref().map(|v| v.span()),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|s| s.start)
    }

    /// `messages` is required; `interval` is 1s and `burst` = `messages` by default.
    fn decode(
        &self,
        errs: &mut Errors<'_>,
        p: &str,
        fallback_span: std::ops::Range<usize>,
    ) -> Option<RateLimit> {
        let count = |errs: &mut Errors<'_>, key: &str, v: &Option<Spanned<i64>>| {
            let n = positive(errs, &format!("{p}.{key}"), v)?;
            u32::try_from(n)
                .map_err(|_| {
                    if let Some(v) = v {
                        errs.at(v.span(), format!("{p}.{key}"), "must be at most 4294967295");
                    }
                })
                .ok()
        };
        let Some(messages) = self.messages.as_ref() else {
            errs.at(
                self.span().unwrap_or(fallback_span),
                format!("{p}.messages"),
                "missing: give messages per interval, like { messages = 1000, interval = \"5s\" }",
            );
            return None;
        };
        let messages = count(errs, "messages", &Some(messages.clone()));
        let burst = match &self.burst {
            None => messages,
            b => count(errs, "burst", b),
        };
        let interval = match duration_opt(errs, &format!("{p}.interval"), &self.interval) {
            None if self.interval.is_some() => None,
            None => Some(DEFAULT_RATE_LIMIT_INTERVAL),
            Some(d) if d.is_zero() => {
                if let Some(v) = &self.interval {
                    errs.at(v.span(), format!("{p}.interval"), "must be more than 0");
                }
                None
            }
            Some(d) => Some(d),
        };
        Some(RateLimit {
            messages: messages?,
            interval: interval?,
            burst: burst?,
        })
    }
}

/// Where a network listener binds, and whom it takes messages from.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    /// Address to bind.
    pub address: SocketAddr,
    /// Only these sender networks are accepted; `None` accepts all.
    pub allowed_sources: Option<Vec<ipnet::IpNet>>,
}

#[derive(Deserialize, Default)]
struct NetworkRaw {
    address: Option<Spanned<String>>,
    allowed_sources: Option<Spanned<OneOrMany>>,
}

impl Part for NetworkRaw {}

impl Network {
    /// Reads `address` (required) and `allowed_sources`.
    pub(super) fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<Network> {
        let raw = entry.part::<NetworkRaw>(errs)?;
        let address = match &raw.address {
            None => {
                entry.missing(errs, "address", "missing: give an address like \"0.0.0.0:514\"");
                None
            }
            Some(a) => a.get_ref().parse::<SocketAddr>().map_err(|_| {
                errs.at(
                    a.span(),
                    entry.key("address"),
                    format!("invalid socket address {:?}: expected IP:PORT, like \"0.0.0.0:514\" or \"[::]:514\"", a.get_ref()),
                );
            }).ok(),
        };
        let allowed_sources = raw
            .allowed_sources
            .as_ref()
            .map(|s| cidr_list(errs, &entry.key("allowed_sources"), s));
        Some(Network {
            address: address?,
            allowed_sources,
        })
    }
}

/// The socket file of a unix listener.
#[derive(Debug, Clone, PartialEq)]
pub struct SocketFile {
    /// Socket path; a stale socket there is replaced.
    pub path: PathBuf,
    /// Permission bits of the socket file.
    pub mode: u32,
}

#[derive(Deserialize, Default)]
struct SocketFileRaw {
    path: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
}

impl Part for SocketFileRaw {}

impl SocketFile {
    /// Reads `path` (required) and `mode`.
    pub(super) fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<SocketFile> {
        let raw = entry.part::<SocketFileRaw>(errs)?;
        let mode = match &raw.mode {
            None => Some(DEFAULT_SOCKET_MODE),
            Some(m) => parse_mode(m.get_ref())
                .map_err(|msg| errs.at(m.span(), entry.key("mode"), msg))
                .ok(),
        };
        let Some(path) = &raw.path else {
            entry.missing(
                errs,
                "path",
                "missing: give a socket path like \"/dev/log\"",
            );
            return None;
        };
        Some(SocketFile {
            path: PathBuf::from(path.get_ref()),
            mode: mode?,
        })
    }

    /// `--check-config`: the socket's directory must exist (sluice creates the socket, not
    /// the directories above it).
    pub(super) fn check_environment(&self, key: &str, problems: &mut Vec<String>) {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        if !dir.is_dir() {
            problems.push(format!(
                "{key}.path: directory {} does not exist",
                dir.display()
            ));
        }
    }
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
    /// Also end LF-framed messages at NUL (hostile input B05); on unless `nul_trailer = false`.
    /// Python's `SysLogHandler` over TCP and glibc's syslog(3) over a stream socket end each
    /// message with a NUL and no LF, and a NUL has no place in a text line. Octet-counted
    /// frames are not affected.
    pub nul_trailer: bool,
}

#[derive(Deserialize, Default)]
struct ConnectionRaw {
    max_connections: Option<Spanned<i64>>,
    idle_timeout: Option<Spanned<NumOrStr>>,
    frame_timeout: Option<Spanned<NumOrStr>>,
    nul_trailer: Option<Spanned<bool>>,
}

impl Part for ConnectionRaw {}

impl ConnectionSettings {
    /// Reads the connection keys.
    pub(super) fn decode(
        entry: &mut Entry<'_, '_>,
        errs: &mut Errors<'_>,
    ) -> Option<ConnectionSettings> {
        let raw = entry.part::<ConnectionRaw>(errs)?;
        let before = errs.count();
        let max_connections = positive(errs, &entry.key("max_connections"), &raw.max_connections)
            .unwrap_or(DEFAULT_MAX_CONNECTIONS);
        let idle = duration_opt(errs, &entry.key("idle_timeout"), &raw.idle_timeout);
        let frame = duration_opt(errs, &entry.key("frame_timeout"), &raw.frame_timeout);
        // 0 disables, for trusted peers (hostile input C02).
        let enabled = |d: Option<Duration>, default| match d {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => Some(default),
        };
        (errs.count() == before).then(|| ConnectionSettings {
            max_connections,
            idle_timeout: enabled(idle, DEFAULT_IDLE_TIMEOUT),
            frame_timeout: enabled(frame, DEFAULT_FRAME_TIMEOUT),
            nul_trailer: raw.nul_trailer.as_ref().is_none_or(|v| *v.get_ref()),
        })
    }
}
