//! The `kafka` output: events produced to a Kafka topic (or any broker speaking the Kafka
//! protocol), through a memory or disk backlog ([`super::delivery`]), with librdkafka (the
//! `rdkafka` crate, its C library built from source by cargo) as an idempotent producer with
//! `acks = all`.
//!
//! Each backlog record holds the event's topic and partition key beside its formatted value,
//! so a record replayed from a disk queue goes where it would have gone. Records go to
//! librdkafka in batches of up to `batch.max_events` (and `batch.max_size` bytes), up to
//! `max_in_flight` batches from the head of the backlog at once: those are the messages in
//! flight, and nothing else is ever queued in it. librdkafka partitions them by the key's
//! murmur2 hash, as Kafka's Java client does (one host's messages share a partition and keep
//! their order), batches and compresses them per partition, and retries within `timeout` by
//! itself; being idempotent (a producer id and per-partition sequence numbers), its retries
//! neither duplicate nor reorder a message, and the batches produced while earlier ones await
//! their acknowledgments are stored after them in each partition. An attempt fills the window,
//! waits for the oldest batch's delivery reports and releases it; the later batches stay in
//! flight into the next attempt, so the backlog is released in order only. Records leave the
//! backlog as far as they were acknowledged from the head: a message that failed (broker down,
//! no leader, unknown topic, not acknowledged within `timeout`) drops the producer with every
//! batch in it, and it and everything after it in the backlog are sent again after the
//! backoff, as new messages, so a consumer may see duplicates of those that had been
//! acknowledged after it, never gaps.
//!
//! A message refused for good (larger than `max_message_size`, which librdkafka checks before
//! sending, or refused by the broker as invalid) is counted in `rejected`, handed to
//! `dead_letter` and not sent again. The broker refuses a record batch over its (or the
//! topic's) `message.max.bytes` as a whole, innocent messages with it: those are sent again in
//! rounds of half as many within the same attempt, down to one, and only a message refused
//! alone is dead-lettered; later attempts start at the largest round that went through, and
//! grow back slowly ([`KafkaTransport::resend_smaller`]), one batch in flight at a time until
//! then. When such a refusal comes with later batches in flight, those are purged from
//! librdkafka at once (it would send them again under a bumped epoch, ahead of the refused
//! messages; Kafka stores none of a producer's batches after the gap a refused one leaves in
//! a partition's sequence numbers) and sent again from the backlog after the refused batch is
//! settled, so each partition keeps its order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer,
};
use rdkafka::{ClientContext, Message, Statistics};
use serde::Deserialize;
use toml::Spanned;

use crate::decode::{Entry, Errors, NumOrStr, OneOrMany, Part, choice, keys};
use crate::event::Event;
use crate::metrics::{self, LogLimiter, OutputMetrics};
use crate::output::delivery::{Attempt, BatchLimits, BatchRaw, DeadLetter, Refusals, Transport};
use crate::output::file::template::PathTemplate;
use crate::output::format::{Format, local_hostname};
use crate::output::forward::host_of;
use crate::output::{OutputConfig, OutputDescriptors, OutputKindSpec, OutputStart, RunningOutput};

/// `kind = "kafka"`.
pub const KIND: &str = "kafka";
/// Default `batch.max_events`: messages per batch (`max_in_flight` batches may be in flight).
pub const DEFAULT_BATCH_MAX_EVENTS: usize = 2000;
/// Default `batch.max_size`: bytes of values per attempt (Kafka's default `message.max.bytes`
/// is about 1 MiB per partition batch).
pub const DEFAULT_BATCH_MAX_BYTES: u64 = 1024 * 1024;
/// Default `batch.max_wait` (librdkafka's `linger.ms` default).
pub const DEFAULT_LINGER: Duration = Duration::from_millis(5);
/// Default `timeout`: how long a produce request (and a connection) may go unanswered.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `max_message_size`: Kafka's and librdkafka's `message.max.bytes`.
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 1_000_000;
/// Smallest `max_message_size` librdkafka takes.
const MIN_MESSAGE_BYTES: u64 = 1000;
/// Largest `max_message_size` librdkafka takes.
const MAX_MESSAGE_BYTES: u64 = 1_000_000_000;
/// Longest topic name Kafka accepts.
const MAX_TOPIC_CHARS: usize = 249;
/// How often librdkafka's statistics (per-broker connections) are read.
const STATS_INTERVAL_MS: u32 = 1000;
/// How long past `timeout` an attempt waits for a delivery report librdkafka owes.
const REPORT_MARGIN: Duration = Duration::from_secs(5);
/// Attempts in a row without a batch refused as too large after which the records per
/// attempt, lowered by such a refusal, double again.
const SPLIT_RECOVERY_ATTEMPTS: u32 = 16;
/// At most one librdkafka warning per this interval (a dead broker is retried every second).
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The settings of a `kafka` output.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSettings {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// The topic, possibly from event fields (`syslog-{facility}`).
    pub topic: PathTemplate,
    /// Which field keys the partition.
    pub key: KeyField,
    /// Compression of produced batches.
    pub compression: CompressionKind,
    /// Messages in flight and bytes of values per attempt, and how long a partial batch waits
    /// for more (linger).
    pub batch: BatchLimits,
    /// How long a message may go unacknowledged, librdkafka's retries included.
    pub timeout: Duration,
    /// Largest message (key, value and overhead) librdkafka sends; larger ones are refused.
    pub max_message_size: u64,
    /// Batches (of up to `batch.max_events` messages) in librdkafka at once at most: the next
    /// ones are produced while earlier ones await their acknowledgments.
    pub max_in_flight: usize,
    /// With `tls = true`: the trust and client certificate.
    pub tls: Option<crate::tls::ClientSettings>,
    /// SASL authentication.
    pub sasl: Option<Sasl>,
    /// Where refused messages go.
    pub dead_letter: Option<String>,
}

/// The event field whose value keys the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyField {
    /// HOSTNAME (else the sender's address, else this host's name).
    Hostname,
    /// APP-NAME.
    AppName,
    /// The sender's address.
    Source,
    /// No key: batches spread over the partitions in turn.
    None,
}

/// `compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionKind {
    /// Uncompressed.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

/// SASL mechanism and credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct Sasl {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// User name.
    pub user: String,
    /// File holding the password (read at start).
    pub password_file: std::path::PathBuf,
}

/// `sasl.mechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// PLAIN (RFC 4616): use it over TLS only.
    Plain,
    /// SCRAM-SHA-256 (RFC 7677).
    ScramSha256,
    /// SCRAM-SHA-512.
    ScramSha512,
}

#[derive(Deserialize, Default)]
struct KafkaRaw {
    brokers: Option<Spanned<OneOrMany>>,
    topic: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    acks: Option<Spanned<String>>,
    compression: Option<Spanned<String>>,
    batch: Option<BatchRaw>,
    timeout: Option<Spanned<NumOrStr>>,
    max_message_size: Option<Spanned<NumOrStr>>,
    tls: Option<Spanned<bool>>,
    sasl: Option<SaslRaw>,
    dead_letter: Option<Spanned<String>>,
}

impl Part for KafkaRaw {
    const NESTED: &'static [crate::decode::Nested] = &[
        ("batch", keys::fields::<BatchRaw>),
        ("sasl", keys::fields::<SaslRaw>),
    ];
}

#[derive(Deserialize, Default)]
struct SaslRaw {
    mechanism: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
}

impl OutputKindSpec for KafkaSettings {
    const KIND: &'static str = KIND;
    const DEFAULT_FORMAT: Format = Format::Json;
    const HAS_BACKLOG: bool = true;

    fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<KafkaSettings> {
        let raw = entry.part::<KafkaRaw>(errs)?;
        let tls_part = entry.part::<crate::tls::ClientTlsPart>(errs)?;
        let before = errs.count();
        let brokers = raw.brokers(entry, errs);
        let topic = raw.topic(entry, errs);
        let key = choice(
            errs,
            &entry.key("key"),
            &raw.key,
            "key",
            &[
                ("hostname", KeyField::Hostname),
                ("app_name", KeyField::AppName),
                ("source", KeyField::Source),
                ("none", KeyField::None),
            ],
            KeyField::Hostname,
        );
        if let Some(a) = &raw.acks
            && a.get_ref() != "all"
        {
            errs.at(
                a.span(),
                entry.key("acks"),
                format!(
                    "{:?} is not supported: only \"all\" (every in-sync replica has the message before it leaves the queue)",
                    a.get_ref()
                ),
            );
        }
        let compression = choice(
            errs,
            &entry.key("compression"),
            &raw.compression,
            "compression",
            &[
                ("none", CompressionKind::None),
                ("gzip", CompressionKind::Gzip),
                ("snappy", CompressionKind::Snappy),
                ("lz4", CompressionKind::Lz4),
                ("zstd", CompressionKind::Zstd),
            ],
            CompressionKind::None,
        );
        let batch = BatchLimits::decode(
            raw.batch.as_ref(),
            entry,
            errs,
            BatchLimits {
                max_events: DEFAULT_BATCH_MAX_EVENTS,
                max_bytes: DEFAULT_BATCH_MAX_BYTES,
                max_wait: DEFAULT_LINGER,
            },
        );
        let timeout = crate::decode::positive_duration(errs, &entry.key("timeout"), &raw.timeout)
            .unwrap_or(DEFAULT_TIMEOUT);
        let max_message_size = match crate::decode::size_opt(
            errs,
            &entry.key("max_message_size"),
            &raw.max_message_size,
        ) {
            Some(n) if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&n) => {
                if let Some(v) = &raw.max_message_size {
                    errs.at(
                        v.span(),
                        entry.key("max_message_size"),
                        format!("must be from {MIN_MESSAGE_BYTES} to {MAX_MESSAGE_BYTES} bytes"),
                    );
                }
                DEFAULT_MAX_MESSAGE_BYTES
            }
            Some(n) => n,
            None => DEFAULT_MAX_MESSAGE_BYTES,
        };
        let sasl = raw.sasl.as_ref().and_then(|s| s.decode(entry, errs));
        let max_in_flight = crate::output::http_client::decode_max_in_flight(entry, errs);
        let on = raw.tls.as_ref().is_some_and(|t| *t.get_ref());
        let why_span = raw.tls.as_ref().map_or(entry.kind.span(), |t| t.span());
        let first_host = brokers
            .as_ref()
            .and_then(|b| b.first())
            .and_then(|b| host_of(b));
        let tls = tls_part.settings(
            entry,
            errs,
            on,
            "tls = true",
            why_span.clone(),
            first_host.clone(),
        );
        // librdkafka verifies each broker by the host name it connects to (the bootstrap
        // address, then what the cluster advertises) against ca_file: another name cannot be
        // asked for, nor a pinned certificate.
        if let (Some(t), Some(h)) = (&tls, &first_host)
            && &t.server_name != h
        {
            errs.at(
                why_span.clone(),
                entry.key("server_name"),
                "not supported by the kafka output: each broker is verified under the host name it is reached by",
            );
        }
        if let Some(t) = &tls
            && !t.fingerprints.is_empty()
        {
            errs.at(
                why_span.clone(),
                entry.key("fingerprints"),
                "not supported by the kafka output: give ca_file, the CA the brokers' certificates chain to",
            );
        }
        (errs.count() == before).then_some(())?;
        Some(KafkaSettings {
            brokers: brokers?,
            topic: topic?,
            key,
            compression,
            batch,
            timeout,
            max_message_size,
            max_in_flight,
            tls: if on { Some(tls?) } else { None },
            sasl,
            dead_letter: raw.dead_letter.as_ref().map(|d| d.get_ref().clone()),
        })
    }

    fn dead_letter(&self) -> Option<&str> {
        self.dead_letter.as_deref()
    }

    fn descriptors(&self) -> OutputDescriptors {
        OutputDescriptors {
            files: 0,
            // One connection per broker the client talks to; the bootstrap list is a fair guess.
            connections: self.brokers.len().max(1),
        }
    }

    fn check_environment(
        &self,
        key: &str,
        problems: &mut Vec<String>,
        files: &mut crate::tls::FileCheck,
    ) {
        if let Some(s) = &self.sasl
            && let Err(e) = crate::output::http_client::read_secret(&s.password_file)
        {
            problems.push(format!("{key}.sasl.password_file: {e}"));
        }
        if let Some(c) = &self.tls {
            crate::tls::ClientTlsPart::check_environment(c, key, files);
        }
    }

    fn start(&self, output: &OutputConfig, ctx: OutputStart<'_>) -> anyhow::Result<RunningOutput> {
        let (name, settings, format) = (output.name.clone(), self.clone(), output.format);
        let metrics = ctx.metrics.clone();
        let broker_connects = ctx.all_metrics.broker_connects(&output.name);
        let dead_letter = ctx.dead_letter.clone();
        crate::output::delivery::start(
            output,
            move || {
                KafkaTransport::new(
                    name,
                    settings,
                    format,
                    metrics,
                    broker_connects,
                    dead_letter,
                )
            },
            ctx.metrics,
            ctx.give_up,
            ctx.state_dir,
            ctx.predecessor,
        )
    }
}

impl KafkaRaw {
    fn brokers(&self, entry: &Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<Vec<String>> {
        let Some(b) = &self.brokers else {
            entry.missing(
                errs,
                "brokers",
                "missing: give the bootstrap brokers, like brokers = [\"kafka1.example.net:9092\"]",
            );
            return None;
        };
        let list = match b.get_ref() {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        };
        if list.is_empty() {
            errs.at(b.span(), entry.key("brokers"), "give at least one broker");
            return None;
        }
        let mut ok = true;
        for a in &list {
            if host_of(a).is_none() {
                errs.at(
                    b.span(),
                    entry.key("brokers"),
                    format!(
                        "invalid broker {a:?}: expected host:port, like \"kafka1.example.net:9092\""
                    ),
                );
                ok = false;
            }
        }
        ok.then_some(list)
    }

    fn topic(&self, entry: &Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<PathTemplate> {
        let Some(t) = &self.topic else {
            entry.missing(
                errs,
                "topic",
                "missing: give the topic, like topic = \"syslog\" or topic = \"syslog-{facility}\"",
            );
            return None;
        };
        let text = t.get_ref();
        let bad = |errs: &mut Errors<'_>, why: String| {
            errs.at(
                t.span(),
                entry.key("topic"),
                format!("invalid topic {text:?}: {why}"),
            );
            None
        };
        let template = match PathTemplate::parse(text) {
            Ok(p) => p,
            Err(e) => return bad(errs, e),
        };
        // The literal text must be a valid topic name; field values are made valid per event.
        let literal: String = {
            let mut s = String::new();
            let mut depth = 0;
            for c in text.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    c if depth == 0 => s.push(c),
                    _ => {}
                }
            }
            s
        };
        if let Some(c) = literal.chars().find(|&c| !topic_char(c)) {
            return bad(
                errs,
                format!(
                    "{c:?} is not allowed: topic names take ASCII letters, digits, '.', '_' and '-'"
                ),
            );
        }
        if template.is_static() && (text == "." || text == "..") {
            return bad(errs, "\".\" and \"..\" are not topic names".into());
        }
        if literal.len() > MAX_TOPIC_CHARS {
            return bad(errs, format!("longer than {MAX_TOPIC_CHARS} characters"));
        }
        Some(template)
    }
}

impl SaslRaw {
    fn decode(&self, entry: &Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<Sasl> {
        let key = |k: &str| entry.key(&format!("sasl.{k}"));
        let Some(m) = &self.mechanism else {
            entry.missing(
                errs,
                "sasl.mechanism",
                "missing: \"plain\", \"scram-sha-256\" or \"scram-sha-512\"",
            );
            return None;
        };
        let mechanism = match m.get_ref().as_str() {
            "plain" => SaslMechanism::Plain,
            "scram-sha-256" => SaslMechanism::ScramSha256,
            "scram-sha-512" => SaslMechanism::ScramSha512,
            other => {
                errs.at(
                    m.span(),
                    key("mechanism"),
                    format!("unknown mechanism {other:?}: expected \"plain\", \"scram-sha-256\" or \"scram-sha-512\""),
                );
                return None;
            }
        };
        let user = match &self.user {
            Some(u) if !u.get_ref().is_empty() => u.get_ref().clone(),
            Some(u) => {
                errs.at(u.span(), key("user"), "must not be empty");
                return None;
            }
            None => {
                entry.missing(errs, "sasl.user", "missing: the SASL user name");
                return None;
            }
        };
        let Some(password_file) = crate::decode::path_opt(&self.password_file) else {
            entry.missing(
                errs,
                "sasl.password_file",
                "missing: a file holding the SASL password",
            );
            return None;
        };
        Some(Sasl {
            mechanism,
            user,
            password_file,
        })
    }
}

/// Whether Kafka takes `c` in a topic name.
fn topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// A backlog record: `u16` topic length, topic, `u16` key length (`0xffff`: no key), key, then
/// the value. Lengths are big-endian.
fn write_record(topic: &[u8], key: Option<&[u8]>, out: &mut Vec<u8>) {
    out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    out.extend_from_slice(topic);
    match key {
        Some(k) => {
            let k = &k[..k.len().min(0xfffe)];
            out.extend_from_slice(&(k.len() as u16).to_be_bytes());
            out.extend_from_slice(k);
        }
        None => out.extend_from_slice(&0xffffu16.to_be_bytes()),
    }
}

/// A backlog record's parts.
#[derive(Debug, PartialEq, Eq)]
struct Parts<'a> {
    topic: &'a str,
    key: Option<&'a [u8]>,
    value: &'a [u8],
}

/// A backlog record's parts; `None` for bytes that are not a record (a disk queue from
/// another kind under this output's name).
fn read_record(r: &[u8]) -> Option<Parts<'_>> {
    let tl = usize::from(u16::from_be_bytes(r.get(..2)?.try_into().ok()?));
    let topic = std::str::from_utf8(r.get(2..2 + tl)?).ok()?;
    let rest = &r[2 + tl..];
    let kl = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?);
    let rest = &rest[2..];
    if kl == 0xffff {
        return Some(Parts {
            topic,
            key: None,
            value: rest,
        });
    }
    let kl = usize::from(kl);
    Some(Parts {
        topic,
        key: Some(rest.get(..kl)?),
        value: &rest[kl..],
    })
}

/// Bookkeeping of the messages in librdkafka, shared with librdkafka's polling thread, which
/// runs the delivery reports, the statistics and the log callbacks.
struct Reports {
    name: Arc<str>,
    metrics: Arc<OutputMetrics>,
    /// Per-broker connection counters, by `host:port`.
    broker_connects: Arc<metrics::BrokerConnects>,
    attempt: Mutex<Pending>,
    arrived: Condvar,
    /// Connections each of librdkafka's brokers had established, by its name, at the last
    /// statistics.
    connects_seen: Mutex<HashMap<String, i64>>,
    log_limit: Mutex<LogLimiter>,
}

/// The delivery reports of the messages handed to librdkafka, in the order they were produced
/// (the order of the backlog from its head).
#[derive(Default)]
struct Pending {
    /// Tags the messages carry; it changes when they are all forgotten, so a late report of
    /// one of them is ignored.
    generation: u32,
    /// The number (in the tag) of `outcomes[0]`.
    first: u32,
    /// Per message: not reported yet (`None`), or its outcome.
    outcomes: VecDeque<Option<Delivery>>,
    /// Reports still expected.
    waiting: usize,
    /// The sending thread waits for the first `watched` messages' reports ...
    watched: usize,
    /// ... of which this many have not come yet.
    watched_waiting: usize,
    /// The broker refused a batch as too large since the messages were last forgotten.
    too_large: bool,
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq)]
enum Delivery {
    /// The broker acknowledged it (every in-sync replica has it).
    Acked,
    /// Refused for good (too large, invalid): sending it again cannot succeed.
    Refused(String),
    /// Its record batch was refused as too large by the broker: it may be innocent, so it is
    /// sent again in a smaller batch.
    TooLarge(String),
    /// Not stored (broker down, no leader, timed out): sent again after the backoff.
    Failed(String),
}

/// What one round of [`KafkaTransport::round`] came to.
struct Round {
    /// Per record of the round: its outcome, or `None` (not reported in time, not queued).
    outcomes: Vec<Option<Delivery>>,
    /// The first record librdkafka would not queue, and why: the round stopped there.
    stopped: Option<(usize, String)>,
}

/// A message's delivery tag: the generation and the message's number.
fn tag(generation: u32, number: u32) -> usize {
    ((generation as usize) << 32) | number as usize
}

impl Reports {
    /// The bookkeeping, locked (taken over if a panicking holder poisoned the lock).
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.attempt.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn log_allowed(&self) -> Option<u64> {
        self.log_limit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow()
    }
}

/// librdkafka's context: the shared [`Reports`].
struct Ctx(Arc<Reports>);

impl ClientContext for Ctx {
    // librdkafka's own log (connection refused, broker down...) goes to sluice's, at a bounded
    // rate: a dead broker is retried every second.
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                if let Some(suppressed) = self.0.log_allowed() {
                    tracing::warn!(output = %self.0.name, facility, suppressed, "librdkafka: {message}");
                }
            }
            _ => tracing::debug!(output = %self.0.name, facility, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // A refused SASL authentication (the broker's reason is in `reason`): the operator's
        // to fix, so counted apart from the retries it causes.
        if let KafkaError::Global(RDKafkaErrorCode::Authentication) = error {
            metrics::add(&self.0.metrics.auth_failures, 1);
        }
        if let Some(suppressed) = self.0.log_allowed() {
            tracing::warn!(output = %self.0.name, suppressed, "librdkafka: {error}: {reason}");
        }
    }

    fn stats(&self, statistics: Statistics) {
        // Connections established per broker: librdkafka counts a disconnect for each one that
        // had come up, and the one up now. (Its `connects` also counts refused attempts.)
        let mut seen = self
            .0
            .connects_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for b in statistics.brokers.values() {
            if b.nodename.is_empty() || b.source == "internal" {
                continue;
            }
            let up = matches!(
                b.state.as_str(),
                "UP" | "UPDATE" | "APIVERSION_QUERY" | "AUTH_HANDSHAKE" | "AUTH_REQ" | "REAUTH"
            );
            let established = b.disconnects.unwrap_or(0) + i64::from(up);
            // By librdkafka's broker name (a bootstrap broker and the same broker learned from
            // the metadata are two), counted under its address.
            let before = seen.entry(b.name.clone()).or_default();
            if established > *before {
                let more = (established - *before) as u64;
                *before = established;
                metrics::add(&self.0.metrics.reconnects, more);
                self.0.broker_connects.add(&b.nodename, more);
            }
        }
    }
}

impl ProducerContext for Ctx {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, tag: usize) {
        let outcome = match result {
            Ok(_) => Delivery::Acked,
            Err((e, m)) => {
                let why = format!("{}/{}: {e}", m.topic(), m.partition());
                if let KafkaError::MessageProduction(
                    RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge,
                ) = e
                {
                    // From the broker (librdkafka checks a message's own size before it
                    // queues it): for the whole batch the message was in.
                    Delivery::TooLarge(why)
                } else if refused_for_good(e) {
                    Delivery::Refused(why)
                } else {
                    Delivery::Failed(why)
                }
            }
        };
        let too_large = matches!(outcome, Delivery::TooLarge(_));
        let mut p = self.0.pending();
        let (generation, number) = ((tag >> 32) as u32, tag as u32);
        if generation != p.generation {
            return;
        }
        // A message already settled and forgotten is far past the end here.
        let index = number.wrapping_sub(p.first) as usize;
        if let Some(slot @ None) = p.outcomes.get_mut(index) {
            *slot = Some(outcome);
            p.waiting -= 1;
            self.0
                .metrics
                .in_flight
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            let mut wake = too_large && !p.too_large;
            p.too_large |= too_large;
            if index < p.watched {
                p.watched_waiting -= 1;
                wake |= p.watched_waiting == 0;
            }
            if wake {
                self.0.arrived.notify_all();
            }
        }
    }
}

/// Whether librdkafka or the broker refused a message for good: sending it again cannot
/// succeed.
fn refused_for_good(e: &KafkaError) -> bool {
    let code = match e {
        KafkaError::MessageProduction(c) => *c,
        _ => return false,
    };
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::UnsupportedForMessageFormat
    )
}

/// How a `kafka` output sends.
struct KafkaTransport {
    name: Arc<str>,
    settings: KafkaSettings,
    format: Format,
    password: Option<String>,
    /// The producer (librdkafka), made at the first attempt and again after a fatal error.
    producer: Option<ThreadedProducer<Ctx>>,
    reports: Arc<Reports>,
    metrics: Arc<OutputMetrics>,
    refusals: Refusals,
    /// Most records per attempt: `batch.max_events`, less after the broker refused batches
    /// as too large.
    round_cap: usize,
    /// Attempts in a row under a lowered `round_cap` with nothing refused as too large.
    clean_attempts: u32,
    /// The batches in librdkafka, by their number of records, oldest first: they are the head
    /// of the backlog, in its order, and leave it only as the oldest are settled.
    flight: VecDeque<usize>,
}

impl KafkaTransport {
    fn new(
        name: Arc<str>,
        settings: KafkaSettings,
        format: Format,
        metrics: Arc<OutputMetrics>,
        broker_connects: Arc<metrics::BrokerConnects>,
        dead_letter: Option<DeadLetter>,
    ) -> anyhow::Result<KafkaTransport> {
        let password = match &settings.sasl {
            Some(s) => Some(
                crate::output::http_client::read_secret(&s.password_file)
                    .map_err(|e| anyhow::anyhow!("sasl.password_file: {e}"))?,
            ),
            None => None,
        };
        let reports = Arc::new(Reports {
            name: name.clone(),
            metrics: metrics.clone(),
            broker_connects,
            attempt: Mutex::new(Pending::default()),
            arrived: Condvar::new(),
            connects_seen: Mutex::new(HashMap::new()),
            log_limit: Mutex::new(LogLimiter::new(LOG_INTERVAL)),
        });
        let refusals = Refusals::new(name.clone(), metrics.clone(), dead_letter);
        let settings_max_events = settings.batch.max_events;
        let mut t = KafkaTransport {
            name,
            settings,
            format,
            password,
            producer: None,
            reports,
            metrics,
            refusals,
            round_cap: settings_max_events,
            clean_attempts: 0,
            flight: VecDeque::new(),
        };
        // Settings librdkafka refuses are found here, at start, not at the first event.
        t.ensure_producer().map_err(|e| anyhow::anyhow!(e))?;
        Ok(t)
    }

    /// The producer's librdkafka configuration.
    fn client_config(&self) -> ClientConfig {
        let s = &self.settings;
        let mut c = ClientConfig::new();
        let ms = |d: Duration| d.as_millis().clamp(1, i32::MAX as u128).to_string();
        c.set("bootstrap.servers", s.brokers.join(","))
            .set("client.id", format!("sluice-{}", self.name))
            // Every in-sync replica has a message before it counts as delivered, and
            // librdkafka's own retries can neither duplicate nor reorder it.
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("compression.type", compression_name(s.compression))
            // The last partial batch of each partition lingers too (sending at once, with
            // linger.ms = 0, took more produce requests and a third more CPU per message).
            .set("linger.ms", s.batch.max_wait.as_millis().to_string())
            // The batches in flight are all that is ever queued: the bound on messages in
            // flight. Bytes are bounded by the batches (`batch.max_size` each); the limit here
            // only leaves room for librdkafka's own overhead per message.
            .set(
                "queue.buffering.max.messages",
                s.batch
                    .max_events
                    .saturating_mul(s.max_in_flight)
                    .min(i32::MAX as usize)
                    .to_string(),
            )
            .set(
                "queue.buffering.max.kbytes",
                (s.batch.max_bytes.saturating_mul(s.max_in_flight as u64) / 512 + 1024)
                    .min(i32::MAX as u64)
                    .to_string(),
            )
            .set(
                "batch.num.messages",
                s.batch.max_events.min(1_000_000).to_string(),
            )
            .set(
                "batch.size",
                s.batch.max_bytes.clamp(1, i32::MAX as u64).to_string(),
            )
            .set("message.max.bytes", s.max_message_size.to_string())
            // A message not acknowledged within `timeout` (retries included) fails; the
            // backlog sends it again after its backoff.
            .set("message.timeout.ms", ms(s.timeout))
            .set("request.timeout.ms", ms(s.timeout))
            .set("socket.connection.setup.timeout.ms", ms(s.timeout))
            .set("topic.metadata.propagation.max.ms", ms(s.timeout))
            // Keyed messages go where Kafka's Java client puts them (murmur2), so producers
            // in other languages keyed the same way agree.
            .set("partitioner", "murmur2_random")
            // sluice does not create topics.
            .set("allow.auto.create.topics", "false")
            .set("statistics.interval.ms", STATS_INTERVAL_MS.to_string());
        let protocol = match (s.tls.is_some(), s.sasl.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        c.set("security.protocol", protocol);
        // Warnings and errors only reach the log callback.
        c.set_log_level(RDKafkaLogLevel::Warning);
        if let Some(t) = &s.tls {
            // Each broker is verified under the host name it is reached by.
            c.set("ssl.endpoint.identification.algorithm", "https");
            if let Some(ca) = &t.ca_file {
                c.set("ssl.ca.location", ca.to_string_lossy());
            }
            if let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) {
                c.set("ssl.certificate.location", cert.to_string_lossy())
                    .set("ssl.key.location", key.to_string_lossy());
            }
        }
        if let (Some(sasl), Some(password)) = (&s.sasl, &self.password) {
            c.set(
                "sasl.mechanisms",
                match sasl.mechanism {
                    SaslMechanism::Plain => "PLAIN",
                    SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
                    SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
                },
            )
            .set("sasl.username", &sasl.user)
            .set("sasl.password", password);
        }
        c
    }

    /// Messages whose record batch the broker refused as too large (its `message.max.bytes`,
    /// or the topic's) are sent again in rounds of half as many, until each is stored or
    /// refused alone: only a message refused alone is refused for good, the others in its
    /// batch were innocent. Depth first: the messages of one refused round are all settled
    /// before any later ones are sent, so a host's messages are stored in their order (the
    /// rest of its partition's batch was refused with them; this holds as long as a
    /// partition's messages of one round go out in one batch, which the round's limits, also
    /// librdkafka's `batch.num.messages` and `batch.size`, make the rule). A round that fails
    /// otherwise (broker down) leaves the rest for the next attempt. Later attempts start at
    /// the largest round size that went through. The batch's messages purged unsettled when
    /// the refusal came (another batch was in flight) go with the refused ones.
    fn resend_smaller(&mut self, records: &[Vec<u8>], outcomes: &mut [Option<Delivery>]) {
        let suspects: Vec<usize> = (0..outcomes.len())
            .filter(|&i| !matches!(outcomes[i], Some(Delivery::Acked | Delivery::Refused(_))))
            .collect();
        if let Some(suppressed) = self.reports.log_allowed() {
            tracing::info!(output = %self.name, messages = suspects.len(), suppressed,
                "the broker refused batches as too large; sending their messages again in smaller batches");
        }
        let mut largest_clean = 0;
        let mut smallest = outcomes.len();
        self.settle(
            records,
            outcomes,
            &suspects,
            outcomes.len(),
            &mut largest_clean,
            &mut smallest,
        );
        self.round_cap = if largest_clean > 0 {
            largest_clean
        } else {
            smallest
        };
    }

    /// Settles `suspects`, refused in a round of `size` records: sends them again in rounds of
    /// half that, each settled before the next is sent. Returns false when a round failed
    /// otherwise: nothing more is sent in this attempt.
    fn settle(
        &mut self,
        records: &[Vec<u8>],
        outcomes: &mut [Option<Delivery>],
        suspects: &[usize],
        size: usize,
        largest_clean: &mut usize,
        smallest: &mut usize,
    ) -> bool {
        if size <= 1 {
            for &i in suspects {
                if let Some(Delivery::TooLarge(why)) = &outcomes[i] {
                    outcomes[i] = Some(Delivery::Refused(why.clone()));
                }
            }
            return true;
        }
        let half = (size / 2).max(1);
        *smallest = (*smallest).min(half);
        for chunk in suspects.chunks(half) {
            let round = self.round(records, chunk);
            let mut done = round.stopped.is_none();
            let mut refused = Vec::new();
            for (&i, o) in chunk.iter().zip(round.outcomes) {
                match o {
                    Some(Delivery::TooLarge(_)) => refused.push(i),
                    Some(Delivery::Acked | Delivery::Refused(_)) => {}
                    _ => done = false,
                }
                outcomes[i] = o;
            }
            if !done {
                return false;
            }
            if refused.is_empty() {
                *largest_clean = (*largest_clean).max(chunk.len());
            } else if !self.settle(
                records,
                outcomes,
                &refused,
                chunk.len(),
                largest_clean,
                smallest,
            ) {
                return false;
            }
        }
        true
    }

    /// One round of a split: the records at `items` (indices into `records`, in order) handed
    /// to librdkafka, with nothing else in it, and their delivery reports awaited.
    fn round(&mut self, records: &[Vec<u8>], items: &[usize]) -> Round {
        let (queued, stopped) = self.produce(items.iter().map(|&i| &records[i]), true);
        // librdkafka fails what it could not deliver within `timeout`; the margin covers a
        // report on its way.
        self.wait(
            queued,
            Instant::now() + self.settings.timeout + REPORT_MARGIN,
            false,
        );
        let mut outcomes = self.take_front(queued);
        outcomes.resize(items.len(), None);
        if !self.producer_goes_on(&outcomes) {
            self.forget_flight();
        }
        Round {
            outcomes,
            stopped: stopped.map(|why| (queued, why)),
        }
    }

    /// Hands `records` to librdkafka after the messages already in it, each tagged with its
    /// place. Returns how many of them have a place (queued, or refused at once for good)
    /// and, when it stopped before the end, why: the rest is not in librdkafka. Only with
    /// `wait_for_room` does a full librdkafka queue wait (up to `timeout`) rather than stop.
    fn produce<'a>(
        &mut self,
        records: impl ExactSizeIterator<Item = &'a Vec<u8>>,
        wait_for_room: bool,
    ) -> (usize, Option<String>) {
        if let Err(error) = self.ensure_producer() {
            return (0, Some(error));
        }
        let producer = self.producer.as_ref().expect("made above");
        let reports = &self.reports;
        let n = records.len();
        // Counted as waiting before librdkafka may report them.
        let (generation, number, base) = {
            let mut p = reports.pending();
            let base = p.outcomes.len();
            p.outcomes.resize(base + n, None);
            p.waiting += n;
            (p.generation, p.first.wrapping_add(base as u32), base)
        };
        metrics::add(&self.metrics.in_flight, n as u64);
        // Outcomes known without the broker: malformed records, messages librdkafka refuses.
        let mut known: Vec<(usize, Delivery)> = Vec::new();
        // The first record that could not be queued: it and those after it wait.
        let mut stopped: Option<(usize, String)> = None;
        let enqueue_by = Instant::now() + self.settings.timeout;
        let mut queued = 0u64;
        for (i, r) in records.enumerate() {
            let Some(Parts { topic, key, value }) = read_record(r) else {
                known.push((i, Delivery::Refused("not a kafka backlog record".into())));
                continue;
            };
            let mut record =
                BaseRecord::with_opaque_to(topic, tag(generation, number.wrapping_add(i as u32)))
                    .payload(value);
            if let Some(k) = key {
                record = record.key(k);
            }
            let mut record = Some(record);
            let error = loop {
                match producer.send(record.take().expect("put back on queue full")) {
                    Ok(()) => break None,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                        if wait_for_room && Instant::now() < enqueue_by =>
                    {
                        // Reports of messages purged earlier still leaving: wait for room.
                        record = Some(r);
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((e, _)) => break Some(e),
                }
            };
            match error {
                None => queued += 1,
                Some(e) if refused_for_good(&e) => {
                    known.push((i, Delivery::Refused(format!("{topic}: {e}"))));
                }
                Some(e) => {
                    let why = match e {
                        KafkaError::MessageProduction(
                            RDKafkaErrorCode::UnknownTopic
                            | RDKafkaErrorCode::UnknownTopicOrPartition,
                        ) => format!(
                            "topic {topic:?} does not exist on the cluster (sluice does not create topics)"
                        ),
                        e => format!("{topic}: {e}"),
                    };
                    stopped = Some((i, why));
                    break;
                }
            }
        }
        metrics::add(&self.metrics.produced, queued);
        let end = stopped.as_ref().map_or(n, |(i, _)| *i);
        let settled_here = known.len() + (n - end);
        {
            let mut p = reports.pending();
            // Only this thread adds or removes places, so `base` still points at the first.
            for (i, d) in known {
                p.outcomes[base + i] = Some(d);
            }
            p.outcomes.truncate(base + end);
            p.waiting -= settled_here;
        }
        self.metrics
            .in_flight
            .fetch_sub(settled_here as u64, std::sync::atomic::Ordering::Relaxed);
        (end, stopped.map(|(_, why)| why))
    }

    /// Waits until the first `count` messages in librdkafka have their reports, or `until`;
    /// with `or_too_large`, also until the broker refused a batch as too large.
    fn wait(&self, count: usize, until: Instant, or_too_large: bool) {
        let mut p = self.reports.pending();
        p.watched = count.min(p.outcomes.len());
        p.watched_waiting = p
            .outcomes
            .range(..p.watched)
            .filter(|o| o.is_none())
            .count();
        while p.watched_waiting > 0 && !(or_too_large && p.too_large) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            p = self
                .reports
                .arrived
                .wait_timeout(p, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        p.watched = 0;
        p.watched_waiting = 0;
    }

    /// The outcomes of the first `count` messages in librdkafka, which are forgotten (`None`:
    /// no report yet; one that comes is ignored).
    fn take_front(&self, count: usize) -> Vec<Option<Delivery>> {
        let mut p = self.reports.pending();
        let count = count.min(p.outcomes.len());
        let taken: Vec<Option<Delivery>> = p.outcomes.drain(..count).collect();
        let late = taken.iter().filter(|o| o.is_none()).count();
        p.waiting -= late;
        p.first = p.first.wrapping_add(count as u32);
        drop(p);
        self.metrics
            .in_flight
            .fetch_sub(late as u64, std::sync::atomic::Ordering::Relaxed);
        taken
    }

    /// Forgets every message in librdkafka and the producer with them (its drop purges what
    /// it still holds, so nothing of it can arrive after the records are sent again): their
    /// records are sent again from the backlog by a new producer.
    fn forget_flight(&mut self) {
        self.producer = None;
        let late = {
            let mut p = self.reports.pending();
            let late = p.waiting;
            p.generation = p.generation.wrapping_add(1);
            p.first = 0;
            p.outcomes.clear();
            p.waiting = 0;
            p.too_large = false;
            late
        };
        self.metrics
            .in_flight
            .fetch_sub(late as u64, std::sync::atomic::Ordering::Relaxed);
        self.flight.clear();
    }

    /// Whether the producer may go on after these outcomes; when not, the caller forgets it
    /// and every message in it ([`Self::forget_flight`]).
    fn producer_goes_on(&self, outcomes: &[Option<Delivery>]) -> bool {
        let Some(producer) = &self.producer else {
            return false;
        };
        if outcomes
            .iter()
            .any(|o| matches!(o, Some(Delivery::TooLarge(_))))
        {
            // librdkafka would drain and bump the producer epoch to close the gap the refused
            // batch left in the partition's sequence numbers; a new producer id starts the
            // smaller rounds without relying on the broker following that bump (tansu 0.6
            // answers the next batches PRODUCER_FENCED).
            return false;
        }
        if let Some((code, reason)) = producer.client().fatal_error() {
            // The idempotent producer cannot go on (its sequence broke): a new one, with a
            // new producer id, takes over at the next attempt.
            tracing::warn!(output = %self.name, error = %code, reason = %reason,
                "kafka producer failed for good; starting a new one");
            return false;
        }
        // A message not delivered in time: the next attempt starts a new producer, with a new
        // producer id. librdkafka would go on under the old id with a bumped epoch, which a
        // broker that lost its state (restarted without its log) refuses as an unknown
        // producer, again and again.
        outcomes
            .iter()
            .all(|o| matches!(o, Some(Delivery::Acked | Delivery::Refused(_))))
    }

    /// Makes the producer if there is none (it connects in the background).
    fn ensure_producer(&mut self) -> Result<(), String> {
        if self.producer.is_none() {
            let p = self
                .client_config()
                .create_with_context(Ctx(self.reports.clone()))
                .map_err(|e| format!("kafka producer: {e}"))?;
            self.reports
                .connects_seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            tracing::info!(output = %self.name, brokers = %self.settings.brokers.join(","),
                "kafka producer started (idempotent, acks = all)");
            self.producer = Some(p);
        }
        Ok(())
    }
}

fn compression_name(c: CompressionKind) -> &'static str {
    match c {
        CompressionKind::None => "none",
        CompressionKind::Gzip => "gzip",
        CompressionKind::Snappy => "snappy",
        CompressionKind::Lz4 => "lz4",
        CompressionKind::Zstd => "zstd",
    }
}

impl Transport for KafkaTransport {
    fn encode(&self, ev: &Event, out: &mut Vec<u8>) {
        let mut expanded = Vec::new();
        self.settings.topic.expand(ev, &mut expanded);
        // UTF-8 as expanded (literals and fields are text); checked once here.
        let mut topic = String::from_utf8(expanded)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        // Field values become valid topic characters.
        if !topic.chars().all(topic_char) {
            topic = topic
                .chars()
                .map(|c| if topic_char(c) { c } else { '_' })
                .collect();
        }
        topic.truncate(MAX_TOPIC_CHARS);
        let source;
        let key = match self.settings.key {
            KeyField::Hostname => Some(match (ev.hostname(), ev.source) {
                (Some(h), _) => h,
                (None, Some(a)) => {
                    source = a.ip().to_string();
                    &source
                }
                (None, None) => local_hostname(),
            }),
            KeyField::AppName => Some(ev.app_name().unwrap_or("-")),
            KeyField::Source => Some(match ev.source {
                Some(a) => {
                    source = a.ip().to_string();
                    &source
                }
                None => local_hostname(),
            }),
            KeyField::None => None,
        };
        write_record(topic.as_bytes(), key.map(str::as_bytes), out);
        self.format.write_verbatim(ev, out);
    }

    fn batch_records(&self) -> usize {
        self.settings.batch.max_events
    }

    fn max_wait(&self) -> Duration {
        self.settings.batch.max_wait
    }

    fn window_records(&self) -> usize {
        self.settings
            .batch
            .max_events
            .saturating_mul(self.settings.max_in_flight)
    }

    fn dropped_head(&mut self, count: usize) {
        // Records in librdkafka dropped from the backlog (`drop_oldest`): their outcomes no
        // longer matter; the batches after them keep their places.
        let mut left = count.min(self.flight.iter().sum());
        self.take_front(left);
        while left > 0 {
            let head = self.flight.front_mut().expect("left is within the flight");
            let n = left.min(*head);
            *head -= n;
            left -= n;
            if *head == 0 {
                self.flight.pop_front();
            }
        }
    }

    fn send(&mut self, records: &[Vec<u8>]) -> Attempt {
        let batch = self.settings.batch;
        let timeout = self.settings.timeout;
        let mut at: usize = self.flight.iter().sum();
        if at > records.len() {
            // Not the backlog's head any more: start afresh.
            self.forget_flight();
            at = 0;
        }
        // Fill the window: batches produced while the earlier ones await their reports. Not
        // while a refusal as too large lowered the batches: rounds settle one at a time then.
        let most = if self.round_cap < batch.max_events {
            1
        } else {
            self.settings.max_in_flight
        };
        // The head batch could not be queued whole: why.
        let mut head_stopped: Option<String> = None;
        while self.flight.len() < most && at < records.len() {
            let rest = &records[at..];
            let len = batch.fitting(rest, 0).min(self.round_cap);
            // A partial batch behind others waits for more, as `max_wait` asks (the head's
            // own waiting is the delivery thread's).
            let partial = len == rest.len() && len < batch.max_events;
            if partial && !self.flight.is_empty() && !batch.max_wait.is_zero() {
                break;
            }
            let head = self.flight.is_empty();
            let (queued, stopped) = self.produce(rest[..len].iter(), head);
            if queued > 0 {
                self.flight.push_back(queued);
                at += queued;
            }
            if let Some(why) = stopped {
                // Behind other batches, the same error comes back once it is the head's.
                if head {
                    head_stopped = Some(why);
                }
                break;
            }
        }
        let Some(&head_len) = self.flight.front() else {
            return Attempt::Failed {
                error: head_stopped.unwrap_or_else(|| "nothing could be produced".into()),
                retry_after: None,
            };
        };
        let until = Instant::now() + timeout + REPORT_MARGIN;
        self.wait(head_len, until, true);
        let too_large = self.reports.pending().too_large;
        let mut outcomes = if too_large {
            // A batch refused as too large ends the overlap until the refusal is settled:
            // what librdkafka holds beyond the head batch is purged at once (so librdkafka
            // does not send it again under a bumped epoch ahead of the refused messages),
            // and sent again, after them, from the backlog. The broker stores none of a
            // partition's batches that follow a refused one from the same producer (their
            // sequence numbers leave a gap), so each partition keeps its order.
            if self.flight.len() > 1
                && let Some(p) = &self.producer
            {
                p.purge(PurgeConfig::default().queue().inflight());
            }
            self.wait(usize::MAX, until, false);
            let head = self.take_front(head_len);
            self.forget_flight();
            head
        } else {
            let head = self.take_front(head_len);
            self.flight.pop_front();
            if !self.producer_goes_on(&head) {
                self.forget_flight();
            }
            head
        };
        let records = &records[..head_len];
        if too_large {
            self.clean_attempts = 0;
            self.resend_smaller(records, &mut outcomes);
        } else if self.round_cap < batch.max_events {
            // Back towards full batches, slowly: each try past the broker's limit costs a
            // refused round.
            self.clean_attempts += 1;
            if self.clean_attempts >= SPLIT_RECOVERY_ATTEMPTS {
                self.clean_attempts = 0;
                self.round_cap = (self.round_cap * 2).min(batch.max_events);
            }
        }
        let taken = outcomes
            .iter()
            .take_while(|o| matches!(o, Some(Delivery::Acked | Delivery::Refused(_))))
            .count();
        let first_failure = || {
            outcomes
                .iter()
                .find_map(|o| match o {
                    Some(Delivery::Failed(why) | Delivery::TooLarge(why)) => Some(why.clone()),
                    None => Some(format!(
                        "no delivery report within {}s",
                        (timeout + REPORT_MARGIN).as_secs()
                    )),
                    _ => None,
                })
                .or_else(|| head_stopped.clone())
        };
        if taken == 0 {
            return Attempt::Failed {
                error: first_failure().unwrap_or_else(|| "nothing was acknowledged".into()),
                retry_after: None,
            };
        }
        let mut accepted = 0;
        for (r, o) in records[..taken].iter().zip(&outcomes[..taken]) {
            match o {
                Some(Delivery::Acked) => accepted += 1,
                Some(Delivery::Refused(why)) => {
                    let value = read_record(r).map_or(r.as_slice(), |p| p.value);
                    self.refusals.refuse(1, &[value], why);
                }
                _ => unreachable!("taken stops at the first record not done with"),
            }
        }
        if (taken < records.len() || head_stopped.is_some())
            && let Some(error) = first_failure()
        {
            tracing::info!(output = %self.name, acknowledged = taken, error = %error,
                "part of the batch failed; the rest is sent again after the backoff");
        }
        Attempt::Done { taken, accepted }
    }

    fn close(&mut self) {
        if let Some(p) = self.producer.take() {
            // What is still in flight may be acknowledged meanwhile; the rest stays in the
            // backlog. This also lets librdkafka close its connections.
            let _ = p.flush(Duration::from_secs(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_and_without_key() {
        let mut r = Vec::new();
        write_record(b"syslog-auth", Some(b"web1"), &mut r);
        r.extend_from_slice(b"{\"m\":1}");
        assert_eq!(
            read_record(&r),
            Some(Parts {
                topic: "syslog-auth",
                key: Some(&b"web1"[..]),
                value: &b"{\"m\":1}"[..]
            })
        );
        let mut r = Vec::new();
        write_record(b"t", None, &mut r);
        r.extend_from_slice(b"v");
        assert_eq!(
            read_record(&r),
            Some(Parts {
                topic: "t",
                key: None,
                value: &b"v"[..]
            })
        );
        assert_eq!(read_record(b"\x00\x09ab"), None);
    }
}
