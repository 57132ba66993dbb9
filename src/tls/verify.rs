//! Peer authentication beyond plain chain validation: permitted names with RFC 6125 wildcards
//! (hostile-inputs C07, C08, C10) and SHA-256 certificate pinning (C11), for both the server
//! (client certificates) and the client (the collector's certificate).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, SignatureScheme,
};

/// A SHA-256 certificate fingerprint.
pub type Fingerprint = [u8; 32];

/// Why a certificate that chains (or not) is refused; carried in `CertificateError::Other` so
/// the listener can count the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerRefused {
    /// The certificate's names match no `permitted_peers` pattern.
    #[error("peer name not permitted")]
    NameNotPermitted,
    /// The certificate's fingerprint is not pinned.
    #[error("certificate fingerprint not trusted")]
    FingerprintNotTrusted,
}

fn refuse(why: PeerRefused) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(why))))
}

/// SHA-256 of a certificate's DER.
pub fn fingerprint(cert: &CertificateDer<'_>) -> Fingerprint {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// `sha256:AB:CD:…`, the form the config takes and events show.
pub fn format_fingerprint(fp: &Fingerprint) -> String {
    let hex: Vec<String> = fp.iter().map(|b| format!("{b:02X}")).collect();
    format!("sha256:{}", hex.join(":"))
}

/// Parses `sha256:AB:CD:…` (colons optional, any case). Other digests are refused: SHA-1 is no
/// longer a safe pin.
pub fn parse_fingerprint(text: &str) -> Result<Fingerprint, String> {
    let (algo, hex) = text
        .split_once(':')
        .ok_or_else(|| format!("fingerprint {text:?} must start with \"sha256:\""))?;
    if !algo.eq_ignore_ascii_case("sha256") {
        return Err(format!(
            "fingerprint {text:?} uses {algo}: only sha256 fingerprints are accepted"
        ));
    }
    let digits: String = hex.chars().filter(|c| *c != ':').collect();
    if digits.len() != 64 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "fingerprint {text:?} must have 32 hex bytes after \"sha256:\""
        ));
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// A `permitted_peers` entry: a DNS name, or `*.rest` where `*` stands for exactly one label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern {
    wildcard: bool,
    /// Lower-case; for a wildcard, the part after `*.`.
    name: String,
}

impl NamePattern {
    /// Parses and checks a pattern: `*` only as the whole left-most label, never for IP
    /// addresses, and only DNS name characters (syslog-ng CVE-2024-47619).
    pub fn parse(text: &str) -> Result<NamePattern, String> {
        let (wildcard, rest) = match text.strip_prefix("*.") {
            Some(r) => (true, r),
            None => (false, text),
        };
        if rest.contains('*') {
            return Err(format!(
                "{text:?}: a wildcard may only be the whole left-most label, as in \"*.example.net\""
            ));
        }
        if !valid_dns_name(rest) {
            return Err(format!("{text:?} is not a valid DNS name"));
        }
        if wildcard
            && rest
                .split('.')
                .all(|l| l.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!("{text:?}: wildcards cannot match IP addresses"));
        }
        if wildcard && !rest.contains('.') {
            return Err(format!(
                "{text:?}: a wildcard needs at least two labels after it"
            ));
        }
        Ok(NamePattern {
            wildcard,
            name: rest.to_ascii_lowercase(),
        })
    }

    /// Whether a certificate name matches, label by label, case-insensitively.
    pub fn matches(&self, cert_name: &str) -> bool {
        if !valid_dns_name(cert_name) {
            // Embedded NULs and other junk never match (hostile-inputs C07).
            return false;
        }
        let cert_name = cert_name.to_ascii_lowercase();
        if !self.wildcard {
            return cert_name == self.name;
        }
        match cert_name.split_once('.') {
            Some((first, rest)) => !first.is_empty() && rest == self.name,
            None => false,
        }
    }
}

fn valid_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The names a certificate identifies: its SAN DNS names, or its CN when it has no SAN (the
/// RFC 6125 rule: any SAN present means the CN is ignored). Empty if it does not parse.
pub fn cert_names(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::prelude::*;
    let Ok((_, parsed)) = X509Certificate::from_der(cert.as_ref()) else {
        return Vec::new();
    };
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        return san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
            .collect();
    }
    parsed
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect()
}

/// Client verifier for `client_auth = "name"`: the chain must validate (delegated to webpki) and
/// one of the certificate's names must match a permitted pattern.
#[derive(Debug)]
pub struct PermittedNames {
    /// Chain validation.
    pub inner: Arc<dyn ClientCertVerifier>,
    /// `permitted_peers`.
    pub patterns: Vec<NamePattern>,
}

impl ClientCertVerifier for PermittedNames {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let names = cert_names(end_entity);
        if names
            .iter()
            .any(|n| self.patterns.iter().any(|p| p.matches(n)))
        {
            Ok(ok)
        } else {
            Err(refuse(PeerRefused::NameNotPermitted))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Pinned certificates, for either side: the peer's end-entity certificate must hash to one of
/// these. Works with self-signed certificates; the handshake signature is still verified, so
/// the peer must hold the private key (hostile-inputs C11). Validity dates are not checked: a
/// pin is an explicit, per-certificate trust decision.
#[derive(Debug)]
pub struct PinnedFingerprints {
    /// Accepted fingerprints.
    pub pins: Vec<Fingerprint>,
    /// Signature algorithms of the crypto provider.
    pub algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedFingerprints {
    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), Error> {
        let fp = fingerprint(cert);
        if self.pins.contains(&fp) {
            Ok(())
        } else {
            Err(refuse(PeerRefused::FingerprintNotTrusted))
        }
    }
}

impl ClientCertVerifier for PinnedFingerprints {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.check(end_entity)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for PinnedFingerprints {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.check(end_entity)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_c08_wildcards_follow_rfc_6125() {
        // syslog-ng CVE-2024-47619's regression cases: only a whole left-most `*` label.
        for bad in [
            "foo.*.bar",
            "foo.a*c.bar",
            "test.*",
            "*.0.2.0",
            "*",
            "*.com.",
            "a..b",
            "*x.example.net",
        ] {
            assert!(NamePattern::parse(bad).is_err(), "{bad} should be refused");
        }
        let p = NamePattern::parse("*.Example.NET").unwrap();
        assert!(p.matches("host.example.net"));
        assert!(p.matches("HOST.EXAMPLE.net"));
        assert!(!p.matches("example.net"), "* is exactly one label");
        assert!(!p.matches("a.b.example.net"), "* is exactly one label");
        assert!(!p.matches("test.one.two"));
        let p = NamePattern::parse("relay.example.net").unwrap();
        assert!(p.matches("RELAY.example.net"));
        assert!(!p.matches("relay.example.net.evil"));
    }

    #[test]
    fn hostile_c07_nul_in_a_name_never_matches() {
        let p = NamePattern::parse("rsyslog-client").unwrap();
        assert!(!p.matches("rsyslog-client\0.attacker"));
        let p = NamePattern::parse("*.attacker.net").unwrap();
        assert!(!p.matches("rsyslog-client\0.attacker.net"));
        assert!(p.matches("rsyslog-client.attacker.net"));
    }

    #[test]
    fn fingerprints_parse_and_format() {
        let fp = [0xABu8; 32];
        let text = format_fingerprint(&fp);
        assert!(text.starts_with("sha256:AB:AB:"));
        assert_eq!(parse_fingerprint(&text), Ok(fp));
        assert_eq!(
            parse_fingerprint(
                &text
                    .to_lowercase()
                    .replace(':', "")
                    .replacen("sha256", "SHA256:", 1)
            ),
            Ok(fp)
        );
        assert!(
            parse_fingerprint("SHA1:AB:CD")
                .unwrap_err()
                .contains("only sha256")
        );
        assert!(parse_fingerprint("sha256:ABCD").is_err());
    }
}
