//! The validated layer: each raw entry checked on its own, every problem recorded with its key.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use toml::Spanned;

use super::file_output::validate_file_output;
use super::raw::*;
use super::*;
use crate::output::backlog::SyncPolicy;
use crate::output::format::Format;
use crate::route::{Matcher, Rule, Selector};
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub(super) fn check_duplicate_binds(errs: &mut Errors<'_>, listeners: &[ListenerConfig]) {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for l in listeners {
        let key = match &l.kind {
            // Port 0 asks the kernel for a fresh port each time: never a clash.
            ListenerKind::Udp { address, .. }
            | ListenerKind::Tcp(StreamSettings { address, .. })
            | ListenerKind::Tls {
                stream: StreamSettings { address, .. },
                ..
            } if address.port() == 0 => continue,
            // Datagram or stream, a unix socket needs its file to itself.
            ListenerKind::UnixStream { path, .. } => format!("unix {}", path.display()),
            kind => kind.endpoint(),
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

pub(super) fn validate_listener(
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
    const STREAM_KEYS: [&str; 7] = [
        "rate_limit",
        "address",
        "max_message_size",
        "max_connections",
        "idle_timeout",
        "frame_timeout",
        "nul_trailer",
    ];
    let kind_name = raw.kind.get_ref().as_str();
    let mut allowed: Vec<&str> = match kind_name {
        "udp" => vec![
            "address",
            "max_message_size",
            "receive_buffer_size",
            "sockets",
            "allowed_sources",
            "rate_limit",
        ],
        "tcp" => [&STREAM_KEYS[..], &["allowed_sources"]].concat(),
        "tls" => [
            &STREAM_KEYS[..],
            &[
                "allowed_sources",
                "handshake_timeout",
                "cert_file",
                "key_file",
                "client_auth",
                "client_ca_file",
                "client_crl_file",
                "permitted_peers",
                "fingerprints",
            ],
        ]
        .concat(),
        "unix" => vec!["path", "mode", "max_message_size", "rate_limit"],
        "unix_stream" => [&STREAM_KEYS[..], &["path", "mode"]]
            .concat()
            .into_iter()
            .filter(|k| *k != "address")
            .collect(),
        "kmsg" => vec!["path", "read_existing", "max_message_size", "rate_limit"],
        other => {
            errs.at(
                raw.kind.span(),
                format!("{p}.kind"),
                format!("unknown listener kind {other:?}: expected \"udp\", \"tcp\", \"tls\", \"unix\", \"unix_stream\" or \"kmsg\""),
            );
            return None;
        }
    };
    // Every kind parses year- and zone-less timestamps.
    allowed.push("timezone");
    reject_keys(errs, &p, kind_name, raw.set_keys(), &allowed);
    // glibc's syslog(3) over a stream socket ends each message with a NUL.
    let connections = |errs: &mut Errors<'_>, nul_by_default: bool| -> ConnectionSettings {
        let max_connections = positive(errs, &format!("{p}.max_connections"), &raw.max_connections)
            .unwrap_or(DEFAULT_MAX_CONNECTIONS);
        let idle = duration_opt(errs, &format!("{p}.idle_timeout"), &raw.idle_timeout);
        let frame = duration_opt(errs, &format!("{p}.frame_timeout"), &raw.frame_timeout);
        // 0 disables, for trusted peers (hostile-inputs C02).
        let enabled = |d: Option<Duration>, default| match d {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => Some(default),
        };
        ConnectionSettings {
            max_connections,
            idle_timeout: enabled(idle, DEFAULT_IDLE_TIMEOUT),
            frame_timeout: enabled(frame, DEFAULT_FRAME_TIMEOUT),
            nul_trailer: raw
                .nul_trailer
                .as_ref()
                .map_or(nul_by_default, |v| *v.get_ref()),
        }
    };
    let stream = |errs: &mut Errors<'_>| -> Option<StreamSettings> {
        let address = address(errs);
        let connections = connections(errs, false);
        Some(StreamSettings {
            address: address?,
            connections,
        })
    };
    // The socket path and mode of `unix` and `unix_stream`.
    let unix_path = |errs: &mut Errors<'_>| -> Option<(PathBuf, u32)> {
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
        Some((PathBuf::from(path.get_ref()), mode))
    };
    let kind = match kind_name {
        "udp" => {
            let address = address(errs);
            let rcvbuf = size_opt(
                errs,
                &format!("{p}.receive_buffer_size"),
                &raw.receive_buffer_size,
            )
            .map_or(DEFAULT_UDP_RECEIVE_BUFFER_BYTES, |n| n as usize);
            let sockets = match &raw.sockets {
                None => 1,
                Some(v) if (1..=MAX_UDP_SOCKETS as i64).contains(v.get_ref()) => {
                    *v.get_ref() as usize
                }
                Some(v) => {
                    errs.at(
                        v.span(),
                        format!("{p}.sockets"),
                        format!(
                            "must be from 1 to {MAX_UDP_SOCKETS} (sockets sharing the port, each read by its own task), got {}",
                            v.get_ref()
                        ),
                    );
                    1
                }
            };
            ListenerKind::Udp {
                address: address?,
                receive_buffer_bytes: rcvbuf,
                sockets,
            }
        }
        "tcp" => ListenerKind::Tcp(stream(errs)?),
        "tls" => {
            let stream = stream(errs);
            let tls = server_tls(errs, &p, &raw);
            let handshake_timeout = duration_opt(
                errs,
                &format!("{p}.handshake_timeout"),
                &raw.handshake_timeout,
            )
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT);
            ListenerKind::Tls {
                stream: stream?,
                handshake_timeout,
                tls: tls?,
            }
        }
        "unix" => {
            let (path, mode) = unix_path(errs)?;
            ListenerKind::Unix { path, mode }
        }
        "unix_stream" => {
            let connections = connections(errs, true);
            let (path, mode) = unix_path(errs)?;
            ListenerKind::UnixStream {
                path,
                mode,
                connections,
            }
        }
        "kmsg" => {
            let read_existing = match &raw.read_existing {
                None => ReadExisting::AtBoot,
                Some(r) => ReadExisting::from_name(r.get_ref()).unwrap_or_else(|| {
                    errs.at(
                        r.span(),
                        format!("{p}.read_existing"),
                        format!(
                            "unknown value {:?}: expected \"at_boot\", \"always\" or \"never\"",
                            r.get_ref()
                        ),
                    );
                    ReadExisting::AtBoot
                }),
            };
            ListenerKind::Kmsg {
                path: raw.path.as_ref().map_or_else(
                    || PathBuf::from(DEFAULT_KMSG_PATH),
                    |p| PathBuf::from(p.get_ref()),
                ),
                read_existing,
            }
        }
        _ => return None,
    };
    let allowed_sources = raw
        .allowed_sources
        .as_ref()
        .map(|s| cidr_list(errs, &format!("{p}.allowed_sources"), s));
    let timezone = match &raw.timezone {
        None => Zone::Local,
        Some(tz) => Zone::from_name(tz.get_ref()).unwrap_or_else(|| {
            errs.at(
                tz.span(),
                format!("{p}.timezone"),
                format!(
                    "unknown time zone {:?}: expected an IANA name like \"Europe/Berlin\", \"UTC\", or \"local\"",
                    tz.get_ref()
                ),
            );
            Zone::Local
        }),
    };
    let rate_limit = raw
        .rate_limit
        .as_ref()
        .and_then(|r| rate_limit(errs, &format!("{p}.rate_limit"), r, raw.kind.span()));
    if errs.list.len() > n_before {
        return None;
    }
    Some(ListenerConfig {
        name: name.into(),
        max_message_size,
        allowed_sources,
        timezone,
        rate_limit,
        kind,
    })
}

pub(super) fn validate_output(
    errs: &mut Errors<'_>,
    name: &str,
    raw: RawOutput,
) -> Option<OutputConfig> {
    let p = format!("output.{name}");
    let n_before = errs.list.len();
    let format = match &raw.format {
        None if raw.kind.get_ref() == "forward" => Format::Rfc5424,
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
    let queue = queue(errs, &p, &raw);
    let kind_name = raw.kind.get_ref().as_str();
    let allowed: &[&str] = match kind_name {
        "stdout" => &[],
        "file" => &[
            "path",
            "max_open_files",
            "max_files_per_day",
            "flush_interval",
            "idle_timeout",
            "fsync",
            "rotate",
            "file_mode",
            "dir_mode",
            "owner",
            "group",
        ],
        "forward" => &[
            "address",
            "addresses",
            "mode",
            "protocol",
            "framing",
            "ca_file",
            "server_name",
            "fingerprints",
            "cert_file",
            "key_file",
        ],
        other => {
            errs.at(
                raw.kind.span(),
                format!("{p}.kind"),
                format!(
                    "unknown output kind {other:?}: expected \"file\", \"stdout\" or \"forward\""
                ),
            );
            return None;
        }
    };
    reject_keys(errs, &p, kind_name, raw.set_keys(), allowed);
    let kind = match kind_name {
        "stdout" => OutputKind::Stdout,
        "file" => OutputKind::File(validate_file_output(errs, &p, raw)?),
        "forward" => OutputKind::Forward(forward(errs, &p, &raw)?),
        _ => return None,
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

pub(super) fn matcher(
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

pub(super) fn validate_route(
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
    let tls_peer = matcher(errs, &format!("{p}.tls_peer"), &raw.tls_peer, false);
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
    let label = match &raw.name {
        Some(n) if n.get_ref().is_empty() => {
            errs.at(n.span(), format!("{p}.name"), "must not be empty");
            return None;
        }
        Some(n) => Arc::from(n.get_ref().as_str()),
        None => Arc::from(index.to_string()),
    };
    Some(Rule {
        label,
        selector,
        listener,
        hostname,
        app_name,
        message,
        tls_peer,
        source,
        to,
        stop: raw.stop.as_ref().is_some_and(|s| *s.get_ref()),
    })
}

/// `rate_limit = { messages, interval, burst }`: messages required, interval 1s and burst =
/// messages by default.
fn rate_limit(
    errs: &mut Errors<'_>,
    p: &str,
    raw: &RawRateLimit,
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
    let Some(messages) = raw.messages.as_ref() else {
        errs.at(
            raw.span().unwrap_or(fallback_span),
            format!("{p}.messages"),
            "missing: give messages per interval, like { messages = 1000, interval = \"5s\" }",
        );
        return None;
    };
    let messages = count(errs, "messages", &Some(messages.clone()));
    let burst = match &raw.burst {
        None => messages,
        b => count(errs, "burst", b),
    };
    let interval = match duration_opt(errs, &format!("{p}.interval"), &raw.interval) {
        None if raw.interval.is_some() => None,
        None => Some(DEFAULT_RATE_LIMIT_INTERVAL),
        Some(d) if d.is_zero() => {
            if let Some(v) = &raw.interval {
                errs.at(v.span(), format!("{p}.interval"), "must be more than 0");
            }
            None
        }
        Some(d) => Some(d),
    };
    let (messages, burst, interval) = (messages?, burst?, interval?);
    Some(RateLimit {
        messages,
        interval,
        burst,
    })
}

/// The TLS half of a `tls` listener: files, and the client authentication policy.
fn server_tls(
    errs: &mut Errors<'_>,
    p: &str,
    raw: &RawListener,
) -> Option<crate::tls::ServerSettings> {
    use crate::tls::{ClientAuth, NamePattern};
    let required =
        |errs: &mut Errors<'_>, key: &str, v: &Option<Spanned<String>>| -> Option<PathBuf> {
            match v {
                Some(v) => Some(PathBuf::from(v.get_ref())),
                None => {
                    errs.at(
                        raw.kind.span(),
                        format!("{p}.{key}"),
                        "missing: a tls listener needs cert_file and key_file (PEM)",
                    );
                    None
                }
            }
        };
    let cert_file = required(errs, "cert_file", &raw.cert_file);
    let key_file = required(errs, "key_file", &raw.key_file);
    let client_ca_file = raw
        .client_ca_file
        .as_ref()
        .map(|v| PathBuf::from(v.get_ref()));
    let client_crl_file = raw
        .client_crl_file
        .as_ref()
        .map(|v| PathBuf::from(v.get_ref()));
    let crl_span = raw.client_crl_file.as_ref().map(|v| v.span());
    let mode = raw
        .client_auth
        .as_ref()
        .map_or("none", |v| v.get_ref().as_str());
    let mode_span = raw
        .client_auth
        .as_ref()
        .map_or(raw.kind.span(), |v| v.span());
    let unused = |errs: &mut Errors<'_>, key: &str, span: Option<std::ops::Range<usize>>| {
        if let Some(span) = span {
            errs.at(
                span,
                format!("{p}.{key}"),
                format!("has no effect with client_auth = \"{mode}\""),
            );
        }
    };
    let peers_span = raw.permitted_peers.as_ref().map(|v| v.span());
    let fp_span = raw.fingerprints.as_ref().map(|v| v.span());
    let ca_span = raw.client_ca_file.as_ref().map(|v| v.span());
    let client_auth = match mode {
        "none" | "ca" => {
            unused(errs, "permitted_peers", peers_span);
            unused(errs, "fingerprints", fp_span);
            if mode == "none" {
                unused(errs, "client_ca_file", ca_span);
                unused(errs, "client_crl_file", crl_span);
                ClientAuth::None
            } else {
                ClientAuth::Ca
            }
        }
        "name" => {
            unused(errs, "fingerprints", fp_span);
            let Some(peers) = &raw.permitted_peers else {
                errs.at(mode_span, format!("{p}.permitted_peers"), "missing: client_auth = \"name\" needs permitted_peers, like [\"*.example.net\"]");
                return None;
            };
            let mut patterns = Vec::new();
            for name in peers.get_ref().clone().into_vec() {
                match NamePattern::parse(&name) {
                    Ok(pat) => patterns.push(pat),
                    Err(msg) => errs.at(peers.span(), format!("{p}.permitted_peers"), msg),
                }
            }
            ClientAuth::Name(patterns)
        }
        "fingerprint" => {
            unused(errs, "permitted_peers", peers_span);
            unused(errs, "client_ca_file", ca_span);
            unused(errs, "client_crl_file", crl_span);
            let Some(fps) = &raw.fingerprints else {
                errs.at(mode_span, format!("{p}.fingerprints"), "missing: client_auth = \"fingerprint\" needs fingerprints, like [\"sha256:AB:CD:...\"]");
                return None;
            };
            ClientAuth::Fingerprint(fingerprint_list(errs, &format!("{p}.fingerprints"), fps))
        }
        other => {
            errs.at(
                mode_span,
                format!("{p}.client_auth"),
                format!(
                    "unknown mode {other:?}: expected \"none\", \"ca\", \"name\" or \"fingerprint\""
                ),
            );
            return None;
        }
    };
    if matches!(client_auth, ClientAuth::Ca | ClientAuth::Name(_)) && client_ca_file.is_none() {
        errs.at(
            mode_span,
            format!("{p}.client_ca_file"),
            format!(
                "missing: client_auth = \"{mode}\" needs the CA that signs client certificates"
            ),
        );
    }
    Some(crate::tls::ServerSettings {
        cert_file: cert_file?,
        key_file: key_file?,
        client_auth,
        client_ca_file,
        client_crl_file,
    })
}

fn fingerprint_list(
    errs: &mut Errors<'_>,
    key: &str,
    v: &Spanned<OneOrMany>,
) -> Vec<crate::tls::Fingerprint> {
    v.get_ref()
        .clone()
        .into_vec()
        .iter()
        .filter_map(|f| {
            crate::tls::verify::parse_fingerprint(f)
                .map_err(|m| errs.at(v.span(), key, m))
                .ok()
        })
        .collect()
}

/// An output's queue: kind, bounds and overflow policy. Disk queues and `drop_oldest` need the
/// forward output's backlog.
fn queue(errs: &mut Errors<'_>, p: &str, raw: &RawOutput) -> QueueConfig {
    let mut queue = QueueConfig {
        kind: QueueKind::Memory,
        max_events: DEFAULT_QUEUE_MAX_EVENTS,
        max_bytes: None,
        when_full: WhenFull::Block,
    };
    let Some(q) = &raw.queue else { return queue };
    let forward = raw.kind.get_ref() == "forward";
    let only_forward =
        |errs: &mut Errors<'_>, span: std::ops::Range<usize>, key: &str, what: &str| {
            if !forward {
                errs.at(
                    span,
                    format!("{p}.queue.{key}"),
                    format!("{what} is available on forward outputs only"),
                );
            }
        };
    if let Some(n) = positive(errs, &format!("{p}.queue.max_events"), &q.max_events) {
        queue.max_events = n;
    }
    if let Some(n) = size_opt(errs, &format!("{p}.queue.max_size"), &q.max_size) {
        queue.max_bytes = Some(n);
        if let Some(v) = &q.max_size {
            only_forward(errs, v.span(), "max_size", "a size bound");
        }
    }
    if let Some(w) = &q.when_full {
        match w.get_ref().as_str() {
            "block" => queue.when_full = WhenFull::Block,
            "drop_newest" => queue.when_full = WhenFull::DropNewest,
            "drop_oldest" => {
                queue.when_full = WhenFull::DropOldest;
                only_forward(errs, w.span(), "when_full", "\"drop_oldest\"");
            }
            other => errs.at(
                w.span(),
                format!("{p}.queue.when_full"),
                format!("unknown policy {other:?}: expected \"block\", \"drop_newest\" or \"drop_oldest\""),
            ),
        }
    }
    let sync = match &q.fsync {
        None => SyncPolicy::Interval(DEFAULT_DISK_SYNC_INTERVAL),
        Some(v) => match v.get_ref() {
            NumOrStr::Str(s) if s == "every_batch" => SyncPolicy::EveryBatch,
            _ => duration_opt(errs, &format!("{p}.queue.fsync"), &q.fsync).map_or(
                SyncPolicy::Interval(DEFAULT_DISK_SYNC_INTERVAL),
                SyncPolicy::Interval,
            ),
        },
    };
    match q.kind.as_ref().map(|k| (k.get_ref().as_str(), k.span())) {
        None | Some(("memory", _)) => {
            if let Some(v) = &q.fsync {
                errs.at(
                    v.span(),
                    format!("{p}.queue.fsync"),
                    "only applies to kind = \"disk\"",
                );
            }
        }
        Some(("disk", span)) => {
            only_forward(errs, span, "kind", "a disk queue");
            queue.kind = QueueKind::Disk { sync };
            queue.max_bytes.get_or_insert(DEFAULT_DISK_QUEUE_BYTES);
        }
        Some((other, span)) => errs.at(
            span,
            format!("{p}.queue.kind"),
            format!("unknown queue kind {other:?}: expected \"memory\" or \"disk\""),
        ),
    }
    queue
}

/// A `forward` output's destination and transport.
fn forward(errs: &mut Errors<'_>, p: &str, raw: &RawOutput) -> Option<ForwardSettings> {
    if let (Some(_), Some(v)) = (&raw.address, &raw.addresses) {
        errs.at(
            v.span(),
            format!("{p}.addresses"),
            "give either address or addresses, not both",
        );
    }
    let given = match (&raw.address, &raw.addresses) {
        (Some(a), _) => (vec![a.get_ref().clone()], a.span(), "address"),
        (None, Some(v)) => (v.get_ref().clone().into_vec(), v.span(), "addresses"),
        (None, None) => {
            errs.at(
                raw.kind.span(),
                format!("{p}.address"),
                "missing: give the collector as address = \"host:port\" (or addresses = [...])",
            );
            return None;
        }
    };
    let (list, address_span, key) = given;
    let mut addresses = Vec::new();
    let mut first_host = None;
    for a in list {
        match a.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
                first_host.get_or_insert_with(|| {
                    host.trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string()
                });
                addresses.push(a);
            }
            _ => errs.at(
                address_span.clone(),
                format!("{p}.{key}"),
                format!(
                    "invalid address {a:?}: expected host:port, like \"siem.example.net:6514\""
                ),
            ),
        }
    }
    let host = first_host?;
    let round_robin = match raw.mode.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
        None | Some(("failover", _)) => false,
        Some(("round_robin", _)) => true,
        Some((other, span)) => {
            errs.at(
                span,
                format!("{p}.mode"),
                format!("unknown mode {other:?}: expected \"failover\" or \"round_robin\""),
            );
            false
        }
    };
    let protocol = raw
        .protocol
        .as_ref()
        .map_or("tcp", |v| v.get_ref().as_str());
    let proto_span = raw.protocol.as_ref().map_or(raw.kind.span(), |v| v.span());
    let tls_keys = [
        ("ca_file", raw.ca_file.as_ref().map(|v| v.span())),
        ("server_name", raw.server_name.as_ref().map(|v| v.span())),
        ("fingerprints", raw.fingerprints.as_ref().map(|v| v.span())),
        ("cert_file", raw.cert_file.as_ref().map(|v| v.span())),
        ("key_file", raw.key_file.as_ref().map(|v| v.span())),
    ];
    let path = |v: &Option<Spanned<String>>| v.as_ref().map(|v| PathBuf::from(v.get_ref()));
    let protocol = match protocol {
        "udp" | "tcp" => {
            for (key, span) in tls_keys {
                if let Some(span) = span {
                    errs.at(
                        span,
                        format!("{p}.{key}"),
                        format!("only applies with protocol = \"tls\", not {protocol:?}"),
                    );
                }
            }
            if protocol == "udp" {
                ForwardProtocol::Udp
            } else {
                ForwardProtocol::Tcp
            }
        }
        "tls" => {
            let fingerprints = raw
                .fingerprints
                .as_ref()
                .map(|v| fingerprint_list(errs, &format!("{p}.fingerprints"), v))
                .unwrap_or_default();
            if fingerprints.is_empty() && raw.ca_file.is_none() {
                errs.at(proto_span.clone(), format!("{p}.ca_file"), "missing: protocol = \"tls\" needs ca_file (the collector's CA) or fingerprints (pinned certificates)");
            }
            if raw.cert_file.is_some() != raw.key_file.is_some() {
                errs.at(
                    proto_span,
                    format!("{p}.cert_file"),
                    "cert_file and key_file go together (the client certificate and its key)",
                );
            }
            let server_name = raw
                .server_name
                .as_ref()
                .map_or(host, |v| v.get_ref().clone());
            if let Err(msg) = crate::tls::server_name(&server_name) {
                let span = raw
                    .server_name
                    .as_ref()
                    .map_or(address_span.clone(), |v| v.span());
                errs.at(span, format!("{p}.server_name"), msg);
            }
            ForwardProtocol::Tls(crate::tls::ClientSettings {
                ca_file: path(&raw.ca_file),
                fingerprints,
                server_name,
                cert_file: path(&raw.cert_file),
                key_file: path(&raw.key_file),
            })
        }
        other => {
            errs.at(
                proto_span,
                format!("{p}.protocol"),
                format!("unknown protocol {other:?}: expected \"udp\", \"tcp\" or \"tls\""),
            );
            return None;
        }
    };
    let octet_counting = match raw
        .framing
        .as_ref()
        .map(|v| (v.get_ref().as_str(), v.span()))
    {
        None | Some(("octet-counting", _)) => true,
        Some(("lf", _)) => false,
        Some((other, span)) => {
            errs.at(
                span,
                format!("{p}.framing"),
                format!("unknown framing {other:?}: expected \"octet-counting\" or \"lf\""),
            );
            true
        }
    };
    Some(ForwardSettings {
        addresses,
        round_robin,
        protocol,
        octet_counting,
    })
}
