//! fail2ban compatibility: sshd messages received over UDP and written as `traditional`
//! auth.log by sluice are matched by Debian's fail2ban `sshd` filter exactly as often as the same
//! messages written by rsyslog (RSYSLOG_TraditionalFileFormat).
//!
//! rsyslog and fail2ban come from Debian's packages, unpacked by `.ci/install-test-tools` into
//! `$SLUICE_TEST_TOOLS` (default `~/.cache/sluice-test-tools`); the test fails, naming that
//! script, when they are missing (see `tools_root`).

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::support::*;

/// rsyslogd in the foreground, writing every message it gets on a UDP port to `out`.
struct Rsyslog {
    child: Child,
}

impl Rsyslog {
    fn start(root: &Path, dir: &Path, port: u16, out: &Path) -> Rsyslog {
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{dir}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{port}")
*.* action(type="omfile" file="{out}" template="RSYSLOG_TraditionalFileFormat")
"#,
                dir = dir.display(),
                out = out.display()
            ),
        )
        .unwrap();
        let child = Command::new(root.join("usr/sbin/rsyslogd"))
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .arg("-M")
            .arg(root.join("usr/lib/x86_64-linux-gnu/rsyslog"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Rsyslog { child }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True once some socket is bound to UDP 127.0.0.1:`port`.
fn udp_bound(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/udp").is_ok_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().nth(1) == Some(&want))
    })
}

/// `(lines, matched)` from `fail2ban-regex FILE sshd`.
fn fail2ban_regex(root: &Path, log: &Path) -> (u64, u64) {
    let out = Command::new("python3")
        .arg(root.join("usr/bin/fail2ban-regex"))
        .arg("-c")
        .arg(root.join("etc/fail2ban"))
        .arg(log)
        .arg("sshd")
        .env("PYTHONPATH", root.join("usr/lib/python3/dist-packages"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "fail2ban-regex failed: {text}");
    // "Lines: 14 lines, 0 ignored, 10 matched, 4 missed"
    let line = text
        .lines()
        .find(|l| l.starts_with("Lines: "))
        .unwrap_or_else(|| panic!("no summary in {text}"));
    let num = |word: &str| -> u64 {
        let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        let i = words.iter().position(|w| *w == word).unwrap();
        words[i - 1].parse().unwrap()
    };
    (num("lines"), num("matched"))
}

/// sshd's messages: failures fail2ban's `sshd` filter (mode normal) should catch, and lines it
/// should not. PRI 38 is auth.info, 86 authpriv.info.
fn sshd_messages() -> Vec<String> {
    let now = chrono::Local::now();
    let ts = now.format("%b %e %H:%M:%S");
    let iso = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, false);
    let msgs = [
        "Failed password for invalid user admin from 203.0.113.5 port 51234 ssh2",
        "Failed password for root from 203.0.113.6 port 40000 ssh2",
        "Invalid user test from 203.0.113.7 port 5555",
        "Connection closed by authenticating user root 203.0.113.8 port 4444 [preauth]",
        "error: PAM: Authentication failure for root from 203.0.113.9",
        "User root from 203.0.113.10 not allowed because not listed in AllowUsers",
        "maximum authentication attempts exceeded for root from 203.0.113.13 port 1234 ssh2 [preauth]",
        "Disconnecting invalid user admin 203.0.113.14 port 1234: Too many authentication failures [preauth]",
        "Failed publickey for git from 203.0.113.15 port 2222 ssh2: RSA SHA256:abcdef",
        "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.16  user=root",
        "Accepted publickey for alice from 198.51.100.1 port 3333 ssh2: ED25519 SHA256:xyz",
        "Server listening on 0.0.0.0 port 22.",
        "Received disconnect from 198.51.100.2 port 50000:11: disconnected by user",
    ];
    let mut out = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let pid = 1000 + i;
        let pri = if i % 2 == 0 { 38 } else { 86 };
        // RFC 3164, as glibc and most devices send.
        out.push(format!("<{pri}>{ts} gw sshd[{pid}]: {m}"));
        // RFC 5424, with and without a PROCID.
        let procid = if i % 3 == 0 {
            "-".to_string()
        } else {
            pid.to_string()
        };
        out.push(format!("<{pri}>1 {iso} gw sshd {procid} - - {m}"));
    }
    out
}

#[test]
fn fail2ban_sshd_filter_matches_sluice_auth_log_as_often_as_rsyslogs() {
    let root = tools_root();
    let d = TestDaemon::start(
        r#"
[listen.udp]
kind = "udp"
address = "127.0.0.1:0"

[output.auth]
kind = "file"
path = "{dir}/sluice-auth.log"
format = "traditional"

[[route]]
selector = "auth,authpriv.*"
to = ["auth"]
"#,
    );
    let port = {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let rsyslog_out = d.path("rsyslog-auth.log");
    let _rsyslog = Rsyslog::start(&root, d.dir.path(), port, &rsyslog_out);
    wait_until("rsyslogd to bind its UDP port", DEADLINE, || {
        udp_bound(port)
    });

    let msgs = sshd_messages();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    for m in &msgs {
        sender.send_to(m.as_bytes(), d.addr("udp")).unwrap();
        sender.send_to(m.as_bytes(), ("127.0.0.1", port)).unwrap();
    }
    d.wait_written("auth", msgs.len() as u64);
    wait_lines(&rsyslog_out, msgs.len());

    let (sluice_lines, sluice_matched) = fail2ban_regex(&root, &d.path("sluice-auth.log"));
    let (rsyslog_lines, rsyslog_matched) = fail2ban_regex(&root, &rsyslog_out);
    assert_eq!(sluice_lines, msgs.len() as u64);
    assert_eq!(rsyslog_lines, msgs.len() as u64);
    assert_eq!(
        sluice_matched,
        rsyslog_matched,
        "fail2ban matched {sluice_matched} lines of sluice's auth.log, {rsyslog_matched} of rsyslog's:\n--- sluice\n{}\n--- rsyslog\n{}",
        lines(&d.path("sluice-auth.log")).join("\n"),
        lines(&rsyslog_out).join("\n")
    );
    // Not a vacuous 0 = 0: the failure lines were recognised.
    assert!(sluice_matched >= 10, "only {sluice_matched} matched");
}
