//! TLS material and policy (RFC 5425) shared by the `tls` listener and the `forward` output:
//! loading PEM files with rustls-pki-types, building rustls configurations for each
//! `client_auth` mode, the peer identity put on events, and the checks `--check-config` runs.
//!
//! TLS 1.2 and 1.3 only, with rustls' default (forward-secret) suites and the ring provider;
//! older peers fail the handshake with a counted reason (hostile-inputs C13).

pub mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub use verify::{Fingerprint, NamePattern, PeerRefused};

use crate::event::TlsPeer;

/// Certificates expiring sooner than this draw a warning from `--check-config`.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// How a `tls` listener authenticates its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// Any client; the connection is still encrypted.
    None,
    /// A client certificate chaining to `client_ca_file`.
    Ca,
    /// `Ca`, and a certificate name matching `permitted_peers`.
    Name(Vec<NamePattern>),
    /// A certificate whose SHA-256 is pinned (self-signed works).
    Fingerprint(Vec<Fingerprint>),
}

/// Server-side TLS settings of a listener, validated but not yet loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// Certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// Client authentication mode.
    pub client_auth: ClientAuth,
    /// CA bundle for `ca` and `name`.
    pub client_ca_file: Option<PathBuf>,
    /// Certificate revocation lists (PEM) checked with `ca` and `name`.
    pub client_crl_file: Option<PathBuf>,
}

/// Client-side TLS settings of a forward output.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSettings {
    /// CA bundle the collector's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// Pinned collector certificates (instead of `ca_file`).
    pub fingerprints: Vec<Fingerprint>,
    /// Name to verify and send as SNI (default: the host part of the address).
    pub server_name: String,
    /// Own certificate chain, for collectors that authenticate their clients.
    pub cert_file: Option<PathBuf>,
    /// Own private key.
    pub key_file: Option<PathBuf>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate in a PEM file; the error says what is wrong in plain words.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| {
            format!(
                "{}: cannot read certificates: {}",
                path.display(),
                pem_error(&e)
            )
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: invalid PEM: {}", path.display(), pem_error(&e)))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate found (expected a PEM \"BEGIN CERTIFICATE\" block)",
            path.display()
        ));
    }
    Ok(certs)
}

/// Reads the private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "{}: no private key found (expected a PEM \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" block)",
            path.display()
        ),
        e => format!("{}: cannot read private key: {}", path.display(), pem_error(&e)),
    })
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("{other:?}"),
    }
}

/// A certificate chain with a key checked to belong to it.
fn certified_key(
    cert_file: &Path,
    key_file: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let certs = load_certs(cert_file)?;
    let key = load_key(key_file)?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("{}: unsupported private key: {e}", key_file.display()))?;
    rustls::sign::CertifiedKey::new(certs.clone(), signing)
        .keys_match()
        .map_err(|_| {
            format!(
                "{}: this private key does not belong to the certificate in {}",
                key_file.display(),
                cert_file.display()
            )
        })?;
    Ok((certs, key))
}

/// Reads every CRL in a PEM file.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let crls: Vec<_> = CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| format!("{}: cannot read CRLs: {}", path.display(), pem_error(&e)))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: invalid PEM: {}", path.display(), pem_error(&e)))?;
    if crls.is_empty() {
        return Err(format!(
            "{}: no CRL found (expected a PEM \"BEGIN X509 CRL\" block)",
            path.display()
        ));
    }
    Ok(crls)
}

fn root_store(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

/// Loads the files and builds the listener's rustls configuration.
pub fn server_config(s: &ServerSettings) -> Result<Arc<ServerConfig>, String> {
    let (certs, key) = certified_key(&s.cert_file, &s.key_file)?;
    let provider = provider();
    let webpki = |ca: &Option<PathBuf>| -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
        let ca = ca
            .as_ref()
            .ok_or("client_ca_file is required for this client_auth mode")?;
        let mut builder =
            WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(ca)?), provider.clone());
        if let Some(crl) = &s.client_crl_file {
            builder = builder.with_crls(load_crls(crl)?);
        }
        builder
            .build()
            .map_err(|e| format!("{}: cannot build a client verifier: {e}", ca.display()))
    };
    let verifier: Arc<dyn rustls::server::danger::ClientCertVerifier> = match &s.client_auth {
        ClientAuth::None => WebPkiClientVerifier::no_client_auth(),
        ClientAuth::Ca => webpki(&s.client_ca_file)?,
        ClientAuth::Name(patterns) => Arc::new(verify::PermittedNames {
            inner: webpki(&s.client_ca_file)?,
            patterns: patterns.clone(),
        }),
        ClientAuth::Fingerprint(pins) => Arc::new(verify::PinnedFingerprints {
            pins: pins.clone(),
            algorithms: provider.signature_verification_algorithms,
        }),
    };
    let config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| format!("{}: {e}", s.cert_file.display()))?;
    Ok(Arc::new(config))
}

/// Loads the files and builds a forward output's rustls configuration.
pub fn client_config(s: &ClientSettings) -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| e.to_string())?;
    let builder = if !s.fingerprints.is_empty() {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verify::PinnedFingerprints {
                pins: s.fingerprints.clone(),
                algorithms: provider.signature_verification_algorithms,
            }))
    } else {
        let ca = s
            .ca_file
            .as_ref()
            .ok_or("ca_file or fingerprints is required to verify the collector")?;
        builder.with_root_certificates(root_store(ca)?)
    };
    let config = match (&s.cert_file, &s.key_file) {
        (Some(c), Some(k)) => {
            let (certs, key) = certified_key(c, k)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("{}: {e}", c.display()))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The server name to verify, from `server_name` or the address's host.
pub fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_string()).map_err(|_| format!("invalid server name {name:?}"))
}

/// Who the peer of an accepted connection is, from its certificate (if it sent one).
pub fn peer_identity(conn: &rustls::ServerConnection) -> Option<TlsPeer> {
    let cert = conn.peer_certificates()?.first()?;
    Some(TlsPeer {
        name: verify::cert_names(cert).into_iter().next(),
        fingerprint: verify::format_fingerprint(&verify::fingerprint(cert)),
    })
}

/// Why a handshake failed, for counters and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The certificate's names are not in `permitted_peers`.
    PeerNotPermitted,
    /// The certificate's fingerprint is not pinned.
    FingerprintNotTrusted,
    /// The certificate has expired (or is not valid yet).
    CertificateExpired,
    /// The certificate is on the CA's revocation list.
    CertificateRevoked,
    /// The certificate does not chain to a trusted CA, or is malformed or unfit (EKU).
    CertificateUntrusted,
    /// The client sent no certificate where one is required.
    NoCertificate,
    /// Anything else: plaintext on the TLS port, old protocol versions, no common suite.
    Protocol,
}

impl HandshakeFailure {
    /// Classifies the error a failed accept returned.
    pub fn classify(err: &std::io::Error) -> HandshakeFailure {
        use rustls::{CertificateError as C, Error as E};
        let Some(e) = err.get_ref().and_then(|e| e.downcast_ref::<E>()) else {
            return HandshakeFailure::Protocol;
        };
        match e {
            E::NoCertificatesPresented => HandshakeFailure::NoCertificate,
            E::InvalidCertificate(
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. },
            ) => HandshakeFailure::CertificateExpired,
            E::InvalidCertificate(C::Revoked) => HandshakeFailure::CertificateRevoked,
            E::InvalidCertificate(C::Other(other)) => match other.0.downcast_ref::<PeerRefused>() {
                Some(PeerRefused::NameNotPermitted) => HandshakeFailure::PeerNotPermitted,
                Some(PeerRefused::FingerprintNotTrusted) => HandshakeFailure::FingerprintNotTrusted,
                None => HandshakeFailure::CertificateUntrusted,
            },
            E::InvalidCertificate(_) => HandshakeFailure::CertificateUntrusted,
            _ => HandshakeFailure::Protocol,
        }
    }

    /// snake_case name, as in logs.
    pub fn name(self) -> &'static str {
        match self {
            HandshakeFailure::PeerNotPermitted => "peer_not_permitted",
            HandshakeFailure::FingerprintNotTrusted => "fingerprint_not_trusted",
            HandshakeFailure::CertificateExpired => "certificate_expired",
            HandshakeFailure::CertificateRevoked => "certificate_revoked",
            HandshakeFailure::CertificateUntrusted => "certificate_untrusted",
            HandshakeFailure::NoCertificate => "no_certificate",
            HandshakeFailure::Protocol => "protocol",
        }
    }
}

/// Problems `--check-config` reports for a certificate/key pair: errors (it cannot work) and
/// warnings (it works, for now).
#[derive(Debug, Default)]
pub struct FileCheck {
    /// Fatal problems.
    pub errors: Vec<String>,
    /// Certificates expiring within [`EXPIRY_WARNING_DAYS`].
    pub warnings: Vec<String>,
}

impl FileCheck {
    /// Checks that the key belongs to the certificate and the certificate is valid now.
    /// `key` is the config key the problem is reported under.
    pub fn cert_and_key(&mut self, key: &str, cert_file: &Path, key_file: &Path) {
        match certified_key(cert_file, key_file) {
            Ok((certs, _)) => self.validity(key, cert_file, &certs[0]),
            Err(e) => self.errors.push(format!("{key}: {e}")),
        }
    }

    /// Checks that a CRL file parses.
    pub fn crl(&mut self, key: &str, crl_file: &Path) {
        if let Err(e) = load_crls(crl_file) {
            self.errors.push(format!("{key}: {e}"));
        }
    }

    /// Checks that a CA bundle parses and its certificates are valid now.
    pub fn ca(&mut self, key: &str, ca_file: &Path) {
        match root_store(ca_file) {
            Ok(_) => {
                if let Ok(certs) = load_certs(ca_file) {
                    for c in &certs {
                        self.validity(key, ca_file, c);
                    }
                }
            }
            Err(e) => self.errors.push(format!("{key}: {e}")),
        }
    }

    fn validity(&mut self, key: &str, file: &Path, cert: &CertificateDer<'_>) {
        use x509_parser::prelude::*;
        let Ok((_, parsed)) = X509Certificate::from_der(cert.as_ref()) else {
            self.errors.push(format!(
                "{key}: {}: certificate does not parse as X.509",
                file.display()
            ));
            return;
        };
        let now = chrono::Utc::now().timestamp();
        let validity = parsed.validity();
        let not_after = validity.not_after.timestamp();
        let subject = parsed.subject().to_string();
        if now < validity.not_before.timestamp() {
            self.errors.push(format!(
                "{key}: {}: certificate {subject:?} is not valid until {}",
                file.display(),
                validity.not_before
            ));
        } else if now > not_after {
            self.errors.push(format!(
                "{key}: {}: certificate {subject:?} expired on {}",
                file.display(),
                validity.not_after
            ));
        } else if not_after - now < EXPIRY_WARNING_DAYS * 86_400 {
            self.warnings.push(format!(
                "{key}: {}: certificate {subject:?} expires in {} days, on {}",
                file.display(),
                (not_after - now) / 86_400,
                validity.not_after
            ));
        }
    }
}

/// Parses a list of pinned certificate fingerprints, reporting each bad one at `key`.
pub fn fingerprint_list(
    errs: &mut crate::decode::Errors<'_>,
    key: &str,
    v: &toml::Spanned<crate::decode::OneOrMany>,
) -> Vec<Fingerprint> {
    v.get_ref()
        .clone()
        .into_vec()
        .iter()
        .filter_map(|f| {
            verify::parse_fingerprint(f)
                .map_err(|m| errs.at(v.span(), key, m))
                .ok()
        })
        .collect()
}

/// The client TLS keys an output takes (`ca_file`, `fingerprints`, `server_name`, `cert_file`,
/// `key_file`): one part, read the same by every kind that connects over TLS.
#[derive(serde::Deserialize, Default)]
pub struct ClientTlsPart {
    ca_file: Option<toml::Spanned<String>>,
    server_name: Option<toml::Spanned<String>>,
    fingerprints: Option<toml::Spanned<crate::decode::OneOrMany>>,
    cert_file: Option<toml::Spanned<String>>,
    key_file: Option<toml::Spanned<String>>,
}

impl crate::decode::Part for ClientTlsPart {}

impl ClientTlsPart {
    /// The client settings when TLS is on (`why` says what turns it on, for messages, and
    /// `why_span` where); the keys given are reported as having no effect when it is off.
    /// `host` is the default server name.
    pub fn settings(
        &self,
        entry: &crate::decode::Entry<'_, '_>,
        errs: &mut crate::decode::Errors<'_>,
        tls: bool,
        why: &str,
        why_span: std::ops::Range<usize>,
        host: Option<String>,
    ) -> Option<ClientSettings> {
        use crate::decode::path_opt;
        if !tls {
            for (key, span) in [
                ("ca_file", self.ca_file.as_ref().map(|v| v.span())),
                ("server_name", self.server_name.as_ref().map(|v| v.span())),
                ("fingerprints", self.fingerprints.as_ref().map(|v| v.span())),
                ("cert_file", self.cert_file.as_ref().map(|v| v.span())),
                ("key_file", self.key_file.as_ref().map(|v| v.span())),
            ] {
                if let Some(span) = span {
                    errs.at(span, entry.key(key), format!("only applies with {why}"));
                }
            }
            return None;
        }
        let fingerprints = self
            .fingerprints
            .as_ref()
            .map(|v| fingerprint_list(errs, &entry.key("fingerprints"), v))
            .unwrap_or_default();
        if fingerprints.is_empty() && self.ca_file.is_none() {
            errs.at(
                why_span.clone(),
                entry.key("ca_file"),
                format!("missing: {why} needs ca_file (the server's CA) or fingerprints (pinned certificates)"),
            );
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            errs.at(
                why_span.clone(),
                entry.key("cert_file"),
                "cert_file and key_file go together (the client certificate and its key)",
            );
        }
        let server_name = match (&self.server_name, host) {
            (Some(v), _) => v.get_ref().clone(),
            (None, Some(h)) => h,
            (None, None) => return None,
        };
        if let Err(msg) = self::server_name(&server_name) {
            let span = self.server_name.as_ref().map_or(why_span, |v| v.span());
            errs.at(span, entry.key("server_name"), msg);
        }
        Some(ClientSettings {
            ca_file: path_opt(&self.ca_file),
            fingerprints,
            server_name,
            cert_file: path_opt(&self.cert_file),
            key_file: path_opt(&self.key_file),
        })
    }

    /// `--check-config`: the CA and the client certificate load and are valid now.
    pub fn check_environment(settings: &ClientSettings, key: &str, files: &mut FileCheck) {
        if let Some(ca) = &settings.ca_file {
            files.ca(&format!("{key}.ca_file"), ca);
        }
        if let (Some(cert), Some(k)) = (&settings.cert_file, &settings.key_file) {
            files.cert_and_key(&format!("{key}.cert_file"), cert, k);
        }
    }
}
