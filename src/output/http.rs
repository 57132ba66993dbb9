//! The `http` output: batches of events POSTed (or PUT) to a URL, as NDJSON, a JSON array or
//! formatted lines, through a memory or disk backlog ([`super::delivery`]). The escape hatch for
//! SIEM and log-store APIs that take HTTP (Splunk HEC, Graylog GELF over HTTP, Datadog, ...).
//!
//! An answer decides what becomes of a batch:
//! - 2xx: delivered; the events leave the backlog.
//! - 408, 429 and 5xx, a connection error or no answer within `timeout`: nothing leaves the
//!   backlog; the batch is sent again after a backoff, not before the server's `Retry-After`.
//! - 413: the batch is split in halves and sent again at once; a single event still too large
//!   is refused for good.
//! - Any other 4xx: refused for good. The events are counted in `rejected` and the answer is
//!   logged (at a bounded rate); they leave the backlog, so they never block the events after
//!   them.
//!
//! The thread owns a small single-threaded runtime for hyper's client and one keep-alive
//! connection, reopened when it breaks.

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

use crate::decode::{Entry, Errors, NumOrStr, Part, choice, duration_opt, keys};
use crate::event::Event;
use crate::metrics::{self, LogLimiter, OutputMetrics};
use crate::output::delivery::{Attempt, Transport};
use crate::output::format::Format;
use crate::output::{OutputConfig, OutputDescriptors, OutputKindSpec, OutputStart, RunningOutput};

/// `kind = "http"`.
pub const KIND: &str = "http";
/// Default `batch.max_events`.
pub const DEFAULT_BATCH_MAX_EVENTS: usize = 500;
/// Default `batch.max_size`: most ingest APIs take a few MiB per request.
pub const DEFAULT_BATCH_MAX_BYTES: u64 = 1 << 20;
/// Default `timeout`: connect, send and answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `Retry-After` honoured: a server asking for more is asked again sooner.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Bytes of a refusing answer's body kept for the log.
const ERROR_BODY_BYTES: usize = 512;
/// Most answer body read (answers are small; a huge one is not read whole).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The settings of an `http` output.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// Where requests go.
    pub url: Uri,
    /// POST or PUT.
    pub method: hyper::Method,
    /// How a batch becomes a body.
    pub encoding: Encoding,
    /// Gzip the body (`Content-Encoding: gzip`).
    pub gzip: bool,
    /// Extra headers, as given.
    pub headers: Vec<(String, String)>,
    /// Credentials sent with every request, read from their files at start.
    pub auth: Option<Auth>,
    /// For `https` URLs: the server's trust and the client certificate.
    pub tls: Option<crate::tls::ClientSettings>,
    /// Most events per request.
    pub batch_max_events: usize,
    /// Most body bytes per request (before compression); a single larger event goes alone.
    pub batch_max_bytes: u64,
    /// Connect, send and answer must fit in this.
    pub timeout: Duration,
}

/// How a batch of events becomes a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// One JSON event per line (`application/x-ndjson`).
    Ndjson,
    /// One JSON array of events (`application/json`).
    JsonArray,
    /// Formatted lines, one per event (`text/plain`).
    Lines,
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
}

#[derive(Deserialize, Default)]
struct HttpRaw {
    url: Option<Spanned<String>>,
    method: Option<Spanned<String>>,
    encoding: Option<Spanned<String>>,
    compression: Option<Spanned<String>>,
    headers: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    auth: Option<AuthRaw>,
    batch: Option<BatchRaw>,
    timeout: Option<Spanned<NumOrStr>>,
}

impl Part for HttpRaw {
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
}

#[derive(Deserialize, Default)]
struct BatchRaw {
    max_events: Option<Spanned<i64>>,
    max_size: Option<Spanned<NumOrStr>>,
}

impl OutputKindSpec for HttpSettings {
    const KIND: &'static str = KIND;
    const DEFAULT_FORMAT: Format = Format::Json;
    const HAS_BACKLOG: bool = true;

    fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<HttpSettings> {
        let raw = entry.part::<HttpRaw>(errs)?;
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
        let method = choice(
            errs,
            &entry.key("method"),
            &raw.method,
            "method",
            &[("post", 0), ("put", 1)],
            0,
        );
        let encoding = choice(
            errs,
            &entry.key("encoding"),
            &raw.encoding,
            "encoding",
            &[
                ("ndjson", Encoding::Ndjson),
                ("json_array", Encoding::JsonArray),
                ("lines", Encoding::Lines),
            ],
            Encoding::Ndjson,
        );
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
        let (batch_max_events, batch_max_bytes) = raw.batch(entry, errs);
        let timeout = match duration_opt(errs, &entry.key("timeout"), &raw.timeout) {
            Some(d) if d.is_zero() => {
                if let Some(v) = &raw.timeout {
                    errs.at(v.span(), entry.key("timeout"), "must be more than 0");
                }
                DEFAULT_TIMEOUT
            }
            Some(d) => d,
            None => DEFAULT_TIMEOUT,
        };
        (errs.count() == before).then_some(())?;
        Some(HttpSettings {
            url: url?,
            method: if method == 0 {
                hyper::Method::POST
            } else {
                hyper::Method::PUT
            },
            encoding,
            gzip,
            headers,
            auth,
            tls: if https { Some(tls?) } else { None },
            batch_max_events,
            batch_max_bytes,
            timeout,
        })
    }

    /// NDJSON and JSON arrays hold JSON events; lines take any format.
    fn accepts_format(&self, format: Format) -> Result<(), String> {
        match (self.encoding, format) {
            (Encoding::Ndjson | Encoding::JsonArray, Format::Json) | (Encoding::Lines, _) => Ok(()),
            (Encoding::Ndjson | Encoding::JsonArray, _) => Err(
                "encoding = \"ndjson\" and \"json_array\" carry JSON events: use format = \"json\", or encoding = \"lines\"".into(),
            ),
        }
    }

    fn descriptors(&self) -> OutputDescriptors {
        OutputDescriptors {
            files: 0,
            connections: 1,
        }
    }

    /// The credential files are readable; for https, the CA and client certificate load.
    fn check_environment(
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

    fn start(&self, output: &OutputConfig, ctx: OutputStart<'_>) -> anyhow::Result<RunningOutput> {
        let (name, settings, format) = (output.name.clone(), self.clone(), output.format);
        let metrics = ctx.metrics.clone();
        crate::output::delivery::start(
            output,
            move || HttpTransport::new(name, settings, format, metrics),
            ctx.metrics,
            ctx.give_up,
            ctx.state_dir,
            ctx.predecessor,
        )
    }
}

impl HttpRaw {
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
            Some(other) => {
                return bad(errs, &format!("scheme {other:?} is not http or https"));
            }
            None => return bad(errs, "it needs a scheme, http:// or https://"),
        }
        if uri.host().is_none_or(str::is_empty) {
            return bad(errs, "it names no host");
        }
        Some(uri)
    }

    /// Header names and values that HTTP allows; `Content-Type`, `Content-Encoding` and
    /// `Content-Length` are the output's own.
    fn headers(&self, entry: &Entry<'_, '_>, errs: &mut Errors<'_>) -> Vec<(String, String)> {
        let Some(h) = &self.headers else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in h.get_ref() {
            let name = HeaderName::from_bytes(k.as_bytes());
            let value = HeaderValue::from_str(v);
            match (name, value) {
                (Ok(n), Ok(_))
                    if n == header::CONTENT_LENGTH
                        || n == header::CONTENT_ENCODING
                        || n == header::HOST =>
                {
                    errs.at(
                        h.span(),
                        entry.key(&format!("headers.{k}")),
                        "is set by sluice itself",
                    );
                }
                (Ok(_), Ok(_)) => out.push((k.clone(), v.clone())),
                (Err(_), _) => errs.at(
                    h.span(),
                    entry.key(&format!("headers.{k}")),
                    "not a valid header name",
                ),
                (_, Err(_)) => errs.at(
                    h.span(),
                    entry.key(&format!("headers.{k}")),
                    "not a valid header value (control characters?)",
                ),
            }
        }
        out
    }

    /// `batch = { max_events, max_size }`.
    fn batch(&self, entry: &Entry<'_, '_>, errs: &mut Errors<'_>) -> (usize, u64) {
        let Some(b) = &self.batch else {
            return (DEFAULT_BATCH_MAX_EVENTS, DEFAULT_BATCH_MAX_BYTES);
        };
        let events = crate::decode::positive(errs, &entry.key("batch.max_events"), &b.max_events)
            .unwrap_or(DEFAULT_BATCH_MAX_EVENTS);
        let bytes = match crate::decode::size_opt(errs, &entry.key("batch.max_size"), &b.max_size) {
            Some(0) => {
                if let Some(v) = &b.max_size {
                    errs.at(v.span(), entry.key("batch.max_size"), "must be more than 0");
                }
                DEFAULT_BATCH_MAX_BYTES
            }
            Some(n) => n,
            None => DEFAULT_BATCH_MAX_BYTES,
        };
        (events, bytes)
    }
}

impl AuthRaw {
    fn decode(&self, entry: &Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<Auth> {
        let key = |k: &str| entry.key(&format!("auth.{k}"));
        let span = self.kind.as_ref().map(|k| k.span());
        let Some(kind) = &self.kind else {
            errs.at(
                entry.kind.span(),
                key("kind"),
                "missing: auth needs kind = \"basic\" or \"bearer\"",
            );
            return None;
        };
        let given = |errs: &mut Errors<'_>, name: &str, v: &Option<Spanned<String>>| {
            if v.is_none() {
                errs.at(
                    span.clone().unwrap_or(entry.kind.span()),
                    key(name),
                    format!("missing: auth kind = {:?} needs {name}", kind.get_ref()),
                );
            }
            v.as_ref().map(|v| v.get_ref().clone())
        };
        let unused = |errs: &mut Errors<'_>, name: &str, v: &Option<Spanned<String>>| {
            if let Some(v) = v {
                errs.at(
                    v.span(),
                    key(name),
                    format!("has no effect with auth kind = {:?}", kind.get_ref()),
                );
            }
        };
        match kind.get_ref().as_str() {
            "basic" => {
                unused(errs, "token_file", &self.token_file);
                let user = given(errs, "user", &self.user);
                let password_file = given(errs, "password_file", &self.password_file);
                Some(Auth::Basic {
                    user: user?,
                    password_file: PathBuf::from(password_file?),
                })
            }
            "bearer" => {
                unused(errs, "user", &self.user);
                unused(errs, "password_file", &self.password_file);
                let token_file = given(errs, "token_file", &self.token_file)?;
                Some(Auth::Bearer {
                    token_file: PathBuf::from(token_file),
                })
            }
            other => {
                errs.at(
                    kind.span(),
                    key("kind"),
                    format!("unknown auth kind {other:?}: expected \"basic\" or \"bearer\""),
                );
                None
            }
        }
    }
}

impl Auth {
    /// The key and path of its secret file.
    fn file(&self) -> (&'static str, &std::path::Path) {
        match self {
            Auth::Basic { password_file, .. } => ("password_file", password_file),
            Auth::Bearer { token_file } => ("token_file", token_file),
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
        };
        let mut v = HeaderValue::from_str(&value)
            .map_err(|_| anyhow::anyhow!("{}: not usable in a header", path.display()))?;
        v.set_sensitive(true);
        Ok(v)
    }
}

/// A secret file's content, without its trailing newline.
fn read_secret(path: &std::path::Path) -> Result<String, String> {
    let s = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let s = s.strip_suffix('\n').unwrap_or(&s);
    let s = s.strip_suffix('\r').unwrap_or(s);
    if s.is_empty() {
        return Err(format!("{}: empty", path.display()));
    }
    Ok(s.to_string())
}

/// How an `http` output sends: one keep-alive connection, driven by a runtime of its own.
struct HttpTransport {
    name: Arc<str>,
    settings: HttpSettings,
    format: Format,
    runtime: tokio::runtime::Runtime,
    connection: Option<SendRequest<Full<Bytes>>>,
    tls: Option<tokio_rustls::TlsConnector>,
    /// Content-Type, auth and the configured headers, sent with every request.
    headers: HeaderMap,
    metrics: Arc<OutputMetrics>,
    reject_log: LogLimiter,
}

/// What one request came to.
enum Answer {
    /// 2xx.
    Stored,
    /// 413: too large.
    TooLarge,
    /// Retry later (408, 429, 5xx), not before the server's wait.
    Later(String, Option<Duration>),
    /// Refused for good (other 4xx, and anything else).
    Refused(String),
}

impl HttpTransport {
    fn new(
        name: Arc<str>,
        settings: HttpSettings,
        format: Format,
        metrics: Arc<OutputMetrics>,
    ) -> anyhow::Result<HttpTransport> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let tls = match &settings.tls {
            Some(c) => Some(tokio_rustls::TlsConnector::from(
                crate::tls::client_config(c).map_err(|e| anyhow::anyhow!(e))?,
            )),
            None => None,
        };
        let mut headers = HeaderMap::new();
        let content_type = match settings.encoding {
            Encoding::Ndjson => "application/x-ndjson",
            Encoding::JsonArray => "application/json",
            Encoding::Lines => "text/plain; charset=utf-8",
        };
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if settings.gzip {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        if let Some(auth) = &settings.auth {
            headers.insert(header::AUTHORIZATION, auth.header()?);
        }
        for (k, v) in &settings.headers {
            headers.insert(
                HeaderName::from_bytes(k.as_bytes())?,
                HeaderValue::from_str(v)?,
            );
        }
        let host = match (settings.url.host(), settings.url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => anyhow::bail!("url {} names no host", settings.url),
        };
        headers.insert(header::HOST, HeaderValue::from_str(&host)?);
        Ok(HttpTransport {
            name,
            settings,
            format,
            runtime,
            connection: None,
            tls,
            headers,
            metrics,
            reject_log: LogLimiter::new(Duration::from_secs(10)),
        })
    }

    /// How many records from the head make one request: at most `batch_max_events`, and as
    /// many as fit `batch_max_bytes` (at least one).
    fn fitting(&self, records: &[Vec<u8>]) -> usize {
        let mut bytes = 0u64;
        let n = records
            .iter()
            .take_while(|r| {
                bytes += r.len() as u64 + 1;
                bytes <= self.settings.batch_max_bytes
            })
            .count();
        n.max(1)
    }

    /// The request body for `records`, compressed if asked.
    fn body(&self, records: &[Vec<u8>]) -> Vec<u8> {
        let mut body = Vec::with_capacity(records.iter().map(|r| r.len() + 1).sum::<usize>() + 2);
        match self.settings.encoding {
            Encoding::Ndjson | Encoding::Lines => {
                for r in records {
                    body.extend_from_slice(r);
                    body.push(b'\n');
                }
            }
            Encoding::JsonArray => {
                body.push(b'[');
                for (i, r) in records.iter().enumerate() {
                    if i > 0 {
                        body.push(b',');
                    }
                    body.extend_from_slice(r);
                }
                body.push(b']');
            }
        }
        if !self.settings.gzip {
            return body;
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        // Writing to a Vec cannot fail.
        let _ = gz.write_all(&body);
        gz.finish().unwrap_or_default()
    }

    /// Sends one request and reads its answer, within `timeout`.
    fn request(&mut self, body: Vec<u8>) -> Result<Answer, String> {
        metrics::add(&self.metrics.requests, 1);
        metrics::add(&self.metrics.bytes_sent, body.len() as u64);
        let mut request = hyper::Request::builder()
            .method(self.settings.method.clone())
            .uri(
                self.settings
                    .url
                    .path_and_query()
                    .map_or("/", |p| p.as_str()),
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        *request.headers_mut() = self.headers.clone();
        let timeout = self.settings.timeout;
        let mut connection = self.connection.take();
        let reconnected = connection.is_none();
        let tls = self.tls.clone();
        let url = self.settings.url.clone();
        let result = self.runtime.block_on(async {
            tokio::time::timeout(timeout, async {
                let mut sender = match connection.take() {
                    Some(s) => s,
                    None => connect(&url, tls).await?,
                };
                sender.ready().await.map_err(|e| e.to_string())?;
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
                    .unwrap_or_default();
                Ok::<_, String>((sender, status, retry_after, body))
            })
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
        });
        let (sender, status, wait, body) = result?;
        if reconnected {
            metrics::add(&self.metrics.reconnects, 1);
        }
        // Keep the connection while the server does.
        self.connection = Some(sender).filter(|s| !s.is_closed());
        let excerpt = || {
            let end = body.len().min(ERROR_BODY_BYTES);
            String::from_utf8_lossy(&body[..end]).into_owned()
        };
        Ok(match status.as_u16() {
            200..=299 => Answer::Stored,
            413 => Answer::TooLarge,
            408 | 429 | 500..=599 => Answer::Later(format!("{status}: {}", excerpt()), wait),
            _ => Answer::Refused(format!("{status}: {}", excerpt())),
        })
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

impl Transport for HttpTransport {
    fn encode(&self, event: &Event, out: &mut Vec<u8>) {
        // One line, escaped so it cannot split, without its LF (the encoding adds separators).
        self.format.write_line(event, out);
        out.pop();
    }

    fn batch_records(&self) -> usize {
        self.settings.batch_max_events
    }

    fn send(&mut self, records: &[Vec<u8>]) -> Attempt {
        let mut n = self.fitting(records);
        loop {
            let body = self.body(&records[..n]);
            let answer = match self.request(body) {
                Ok(a) => a,
                Err(error) => {
                    self.connection = None;
                    return Attempt::Failed {
                        error,
                        retry_after: None,
                    };
                }
            };
            match answer {
                Answer::Stored => {
                    return Attempt::Done {
                        taken: n,
                        accepted: n,
                    };
                }
                // Halve until it fits; one event that does not is refused below.
                Answer::TooLarge if n > 1 => n /= 2,
                Answer::TooLarge => return self.refused(1, "413 Payload Too Large"),
                Answer::Later(error, retry_after) => {
                    return Attempt::Failed { error, retry_after };
                }
                Answer::Refused(why) => return self.refused(n, &why),
            }
        }
    }

    fn close(&mut self) {
        self.connection = None;
    }
}

impl HttpTransport {
    /// `n` events refused for good: counted, logged at a bounded rate, done with.
    fn refused(&mut self, n: usize, why: &str) -> Attempt {
        metrics::add(&self.metrics.rejected, n as u64);
        if let Some(suppressed) = self.reject_log.allow() {
            tracing::error!(output = %self.name, events = n, answer = why, suppressed,
                "the server refused events for good; they are counted in `rejected` and not sent again");
        }
        Attempt::Done {
            taken: n,
            accepted: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
