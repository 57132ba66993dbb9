//! `[[route]]` entries: selector, matchers and targets, compiled into [`Rule`]s.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use crate::decode::{Errors, OneOrMany, cidr_list};
use crate::route::{Matcher, Rule, Selector};

#[derive(Deserialize, Default)]
pub(super) struct RawRoute {
    name: Option<Spanned<String>>,
    selector: Option<Spanned<String>>,
    listener: Option<Spanned<OneOrMany>>,
    hostname: Option<Spanned<toml::Value>>,
    app_name: Option<Spanned<toml::Value>>,
    message: Option<Spanned<toml::Value>>,
    tls_peer: Option<Spanned<toml::Value>>,
    source: Option<Spanned<OneOrMany>>,
    to: Option<Spanned<OneOrMany>>,
    stop: Option<Spanned<bool>>,
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

/// The matcher keys `[[route]]` and `[[alert]]` share, as read.
pub(crate) struct RawMatchers<'r> {
    pub selector: &'r Option<Spanned<String>>,
    pub listener: &'r Option<Spanned<OneOrMany>>,
    pub hostname: &'r Option<Spanned<toml::Value>>,
    pub app_name: &'r Option<Spanned<toml::Value>>,
    pub message: &'r Option<Spanned<toml::Value>>,
    pub tls_peer: &'r Option<Spanned<toml::Value>>,
    pub source: &'r Option<Spanned<OneOrMany>>,
}

/// Compiles the matcher keys of the entry at key path `p` (`route[0]`, `alert[2]`) into a
/// [`Rule`] labelled `label`, with no targets; `None` when a key was reported.
pub(crate) fn compile_matchers(
    errs: &mut Errors<'_>,
    p: &str,
    label: Arc<str>,
    raw: RawMatchers<'_>,
    listeners: &[&str],
) -> Option<Rule> {
    let n_before = errs.list.len();
    let selector = match raw.selector {
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
    let hostname = matcher(errs, &format!("{p}.hostname"), raw.hostname, false);
    let app_name = matcher(errs, &format!("{p}.app_name"), raw.app_name, false);
    let message = matcher(errs, &format!("{p}.message"), raw.message, true);
    let tls_peer = matcher(errs, &format!("{p}.tls_peer"), raw.tls_peer, false);
    let source = raw
        .source
        .as_ref()
        .map(|s| cidr_list(errs, &format!("{p}.source"), s));
    if errs.list.len() > n_before {
        return None;
    }
    Some(Rule {
        label,
        selector,
        listener,
        hostname,
        app_name,
        message,
        tls_peer,
        source,
        to: Vec::new(),
        stop: false,
    })
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
    let label = match &raw.name {
        Some(n) if n.get_ref().is_empty() => {
            errs.at(n.span(), format!("{p}.name"), "must not be empty");
            None
        }
        Some(n) => Some(Arc::from(n.get_ref().as_str())),
        None => Some(Arc::from(index.to_string())),
    };
    let rule = compile_matchers(
        errs,
        &p,
        label.clone().unwrap_or_else(|| Arc::from("")),
        RawMatchers {
            selector: &raw.selector,
            listener: &raw.listener,
            hostname: &raw.hostname,
            app_name: &raw.app_name,
            message: &raw.message,
            tls_peer: &raw.tls_peer,
            source: &raw.source,
        },
        listeners,
    );
    let to = targets(errs, &p, span, &raw.to, outputs);
    if errs.list.len() > n_before {
        return None;
    }
    let mut rule = rule?;
    rule.to = to;
    rule.stop = raw.stop.as_ref().is_some_and(|s| *s.get_ref());
    Some(rule)
}

/// The outputs a route's (or alert's) `to` names, by index; each unknown name reported.
pub(crate) fn targets(
    errs: &mut Errors<'_>,
    p: &str,
    span: std::ops::Range<usize>,
    given: &Option<Spanned<OneOrMany>>,
    outputs: &HashMap<String, usize>,
) -> Vec<usize> {
    let mut to = Vec::new();
    match given {
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
    to
}
