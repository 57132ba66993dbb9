//! What the outputs that speak HTTP share (`http`, `elasticsearch`): the endpoint's settings
//! (`url`, `compression`, `headers`, `auth`, TLS, `batch`, `timeout`), read as one part, and
//! the client an output thread sends with: one keep-alive HTTP/1.1 connection (rustls for
//! https) driven by a small single-threaded runtime the thread owns, reopened when it breaks.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use toml::Spanned;

use crate::decode::{Entry, Errors, NumOrStr, Part, choice, keys};
use crate::metrics::{self, OutputMetrics};
use crate::output::delivery::{Attempt, BatchLimits, BatchRaw, Refusals};

/// Default `batch.max_events`.
pub const DEFAULT_BATCH_MAX_EVENTS: usize = 500;
/// Default `batch.max_size`: most ingest APIs take a few MiB per request.
pub const DEFAULT_BATCH_MAX_BYTES: u64 = 1 << 20;
/// Default `timeout`: connect, send and answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `Retry-After` honoured: a server asking for more is asked again sooner.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Default `max_in_flight` of the outputs that take it (`http`, `elasticsearch`): enough to
/// hide a store's answer time behind the next requests, few enough not to crowd it.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;
/// Most `max_in_flight`: each request in flight holds a connection of its own.
pub const MAX_IN_FLIGHT_LIMIT: usize = 64;
/// Most answer body read (bulk answers list every item; a larger one is cut, not read whole).
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Where and how an output reaches an HTTP server.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpEndpoint {
    /// Where requests go (for `elasticsearch`, the base the API path is appended to).
    pub url: Uri,
    /// Gzip the body (`Content-Encoding: gzip`).
    pub gzip: bool,
    /// Extra headers, as given.
    pub headers: Vec<(String, String)>,
    /// Credentials sent with every request, read from their files at start.
    pub auth: Option<Auth>,
    /// For `https` URLs: the server's trust and the client certificate.
    pub tls: Option<crate::tls::ClientSettings>,
    /// Events and body bytes (before compression) per request, and how long a partial batch
    /// waits for more (0: sent as soon as queued).
    pub batch: BatchLimits,
    /// Connect, send and answer must fit in this.
    pub timeout: Duration,
    /// The output that events refused for good are handed to, with the reason.
    pub dead_letter: Option<String>,
    /// Requests sent at once at most, each on its own connection (`max_in_flight`; 1 for the
    /// kinds that do not take the key).
    pub max_in_flight: usize,
}

/// Credentials, each from a file (so the config holds no secret).
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    /// `Authorization: Basic`.
    Basic {
        /// The user name.
        user: String,
        /// The file holding the password.
        password_file: PathBuf,
    },
    /// `Authorization: Bearer`.
    Bearer {
        /// The file holding the token.
        token_file: PathBuf,
    },
    /// `Authorization: ApiKey` (Elasticsearch's encoded API key).
    ApiKey {
        /// The file holding the encoded key.
        key_file: PathBuf,
    },
}

#[derive(Deserialize, Default)]
struct EndpointRaw {
    url: Option<Spanned<String>>,
    compression: Option<Spanned<String>>,
    headers: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    auth: Option<AuthRaw>,
    batch: Option<BatchRaw>,
    timeout: Option<Spanned<NumOrStr>>,
    dead_letter: Option<Spanned<String>>,
}

/// `max_in_flight`, read only by the kinds whose requests may be answered in any order.
#[derive(Deserialize, Default)]
struct InFlightRaw {
    max_in_flight: Option<Spanned<i64>>,
}

impl Part for InFlightRaw {}

/// Reads `max_in_flight` (1 to [`MAX_IN_FLIGHT_LIMIT`], default [`DEFAULT_MAX_IN_FLIGHT`]).
pub fn decode_max_in_flight(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> usize {
    let Some(raw) = entry.part::<InFlightRaw>(errs) else {
        return DEFAULT_MAX_IN_FLIGHT;
    };
    let key = entry.key("max_in_flight");
    match crate::decode::positive(errs, &key, &raw.max_in_flight) {
        Some(n) if n > MAX_IN_FLIGHT_LIMIT => {
            if let Some(v) = &raw.max_in_flight {
                errs.at(
                    v.span(),
                    key,
                    format!("must be at most {MAX_IN_FLIGHT_LIMIT} (a connection per request)"),
                );
            }
            DEFAULT_MAX_IN_FLIGHT
        }
        Some(n) => n,
        None => DEFAULT_MAX_IN_FLIGHT,
    }
}

/// For a kind that keeps one request in flight: `max_in_flight` given is an error saying `why`.
pub fn refuse_max_in_flight(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>, why: &str) {
    if let Some(InFlightRaw {
        max_in_flight: Some(v),
    }) = entry.part::<InFlightRaw>(errs)
    {
        errs.at(v.span(), entry.key("max_in_flight"), why);
    }
}

impl Part for EndpointRaw {
    const NESTED: &'static [crate::decode::Nested] = &[
        ("auth", keys::fields::<AuthRaw>),
        ("batch", keys::fields::<BatchRaw>),
    ];
}

#[derive(Deserialize, Default)]
struct AuthRaw {
    kind: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
}

impl HttpEndpoint {
    /// Reads the endpoint's keys, TLS ones included.
    pub fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<HttpEndpoint> {
        let raw = entry.part::<EndpointRaw>(errs)?;
        let tls_part = entry.part::<crate::tls::ClientTlsPart>(errs)?;
        let before = errs.count();
        let url = raw.url(entry, errs);
        let https = url
            .as_ref()
            .is_some_and(|u| u.scheme_str() == Some("https"));
        let url_span = raw.url.as_ref().map_or(entry.kind.span(), |v| v.span());
        let host = url
            .as_ref()
            .and_then(|u| u.host())
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string());
        let tls = tls_part.settings(entry, errs, https, "an https url", url_span, host);
        let gzip = choice(
            errs,
            &entry.key("compression"),
            &raw.compression,
            "compression",
            &[("none", false), ("gzip", true)],
            false,
        );
        let headers = raw.headers(entry, errs);
        let auth = raw.auth.as_ref().and_then(|a| a.decode(entry, errs));
        let batch = BatchLimits::decode(
            raw.batch.as_ref(),
            entry,
            errs,
            BatchLimits {
                max_events: DEFAULT_BATCH_MAX_EVENTS,
                max_bytes: DEFAULT_BATCH_MAX_BYTES,
                max_wait: Duration::ZERO,
            },
        );
        let timeout = crate::decode::positive_duration(errs, &entry.key("timeout"), &raw.timeout)
            .unwrap_or(DEFAULT_TIMEOUT);
        (errs.count() == before).then_some(())?;
        Some(HttpEndpoint {
            url: url?,
            gzip,
            headers,
            auth,
            tls: if https { Some(tls?) } else { None },
            batch,
            timeout,
            dead_letter: raw.dead_letter.as_ref().map(|d| d.get_ref().clone()),
            max_in_flight: 1,
        })
    }

    /// `--check-config`: the credential file is readable; for https, the CA and client
    /// certificate load.
    pub fn check_environment(
        &self,
        key: &str,
        problems: &mut Vec<String>,
        tls: &mut crate::tls::FileCheck,
    ) {
        if let Some(auth) = &self.auth {
            let (file_key, path) = auth.file();
            if let Err(e) = read_secret(path) {
                problems.push(format!("{key}.auth.{file_key}: {e}"));
            }
        }
        if let Some(c) = &self.tls {
            crate::tls::ClientTlsPart::check_environment(c, key, tls);
        }
    }
}

impl EndpointRaw {
    /// The URL: `http` or `https`, with a host.
    fn url(&self, entry: &Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<Uri> {
        let Some(v) = &self.url else {
            entry.missing(
                errs,
                "url",
                "missing: give the endpoint, like url = \"https://siem.example.net/ingest\"",
            );
            return None;
        };
        let bad = |errs: &mut Errors<'_>, why: &str| {
            errs.at(
                v.span(),
                entry.key("url"),
                format!("invalid url {:?}: {why}", v.get_ref()),
            );
            None
        };
        let uri: Uri = match v.get_ref().parse() {
            Ok(u) => u,
            Err(e) => return bad(errs, &e.to_string()),
        };
        match uri.scheme_str() {
            Some("http" | "https") => {}
            Some(other) => return bad(errs, &format!("scheme {other:?} is not http or https")),
            None => return bad(errs, "it needs a scheme, http:// or https://"),
        }
        if uri.host().is_none_or(str::is_empty) {
            return bad(errs, "it names no host");
        }
        Some(uri)
    }

    /// Header names and values that HTTP allows; `Host`, `Content-Length` and
    /// `Content-Encoding` are the output's own.
    fn headers(&self, entry: &Entry<'_, '_>, errs: &mut Errors<'_>) -> Vec<(String, String)> {
        let Some(h) = &self.headers else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in h.get_ref() {
            let key = entry.key(&format!("headers.{k}"));
            match (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                (Ok(n), Ok(_))
                    if n == header::CONTENT_LENGTH
                        || n == header::CONTENT_ENCODING
                        || n == header::HOST =>
                {
                    errs.at(h.span(), key, "is set by sluice itself");
                }
                (Ok(_), Ok(_)) => out.push((k.clone(), v.clone())),
                (Err(_), _) => errs.at(h.span(), key, "not a valid header name"),
                (_, Err(_)) => errs.at(
                    h.span(),
                    key,
                    "not a valid header value (control characters?)",
                ),
            }
        }
        out
    }
}

impl AuthRaw {
    fn decode(&self, entry: &Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<Auth> {
        let key = |k: &str| entry.key(&format!("auth.{k}"));
        let Some(kind) = &self.kind else {
            errs.at(
                entry.kind.span(),
                key("kind"),
                "missing: auth needs kind = \"basic\", \"bearer\" or \"api_key\"",
            );
            return None;
        };
        let kind_name = kind.get_ref().as_str();
        let given = |errs: &mut Errors<'_>, name: &str, v: &Option<Spanned<String>>| {
            if v.is_none() {
                errs.at(
                    kind.span(),
                    key(name),
                    format!("missing: auth kind = {kind_name:?} needs {name}"),
                );
            }
            v.as_ref().map(|v| v.get_ref().clone())
        };
        let fields = [
            ("user", &self.user),
            ("password_file", &self.password_file),
            ("token_file", &self.token_file),
            ("key_file", &self.key_file),
        ];
        let used: &[&str] = match kind_name {
            "basic" => &["user", "password_file"],
            "bearer" => &["token_file"],
            "api_key" => &["key_file"],
            other => {
                errs.at(
                    kind.span(),
                    key("kind"),
                    format!(
                        "unknown auth kind {other:?}: expected \"basic\", \"bearer\" or \"api_key\""
                    ),
                );
                return None;
            }
        };
        for (name, v) in fields {
            if let Some(v) = v
                && !used.contains(&name)
            {
                errs.at(
                    v.span(),
                    key(name),
                    format!("has no effect with auth kind = {kind_name:?}"),
                );
            }
        }
        match kind_name {
            "basic" => {
                let user = given(errs, "user", &self.user);
                let password_file = given(errs, "password_file", &self.password_file);
                Some(Auth::Basic {
                    user: user?,
                    password_file: PathBuf::from(password_file?),
                })
            }
            "bearer" => Some(Auth::Bearer {
                token_file: PathBuf::from(given(errs, "token_file", &self.token_file)?),
            }),
            _ => Some(Auth::ApiKey {
                key_file: PathBuf::from(given(errs, "key_file", &self.key_file)?),
            }),
        }
    }
}

impl Auth {
    /// The key and path of its secret file.
    fn file(&self) -> (&'static str, &std::path::Path) {
        match self {
            Auth::Basic { password_file, .. } => ("password_file", password_file),
            Auth::Bearer { token_file } => ("token_file", token_file),
            Auth::ApiKey { key_file } => ("key_file", key_file),
        }
    }

    /// The `Authorization` header value, the secret read from its file now.
    fn header(&self) -> anyhow::Result<HeaderValue> {
        use base64::Engine;
        let (_, path) = self.file();
        let secret = read_secret(path).map_err(|e| anyhow::anyhow!(e))?;
        let value = match self {
            Auth::Basic { user, .. } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"))
            ),
            Auth::Bearer { .. } => format!("Bearer {secret}"),
            Auth::ApiKey { .. } => format!("ApiKey {secret}"),
        };
        let mut v = HeaderValue::from_str(&value)
            .map_err(|_| anyhow::anyhow!("{}: not usable in a header", path.display()))?;
        v.set_sensitive(true);
        Ok(v)
    }
}

/// A secret file's content, without its trailing newline.
pub(crate) fn read_secret(path: &std::path::Path) -> Result<String, String> {
    let s = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let s = s.strip_suffix('\n').unwrap_or(&s);
    let s = s.strip_suffix('\r').unwrap_or(s);
    if s.is_empty() {
        return Err(format!("{}: empty", path.display()));
    }
    Ok(s.to_string())
}

/// A server's answer.
pub struct Answer {
    /// The status code.
    pub status: hyper::StatusCode,
    /// Its `Retry-After`, in seconds, bounded.
    pub retry_after: Option<Duration>,
    /// Its body (up to a bound).
    pub body: Bytes,
}

/// Sends requests to one endpoint from an output thread.
pub struct HttpClient {
    endpoint: HttpEndpoint,
    runtime: tokio::runtime::Runtime,
    /// Open keep-alive connections not carrying a request (at most `max_in_flight`).
    idle: Vec<SendRequest<Full<Bytes>>>,
    tls: Option<tokio_rustls::TlsConnector>,
    /// Content-Type, auth, Host and the configured headers, sent with every request.
    headers: HeaderMap,
    metrics: Arc<OutputMetrics>,
    latency: Arc<crate::metrics::LatencyHistogram>,
    /// The batches of `send_records` kept for the next attempt: `Some(accepted)` once done.
    window: Window<Option<usize>>,
}

impl HttpClient {
    /// A client for `endpoint` sending bodies of `content_type`; credentials are read now.
    pub fn new(
        endpoint: HttpEndpoint,
        content_type: &'static str,
        metrics: Arc<OutputMetrics>,
        latency: Arc<crate::metrics::LatencyHistogram>,
    ) -> anyhow::Result<HttpClient> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let tls = match &endpoint.tls {
            Some(c) => Some(tokio_rustls::TlsConnector::from(
                crate::tls::client_config(c).map_err(|e| anyhow::anyhow!(e))?,
            )),
            None => None,
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if endpoint.gzip {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        if let Some(auth) = &endpoint.auth {
            headers.insert(header::AUTHORIZATION, auth.header()?);
        }
        for (k, v) in &endpoint.headers {
            headers.insert(
                HeaderName::from_bytes(k.as_bytes())?,
                HeaderValue::from_str(v)?,
            );
        }
        let host = match (endpoint.url.host(), endpoint.url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => anyhow::bail!("url {} names no host", endpoint.url),
        };
        headers.insert(header::HOST, HeaderValue::from_str(&host)?);
        Ok(HttpClient {
            endpoint,
            runtime,
            idle: Vec::new(),
            tls,
            headers,
            metrics,
            latency,
            window: Window::default(),
        })
    }

    /// The output's counters.
    pub fn metrics(&self) -> &OutputMetrics {
        &self.metrics
    }

    /// The endpoint it sends to.
    pub fn endpoint(&self) -> &HttpEndpoint {
        &self.endpoint
    }

    /// Sends the head of `records` as up to `max_in_flight` bodies of `shape` at once (each
    /// within the endpoint's batch bounds), for an output whose receiver takes or refuses a
    /// request whole: 2xx takes one; 413 halves it until it fits, and one record that still
    /// does not is refused; 429, 5xx and 408 are tried again later (honouring Retry-After);
    /// any other answer refuses what was sent. Only the batches up to the first one not yet
    /// taken leave the backlog; those after it that were taken are remembered, not sent again.
    pub fn send_records(
        &mut self,
        method: hyper::Method,
        path_and_query: &str,
        records: &[Vec<u8>],
        shape: BodyShape,
        refusals: &mut Refusals,
    ) -> Attempt {
        let (limits, max) = (self.endpoint.batch, self.endpoint.max_in_flight);
        let per_record = shape.separator.len() + shape.terminator.len();
        loop {
            let mut slots = self
                .window
                .plan(records, &limits, max, per_record, |_| None);
            let owed: Vec<usize> = (0..slots.len())
                .filter(|&k| slots[k].state.is_none())
                .take(max)
                .collect();
            let bodies = owed
                .iter()
                .map(|&k| {
                    let r = slots[k].records(records);
                    (shape.join(r), r.len())
                })
                .collect();
            let answers = self.send_all(&method, path_and_query, bodies);
            let mut failure = Failure::default();
            let mut splits = Vec::new();
            for (&k, answer) in owed.iter().zip(answers) {
                let slot = &mut slots[k];
                let sent = slot.records(records);
                let answer = match answer {
                    Ok(a) => a,
                    Err(error) => {
                        failure.add(error, None);
                        continue;
                    }
                };
                match answer.status.as_u16() {
                    200..=299 => slot.state = Some(sent.len()),
                    413 if sent.len() > 1 => splits.push(k),
                    413 => {
                        refusals.refuse_all(sent, "413 Payload Too Large");
                        slot.state = Some(0);
                    }
                    _ if answer.retry_later() => failure.add(
                        format!("{}: {}", answer.status, answer.excerpt()),
                        answer.retry_after,
                    ),
                    _ => {
                        let why = format!("{}: {}", answer.status, answer.excerpt());
                        refusals.refuse_all(sent, &why);
                        slot.state = Some(0);
                    }
                }
            }
            split_slots(&mut slots, &splits, |_| None);
            let settled = self.window.settle(records, slots, failure, &self.metrics);
            if let Some(attempt) = settled {
                return attempt;
            }
        }
    }

    /// Sends `body` (compressed if asked) to `path_and_query` and reads the answer, within
    /// `timeout`. An error means no answer: the connection is dropped and reopened next time.
    pub fn send(
        &mut self,
        method: hyper::Method,
        path_and_query: &str,
        body: Vec<u8>,
        events: usize,
    ) -> Result<Answer, String> {
        self.send_all(&method, path_and_query, vec![(body, events)])
            .pop()
            .unwrap_or_else(|| Err("no request was sent".into()))
    }

    /// Sends every body (with the number of events it carries) at once, each on a connection
    /// of its own (kept open ones first), and returns the answers in the order of the bodies,
    /// whatever order they came in. A body's error means no answer: its connection is dropped.
    pub fn send_all(
        &mut self,
        method: &hyper::Method,
        path_and_query: &str,
        bodies: Vec<(Vec<u8>, usize)>,
    ) -> Vec<Result<Answer, String>> {
        let mut results: Vec<Option<Result<Answer, String>>> = Vec::with_capacity(bodies.len());
        let mut requests = Vec::with_capacity(bodies.len());
        let mut events = 0;
        for (i, (body, n)) in bodies.into_iter().enumerate() {
            let body = self.compress(body);
            let len = body.len();
            match hyper::Request::builder()
                .method(method.clone())
                .uri(path_and_query)
                .body(Full::new(Bytes::from(body)))
            {
                Ok(mut request) => {
                    *request.headers_mut() = self.headers.clone();
                    requests.push((i, request, len));
                    events += n;
                }
                Err(e) => results.push(Some(Err(e.to_string()))),
            }
            results.resize_with(i + 1, || None);
        }
        metrics::set(&self.metrics.requests_in_flight, requests.len() as u64);
        metrics::set(&self.metrics.in_flight, events as u64);
        let timeout = self.endpoint.timeout;
        let tasks: Vec<_> = requests
            .into_iter()
            .map(|(i, request, len)| (i, request, len, self.idle.pop()))
            .collect();
        let (tls, url) = (self.tls.clone(), self.endpoint.url.clone());
        let counters = self.metrics.clone();
        let done = self.runtime.block_on(async move {
            let mut set = tokio::task::JoinSet::new();
            for (i, request, len, reused) in tasks {
                let (tls, url, counters) = (tls.clone(), url.clone(), counters.clone());
                set.spawn(async move {
                    let reconnected = reused.is_none();
                    let started = std::time::Instant::now();
                    let exchange = exchange(reused, &url, tls, request, len, &counters);
                    let result = tokio::time::timeout(timeout, exchange)
                        .await
                        .map_err(|_| format!("no answer within {timeout:?}"))
                        .and_then(|r| r);
                    (i, started.elapsed(), reconnected, result)
                });
            }
            let mut done = Vec::new();
            while let Some(r) = set.join_next().await {
                // A task ends only by returning: it is never aborted, and it does not panic.
                if let Ok(d) = r {
                    done.push(d);
                }
            }
            done
        });
        metrics::set(&self.metrics.requests_in_flight, 0);
        metrics::set(&self.metrics.in_flight, 0);
        for (i, elapsed, reconnected, result) in done {
            results[i] = Some(result.map(|(sender, answer)| {
                // Answered requests only: a timeout or a refused connection is counted as a
                // retry.
                self.latency.observe(elapsed);
                if reconnected {
                    metrics::add(&self.metrics.reconnects, 1);
                }
                // Keep the connection while the server does.
                if !sender.is_closed() {
                    self.idle.push(sender);
                }
                answer
            }));
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err("the request's task ended".into())))
            .collect()
    }

    /// The body as sent: gzipped when asked.
    fn compress(&self, body: Vec<u8>) -> Vec<u8> {
        if !self.endpoint.gzip {
            return body;
        }
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len() / 4),
            flate2::Compression::fast(),
        );
        // Writing to a Vec cannot fail.
        let _ = gz.write_all(&body);
        gz.finish().unwrap_or_default()
    }

    /// Drops the connections.
    pub fn close(&mut self) {
        self.idle.clear();
    }
}

/// One request (of `body_len` bytes, counted in `counters` once sent) and its answer, on
/// `reused` or a new connection; the connection comes back with the answer.
async fn exchange(
    reused: Option<SendRequest<Full<Bytes>>>,
    url: &Uri,
    tls: Option<tokio_rustls::TlsConnector>,
    request: hyper::Request<Full<Bytes>>,
    body_len: usize,
    counters: &OutputMetrics,
) -> Result<(SendRequest<Full<Bytes>>, Answer), String> {
    let mut sender = match reused {
        Some(s) => s,
        None => connect(url, tls).await?,
    };
    sender.ready().await.map_err(|e| e.to_string())?;
    // Counted once a connection carries it: a refused connection sent nothing.
    metrics::add(&counters.requests, 1);
    metrics::add(&counters.bytes_sent, body_len as u64);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(retry_after);
    let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| format!("reading the answer: {e}"))?;
    Ok((
        sender,
        Answer {
            status,
            retry_after,
            body,
        },
    ))
}

/// A batch of an attempt's window: its records (a range of those lent) and what the output
/// knows of them so far.
pub struct Slot<S> {
    /// Its first record, an index into the records lent.
    pub start: usize,
    /// Records in it.
    pub len: usize,
    /// The output's state of it (done or not, items done...).
    pub state: S,
}

impl<S> Slot<S> {
    /// Its records, of those lent.
    pub fn records<'a>(&self, lent: &'a [Vec<u8>]) -> &'a [Vec<u8>] {
        &lent[self.start..self.start + self.len]
    }
}

/// Batches kept from one attempt to the next: those not all done, and the done ones after
/// them, with their state, recognised by a digest of their records.
struct Carried<S> {
    /// Each batch's length and state, in order from the head.
    slots: Vec<(usize, S)>,
    /// Their records' digest, to know the head still holds them.
    digest: Vec<u8>,
}

/// The batches an output with several requests in flight has sent and not yet settled. The
/// backlog is released in order only: an attempt's batches leave it up to the first one
/// not done, the rest is carried to the next attempt (a crash then sends them again, which
/// `id = "hash"` makes harmless for Elasticsearch).
pub struct Window<S> {
    carried: Option<Carried<S>>,
}

impl<S> Default for Window<S> {
    fn default() -> Self {
        Window { carried: None }
    }
}

/// Why an attempt's requests failed, and the longest wait a server asked for.
#[derive(Default)]
pub struct Failure {
    /// The first error, for the log.
    pub error: Option<String>,
    /// The longest `Retry-After`.
    pub retry_after: Option<Duration>,
    /// Requests that failed.
    pub requests: usize,
}

impl Failure {
    /// Adds a failed request.
    pub fn add(&mut self, error: String, retry_after: Option<Duration>) {
        self.error.get_or_insert(error);
        self.retry_after = self.retry_after.max(retry_after);
        self.requests += 1;
    }
}

/// What a window knows of one of its batches.
pub trait SlotState {
    /// How many of its records the receiver took, once every one is settled.
    fn settled(&self) -> Option<usize>;
    /// Whether nothing is known of it yet.
    fn untouched(&self) -> bool;
}

/// A batch taken or refused whole: `Some(accepted)` once answered.
impl SlotState for Option<usize> {
    fn settled(&self) -> Option<usize> {
        *self
    }

    fn untouched(&self) -> bool {
        self.is_none()
    }
}

/// Splits each batch of `at` (indices, ascending) into two halves of fresh state (`fresh(len)`).
pub fn split_slots<S>(slots: &mut Vec<Slot<S>>, at: &[usize], fresh: impl Fn(usize) -> S) {
    for &k in at.iter().rev() {
        let (start, len) = (slots[k].start, slots[k].len);
        let half = len / 2;
        slots[k] = Slot {
            start,
            len: half,
            state: fresh(half),
        };
        slots.insert(
            k + 1,
            Slot {
                start: start + half,
                len: len - half,
                state: fresh(len - half),
            },
        );
    }
}

impl<S> Window<S> {
    /// The batches of this attempt: those carried from the last one if the head still holds
    /// their records, then fresh ones (`fresh(len)`) cut by `limits` from the records after
    /// them, until there are `max` batches or no records.
    pub fn plan(
        &mut self,
        records: &[Vec<u8>],
        limits: &BatchLimits,
        max: usize,
        separator: usize,
        fresh: impl Fn(usize) -> S,
    ) -> Vec<Slot<S>> {
        let mut slots = Vec::with_capacity(max);
        let mut at = 0;
        if let Some(c) = self.carried.take() {
            let total: usize = c.slots.iter().map(|(n, _)| n).sum();
            if total <= records.len() && digest(&records[..total]) == c.digest {
                for (len, state) in c.slots {
                    slots.push(Slot {
                        start: at,
                        len,
                        state,
                    });
                    at += len;
                }
            }
        }
        while slots.len() < max && at < records.len() {
            let len = limits.fitting(&records[at..], separator);
            // A partial batch behind others waits for more, as `max_wait` asks; the head's own
            // waiting is the delivery thread's.
            let partial = at + len == records.len() && len < limits.max_events;
            if partial && !slots.is_empty() && limits.max_wait > Duration::ZERO {
                break;
            }
            slots.push(Slot {
                start: at,
                len,
                state: fresh(len),
            });
            at += len;
        }
        slots
    }

    /// Ends an attempt: the batches from the head that are done (`done(state)` gives how many
    /// of a batch's records the receiver took, once every one is settled) leave the backlog;
    /// the rest is carried. `None`: nothing failed and nothing left yet, send the rest now
    /// (a batch was split). Each failed request counts in `retries` (the delivery thread
    /// counts one per failed attempt; the others are counted here).
    pub fn settle(
        &mut self,
        records: &[Vec<u8>],
        slots: Vec<Slot<S>>,
        failure: Failure,
        metrics: &OutputMetrics,
    ) -> Option<Attempt>
    where
        S: SlotState,
    {
        metrics::add(&metrics.retries, failure.requests.saturating_sub(1) as u64);
        let (mut taken, mut accepted, mut settled) = (0, 0, 0);
        for slot in &slots {
            match slot.state.settled() {
                Some(a) => {
                    taken += slot.len;
                    accepted += a;
                    settled += 1;
                }
                None => break,
            }
        }
        let mut rest: Vec<(usize, S)> = slots
            .into_iter()
            .skip(settled)
            .map(|s| (s.len, s.state))
            .collect();
        // After a failure, batches nothing is known of are cut afresh next time (the first
        // attempt of an outage would otherwise keep its small batches); without one, the rest
        // holds halves of a split batch, sent now as cut.
        if failure.error.is_some() {
            let known = rest
                .iter()
                .rposition(|(_, s)| !s.untouched())
                .map_or(0, |i| i + 1);
            rest.truncate(known);
        }
        if !rest.is_empty() {
            let total: usize = rest.iter().map(|(n, _)| n).sum();
            self.carried = Some(Carried {
                digest: digest(&records[taken..taken + total]),
                slots: rest,
            });
        }
        match (taken, failure.error) {
            (0, None) => None,
            (0, Some(error)) => Some(Attempt::Failed {
                error,
                retry_after: failure.retry_after,
            }),
            (_, Some(error)) => Some(Attempt::Partial {
                taken,
                accepted,
                error,
                retry_after: failure.retry_after,
            }),
            (_, None) => Some(Attempt::Done { taken, accepted }),
        }
    }
}

/// A digest of records (lengths included), to recognise them at the head later.
fn digest(records: &[Vec<u8>]) -> Vec<u8> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for r in records {
        ctx.update(&(r.len() as u64).to_le_bytes());
        ctx.update(r);
    }
    ctx.finish().as_ref().to_vec()
}

impl Answer {
    /// The first bytes of the body, for the log.
    pub fn excerpt(&self) -> String {
        const ERROR_BODY_BYTES: usize = 512;
        let end = self.body.len().min(ERROR_BODY_BYTES);
        String::from_utf8_lossy(&self.body[..end]).into_owned()
    }

    /// Whether the whole request should be sent again later: 408, 429, 5xx.
    pub fn retry_later(&self) -> bool {
        matches!(self.status.as_u16(), 408 | 429 | 500..=599)
    }
}

/// Opens a connection to the URL's host, with TLS for https.
async fn connect(
    url: &Uri,
    tls: Option<tokio_rustls::TlsConnector>,
) -> Result<SendRequest<Full<Bytes>>, String> {
    let host = url.host().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let port = url
        .port_u16()
        .unwrap_or(if tls.is_some() { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((bare, port))
        .await
        .map_err(|e| format!("connecting to {bare}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    match tls {
        Some(connector) => {
            let name = rustls::pki_types::ServerName::try_from(bare.to_string())
                .map_err(|e| e.to_string())?;
            let stream = connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {bare}:{port}: {e}"))?;
            handshake(hyper_util::rt::TokioIo::new(stream)).await
        }
        None => handshake(hyper_util::rt::TokioIo::new(tcp)).await,
    }
}

/// HTTP/1.1 on an open stream; the connection is driven by a task on the output's runtime.
async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// `Retry-After` in seconds (the HTTP-date form is taken as "soon"), bounded.
fn retry_after(v: &str) -> Option<Duration> {
    v.trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER))
}

/// What an HTTP output's transport is made with: the output's name and counters, its
/// dead-letter output and its request-duration histogram.
pub struct TransportParts {
    /// The output's name.
    pub name: Arc<str>,
    /// Its counters.
    pub metrics: Arc<OutputMetrics>,
    /// Where refused events go, if anywhere.
    pub dead_letter: Option<crate::output::delivery::DeadLetter>,
    /// Its request durations.
    pub latency: Arc<crate::metrics::LatencyHistogram>,
}

impl TransportParts {
    /// The client for `endpoint` (sending `content_type`) and the output's refusals.
    pub fn split(
        self,
        endpoint: HttpEndpoint,
        content_type: &'static str,
    ) -> anyhow::Result<(HttpClient, crate::output::delivery::Refusals)> {
        let client = HttpClient::new(endpoint, content_type, self.metrics.clone(), self.latency)?;
        let refusals =
            crate::output::delivery::Refusals::new(self.name, self.metrics, self.dead_letter);
        Ok((client, refusals))
    }
}

/// Starts an HTTP output's delivery thread; `transport` is made there, from the parts.
pub fn start<T: crate::output::delivery::Transport>(
    output: &crate::output::OutputConfig,
    ctx: crate::output::OutputStart<'_>,
    transport: impl FnOnce(TransportParts) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<crate::output::RunningOutput> {
    let parts = TransportParts {
        name: output.name.clone(),
        metrics: ctx.metrics.clone(),
        dead_letter: ctx.dead_letter.clone(),
        latency: ctx.all_metrics.request_seconds(&output.name),
    };
    crate::output::delivery::start(
        output,
        move || transport(parts),
        ctx.metrics,
        ctx.give_up,
        ctx.state_dir,
        ctx.predecessor,
    )
}

/// How records are joined into one request body.
#[derive(Debug, Clone, Copy)]
pub struct BodyShape {
    /// Before the first record.
    pub open: &'static [u8],
    /// Between two records.
    pub separator: &'static [u8],
    /// After each record.
    pub terminator: &'static [u8],
    /// After the last record.
    pub close: &'static [u8],
}

impl BodyShape {
    /// One record per line (NDJSON, plain lines).
    pub const LINES: BodyShape = BodyShape {
        open: b"",
        separator: b"",
        terminator: b"\n",
        close: b"",
    };
    /// A JSON array of the records.
    pub const JSON_ARRAY: BodyShape = BodyShape {
        open: b"[",
        separator: b",",
        terminator: b"",
        close: b"]",
    };

    /// The body for `records`.
    pub fn join(&self, records: &[Vec<u8>]) -> Vec<u8> {
        let per_record = self.separator.len() + self.terminator.len();
        let mut body = Vec::with_capacity(
            self.open.len()
                + records.iter().map(|r| r.len() + per_record).sum::<usize>()
                + self.close.len(),
        );
        body.extend_from_slice(self.open);
        for (i, r) in records.iter().enumerate() {
            if i > 0 {
                body.extend_from_slice(self.separator);
            }
            body.extend_from_slice(r);
            body.extend_from_slice(self.terminator);
        }
        body.extend_from_slice(self.close);
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("r{i}").into_bytes()).collect()
    }

    const TEN: BatchLimits = BatchLimits {
        max_events: 10,
        max_bytes: 1 << 20,
        max_wait: Duration::ZERO,
    };

    fn failure(error: &str) -> Failure {
        let mut f = Failure::default();
        f.add(error.into(), Some(Duration::from_secs(2)));
        f
    }

    #[test]
    fn a_window_is_released_in_order_and_carries_what_follows_a_failed_batch() {
        let metrics = OutputMetrics::default();
        let records = recs(35);
        let mut w: Window<Option<usize>> = Window::default();
        let mut slots = w.plan(&records, &TEN, 3, 1, |_| None);
        assert_eq!(
            slots.iter().map(|s| (s.start, s.len)).collect::<Vec<_>>(),
            [(0, 10), (10, 10), (20, 10)]
        );
        // The first batch failed, the later ones were taken: nothing leaves the backlog.
        slots[1].state = Some(10);
        slots[2].state = Some(10);
        match w.settle(&records, slots, failure("503"), &metrics) {
            Some(Attempt::Failed { retry_after, .. }) => {
                assert_eq!(retry_after, Some(Duration::from_secs(2)))
            }
            other => panic!("{other:?}"),
        }
        // The next attempt finds them at the head: only the first is owed.
        let mut slots = w.plan(&records, &TEN, 3, 1, |_| None);
        let owed: Vec<usize> = slots
            .iter()
            .filter(|s| s.state.is_none())
            .map(|s| s.start)
            .collect();
        assert_eq!(owed, [0]);
        slots[0].state = Some(9);
        match w.settle(&records, slots, Failure::default(), &metrics) {
            Some(Attempt::Done { taken, accepted }) => assert_eq!((taken, accepted), (30, 29)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn batches_taken_before_a_failed_one_leave_and_the_rest_is_carried() {
        let metrics = OutputMetrics::default();
        let records = recs(30);
        let mut w: Window<Option<usize>> = Window::default();
        let mut slots = w.plan(&records, &TEN, 3, 1, |_| None);
        slots[0].state = Some(10);
        slots[2].state = Some(10);
        let mut f = failure("503");
        f.add("reset".into(), None);
        match w.settle(&records, slots, f, &metrics) {
            Some(Attempt::Partial {
                taken, accepted, ..
            }) => assert_eq!((taken, accepted), (10, 10)),
            other => panic!("{other:?}"),
        }
        // Two requests failed: the delivery thread counts one, the window the other.
        assert_eq!(crate::metrics::get(&metrics.retries), 1);
        // The backlog released 10: the carried batches are at the head now.
        let slots = w.plan(&records[10..], &TEN, 3, 1, |_| None);
        assert_eq!(
            slots
                .iter()
                .map(|s| (s.start, s.len, s.state))
                .collect::<Vec<_>>(),
            [(0, 10, None), (10, 10, Some(10))]
        );
    }

    #[test]
    fn a_carried_window_is_forgotten_when_the_head_changed() {
        let metrics = OutputMetrics::default();
        let records = recs(30);
        let mut w: Window<Option<usize>> = Window::default();
        let mut slots = w.plan(&records, &TEN, 2, 1, |_| None);
        slots[1].state = Some(10);
        assert!(matches!(
            w.settle(&records, slots, failure("503"), &metrics),
            Some(Attempt::Failed { .. })
        ));
        // Dropped from the head meanwhile (drop_oldest): everything is owed again.
        let slots = w.plan(&records[5..], &TEN, 2, 1, |_| None);
        assert!(slots.iter().all(|s| s.state.is_none()));
    }

    #[test]
    fn a_partial_batch_behind_full_ones_waits_when_max_wait_is_set() {
        let records = recs(25);
        let mut w: Window<Option<usize>> = Window::default();
        let lens = |w: &mut Window<Option<usize>>, limits: &BatchLimits| {
            w.plan(&records, limits, 4, 1, |_| None)
                .iter()
                .map(|s| s.len)
                .collect::<Vec<_>>()
        };
        assert_eq!(lens(&mut w, &TEN), [10, 10, 5]);
        let waiting = BatchLimits {
            max_wait: Duration::from_millis(50),
            ..TEN
        };
        assert_eq!(lens(&mut w, &waiting), [10, 10]);
        // Alone at the head, it goes: the delivery thread has let it wait already.
        assert_eq!(w.plan(&records[..5], &waiting, 4, 1, |_| None).len(), 1);
    }

    #[test]
    fn a_split_batch_is_sent_again_in_halves_at_once() {
        let metrics = OutputMetrics::default();
        let records = recs(10);
        let mut w: Window<Option<usize>> = Window::default();
        let mut slots = w.plan(&records, &TEN, 2, 1, |_| None);
        split_slots(&mut slots, &[0], |_| None);
        assert_eq!(
            slots.iter().map(|s| (s.start, s.len)).collect::<Vec<_>>(),
            [(0, 5), (5, 5)]
        );
        assert!(
            w.settle(&records, slots, Failure::default(), &metrics)
                .is_none()
        );
    }

    #[test]
    fn retry_after_is_seconds_and_bounded() {
        assert_eq!(retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(" 100000 "), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn secrets_lose_their_trailing_newline_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        assert_eq!(read_secret(&p).unwrap(), "s3cret");
        std::fs::write(&p, "\n").unwrap();
        assert!(read_secret(&p).is_err());
    }
}
