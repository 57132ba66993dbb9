//! Routes put each message exactly where syslog.conf(5) semantics say.

use crate::support::*;

/// A Debian-style host config: auth to auth.log, the rest (info and up) to syslog, mail to
/// mail.log only, and a per-listener route with `stop`.
const HOST: &str = r#"
[listen.udp]
kind = "udp"
address = "127.0.0.1:0"

[listen.net]
kind = "udp"
address = "127.0.0.1:0"

[output.auth]
kind = "file"
path = "{dir}/auth.log"
format = "raw"

[output.syslog]
kind = "file"
path = "{dir}/syslog"
format = "raw"

[output.net]
kind = "file"
path = "{dir}/net.log"
format = "raw"

[output.crit]
kind = "file"
path = "{dir}/crit.log"
format = "raw"

[output.everything]
kind = "file"
path = "{dir}/everything.log"
format = "raw"

[[route]]
listener = "net"
to = ["net"]
stop = true

[[route]]
selector = "auth,authpriv.*"
to = ["auth"]

[[route]]
selector = "*.info;auth,authpriv.none"
to = ["syslog"]

[[route]]
selector = "*.crit"
to = ["crit"]

[[route]]
to = ["everything"]
"#;

fn pri(fac: u8, sev: u8) -> String {
    format!("<{}>", fac * 8 + sev)
}

#[test]
fn selectors_listener_and_stop_follow_syslog_conf() {
    let d = TestDaemon::start(HOST);
    // (facility, severity, tag)
    let cases: [(u8, u8, &str); 7] = [
        (4, 6, "auth-info"),      // auth.info
        (10, 2, "authpriv-crit"), // authpriv.crit
        (3, 6, "daemon-info"),    // daemon.info
        (3, 7, "daemon-debug"),   // daemon.debug: below info
        (0, 0, "kern-emerg"),     // kern.emerg
        (2, 3, "mail-err"),       // mail.err
        (16, 5, "local0-notice"), // local0.notice
    ];
    let msgs: Vec<String> = cases
        .iter()
        .map(|(f, s, t)| format!("{}{t}", pri(*f, *s)))
        .collect();
    let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_bytes()).collect();
    send_udp(d.addr("udp"), &refs);
    send_udp(d.addr("net"), &[b"<0>net-emerg"]);
    d.wait_written("everything", 7);
    d.wait_written("net", 1);
    let mut d = d;
    d.stop();
    let get = |f: &str| -> Vec<String> {
        lines(&d.path(f))
            .iter()
            .map(|l| l.split_once('>').unwrap().1.to_string())
            .collect()
    };
    assert_eq!(get("auth.log"), vec!["auth-info", "authpriv-crit"]);
    assert_eq!(
        get("syslog"),
        vec!["daemon-info", "kern-emerg", "mail-err", "local0-notice"]
    );
    assert_eq!(get("crit.log"), vec!["authpriv-crit", "kern-emerg"]);
    assert_eq!(get("everything.log").len(), 7);
    // The net listener's route has stop = true: nothing else sees its message.
    assert_eq!(get("net.log"), vec!["net-emerg"]);
    assert!(!get("crit.log").contains(&"net-emerg".to_string()));
    assert_eq!(count(&d.metrics.unrouted), 0);
}

#[test]
fn unmatched_messages_are_counted_as_unrouted() {
    let d = TestDaemon::start(
        r#"
[listen.udp]
kind = "udp"
address = "127.0.0.1:0"

[output.mail]
kind = "file"
path = "{dir}/mail.log"

[[route]]
selector = "mail.*"
to = ["mail"]
"#,
    );
    send_udp(d.addr("udp"), &[b"<13>user message", b"<22>mail message"]);
    d.wait_written("mail", 1);
    wait_until("unrouted counted", DEADLINE, || {
        count(&d.metrics.unrouted) == 1
    });
}

#[test]
fn field_matchers_route_by_hostname_app_message_and_source() {
    let d = TestDaemon::start(
        r#"
[listen.udp]
kind = "udp"
address = "127.0.0.1:0"

[output.web]
kind = "file"
path = "{dir}/web.log"
format = "raw"

[output.failures]
kind = "file"
path = "{dir}/failures.log"
format = "raw"

[output.local]
kind = "file"
path = "{dir}/local.log"
format = "raw"

[output.other]
kind = "file"
path = "{dir}/other.log"
format = "raw"

[[route]]
hostname = ["web1", "web2"]
app_name = "nginx"
to = ["web"]

[[route]]
message = { regex = "fail(ed|ure)" }
to = ["failures"]

[[route]]
source = "10.0.0.0/8"
to = ["other"]

[[route]]
source = ["127.0.0.0/8"]
message = "marker"
to = ["local"]
"#,
    );
    send_udp(
        d.addr("udp"),
        &[
            b"<13>Oct 11 22:14:15 WEB1 nginx: GET / marker",
            b"<13>Oct 11 22:14:15 web3 nginx: GET /",
            b"<13>Oct 11 22:14:15 db1 postgres: connection failed",
            b"<13>Oct 11 22:14:15 web2 sshd: failure",
        ],
    );
    wait_until("all routed", DEADLINE, || {
        count(&d.listener("udp").received) == 4
            && count(&d.output("failures").written) == 2
            && count(&d.output("web").written) == 1
            && count(&d.output("local").written) == 1
    });
    assert_eq!(
        lines(&d.path("web.log")),
        vec!["<13>Oct 11 22:14:15 WEB1 nginx: GET / marker"]
    );
    assert_eq!(lines(&d.path("failures.log")).len(), 2);
    assert!(lines(&d.path("other.log")).is_empty());
    assert_eq!(count(&d.metrics.unrouted), 1, "web3's GET matches nothing");
}

#[test]
fn templated_paths_split_by_host_and_cannot_escape() {
    let d = TestDaemon::start(
        r#"
[listen.udp]
kind = "udp"
address = "127.0.0.1:0"

[output.hosts]
kind = "file"
path = "{dir}/remote/{hostname}/{app_name}.log"
format = "raw"
max_open_files = 2

[[route]]
to = ["hosts"]
"#,
    );
    send_udp(
        d.addr("udp"),
        &[
            b"<13>Oct 11 22:14:15 alpha app1: a",
            b"<13>Oct 11 22:14:15 beta app1: b",
            b"<13>Oct 11 22:14:15 gamma app2: c",
            b"<13>Oct 11 22:14:15 alpha app1: d",
            b"<13>1 - ../../escape evil - - - x",
        ],
    );
    d.wait_written("hosts", 5);
    assert_eq!(
        lines(&d.path("remote/alpha/app1.log")),
        vec![
            "<13>Oct 11 22:14:15 alpha app1: a",
            "<13>Oct 11 22:14:15 alpha app1: d"
        ]
    );
    assert_eq!(lines(&d.path("remote/beta/app1.log")).len(), 1);
    assert_eq!(lines(&d.path("remote/gamma/app2.log")).len(), 1);
    assert_eq!(lines(&d.path("remote/.._.._escape/evil.log")).len(), 1);
    assert!(!d.dir.path().join("escape").exists());
    assert_eq!(count(&d.output("hosts").path_sanitized), 1);
    assert!(
        count(&d.output("hosts").files_evicted) >= 2,
        "max_open_files = 2 with 4 paths"
    );
}
