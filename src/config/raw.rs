//! The raw layer: what serde reads (every field optional and spanned, so validation can point
//! at it), error collection with positions, and the value parsers for sizes, durations, modes and
//! networks.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeValue, ValueDeserializer};

use super::ConfigError;
// ---------------------------------------------------------------------------------------------
// Raw layer: what serde reads. Every field is optional and spanned so validation can point at it.

#[derive(Deserialize, Default)]
pub(super) struct RawDaemon {
    pub(super) shutdown_timeout: Option<Spanned<NumOrStr>>,
    pub(super) stats_interval: Option<Spanned<NumOrStr>>,
    pub(super) state_dir: Option<Spanned<String>>,
    pub(super) user: Option<Spanned<NumOrStr>>,
    pub(super) group: Option<Spanned<NumOrStr>>,
    pub(super) supplementary_groups: Option<Spanned<Vec<NumOrStr>>>,
    pub(super) metrics_address: Option<Spanned<String>>,
}

#[derive(Deserialize)]
pub(super) struct RawListener {
    pub(super) kind: Spanned<String>,
    pub(super) address: Option<Spanned<String>>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) mode: Option<Spanned<String>>,
    pub(super) max_message_size: Option<Spanned<NumOrStr>>,
    pub(super) max_connections: Option<Spanned<i64>>,
    pub(super) idle_timeout: Option<Spanned<NumOrStr>>,
    pub(super) frame_timeout: Option<Spanned<NumOrStr>>,
    pub(super) receive_buffer_size: Option<Spanned<NumOrStr>>,
    pub(super) sockets: Option<Spanned<i64>>,
    pub(super) nul_trailer: Option<Spanned<bool>>,
    pub(super) allowed_sources: Option<Spanned<OneOrMany>>,
    pub(super) timezone: Option<Spanned<String>>,
    pub(super) handshake_timeout: Option<Spanned<NumOrStr>>,
    pub(super) cert_file: Option<Spanned<String>>,
    pub(super) key_file: Option<Spanned<String>>,
    pub(super) client_auth: Option<Spanned<String>>,
    pub(super) client_ca_file: Option<Spanned<String>>,
    pub(super) client_crl_file: Option<Spanned<String>>,
    pub(super) permitted_peers: Option<Spanned<OneOrMany>>,
    pub(super) fingerprints: Option<Spanned<OneOrMany>>,
    pub(super) rate_limit: Option<RawRateLimit>,
    pub(super) read_existing: Option<Spanned<String>>,
}

#[derive(Deserialize)]
pub(super) struct RawRateLimit {
    pub(super) messages: Option<Spanned<i64>>,
    pub(super) interval: Option<Spanned<NumOrStr>>,
    pub(super) burst: Option<Spanned<i64>>,
}

impl RawRateLimit {
    /// Where the table is: its first key's value.
    pub(super) fn span(&self) -> Option<std::ops::Range<usize>> {
        first_span([
            self.messages.as_ref().map(|v| v.span()),
            self.interval.as_ref().map(|v| v.span()),
            self.burst.as_ref().map(|v| v.span()),
        ])
    }
}

/// The spans of the optional fields that are set, by key name, for "not valid for this kind".
macro_rules! set_keys {
    ($raw:expr; $($field:ident),* $(,)?) => {
        [$((stringify!($field), $raw.$field.as_ref().map(|v| v.span()))),*]
            .into_iter()
            .filter_map(|(k, s)| s.map(|s| (k, s)))
            .collect()
    };
}

impl RawListener {
    pub(super) fn set_keys(&self) -> Vec<(&'static str, std::ops::Range<usize>)> {
        let mut keys: Vec<_> = set_keys!(self; address, path, mode, max_message_size,
            max_connections, idle_timeout, frame_timeout, receive_buffer_size, sockets, nul_trailer,
            allowed_sources, handshake_timeout, cert_file, key_file, client_auth, client_ca_file,
            client_crl_file, permitted_peers, fingerprints, timezone, read_existing);
        if let Some(span) = self.rate_limit.as_ref().and_then(RawRateLimit::span) {
            keys.push(("rate_limit", span));
        }
        keys
    }
}

#[derive(Deserialize)]
pub(super) struct RawOutput {
    pub(super) kind: Spanned<String>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) format: Option<Spanned<String>>,
    pub(super) queue: Option<RawQueue>,
    pub(super) max_open_files: Option<Spanned<i64>>,
    pub(super) max_files_per_day: Option<Spanned<i64>>,
    pub(super) flush_interval: Option<Spanned<NumOrStr>>,
    pub(super) address: Option<Spanned<String>>,
    pub(super) addresses: Option<Spanned<OneOrMany>>,
    pub(super) mode: Option<Spanned<String>>,
    pub(super) protocol: Option<Spanned<String>>,
    pub(super) framing: Option<Spanned<String>>,
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) server_name: Option<Spanned<String>>,
    pub(super) fingerprints: Option<Spanned<OneOrMany>>,
    pub(super) cert_file: Option<Spanned<String>>,
    pub(super) key_file: Option<Spanned<String>>,
    pub(super) idle_timeout: Option<Spanned<NumOrStr>>,
    pub(super) fsync: Option<Spanned<String>>,
    pub(super) rotate: Option<RawRotate>,
    pub(super) file_mode: Option<Spanned<String>>,
    pub(super) dir_mode: Option<Spanned<String>>,
    pub(super) owner: Option<Spanned<NumOrStr>>,
    pub(super) group: Option<Spanned<NumOrStr>>,
}

impl RawOutput {
    pub(super) fn set_keys(&self) -> Vec<(&'static str, std::ops::Range<usize>)> {
        let mut keys: Vec<_> = set_keys!(self; path, max_open_files, max_files_per_day,
            flush_interval, address, addresses, mode, protocol, framing, ca_file, server_name,
            fingerprints, cert_file, key_file, idle_timeout, fsync, file_mode, dir_mode, owner, group);
        if let Some(span) = self.rotate.as_ref().and_then(RawRotate::span) {
            keys.push(("rotate", span));
        }
        keys
    }
}

#[derive(Deserialize)]
pub(super) struct RawRotate {
    pub(super) size: Option<Spanned<NumOrStr>>,
    pub(super) interval: Option<Spanned<NumOrStr>>,
    pub(super) keep: Option<Spanned<i64>>,
    pub(super) max_age: Option<Spanned<NumOrStr>>,
    pub(super) compress: Option<Spanned<String>>,
    pub(super) naming: Option<Spanned<String>>,
}

impl RawRotate {
    /// Where the table is, for errors about it as a whole: its first key's value.
    pub(super) fn span(&self) -> Option<std::ops::Range<usize>> {
        first_span([
            self.size.as_ref().map(|v| v.span()),
            self.interval.as_ref().map(|v| v.span()),
            self.keep.as_ref().map(|v| v.span()),
            self.max_age.as_ref().map(|v| v.span()),
            self.compress.as_ref().map(|v| v.span()),
            self.naming.as_ref().map(|v| v.span()),
        ])
    }
}

/// The earliest of the spans that are set: where an inline table's first key is.
fn first_span<const N: usize>(
    spans: [Option<std::ops::Range<usize>>; N],
) -> Option<std::ops::Range<usize>> {
    spans.into_iter().flatten().min_by_key(|s| s.start)
}

#[derive(Deserialize)]
pub(super) struct RawQueue {
    pub(super) kind: Option<Spanned<String>>,
    pub(super) max_events: Option<Spanned<i64>>,
    pub(super) max_size: Option<Spanned<NumOrStr>>,
    pub(super) when_full: Option<Spanned<String>>,
    pub(super) fsync: Option<Spanned<NumOrStr>>,
}

#[derive(Deserialize)]
pub(super) struct RawRoute {
    pub(super) name: Option<Spanned<String>>,
    pub(super) selector: Option<Spanned<String>>,
    pub(super) listener: Option<Spanned<OneOrMany>>,
    pub(super) hostname: Option<Spanned<toml::Value>>,
    pub(super) app_name: Option<Spanned<toml::Value>>,
    pub(super) message: Option<Spanned<toml::Value>>,
    pub(super) tls_peer: Option<Spanned<toml::Value>>,
    pub(super) source: Option<Spanned<OneOrMany>>,
    pub(super) to: Option<Spanned<OneOrMany>>,
    pub(super) stop: Option<Spanned<bool>>,
}

/// A size or duration: an integer, or a string with a unit.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum NumOrStr {
    Num(i64),
    Str(String),
}

/// A string or a list of strings.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Collects errors with positions computed from byte spans in the source text.
pub(super) struct Errors<'a> {
    pub(super) file: &'a str,
    pub(super) text: &'a str,
    pub(super) list: Vec<ConfigError>,
}

impl Errors<'_> {
    pub(super) fn at(
        &mut self,
        span: std::ops::Range<usize>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) {
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
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, col)
}

/// Deserializes one spanned TOML value into `T`, reporting unknown keys and type errors.
pub(super) fn decode<T: serde::de::DeserializeOwned>(
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
pub(super) fn find_key_span(
    value: &Spanned<DeValue<'_>>,
    path: &str,
) -> Option<std::ops::Range<usize>> {
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

pub(super) fn size_opt(
    errs: &mut Errors<'_>,
    key: &str,
    v: &Option<Spanned<NumOrStr>>,
) -> Option<u64> {
    let v = v.as_ref()?;
    let r = match v.get_ref() {
        NumOrStr::Num(n) => u64::try_from(*n).map_err(|_| "a size cannot be negative".to_string()),
        NumOrStr::Str(s) => parse_size(s),
    };
    r.map_err(|m| errs.at(v.span(), key, m)).ok()
}

pub(super) fn duration_opt(
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

pub(super) fn positive(
    errs: &mut Errors<'_>,
    key: &str,
    v: &Option<Spanned<i64>>,
) -> Option<usize> {
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
pub(super) fn reject_keys(
    errs: &mut Errors<'_>,
    prefix: &str,
    kind: &str,
    set: Vec<(&'static str, std::ops::Range<usize>)>,
    allowed: &[&str],
) {
    for (key, span) in set {
        if !allowed.contains(&key) {
            errs.at(
                span,
                format!("{prefix}.{key}"),
                format!("not valid for kind = \"{kind}\""),
            );
        }
    }
}

/// Parses an octal permission string like `"0666"`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("invalid mode {s:?}: expected octal like \"0640\""))
}

/// Parses a list of networks, reporting each bad one.
pub(super) fn cidr_list(
    errs: &mut Errors<'_>,
    key: &str,
    v: &Spanned<OneOrMany>,
) -> Vec<ipnet::IpNet> {
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
pub(super) fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(n) = s.parse::<ipnet::IpNet>() {
        return Ok(n.trunc());
    }
    s.parse::<std::net::IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| {
            format!("invalid network {s:?}: expected CIDR like \"10.0.0.0/8\" or an address")
        })
}
