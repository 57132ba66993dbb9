//! The TLS listener and the TLS forward output, with certificates made at test time (rcgen)
//! and `openssl s_client` as a real client.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SanType, date_time_ymd,
};

use crate::support::*;

/// Certificates for one test, written as PEM files in a temp dir.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let issuer = ca("sluice test CA");
        std::fs::write(dir.path().join("ca.pem"), issuer.pem()).unwrap();
        Pki { dir, issuer }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// A leaf signed by this CA (or self-signed), written as NAME.pem and
    /// NAME.key; returns its DER.
    fn leaf(&self, name: &str, params: CertificateParams, self_signed: bool) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let cert = if self_signed {
            params.self_signed(&key).unwrap()
        } else {
            params.signed_by(&key, &self.issuer).unwrap()
        };
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
        cert.der().to_vec()
    }

    pub(crate) fn server(&self) {
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        p.distinguished_name.push(DnType::CommonName, "localhost");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.leaf("server", p, false);
    }

    pub(crate) fn client(&self, file: &str, dns: &str) -> Vec<u8> {
        self.leaf(file, client_params(dns), false)
    }
}

fn ca(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, cn);
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn client_params(dns: &str) -> CertificateParams {
    let mut p = CertificateParams::new(vec![dns.to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, dns);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p
}

fn fingerprint(der: &[u8]) -> String {
    sluice::tls::verify::format_fingerprint(&sluice::tls::verify::fingerprint(&der.to_vec().into()))
}

/// A TLS listener `tls` (plus the usual json output) with extra keys.
pub(crate) fn tls_config(pki: &Pki, extra: &str) -> String {
    json_out()
        .tls(
            "tls",
            &pki.p("server.pem"),
            &pki.p("server.key"),
            &format!("handshake_timeout = \"2s\"\n{extra}"),
        )
        .build()
}

/// Runs `openssl s_client` against `addr`, feeding `input` on stdin, and waits for it to end.
fn s_client(addr: std::net::SocketAddr, args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-quiet",
            "-no_ign_eof",
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    // A refused client can exit before it reads its input (a broken pipe here); what it
    // printed and how it ended are what the tests check, and an accepted one's input arrives.
    if let Err(e) = child.stdin.take().unwrap().write_all(input) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("openssl s_client did not finish");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn octet(msg: &str) -> Vec<u8> {
    format!("{} {msg}", msg.len()).into_bytes()
}

fn client_args(pki: &Pki, cert: &str, key: &str) -> Vec<String> {
    vec![
        "-CAfile".into(),
        pki.p("ca.pem"),
        "-cert".into(),
        pki.p(cert),
        "-key".into(),
        pki.p(key),
    ]
}

fn send_as(d: &TestDaemon, pki: &Pki, who: &str, msg: &str) {
    let args = client_args(pki, &format!("{who}.pem"), &format!("{who}.key"));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    s_client(d.addr("tls"), &refs, &octet(msg));
}

fn messages(path: &Path) -> Vec<String> {
    json_lines(path)
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn s_client_with_a_permitted_name_is_served_and_tagged() {
    let pki = Pki::new();
    pki.server();
    let der = pki.client("good", "client.example.net");
    let d = TestDaemon::start(&tls_config(
        &pki,
        &format!(
            "client_auth = \"name\"\nclient_ca_file = \"{}\"\npermitted_peers = [\"*.example.net\"]",
            pki.p("ca.pem")
        ),
    ));
    send_as(&d, &pki, "good", "<13>hello over tls");
    let ev = wait_json(&d.path("out.json"), 1);
    assert_eq!(ev[0]["message"], "hello over tls");
    assert_eq!(ev[0]["listener"], "tls");
    assert_eq!(ev[0]["tls_peer"]["name"], "client.example.net");
    assert_eq!(ev[0]["tls_peer"]["fingerprint"], fingerprint(&der));
    assert_eq!(count(&d.listener("tls").tls_handshakes), 1);
}

#[test]
fn nul_ends_a_message_on_tls_by_default() {
    let pki = Pki::new();
    pki.server();
    let d = TestDaemon::start(&tls_config(&pki, ""));
    let ca = pki.p("ca.pem");
    let input = [&b"<13>one\0<13>two\0"[..], &octet("<13>three\0kept")].concat();
    s_client(d.addr("tls"), &["-CAfile", &ca], &input);
    let m = d.listener("tls");
    wait_until("the connection to end", DEADLINE, || {
        count(&m.connections) == 1 && count(&m.closed) == 1
    });
    wait_json(&d.path("out.json"), 3);
    assert_eq!(
        messages(&d.path("out.json")),
        ["one", "two", "three\0kept"],
        "an octet-counted frame keeps its NUL"
    );
    assert_eq!((count(&m.received), count(&m.nul_terminated)), (3, 2));
}

#[test]
fn refused_clients_are_counted_and_others_still_served() {
    let pki = Pki::new();
    pki.server();
    pki.client("good", "client.example.net");
    pki.client("stranger", "intruder.example.org");
    // A client of another CA.
    let other = Pki::new();
    other.client("rogue", "client.example.net");
    std::fs::copy(other.path("rogue.pem"), pki.path("rogue.pem")).unwrap();
    std::fs::copy(other.path("rogue.key"), pki.path("rogue.key")).unwrap();
    // Expired, though from the right CA and with a permitted name.
    let mut p = client_params("old.example.net");
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2021, 1, 1);
    pki.leaf("expired", p, false);
    let mut p = client_params("future.example.net");
    p.not_before = date_time_ymd(2090, 1, 1);
    p.not_after = date_time_ymd(2091, 1, 1);
    pki.leaf("future", p, false);
    // serverAuth-only EKU, reused as a client certificate (hostile input C14, docs/TESTING.md).
    let mut p = client_params("reused.example.net");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    pki.leaf("serveronly", p, false);

    let d = TestDaemon::start(&tls_config(
        &pki,
        &format!(
            "client_auth = \"name\"\nclient_ca_file = \"{}\"\npermitted_peers = [\"*.example.net\"]",
            pki.p("ca.pem")
        ),
    ));
    let m = d.listener("tls");
    send_as(&d, &pki, "rogue", "<13>from rogue");
    send_as(&d, &pki, "expired", "<13>from expired");
    send_as(&d, &pki, "future", "<13>from the future");
    send_as(&d, &pki, "stranger", "<13>from stranger");
    send_as(&d, &pki, "serveronly", "<13>from serveronly");
    s_client(
        d.addr("tls"),
        &["-CAfile", &pki.p("ca.pem")],
        &octet("<13>from nobody"),
    );
    wait_until("every refusal counted", DEADLINE, || {
        count(&m.tls_certificate_untrusted) == 2
            && count(&m.tls_certificate_expired) == 2
            && count(&m.tls_peer_not_permitted) == 1
            && count(&m.tls_no_certificate) == 1
    });
    send_as(&d, &pki, "good", "<13>still served");
    wait_json(&d.path("out.json"), 1);
    assert_eq!(messages(&d.path("out.json")), vec!["still served"]);
    assert_eq!(count(&m.tls_handshakes), 1);
}

#[test]
fn fingerprint_pinning_accepts_self_signed_and_refuses_others() {
    let pki = Pki::new();
    pki.server();
    let pinned = pki.leaf("pinned", client_params("device-1"), true);
    pki.leaf("unpinned", client_params("device-2"), true);
    let d = TestDaemon::start(&tls_config(
        &pki,
        &format!(
            "client_auth = \"fingerprint\"\nfingerprints = [\"{}\"]",
            fingerprint(&pinned)
        ),
    ));
    send_as(&d, &pki, "unpinned", "<13>not me");
    wait_until("untrusted fingerprint counted", DEADLINE, || {
        count(&d.listener("tls").tls_fingerprint_not_trusted) == 1
    });
    send_as(&d, &pki, "pinned", "<13>pinned device");
    let ev = wait_json(&d.path("out.json"), 1);
    assert_eq!(ev[0]["message"], "pinned device");
    assert_eq!(ev[0]["tls_peer"]["name"], "device-1");
}

#[test]
fn hostile_c10_cn_is_used_only_without_a_san() {
    let pki = Pki::new();
    pki.server();
    // CN only: the CN is the name.
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, "legacy.example.net");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    pki.leaf("cnonly", p, false);
    // A SAN present: the CN is ignored, even though it would match.
    let mut p = client_params("other.example.org");
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, "client.example.net");
    pki.leaf("conflict", p, false);
    let d = TestDaemon::start(&tls_config(
        &pki,
        &format!(
            "client_auth = \"name\"\nclient_ca_file = \"{}\"\npermitted_peers = [\"*.example.net\"]",
            pki.p("ca.pem")
        ),
    ));
    send_as(&d, &pki, "conflict", "<13>conflict");
    wait_until("SAN wins over CN", DEADLINE, || {
        count(&d.listener("tls").tls_peer_not_permitted) == 1
    });
    send_as(&d, &pki, "cnonly", "<13>cn only");
    let ev = wait_json(&d.path("out.json"), 1);
    assert_eq!(ev[0]["message"], "cn only");
    assert_eq!(ev[0]["tls_peer"]["name"], "legacy.example.net");
}

#[test]
fn hostile_c07_nul_in_san_is_not_authorised() {
    let pki = Pki::new();
    pki.server();
    let mut p = client_params("placeholder.example.net");
    p.subject_alt_names = vec![SanType::DnsName(
        "rsyslog-client\0.example.net".try_into().unwrap(),
    )];
    pki.leaf("nul", p, false);
    let d = TestDaemon::start(&tls_config(
        &pki,
        &format!(
            "client_auth = \"name\"\nclient_ca_file = \"{}\"\npermitted_peers = [\"rsyslog-client\", \"*.example.net\"]",
            pki.p("ca.pem")
        ),
    ));
    send_as(&d, &pki, "nul", "<13>nul");
    wait_until("refused", DEADLINE, || {
        count(&d.listener("tls").tls_peer_not_permitted)
            + count(&d.listener("tls").tls_certificate_untrusted)
            == 1
    });
    assert!(lines(&d.path("out.json")).is_empty());
}

#[test]
fn hostile_b09_plaintext_to_the_tls_port_then_a_tls_client() {
    let pki = Pki::new();
    pki.server();
    let d = TestDaemon::start(&tls_config(&pki, ""));
    let mut s = connect(d.addr("tls"));
    s.write_all(b"<13>Oct 11 22:14:15 host app: hi\n").unwrap();
    wait_closed(&mut s, DEADLINE);
    wait_until("the failure counted", DEADLINE, || {
        count(&d.listener("tls").tls_handshake_failed) == 1
    });
    s_client(
        d.addr("tls"),
        &["-CAfile", &pki.p("ca.pem")],
        &octet("<13>after plaintext"),
    );
    wait_json(&d.path("out.json"), 1);
    assert_eq!(messages(&d.path("out.json")), vec!["after plaintext"]);
}

#[test]
fn hostile_c01_handshake_that_never_starts_is_cut() {
    let pki = Pki::new();
    pki.server();
    let d = TestDaemon::start(&tls_config(&pki, "max_connections = 1").replace(
        "handshake_timeout = \"2s\"",
        "handshake_timeout = \"300ms\"",
    ));
    let mut silent = connect(d.addr("tls"));
    wait_closed(&mut silent, DEADLINE);
    wait_until("the timeout counted", DEADLINE, || {
        count(&d.listener("tls").tls_handshake_timeouts) == 1
    });
    // The slot is free again.
    s_client(
        d.addr("tls"),
        &["-CAfile", &pki.p("ca.pem")],
        &octet("<13>next"),
    );
    wait_json(&d.path("out.json"), 1);
    assert_eq!(messages(&d.path("out.json")), vec!["next"]);
}

#[test]
fn hostile_c13_tls_1_0_with_rsa_key_exchange_is_refused() {
    let pki = Pki::new();
    pki.server();
    let d = TestDaemon::start(&tls_config(&pki, ""));
    // A TLS 1.0 ClientHello offering only TLS_RSA_WITH_AES_128_CBC_SHA (RFC 5425's original
    // mandatory suite).
    let mut hello = vec![0x03, 0x01];
    hello.extend_from_slice(&[0x42; 32]);
    hello.extend_from_slice(&[0x00, 0x00, 0x02, 0x00, 0x2f, 0x01, 0x00]);
    let mut hs = vec![0x01, 0x00, 0x00, hello.len() as u8];
    hs.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, hs.len() as u8];
    record.extend_from_slice(&hs);
    let mut s = connect(d.addr("tls"));
    s.write_all(&record).unwrap();
    wait_closed(&mut s, DEADLINE);
    wait_until("the failure counted", DEADLINE, || {
        count(&d.listener("tls").tls_handshake_failed) == 1
    });
    assert_eq!(count(&d.listener("tls").tls_handshakes), 0);
}

#[test]
fn forward_over_tls_to_a_name_checked_listener() {
    let pki = Pki::new();
    pki.server();
    pki.client("relay", "relay.example.net");
    let collector = TestDaemon::start(&tls_config(
        &pki,
        &format!(
            "client_auth = \"name\"\nclient_ca_file = \"{}\"\npermitted_peers = [\"relay.example.net\"]",
            pki.p("ca.pem")
        ),
    ));
    let relay = TestDaemon::start(
        &udp_forwarding_to(
            "siem",
            &tls_forward_keys(
                &collector.addr("tls").to_string(),
                &pki.p("ca.pem"),
                &pki.p("relay.pem"),
                &pki.p("relay.key"),
            ),
        )
        .build(),
    );
    send_udp(
        relay.addr("udp"),
        &[b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\"] two\nlines"],
    );
    let ev = wait_json(&collector.path("out.json"), 1);
    assert_eq!(
        ev[0]["message"], "two\nlines",
        "octet counting keeps the bytes as they are"
    );
    assert_eq!(ev[0]["hostname"], "mymachine.example.com");
    assert_eq!(ev[0]["structured_data"]["exampleSDID@32473"]["iut"], "3");
    assert_eq!(ev[0]["tls_peer"]["name"], "relay.example.net");
}

#[test]
fn forward_pins_the_collector_fingerprint() {
    let pki = Pki::new();
    let server_der = {
        let mut p = CertificateParams::new(vec!["collector".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, "collector");
        pki.leaf("server", p, true)
    };
    let collector = TestDaemon::start(&tls_config(&pki, ""));
    let relay_config = |pin: &str| {
        udp_forwarding_to(
            "siem",
            &format!(
                "address = \"{}\"\nprotocol = \"tls\"\nfingerprints = [\"{pin}\"]",
                collector.addr("tls")
            ),
        )
        .build()
    };
    // A wrong pin: the relay refuses the collector, nothing arrives.
    let wrong = TestDaemon::start(&relay_config(&fingerprint(b"not the certificate")));
    send_udp(wrong.addr("udp"), &[b"<13>must not arrive"]);
    wait_until("the relay's handshake to fail", DEADLINE, || {
        count(&collector.listener("tls").tls_handshake_failed) >= 1
    });
    drop(wrong);
    let right = TestDaemon::start(&relay_config(&fingerprint(&server_der)));
    send_udp(right.addr("udp"), &[b"<13>pinned collector"]);
    let ev = wait_json(&collector.path("out.json"), 1);
    assert_eq!(
        messages(&collector.path("out.json")),
        vec!["pinned collector"]
    );
    assert!(
        ev[0].get("tls_peer").is_none(),
        "client_auth = none: no peer identity"
    );
}

#[test]
fn forward_over_tcp_and_udp_with_both_framings() {
    let collector = TestDaemon::start(&json_config(""));
    let (tcp, udp) = (collector.addr("tcp"), collector.addr("udp"));
    let relay = TestDaemon::start(
        &ConfigBuilder::new()
            .udp("udp", "")
            .output("octet", "forward", &format!("address = \"{tcp}\""))
            .output(
                "lf",
                "forward",
                &format!("address = \"{tcp}\"\nframing = \"lf\"\nformat = \"rfc3164\""),
            )
            .output(
                "dgram",
                "forward",
                &format!("address = \"{udp}\"\nprotocol = \"udp\""),
            )
            .route_to(&["octet", "lf", "dgram"])
            .build(),
    );
    send_udp(
        relay.addr("udp"),
        &[b"<13>Oct 11 22:14:15 host app: multi\nline"],
    );
    let ev = wait_json(&collector.path("out.json"), 3);
    let mut got: Vec<(String, String)> = ev
        .iter()
        .map(|e| {
            (
                e["listener"].as_str().unwrap().to_string(),
                e["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("tcp".to_string(), "multi\nline".to_string()),
            ("tcp".to_string(), "multi#012line".to_string()),
            ("udp".to_string(), "multi\nline".to_string()),
        ],
        "LF framing escapes the LF; octet counting and datagrams keep it"
    );
}

#[test]
fn sighup_reloads_certificates_and_keeps_connections() {
    let pki = Pki::new();
    let cert_with_cn = |cn: &str| {
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        pki.leaf("server", p, false);
    };
    cert_with_cn("first");
    let d = TestDaemon::start(&tls_config(&pki, ""));
    let served_cn = || {
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &d.addr("tls").to_string(), "-brief"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout)
    };
    let first = served_cn();
    assert!(
        first.contains("CN = first") || first.contains("CN=first"),
        "{first}"
    );
    // An established connection, opened before the reload.
    let mut held = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &d.addr("tls").to_string(),
            "-quiet",
            "-no_ign_eof",
            "-CAfile",
            &pki.p("ca.pem"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("held connection up", DEADLINE, || {
        count(&d.listener("tls").tls_handshakes) >= 2
    });
    cert_with_cn("second");
    d.hangup.signal();
    wait_until("new connections get the new certificate", DEADLINE, || {
        let s = served_cn();
        s.contains("CN = second") || s.contains("CN=second")
    });
    let mut stdin = held.stdin.take().unwrap();
    stdin.write_all(&octet("<13>sent after reload")).unwrap();
    drop(stdin);
    let _ = held.wait();
    let ev = wait_json(&d.path("out.json"), 1);
    assert_eq!(ev[0]["message"], "sent after reload");
}

fn check_config(text: &str, dir: &Path) -> (Option<i32>, String) {
    let path = dir.join("sluice.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["--check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn listener_toml(cert: &str, key: &str, extra: &str) -> String {
    // A fixed port: --check-config binds nothing.
    ConfigBuilder::new()
        .listener(
            "tls",
            "tls",
            &format!("address = \"127.0.0.1:6514\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n{extra}"),
        )
        .output("o", "stdout", "")
        .route_to(&["o"])
        .build()
}

#[test]
fn check_config_loads_every_certificate_and_key() {
    let pki = Pki::new();
    pki.server();
    pki.client("other", "other.example.net");
    let mut p = client_params("old.example.net");
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2021, 1, 1);
    pki.leaf("expired", p, false);
    let soon = chrono::Utc::now().date_naive() + chrono::Days::new(10);
    let mut p = client_params("soon.example.net");
    p.not_after = {
        use chrono::Datelike;
        date_time_ymd(soon.year(), soon.month() as u8, soon.day() as u8)
    };
    pki.leaf("soon", p, false);

    let ok = listener_toml(&pki.p("server.pem"), &pki.p("server.key"), "");
    assert_eq!(check_config(&ok, pki.dir.path()).0, Some(0));

    let (code, err) = check_config(
        &listener_toml(&pki.p("server.pem"), &pki.p("other.key"), ""),
        pki.dir.path(),
    );
    assert_eq!(code, Some(78));
    assert!(
        err.contains("other.key: this private key does not belong to the certificate in"),
        "{err}"
    );

    let (code, err) = check_config(
        &listener_toml(&pki.p("expired.pem"), &pki.p("expired.key"), ""),
        pki.dir.path(),
    );
    assert_eq!(code, Some(78));
    assert!(
        err.contains("expired.pem: certificate") && err.contains("expired on"),
        "{err}"
    );

    let (code, err) = check_config(
        &listener_toml(&pki.p("soon.pem"), &pki.p("soon.key"), ""),
        pki.dir.path(),
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("warning: ")
            && (err.contains("expires in 9 days") || err.contains("expires in 10 days")),
        "{err}"
    );

    let (code, err) = check_config(
        &listener_toml(&pki.p("nope.pem"), &pki.p("server.key"), ""),
        pki.dir.path(),
    );
    assert_eq!(code, Some(78));
    assert!(err.contains("nope.pem: cannot read certificates"), "{err}");

    // A CA file that is not a certificate, and malformed permitted names.
    let extra = format!(
        "client_auth = \"name\"\nclient_ca_file = \"{}\"\npermitted_peers = [\"foo.*.bar\"]",
        pki.p("server.key")
    );
    let (code, err) = check_config(
        &listener_toml(&pki.p("server.pem"), &pki.p("server.key"), &extra),
        pki.dir.path(),
    );
    assert_eq!(code, Some(78));
    assert!(
        err.contains(":8:19: listen.tls.permitted_peers: \"foo.*.bar\": a wildcard may only be"),
        "{err}"
    );

    let extra = format!(
        "client_auth = \"ca\"\nclient_ca_file = \"{}\"",
        pki.p("server.key")
    );
    let (code, err) = check_config(
        &listener_toml(&pki.p("server.pem"), &pki.p("server.key"), &extra),
        pki.dir.path(),
    );
    assert_eq!(code, Some(78));
    assert!(err.contains("server.key: no certificate found"), "{err}");
}

#[test]
fn hostile_c12_revoked_client_certificate_is_refused() {
    let pki = Pki::new();
    pki.server();
    let mut p = client_params("revoked.example.net");
    p.serial_number = Some(rcgen::SerialNumber::from(4242u64));
    pki.leaf("revoked", p, false);
    pki.client("good", "good.example.net");
    let crl = rcgen::CertificateRevocationListParams {
        this_update: date_time_ymd(2024, 1, 1),
        next_update: date_time_ymd(2099, 1, 1),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![rcgen::RevokedCertParams {
            serial_number: rcgen::SerialNumber::from(4242u64),
            revocation_time: date_time_ymd(2024, 1, 1),
            reason_code: Some(rcgen::RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&pki.issuer)
    .unwrap();
    std::fs::write(pki.path("ca.crl"), crl.pem().unwrap()).unwrap();
    let d = TestDaemon::start(&tls_config(
        &pki,
        &format!(
            "client_auth = \"ca\"\nclient_ca_file = \"{}\"\nclient_crl_file = \"{}\"",
            pki.p("ca.pem"),
            pki.p("ca.crl")
        ),
    ));
    send_as(&d, &pki, "revoked", "<13>revoked");
    wait_until("revocation counted", DEADLINE, || {
        count(&d.listener("tls").tls_certificate_revoked) == 1
    });
    send_as(&d, &pki, "good", "<13>not revoked");
    wait_json(&d.path("out.json"), 1);
    assert_eq!(messages(&d.path("out.json")), vec!["not revoked"]);
}

#[test]
fn hostile_c03_slowloris_handshake_is_cut() {
    let pki = Pki::new();
    pki.server();
    const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(500);
    let d = TestDaemon::start(&tls_config(&pki, "").replace(
        "handshake_timeout = \"2s\"",
        &format!(
            "handshake_timeout = \"{}ms\"",
            HANDSHAKE_TIMEOUT.as_millis()
        ),
    ));
    let mut s = connect(d.addr("tls"));
    // A record header promising a large ClientHello, then a byte every fifth of the handshake
    // timeout (pacing the attacker; the loop ends when the cut is counted).
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
    let start = Instant::now();
    while count(&d.listener("tls").tls_handshake_timeouts) == 0 {
        assert!(
            start.elapsed() < DEADLINE,
            "the trickling handshake was never cut"
        );
        if s.write_all(&[0x00]).is_err() {
            break;
        }
        std::thread::sleep(HANDSHAKE_TIMEOUT / 5);
    }
    wait_closed(&mut s, DEADLINE);
    wait_until("counted", DEADLINE, || {
        count(&d.listener("tls").tls_handshake_timeouts) == 1
    });
}

#[test]
fn routes_match_the_tls_peer() {
    let pki = Pki::new();
    pki.server();
    pki.client("web", "web.example.net");
    pki.client("db", "db.example.net");
    let d = TestDaemon::start(
        &ConfigBuilder::new()
            .tls(
                "tls",
                &pki.p("server.pem"),
                &pki.p("server.key"),
                &format!(
                    "client_auth = \"ca\"\nclient_ca_file = \"{}\"",
                    pki.p("ca.pem")
                ),
            )
            .file("web", "web.log", "raw", "")
            .file("rest", "rest.log", "raw", "")
            .route("tls_peer = \"web.example.net\"\nto = \"web\"\nstop = true")
            .route_to(&["rest"])
            .build(),
    );
    send_as(&d, &pki, "web", "<13>from web");
    send_as(&d, &pki, "db", "<13>from db");
    assert_eq!(wait_lines(&d.path("web.log"), 1), vec!["<13>from web"]);
    assert_eq!(wait_lines(&d.path("rest.log"), 1), vec!["<13>from db"]);
}
