//! The `kafka` output: events produced to a Kafka topic (or any broker speaking the Kafka
//! protocol), through a memory or disk backlog ([`super::delivery`]), with the pure-Rust
//! client rskafka driven by a small single-threaded runtime the output's thread owns.
//!
//! Each backlog record holds the event's topic and partition key beside its formatted value,
//! so a record replayed from a disk queue goes where it would have gone. An attempt takes up
//! to `batch.max_events` records (and `batch.max_size` bytes) from the head: those are the
//! messages in flight. They are grouped by topic and partition (the key's murmur2 hash modulo
//! the topic's partitions, as Kafka's Java client does, so one host's messages share a
//! partition and keep their order) and produced with `acks = all`, every partition's batch at
//! once. Records leave the backlog as far as the broker acknowledged them from the head: when a
//! partition's batch fails (broker down, no leader, unknown topic, no answer within
//! `timeout`), that batch and everything after it in the backlog is sent again after the
//! backoff. Batches of other partitions that had been acknowledged beyond that point are sent
//! again too: a consumer may see duplicates, never gaps, and a host's first copies stay in
//! order.
//!
//! A batch the broker refuses as too large is sent again one message at a time in the same
//! attempt; a single message it refuses for good (too large, invalid, corrupt) is counted in
//! `rejected`, handed to `dead_letter` and not sent again.
//!
//! rskafka sends no producer id: the producer is not idempotent (Kafka's `enable.idempotence`),
//! so a retry after a lost acknowledgment can store a message twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rskafka::client::error::Error as ClientError;
use rskafka::client::error::ProtocolError;
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::record::Record;
use serde::Deserialize;
use toml::Spanned;

use crate::decode::{Entry, Errors, NumOrStr, OneOrMany, Part, choice, keys};
use crate::event::Event;
use crate::metrics::{self, OutputMetrics};
use crate::output::delivery::{Attempt, BatchLimits, BatchRaw, DeadLetter, Refusals, Transport};
use crate::output::file::template::PathTemplate;
use crate::output::format::{Format, local_hostname};
use crate::output::forward::host_of;
use crate::output::{OutputConfig, OutputDescriptors, OutputKindSpec, OutputStart, RunningOutput};

/// `kind = "kafka"`.
pub const KIND: &str = "kafka";
/// Default `batch.max_events`: messages in flight per attempt.
pub const DEFAULT_BATCH_MAX_EVENTS: usize = 2000;
/// Default `batch.max_size`: bytes of values per attempt (Kafka's default `message.max.bytes`
/// is about 1 MiB per partition batch).
pub const DEFAULT_BATCH_MAX_BYTES: u64 = 1024 * 1024;
/// Default `batch.max_wait` (librdkafka's `linger.ms` default).
pub const DEFAULT_LINGER: Duration = Duration::from_millis(5);
/// Default `timeout`: how long a produce request (and a connection) may go unanswered.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest topic name Kafka accepts.
const MAX_TOPIC_CHARS: usize = 249;
/// How often topic metadata (partition counts) is read again while all goes well.
const METADATA_MAX_AGE: Duration = Duration::from_secs(300);

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
    /// How long a request may go unanswered.
    pub timeout: Duration,
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
        let sasl = raw.sasl.as_ref().and_then(|s| s.decode(entry, errs));
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
        // rskafka verifies each broker by the host name it connects to (the bootstrap
        // address, then what the cluster advertises): another name cannot be asked for.
        if let (Some(t), Some(h)) = (&tls, &first_host)
            && &t.server_name != h
        {
            errs.at(
                why_span.clone(),
                entry.key("server_name"),
                "not supported by the kafka output: each broker is verified under the host name it is reached by",
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
        let dead_letter = ctx.dead_letter.clone();
        crate::output::delivery::start(
            output,
            move || KafkaTransport::new(name, settings, format, metrics, dead_letter),
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

/// Kafka's murmur2 (the Java client's `Utils.murmur2`), which its default partitioner hashes
/// keys with: producers in other languages that key by host then agree on the partition.
fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `key` among `partitions` (Kafka's default partitioner for keyed messages).
fn partition_of(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
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

/// How a `kafka` output sends.
struct KafkaTransport {
    name: Arc<str>,
    settings: KafkaSettings,
    format: Format,
    runtime: tokio::runtime::Runtime,
    tls: Option<Arc<rustls::ClientConfig>>,
    password: Option<String>,
    client: Option<Client>,
    /// Partition counts of the topics seen, and when they were read.
    partitions: HashMap<String, i32>,
    partitions_read: Option<std::time::Instant>,
    /// One client per partition written to (each follows its partition's leader).
    producers: HashMap<(String, i32), Arc<PartitionClient>>,
    /// Where keyless batches go next.
    round_robin: i32,
    metrics: Arc<OutputMetrics>,
    refusals: Refusals,
    topic_buf: String,
}

/// What became of one partition's batch.
enum Outcome {
    /// The broker acknowledged every message.
    Acked,
    /// Per message: acknowledged (`None`) or refused for good (`Some(why)`).
    Singly(Vec<Option<String>>),
    /// Nothing stored: try again later.
    Failed(String),
}

impl KafkaTransport {
    fn new(
        name: Arc<str>,
        settings: KafkaSettings,
        format: Format,
        metrics: Arc<OutputMetrics>,
        dead_letter: Option<DeadLetter>,
    ) -> anyhow::Result<KafkaTransport> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let tls = match &settings.tls {
            Some(c) => Some(crate::tls::client_config(c).map_err(|e| anyhow::anyhow!(e))?),
            None => None,
        };
        let password = match &settings.sasl {
            Some(s) => Some(
                crate::output::http_client::read_secret(&s.password_file)
                    .map_err(|e| anyhow::anyhow!("sasl.password_file: {e}"))?,
            ),
            None => None,
        };
        let refusals = Refusals::new(name.clone(), metrics.clone(), dead_letter);
        Ok(KafkaTransport {
            name,
            settings,
            format,
            runtime,
            tls,
            password,
            client: None,
            partitions: HashMap::new(),
            partitions_read: None,
            producers: HashMap::new(),
            round_robin: 0,
            metrics,
            refusals,
            topic_buf: String::new(),
        })
    }

    /// Connects to the cluster (a bootstrap broker answers the metadata request).
    fn connect(&mut self) -> Result<(), String> {
        if self.client.is_some() {
            return Ok(());
        }
        let mut builder = ClientBuilder::new(self.settings.brokers.clone())
            .client_id(format!("sluice-{}", self.name))
            // rskafka retries within a call; the backlog's own backoff takes over after this.
            .backoff_config(rskafka::BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
                deadline: Some(self.settings.timeout),
            });
        if let Some(t) = &self.tls {
            builder = builder.tls_config(t.clone());
        }
        if let (Some(s), Some(p)) = (&self.settings.sasl, &self.password) {
            let c = Credentials::new(s.user.clone(), p.clone());
            builder = builder.sasl_config(match s.mechanism {
                SaslMechanism::Plain => SaslConfig::Plain(c),
                SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(c),
                SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(c),
            });
        }
        let timeout = self.settings.timeout;
        let client = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, builder.build()).await })
            .map_err(|_| format!("no broker answered within {}s", timeout.as_secs()))?
            .map_err(|e| format!("connecting to {}: {e}", self.settings.brokers.join(",")))?;
        metrics::add(&self.metrics.reconnects, 1);
        tracing::info!(output = %self.name, brokers = %self.settings.brokers.join(","), "connected to the Kafka cluster");
        self.client = Some(client);
        self.partitions.clear();
        self.partitions_read = None;
        self.producers.clear();
        Ok(())
    }

    /// Drops every connection: the next attempt connects afresh.
    fn disconnect(&mut self) {
        self.client = None;
        self.producers.clear();
    }

    /// Reads the topics' partition counts.
    fn read_partitions(&mut self) -> Result<(), String> {
        let Some(client) = &self.client else {
            return Err("not connected".into());
        };
        let timeout = self.settings.timeout;
        let topics = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, client.list_topics()).await })
            .map_err(|_| format!("no metadata within {}s", timeout.as_secs()))?
            .map_err(|e| format!("reading topic metadata: {e}"))?;
        self.partitions = topics
            .into_iter()
            .map(|t| (t.name, t.partitions.len() as i32))
            .collect();
        self.partitions_read = Some(std::time::Instant::now());
        Ok(())
    }

    /// The partition client of `topic`/`partition`, made (and its leader found) if needed.
    fn producer(&mut self, topic: &str, partition: i32) -> Result<Arc<PartitionClient>, String> {
        if let Some(p) = self.producers.get(&(topic.to_string(), partition)) {
            return Ok(p.clone());
        }
        let Some(client) = &self.client else {
            return Err("not connected".into());
        };
        let timeout = self.settings.timeout;
        let p = self
            .runtime
            .block_on(async {
                tokio::time::timeout(
                    timeout,
                    client.partition_client(topic, partition, UnknownTopicHandling::Error),
                )
                .await
            })
            .map_err(|_| {
                format!(
                    "{topic}/{partition}: no leader found within {}s",
                    timeout.as_secs()
                )
            })?
            .map_err(|e| format!("{topic}/{partition}: {e}"))?;
        let p = Arc::new(p);
        self.producers
            .insert((topic.to_string(), partition), p.clone());
        Ok(p)
    }
}

/// Whether the broker refused a message for good: sending it again cannot succeed.
fn refused_for_good(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::ServerError {
            protocol_error: ProtocolError::MessageTooLarge
                | ProtocolError::RecordListTooLarge
                | ProtocolError::InvalidRecord
                | ProtocolError::CorruptMessage,
            ..
        }
    )
}

fn compression(c: CompressionKind) -> Compression {
    match c {
        CompressionKind::None => Compression::NoCompression,
        CompressionKind::Gzip => Compression::Gzip,
        CompressionKind::Snappy => Compression::Snappy,
        CompressionKind::Lz4 => Compression::Lz4,
        CompressionKind::Zstd => Compression::Zstd,
    }
}

/// Produces one partition's batch; a batch too large is sent again message by message.
async fn produce(
    client: Arc<PartitionClient>,
    records: Vec<Record>,
    compression: Compression,
    timeout: Duration,
) -> Outcome {
    let label = format!("{}/{}", client.topic(), client.partition());
    let n = records.len();
    let single = if n > 1 { Some(records.clone()) } else { None };
    match tokio::time::timeout(timeout, client.produce(records, compression)).await {
        Err(_) => Outcome::Failed(format!(
            "{label}: no acknowledgment within {}s",
            timeout.as_secs()
        )),
        Ok(Ok(_)) => Outcome::Acked,
        Ok(Err(e)) if refused_for_good(&e) => {
            let Some(records) = single else {
                return Outcome::Singly(vec![Some(format!("{label}: {e}"))]);
            };
            // Which message made the batch too large is not said: each goes alone.
            let mut each = Vec::with_capacity(n);
            for r in records {
                match tokio::time::timeout(timeout, client.produce(vec![r], compression)).await {
                    Ok(Ok(_)) => each.push(None),
                    Ok(Err(e)) if refused_for_good(&e) => each.push(Some(format!("{label}: {e}"))),
                    Ok(Err(e)) => return Outcome::Failed(format!("{label}: {e}")),
                    Err(_) => {
                        return Outcome::Failed(format!(
                            "{label}: no acknowledgment within {}s",
                            timeout.as_secs()
                        ));
                    }
                }
            }
            Outcome::Singly(each)
        }
        Ok(Err(e)) => Outcome::Failed(format!("{label}: {e}")),
    }
}

impl Transport for KafkaTransport {
    fn encode(&self, ev: &Event, out: &mut Vec<u8>) {
        let mut topic = String::new();
        self.settings.topic.expand(ev, &mut topic);
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

    fn send(&mut self, records: &[Vec<u8>]) -> Attempt {
        if let Err(error) = self.connect() {
            return Attempt::Failed {
                error,
                retry_after: None,
            };
        }
        let records = &records[..self.settings.batch.fitting(records, 0)];
        let now = chrono::Utc::now();
        // Group by (topic, partition), keeping each group in backlog order.
        let mut groups: Vec<((String, i32), Vec<usize>)> = Vec::new();
        let mut malformed = Vec::new();
        let mut failed_at: Option<(usize, String)> = None;
        let stale = self
            .partitions_read
            .is_none_or(|t| t.elapsed() >= METADATA_MAX_AGE);
        if stale && let Err(error) = self.read_partitions() {
            self.disconnect();
            return Attempt::Failed {
                error,
                retry_after: None,
            };
        }
        let keyless = self.round_robin;
        for (i, r) in records.iter().enumerate() {
            let Some(Parts { topic, key, .. }) = read_record(r) else {
                malformed.push(i);
                continue;
            };
            self.topic_buf.clear();
            self.topic_buf.push_str(topic);
            let count = match self.partitions.get(topic) {
                Some(&n) if n > 0 => n,
                _ => {
                    // A topic created since: read the metadata once more.
                    let _ = self.read_partitions();
                    match self.partitions.get(topic) {
                        Some(&n) if n > 0 => n,
                        _ => {
                            failed_at.get_or_insert((
                                i,
                                format!("topic {topic:?} does not exist on the cluster (sluice does not create topics)"),
                            ));
                            break;
                        }
                    }
                }
            };
            let partition = match key {
                Some(k) => partition_of(k, count),
                None => keyless.rem_euclid(count),
            };
            let id = (self.topic_buf.clone(), partition);
            match groups.iter_mut().find(|(g, _)| *g == id) {
                Some((_, v)) => v.push(i),
                None => groups.push((id, vec![i])),
            }
        }
        self.round_robin = self.round_robin.wrapping_add(1);
        // Only records before the first unsendable one are sent.
        let limit = failed_at.as_ref().map_or(records.len(), |(i, _)| *i);
        let mut tasks = Vec::new();
        for ((topic, partition), idx) in &groups {
            let producer = match self.producer(topic, *partition) {
                Ok(p) => p,
                Err(e) => {
                    let first = idx[0];
                    if failed_at.as_ref().is_none_or(|(i, _)| first < *i) {
                        failed_at = Some((first, e));
                    }
                    continue;
                }
            };
            let batch: Vec<Record> = idx
                .iter()
                .filter(|&&i| i < limit)
                .map(|&i| {
                    let Parts { key, value, .. } =
                        read_record(&records[i]).expect("grouped records parse");
                    Record {
                        key: key.map(<[u8]>::to_vec),
                        value: Some(value.to_vec()),
                        headers: Default::default(),
                        timestamp: now,
                    }
                })
                .collect();
            if batch.is_empty() {
                continue;
            }
            metrics::add(&self.metrics.produced, batch.len() as u64);
            tasks.push((idx.clone(), producer, batch));
        }
        let in_flight: usize = tasks.iter().map(|(_, _, b)| b.len()).sum();
        metrics::set(&self.metrics.in_flight, in_flight as u64);
        let (compression, timeout) = (
            compression(self.settings.compression),
            self.settings.timeout,
        );
        let outcomes: Vec<(Vec<usize>, Outcome)> = self.runtime.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for (n, (_, producer, batch)) in tasks.iter().enumerate() {
                let (producer, batch) = (producer.clone(), batch.clone());
                set.spawn(async move { (n, produce(producer, batch, compression, timeout).await) });
            }
            let mut out: Vec<Option<Outcome>> = (0..tasks.len()).map(|_| None).collect();
            while let Some(r) = set.join_next().await {
                if let Ok((n, o)) = r {
                    out[n] = Some(o);
                }
            }
            tasks
                .iter()
                .zip(out)
                .map(|((idx, _, _), o)| {
                    (
                        idx.clone(),
                        o.unwrap_or(Outcome::Failed("produce task ended".into())),
                    )
                })
                .collect()
        });
        metrics::set(&self.metrics.in_flight, 0);
        // Each record: acknowledged (Some(None)), refused (Some(Some(why))) or not (None).
        let mut state: Vec<Option<Option<String>>> = vec![None; records.len()];
        for &i in &malformed {
            state[i] = Some(Some("not a kafka backlog record".into()));
        }
        let mut broken = false;
        for (idx, outcome) in outcomes {
            let idx: Vec<usize> = idx.into_iter().filter(|&i| i < limit).collect();
            match outcome {
                Outcome::Acked => idx.iter().for_each(|&i| state[i] = Some(None)),
                Outcome::Singly(each) => {
                    for (&i, o) in idx.iter().zip(each) {
                        state[i] = Some(o);
                    }
                }
                Outcome::Failed(e) => {
                    broken = true;
                    let first = idx[0];
                    if failed_at.as_ref().is_none_or(|(i, _)| first < *i) {
                        failed_at = Some((first, e));
                    }
                }
            }
        }
        if broken {
            // rskafka reconnects by itself, but a restarted cluster is best met afresh.
            self.disconnect();
        }
        let taken = state.iter().take_while(|s| s.is_some()).count();
        if taken == 0 {
            let error = failed_at.map_or_else(|| "nothing was acknowledged".into(), |(_, e)| e);
            return Attempt::Failed {
                error,
                retry_after: None,
            };
        }
        let mut accepted = 0;
        for (r, s) in records[..taken].iter().zip(&state[..taken]) {
            match s {
                Some(None) => accepted += 1,
                Some(Some(why)) => {
                    let value = read_record(r).map_or(r.as_slice(), |p| p.value);
                    self.refusals.refuse(1, &[value], why);
                }
                None => unreachable!("taken stops at the first unsent record"),
            }
        }
        if taken < records.len()
            && let Some((_, error)) = &failed_at
        {
            tracing::info!(output = %self.name, acknowledged = taken, error = %error,
                "part of the batch failed; the rest is sent again after the backoff");
        }
        Attempt::Done { taken, accepted }
    }

    fn close(&mut self) {
        self.disconnect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Values of org.apache.kafka.common.utils.Utils.murmur2, as Kafka's own tests list
        // them (UtilsTest.testMurmur2).
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }

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

    #[test]
    fn one_key_always_lands_in_one_partition() {
        let p = partition_of(b"web1", 3);
        assert!((0..3).contains(&p));
        assert_eq!(partition_of(b"web1", 3), p);
        assert_eq!(partition_of(b"anything", 1), 0);
    }
}
