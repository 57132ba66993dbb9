//! The `tls` listener (RFC 5425): a TCP listener whose connections first complete a TLS
//! handshake, bounded by `handshake_timeout`. Framing, limits and back-pressure are the TCP
//! listener's (see [`super::tcp`]); this module adds the handshake, its failure counters, and
//! certificate reload on SIGHUP.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::event::TlsPeer;
use crate::metrics::{self, ListenerMetrics, LogLimiter};
use crate::tls::{HandshakeFailure, ServerSettings};

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
