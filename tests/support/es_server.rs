//! An in-memory Elasticsearch for the `elasticsearch` output's tests: the `_bulk` API as the
//! Elasticsearch reference documents it, on the scripted HTTP server (support/http_server.rs),
//! so its failures (no answer, RST, down/up) come for free.
//!
//! ```ignore
//! let es = EsServer::start();                 // data streams: indices named like `logs-*-*`
//! let url = es.url();                         // http://127.0.0.1:PORT, /_bulk appended by clients
//! es.set_requests(|_, bulk| if bulk == 0 { Fate::ApplyThen(Reply::Reset) } else { Fate::Apply });
//! es.set_items(|it| (it.seen == 0 && it.pos % 10 == 0).then_some(429));
//! es.set_mapping(|_index, doc| doc["message"].as_str()?.contains("bad").then(|| "no".into()));
//! es.set_max_body(Some(64 << 10));            // bigger bodies are answered 413
//! let docs = es.docs("logs-syslog-default");  // the stored sources, in the order stored
//! ```
//!
//! What it implements, and how it answers (each as Elasticsearch does):
//! - `POST` or `PUT` `/_bulk` and `/<index>/_bulk` (any query string, which is ignored). The
//!   body is NDJSON: an action line, then for `index` and `create` a source line. It must end
//!   with a newline (else 400), may be gzipped (`Content-Encoding: gzip`), and its Content-Type
//!   must be `application/x-ndjson` or `application/json` (else 406). An action line is an
//!   object with one key, `index`, `create`, `delete` or `update`, whose value may hold
//!   `_index` (required unless the path names one), `_id` (at most 512 bytes), `op_type`
//!   (`index` only), and the other documented parameters (accepted, ignored); anything else is
//!   a 400 for the whole request, nothing applied.
//! - The answer is `200 {"took":N,"errors":bool,"items":[...]}`: one item per action, in the
//!   request's order, each under its action's name. A stored one has `_index`, `_id`,
//!   `_version`, `result` (`created`, `updated`, `deleted`, `not_found`), `_shards`, `_seq_no`,
//!   `_primary_term` and `status` (201 created, 200 otherwise); a failed one has `_index`, `_id`,
//!   `status` and `error: {type, reason, ...}`; `errors` is true when any item has an `error`.
//! - Item failures:
//!   - 409 `version_conflict_engine_exception`: `create` with an `_id` already in the index;
//!   - 400 `document_parsing_exception`: a source that is not a JSON object, that the mapping
//!     script refuses ([`EsServer::set_mapping`]), or, in a data stream, whose `@timestamp` is
//!     missing or not a date;
//!   - 400 `illegal_argument_exception`: anything but `create` on a data stream ("only write
//!     ops with an op_type of create are allowed in data streams"); `update` (not implemented);
//!   - 400 `invalid_index_name_exception`: an index name Elasticsearch refuses (upper case,
//!     starting with `_`, `-` or `+`, holding `\ / * ? " < > | , # :` or a space, longer than
//!     255 bytes);
//!   - whatever the item script says ([`EsServer::set_items`]): 429
//!     `es_rejected_execution_exception`, 503 `unavailable_shards_exception`, ...
//! - Data streams: an index whose name matches one of the patterns (`*` for any run of
//!   characters; by default `logs-*-*`, as Elasticsearch's built-in template) is a data stream.
//!   Its items name the backing index (`.ds-<name>-<yyyy.mm.dd>-000001`) in `_index`, as
//!   Elasticsearch does; the documents are kept (and read back) under the stream's name.
//! - Whole-request failures: a body over [`EsServer::set_max_body`] gets 413; the request
//!   script ([`EsServer::set_requests`]) refuses a request with any [`Reply`] (`429` with
//!   Retry-After, `500`, `503`, a response that never comes, a reset mid-body), or applies it
//!   and then answers something else ([`Fate::ApplyThen`]: the answer of a stored batch lost).
//! - `GET /` answers the cluster's info (version 8.x), as clients ask before their first bulk;
//!   `GET` or `HEAD` `/_cat/health` answers 200 (rsyslog's omelasticsearch asks with `HEAD`
//!   before its first bulk, and suspends the action on anything else).
//!   Every answer carries `X-elastic-product: Elasticsearch`.
//! - Indices are created on first write. `_id`s not given are generated (20 characters).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use serde_json::{Map, Value, json};

use super::http_server::{HttpServer, Recorded, Reply};

/// What becomes of one bulk request as a whole.
#[derive(Clone, Debug)]
pub enum Fate {
    /// Apply its items and answer the bulk response.
    Apply,
    /// Apply nothing; answer this ([`Reply::Reset`] cuts the request mid-body, [`Reply::Hang`]
    /// never answers).
    Refuse(Reply),
    /// Apply its items, then answer this instead of the bulk response (a 503, a reset, no
    /// answer): the client cannot know its items were stored.
    ApplyThen(Reply),
}

/// A bulk action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Index,
    Create,
    Delete,
    Update,
}

impl Op {
    /// Its name in action lines and in the items of the answer.
    pub fn name(self) -> &'static str {
        match self {
            Op::Index => "index",
            Op::Create => "create",
            Op::Delete => "delete",
            Op::Update => "update",
        }
    }

    fn parse(name: &str) -> Option<Op> {
        Some(match name {
            "index" => Op::Index,
            "create" => Op::Create,
            "delete" => Op::Delete,
            "update" => Op::Update,
            _ => return None,
        })
    }

    fn has_source(self) -> bool {
        self != Op::Delete
    }
}

/// One item as the item script sees it.
#[derive(Debug)]
pub struct ItemView<'a> {
    /// The rank of its bulk request among bulk requests, from 0.
    pub bulk: usize,
    /// Its position in the request, from 0.
    pub pos: usize,
    pub op: Op,
    /// The index or data stream it targets (by name, not the backing index).
    pub index: &'a str,
    /// The `_id` sent, if any.
    pub id: Option<&'a str>,
    /// The source line parsed, when it is JSON.
    pub doc: Option<&'a Value>,
    /// How many times the server received this very source line before (in any request).
    pub seen: usize,
}

/// One item of a bulk request as received, with the status it was answered.
#[derive(Clone, Debug)]
pub struct ItemRecord {
    pub op: Op,
    pub index: String,
    /// The `_id` sent, if any.
    pub id: Option<String>,
    /// The source (`Value::Null` for a delete, `Value::String` of the raw line if not JSON).
    pub doc: Value,
    /// The item's status in the bulk response; `None` when the request was not applied.
    pub status: Option<u16>,
}

/// One bulk request as received.
#[derive(Clone, Debug)]
pub struct BulkRecord {
    /// Its rank among bulk requests, from 0.
    pub bulk: usize,
    /// Its rank among every HTTP request (`Recorded::n`).
    pub n: usize,
    pub path: String,
    /// Its items; empty when the body could not be parsed.
    pub items: Vec<ItemRecord>,
    /// Whether its items were applied (stored or refused one by one).
    pub applied: bool,
    /// The status of the answer sent, `None` when none was (reset, hang).
    pub status: Option<u16>,
}

type RequestScript = Arc<dyn Fn(&Recorded, usize) -> Fate + Send + Sync>;
type ItemScript = Arc<dyn Fn(&ItemView) -> Option<u16> + Send + Sync>;
type MappingScript = Arc<dyn Fn(&str, &Value) -> Option<String> + Send + Sync>;

struct Settings {
    data_streams: Vec<String>,
    max_body: Option<usize>,
    requests: RequestScript,
    items: ItemScript,
    mapping: MappingScript,
}

struct Doc {
    id: String,
    source: Value,
    version: u64,
}

struct IndexData {
    /// Stored documents in the order first stored (`None`: deleted).
    docs: Vec<Option<Doc>>,
    by_id: HashMap<String, usize>,
    seq_no: u64,
    uuid: String,
    /// For a data stream, its backing index.
    backing: Option<String>,
}

#[derive(Default)]
struct Store {
    indices: BTreeMap<String, IndexData>,
    next_id: u64,
    /// Times each source line was received.
    seen: HashMap<String, usize>,
    /// HTTP rank -> bulk rank.
    bulk_rank: HashMap<usize, usize>,
    next_bulk: usize,
    bulks: Vec<BulkRecord>,
}

struct Inner {
    settings: RwLock<Settings>,
    store: Mutex<Store>,
}

/// The Elasticsearch stand-in; see the module's doc.
pub struct EsServer {
    http: HttpServer,
    inner: Arc<Inner>,
}

impl EsServer {
    /// A plain HTTP server that applies every request, data streams `logs-*-*`.
    pub fn start() -> EsServer {
        let inner = Inner::new();
        let i = inner.clone();
        let http = HttpServer::start(move |rec, n| i.answer(rec, n));
        EsServer { http, inner }
    }

    /// The same over HTTPS (see `http_server::tls_server_config`).
    pub fn start_tls(config: Arc<rustls::ServerConfig>) -> EsServer {
        let inner = Inner::new();
        let i = inner.clone();
        let http = HttpServer::start_tls(config, move |rec, n| i.answer(rec, n));
        EsServer { http, inner }
    }

    /// The HTTP server underneath: its requests, `down()`, `up()`...
    pub fn http(&self) -> &HttpServer {
        &self.http
    }

    /// `http://127.0.0.1:PORT` (no path: clients append `/_bulk`).
    pub fn url(&self) -> String {
        self.http.url("")
    }

    pub fn addr(&self) -> SocketAddr {
        self.http.addr()
    }

    /// Connections refused until [`EsServer::up`]; the store is kept.
    pub fn down(&self) {
        self.http.down();
    }

    pub fn up(&self) {
        self.http.up();
    }

    /// The index name patterns that are data streams (`*`: any run of characters).
    pub fn set_data_streams(&self, patterns: &[&str]) {
        self.inner.settings.write().unwrap().data_streams =
            patterns.iter().map(|p| p.to_string()).collect();
    }

    /// Bodies (gunzipped) longer than this are answered 413, as `http.max_content_length`.
    pub fn set_max_body(&self, max: Option<usize>) {
        self.inner.settings.write().unwrap().max_body = max;
    }

    /// Decides each bulk request's [`Fate`] from the request and its rank among bulk requests.
    /// As the HTTP server's script, it is asked once when the head arrives (the body empty),
    /// where only `Fate::Refuse(Reply::Reset)` is acted on, then with the whole body.
    pub fn set_requests(&self, script: impl Fn(&Recorded, usize) -> Fate + Send + Sync + 'static) {
        self.inner.settings.write().unwrap().requests = Arc::new(script);
    }

    /// Fails chosen items: `Some(status)` answers the item with that status and the error
    /// Elasticsearch gives with it (429 `es_rejected_execution_exception`, 503
    /// `unavailable_shards_exception`, 500, 400 `document_parsing_exception`, 404, 403...), and
    /// does not store it. Asked after the data stream rule, before parsing the source.
    pub fn set_items(&self, script: impl Fn(&ItemView) -> Option<u16> + Send + Sync + 'static) {
        self.inner.settings.write().unwrap().items = Arc::new(script);
    }

    /// A mapping rule: `Some(reason)` refuses a source for good (400
    /// `document_parsing_exception` with that reason). Gets the index (or data stream) name.
    pub fn set_mapping(
        &self,
        script: impl Fn(&str, &Value) -> Option<String> + Send + Sync + 'static,
    ) {
        self.inner.settings.write().unwrap().mapping = Arc::new(script);
    }

    /// The documents of an index or data stream, in the order first stored.
    pub fn docs(&self, index: &str) -> Vec<Value> {
        self.docs_with_ids(index)
            .into_iter()
            .map(|(_, d)| d)
            .collect()
    }

    /// The documents of an index with their `_id`s.
    pub fn docs_with_ids(&self, index: &str) -> Vec<(String, Value)> {
        let store = self.inner.store.lock().unwrap();
        store
            .indices
            .get(index)
            .map(|i| {
                i.docs
                    .iter()
                    .flatten()
                    .map(|d| (d.id.clone(), d.source.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every stored document, index by index (by name).
    pub fn all_docs(&self) -> Vec<Value> {
        self.indices().iter().flat_map(|i| self.docs(i)).collect()
    }

    /// How many documents are stored, in all.
    pub fn doc_count(&self) -> usize {
        let store = self.inner.store.lock().unwrap();
        store
            .indices
            .values()
            .map(|i| i.docs.iter().flatten().count())
            .sum()
    }

    /// The names of the indices and data streams, sorted.
    pub fn indices(&self) -> Vec<String> {
        let store = self.inner.store.lock().unwrap();
        store.indices.keys().cloned().collect()
    }

    /// Every HTTP request received (bulk or not), in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.http.requests()
    }

    /// Every bulk request received whole, parsed, in order.
    pub fn bulks(&self) -> Vec<BulkRecord> {
        self.inner.store.lock().unwrap().bulks.clone()
    }

    /// How many items were answered `status` (in applied requests, whether the answer reached
    /// the client or not).
    pub fn items_answered(&self, status: u16) -> usize {
        let store = self.inner.store.lock().unwrap();
        store
            .bulks
            .iter()
            .flat_map(|b| &b.items)
            .filter(|i| i.status == Some(status))
            .count()
    }
}

/// A whole-request error as Elasticsearch writes it:
/// `{"error":{"root_cause":[{type,reason}],"type","reason"},"status":N}`.
pub fn es_error(status: u16, kind: &str, reason: &str) -> Reply {
    let cause = json!({"type": kind, "reason": reason});
    let body = json!({
        "error": {"root_cause": [cause], "type": kind, "reason": reason},
        "status": status,
    });
    es_json(status, &body)
}

/// 429 for the whole request (the write thread pool full), with `Retry-After: secs` if given.
pub fn too_many_requests(retry_after: Option<u64>) -> Reply {
    let r = es_error(
        429,
        "es_rejected_execution_exception",
        "rejected execution of coordinating operation [coordinating_and_primary_bytes=0, \
         replica_bytes=0, all_bytes=0, coordinating_operation_bytes=1048576, \
         max_coordinating_and_primary_bytes=1048575]",
    );
    match retry_after {
        Some(s) => r.header("retry-after", &s.to_string()),
        None => r,
    }
}

/// 503 for the whole request (a cluster not recovered yet).
pub fn unavailable() -> Reply {
    es_error(
        503,
        "cluster_block_exception",
        "blocked by: [SERVICE_UNAVAILABLE/1/state not recovered / initialized];",
    )
}

/// 500 for the whole request.
pub fn internal_error() -> Reply {
    es_error(500, "exception", "internal server error")
}

/// A JSON answer with Elasticsearch's headers.
fn es_json(status: u16, body: &Value) -> Reply {
    Reply::json(status, &body.to_string()).header("x-elastic-product", "Elasticsearch")
}

/// The error Elasticsearch gives an item refused with `status`.
fn item_error_for(status: u16, index: &str) -> (&'static str, String) {
    match status {
        429 => (
            "es_rejected_execution_exception",
            format!(
                "rejected execution of primary operation [shard_detail=[{index}][0][P], \
                 shard_operation_bytes=1024, max_coordinating_and_primary_bytes=1048575]"
            ),
        ),
        503 => (
            "unavailable_shards_exception",
            format!("[{index}][0] primary shard is not active Timeout: [1m]"),
        ),
        400 => (
            "document_parsing_exception",
            "[1:1] failed to parse: refused by the test script".into(),
        ),
        403 => (
            "cluster_block_exception",
            format!("index [{index}] blocked by: [FORBIDDEN/8/index write (api)];"),
        ),
        404 => (
            "index_not_found_exception",
            format!("no such index [{index}]"),
        ),
        409 => (
            "version_conflict_engine_exception",
            "version conflict, required seqNo [0]".into(),
        ),
        _ => ("exception", format!("item failed with status {status}")),
    }
}

/// Whether `name` matches `pattern` (`*`: any run of characters).
fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Why Elasticsearch refuses an index name, if it does.
fn invalid_index_name(name: &str) -> Option<String> {
    let why = if name.is_empty() {
        "must not be empty"
    } else if name != name.to_lowercase() {
        "must be lowercase"
    } else if name.starts_with(['_', '-', '+']) {
        "must not start with '_', '-', or '+'"
    } else if name.contains(['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':']) {
        "must not contain the following characters [ , \", *, \\, <, |, ,, >, /, ?, #, :]"
    } else if name == "." || name == ".." {
        "must not be '.' or '..'"
    } else if name.len() > 255 {
        "index name is too long"
    } else {
        return None;
    };
    Some(format!("Invalid index name [{name}], {why}"))
}

/// Whether a `@timestamp` value is a date Elasticsearch's default `date` mapping takes
/// (`strict_date_optional_time||epoch_millis`).
fn is_date(v: &Value) -> bool {
    match v {
        Value::Number(_) => true,
        Value::String(s) => {
            chrono::DateTime::parse_from_rfc3339(s).is_ok()
                || chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
                || chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
        }
        _ => false,
    }
}

/// The parameters an action line may hold.
const ACTION_PARAMS: &[&str] = &[
    "_index",
    "_id",
    "op_type",
    "routing",
    "pipeline",
    "require_alias",
    "require_data_stream",
    "if_seq_no",
    "if_primary_term",
    "version",
    "version_type",
    "dynamic_templates",
    "list_executed_pipelines",
    "retry_on_conflict",
    "_source",
];

/// One action parsed from the body.
struct Action {
    op: Op,
    index: String,
    id: Option<String>,
    /// The source line, as sent (without its newline or CR).
    source: Option<String>,
}

/// A whole-request 400 (or 406) instead of items.
struct BodyError(u16, &'static str, String);

/// Parses a bulk body as Elasticsearch's bulk parser does.
fn parse_bulk(body: &[u8], default_index: Option<&str>) -> Result<Vec<Action>, BodyError> {
    let bad = |kind, reason: String| BodyError(400, kind, reason);
    if body.is_empty() {
        return Err(bad(
            "action_request_validation_exception",
            "Validation Failed: 1: no requests added;".into(),
        ));
    }
    if !body.ends_with(b"\n") {
        return Err(bad(
            "illegal_argument_exception",
            "The bulk request must be terminated by a newline [\\n]".into(),
        ));
    }
    let text = std::str::from_utf8(body).map_err(|e| {
        bad(
            "x_content_parse_exception",
            format!("invalid UTF-8 in the body: {e}"),
        )
    })?;
    let lines: Vec<&str> = text[..text.len() - 1]
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut actions = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line_no = i + 1;
        let line = lines[i];
        i += 1;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Value = serde_json::from_str(line).map_err(|e| {
            bad(
                "x_content_parse_exception",
                format!("[{line_no}:1] Malformed action/metadata line [{line_no}]: {e}"),
            )
        })?;
        let Some(obj) = parsed.as_object().filter(|o| o.len() == 1) else {
            return Err(bad(
                "illegal_argument_exception",
                format!(
                    "Malformed action/metadata line [{line_no}], expected START_OBJECT with one field"
                ),
            ));
        };
        let (name, params) = obj.iter().next().unwrap();
        let Some(mut op) = Op::parse(name) else {
            return Err(bad(
                "illegal_argument_exception",
                format!(
                    "Malformed action/metadata line [{line_no}], expected field [create], \
                     [delete], [index] or [update] but found [{name}]"
                ),
            ));
        };
        let Some(params) = params.as_object() else {
            return Err(bad(
                "illegal_argument_exception",
                format!(
                    "Malformed action/metadata line [{line_no}], expected START_OBJECT but found [{params}]"
                ),
            ));
        };
        for k in params.keys() {
            if !ACTION_PARAMS.contains(&k.as_str()) {
                return Err(bad(
                    "illegal_argument_exception",
                    format!("Action/metadata line [{line_no}] contains an unknown parameter [{k}]"),
                ));
            }
        }
        let string = |key: &str| -> Result<Option<String>, BodyError> {
            match params.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(v) => Err(bad(
                    "illegal_argument_exception",
                    format!(
                        "Malformed action/metadata line [{line_no}], [{key}] must be a string but found [{v}]"
                    ),
                )),
            }
        };
        let index = match string("_index")?.or(default_index.map(str::to_string)) {
            Some(i) => i,
            None => {
                return Err(bad(
                    "action_request_validation_exception",
                    "Validation Failed: 1: index is missing;".into(),
                ));
            }
        };
        let id = string("_id")?;
        if let Some(id) = &id
            && id.len() > 512
        {
            return Err(bad(
                "action_request_validation_exception",
                format!(
                    "Validation Failed: 1: id [{id}] is too long, must be no longer than 512 \
                     bytes but was: {};",
                    id.len()
                ),
            ));
        }
        match string("op_type")?.as_deref() {
            None => {}
            Some("create") if op == Op::Index => op = Op::Create,
            Some("index") if op == Op::Index => {}
            Some(other) => {
                return Err(bad(
                    "illegal_argument_exception",
                    format!("Action/metadata line [{line_no}]: op_type [{other}] not allowed"),
                ));
            }
        }
        if (op == Op::Delete || op == Op::Update) && id.is_none() {
            return Err(bad(
                "action_request_validation_exception",
                "Validation Failed: 1: id is missing;".into(),
            ));
        }
        let source = if op.has_source() {
            if i >= lines.len() {
                return Err(bad(
                    "action_request_validation_exception",
                    "Validation Failed: 1: source is missing;".into(),
                ));
            }
            i += 1;
            Some(lines[i - 1].to_string())
        } else {
            None
        };
        actions.push(Action {
            op,
            index,
            id,
            source,
        });
    }
    if actions.is_empty() {
        return Err(bad(
            "action_request_validation_exception",
            "Validation Failed: 1: no requests added;".into(),
        ));
    }
    Ok(actions)
}

/// `/_bulk` -> Some(None); `/idx/_bulk` -> Some(Some("idx")); anything else None.
fn bulk_path(path: &str) -> Option<Option<String>> {
    let path = path.split('?').next().unwrap_or("");
    if path == "/_bulk" || path == "/_bulk/" {
        return Some(None);
    }
    let rest = path.strip_prefix('/')?;
    let index = rest
        .strip_suffix("/_bulk")
        .or_else(|| rest.strip_suffix("/_bulk/"))?;
    (!index.is_empty() && !index.contains('/')).then(|| Some(index.to_string()))
}

impl Inner {
    fn new() -> Arc<Inner> {
        Arc::new(Inner {
            settings: RwLock::new(Settings {
                data_streams: vec!["logs-*-*".into()],
                max_body: None,
                requests: Arc::new(|_, _| Fate::Apply),
                items: Arc::new(|_| None),
                mapping: Arc::new(|_, _| None),
            }),
            store: Mutex::new(Store::default()),
        })
    }

    /// The HTTP server's script: see [`super::http_server::Script`].
    fn answer(&self, rec: &Recorded, n: usize) -> Reply {
        let Some(path_index) = bulk_path(&rec.path) else {
            return self.not_bulk(rec);
        };
        let bulk = {
            let mut store = self.store.lock().unwrap();
            let next = store.next_bulk;
            let rank = *store.bulk_rank.entry(n).or_insert(next);
            if rank == next {
                store.next_bulk += 1;
            }
            rank
        };
        let requests = self.settings.read().unwrap().requests.clone();
        if !rec.complete {
            // The head: only a cut mid-body is decided here.
            return match requests(rec, bulk) {
                Fate::Refuse(Reply::Reset) => Reply::Reset,
                _ => Reply::ok(),
            };
        }
        if rec.method != "POST" && rec.method != "PUT" {
            return self.record_unparsed(
                rec,
                bulk,
                es_error(
                    405,
                    "method_not_allowed",
                    &format!(
                        "Incorrect HTTP method for uri [{}] and method [{}], allowed: [POST, PUT]",
                        rec.path, rec.method
                    ),
                ),
            );
        }
        let max_body = self.settings.read().unwrap().max_body;
        if max_body.is_some_and(|m| rec.body.len() > m) {
            return self.record_unparsed(rec, bulk, Reply::status(413));
        }
        let fate = requests(rec, bulk);
        let actions = match content_type_ok(rec) {
            Err(reply) => Err(reply),
            Ok(()) => parse_bulk(&rec.body, path_index.as_deref())
                .map_err(|BodyError(status, kind, reason)| es_error(status, kind, &reason)),
        };
        match (fate, actions) {
            (Fate::Refuse(reply), actions) => {
                let items = actions.map(|a| records(&a)).unwrap_or_default();
                self.record(rec, bulk, items, false, &reply)
            }
            (_, Err(reply)) => self.record_unparsed(rec, bulk, reply),
            (Fate::Apply, Ok(actions)) => {
                let (items, response) = self.apply(bulk, &actions);
                self.record(rec, bulk, items, true, &response)
            }
            (Fate::ApplyThen(reply), Ok(actions)) => {
                let (items, _) = self.apply(bulk, &actions);
                self.record(rec, bulk, items, true, &reply)
            }
        }
    }

    /// Anything but a bulk request: `GET /` answers the cluster's info, `/_cat/health` the
    /// health line, the rest 400 as Elasticsearch answers an unknown endpoint.
    fn not_bulk(&self, rec: &Recorded) -> Reply {
        let path = rec.path.split('?').next().unwrap_or("");
        if path == "/_cat/health" && (rec.method == "GET" || rec.method == "HEAD") {
            // A HEAD gets no body (the client would take it for the next answer's start).
            let body = if rec.method == "HEAD" {
                String::new()
            } else {
                format!(
                    "{} 00:00:00 sluice-test green 1 1 0 0 0 0 0 0 - 100.0%\n",
                    chrono::Utc::now().timestamp()
                )
            };
            return Reply::Status {
                code: 200,
                headers: vec![
                    ("content-type".into(), "text/plain; charset=UTF-8".into()),
                    ("x-elastic-product".into(), "Elasticsearch".into()),
                ],
                body,
            };
        }
        if path == "/" && (rec.method == "GET" || rec.method == "HEAD") {
            return es_json(
                200,
                &json!({
                    "name": "sluice-test-es",
                    "cluster_name": "sluice-test",
                    "cluster_uuid": "c2x1aWNlLXRlc3QtY2x1c3Rlcg",
                    "version": {
                        "number": "8.15.0",
                        "build_flavor": "default",
                        "build_type": "tar",
                        "lucene_version": "9.11.1",
                        "minimum_wire_compatibility_version": "7.17.0",
                        "minimum_index_compatibility_version": "7.0.0",
                    },
                    "tagline": "You Know, for Search",
                }),
            );
        }
        es_json(
            400,
            &json!({
                "error": format!("no handler found for uri [{}] and method [{}]", rec.path, rec.method),
            }),
        )
    }

    fn record_unparsed(&self, rec: &Recorded, bulk: usize, reply: Reply) -> Reply {
        self.record(rec, bulk, Vec::new(), false, &reply)
    }

    fn record(
        &self,
        rec: &Recorded,
        bulk: usize,
        items: Vec<ItemRecord>,
        applied: bool,
        reply: &Reply,
    ) -> Reply {
        let status = match reply {
            Reply::Status { code, .. } => Some(*code),
            _ => None,
        };
        self.store.lock().unwrap().bulks.push(BulkRecord {
            bulk,
            n: rec.n,
            path: rec.path.clone(),
            items,
            applied,
            status,
        });
        reply.clone()
    }

    /// Applies the actions; returns their records and the bulk response.
    fn apply(&self, bulk: usize, actions: &[Action]) -> (Vec<ItemRecord>, Reply) {
        let start = Instant::now();
        let (patterns, item_script, mapping) = {
            let s = self.settings.read().unwrap();
            (s.data_streams.clone(), s.items.clone(), s.mapping.clone())
        };
        let mut store = self.store.lock().unwrap();
        let mut records = records(actions);
        let mut items = Vec::with_capacity(actions.len());
        let mut errors = false;
        for (pos, a) in actions.iter().enumerate() {
            let doc: Option<Value> = a
                .source
                .as_deref()
                .map(|s| serde_json::from_str(s).unwrap_or(Value::Null));
            let seen = match &a.source {
                Some(s) => {
                    let count = store.seen.entry(s.clone()).or_default();
                    *count += 1;
                    *count - 1
                }
                None => 0,
            };
            let view = ItemView {
                bulk,
                pos,
                op: a.op,
                index: &a.index,
                id: a.id.as_deref(),
                doc: doc.as_ref().filter(|d| !d.is_null()),
                seen,
            };
            let is_stream = patterns.iter().any(|p| glob(p, &a.index));
            let item = store.item(a, &view, is_stream, &item_script, &mapping);
            let status = item["status"].as_u64().unwrap_or(500) as u16;
            errors |= item.get("error").is_some();
            records[pos].status = Some(status);
            let mut wrapped = Map::new();
            wrapped.insert(a.op.name().into(), item);
            items.push(Value::Object(wrapped));
        }
        let took = start.elapsed().as_millis() as u64;
        let body = json!({"errors": errors, "took": took, "items": items});
        (records, es_json(200, &body))
    }
}

/// The Content-Type a bulk request must have, else 406.
fn content_type_ok(rec: &Recorded) -> Result<(), Reply> {
    let ct = rec.header("content-type").unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/x-ndjson"
        | "application/json"
        | "application/vnd.elasticsearch+x-ndjson"
        | "application/vnd.elasticsearch+json" => Ok(()),
        _ => Err(es_json(
            406,
            &json!({
                "error": format!("Content-Type header [{ct}] is not supported"),
                "status": 406,
            }),
        )),
    }
}

/// The records of parsed actions, not answered yet.
fn records(actions: &[Action]) -> Vec<ItemRecord> {
    actions
        .iter()
        .map(|a| ItemRecord {
            op: a.op,
            index: a.index.clone(),
            id: a.id.clone(),
            doc: a.source.as_deref().map_or(Value::Null, |s| {
                serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string()))
            }),
            status: None,
        })
        .collect()
}

impl Store {
    /// Applies one action; returns its item (without the action's name around it).
    fn item(
        &mut self,
        a: &Action,
        view: &ItemView,
        is_stream: bool,
        item_script: &ItemScript,
        mapping: &MappingScript,
    ) -> Value {
        let id = match &a.id {
            Some(id) => id.clone(),
            None => self.generate_id(),
        };
        let fail = |index: &str, uuid: &str, status: u16, kind: &str, reason: String| {
            json!({
                "_index": index,
                "_id": id,
                "status": status,
                "error": {
                    "type": kind,
                    "reason": reason,
                    "index_uuid": uuid,
                    "shard": "0",
                    "index": index,
                },
            })
        };
        if let Some(reason) = invalid_index_name(&a.index) {
            return fail(
                &a.index,
                "_na_",
                400,
                "invalid_index_name_exception",
                reason,
            );
        }
        if is_stream && a.op != Op::Create {
            return fail(
                &a.index,
                "_na_",
                400,
                "illegal_argument_exception",
                format!(
                    "only write ops with an op_type of create are allowed in data streams (index [{}], op [{}])",
                    a.index,
                    a.op.name()
                ),
            );
        }
        let (shown, uuid) = self.index_names(&a.index, is_stream);
        if let Some(status) = item_script(view) {
            let (kind, reason) = item_error_for(status, &shown);
            return fail(&shown, &uuid, status, kind, reason);
        }
        let source = match a.op {
            Op::Update => {
                return fail(
                    &shown,
                    &uuid,
                    400,
                    "illegal_argument_exception",
                    "the test server does not implement update".into(),
                );
            }
            Op::Delete => return self.delete(&a.index, &shown, &id),
            Op::Index | Op::Create => a.source.as_deref().unwrap_or(""),
        };
        let doc = match serde_json::from_str::<Value>(source) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) if source.trim().is_empty() => {
                return fail(
                    &shown,
                    &uuid,
                    400,
                    "document_parsing_exception",
                    "failed to parse, document is empty".into(),
                );
            }
            Ok(v) => {
                return fail(
                    &shown,
                    &uuid,
                    400,
                    "document_parsing_exception",
                    format!("[1:1] failed to parse: expected an object but found [{v}]"),
                );
            }
            Err(e) => {
                return fail(
                    &shown,
                    &uuid,
                    400,
                    "document_parsing_exception",
                    format!("[1:1] failed to parse: {e}"),
                );
            }
        };
        if is_stream {
            match doc.get("@timestamp") {
                None => {
                    return fail(
                        &shown,
                        &uuid,
                        400,
                        "document_parsing_exception",
                        "[1:1] failed to parse: data stream timestamp field [@timestamp] is missing"
                            .into(),
                    );
                }
                Some(t) if !is_date(t) => {
                    return fail(
                        &shown,
                        &uuid,
                        400,
                        "document_parsing_exception",
                        format!(
                            "[1:1] failed to parse field [@timestamp] of type [date] in document with id '{id}'. Preview of field's value: '{t}'"
                        ),
                    );
                }
                Some(_) => {}
            }
        }
        if let Some(reason) = mapping(&a.index, &doc) {
            return fail(&shown, &uuid, 400, "document_parsing_exception", reason);
        }
        let index = self.indices.get_mut(&a.index).unwrap();
        let (version, result, status) = match index.by_id.get(&id) {
            Some(&slot) if index.docs[slot].is_some() => {
                let current = index.docs[slot].as_ref().unwrap().version;
                if a.op == Op::Create {
                    return fail(
                        &shown,
                        &uuid,
                        409,
                        "version_conflict_engine_exception",
                        format!(
                            "[{id}]: version conflict, document already exists (current version [{current}])"
                        ),
                    );
                }
                index.docs[slot] = Some(Doc {
                    id: id.clone(),
                    source: doc,
                    version: current + 1,
                });
                (current + 1, "updated", 200)
            }
            _ => {
                index.by_id.insert(id.clone(), index.docs.len());
                index.docs.push(Some(Doc {
                    id: id.clone(),
                    source: doc,
                    version: 1,
                }));
                (1, "created", 201)
            }
        };
        let seq_no = index.seq_no;
        index.seq_no += 1;
        success(&shown, &id, version, result, seq_no, status)
    }

    fn delete(&mut self, name: &str, shown: &str, id: &str) -> Value {
        let index = self.indices.get_mut(name).unwrap();
        let seq_no = index.seq_no;
        index.seq_no += 1;
        match index.by_id.get(id).copied() {
            Some(slot) if index.docs[slot].is_some() => {
                let version = index.docs[slot].take().unwrap().version + 1;
                index.by_id.remove(id);
                success(shown, id, version, "deleted", seq_no, 200)
            }
            _ => success(shown, id, 1, "not_found", seq_no, 404),
        }
    }

    /// Creates the index if needed; returns the name items show (the backing index of a data
    /// stream) and its uuid.
    fn index_names(&mut self, name: &str, is_stream: bool) -> (String, String) {
        let n = self.indices.len();
        let index = self
            .indices
            .entry(name.to_string())
            .or_insert_with(|| IndexData {
                docs: Vec::new(),
                by_id: HashMap::new(),
                seq_no: 0,
                uuid: format!("{:0>22}", format!("uuid{n}")),
                backing: is_stream.then(|| {
                    format!(
                        ".ds-{name}-{}-000001",
                        chrono::Utc::now().format("%Y.%m.%d")
                    )
                }),
            });
        (
            index.backing.clone().unwrap_or_else(|| name.to_string()),
            index.uuid.clone(),
        )
    }

    /// A fresh 20-character id, as Elasticsearch's auto-generated ones.
    fn generate_id(&mut self) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        self.next_id += 1;
        let mut x = self.next_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED;
        let mut id = String::with_capacity(20);
        for i in 0..20 {
            if i == 10 {
                x = x.rotate_left(17) ^ self.next_id;
            }
            id.push(ALPHABET[(x % 64) as usize] as char);
            x = x.rotate_right(6);
        }
        id
    }
}

fn success(index: &str, id: &str, version: u64, result: &str, seq_no: u64, status: u16) -> Value {
    json!({
        "_index": index,
        "_id": id,
        "_version": version,
        "result": result,
        "_shards": {"total": 2, "successful": 1, "failed": 0},
        "_seq_no": seq_no,
        "_primary_term": 1,
        "status": status,
    })
}
