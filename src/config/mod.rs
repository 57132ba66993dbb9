//! Configuration: TOML text to a validated [`Config`], every error with its line.
//!
//! The loader reads the file's sections and hands each `[listen.NAME]` and `[output.NAME]` table
//! to its kind (through [`ListenerKind`] and [`OutputKind`]), which reads its own keys with
//! [`crate::decode`]. Errors are collected, not returned at the first one: every table, and
//! every key within it, is checked on its own, so one mistake does not hide the next. Each
//! error names `file:line:col` and the key path.
//!
//! [`Config::from_toml_str`] checks the text alone. [`Config::load`] also checks what the
//! config needs from the machine (directories, certificates, devices): `--check-config`, the
//! daemon's start and a reload all load through it, so they accept and refuse the same
//! configs.

mod daemon;
pub(crate) mod route;
#[cfg(test)]
mod tests;

pub use crate::decode::{ConfigError, ConfigErrors};
pub use daemon::{
    DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_STATE_DIR, DEFAULT_STATS_INTERVAL, DaemonConfig,
};

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::decode::{Entry, Errors, decode, find_key};
use crate::listen::settings::Limits;
use crate::listen::{ListenerConfig, ListenerKind};
use crate::output::{OutputConfig, OutputKind};
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
    /// `[[alert]]` in order.
    pub alerts: Vec<Arc<crate::alert::AlertRule>>,
    /// The text it was read from, to place problems found later at their keys.
    text: Arc<str>,
}

/// What `--check-config` found outside the config text itself.
#[derive(Debug, Default)]
pub struct EnvironmentCheck {
    /// Problems that would stop sluice from working, at their keys.
    pub errors: Vec<ConfigError>,
    /// Problems to fix soon (certificates about to expire).
    pub warnings: Vec<String>,
}

/// The parts of a configuration that validated, and the errors of the rest.
struct Loaded<'a> {
    errs: Errors<'a>,
    daemon: DaemonConfig,
    listeners: Vec<ListenerConfig>,
    outputs: Vec<OutputConfig>,
    routes: Vec<Rule>,
    alerts: Vec<Arc<crate::alert::AlertRule>>,
}

impl Config {
    /// Parses and validates configuration text. `file` names it in error messages. Nothing
    /// outside the text is looked at but user and group names.
    pub fn from_toml_str(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        let loaded = read(text, file);
        finish(loaded, text, file, |_| EnvironmentCheck::default()).map(|(c, _)| c)
    }

    /// [`Config::from_toml_str`], plus every check of what the config needs from the machine,
    /// run on each listener and output that validated even when others did not: every problem
    /// in one run. Warnings (certificates about to expire) come back beside the config.
    pub fn load(text: &str, file: &str) -> Result<(Config, Vec<String>), ConfigErrors> {
        let loaded = read(text, file);
        finish(loaded, text, file, |l| {
            environment(&l.daemon, &l.listeners, &l.outputs, text, file)
        })
    }

    /// The embedded default configuration.
    pub fn embedded_default() -> Config {
        Config::from_toml_str(EMBEDDED_DEFAULT, "<embedded default>")
            .unwrap_or_else(|e| unreachable!("embedded default config is invalid: {e}"))
    }

    /// Checks what needs the file system but not sockets: output directories can be created,
    /// unix socket directories exist, certificates load. Run as the user sluice runs as.
    pub fn check_environment(&self) -> EnvironmentCheck {
        environment(
            &self.daemon,
            &self.listeners,
            &self.outputs,
            &self.text,
            &self.origin,
        )
    }
}

/// Every key the configuration accepts, as paths: `daemon.state_dir`, `listen.*.address`,
/// `listen.*.rate_limit.burst`, `output.*.queue.kind`, `route.selector`, ... (`*` stands for
/// a listener or output name). Inline tables appear both as themselves and with each key. The
/// list comes from the code that reads them.
pub fn known_keys() -> Vec<String> {
    let mut keys = BTreeSet::new();
    for f in crate::decode::keys::fields::<daemon::RawDaemon>() {
        keys.insert(format!("daemon.{f}"));
    }
    for kind in ListenerKind::NAMES {
        keys.insert("listen.*.kind".to_string());
        keys.extend(
            ListenerKind::keys_of(kind)
                .into_iter()
                .map(|k| format!("listen.*.{k}")),
        );
    }
    for kind in OutputKind::NAMES {
        keys.insert("output.*.kind".to_string());
        keys.extend(
            OutputKind::keys_of(kind)
                .into_iter()
                .map(|k| format!("output.*.{k}")),
        );
    }
    for f in crate::decode::keys::fields::<route::RawRoute>() {
        keys.insert(format!("route.{f}"));
    }
    for f in crate::alert::known_keys() {
        keys.insert(format!("alert.{f}"));
    }
    keys.into_iter().collect()
}

/// The top-level tables of a file, sorted out: `[daemon]`, the named entries of `[listen]` and
/// `[output]`, and the `[[route]]` array.
struct Sections<'t, 'i> {
    daemon: daemon::RawDaemon,
    listen: Vec<(String, &'t Spanned<DeValue<'i>>)>,
    output: Vec<(String, &'t Spanned<DeValue<'i>>)>,
    routes: Vec<(usize, std::ops::Range<usize>, route::RawRoute)>,
    alerts: Option<&'t Spanned<DeValue<'i>>>,
}

/// Reads and validates the text: the parts that validated, and every error.
fn read<'a>(text: &'a str, file: &'a str) -> Loaded<'a> {
    let mut errs = Errors::new(file, text);
    let root = match DeTable::parse(text) {
        Ok(t) => t,
        Err(e) => {
            errs.at(e.span().unwrap_or(0..0), "", e.message().trim().to_string());
            let daemon = daemon::RawDaemon::default().validate(&mut Errors::new(file, text));
            return Loaded {
                errs,
                daemon,
                listeners: Vec::new(),
                outputs: Vec::new(),
                routes: Vec::new(),
                alerts: Vec::new(),
            };
        }
    };
    let sections = sections(&mut errs, &root);
    let daemon = sections.daemon.validate(&mut errs);
    let listeners = read_listeners(&mut errs, &sections.listen, &root);
    // Every declared output is indexed, valid or not, so a route naming a broken output is not
    // also reported as naming a missing one.
    let output_index: HashMap<String, usize> = (sections.output.iter().enumerate())
        .map(|(i, (name, _))| (name.clone(), i))
        .collect();
    let outputs = read_outputs(&mut errs, &sections.output);
    check_dead_letters(&mut errs, &outputs, &output_index, &root);
    let mut listener_names: Vec<&str> = listeners.iter().map(|l| &*l.name).collect();
    // Routes may name the internal listener alert events enter on.
    if let Some(name) = &daemon.alert_listener {
        if listener_names.contains(&name.as_str()) {
            let span = locate(&root, "daemon.alert_listener").unwrap_or(0..0);
            errs.at(
                span,
                "daemon.alert_listener",
                format!("[listen.{name}] already has this name"),
            );
        } else {
            listener_names.push(name);
        }
    }
    let routes: Vec<Rule> = (sections.routes.into_iter())
        .filter_map(|(i, span, raw)| {
            route::validate_route(&mut errs, i, span, raw, &output_index, &listener_names)
        })
        .collect();
    let alerts = sections.alerts.map_or_else(Vec::new, |v| {
        crate::alert::decode_rules(
            &mut errs,
            v,
            &output_index,
            &listener_names,
            &daemon.state_dir,
        )
        .into_iter()
        .map(Arc::new)
        .collect()
    });
    Loaded {
        errs,
        daemon,
        listeners,
        outputs,
        routes,
        alerts,
    }
}

/// Sorts the file's top-level tables out, reporting what is not one of them.
fn sections<'t, 'i>(errs: &mut Errors<'_>, root: &'t Spanned<DeTable<'i>>) -> Sections<'t, 'i> {
    let mut found = Sections {
        daemon: daemon::RawDaemon::default(),
        listen: Vec::new(),
        output: Vec::new(),
        routes: Vec::new(),
        alerts: None,
    };
    for (k, v) in root.get_ref().iter() {
        let name = k.get_ref().as_ref();
        match (name, v.get_ref()) {
            ("daemon", _) => {
                if let Some(d) = decode::<daemon::RawDaemon>(errs, "daemon", v) {
                    found.daemon = d;
                }
            }
            ("listen" | "output", DeValue::Table(t)) => {
                for (ek, ev) in t.iter() {
                    let ename = ek.get_ref().to_string();
                    if !valid_name(&ename) {
                        errs.at(
                            ek.span(),
                            format!("{name}.{ename}"),
                            "names may use only letters, digits, '_' and '-'",
                        );
                    }
                    let list = if name == "listen" {
                        &mut found.listen
                    } else {
                        &mut found.output
                    };
                    list.push((ename, ev));
                }
            }
            ("listen" | "output", _) => errs.at(
                v.span(),
                name,
                format!("expected a table of named [{name}.NAME] entries"),
            ),
            ("route", DeValue::Array(a)) => {
                for (i, rv) in a.iter().enumerate() {
                    if let Some(r) = decode::<route::RawRoute>(errs, &format!("route[{i}]"), rv) {
                        found.routes.push((i, rv.span(), r));
                    }
                }
            }
            ("route", _) => errs.at(
                v.span(),
                "route",
                "expected [[route]] entries (an array of tables)",
            ),
            ("alert", _) => found.alerts = Some(v),
            _ => errs.at(
                k.span(),
                name,
                "unknown key (expected daemon, listen, output, route or alert)",
            ),
        }
    }
    // Sorted by name: routes refer to outputs by index, and the order does not depend on the
    // TOML map's.
    found.listen.sort_by(|a, b| a.0.cmp(&b.0));
    found.output.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// The listeners that validated; every problem of the others, and clashing endpoints, reported.
fn read_listeners(
    errs: &mut Errors<'_>,
    entries: &[(String, &Spanned<DeValue<'_>>)],
    root: &Spanned<DeTable<'_>>,
) -> Vec<ListenerConfig> {
    let listener_keys: BTreeSet<String> = (ListenerKind::NAMES.iter())
        .flat_map(|k| ListenerKind::keys_of(k))
        .collect();
    let mut listeners = Vec::new();
    // Every listener's endpoint, valid or not, for the clash check.
    let mut endpoints = Vec::new();
    for (name, value) in entries {
        let Some(mut entry) = entry(errs, format!("listen.{name}"), value) else {
            continue;
        };
        let before = errs.count();
        let limits = Limits::decode(&mut entry, errs);
        let kind = ListenerKind::decode(&mut entry, errs);
        let endpoint = match &kind {
            Some(k) => Some(k.endpoint()),
            None => ListenerKind::endpoint_of(&mut Entry::new(
                entry.path.clone(),
                entry.kind.clone(),
                value,
            )),
        };
        endpoints.extend(endpoint.map(|e| (name.clone(), e)));
        entry.finish(errs, |k| listener_keys.contains(k));
        if let (Some(limits), Some(kind), true) = (limits, kind, errs.count() == before) {
            listeners.push(ListenerConfig {
                name: name.as_str().into(),
                limits,
                kind,
            });
        }
    }
    check_duplicate_endpoints(errs, &endpoints, root);
    listeners
}

/// The outputs that validated; every problem of the others reported.
fn read_outputs(
    errs: &mut Errors<'_>,
    entries: &[(String, &Spanned<DeValue<'_>>)],
) -> Vec<OutputConfig> {
    let output_keys: BTreeSet<String> = (OutputKind::NAMES.iter())
        .flat_map(|k| OutputKind::keys_of(k))
        .collect();
    let mut outputs = Vec::new();
    for (name, value) in entries {
        let Some(mut entry) = entry(errs, format!("output.{name}"), value) else {
            continue;
        };
        let before = errs.count();
        let output = OutputKind::decode_output(name, &mut entry, errs);
        entry.finish(errs, |k| output_keys.contains(k));
        if let (Some(o), true) = (output, errs.count() == before) {
            outputs.push(o);
        }
    }
    outputs
}

/// An entry of `[listen]` or `[output]`, with its `kind` read.
fn entry<'t, 'i>(
    errs: &mut Errors<'_>,
    path: String,
    value: &'t Spanned<DeValue<'i>>,
) -> Option<Entry<'t, 'i>> {
    let DeValue::Table(t) = value.get_ref() else {
        errs.at(value.span(), path, "expected a table");
        return None;
    };
    let kind = match t.iter().find(|(k, _)| k.get_ref().as_ref() == "kind") {
        Some((_, v)) => match v.get_ref() {
            DeValue::String(s) => Spanned::new(v.span(), s.to_string()),
            _ => {
                errs.at(
                    v.span(),
                    format!("{path}.kind"),
                    "expected a string, like kind = \"udp\"",
                );
                return None;
            }
        },
        None => {
            errs.at(
                value.span(),
                format!("{path}.kind"),
                "missing: every entry needs a kind",
            );
            return None;
        }
    };
    Some(Entry::new(path, kind, value))
}

/// The config, or every error (the text's and the environment's), sorted by position.
fn finish(
    loaded: Loaded<'_>,
    text: &str,
    file: &str,
    environment: impl FnOnce(&Loaded<'_>) -> EnvironmentCheck,
) -> Result<(Config, Vec<String>), ConfigErrors> {
    let check = environment(&loaded);
    let Loaded {
        mut errs,
        daemon,
        listeners,
        outputs,
        routes,
        alerts,
    } = loaded;
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
    errs.list.extend(check.errors);
    if errs.list.is_empty() {
        return Ok((
            Config {
                origin: file.to_string(),
                daemon,
                listeners,
                outputs,
                routes,
                alerts,
                text: text.into(),
            },
            check.warnings,
        ));
    }
    errs.list.sort_by_key(|e| (e.line, e.col));
    Err(ConfigErrors(errs.list))
}

/// The environment checks of every listener and output given, each problem at its key.
fn environment(
    daemon: &DaemonConfig,
    listeners: &[ListenerConfig],
    outputs: &[OutputConfig],
    text: &str,
    file: &str,
) -> EnvironmentCheck {
    let mut problems = Vec::new();
    let mut tls = crate::tls::FileCheck::default();
    for l in listeners {
        l.kind
            .check_environment(&format!("listen.{}", l.name), &mut problems, &mut tls);
    }
    for o in outputs {
        o.check_environment(&daemon.state_dir, &mut problems, &mut tls);
    }
    problems.extend(tls.errors);
    let root = DeTable::parse(text).ok();
    let errors = problems
        .into_iter()
        .map(|p| {
            // Problems are `KEY: what`; a key path has no ": ".
            let (key, message) = p.split_once(": ").unwrap_or(("", &p));
            let (line, col) = root
                .as_ref()
                .and_then(|r| locate(r, key))
                .map_or((0, 0), |span| crate::decode::line_col(text, span.start));
            ConfigError {
                file: file.to_string(),
                line,
                col,
                key: key.to_string(),
                message: message.to_string(),
            }
        })
        .collect();
    EnvironmentCheck {
        errors,
        warnings: tls
            .warnings
            .into_iter()
            .map(|w| format!("{file}: {w}"))
            .collect(),
    }
}

/// Where the value of dotted key path `key` is in the text; for a key not given (a default),
/// where the deepest table on its path is.
fn locate(root: &Spanned<DeTable<'_>>, key: &str) -> Option<std::ops::Range<usize>> {
    let (section, rest) = key.split_once('.')?;
    let (name, inner) = rest.split_once('.').unwrap_or((rest, ""));
    let (_, sec) = root
        .get_ref()
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == section)?;
    let DeValue::Table(t) = sec.get_ref() else {
        return None;
    };
    let (name_key, table) = t.iter().find(|(k, _)| k.get_ref().as_ref() == name)?;
    if inner.is_empty() {
        return Some(name_key.span());
    }
    let mut path = inner;
    loop {
        if let Some((_, value)) = find_key(table, path) {
            return Some(value.span());
        }
        match path.rsplit_once('.') {
            Some((parent, _)) => path = parent,
            None => return Some(name_key.span()),
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A `dead_letter` names another declared output, one without a dead-letter output of its own
/// (a refusal goes one hop, never in circles).
fn check_dead_letters(
    errs: &mut Errors<'_>,
    outputs: &[OutputConfig],
    declared: &HashMap<String, usize>,
    root: &Spanned<DeTable<'_>>,
) {
    for o in outputs {
        let Some(target) = o.kind.dead_letter() else {
            continue;
        };
        let why = if target == &*o.name {
            Some("cannot be the output itself".to_string())
        } else if !declared.contains_key(target) {
            let mut known: Vec<&str> = declared.keys().map(String::as_str).collect();
            known.sort_unstable();
            Some(format!(
                "no output named {target:?} (defined: {})",
                known.join(", ")
            ))
        } else if outputs
            .iter()
            .any(|t| &*t.name == target && t.kind.dead_letter().is_some())
        {
            Some(format!(
                "output {target:?} has a dead_letter of its own: refusals go one hop only"
            ))
        } else {
            None
        };
        if let Some(why) = why {
            let key = format!("output.{}.dead_letter", o.name);
            let span = locate(root, &key).unwrap_or(0..0);
            errs.at(span, key, why);
        }
    }
}

/// Two listeners on one endpoint cannot both run: the later one (by name) is reported, at the
/// key that gives its endpoint.
fn check_duplicate_endpoints(
    errs: &mut Errors<'_>,
    endpoints: &[(String, crate::listen::Endpoint)],
    root: &Spanned<DeTable<'_>>,
) {
    for (i, (name, mine)) in endpoints.iter().enumerate() {
        let Some((other, _)) = endpoints[..i].iter().find(|(_, e)| e.clashes_with(mine)) else {
            continue;
        };
        let key = match mine {
            crate::listen::Endpoint::Udp(_) | crate::listen::Endpoint::Tcp(_) => "address",
            crate::listen::Endpoint::Unix { .. } | crate::listen::Endpoint::Kmsg(_) => "path",
            crate::listen::Endpoint::Files(_) => "paths",
        };
        let key = format!("listen.{name}.{key}");
        let span = locate(root, &key).unwrap_or(0..0);
        errs.at(
            span,
            key,
            format!("binds the same {mine} as listen.{other}"),
        );
    }
}
