//! Python's `logging.handlers.SysLogHandler`, the real one (python3), into every listener kind
//! it can reach: UDP, TCP, and a unix socket, datagram or stream. Over a stream it ends each
//! message with a NUL and no LF, which ends a frame by default (issue 19).

use std::process::Command;

use crate::support::*;

/// Sends three messages with SysLogHandler: `python3 -c SENDER KIND TARGET`, KIND being `udp`,
/// `tcp` (TARGET `host:port`) or `unix` (TARGET a socket path: the handler tries a datagram
/// socket, then a stream socket). Prints the socket type it used; any send error fails it.
const SENDER: &str = r#"
import logging, logging.handlers, socket, sys

kind, target = sys.argv[1], sys.argv[2]
if kind == "unix":
    h = logging.handlers.SysLogHandler(address=target)
else:
    host, port = target.rsplit(":", 1)
    socktype = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
    h = logging.handlers.SysLogHandler(address=(host, int(port)), socktype=socktype)

def fail(record):
    raise

h.handleError = fail
h.ident = "pyapp: "
log = logging.getLogger("sluice-test")
log.propagate = False
log.addHandler(h)
for i in (1, 2, 3):
    log.warning("python %s message %d", kind, i)
print("stream" if h.socktype == socket.SOCK_STREAM else "dgram")
h.close()
"#;

/// Runs [`SENDER`]; returns the socket type it used (`stream` or `dgram`).
fn python_sends(kind: &str, target: &str) -> String {
    let out = Command::new("python3")
        .args(["-c", SENDER, kind, target])
        .output()
        .expect("python3 is installed");
    assert!(
        out.status.success(),
        "python3 SysLogHandler ({kind} {target}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A daemon with listener `py` of `kind` (`keys` added) writing JSON to `{dir}/out.json`.
fn daemon(kind: &str, keys: &str) -> TestDaemon {
    TestDaemon::start(&json_out().listener("py", kind, keys).build())
}

/// Waits until listener `py` has taken everything sent (for a stream, until its connection
/// has ended) and it is all written; checks the three events and returns the listener's
/// `nul_terminated` counter.
fn expect_three_events(d: &TestDaemon, kind: &str, stream: bool) -> u64 {
    let m = d.listener("py");
    let o = d.output("out");
    if stream {
        wait_until("the handler's connection to end", DEADLINE, || {
            count(&m.connections) >= 1 && count(&m.closed) == count(&m.connections)
        });
    } else {
        wait_until("three datagrams", DEADLINE, || count(&m.received) >= 3);
    }
    wait_until("every frame written", DEADLINE, || {
        count(&o.written) == count(&m.received)
    });
    let events = json_lines(&d.path("out.json"));
    let messages: Vec<_> = events.iter().map(|e| e["message"].clone()).collect();
    let want: Vec<_> = (1..=3)
        .map(|i| serde_json::json!(format!("python {kind} message {i}")))
        .collect();
    assert_eq!(messages, want, "{events:#?}");
    for e in &events {
        assert_eq!(
            (
                &e["app_name"],
                &e["severity"],
                &e["facility"],
                &e["listener"]
            ),
            (
                &serde_json::json!("pyapp"),
                &serde_json::json!("warning"),
                &serde_json::json!("user"),
                &serde_json::json!("py")
            ),
            "{e}"
        );
    }
    assert_eq!(
        (
            count(&m.received),
            count(&m.empty_frames),
            count(&m.truncated)
        ),
        (3, 0, 0)
    );
    count(&m.nul_terminated)
}

#[test]
fn python_sysloghandler_over_udp() {
    let d = daemon("udp", "address = \"127.0.0.1:0\"");
    let sent = python_sends("udp", &d.addr("py").to_string());
    assert_eq!(sent, "dgram");
    assert_eq!(expect_three_events(&d, "udp", false), 0, "datagrams");
}

#[test]
fn python_sysloghandler_over_tcp_ends_messages_at_nul() {
    let d = daemon("tcp", "address = \"127.0.0.1:0\"");
    let sent = python_sends("tcp", &d.addr("py").to_string());
    assert_eq!(sent, "stream");
    assert_eq!(expect_three_events(&d, "tcp", true), 3);
}

#[test]
fn python_sysloghandler_over_a_unix_datagram_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("log");
    let d = daemon("unix", &format!("path = \"{}\"", sock.display()));
    let sent = python_sends("unix", sock.to_str().unwrap());
    assert_eq!(sent, "dgram");
    assert_eq!(expect_three_events(&d, "unix", false), 0, "datagrams");
}

#[test]
fn python_sysloghandler_over_a_unix_stream_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("log");
    let d = daemon("unix_stream", &format!("path = \"{}\"", sock.display()));
    let sent = python_sends("unix", sock.to_str().unwrap());
    assert_eq!(sent, "stream", "the handler falls back to a stream socket");
    assert_eq!(expect_three_events(&d, "unix", true), 3);
}

#[test]
fn python_sysloghandler_over_tcp_with_nul_trailer_off_is_one_event() {
    let d = daemon("tcp", "address = \"127.0.0.1:0\"\nnul_trailer = false");
    python_sends("tcp", &d.addr("py").to_string());
    let m = d.listener("py");
    wait_until("the handler's connection to end", DEADLINE, || {
        count(&m.connections) >= 1 && count(&m.closed) == count(&m.connections)
    });
    let events = wait_json(&d.path("out.json"), 1);
    let message = events[0]["message"].as_str().unwrap();
    assert_eq!(
        (events.len(), count(&m.received), count(&m.nul_terminated)),
        (1, 1, 0)
    );
    assert!(
        message.starts_with("python tcp message 1\0<12>pyapp: python tcp message 2\0"),
        "the old behaviour: NUL is data, {message:?}"
    );
}
