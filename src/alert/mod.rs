//! `[[alert]]` rules: alerts raised from the stream itself, as messages arrive.
//!
//! - [`AlertRule`]: one rule as configured (matchers shared with `[[route]]`, read by
//!   [`decode_rules`]);
//! - [`feed`]: what a listener's dispatcher does on the hot path: checks whether an event
//!   feeds any rule (`Rule::check`, no lock) and hands those events, a batch per flush, to
//!   the engine's bounded queue, which drops and counts when full;
//! - [`engine`]: the rules' state (windows, groups, histories, pattern tables), in simulated
//!   or real time: it is given `now` at every call, so tests drive it with a clock of their own;
//! - [`thread`]: the engine's thread, which turns firings and resolutions into events
//!   ([`notice`]) for the rule's `to` outputs and the internal listener;
//! - [`pattern`]: message templates for `new_pattern`;
//! - [`baseline`]: `--learn-baseline` and the rules that compare against it.

pub mod baseline;
pub mod engine;
pub mod feed;
pub mod notice;
pub mod pattern;
pub mod thread;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;

use crate::config::route::{RawMatchers, compile_matchers, targets};
use crate::decode::{Errors, NumOrStr, OneOrMany, choice, duration_opt};
use crate::event::{Event, Span};
use crate::route::{Rule, Selector};

/// Default `window`.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Default `max_groups`.
pub const DEFAULT_MAX_GROUPS: usize = 1000;
/// Default `threshold` of a z-score rule (the reference detector's).
pub const DEFAULT_THRESHOLD: f64 = 3.0;
/// Default `history` of a z-score rule, in windows.
pub const DEFAULT_HISTORY: usize = 100;
/// Default `min_events`.
pub const DEFAULT_MIN_EVENTS: u64 = 10;
/// Past values a z-score needs before it judges (the reference detector's 5).
pub const MIN_HISTORY: usize = 5;
/// Default `warmup_events` of a new-pattern rule.
pub const DEFAULT_WARMUP_EVENTS: u64 = 1000;
/// Default `max_patterns` of a new-pattern rule.
pub const DEFAULT_MAX_PATTERNS: usize = 10_000;
/// Default `resend_interval`: how often a firing alert is sent again to Alertmanager
/// (Prometheus' `resend_delay`).
pub const DEFAULT_RESEND: Duration = Duration::from_secs(60);

/// One `[[alert]]`.
#[derive(Debug, Clone)]
pub struct AlertRule {
    /// `name`: the `alertname` label.
    pub name: Arc<str>,
    /// What is measured and when it is an anomaly.
    pub kind: AlertKind,
    /// The events the rule counts: its selector and matchers, as a route's.
    pub matchers: Rule,
    /// For ratios: the events the count is divided by (`total_selector` with the same
    /// matchers otherwise).
    pub total: Option<Rule>,
    /// `by`: the fields an alert is kept per group of.
    pub by: Vec<GroupField>,
    /// `window`: the span events are counted over; rules are judged when one ends.
    pub window: Duration,
    /// `for`: how long the condition must hold before the alert fires.
    pub hold: Duration,
    /// `max_groups`: groups kept at once; events of more groups are refused and counted.
    pub max_groups: usize,
    /// `severity`: the `severity` label (z-score rules otherwise say `warning` or `critical`).
    pub severity: Option<String>,
    /// `to`: output indices (into `Config::outputs`).
    pub to: Vec<usize>,
    /// `resend_interval`: how often a firing alert is sent again to `alertmanager` outputs.
    pub resend: Duration,
}

/// What a rule measures.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertKind {
    /// Events per window against thresholds.
    Rate {
        /// Fires when more than this.
        above: Option<f64>,
        /// Fires when fewer than this (a group that went silent).
        below: Option<f64>,
    },
    /// Matched events / `total` events per window.
    Ratio {
        /// Fires when the ratio is above this.
        above: Option<f64>,
        /// Fires when the ratio is below this.
        below: Option<f64>,
        /// Windows with fewer `total` events are not judged.
        min_events: u64,
    },
    /// The rolling z-score of the rate or the ratio.
    Zscore {
        /// Rate or ratio.
        series: Series,
        /// |z| above this is an anomaly.
        threshold: f64,
        /// Past windows kept.
        history: usize,
        /// Windows with fewer events are not judged.
        min_events: u64,
        /// Spikes, drops or both.
        direction: Direction,
    },
    /// The first sight of a message template, after a warm-up.
    NewPattern {
        /// First sights among the first this many events only learn.
        warmup_events: u64,
        /// Templates remembered.
        max_patterns: usize,
        /// `state_dir` file the table is kept in across restarts.
        state_file: Option<PathBuf>,
    },
    /// Rate and error ratio against a baseline `--learn-baseline` wrote.
    Baseline {
        /// The baseline's file.
        file: PathBuf,
        /// Its content, read when the config was loaded.
        baseline: Arc<baseline::Baseline>,
        /// Windows with fewer events are not judged on their error ratio.
        min_events: u64,
    },
}

/// The series a z-score rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    /// Events per window.
    Rate,
    /// Matched / total events per window.
    Ratio,
}

/// Which side of the mean alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Spikes and drops.
    Both,
    /// Spikes only.
    Above,
    /// Drops only.
    Below,
}

/// A field an alert can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupField {
    /// HOSTNAME.
    Hostname,
    /// APP-NAME.
    AppName,
    /// MSGID.
    MsgId,
    /// The facility's name.
    Facility,
    /// The severity's name.
    Severity,
    /// The listener's name.
    Listener,
    /// The sender's IP address.
    Source,
}

impl GroupField {
    const ALL: [(&'static str, GroupField); 7] = [
        ("hostname", GroupField::Hostname),
        ("app_name", GroupField::AppName),
        ("msgid", GroupField::MsgId),
        ("facility", GroupField::Facility),
        ("severity", GroupField::Severity),
        ("listener", GroupField::Listener),
        ("source", GroupField::Source),
    ];

    /// Its name, as in `by` and as the alert's label.
    pub fn name(self) -> &'static str {
        GroupField::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("", |(n, _)| n)
    }

    /// Its value in `ev` (`""` when absent).
    pub fn value(self, ev: &Event) -> String {
        let mut b = Vec::new();
        self.write_value(ev, &mut b);
        String::from_utf8_lossy(&b).into_owned()
    }

    /// Appends its value to `out` (nothing when absent), without allocating: the header
    /// fields' bytes as received (absent unless UTF-8, as the `&str` accessors read them).
    pub fn write_value(self, ev: &Event, out: &mut Vec<u8>) {
        if let Some(span) = self.span(ev) {
            out.extend_from_slice(span.slice(&ev.raw));
            return;
        }
        match self {
            GroupField::Facility => out.extend_from_slice(ev.facility().name().as_bytes()),
            GroupField::Severity => out.extend_from_slice(ev.severity().name().as_bytes()),
            GroupField::Listener => out.extend_from_slice(ev.listener.as_bytes()),
            GroupField::Source => {
                if let Some(s) = ev.source {
                    use std::io::Write as _;
                    let _ = write!(out, "{}", s.ip());
                }
            }
            GroupField::Hostname | GroupField::AppName | GroupField::MsgId => {}
        }
    }

    /// Where its value lies in `ev.raw` (empty when absent or not UTF-8, as the `&str`
    /// accessors read them), for the header fields; `None` for the others.
    #[inline]
    pub fn span(self, ev: &Event) -> Option<Span> {
        let span = self.raw_span(ev)?;
        Some(match is_text(span.slice(&ev.raw)) {
            true => span,
            false => Span::default(),
        })
    }

    /// Where its bytes lie in `ev.raw`, UTF-8 or not (empty when absent), for the header
    /// fields; `None` for the others. Equal bytes make equal values.
    #[inline]
    pub fn raw_span(self, ev: &Event) -> Option<Span> {
        let span = match self {
            GroupField::Hostname => ev.parsed.hostname,
            GroupField::AppName => ev.parsed.app_name,
            GroupField::MsgId => ev.parsed.msgid,
            GroupField::Facility
            | GroupField::Severity
            | GroupField::Listener
            | GroupField::Source => return None,
        };
        Some(span.unwrap_or_default())
    }
}

/// The 8 bytes of `s` from `at` as a word, in memory order (the first byte lowest).
pub(crate) fn word(s: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(s[at..at + 8].try_into().unwrap_or([0; 8]))
}

/// `a == b`: below 64 bytes a word at a time in Rust rather than through libc's `memcmp`. The
/// engine compares a group key or a template per rule and message; glibc picks its AVX-512
/// `memcmp` on this project's machines (AMD EPYC), and on a few bytes that took 43% of the
/// engine's time on loadgen's stream (`cargo bench --bench alert`, with `GLIBC_TUNABLES`
/// turning it off: 7.5 ms to 3.7-4.8 ms per 20,000 messages).
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        // Two overlapping reads cover every byte.
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        17..64 => {
            let mut at = 0;
            while at + 8 < n {
                if word(a, at) != word(b, at) {
                    return false;
                }
                at += 8;
            }
            word(a, n - 8) == word(b, n - 8)
        }
        // Templates: long enough for libc's wide compare to pay (a last template compared
        // again was 161 instructions a message of 256 bytes, a word per step).
        _ => a == b,
    }
}

/// The 4 bytes of `s` from `at`, in memory order.
fn half(s: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(s[at..at + 4].try_into().unwrap_or([0; 4]))
}

/// Whether `s` is UTF-8: `is_ascii` first, by overlapping reads below 17 bytes (a host or
/// program name; std's byte loop was about 35 instructions for one, 3 per event).
fn is_text(s: &[u8]) -> bool {
    let n = s.len();
    let ascii = match n {
        0 => true,
        1..=3 => (s[0] | s[n / 2] | s[n - 1]) < 0x80,
        4..=7 => (half(s, 0) | half(s, n - 4)) & 0x8080_8080 == 0,
        8..=16 => (word(s, 0) | word(s, n - 8)) & 0x8080_8080_8080_8080 == 0,
        _ => s.is_ascii(),
    };
    ascii || std::str::from_utf8(s).is_ok()
}

/// `[[alert]]` as read.
#[derive(Deserialize, Default)]
pub(crate) struct RawAlert {
    name: Option<Spanned<String>>,
    kind: Option<Spanned<String>>,
    selector: Option<Spanned<String>>,
    listener: Option<Spanned<OneOrMany>>,
    hostname: Option<Spanned<toml::Value>>,
    app_name: Option<Spanned<toml::Value>>,
    message: Option<Spanned<toml::Value>>,
    tls_peer: Option<Spanned<toml::Value>>,
    source: Option<Spanned<OneOrMany>>,
    total_selector: Option<Spanned<String>>,
    by: Option<Spanned<OneOrMany>>,
    window: Option<Spanned<NumOrStr>>,
    #[serde(rename = "for")]
    hold: Option<Spanned<NumOrStr>>,
    above: Option<Spanned<f64>>,
    below: Option<Spanned<f64>>,
    threshold: Option<Spanned<f64>>,
    history: Option<Spanned<i64>>,
    min_events: Option<Spanned<i64>>,
    series: Option<Spanned<String>>,
    direction: Option<Spanned<String>>,
    warmup_events: Option<Spanned<i64>>,
    max_patterns: Option<Spanned<i64>>,
    baseline: Option<Spanned<String>>,
    max_groups: Option<Spanned<i64>>,
    severity: Option<Spanned<String>>,
    resend_interval: Option<Spanned<NumOrStr>>,
    to: Option<Spanned<OneOrMany>>,
}

/// The rule kinds, as `kind = "..."` spells them.
pub const KINDS: [&str; 5] = ["rate", "ratio", "zscore", "new_pattern", "baseline"];

/// The keys only some kinds take, with those kinds.
const KIND_KEYS: &[(&str, &[&str])] = &[
    ("total_selector", &["ratio", "zscore"]),
    ("above", &["rate", "ratio"]),
    ("below", &["rate", "ratio"]),
    ("threshold", &["zscore"]),
    ("history", &["zscore"]),
    ("min_events", &["ratio", "zscore", "baseline"]),
    ("series", &["zscore"]),
    ("direction", &["zscore"]),
    ("warmup_events", &["new_pattern"]),
    ("max_patterns", &["new_pattern"]),
    ("baseline", &["baseline"]),
    ("by", &["rate", "ratio", "zscore", "baseline"]),
];

/// The keys `[[alert]]` accepts, for `config::known_keys`.
pub fn known_keys() -> Vec<&'static str> {
    crate::decode::keys::fields::<RawAlert>().to_vec()
}

/// Reads the `[[alert]]` array: every rule that validated; each problem reported at its key.
pub(crate) fn decode_rules(
    errs: &mut Errors<'_>,
    value: &Spanned<DeValue<'_>>,
    outputs: &HashMap<String, usize>,
    listeners: &[&str],
    state_dir: &std::path::Path,
) -> Vec<AlertRule> {
    let DeValue::Array(a) = value.get_ref() else {
        errs.at(
            value.span(),
            "alert",
            "expected [[alert]] entries (an array of tables)",
        );
        return Vec::new();
    };
    let mut rules: Vec<AlertRule> = Vec::new();
    for (i, v) in a.iter().enumerate() {
        let p = format!("alert[{i}]");
        let Some(raw) = crate::decode::decode::<RawAlert>(errs, &p, v) else {
            continue;
        };
        if let Some(rule) = validate(errs, &p, v, &raw, outputs, listeners, state_dir) {
            if rules.iter().any(|r| r.name == rule.name) {
                let span = raw.name.as_ref().map_or(v.span(), |n| n.span());
                errs.at(span, format!("{p}.name"), "another [[alert]] has this name");
                continue;
            }
            rules.push(rule);
        }
    }
    rules
}

fn validate(
    errs: &mut Errors<'_>,
    p: &str,
    v: &Spanned<DeValue<'_>>,
    raw: &RawAlert,
    outputs: &HashMap<String, usize>,
    listeners: &[&str],
    state_dir: &std::path::Path,
) -> Option<AlertRule> {
    let before = errs.count();
    let name = match &raw.name {
        None => {
            errs.at(
                v.span(),
                format!("{p}.name"),
                "missing: every alert needs a name (its alertname label)",
            );
            None
        }
        Some(n) if !valid_alert_name(n.get_ref()) => {
            errs.at(
                n.span(),
                format!("{p}.name"),
                "must be 1 to 64 letters, digits, '_' or '-'",
            );
            None
        }
        Some(n) => Some(Arc::<str>::from(n.get_ref().as_str())),
    };
    let kind_name = match &raw.kind {
        None => {
            errs.at(
                v.span(),
                format!("{p}.kind"),
                format!("missing: one of {}", KINDS.join(", ")),
            );
            None
        }
        Some(k) if !KINDS.contains(&k.get_ref().as_str()) => {
            errs.at(
                k.span(),
                format!("{p}.kind"),
                format!(
                    "unknown alert kind {:?}: expected {}",
                    k.get_ref(),
                    KINDS.join(", ")
                ),
            );
            None
        }
        Some(k) => Some(k.get_ref().as_str()),
    };
    if let Some(kind) = kind_name {
        for (key, kinds) in KIND_KEYS {
            if !kinds.contains(&kind)
                && let Some(span) = crate::decode::find_key_span(v, key)
            {
                errs.at(
                    span,
                    format!("{p}.{key}"),
                    format!(
                        "not valid for kind = {kind:?} (only for {})",
                        kinds.join(", ")
                    ),
                );
            }
        }
    }
    let label = name.clone().unwrap_or_else(|| Arc::from(""));
    let matchers = compile_matchers(
        errs,
        p,
        label.clone(),
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
    let to = match &raw.to {
        Some(_) => targets(errs, p, v.span(), &raw.to, outputs),
        None => Vec::new(),
    };
    let by = raw.by.as_ref().map_or_else(Vec::new, |b| {
        let mut fields = Vec::new();
        for f in b.get_ref().clone().into_vec() {
            match GroupField::ALL.iter().find(|(n, _)| *n == f) {
                Some((_, g)) if !fields.contains(g) => fields.push(*g),
                Some(_) => {}
                None => errs.at(
                    b.span(),
                    format!("{p}.by"),
                    format!(
                        "unknown field {f:?}: expected {}",
                        GroupField::ALL.map(|(n, _)| n).join(", ")
                    ),
                ),
            }
        }
        fields
    });
    let window = positive_duration(errs, p, "window", &raw.window).unwrap_or(DEFAULT_WINDOW);
    let hold = duration_opt(errs, &format!("{p}.for"), &raw.hold).unwrap_or_default();
    let resend = positive_duration(errs, p, "resend_interval", &raw.resend_interval)
        .unwrap_or(DEFAULT_RESEND);
    let max_groups =
        count(errs, p, "max_groups", &raw.max_groups, 1).map_or(DEFAULT_MAX_GROUPS, |n| n as usize);
    let min_events = count(errs, p, "min_events", &raw.min_events, 0).unwrap_or(DEFAULT_MIN_EVENTS);
    let severity = raw.severity.as_ref().and_then(|s| {
        if s.get_ref().is_empty() || s.get_ref().len() > 64 {
            errs.at(
                s.span(),
                format!("{p}.severity"),
                "must be 1 to 64 characters",
            );
            None
        } else {
            Some(s.get_ref().clone())
        }
    });
    let bounds = |errs: &mut Errors<'_>| {
        if raw.above.is_none() && raw.below.is_none() {
            errs.at(
                v.span(),
                format!("{p}.above"),
                "missing: give above, below or both",
            );
        }
        (
            raw.above.as_ref().map(|a| *a.get_ref()),
            raw.below.as_ref().map(|b| *b.get_ref()),
        )
    };
    let kind = match kind_name? {
        "rate" => {
            let (above, below) = bounds(errs);
            AlertKind::Rate { above, below }
        }
        "ratio" => {
            let (above, below) = bounds(errs);
            AlertKind::Ratio {
                above,
                below,
                min_events,
            }
        }
        "zscore" => {
            let threshold = match &raw.threshold {
                Some(t) if !(t.get_ref().is_finite() && *t.get_ref() > 0.0) => {
                    errs.at(t.span(), format!("{p}.threshold"), "must be more than 0");
                    DEFAULT_THRESHOLD
                }
                Some(t) => *t.get_ref(),
                None => DEFAULT_THRESHOLD,
            };
            let history = count(errs, p, "history", &raw.history, MIN_HISTORY as u64 + 1)
                .map_or(DEFAULT_HISTORY, |n| n as usize);
            let series = choice(
                errs,
                &format!("{p}.series"),
                &raw.series,
                "series",
                &[("rate", Series::Rate), ("ratio", Series::Ratio)],
                Series::Rate,
            );
            let direction = choice(
                errs,
                &format!("{p}.direction"),
                &raw.direction,
                "direction",
                &[
                    ("both", Direction::Both),
                    ("above", Direction::Above),
                    ("below", Direction::Below),
                ],
                Direction::Both,
            );
            if series == Series::Rate
                && let Some(t) = &raw.total_selector
            {
                errs.at(
                    t.span(),
                    format!("{p}.total_selector"),
                    "only for series = \"ratio\"",
                );
            }
            AlertKind::Zscore {
                series,
                threshold,
                history,
                min_events,
                direction,
            }
        }
        "new_pattern" => AlertKind::NewPattern {
            warmup_events: count(errs, p, "warmup_events", &raw.warmup_events, 0)
                .unwrap_or(DEFAULT_WARMUP_EVENTS),
            max_patterns: count(errs, p, "max_patterns", &raw.max_patterns, 1)
                .map_or(DEFAULT_MAX_PATTERNS, |n| n as usize),
            state_file: name
                .as_ref()
                .map(|n| state_dir.join(format!("alert-{n}.patterns"))),
        },
        "baseline" => {
            let Some(b) = &raw.baseline else {
                errs.at(
                    v.span(),
                    format!("{p}.baseline"),
                    "missing: the file sluice --learn-baseline wrote",
                );
                return None;
            };
            let file = PathBuf::from(b.get_ref());
            match baseline::Baseline::load(&file) {
                Ok(baseline) => AlertKind::Baseline {
                    file,
                    baseline: Arc::new(baseline),
                    min_events,
                },
                Err(e) => {
                    errs.at(
                        b.span(),
                        format!("{p}.baseline"),
                        format!("cannot read {}: {e}", file.display()),
                    );
                    return None;
                }
            }
        }
        _ => return None,
    };
    let uses_total = matches!(
        kind,
        AlertKind::Ratio { .. }
            | AlertKind::Zscore {
                series: Series::Ratio,
                ..
            }
    );
    let total = match (&matchers, uses_total) {
        (Some(m), true) => {
            let selector = match &raw.total_selector {
                None => None,
                Some(s) => match Selector::parse(s.get_ref()) {
                    Ok(sel) => Some(sel),
                    Err(msg) => {
                        errs.at(
                            s.span(),
                            format!("{p}.total_selector"),
                            format!("invalid selector {:?}: {msg}", s.get_ref()),
                        );
                        None
                    }
                },
            };
            Some(Rule {
                selector,
                ..m.clone()
            })
        }
        _ => None,
    };
    if errs.count() > before {
        return None;
    }
    Some(AlertRule {
        name: name?,
        kind,
        matchers: matchers?,
        total,
        by,
        window,
        hold,
        max_groups,
        severity,
        to,
        resend,
    })
}

fn valid_alert_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn positive_duration(
    errs: &mut Errors<'_>,
    p: &str,
    key: &str,
    v: &Option<Spanned<NumOrStr>>,
) -> Option<Duration> {
    crate::decode::positive_duration(errs, &format!("{p}.{key}"), v)
}

fn count(
    errs: &mut Errors<'_>,
    p: &str,
    key: &str,
    v: &Option<Spanned<i64>>,
    min: u64,
) -> Option<u64> {
    let v = v.as_ref()?;
    match u64::try_from(*v.get_ref()) {
        Ok(n) if n >= min => Some(n),
        _ => {
            errs.at(
                v.span(),
                format!("{p}.{key}"),
                format!("must be a whole number of at least {min}"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests;
