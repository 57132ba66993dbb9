//! The `tls` listener (RFC 5425): a TCP listener whose connections first complete a TLS
//! handshake, bounded by `handshake_timeout`. Framing, limits and back-pressure are the stream
//! server's (see [`super::stream`]); this module adds its settings, the handshake, its failure
//! counters, and certificate reload on SIGHUP.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use serde::Deserialize;
use toml::Spanned;

use super::kind::{BoundSocket, ListenerKindSpec, StartContext, log_listening, wrong_socket};
use super::stream::StreamListener;
use super::tcp::TcpSettings;
use crate::decode::{Entry, Errors, NumOrStr, OneOrMany, Part, duration_opt, path_opt};
use crate::event::TlsPeer;
use crate::metrics::{self, ListenerMetrics, LogLimiter};
use crate::tls::{HandshakeFailure, ServerSettings};

/// `kind = "tls"`.
pub const KIND: &str = "tls";
/// Default time a TLS client has to finish its handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The settings of a `tls` listener.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    /// Address, sender filter, and the limits and framing of each connection: a TCP
    /// listener's, with a handshake first.
    pub tcp: TcpSettings,
    /// A handshake not finished this long after connect is cut (hostile input C01).
    pub handshake_timeout: Duration,
    /// Certificates and client authentication.
    pub tls: ServerSettings,
}

#[derive(Deserialize, Default)]
struct TlsRaw {
    handshake_timeout: Option<Spanned<NumOrStr>>,
    cert_file: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
    client_auth: Option<Spanned<String>>,
    client_ca_file: Option<Spanned<String>>,
    client_crl_file: Option<Spanned<String>>,
    permitted_peers: Option<Spanned<OneOrMany>>,
    fingerprints: Option<Spanned<OneOrMany>>,
}

impl Part for TlsRaw {}

impl ListenerKindSpec for TlsSettings {
    const KIND: &'static str = KIND;

    fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<TlsSettings> {
        let tcp = TcpSettings::decode(entry, errs);
        let raw = entry.part::<TlsRaw>(errs)?;
        let tls = raw.server_settings(entry, errs);
        let handshake_timeout = duration_opt(
            errs,
            &entry.key("handshake_timeout"),
            &raw.handshake_timeout,
        )
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT);
        Some(TlsSettings {
            tcp: tcp?,
            handshake_timeout,
            tls: tls?,
        })
    }

    super::kind::tcp_socket_methods!();

    /// `--check-config`: the certificate, key, CA and CRL load, and are valid now.
    fn check_environment(
        &self,
        key: &str,
        _problems: &mut Vec<String>,
        files: &mut crate::tls::FileCheck,
    ) {
        let t = &self.tls;
        files.cert_and_key(&format!("{key}.cert_file"), &t.cert_file, &t.key_file);
        if let Some(ca) = &t.client_ca_file {
            files.ca(&format!("{key}.client_ca_file"), ca);
        }
        if let Some(crl) = &t.client_crl_file {
            files.crl(&format!("{key}.client_crl_file"), crl);
        }
    }

    fn start(
        &self,
        socket: BoundSocket,
        ctx: StartContext<'_>,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let BoundSocket::Tcp(listener) = socket else {
            return Err(wrong_socket(KIND, &socket));
        };
        let name = ctx.config.name.clone();
        log_listening(&name, KIND, listener.local_addr());
        let server =
            TlsServer::new(&self.tls, self.handshake_timeout).map_err(|e| anyhow::anyhow!(e))?;
        let listener = StreamListener::tcp(listener)?;
        tokio::spawn(reload_on_hangup(
            name,
            self.tls.clone(),
            server.clone(),
            ctx.hangup.clone(),
            ctx.stop.clone(),
        ));
        Ok(super::stream::serve(
            listener,
            &self.tcp.connections,
            self.tcp.network.allowed_sources.clone(),
            Some(server),
            super::stream::Speech::Syslog,
            ctx,
        ))
    }
}

/// The TLS keys of a listener that speaks another protocol over TLS (`relp` with `tls = true`):
/// the certificates, client authentication and `handshake_timeout`, as a `tls` listener has.
/// With `on` false, each of them given is reported as having no effect. The outer `None`: a
/// problem was reported; `Some(None)`: TLS is off.
#[allow(clippy::option_option)]
pub(super) fn decode_server(
    entry: &mut Entry<'_, '_>,
    errs: &mut Errors<'_>,
    on: bool,
) -> Option<Option<(ServerSettings, Duration)>> {
    let raw = entry.part::<TlsRaw>(errs)?;
    if !on {
        let given = [
            (
                "handshake_timeout",
                raw.handshake_timeout.as_ref().map(|v| v.span()),
            ),
            ("cert_file", raw.cert_file.as_ref().map(|v| v.span())),
            ("key_file", raw.key_file.as_ref().map(|v| v.span())),
            ("client_auth", raw.client_auth.as_ref().map(|v| v.span())),
            (
                "client_ca_file",
                raw.client_ca_file.as_ref().map(|v| v.span()),
            ),
            (
                "client_crl_file",
                raw.client_crl_file.as_ref().map(|v| v.span()),
            ),
            (
                "permitted_peers",
                raw.permitted_peers.as_ref().map(|v| v.span()),
            ),
            ("fingerprints", raw.fingerprints.as_ref().map(|v| v.span())),
        ];
        let before = errs.count();
        for (key, span) in given {
            if let Some(span) = span {
                errs.at(span, entry.key(key), "has no effect without tls = true");
            }
        }
        return (errs.count() == before).then_some(None);
    }
    let tls = raw.server_settings(entry, errs);
    let handshake_timeout = duration_opt(
        errs,
        &entry.key("handshake_timeout"),
        &raw.handshake_timeout,
    )
    .filter(|d| !d.is_zero())
    .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT);
    Some(Some((tls?, handshake_timeout)))
}

/// `--check-config` for a listener's TLS files.
pub(super) fn check_server_files(key: &str, t: &ServerSettings, files: &mut crate::tls::FileCheck) {
    files.cert_and_key(&format!("{key}.cert_file"), &t.cert_file, &t.key_file);
    if let Some(ca) = &t.client_ca_file {
        files.ca(&format!("{key}.client_ca_file"), ca);
    }
    if let Some(crl) = &t.client_crl_file {
        files.crl(&format!("{key}.client_crl_file"), crl);
    }
}

impl TlsRaw {
    /// The TLS half: files, and the client authentication policy.
    fn server_settings(
        &self,
        entry: &Entry<'_, '_>,
        errs: &mut Errors<'_>,
    ) -> Option<ServerSettings> {
        use crate::tls::{ClientAuth, NamePattern};
        let required = |errs: &mut Errors<'_>, key: &str, v: &Option<Spanned<String>>| {
            if v.is_none() {
                entry.missing(
                    errs,
                    key,
                    "missing: a tls listener needs cert_file and key_file (PEM)",
                );
            }
            path_opt(v)
        };
        let cert_file = required(errs, "cert_file", &self.cert_file);
        let key_file = required(errs, "key_file", &self.key_file);
        let client_ca_file = path_opt(&self.client_ca_file);
        let client_crl_file = path_opt(&self.client_crl_file);
        let mode = self
            .client_auth
            .as_ref()
            .map_or("none", |v| v.get_ref().as_str());
        let mode_span = self
            .client_auth
            .as_ref()
            .map_or(entry.kind.span(), |v| v.span());
        let unused = |errs: &mut Errors<'_>, key: &str, span: Option<std::ops::Range<usize>>| {
            if let Some(span) = span {
                errs.at(
                    span,
                    entry.key(key),
                    format!("has no effect with client_auth = \"{mode}\""),
                );
            }
        };
        let peers_span = self.permitted_peers.as_ref().map(|v| v.span());
        let fp_span = self.fingerprints.as_ref().map(|v| v.span());
        let ca_span = self.client_ca_file.as_ref().map(|v| v.span());
        let crl_span = self.client_crl_file.as_ref().map(|v| v.span());
        let client_auth = match mode {
            "none" | "ca" => {
                unused(errs, "permitted_peers", peers_span);
                unused(errs, "fingerprints", fp_span);
                if mode == "none" {
                    unused(errs, "client_ca_file", ca_span);
                    unused(errs, "client_crl_file", crl_span);
                    ClientAuth::None
                } else {
                    ClientAuth::Ca
                }
            }
            "name" => {
                unused(errs, "fingerprints", fp_span);
                let Some(peers) = &self.permitted_peers else {
                    errs.at(mode_span, entry.key("permitted_peers"), "missing: client_auth = \"name\" needs permitted_peers, like [\"*.example.net\"]");
                    return None;
                };
                let mut patterns = Vec::new();
                for name in peers.get_ref().clone().into_vec() {
                    match NamePattern::parse(&name) {
                        Ok(pat) => patterns.push(pat),
                        Err(msg) => errs.at(peers.span(), entry.key("permitted_peers"), msg),
                    }
                }
                ClientAuth::Name(patterns)
            }
            "fingerprint" => {
                unused(errs, "permitted_peers", peers_span);
                unused(errs, "client_ca_file", ca_span);
                unused(errs, "client_crl_file", crl_span);
                let Some(fps) = &self.fingerprints else {
                    errs.at(mode_span, entry.key("fingerprints"), "missing: client_auth = \"fingerprint\" needs fingerprints, like [\"sha256:AB:CD:...\"]");
                    return None;
                };
                ClientAuth::Fingerprint(crate::tls::fingerprint_list(
                    errs,
                    &entry.key("fingerprints"),
                    fps,
                ))
            }
            other => {
                errs.at(
                    mode_span,
                    entry.key("client_auth"),
                    format!("unknown mode {other:?}: expected \"none\", \"ca\", \"name\" or \"fingerprint\""),
                );
                return None;
            }
        };
        if matches!(client_auth, ClientAuth::Ca | ClientAuth::Name(_)) && client_ca_file.is_none() {
            errs.at(
                mode_span,
                entry.key("client_ca_file"),
                format!(
                    "missing: client_auth = \"{mode}\" needs the CA that signs client certificates"
                ),
            );
        }
        Some(ServerSettings {
            cert_file: cert_file?,
            key_file: key_file?,
            client_auth,
            client_ca_file,
            client_crl_file,
        })
    }
}

/// The TLS half of a listener: the current acceptor (swapped on reload) and the handshake bound.
#[derive(Clone)]
pub struct TlsServer {
    /// Current certificates and policy; a reload swaps it, established connections keep theirs.
    pub acceptor: Arc<ArcSwap<TlsAcceptor>>,
    /// A handshake must complete within this.
    pub handshake_timeout: Duration,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsServer {
    /// Loads the files and builds the acceptor.
    pub fn new(
        settings: &ServerSettings,
        handshake_timeout: Duration,
    ) -> Result<TlsServer, String> {
        let config = crate::tls::server_config(settings)?;
        Ok(TlsServer {
            acceptor: Arc::new(ArcSwap::from_pointee(TlsAcceptor::from(config))),
            handshake_timeout,
        })
    }

    /// Runs the handshake. On failure the reason is counted (and logged, rate-limited) and
    /// `None` returned: the caller drops the connection.
    pub async fn handshake(
        &self,
        stream: TcpStream,
        peer: std::net::SocketAddr,
        m: &ListenerMetrics,
        fault_log: &std::sync::Mutex<LogLimiter>,
    ) -> Option<(TlsStream<TcpStream>, Option<TlsPeer>)> {
        let acceptor = self.acceptor.load_full();
        let reason =
            match tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    metrics::add(&m.tls_handshakes, 1);
                    let identity = crate::tls::peer_identity(tls.get_ref().1);
                    return Some((tls, identity));
                }
                Err(_) => {
                    metrics::add(&m.tls_handshake_timeouts, 1);
                    "handshake_timeout".to_string()
                }
                Ok(Err(e)) => {
                    let why = HandshakeFailure::classify(&e);
                    let counter = match why {
                        HandshakeFailure::PeerNotPermitted => &m.tls_peer_not_permitted,
                        HandshakeFailure::FingerprintNotTrusted => &m.tls_fingerprint_not_trusted,
                        HandshakeFailure::CertificateExpired => &m.tls_certificate_expired,
                        HandshakeFailure::CertificateRevoked => &m.tls_certificate_revoked,
                        HandshakeFailure::CertificateUntrusted => &m.tls_certificate_untrusted,
                        HandshakeFailure::NoCertificate => &m.tls_no_certificate,
                        HandshakeFailure::Protocol => &m.tls_handshake_failed,
                    };
                    metrics::add(counter, 1);
                    format!("{}: {e}", why.name())
                }
            };
        let allowed = fault_log.lock().ok().and_then(|mut l| l.allow());
        if let Some(suppressed) = allowed {
            tracing::warn!(%peer, %reason, suppressed, "TLS handshake refused");
        }
        None
    }
}

/// Reloads certificates and keys each time `hangup` changes, until `shutdown`. A reload that
/// fails (a missing file, a key that does not match) keeps the running certificates and says why.
pub async fn reload_on_hangup(
    name: Arc<str>,
    settings: ServerSettings,
    server: TlsServer,
    mut hangup: tokio::sync::watch::Receiver<u64>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = hangup.changed() => if changed.is_err() { return },
        }
        let s = settings.clone();
        match tokio::task::spawn_blocking(move || crate::tls::server_config(&s)).await {
            Ok(Ok(config)) => {
                server.acceptor.store(Arc::new(TlsAcceptor::from(config)));
                tracing::info!(listener = %name, "TLS certificates reloaded");
            }
            Ok(Err(e)) => {
                tracing::error!(listener = %name, error = %e, "TLS reload failed; keeping the current certificates")
            }
            Err(e) => tracing::error!(listener = %name, error = %e, "TLS reload task failed"),
        }
    }
}
