//! An in-memory Grafana Loki for the `loki` output's tests: `POST /loki/api/v1/push` as Loki's
//! HTTP API reference documents it, on the scripted HTTP server (support/http_server.rs), so
//! its failures (no answer, RST, down/up) come for free.
//!
//! ```ignore
//! let loki = LokiServer::start();
//! let url = loki.url();                        // http://127.0.0.1:PORT, the path appended by clients
//! loki.set_window(Duration::from_secs(60));    // "entry too far behind" past 60 s
//! loki.set_requests(|_, push| if push < 3 { Fate::Refuse(rate_limited(Some(1))) } else { Fate::Apply });
//! let streams = loki.streams();                // (labels, tenant, entries) in the order created
//! ```
//!
//! What it implements, and how it answers (each as Loki does):
//! - Bodies: `Content-Type: application/x-protobuf` (or none) is a snappy *block* (not framed)
//!   compressed `logproto.PushRequest`, decoded for real: `PushRequest { repeated StreamAdapter
//!   streams = 1 }`, `StreamAdapter { string labels = 1; repeated EntryAdapter entries = 2;
//!   uint64 hash = 3 }`, `EntryAdapter { Timestamp timestamp = 1 { int64 seconds = 1; int32
//!   nanos = 2 }; string line = 2; repeated LabelPairAdapter structuredMetadata = 3 { string
//!   name = 1; string value = 2 } }`; unknown fields are skipped. `application/json` (gzip
//!   allowed, `Content-Encoding: gzip`) is `{"streams":[{"stream":{"k":"v"},"values":[["<ns>",
//!   "line", {"meta":"v"}]]}]}`, the timestamp a string of nanoseconds, the metadata optional.
//!   Any other Content-Type gets 415 (Loki would read it as protobuf; this server is stricter).
//!   A body that does not decode gets 400 with the reason.
//! - Labels are a Prometheus selector, `{app_name="sshd", hostname="web1"}`: names
//!   `[a-zA-Z_][a-zA-Z0-9_]*`, values double-quoted with `\"`, `\\`, `\n`, `\t` escapes. A stream
//!   whose labels do not parse, are empty, repeat a name or hold more than the label names limit
//!   (default 15) is refused whole: "entry for stream '...' has 16 label names; limit 15".
//! - Entries: a line over the line size limit is refused ("Max entry size '...' bytes exceeded
//!   for stream '...' while adding an entry with length '...' bytes"). Within a stream (labels
//!   and tenant), an entry older than the stream's newest entry by more than the window
//!   (default 1 h, Loki's `max_chunk_age / 2`) is refused "entry too far behind, entry timestamp
//!   is: ..., oldest acceptable timestamp is: ..."; with unordered writes off, an entry older
//!   than the stream's last one is refused "entry out of order". The newest entry moves as the
//!   push's own entries are stored, in the order sent. An entry identical (timestamp and line)
//!   to one the stream holds is dropped silently, as Loki drops duplicates.
//! - Answers: 204 No Content when every entry was stored. Otherwise the valid entries are stored
//!   and the answer is 400 (text/plain) listing the refused ones, at most 10 lines (Loki's
//!   `max_returned_stream_errors`) "entry with timestamp ... ignored, reason: '...' for stream:
//!   {...},", then "total ignored: N out of M" (M: the entries of the push).
//! - Tenants: `X-Scope-OrgID` is recorded per stream (streams of two tenants are two streams);
//!   with [`LokiServer::set_require_tenant`] a push without it gets 401 "no org id".
//! - The request script ([`LokiServer::set_requests`]) refuses a push with any [`Reply`]: 429
//!   "Ingestion rate limit exceeded" ([`rate_limited`]), 5xx, a response that never comes, a
//!   reset mid-body; or stores it and answers something else ([`Fate::ApplyThen`]).
//! - `GET /ready` answers 200 "ready"; other paths 404, other methods on the push path 405.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::Value;

use super::http_server::{HttpServer, Recorded, Reply};

/// The push endpoint.
pub const PUSH_PATH: &str = "/loki/api/v1/push";

/// A stream's labels, by name.
pub type Labels = BTreeMap<String, String>;

/// One log entry as pushed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Nanoseconds since the epoch.
    pub ts_ns: i64,
    pub line: String,
    /// Its structured metadata, by name.
    pub metadata: BTreeMap<String, String>,
}

/// How a push's body was encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Snappy-compressed protobuf.
    Protobuf,
    Json,
}

/// What becomes of one push request as a whole.
#[derive(Clone, Debug)]
pub enum Fate {
    /// Validate and store its entries, and answer as Loki does.
    Apply,
    /// Store nothing; answer this ([`Reply::Reset`] cuts the request mid-body, [`Reply::Hang`]
    /// never answers).
    Refuse(Reply),
    /// Store its valid entries, then answer this instead: the client cannot know.
    ApplyThen(Reply),
}

/// One stream of a push as received.
#[derive(Clone, Debug)]
pub struct PushedStream {
    /// The labels string as sent (for JSON, the selector the `stream` object makes).
    pub labels_text: String,
    /// The labels parsed, or why they do not parse.
    pub labels: Result<Labels, String>,
    pub entries: Vec<Entry>,
}

/// One push request as received.
#[derive(Clone, Debug)]
pub struct PushRecord {
    /// Its rank among push requests, from 0.
    pub push: usize,
    /// Its rank among every HTTP request (`Recorded::n`).
    pub n: usize,
    /// `None` when the body could not be decoded.
    pub encoding: Option<Encoding>,
    pub tenant: Option<String>,
    /// Its streams; empty when the body could not be decoded.
    pub streams: Vec<PushedStream>,
    /// Whether its entries were validated and stored.
    pub applied: bool,
    /// Entries refused (when applied).
    pub ignored: usize,
    /// The reasons of the refused entries, one per entry (or per refused stream), in full.
    pub reasons: Vec<String>,
    /// The status answered, `None` when none was (reset, hang).
    pub status: Option<u16>,
    /// The body answered.
    pub response: String,
}

impl PushRecord {
    /// How many entries it carried.
    pub fn entry_count(&self) -> usize {
        self.streams.iter().map(|s| s.entries.len()).sum()
    }
}

/// One stream as stored: its labels, its tenant (`X-Scope-OrgID`) and its entries in the
/// order stored.
pub type StoredStream = (Labels, Option<String>, Vec<Entry>);

type RequestScript = Arc<dyn Fn(&Recorded, usize) -> Fate + Send + Sync>;

struct Settings {
    max_label_names: usize,
    max_line_size: Option<usize>,
    window: Duration,
    unordered_writes: bool,
    require_tenant: bool,
    requests: RequestScript,
}

struct StreamData {
    labels: Labels,
    tenant: Option<String>,
    entries: Vec<Entry>,
    /// The newest timestamp stored.
    highest: Option<i64>,
    /// The timestamp of the last entry stored.
    last: Option<i64>,
    held: HashSet<(i64, String)>,
}

#[derive(Default)]
struct Store {
    streams: Vec<StreamData>,
    /// (tenant, canonical labels) -> index in `streams`.
    by_key: HashMap<(Option<String>, String), usize>,
    /// HTTP rank -> push rank.
    push_rank: HashMap<usize, usize>,
    next_push: usize,
    pushes: Vec<PushRecord>,
    duplicates: usize,
}

struct Inner {
    settings: RwLock<Settings>,
    store: Mutex<Store>,
}

/// The Loki stand-in; see the module's doc.
pub struct LokiServer {
    http: HttpServer,
    inner: Arc<Inner>,
}

impl LokiServer {
    /// A plain HTTP server that stores every valid push, with Loki's default limits.
    pub fn start() -> LokiServer {
        let inner = Arc::new(Inner {
            settings: RwLock::new(Settings {
                max_label_names: 15,
                max_line_size: Some(256 << 10),
                window: Duration::from_secs(3600),
                unordered_writes: true,
                require_tenant: false,
                requests: Arc::new(|_, _| Fate::Apply),
            }),
            store: Mutex::new(Store::default()),
        });
        let i = inner.clone();
        let http = HttpServer::start(move |rec, n| i.answer(rec, n));
        LokiServer { http, inner }
    }

    /// The HTTP server underneath: its requests, `down()`, `up()`...
    pub fn http(&self) -> &HttpServer {
        &self.http
    }

    /// `http://127.0.0.1:PORT` (no path: clients append `/loki/api/v1/push`).
    pub fn url(&self) -> String {
        self.http.url("")
    }

    pub fn addr(&self) -> SocketAddr {
        self.http.addr()
    }

    /// Connections refused until [`LokiServer::up`]; the store is kept.
    pub fn down(&self) {
        self.http.down();
    }

    pub fn up(&self) {
        self.http.up();
    }

    /// Streams with more label names than this are refused (Loki's
    /// `max_label_names_per_series`, 15 by default).
    pub fn set_max_label_names(&self, n: usize) {
        self.inner.settings.write().unwrap().max_label_names = n;
    }

    /// Lines longer than this (bytes) are refused (`max_line_size`; 256 KiB by default).
    pub fn set_max_line_size(&self, max: Option<usize>) {
        self.inner.settings.write().unwrap().max_line_size = max;
    }

    /// Entries older than their stream's newest by more than this are "too far behind".
    pub fn set_window(&self, window: Duration) {
        self.inner.settings.write().unwrap().window = window;
    }

    /// Off: an entry older than its stream's last is "entry out of order" (on by default, as
    /// Loki's `unordered_writes`).
    pub fn set_unordered_writes(&self, on: bool) {
        self.inner.settings.write().unwrap().unordered_writes = on;
    }

    /// On: a push without `X-Scope-OrgID` gets 401 (Loki with `auth_enabled`).
    pub fn set_require_tenant(&self, on: bool) {
        self.inner.settings.write().unwrap().require_tenant = on;
    }

    /// Decides each push's [`Fate`] from the request and its rank among pushes. As the HTTP
    /// server's script, it is asked once when the head arrives (the body empty), where only
    /// `Fate::Refuse(Reply::Reset)` is acted on, then with the whole body.
    pub fn set_requests(&self, script: impl Fn(&Recorded, usize) -> Fate + Send + Sync + 'static) {
        self.inner.settings.write().unwrap().requests = Arc::new(script);
    }

    /// Every stream stored: labels, tenant, entries in the order stored; in the order created.
    pub fn streams(&self) -> Vec<StoredStream> {
        let store = self.inner.store.lock().unwrap();
        store
            .streams
            .iter()
            .map(|s| (s.labels.clone(), s.tenant.clone(), s.entries.clone()))
            .collect()
    }

    /// Every entry stored, stream after stream.
    pub fn entries(&self) -> Vec<Entry> {
        let store = self.inner.store.lock().unwrap();
        store
            .streams
            .iter()
            .flat_map(|s| s.entries.iter().cloned())
            .collect()
    }

    /// How many entries are stored.
    pub fn entry_count(&self) -> usize {
        let store = self.inner.store.lock().unwrap();
        store.streams.iter().map(|s| s.entries.len()).sum()
    }

    /// How many distinct label sets were stored (whatever the tenant).
    pub fn label_sets(&self) -> usize {
        let store = self.inner.store.lock().unwrap();
        store
            .streams
            .iter()
            .map(|s| &s.labels)
            .collect::<HashSet<_>>()
            .len()
    }

    /// How many distinct label sets were ever sent, stored or not (the same labels in another
    /// order are the same set).
    pub fn label_sets_sent(&self) -> usize {
        let store = self.inner.store.lock().unwrap();
        store
            .pushes
            .iter()
            .flat_map(|p| &p.streams)
            .map(|s| s.labels.as_ref().map_or(s.labels_text.clone(), canonical))
            .collect::<HashSet<_>>()
            .len()
    }

    /// Every push received whole, in order.
    pub fn pushes(&self) -> Vec<PushRecord> {
        self.inner.store.lock().unwrap().pushes.clone()
    }

    /// Every HTTP request received, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.http.requests()
    }

    /// Entries refused over every applied push (the sum of their "total ignored").
    pub fn ignored(&self) -> usize {
        let store = self.inner.store.lock().unwrap();
        store.pushes.iter().map(|p| p.ignored).sum()
    }

    /// Entries dropped as duplicates of stored ones.
    pub fn duplicates(&self) -> usize {
        self.inner.store.lock().unwrap().duplicates
    }
}

/// 429 as Loki's rate limiter answers it, with `Retry-After: secs` if given.
pub fn rate_limited(retry_after: Option<u64>) -> Reply {
    let r = text(
        429,
        "Ingestion rate limit exceeded for user fake (limit: 4194304 bytes/sec) while attempting \
         to ingest '1000' lines totaling '102400' bytes, reduce log volume or contact your Loki \
         administrator to see if the limit can be increased",
    );
    match retry_after {
        Some(s) => r.header("retry-after", &s.to_string()),
        None => r,
    }
}

/// 503 as a Loki distributor answers with no healthy ingester.
pub fn unavailable() -> Reply {
    text(
        503,
        "rpc error: code = Unavailable desc = at least 2 live replicas required, could only find 0",
    )
}

/// 500 for the whole push.
pub fn internal_error() -> Reply {
    text(
        500,
        "rpc error: code = Internal desc = internal server error",
    )
}

/// A plain text answer as Go's `http.Error` writes it (a trailing newline).
fn text(code: u16, body: &str) -> Reply {
    Reply::Status {
        code,
        headers: vec![
            ("content-type".into(), "text/plain; charset=utf-8".into()),
            ("x-content-type-options".into(), "nosniff".into()),
        ],
        body: format!("{body}\n"),
    }
}

impl Inner {
    /// The HTTP server's script: see [`super::http_server::Script`].
    fn answer(&self, rec: &Recorded, n: usize) -> Reply {
        let path = rec.path.split('?').next().unwrap_or("");
        if path != PUSH_PATH {
            if path == "/ready" && rec.method == "GET" {
                return text(200, "ready");
            }
            return text(404, "404 page not found");
        }
        let push = {
            let mut store = self.store.lock().unwrap();
            let next = store.next_push;
            let rank = *store.push_rank.entry(n).or_insert(next);
            if rank == next {
                store.next_push += 1;
            }
            rank
        };
        let (script, require_tenant) = {
            let s = self.settings.read().unwrap();
            (s.requests.clone(), s.require_tenant)
        };
        if !rec.complete {
            return match script(rec, push) {
                Fate::Refuse(Reply::Reset) => Reply::Reset,
                _ => Reply::ok(),
            };
        }
        let tenant = rec
            .header("x-scope-orgid")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        let mut record = PushRecord {
            push,
            n,
            encoding: None,
            tenant: tenant.clone(),
            streams: Vec::new(),
            applied: false,
            ignored: 0,
            reasons: Vec::new(),
            status: None,
            response: String::new(),
        };
        let reply = if rec.method != "POST" {
            text(405, "method not allowed")
        } else if require_tenant && tenant.is_none() {
            text(401, "no org id")
        } else {
            match decode(rec) {
                Err(reply) => reply,
                Ok((encoding, streams)) => {
                    record.encoding = Some(encoding);
                    record.streams = streams;
                    match script(rec, push) {
                        Fate::Refuse(reply) => reply,
                        Fate::Apply => self.apply(&mut record),
                        Fate::ApplyThen(reply) => {
                            self.apply(&mut record);
                            reply
                        }
                    }
                }
            }
        };
        if let Reply::Status { code, body, .. } = &reply {
            record.status = Some(*code);
            record.response = body.clone();
        }
        self.store.lock().unwrap().pushes.push(record);
        reply
    }

    /// Validates and stores the push's entries; returns Loki's answer.
    fn apply(&self, record: &mut PushRecord) -> Reply {
        let (max_label_names, max_line_size, window, unordered) = {
            let s = self.settings.read().unwrap();
            (
                s.max_label_names,
                s.max_line_size,
                s.window.as_nanos() as i64,
                s.unordered_writes,
            )
        };
        record.applied = true;
        let total = record.entry_count();
        // (timestamp, reason, stream) of each refused entry, in order.
        let mut refused: Vec<(i64, String, String)> = Vec::new();
        let mut store = self.store.lock().unwrap();
        for stream in &record.streams {
            let labels = match &stream.labels {
                Err(e) => {
                    for e2 in &stream.entries {
                        refused.push((e2.ts_ns, e.clone(), stream.labels_text.clone()));
                    }
                    continue;
                }
                Ok(l) => l,
            };
            let name = canonical(labels);
            if labels.len() > max_label_names {
                let reason = format!(
                    "entry for stream '{name}' has {} label names; limit {max_label_names}",
                    labels.len()
                );
                for e in &stream.entries {
                    refused.push((e.ts_ns, reason.clone(), name.clone()));
                }
                continue;
            }
            let key = (record.tenant.clone(), name.clone());
            let idx = match store.by_key.get(&key) {
                Some(&i) => i,
                None => {
                    store.streams.push(StreamData {
                        labels: labels.clone(),
                        tenant: record.tenant.clone(),
                        entries: Vec::new(),
                        highest: None,
                        last: None,
                        held: HashSet::new(),
                    });
                    let i = store.streams.len() - 1;
                    store.by_key.insert(key, i);
                    i
                }
            };
            for e in &stream.entries {
                if let Some(max) = max_line_size
                    && e.line.len() > max
                {
                    refused.push((
                        e.ts_ns,
                        format!(
                            "Max entry size '{max}' bytes exceeded for stream '{name}' while adding an entry with length '{}' bytes",
                            e.line.len()
                        ),
                        name.clone(),
                    ));
                    continue;
                }
                let s = &mut store.streams[idx];
                if s.held.contains(&(e.ts_ns, e.line.clone())) {
                    store.duplicates += 1;
                    continue;
                }
                if !unordered && s.last.is_some_and(|last| e.ts_ns < last) {
                    refused.push((e.ts_ns, "entry out of order".into(), name.clone()));
                    continue;
                }
                if unordered
                    && let Some(highest) = s.highest
                    && e.ts_ns < highest - window
                {
                    refused.push((
                        e.ts_ns,
                        format!(
                            "entry too far behind, entry timestamp is: {}, oldest acceptable timestamp is: {}",
                            rfc3339(e.ts_ns),
                            rfc3339(highest - window)
                        ),
                        name.clone(),
                    ));
                    continue;
                }
                s.highest = Some(s.highest.map_or(e.ts_ns, |h| h.max(e.ts_ns)));
                s.last = Some(e.ts_ns);
                s.held.insert((e.ts_ns, e.line.clone()));
                s.entries.push(e.clone());
            }
        }
        record.ignored = refused.len();
        record.reasons = refused.iter().map(|(_, r, _)| r.clone()).collect();
        if refused.is_empty() {
            return Reply::status(204);
        }
        let mut body = String::new();
        for (ts, reason, stream) in refused.iter().take(10) {
            body.push_str(&format!(
                "entry with timestamp {} ignored, reason: '{reason}' for stream: {stream},\n",
                go_time(*ts)
            ));
        }
        body.push_str(&format!("total ignored: {} out of {total}", refused.len()));
        text(400, &body)
    }
}

/// Labels as Loki writes them: `{a="x", b="y"}`, sorted by name.
pub fn canonical(labels: &Labels) -> String {
    let pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", pairs.join(", "))
}

/// A timestamp as Go's `time.Time.String()` writes one in UTC.
fn go_time(ns: i64) -> String {
    let t = chrono::DateTime::from_timestamp_nanos(ns);
    format!("{} +0000 UTC", t.format("%Y-%m-%d %H:%M:%S%.f"))
}

/// A timestamp as Go's `time.RFC3339` writes one (seconds).
fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Decodes a push body by its Content-Type.
fn decode(rec: &Recorded) -> Result<(Encoding, Vec<PushedStream>), Reply> {
    let ct = rec.header("content-type").unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "" | "application/x-protobuf" => {
            let raw = snap::raw::Decoder::new()
                .decompress_vec(&rec.body)
                .map_err(|e| text(400, &format!("snappy: {e}")))?;
            let streams = decode_push_request(&raw)
                .map_err(|e| text(400, &format!("proto: PushRequest: {e}")))?;
            Ok((Encoding::Protobuf, streams))
        }
        "application/json" => {
            let streams = decode_json(&rec.body).map_err(|e| text(400, &e))?;
            Ok((Encoding::Json, streams))
        }
        _ => Err(text(
            415,
            &format!("unsupported Content-Type {ct:?}: application/x-protobuf or application/json"),
        )),
    }
}

/// A protobuf field's value.
enum Wire<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32,
}

/// Reads protobuf fields from a buffer.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| "unexpected end of a varint".to_string())?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a varint over 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("a field of {n} bytes past the end"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next field (number, value), `None` at the end.
    fn field(&mut self) -> Result<Option<(u64, Wire<'a>)>, String> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (number, wire) = (key >> 3, key & 7);
        if number == 0 {
            return Err("field number 0".into());
        }
        let value = match wire {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed64
            }
            2 => {
                let n = self.varint()?;
                Wire::Bytes(self.take(usize::try_from(n).map_err(|_| "a huge length")?)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed32
            }
            w => return Err(format!("wire type {w} (field {number})")),
        };
        Ok(Some((number, value)))
    }
}

fn utf8(b: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| format!("{what}: invalid UTF-8"))
}

fn decode_push_request(buf: &[u8]) -> Result<Vec<PushedStream>, String> {
    let mut r = Reader::new(buf);
    let mut streams = Vec::new();
    while let Some((n, v)) = r.field()? {
        match (n, v) {
            (1, Wire::Bytes(b)) => streams.push(decode_stream(b)?),
            (1, _) => return Err("streams: wrong wire type".into()),
            _ => {}
        }
    }
    Ok(streams)
}

fn decode_stream(buf: &[u8]) -> Result<PushedStream, String> {
    let mut r = Reader::new(buf);
    let mut labels_text = String::new();
    let mut entries = Vec::new();
    while let Some((n, v)) = r.field()? {
        match (n, v) {
            (1, Wire::Bytes(b)) => labels_text = utf8(b, "labels")?,
            (2, Wire::Bytes(b)) => entries.push(decode_entry(b)?),
            (3, Wire::Varint(_)) => {}
            (1..=3, _) => return Err(format!("StreamAdapter field {n}: wrong wire type")),
            _ => {}
        }
    }
    Ok(PushedStream {
        labels: parse_labels(&labels_text),
        labels_text,
        entries,
    })
}

fn decode_entry(buf: &[u8]) -> Result<Entry, String> {
    let mut r = Reader::new(buf);
    let mut entry = Entry {
        ts_ns: 0,
        line: String::new(),
        metadata: BTreeMap::new(),
    };
    while let Some((n, v)) = r.field()? {
        match (n, v) {
            (1, Wire::Bytes(b)) => entry.ts_ns = decode_timestamp(b)?,
            (2, Wire::Bytes(b)) => entry.line = utf8(b, "line")?,
            (3, Wire::Bytes(b)) => {
                let (k, v) = decode_pair(b)?;
                entry.metadata.insert(k, v);
            }
            (1..=3, _) => return Err(format!("EntryAdapter field {n}: wrong wire type")),
            _ => {}
        }
    }
    Ok(entry)
}

fn decode_timestamp(buf: &[u8]) -> Result<i64, String> {
    let mut r = Reader::new(buf);
    let (mut seconds, mut nanos) = (0i64, 0i64);
    while let Some((n, v)) = r.field()? {
        match (n, v) {
            // int64 and int32 are varints of their two's complement (64 bits).
            (1, Wire::Varint(x)) => seconds = x as i64,
            (2, Wire::Varint(x)) => nanos = i64::from(x as i64 as i32),
            (1 | 2, _) => return Err(format!("Timestamp field {n}: wrong wire type")),
            _ => {}
        }
    }
    if !(0..1_000_000_000).contains(&nanos) {
        return Err(format!("Timestamp nanos {nanos} out of range"));
    }
    seconds
        .checked_mul(1_000_000_000)
        .and_then(|s| s.checked_add(nanos))
        .ok_or_else(|| format!("Timestamp {seconds}s out of range"))
}

fn decode_pair(buf: &[u8]) -> Result<(String, String), String> {
    let mut r = Reader::new(buf);
    let (mut name, mut value) = (String::new(), String::new());
    while let Some((n, v)) = r.field()? {
        match (n, v) {
            (1, Wire::Bytes(b)) => name = utf8(b, "name")?,
            (2, Wire::Bytes(b)) => value = utf8(b, "value")?,
            (1 | 2, _) => return Err(format!("LabelPairAdapter field {n}: wrong wire type")),
            _ => {}
        }
    }
    Ok((name, value))
}

fn decode_json(body: &[u8]) -> Result<Vec<PushedStream>, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("error parsing JSON push: {e}"))?;
    let streams = v
        .get("streams")
        .and_then(Value::as_array)
        .ok_or("no \"streams\" array")?;
    let mut out = Vec::new();
    for s in streams {
        let labels: Labels = s
            .get("stream")
            .and_then(Value::as_object)
            .ok_or("a stream without a \"stream\" object")?
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|v| (k.clone(), v.to_string()))
                    .ok_or_else(|| format!("label {k}: not a string"))
            })
            .collect::<Result<_, _>>()?;
        let mut entries = Vec::new();
        for value in s
            .get("values")
            .and_then(Value::as_array)
            .ok_or("a stream without a \"values\" array")?
        {
            let a = value.as_array().ok_or("a value that is not an array")?;
            if !(2..=3).contains(&a.len()) {
                return Err(format!("a value of {} elements", a.len()));
            }
            let ts_ns = a[0]
                .as_str()
                .ok_or("a timestamp that is not a string")?
                .parse::<i64>()
                .map_err(|e| format!("timestamp {}: {e}", a[0]))?;
            let line = a[1].as_str().ok_or("a line that is not a string")?;
            let mut metadata = BTreeMap::new();
            if let Some(m) = a.get(2) {
                for (k, v) in m.as_object().ok_or("structured metadata not an object")? {
                    let v = v
                        .as_str()
                        .ok_or_else(|| format!("structured metadata {k}: not a string"))?;
                    metadata.insert(k.clone(), v.to_string());
                }
            }
            entries.push(Entry {
                ts_ns,
                line: line.to_string(),
                metadata,
            });
        }
        let labels_text = canonical(&labels);
        let labels = if labels.is_empty() {
            Err("error at least one label pair is required per stream".into())
        } else {
            labels
                .keys()
                .find(|k| !valid_label_name(k))
                .map_or(Ok(labels.clone()), |k| {
                    Err(format!("invalid label name {k:?} in {labels_text}"))
                })
        };
        out.push(PushedStream {
            labels_text,
            labels,
            entries,
        });
    }
    Ok(out)
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses a Prometheus selector of equality matchers, `{a="x", b="y"}`, into a map.
pub fn parse_labels(text: &str) -> Result<Labels, String> {
    let fail = |why: &str| Err(format!("error parsing labels '{text}' with error: {why}"));
    let s = text.trim();
    let Some(inner) = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
        return fail("not enclosed in braces");
    };
    let chars: Vec<char> = inner.chars().collect();
    let mut i = 0;
    let mut labels = Labels::new();
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i == chars.len() {
            break;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        let name: String = chars[start..i].iter().collect();
        if !valid_label_name(&name) {
            return fail(&format!("invalid label name {name:?}"));
        }
        skip_ws(&mut i);
        if chars.get(i) != Some(&'=') || chars.get(i + 1) == Some(&'~') {
            return fail(&format!("expected '=' after {name}"));
        }
        i += 1;
        skip_ws(&mut i);
        if chars.get(i) != Some(&'"') {
            return fail(&format!("expected a quoted value for {name}"));
        }
        i += 1;
        let mut value = String::new();
        loop {
            match chars.get(i) {
                None => return fail("unterminated quoted value"),
                Some('"') => {
                    i += 1;
                    break;
                }
                Some('\\') => {
                    value.push(match chars.get(i + 1) {
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('n') => '\n',
                        Some('t') => '\t',
                        other => return fail(&format!("invalid escape \\{other:?}")),
                    });
                    i += 2;
                }
                Some(&c) => {
                    value.push(c);
                    i += 1;
                }
            }
        }
        if labels.insert(name.clone(), value).is_some() {
            return fail(&format!("duplicate label name {name:?}"));
        }
        skip_ws(&mut i);
        match chars.get(i) {
            None => break,
            Some(',') => i += 1,
            Some(c) => return fail(&format!("unexpected {c:?}")),
        }
    }
    if labels.is_empty() {
        return Err("error at least one label pair is required per stream".into());
    }
    Ok(labels)
}
