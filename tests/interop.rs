//! Interop with a real peer: rsyslog 8 from Debian (unpacked by .ci/install-test-tools),
//! forwarding to sluice over TLS and receiving from it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use rcgen::{CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, KeyPair};

use crate::support::*;

fn rsyslog_root() -> PathBuf {
    let root = tools_root();
    assert!(
        root.join("usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_ossl.so")
            .exists(),
        "rsyslog-openssl is not unpacked: run .ci/install-test-tools (the README's test command does)"
    );
    root
}

/// rsyslogd in the foreground with `config`, killed on drop.
pub(crate) struct Rsyslog(pub(crate) Child);

impl Rsyslog {
    pub(crate) fn start(dir: &Path, config: &str) -> Rsyslog {
        let root = rsyslog_root();
        let conf = dir.join("rsyslog.conf");
        std::fs::write(&conf, config).unwrap();
        let child = Command::new(root.join("usr/sbin/rsyslogd"))
            .arg("-n")
            .arg(format!("-f{}", conf.display()))
            .arg(format!("-i{}", dir.join("rsyslog.pid").display()))
            .arg(format!(
                "-M{}",
                root.join("usr/lib/x86_64-linux-gnu/rsyslog").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Rsyslog(child)
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CA, a server certificate for `localhost` and client certificates, as PEM files in `dir`.
pub(crate) fn pki(dir: &Path, clients: &[&str]) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "interop CA");
    let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let leaf = |file: &str, name: &str, eku: Vec<ExtendedKeyUsagePurpose>| {
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = eku;
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
    };
    leaf(
        "server",
        "localhost",
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    );
    for c in clients {
        leaf(
            c,
            &format!("{c}.example.net"),
            vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ],
        );
    }
}

#[test]
fn rsyslog_forwards_to_sluice_over_tls_with_x509_name() {
    let dir = tempfile::tempdir().unwrap();
    let d_ = dir.path();
    pki(d_, &["rsyslog"]);
    let p = |f: &str| d_.join(f).display().to_string();
    let d = TestDaemon::start(
        &json_out()
            .tls(
                "tls",
                &p("server.pem"),
                &p("server.key"),
                &format!(
                    "client_auth = \"name\"\nclient_ca_file = \"{}\"\npermitted_peers = [\"*.example.net\"]",
                    p("ca.pem")
                ),
            )
            .build(),
    );
    let sock = d_.join("in.sock");
    let _rsyslog = Rsyslog::start(
        d_,
        &format!(
            r#"
global(workDirectory="{dir}"
       DefaultNetstreamDriver="ossl"
       DefaultNetstreamDriverCAFile="{ca}"
       DefaultNetstreamDriverCertFile="{cert}"
       DefaultNetstreamDriverKeyFile="{key}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{sock}")
action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp"
       StreamDriver="ossl" StreamDriverMode="1" StreamDriverAuthMode="x509/name"
       StreamDriverPermittedPeers="localhost"
       template="RSYSLOG_SyslogProtocol23Format")
"#,
            dir = d_.display(),
            ca = p("ca.pem"),
            cert = p("rsyslog.pem"),
            key = p("rsyslog.key"),
            sock = sock.display(),
            port = d.addr("tls").port(),
        ),
    );
    wait_until("rsyslog's socket", DEADLINE, || sock.exists());
    let st = Command::new("logger")
        .args([
            "-u",
            sock.to_str().unwrap(),
            "-t",
            "interop",
            "-p",
            "auth.warning",
            "from rsyslog over tls",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let ev = wait_json(&d.path("out.json"), 1);
    // rsyslog's %msg% keeps the space that followed "tag:" in the local message; sluice passes
    // through what rsyslog sent.
    assert_eq!(ev[0]["message"], " from rsyslog over tls");
    assert_eq!(ev[0]["app_name"], "interop");
    assert_eq!(ev[0]["facility"], "auth");
    assert_eq!(ev[0]["severity"], "warning");
    assert_eq!(ev[0]["protocol"], "rfc5424");
    assert_eq!(ev[0]["tls_peer"]["name"], "rsyslog.example.net");
    assert!(ev[0].get("parse_error").is_none(), "{}", ev[0]);
}

#[test]
fn sluice_forwards_to_rsyslog_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let d_ = dir.path();
    pki(d_, &["relay"]);
    let p = |f: &str| d_.join(f).display().to_string();
    let port_file = d_.join("port");
    let out = d_.join("received.log");
    let _rsyslog = Rsyslog::start(
        d_,
        &format!(
            r#"
global(workDirectory="{dir}"
       DefaultNetstreamDriver="ossl"
       DefaultNetstreamDriverCAFile="{ca}"
       DefaultNetstreamDriverCertFile="{cert}"
       DefaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" StreamDriver.Name="ossl" StreamDriver.Mode="1"
       StreamDriver.AuthMode="x509/name" PermittedPeer=["relay.example.net"])
input(type="imtcp" port="0" address="127.0.0.1" listenPortFileName="{port_file}")
template(name="line" type="string" string="%syslogfacility-text%.%syslogseverity-text% %hostname% %app-name% %msg%\n")
action(type="omfile" file="{out}" template="line")
"#,
            dir = d_.display(),
            ca = p("ca.pem"),
            cert = p("server.pem"),
            key = p("server.key"),
            port_file = port_file.display(),
            out = out.display(),
        ),
    );
    wait_until("rsyslog's port file", DEADLINE, || {
        std::fs::read_to_string(&port_file).is_ok_and(|s| s.trim().parse::<u16>().is_ok())
    });
    let port: u16 = std::fs::read_to_string(&port_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let d = TestDaemon::start(
        &udp_forwarding_to(
            "rsyslog",
            &tls_forward_keys(
                &format!("127.0.0.1:{port}"),
                &p("ca.pem"),
                &p("relay.pem"),
                &p("relay.key"),
            ),
        )
        .build(),
    );
    send_udp(
        d.addr("udp"),
        &[b"<165>1 2003-10-11T22:14:15.003Z web1.example.net nginx - - - from sluice over tls"],
    );
    let lines = wait_lines(&out, 1);
    assert_eq!(
        lines,
        vec!["local4.notice web1.example.net nginx from sluice over tls"]
    );
}
