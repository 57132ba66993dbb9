//! `sluice --check-config --explain`: what the running daemon would do with one message, as
//! text. Parses the sample as a listener would (cut to its `max_message_size`, received now, from
//! an unknown sender), then asks [`RuleTable::explain`] rule by rule, and each `[[alert]]` rule
//! whether the message feeds it. Pure apart from the clock.

use std::fmt::Write as _;

use bytes::Bytes;

use crate::config::Config;
use crate::event::{Event, ListenerName};
use crate::listen::{ListenerConfig, ListenerKind};
use crate::output::format::Format;
use crate::parse::{ParseOptions, parse};
use crate::route::{Outcome, RuleTable, outputs_of};

/// Explains one sample read by `listener`: the parsed event as the `json` format writes it, one
/// line per route, and the outputs it reaches.
pub fn explain(config: &Config, listener: &ListenerConfig, sample: &[u8]) -> String {
    // As the listener would parse it: now, in its time zone.
    let opts = ParseOptions::new(chrono::Utc::now(), listener.limits.timezone);
    let (frame, parsed, truncated) = match listener.kind {
        // A kernel record, rewritten as the kmsg listener does.
        ListenerKind::Kmsg { .. } => {
            let c = crate::parse::kmsg::convert(
                sample,
                &crate::parse::kmsg::BootClock::now(),
                crate::output::format::local_hostname(),
                &opts,
                listener.limits.max_message_size,
                &mut Vec::new(),
            );
            (c.frame, c.parsed, c.truncated)
        }
        _ => {
            let frame = Bytes::copy_from_slice(
                &sample[..sample.len().min(listener.limits.max_message_size)],
            );
            (
                frame.clone(),
                parse(&frame, &opts),
                sample.len() > listener.limits.max_message_size,
            )
        }
    };
    let ev = Event {
        parsed,
        raw: frame,
        received_at: opts.received_at(),
        source: None,
        listener: ListenerName::new(&listener.name),
        tls_peer: None,
        truncated,
    };
    let mut json = Vec::new();
    Format::Json.write_line(&ev, &mut json);
    let name = |i: usize| config.outputs.get(i).map_or("?", |o| &*o.name);
    let names = |to: &[usize]| to.iter().map(|&i| name(i)).collect::<Vec<_>>().join(", ");

    let mut out = String::new();
    let _ = writeln!(
        out,
        "listener {:?} ({}); sender address unknown, so `source` matchers do not match",
        &*listener.name,
        listener.kind.name()
    );
    out.push_str("event: ");
    out.push_str(&String::from_utf8_lossy(&json));
    let decisions = RuleTable::new(config.routes.clone()).explain(&ev);
    for d in &decisions {
        let verdict = match &d.outcome {
            Outcome::Matched if d.stop => {
                format!("matched -> {}; stop = true ended evaluation", names(&d.to))
            }
            Outcome::Matched => format!("matched -> {}", names(&d.to)),
            Outcome::NotMatched { reason, .. } => format!("no match: {reason}"),
            Outcome::NotEvaluated { stopped_by } => {
                format!("not evaluated: route[{stopped_by}] has stop = true")
            }
        };
        let _ = writeln!(out, "route[{}]: {verdict}", d.index);
    }
    let reached = outputs_of(&decisions);
    if reached.is_empty() {
        out.push_str("outputs: none (unrouted)\n");
    } else {
        let _ = writeln!(out, "outputs: {}", names(&reached));
    }
    explain_alerts(config, &ev, &mut out);
    out
}

/// One line per `[[alert]]` rule: whether the message feeds it (counted, or only in a ratio's
/// total) and, if not, the first matcher it failed; then the rules it feeds.
fn explain_alerts(config: &Config, ev: &Event, out: &mut String) {
    if config.alerts.is_empty() {
        return;
    }
    let mut fed = Vec::new();
    for a in &config.alerts {
        let verdict = match a.matchers.check(ev) {
            Ok(()) => {
                fed.push(&*a.name);
                "counted".to_string()
            }
            Err(why) => match a.total.as_ref().map(|t| t.check(ev)) {
                Some(Ok(())) => {
                    fed.push(&*a.name);
                    "counted in the total only".to_string()
                }
                _ => format!("not fed: {}", a.matchers.explain_mismatch(why, ev)),
            },
        };
        let _ = writeln!(out, "alert {:?}: {verdict}", &*a.name);
    }
    if fed.is_empty() {
        out.push_str("alerts: none\n");
    } else {
        let _ = writeln!(out, "alerts: {}", fed.join(", "));
    }
}
