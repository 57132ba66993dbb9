//! A real HTTP/1.1 server on 127.0.0.1 (hyper), plain or TLS, for the store outputs' tests: it
//! records every request and answers each as a script says, as a store's API answers, failures
//! included: statuses with their headers and bodies, a response that never comes, a connection
//! reset mid-request, and a store that is down (connection refused) and comes back on its port.
//!
//! ```ignore
//! let server = HttpServer::start(|_req, n| if n < 3 { Reply::status(503) } else { Reply::ok() });
//! let url = server.url("/ingest");
//! // ... later, at any time:
//! server.set(|_, _| Reply::json(400, r#"{"error":"bad"}"#));
//! server.down(); // connection refused
//! server.up();   // the same port again
//! let stored = server.stored_bodies(); // bodies of the requests answered 2xx, gunzipped
//! server.hold(true);   // whole requests wait unanswered: server.held(), server.release(n)
//! server.peak_concurrent(); // the most requests it was handling at once
//! ```
//!
//! The server runs on its own thread and runtime, and stops (closing every connection) when
//! dropped.

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Its rank among every request the server has seen since it started, from 0.
    pub n: usize,
    /// When its head arrived.
    pub at: Instant,
    /// `POST`, `PUT`...
    pub method: String,
    /// The path with its query, as sent: `/ingest?x=1`.
    pub path: String,
    /// Every header in the order sent, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body, gunzipped when `Content-Encoding: gzip`. Only what was read of it when the
    /// request was cut (`complete == false`).
    pub body: Vec<u8>,
    /// Bytes of the body on the wire (before gunzip).
    pub wire_len: usize,
    /// Whether the whole body was read (false when the request was reset mid-body, or the client
    /// went away).
    pub complete: bool,
    /// The status answered; `None` when none was (hung, reset).
    pub status: Option<u16>,
}

impl Recorded {
    /// The value of header `name` (any case), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the request was answered 2xx: what a store has stored.
    pub fn stored(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How the server answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Read the whole request and answer with this status, headers and body.
    Status {
        code: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Read the whole request and never answer; the connection stays open until the server
    /// goes down or is dropped.
    Hang,
    /// Cut the connection without answering: read part of the body (its first chunk), then
    /// close the socket with SO_LINGER 0, so the client gets an RST.
    Reset,
}

impl Reply {
    /// 200 with an empty body.
    pub fn ok() -> Reply {
        Reply::status(200)
    }

    /// `code` with no headers and an empty body.
    pub fn status(code: u16) -> Reply {
        Reply::Status {
            code,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    /// `code` with a JSON body (`Content-Type: application/json`).
    pub fn json(code: u16, body: &str) -> Reply {
        Reply::Status {
            code,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into(),
        }
    }

    /// This reply with one more header (a `Status` only).
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        if let Reply::Status { headers, .. } = &mut self {
            headers.push((name.into(), value.into()));
        }
        self
    }

    /// `code` (429, 503...) with `Retry-After: secs`.
    pub fn retry_after(code: u16, secs: u64) -> Reply {
        Reply::status(code).header("retry-after", &secs.to_string())
    }
}

/// Decides the reply to a request from the request and its rank `n` (from 0).
///
/// It is asked twice per request: once when the head has arrived (`complete == false`, the
/// body empty), where only a [`Reply::Reset`] is acted on (so a request can be cut mid-body),
/// then again with the whole body (`complete == true`), and that answer is given. A script
/// that decides by `n`, headers or body length therefore works unchanged; keep it free of
/// side effects.
pub type Script = Arc<dyn Fn(&Recorded, usize) -> Reply + Send + Sync>;

/// What the runtime's tasks share with the test.
struct Shared {
    script: RwLock<Script>,
    recorded: Mutex<Vec<Recorded>>,
    next: AtomicUsize,
    /// Connections open now.
    open: AtomicUsize,
    /// Requests being handled now (head arrived, not yet answered), and the most at once.
    active: AtomicUsize,
    peak_active: AtomicUsize,
    /// While on, whole requests wait before the script answers them, until released.
    hold: Mutex<Hold>,
}

/// The requests held before being answered, by rank.
#[derive(Default)]
struct Hold {
    on: bool,
    held: std::collections::BTreeMap<usize, tokio::sync::oneshot::Sender<()>>,
}

/// Counts a request being handled for as long as its handler lives.
struct ActiveGuard<'a>(&'a Shared);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    fn script(&self) -> Script {
        self.script.read().unwrap().clone()
    }

    fn record(&self, r: Recorded) {
        self.recorded.lock().unwrap().push(r);
    }
}

/// The accept loop of one "up" period.
struct Epoch {
    token: CancellationToken,
    closed: std::sync::mpsc::Receiver<()>,
}

/// An HTTP server on 127.0.0.1; see the module's doc.
pub struct HttpServer {
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    handle: tokio::runtime::Handle,
    epoch: Mutex<Option<Epoch>>,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    /// A plain HTTP server on 127.0.0.1, a free port, answering as `script` says.
    pub fn start(script: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static) -> HttpServer {
        HttpServer::launch(None, Arc::new(script))
    }

    /// An HTTPS server with this TLS configuration (see [`tls_server_config`]).
    pub fn start_tls(
        config: Arc<rustls::ServerConfig>,
        script: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    ) -> HttpServer {
        HttpServer::launch(
            Some(tokio_rustls::TlsAcceptor::from(config)),
            Arc::new(script),
        )
    }

    /// A server that answers 200 to everything.
    pub fn ok() -> HttpServer {
        HttpServer::start(|_, _| Reply::ok())
    }

    fn launch(tls: Option<tokio_rustls::TlsAcceptor>, script: Script) -> HttpServer {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let thread = std::thread::Builder::new()
            .name("http-server".into())
            .spawn(move || {
                rt.block_on(token.cancelled());
                // Dropping the runtime drops every task, and so closes every socket.
                drop(rt);
            })
            .unwrap();
        let mut server = HttpServer {
            addr: "127.0.0.1:0".parse().unwrap(),
            tls,
            shared: Arc::new(Shared {
                script: RwLock::new(script),
                recorded: Mutex::new(Vec::new()),
                next: AtomicUsize::new(0),
                open: AtomicUsize::new(0),
                active: AtomicUsize::new(0),
                peak_active: AtomicUsize::new(0),
                hold: Mutex::new(Hold::default()),
            }),
            handle,
            epoch: Mutex::new(None),
            stop,
            thread: Some(thread),
        };
        server.addr = server.listen();
        server
    }

    /// Replaces the script; requests from now on are answered by it.
    pub fn set(&self, script: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static) {
        *self.shared.script.write().unwrap() = Arc::new(script);
    }

    /// Answers every request from now on with `reply`.
    pub fn set_reply(&self, reply: Reply) {
        self.set(move |_, _| reply.clone());
    }

    /// The address it listens on (kept across [`HttpServer::down`] and [`HttpServer::up`]).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}` (`https` for a TLS server).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Every request received so far, in the order they arrived.
    pub fn requests(&self) -> Vec<Recorded> {
        let mut r = self.shared.recorded.lock().unwrap().clone();
        r.sort_by_key(|r| r.n);
        r
    }

    /// The bodies (gunzipped) of the requests answered 2xx, in the order they arrived.
    pub fn stored_bodies(&self) -> Vec<Vec<u8>> {
        self.requests()
            .into_iter()
            .filter(Recorded::stored)
            .map(|r| r.body)
            .collect()
    }

    /// How many requests were answered `code`.
    pub fn answered(&self, code: u16) -> usize {
        self.shared
            .recorded
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.status == Some(code))
            .count()
    }

    /// From now on (`true`), each whole request waits, unanswered and its script not yet
    /// asked, until [`HttpServer::release`]; `false` releases every held request and stops
    /// holding. So a test sees how many requests a client keeps in flight, and answers them in
    /// the order it chooses.
    pub fn hold(&self, on: bool) {
        let mut h = self.shared.hold.lock().unwrap();
        h.on = on;
        if !on {
            for (_, go) in std::mem::take(&mut h.held) {
                let _ = go.send(());
            }
        }
    }

    /// The ranks ([`Recorded::n`]) of the requests held now, in ascending order.
    pub fn held(&self) -> Vec<usize> {
        self.shared
            .hold
            .lock()
            .unwrap()
            .held
            .keys()
            .copied()
            .collect()
    }

    /// Lets held request `n` be answered (by the script, now); false if it is not held.
    pub fn release(&self, n: usize) -> bool {
        match self.shared.hold.lock().unwrap().held.remove(&n) {
            Some(go) => go.send(()).is_ok(),
            None => false,
        }
    }

    /// Requests whose head has arrived so far (answered, held, or being read).
    pub fn received(&self) -> usize {
        self.shared.next.load(Ordering::SeqCst)
    }

    /// Requests being handled now: read, held, or being answered.
    pub fn active(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// The most requests handled at once so far (from their head's arrival to their answer).
    pub fn peak_concurrent(&self) -> usize {
        self.shared.peak_active.load(Ordering::SeqCst)
    }

    /// Whether it is listening.
    pub fn is_up(&self) -> bool {
        self.epoch.lock().unwrap().is_some()
    }

    /// Goes down: closes the listening socket (connections are refused) and every open
    /// connection, hung ones included. Returns once the socket is closed.
    pub fn down(&self) {
        let Some(epoch) = self.epoch.lock().unwrap().take() else {
            return;
        };
        epoch.token.cancel();
        epoch
            .closed
            .recv_timeout(Duration::from_secs(10))
            .expect("the accept loop to stop");
        let start = Instant::now();
        while self.shared.open.load(Ordering::SeqCst) > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "connections still open after down()"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Comes back up on the same port (SO_REUSEADDR). Returns once it listens.
    pub fn up(&self) {
        if !self.is_up() {
            self.listen();
        }
    }

    /// Binds (self.addr: port 0 at first) and starts an accept loop; returns the bound address.
    fn listen(&self) -> SocketAddr {
        let std_listener = bind(self.addr)
            .unwrap_or_else(|e| panic!("binding the test HTTP server on {}: {e}", self.addr));
        let addr = std_listener.local_addr().unwrap();
        let listener = {
            let _in_runtime = self.handle.enter();
            tokio::net::TcpListener::from_std(std_listener).unwrap()
        };
        let token = self.stop.child_token();
        let (closed_tx, closed) = std::sync::mpsc::channel();
        let (shared, tls, epoch_token) = (self.shared.clone(), self.tls.clone(), token.clone());
        self.handle.spawn(async move {
            loop {
                tokio::select! {
                    _ = epoch_token.cancelled() => break,
                    accepted = listener.accept() => {
                        if let Ok((stream, _)) = accepted {
                            tokio::spawn(connection(
                                stream,
                                tls.clone(),
                                shared.clone(),
                                epoch_token.clone(),
                            ));
                        }
                    }
                }
            }
            drop(listener);
            let _ = closed_tx.send(());
        });
        *self.epoch.lock().unwrap() = Some(Epoch { token, closed });
        addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A listening socket on `addr` with SO_REUSEADDR, so that a server that went down can listen
/// on its port again while old connections are in TIME_WAIT.
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Counts an open connection for as long as it lives.
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a request handler can do to its connection.
struct ConnControl {
    /// A second descriptor of the socket, to set SO_LINGER on it while hyper owns the stream.
    socket: std::net::TcpStream,
    /// Cancelled to drop the connection.
    kill: CancellationToken,
}

impl ConnControl {
    /// Drops the connection with an RST.
    fn reset(&self) {
        let _ = socket2::SockRef::from(&self.socket).set_linger(Some(Duration::ZERO));
        self.kill.cancel();
    }
}

/// Serves one connection until it ends, a handler kills it, or the server goes down.
async fn connection(
    stream: tokio::net::TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    epoch: CancellationToken,
) {
    shared.open.fetch_add(1, Ordering::SeqCst);
    let _guard = OpenGuard(shared.clone());
    let Ok(std_stream) = stream.into_std() else {
        return;
    };
    let Ok(socket) = std_stream.try_clone() else {
        return;
    };
    let Ok(stream) = tokio::net::TcpStream::from_std(std_stream) else {
        return;
    };
    let control = Arc::new(ConnControl {
        socket,
        kill: CancellationToken::new(),
    });
    let kill = control.kill.clone();
    let serve = async {
        match tls {
            None => http(stream, shared, control.clone()).await,
            Some(acceptor) => {
                if let Ok(s) = acceptor.accept(stream).await {
                    http(s, shared, control.clone()).await;
                }
            }
        }
    };
    tokio::select! {
        _ = serve => {}
        _ = kill.cancelled() => {}
        _ = epoch.cancelled() => {}
    }
    // The stream is dropped with `serve`; `control` holds the last descriptor, closed here
    // (with an RST if a handler set SO_LINGER 0).
    drop(control);
}

async fn http<I>(io: I, shared: Arc<Shared>, control: Arc<ConnControl>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let (shared, control) = (shared.clone(), control.clone());
        async move { Ok::<_, Infallible>(handle(req, &shared, &control).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await;
}

/// Reads a request, records it, and answers it as the script says.
async fn handle(
    req: Request<Incoming>,
    shared: &Shared,
    control: &ConnControl,
) -> Response<Full<Bytes>> {
    let n = shared.next.fetch_add(1, Ordering::SeqCst);
    let now = shared.active.fetch_add(1, Ordering::SeqCst) + 1;
    shared.peak_active.fetch_max(now, Ordering::SeqCst);
    let _active = ActiveGuard(shared);
    let (parts, mut body) = req.into_parts();
    let mut rec = Recorded {
        n,
        at: Instant::now(),
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| parts.uri.to_string()),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: Vec::new(),
        wire_len: 0,
        complete: false,
        status: None,
    };

    if let Reply::Reset = (shared.script())(&rec, n) {
        if let Some(Ok(frame)) = body.frame().await
            && let Ok(data) = frame.into_data()
        {
            rec.body.extend_from_slice(&data);
        }
        rec.wire_len = rec.body.len();
        shared.record(rec);
        control.reset();
        return std::future::pending().await;
    }

    let mut raw = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    raw.extend_from_slice(&data);
                }
            }
            Err(_) => {
                // The client went away mid-body: nothing to answer.
                rec.wire_len = raw.len();
                rec.body = raw;
                shared.record(rec);
                return Response::new(Full::default());
            }
        }
    }
    rec.wire_len = raw.len();
    rec.complete = true;
    let gzip = rec
        .header("content-encoding")
        .is_some_and(|e| e.trim().eq_ignore_ascii_case("gzip"));
    let reply = if gzip {
        let mut out = Vec::new();
        match flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut out) {
            Ok(_) => {
                rec.body = out;
                None
            }
            Err(e) => {
                rec.body = raw;
                // As a store answers a body it cannot decode.
                Some(Reply::json(
                    400,
                    &format!(r#"{{"error":"invalid gzip body: {e}"}}"#),
                ))
            }
        }
    } else {
        rec.body = raw;
        None
    };
    if reply.is_none() {
        let wait = {
            let mut h = shared.hold.lock().unwrap();
            h.on.then(|| {
                let (go, wait) = tokio::sync::oneshot::channel();
                h.held.insert(n, go);
                wait
            })
        };
        if let Some(wait) = wait {
            // Released, or the server dropped (the handler is dropped with its connection).
            let _ = wait.await;
        }
    }
    let reply = reply.unwrap_or_else(|| (shared.script())(&rec, n));
    match reply {
        Reply::Status {
            code,
            headers,
            body,
        } => {
            rec.status = Some(code);
            shared.record(rec);
            let mut resp = Response::builder().status(code);
            for (k, v) in headers {
                resp = resp.header(k, v);
            }
            resp.body(Full::new(Bytes::from(body))).unwrap()
        }
        Reply::Hang => {
            shared.record(rec);
            std::future::pending().await
        }
        Reply::Reset => {
            shared.record(rec);
            control.reset();
            std::future::pending().await
        }
    }
}

/// A TLS server configuration from a PEM certificate chain and key, for
/// [`HttpServer::start_tls`].
pub fn tls_server_config(
    cert_pem: impl AsRef<Path>,
    key_pem: impl AsRef<Path>,
) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert_pem.as_ref())
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key_pem.as_ref()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    Arc::new(config)
}
