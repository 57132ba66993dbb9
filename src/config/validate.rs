//! The validated layer: each raw entry checked on its own, every problem recorded with its key.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use toml::Spanned;

use super::raw::*;
use super::*;
use crate::output::file::PathTemplate;
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
    if errs.list.len() > n_before {
        return None;
    }
    Some(ListenerConfig {
        name: name.into(),
        max_message_size,
        allowed_sources,
        timezone,
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
