//! Alerts as events, and events as alerts.
//!
//! A firing or a resolution becomes an RFC 5424 event ([`to_event`]) whose `alert@32473`
//! structured-data element carries everything a receiver needs: `alertname`, `state`
//! (`firing` or `resolved`), `severity`, `summary`, `value`, `expected`, `startsAt`,
//! `endsAt`, `generatorURL`, `resend` (`1` on a re-send of a firing alert) and a
//! `label.FIELD` param per group label; MSG is the description. File, forward and every other
//! output write it like any message. (32473 is the enterprise number RFC 5612 reserves for
//! documentation: sluice has none of its own.)
//!
//! The `alertmanager` and `webhook` outputs read that element back ([`AlertFields::of`]) into
//! the JSON Alertmanager's API takes. Any other event routed to them becomes an alert too:
//! `alertname="syslog"`, labelled with its host, app and severity, described by its message.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::engine::{AlertState, Notice, fmt_value};
use crate::event::{Event, Facility, ListenerName, Severity};
use crate::parse::{ParseOptions, Zone, parse};

/// The SD-ID of the alert element.
pub const SD_ID: &str = "alert@32473";
/// How long an alert made from a plain event stays active at a receiver.
const PLAIN_EVENT_ALERT: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Escapes a PARAM-VALUE (RFC 5424 §6.3.3: `"`, `\` and `]`).
fn sd_escape(v: &str, out: &mut String) {
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// The syslog severity an alert event carries: crit for critical firings, warning for other
/// firings, notice for resolutions.
fn event_severity(n: &Notice) -> Severity {
    match (n.state, n.severity.as_str()) {
        (AlertState::Resolved, _) => Severity::Notice,
        (AlertState::Firing, "critical" | "crit" | "page") => Severity::Crit,
        (AlertState::Firing, _) => Severity::Warning,
    }
}

/// The alert event for `n`: from `host`, read on listener `listener`, at `now`.
pub fn to_event(n: &Notice, host: &str, listener: ListenerName, now: DateTime<Utc>) -> Event {
    let pri = u16::from(Facility::Syslog.code()) * 8 + u16::from(event_severity(n).code());
    let mut s = format!(
        "<{pri}>1 {} {} sluice - ALERT [{SD_ID}",
        ts(now),
        if host.is_empty() { "-" } else { host }
    );
    let generator = format!("sluice://{host}/alert/{}", n.alertname);
    let mut params: Vec<(String, String)> = vec![
        ("alertname".into(), n.alertname.to_string()),
        ("state".into(), n.state.name().into()),
        ("severity".into(), n.severity.clone()),
        ("summary".into(), n.summary.clone()),
        ("value".into(), fmt_value(n.value)),
        ("expected".into(), n.expected.clone()),
        ("startsAt".into(), ts(n.starts_at)),
        ("endsAt".into(), ts(n.ends_at)),
        ("generatorURL".into(), generator),
        ("resend".into(), if n.resend { "1" } else { "0" }.into()),
    ];
    for (k, v) in &n.labels {
        params.push((format!("label.{k}"), v.clone()));
    }
    for (k, v) in params {
        s.push(' ');
        s.push_str(&k);
        s.push_str("=\"");
        sd_escape(&v, &mut s);
        s.push('"');
    }
    s.push_str("] ");
    // One line: a template or a label may hold line ends.
    s.push_str(&n.description().replace(['\n', '\r'], " "));
    let raw = bytes::Bytes::from(s.into_bytes());
    let parsed = parse(&raw, &ParseOptions::new(now, Zone::Local));
    Event {
        raw,
        received_at: now,
        source: None,
        listener,
        tls_peer: None,
        truncated: false,
        parsed,
    }
}

/// An alert as receivers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertFields {
    /// `firing` or `resolved`.
    pub status: String,
    /// `alertname`, `severity` and the group labels.
    pub labels: Map<String, Value>,
    /// `summary`, `description`, `value`, `expected`.
    pub annotations: Map<String, Value>,
    /// RFC 3339.
    pub starts_at: String,
    /// RFC 3339.
    pub ends_at: String,
    /// Where it came from.
    pub generator_url: String,
    /// A re-send of a firing alert.
    pub resend: bool,
}

impl AlertFields {
    /// The alert an event stands for: its `alert@32473` element, or, for any other event, a
    /// `syslog` alert made of its fields.
    pub fn of(ev: &Event) -> AlertFields {
        let message = String::from_utf8_lossy(ev.message()).into_owned();
        if let Some(el) = ev.parsed.structured_data.elements().find(|e| e.id == SD_ID) {
            let mut f = AlertFields {
                status: "firing".into(),
                labels: Map::new(),
                annotations: Map::new(),
                starts_at: String::new(),
                ends_at: String::new(),
                generator_url: String::new(),
                resend: false,
            };
            for (k, v) in el.params() {
                match k {
                    "alertname" | "severity" => {
                        f.labels.insert(k.into(), v.into());
                    }
                    "state" => f.status = v.into(),
                    "summary" | "value" | "expected" => {
                        f.annotations.insert(k.into(), v.into());
                    }
                    "startsAt" => f.starts_at = v.into(),
                    "endsAt" => f.ends_at = v.into(),
                    "generatorURL" => f.generator_url = v.into(),
                    "resend" => f.resend = v == "1",
                    _ => {
                        if let Some(label) = k.strip_prefix("label.") {
                            f.labels.insert(label.into(), v.into());
                        }
                    }
                }
            }
            f.annotations.insert("description".into(), message.into());
            return f;
        }
        let at = ev.received_at;
        let mut labels = Map::new();
        labels.insert("alertname".into(), "syslog".into());
        labels.insert("severity".into(), ev.severity().name().into());
        for (k, v) in [("hostname", ev.hostname()), ("app_name", ev.app_name())] {
            if let Some(v) = v {
                labels.insert(k.into(), v.into());
            }
        }
        let mut annotations = Map::new();
        annotations.insert("description".into(), message.into());
        AlertFields {
            status: "firing".into(),
            labels,
            annotations,
            starts_at: ts(at),
            ends_at: ts(at + PLAIN_EVENT_ALERT),
            generator_url: format!(
                "sluice://{}/listener/{}",
                ev.hostname().unwrap_or("-"),
                ev.listener
            ),
            resend: false,
        }
    }

    /// One alert of Alertmanager's `POST /api/v2/alerts` body (a resolution is an alert whose
    /// `endsAt` has passed).
    pub fn alertmanager_json(&self) -> Value {
        json!({
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": self.starts_at,
            "endsAt": self.ends_at,
            "generatorURL": self.generator_url,
        })
    }

    /// One alert of a webhook body: Alertmanager's webhook alert shape, with `status`.
    pub fn webhook_json(&self) -> Value {
        json!({
            "status": self.status,
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": self.starts_at,
            "endsAt": self.ends_at,
            "generatorURL": self.generator_url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(state: AlertState) -> Notice {
        let t = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        Notice {
            rule: 0,
            alertname: "ssh_fail_burst".into(),
            state,
            resend: false,
            labels: vec![("hostname".into(), "web\"1]".into())],
            severity: "critical".into(),
            summary: "rate above threshold".into(),
            value: 150.0,
            expected: "at most 100".into(),
            starts_at: t,
            ends_at: t + chrono::TimeDelta::minutes(4),
        }
    }

    #[test]
    fn a_notice_round_trips_through_its_event() {
        let now = Utc::now();
        let ev = to_event(&notice(AlertState::Firing), "relay1", "alerts".into(), now);
        assert!(
            ev.parsed.parse_error.is_none(),
            "{:?}",
            ev.parsed.parse_error
        );
        assert_eq!(ev.severity(), Severity::Crit);
        assert_eq!(ev.facility(), Facility::Syslog);
        let f = AlertFields::of(&ev);
        assert_eq!(f.status, "firing");
        assert_eq!(f.labels["alertname"], "ssh_fail_burst");
        assert_eq!(f.labels["hostname"], "web\"1]");
        assert_eq!(f.labels["severity"], "critical");
        assert_eq!(f.annotations["value"], "150");
        assert_eq!(f.annotations["expected"], "at most 100");
        assert_eq!(
            f.annotations["description"],
            "rate above threshold for hostname=web\"1]: value 150 (expected at most 100)"
        );
        assert_eq!(f.starts_at, "2026-01-02T03:04:05.000Z");
        assert_eq!(f.ends_at, "2026-01-02T03:08:05.000Z");
        assert_eq!(f.generator_url, "sluice://relay1/alert/ssh_fail_burst");
        let resolved = to_event(
            &notice(AlertState::Resolved),
            "relay1",
            "alerts".into(),
            now,
        );
        assert_eq!(resolved.severity(), Severity::Notice);
        assert_eq!(AlertFields::of(&resolved).status, "resolved");
    }

    #[test]
    fn a_plain_event_is_an_alert_too() {
        let raw =
            bytes::Bytes::from_static(b"<11>1 2026-01-02T03:04:05Z db1 postgres - - - disk full");
        let now = Utc::now();
        let ev = Event {
            parsed: parse(&raw, &ParseOptions::new(now, Zone::Local)),
            raw,
            received_at: now,
            source: None,
            listener: "tcp".into(),
            tls_peer: None,
            truncated: false,
        };
        let f = AlertFields::of(&ev);
        assert_eq!(f.labels["alertname"], "syslog");
        assert_eq!(f.labels["hostname"], "db1");
        assert_eq!(f.labels["severity"], "err");
        assert_eq!(f.annotations["description"], "disk full");
    }
}
