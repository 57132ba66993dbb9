//! The `loki` output: events pushed to Grafana Loki (`/loki/api/v1/push`), protobuf with snappy
//! by default or JSON, through a memory or disk backlog ([`super::delivery`]).
//!
//! Each event becomes an entry of the stream its labels name: the configured fields (`labels`),
//! those that have a value. The other fields go to the entry's structured metadata, so they can
//! be filtered on without making streams. A cardinality guard bounds the label sets an output
//! creates (`max_streams`): past it, the label with the most distinct values seen so far becomes
//! structured metadata for the rest of the run, which is counted (`labels_demoted`) and logged,
//! and the count of live label sets starts afresh.
//!
//! Answers:
//! - 2xx: delivered.
//! - 408, 429, 5xx, connection errors and timeouts: retried with backoff (Retry-After honoured).
//! - 400 (an entry too old, out of order, a line too long, too many labels): Loki stores the
//!   valid entries of the push and lists the others; they are counted in `rejected` (from
//!   Loki's "total ignored: N out of M", else the whole push) and logged, never retried.
//! - Any other 4xx: the push is refused for good, counted and logged.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::http_client::{HttpClient, HttpEndpoint};
use crate::decode::{Entry, Errors, OneOrMany, Part, choice, positive};
use crate::event::Event;
use crate::metrics::{self, OutputMetrics};
use crate::output::delivery::{Attempt, Refusals, Transport};
use crate::output::format::Format;
use crate::output::{OutputConfig, OutputDescriptors, OutputKindSpec, OutputStart, RunningOutput};

/// `kind = "loki"`.
pub const KIND: &str = "loki";
/// Default `labels`: where a message came from and how bad it is, the usual LogQL selectors.
pub const DEFAULT_LABELS: [Field; 5] = [
    Field::Hostname,
    Field::AppName,
    Field::Facility,
    Field::Severity,
    Field::Listener,
];
/// Default `max_streams`.
pub const DEFAULT_MAX_STREAMS: usize = 1000;
/// The stream of an event none of whose labels has a value: Loki needs at least one label.
const FALLBACK_LABEL: (&str, &str) = ("job", "sluice");

/// An event field that can be a label or structured metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// HOSTNAME.
    Hostname,
    /// APP-NAME (the tag).
    AppName,
    /// The facility's name.
    Facility,
    /// The severity's name.
    Severity,
    /// The listener it arrived on.
    Listener,
    /// PROCID.
    Procid,
    /// MSGID.
    Msgid,
}

impl Field {
    const ALL: [(&'static str, Field); 7] = [
        ("hostname", Field::Hostname),
        ("app_name", Field::AppName),
        ("facility", Field::Facility),
        ("severity", Field::Severity),
        ("listener", Field::Listener),
        ("procid", Field::Procid),
        ("msgid", Field::Msgid),
    ];

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("", |(n, _)| n)
    }

    fn value(self, ev: &Event) -> Option<String> {
        let v = match self {
            Field::Hostname => ev.hostname()?.to_string(),
            Field::AppName => ev.app_name()?.to_string(),
            Field::Facility => ev.facility().name().to_string(),
            Field::Severity => ev.severity().name().to_string(),
            Field::Listener => ev.listener.to_string(),
            Field::Procid => ev.procid()?.to_string(),
            Field::Msgid => ev.msgid()?.to_string(),
        };
        (!v.is_empty()).then_some(v)
    }
}

/// The settings of a `loki` output.
#[derive(Debug, Clone, PartialEq)]
pub struct LokiSettings {
    /// The Loki (or gateway) base URL; `/loki/api/v1/push` is appended to its path.
    pub endpoint: HttpEndpoint,
    /// Fields that make the stream's labels, in order.
    pub labels: Vec<Field>,
    /// Protobuf with snappy (Loki's native push), or JSON.
    pub protobuf: bool,
    /// `X-Scope-OrgID`, for multi-tenant Loki.
    pub tenant: Option<String>,
    /// Most distinct label sets this output creates.
    pub max_streams: usize,
    /// The entry's time: the message's own stamp, or when it was received (the default:
    /// devices with skewed clocks would otherwise be refused as too old or out of order).
    pub message_time: bool,
}

#[derive(Deserialize, Default)]
struct LokiRaw {
    labels: Option<Spanned<OneOrMany>>,
    encoding: Option<Spanned<String>>,
    tenant: Option<Spanned<String>>,
    max_streams: Option<Spanned<i64>>,
    timestamp: Option<Spanned<String>>,
}

impl Part for LokiRaw {}

impl OutputKindSpec for LokiSettings {
    const KIND: &'static str = KIND;
    const HAS_BACKLOG: bool = true;

    fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<LokiSettings> {
        let mut endpoint = HttpEndpoint::decode(entry, errs);
        super::http_client::refuse_max_in_flight(
            entry,
            errs,
            "a loki output sends one push at a time, so the entries of a stream reach Loki in order",
        );
        let raw = entry.part::<LokiRaw>(errs)?;
        let before = errs.count();
        let labels = raw.labels(entry, errs);
        let protobuf = choice(
            errs,
            &entry.key("encoding"),
            &raw.encoding,
            "encoding",
            &[("protobuf", true), ("json", false)],
            true,
        );
        let max_streams = positive(errs, &entry.key("max_streams"), &raw.max_streams)
            .unwrap_or(DEFAULT_MAX_STREAMS);
        let message_time = choice(
            errs,
            &entry.key("timestamp"),
            &raw.timestamp,
            "timestamp",
            &[("received", false), ("message", true)],
            false,
        );
        let tenant = raw.tenant.as_ref().map(|t| t.get_ref().clone());
        if let Some(t) = &raw.tenant
            && hyper::header::HeaderValue::from_str(t.get_ref()).is_err()
        {
            errs.at(t.span(), entry.key("tenant"), "not usable in a header");
        }
        (errs.count() == before).then_some(())?;
        if let (Some(e), Some(t)) = (endpoint.as_mut(), &tenant) {
            e.headers.push(("X-Scope-OrgID".to_string(), t.clone()));
        }
        Some(LokiSettings {
            endpoint: endpoint?,
            labels,
            protobuf,
            tenant,
            max_streams,
            message_time,
        })
    }

    fn dead_letter(&self) -> Option<&str> {
        self.endpoint.dead_letter.as_deref()
    }

    fn descriptors(&self) -> OutputDescriptors {
        OutputDescriptors {
            files: 0,
            connections: 1,
        }
    }

    fn check_environment(
        &self,
        key: &str,
        problems: &mut Vec<String>,
        tls: &mut crate::tls::FileCheck,
    ) {
        self.endpoint.check_environment(key, problems, tls);
    }

    fn start(&self, output: &OutputConfig, ctx: OutputStart<'_>) -> anyhow::Result<RunningOutput> {
        let (settings, format) = (self.clone(), output.format);
        super::http_client::start(output, ctx, move |p| {
            LokiTransport::new(p, settings, format)
        })
    }
}

impl LokiRaw {
    /// The label fields: known names, each once.
    fn labels(&self, entry: &Entry<'_, '_>, errs: &mut Errors<'_>) -> Vec<Field> {
        let Some(v) = &self.labels else {
            return DEFAULT_LABELS.to_vec();
        };
        let mut fields = Vec::new();
        for name in v.get_ref().clone().into_vec() {
            match Field::ALL.iter().find(|(n, _)| *n == name) {
                Some((_, f)) if fields.contains(f) => errs.at(
                    v.span(),
                    entry.key("labels"),
                    format!("{name:?} is given twice"),
                ),
                Some((_, f)) => fields.push(*f),
                None => {
                    let known: Vec<String> =
                        Field::ALL.iter().map(|(n, _)| format!("{n:?}")).collect();
                    errs.at(
                        v.span(),
                        entry.key("labels"),
                        format!(
                            "unknown field {name:?}: expected {}",
                            crate::decode::or_list(&known)
                        ),
                    );
                }
            }
        }
        fields
    }
}

/// One backlog record: the entry, with its stream's labels resolved when it was queued (so
/// a replayed disk queue goes to the streams it was meant for).
#[derive(serde::Serialize, Deserialize)]
struct Record {
    /// The stream, as Loki's selector text: `{app_name="sshd", hostname="web1"}`.
    s: String,
    /// Nanoseconds since the epoch.
    t: i64,
    /// The line.
    l: String,
    /// Structured metadata.
    m: Vec<(String, String)>,
}

/// The cardinality guard's state: label sets made so far, distinct values per label, and the
/// labels moved to structured metadata.
#[derive(Default)]
struct Guard {
    streams: HashSet<String>,
    values: HashMap<Field, HashSet<String>>,
    demoted: Vec<Field>,
}

/// How a `loki` output sends.
struct LokiTransport {
    name: Arc<str>,
    settings: LokiSettings,
    format: Format,
    client: HttpClient,
    push_path: String,
    /// Mutated while encoding (which takes `&self`); the output thread alone uses it.
    guard: RefCell<Guard>,
    metrics: Arc<OutputMetrics>,
    refusals: Refusals,
}

impl LokiTransport {
    fn new(
        parts: super::http_client::TransportParts,
        settings: LokiSettings,
        format: Format,
    ) -> anyhow::Result<LokiTransport> {
        let (name, metrics) = (parts.name.clone(), parts.metrics.clone());
        let content_type = if settings.protobuf {
            "application/x-protobuf"
        } else {
            "application/json"
        };
        let mut endpoint = settings.endpoint.clone();
        // Protobuf bodies are snappy-compressed, as Loki expects; gzip applies to JSON only.
        if settings.protobuf {
            endpoint.gzip = false;
        }
        let (client, refusals) = parts.split(endpoint, content_type)?;
        let url = &settings.endpoint.url;
        let push_path = format!("{}/loki/api/v1/push", url.path().trim_end_matches('/'));
        Ok(LokiTransport {
            name,
            settings,
            format,
            client,
            push_path,
            guard: RefCell::new(Guard::default()),
            metrics,
            refusals,
        })
    }

    /// The stream selector and structured metadata of `ev`, within the cardinality guard.
    fn stream_of(&self, ev: &Event) -> (String, Vec<(String, String)>) {
        let mut guard = self.guard.borrow_mut();
        loop {
            let mut labels = BTreeMap::new();
            let mut metadata = Vec::new();
            for (name, field) in Field::ALL {
                let Some(v) = field.value(ev) else { continue };
                if self.settings.labels.contains(&field) && !guard.demoted.contains(&field) {
                    labels.insert(name, v);
                } else {
                    metadata.push((name.to_string(), v));
                }
            }
            if labels.is_empty() {
                labels.insert(FALLBACK_LABEL.0, FALLBACK_LABEL.1.to_string());
            }
            let wanted = selector(&labels);
            if guard.streams.contains(&wanted) {
                return (wanted, metadata);
            }
            if guard.streams.len() < self.settings.max_streams {
                // A new label set: the only time its values can be new to the guard.
                for (name, v) in labels {
                    if let Some((_, f)) = Field::ALL.iter().find(|(n, _)| *n == name) {
                        guard.values.entry(*f).or_default().insert(v);
                    }
                }
                guard.streams.insert(wanted.clone());
                return (wanted, metadata);
            }
            // Over the bound: demote the label with the most distinct values, then try again.
            let worst = self
                .settings
                .labels
                .iter()
                .filter(|f| !guard.demoted.contains(f))
                .max_by_key(|f| guard.values.get(f).map_or(0, HashSet::len))
                .copied();
            match worst {
                Some(f) => {
                    guard.demoted.push(f);
                    metrics::add(&self.metrics.labels_demoted, 1);
                    tracing::warn!(output = %self.name, label = f.name(), streams = guard.streams.len(),
                        max_streams = self.settings.max_streams,
                        "too many label sets: this label goes to structured metadata from now on");
                    // The streams made so far had that label: no event goes to them any more
                    // (Loki closes idle streams), so the count starts afresh. Each label is
                    // demoted once at most, so an output makes at most max_streams label sets
                    // per demotion, plus one.
                    guard.streams.clear();
                }
                // Nothing left to demote: the fallback stream, which always fits.
                None => {
                    let mut fallback = BTreeMap::new();
                    fallback.insert(FALLBACK_LABEL.0, FALLBACK_LABEL.1.to_string());
                    return (selector(&fallback), metadata);
                }
            }
        }
    }

    /// The records of a push, grouped by stream in their order.
    fn streams(records: &[Record]) -> Vec<(&str, Vec<&Record>)> {
        let mut order: Vec<(&str, Vec<&Record>)> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for r in records {
            match index.get(r.s.as_str()) {
                Some(&i) => order[i].1.push(r),
                None => {
                    index.insert(&r.s, order.len());
                    order.push((&r.s, vec![r]));
                }
            }
        }
        order
    }

    fn body(&self, records: &[Record]) -> Vec<u8> {
        let streams = Self::streams(records);
        if self.settings.protobuf {
            let proto = push_request(&streams);
            snap::raw::Encoder::new()
                .compress_vec(&proto)
                .unwrap_or_default()
        } else {
            json_push(&streams)
        }
    }
}

/// `{a="x", b="y"}` with Prometheus escaping, labels sorted by name.
fn selector(labels: &BTreeMap<&str, String>) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(k);
        s.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s.push('}');
    s
}

/// Protobuf wire format, the few pieces a push needs.
mod proto {
    pub fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// A length-delimited field (strings, bytes, messages).
    pub fn bytes(out: &mut Vec<u8>, field: u32, data: &[u8]) {
        varint(out, u64::from(field << 3 | 2));
        varint(out, data.len() as u64);
        out.extend_from_slice(data);
    }

    /// A varint field.
    pub fn uint(out: &mut Vec<u8>, field: u32, v: u64) {
        if v != 0 {
            varint(out, u64::from(field << 3));
            varint(out, v);
        }
    }
}

/// `PushRequest { repeated StreamAdapter streams = 1 }`, where `StreamAdapter { string labels =
/// 1; repeated EntryAdapter entries = 2 }`, `EntryAdapter { Timestamp timestamp = 1; string
/// line = 2; repeated LabelPairAdapter structuredMetadata = 3 }` and `Timestamp { int64 seconds
/// = 1; int32 nanos = 2 }` (Loki's push.proto).
fn push_request(streams: &[(&str, Vec<&Record>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = Vec::new();
    let mut entry = Vec::new();
    let mut part = Vec::new();
    for (labels, records) in streams {
        stream.clear();
        proto::bytes(&mut stream, 1, labels.as_bytes());
        for r in records {
            entry.clear();
            part.clear();
            proto::uint(&mut part, 1, r.t.div_euclid(1_000_000_000) as u64);
            proto::uint(&mut part, 2, r.t.rem_euclid(1_000_000_000) as u64);
            proto::bytes(&mut entry, 1, &part);
            proto::bytes(&mut entry, 2, r.l.as_bytes());
            for (k, v) in &r.m {
                part.clear();
                proto::bytes(&mut part, 1, k.as_bytes());
                proto::bytes(&mut part, 2, v.as_bytes());
                proto::bytes(&mut entry, 3, &part);
            }
            proto::bytes(&mut stream, 2, &entry);
        }
        proto::bytes(&mut out, 1, &stream);
    }
    out
}

/// The JSON push: `{"streams":[{"stream":{...},"values":[["ns","line",{...}]]}]}`.
fn json_push(streams: &[(&str, Vec<&Record>)]) -> Vec<u8> {
    let mut list = Vec::new();
    for (labels, records) in streams {
        let stream: BTreeMap<String, String> = parse_selector(labels);
        let values: Vec<serde_json::Value> = records
            .iter()
            .map(|r| {
                let meta: serde_json::Map<String, serde_json::Value> =
                    r.m.iter()
                        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                        .collect();
                let mut v = vec![
                    serde_json::Value::String(r.t.to_string()),
                    serde_json::Value::String(r.l.clone()),
                ];
                if !meta.is_empty() {
                    v.push(serde_json::Value::Object(meta));
                }
                serde_json::Value::Array(v)
            })
            .collect();
        list.push(serde_json::json!({ "stream": stream, "values": values }));
    }
    serde_json::to_vec(&serde_json::json!({ "streams": list })).unwrap_or_default()
}

/// The labels of a selector this module wrote.
fn parse_selector(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let inner = s.trim_start_matches('{').trim_end_matches('}');
    let mut rest = inner;
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].trim_start_matches([',', ' ']).to_string();
        let mut value = String::new();
        let mut chars = rest[eq + 2..].char_indices();
        let mut end = rest.len() - eq - 2;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key, value);
        rest = &rest[eq + 2 + end..];
    }
    out
}

/// Loki's count of the entries it ignored, from a 400's `total ignored: N out of M`.
fn ignored_count(body: &str) -> Option<usize> {
    let tail = body.rsplit("total ignored: ").next()?;
    if tail.len() == body.len() {
        return None;
    }
    tail.split_whitespace().next()?.parse().ok()
}

impl Transport for LokiTransport {
    fn encode(&self, ev: &Event, out: &mut Vec<u8>) {
        let (s, m) = self.stream_of(ev);
        let at = match (self.settings.message_time, ev.parsed.timestamp) {
            (true, Some(t)) => t.with_timezone(&chrono::Utc),
            _ => ev.received_at,
        };
        let mut line = Vec::new();
        self.format.write_line(ev, &mut line);
        line.pop();
        let record = Record {
            s,
            t: at.timestamp_nanos_opt().unwrap_or(0),
            l: String::from_utf8_lossy(&line).into_owned(),
            m,
        };
        // A record is always serializable.
        let _ = serde_json::to_writer(out, &record);
    }

    fn batch_records(&self) -> usize {
        self.settings.endpoint.batch.max_events
    }

    fn max_wait(&self) -> Duration {
        self.settings.endpoint.batch.max_wait
    }

    fn send(&mut self, records: &[Vec<u8>]) -> Attempt {
        let mut n = self.settings.endpoint.batch.fitting(records, 0);
        loop {
            let mut decoded = Vec::with_capacity(n);
            let mut readable: Vec<&[u8]> = Vec::with_capacity(n);
            let mut unreadable: Vec<&[u8]> = Vec::new();
            for r in &records[..n] {
                match serde_json::from_slice::<Record>(r) {
                    Ok(d) => {
                        decoded.push(d);
                        readable.push(r);
                    }
                    // Not one of this output's records (a queue written by another version):
                    // refused with the push it came in, whatever becomes of it.
                    Err(_) => unreadable.push(r),
                }
            }
            let body = self.body(&decoded);
            let answer =
                match self
                    .client
                    .send(hyper::Method::POST, &self.push_path, body, decoded.len())
                {
                    Ok(a) => a,
                    Err(error) => {
                        return Attempt::Failed {
                            error,
                            retry_after: None,
                        };
                    }
                };
            let why = format!("{}: {}", answer.status, answer.excerpt());
            let accepted = match answer.status.as_u16() {
                200..=299 => decoded.len(),
                413 if n > 1 => {
                    n /= 2;
                    continue;
                }
                _ if answer.retry_later() => {
                    return Attempt::Failed {
                        error: why,
                        retry_after: answer.retry_after,
                    };
                }
                // Loki stored the valid entries of the push and says how many it ignored, not
                // which: those are counted, not handed to the dead letter.
                400 => {
                    let text = String::from_utf8_lossy(&answer.body);
                    let ignored = ignored_count(&text)
                        .unwrap_or(decoded.len())
                        .min(decoded.len());
                    self.refusals.refuse(ignored, &[], &why);
                    decoded.len() - ignored
                }
                // The whole push refused: every entry goes to the dead letter.
                _ => {
                    self.refusals.refuse(decoded.len(), &readable, &why);
                    0
                }
            };
            if !unreadable.is_empty() {
                self.refusals
                    .refuse(unreadable.len(), &unreadable, "unreadable backlog record");
            }
            return Attempt::Done { taken: n, accepted };
        }
    }

    fn close(&mut self) {
        self.client.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_escape_and_parse_back() {
        let mut l = BTreeMap::new();
        l.insert("hostname", "we\"b\\1".to_string());
        l.insert("app_name", "sshd".to_string());
        let s = selector(&l);
        assert_eq!(s, r#"{app_name="sshd", hostname="we\"b\\1"}"#);
        let back = parse_selector(&s);
        assert_eq!(back["hostname"], "we\"b\\1");
        assert_eq!(back["app_name"], "sshd");
    }

    #[test]
    fn ignored_entries_are_read_from_the_answer() {
        let body = "entry with timestamp 2026-01-01 ignored, reason: 'entry too far behind'\ntotal ignored: 3 out of 10";
        assert_eq!(ignored_count(body), Some(3));
        assert_eq!(ignored_count("server error"), None);
    }

    #[test]
    fn varints_are_little_endian_groups_of_seven() {
        let mut out = Vec::new();
        proto::varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
    }
}
