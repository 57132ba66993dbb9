//! The real binary: --version, --check-config, the embedded default, and orderly stop.

use std::io::{BufRead, BufReader, Write};
use std::process::Command;

use crate::support::*;

#[test]
fn version_prints_name_and_version() {
    let out = sluice().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("sluice {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_config_accepts_the_shipped_example() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/etc/sluice.toml");
    let out = sluice()
        .args(["--check-config", "--config", path])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("config OK: "));
}

#[test]
fn check_config_accepts_the_embedded_default() {
    let out = sluice().arg("--check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("<embedded default>"));
}

/// Issue 14, item 7: one mistake of every kind in one config. `--check-config` reports every
/// one in one run, each with line:column and key path, and the daemon refuses the same config
/// with 78 before binding anything, printing the same lines.
#[test]
fn every_mistake_is_reported_at_once_and_the_daemon_refuses_the_same_config() {
    let dir = tempfile::tempdir().unwrap();
    // A file where a directory is needed: nothing can be created below it, even by root.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"").unwrap();
    let toml = format!(
        r#"[listen.tcp]
kind = "tcp"
address = "127.0.0.1:25031"
max_connections = "lots"
colour = "blue"

[listen.tcp2]
kind = "tcp"
address = "127.0.0.1:25031"

[listen.tls]
kind = "tls"
address = "127.0.0.1:0"
cert_file = "{d}/nonexistent.pem"
key_file = "{d}/nonexistent.key"

[listen.u]
kind = "udp"
address = "127.0.0.1:0"
sockets = 0

[output.a]
kind = "file"
path = "{b}/sub/out.log"

[[route]]
to = ["a", "nosuch"]
"#,
        d = dir.path().display(),
        b = blocker.display()
    );
    let path = dir.path().join("all.toml");
    std::fs::write(&path, &toml).unwrap();
    let f = path.display().to_string();
    let want = [
        // wrong type, in words
        format!("{f}:4:19: listen.tcp.max_connections: expected a number, got \"lots\""),
        // unknown key
        format!("{f}:5:1: listen.tcp.colour: unknown key"),
        // duplicate bind, reported although listen.tcp has mistakes of its own
        format!("{f}:9:11: listen.tcp2.address: binds the same tcp 127.0.0.1:25031 as listen.tcp"),
        // unreadable certificate, at the key that names it
        format!(
            "{f}:14:13: listen.tls.cert_file: {}/nonexistent.pem: cannot read",
            dir.path().display()
        ),
        // bad value
        format!("{f}:20:11: listen.u.sockets: must be from 1 to 64"),
        // uncreatable directory
        format!(
            "{f}:24:8: output.a.path: directory {}/sub cannot be created",
            blocker.display()
        ),
        // missing route target
        format!("{f}:27:6: route[0].to: no output named \"nosuch\""),
    ];
    let check = sluice()
        .args(["--check-config", "--config", &f])
        .output()
        .unwrap();
    let daemon = sluice().args(["--config", &f]).output().unwrap();
    for (what, out) in [("--check-config", &check), ("the daemon", &daemon)] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{what}:\n{err}");
        for w in &want {
            assert!(
                err.lines().any(|l| l.starts_with(w.as_str())),
                "{what}: missing {w:?} in:\n{err}"
            );
        }
        assert_eq!(err.lines().count(), want.len(), "{what}:\n{err}");
    }
    // Refused before binding: nothing listens on the port.
    assert!(std::net::TcpStream::connect("127.0.0.1:25031").is_err());
}

#[test]
fn check_config_reports_every_error_with_its_line_and_exits_78() {
    let (code, err, f) = check_config(
        r#"[listen.udp]
kind = "udp"
address = "127.0.0.1:5514"
colour = "blue"

[output.all]
kind = "stdout"

[[route]]
selector = "*.info;auth,authpriv.none"
to = ["nosuch"]

[[route]]
selector = "mail.loud"
to = ["all"]
"#,
    );
    assert_eq!(code, Some(78));
    assert!(
        err.contains(&format!("{f}:4:1: listen.udp.colour: unknown key")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{f}:11:6: route[0].to: no output named \"nosuch\""
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{f}:14:12: route[1].selector: invalid selector \"mail.loud\""
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 3, "{err}");
}

#[test]
fn missing_config_file_exits_78() {
    let out = sluice()
        .args(["--config", "/nonexistent/sluice.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config"));
}

#[test]
fn embedded_default_prints_logger_messages_on_stdout() {
    let mut p = Proc::start(None, 2);
    assert_eq!(p.addr("udp"), "127.0.0.1:5514".parse().unwrap());
    for (proto, text) in [("--udp", "hello over udp"), ("--tcp", "hello over tcp")] {
        let st = Command::new("logger")
            .args([
                "-n",
                "127.0.0.1",
                "-P",
                "5514",
                proto,
                "-t",
                "cli-test",
                text,
            ])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let stdout = p.child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let line = rx.recv_timeout(DEADLINE).expect("no line on stdout");
        assert!(line.contains("cli-test"), "{line}");
        seen.push(line);
    }
    // UDP and TCP are read by different tasks, so either may come first (and the two lines'
    // stamps may differ): compare the ends only.
    for text in ["hello over tcp", "hello over udp"] {
        let want = format!("cli-test: {text}");
        assert!(seen.iter().any(|l| l.ends_with(&want)), "{seen:?}");
    }
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait().code(), Some(0));
}

#[test]
fn sigterm_right_after_100k_tcp_messages_loses_none() {
    let (dir, mut p) = Proc::start_toml(
        r#"
[listen.tcp]
kind = "tcp"
address = "127.0.0.1:0"

[output.all]
kind = "file"
path = "{dir}/all.log"
format = "raw"

[[route]]
to = ["all"]
"#,
        1,
    );
    let out = dir.path().join("all.log");
    const N: usize = 100_000;
    let mut payload = Vec::with_capacity(N * 48);
    for i in 0..N {
        payload
            .extend_from_slice(format!("<13>Nov 22 10:00:00 host app: msgnum:{i:08}\n").as_bytes());
    }
    let mut s = std::net::TcpStream::connect(p.addr("tcp")).unwrap();
    s.write_all(&payload).unwrap();
    drop(s);
    // As soon as the sender has closed: much of it may still be in the kernel's buffers.
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait().code(), Some(0));
    let lines = lines(&out);
    assert_eq!(lines.len(), N);
    for (i, l) in lines.iter().enumerate() {
        assert!(l.ends_with(&format!("msgnum:{i:08}")), "line {i}: {l}");
    }
}

#[test]
fn second_signal_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        r#"
[daemon]
shutdown_timeout = "1h"

[listen.tcp]
kind = "tcp"
address = "127.0.0.1:0"

[output.o]
kind = "stdout"

[[route]]
to = ["o"]
"#,
    )
    .unwrap();
    let mut p = Proc::start(Some(&config), 1);
    // An open connection keeps the orderly shutdown waiting (up to the hour)...
    let mut held = std::net::TcpStream::connect(p.addr("tcp")).unwrap();
    held.write_all(b"<13>accepted\n").unwrap();
    // ...once it has been accepted, which its first line on stdout proves.
    let mut out = BufReader::new(p.child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.ends_with("accepted\n"), "{line}");
    p.signal(libc::SIGTERM);
    p.wait_log("shutting down");
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "first signal waits for open connections"
    );
    // ...and the second signal ends it now.
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait().code(), Some(1));
}

/// A connection a test writes to, blocking or not.
trait Sender: Write {
    fn set_blocking(&self, blocking: bool);
}

impl Sender for std::net::TcpStream {
    fn set_blocking(&self, blocking: bool) {
        self.set_nonblocking(!blocking).unwrap();
    }
}

impl Sender for std::os::unix::net::UnixStream {
    fn set_blocking(&self, blocking: bool) {
        self.set_nonblocking(!blocking).unwrap();
    }
}

#[test]
fn full_block_queue_stops_reading_tcp_and_loses_nothing() {
    full_block_queue_stops_reading_and_loses_nothing(
        "kind = \"tcp\"\naddress = \"127.0.0.1:0\"",
        1,
        |p, _| std::net::TcpStream::connect(p.addr("l")).unwrap(),
    );
}

#[test]
fn full_block_queue_stops_reading_unix_stream_and_loses_nothing() {
    full_block_queue_stops_reading_and_loses_nothing(
        "kind = \"unix_stream\"\npath = \"{dir}/log.sock\"",
        0,
        |_, dir| {
            let path = dir.join("log.sock");
            wait_until("the socket", DEADLINE, || path.exists());
            std::os::unix::net::UnixStream::connect(path).unwrap()
        },
    );
}

#[test]
fn full_block_queue_stops_reading_unix_datagrams_and_loses_nothing() {
    // As syslogd always has: /dev/log senders wait in send(2) while sluice cannot take more.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    let sock = dir.path().join("dev-log");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nmetrics_address = \"127.0.0.1:0\"\n\n[listen.l]\nkind = \"unix\"\npath = \"{}\"\n\n[output.o]\nkind = \"stdout\"\nformat = \"raw\"\nqueue = {{ max_events = 100, when_full = \"block\" }}\n\n[[route]]\nto = [\"o\"]\n",
            sock.display()
        ),
    )
    .unwrap();
    let mut p = Proc::start(Some(&config), 1);
    wait_until("the socket", DEADLINE, || sock.exists());
    const N: usize = 50_000;
    let msg = |i: usize| format!("<13>m{i:08} {}", "x".repeat(80));
    let s = std::os::unix::net::UnixDatagram::unbound().unwrap();
    s.set_nonblocking(true).unwrap();
    let sent = send_until_blocked(&p, N, |i| s.send_to(msg(i).as_bytes(), &sock).map(|_| 1));
    assert!(sent < N / 2, "sender was not slowed: {sent} of {N} sent");
    let reader = read_lines(&mut p, N);
    s.set_nonblocking(false).unwrap();
    for i in sent..N {
        s.send_to(msg(i).as_bytes(), &sock).unwrap();
    }
    let lines = reader.join().unwrap();
    assert_eq!(lines.len(), N);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l, &msg(i), "line {i}");
    }
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait().code(), Some(0));
}

/// Sends with `send(at)` (which returns how far it got) until `total` is sent or sluice has
/// stopped taking: the socket refuses more (`WouldBlock`) while sluice's listener waits for room
/// in the output's full queue (`senders_waiting`, served on the `metrics` address). Returns how
/// far it got.
fn send_until_blocked(
    p: &Proc,
    total: usize,
    mut send: impl FnMut(usize) -> std::io::Result<usize>,
) -> usize {
    let metrics = p.addr("metrics");
    let waiting = r#"sluice_output_senders_waiting{output="o"}"#;
    let mut sent = 0;
    let start = std::time::Instant::now();
    while sent < total {
        assert!(start.elapsed() < DEADLINE, "neither finished nor blocked");
        match send(sent) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if scrape(metrics, waiting) >= 1 {
                    break;
                }
                // sluice is still reading: the socket will take more soon.
                std::thread::yield_now();
            }
            Err(e) => panic!("{e}"),
        }
    }
    sent
}

/// Starts reading `n` lines of the process's stdout.
fn read_lines(p: &mut Proc, n: usize) -> std::thread::JoinHandle<Vec<String>> {
    let stdout = p.child.stdout.take().unwrap();
    std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take(n)
            .collect()
    })
}

fn full_block_queue_stops_reading_and_loses_nothing<S: Sender>(
    listener: &str,
    ip_listeners: usize,
    connect: impl FnOnce(&Proc, &std::path::Path) -> S,
) {
    // stdout is a pipe nobody reads yet: the output thread blocks once the pipe is full, its
    // 100-event queue fills, and then the connection must stop being read.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        r#"
[daemon]
metrics_address = "127.0.0.1:0"

[listen.l]
LISTENER
# Being held back by a full output is not the sender's delay: these must not fire.
idle_timeout = "500ms"
frame_timeout = "500ms"

[output.o]
kind = "stdout"
format = "raw"
queue = { max_events = 100, when_full = "block" }

[[route]]
to = ["o"]
"#
        .replace("LISTENER", listener)
        .replace("{dir}", dir.path().to_str().unwrap()),
    )
    .unwrap();
    // The metrics endpoint is one more address in the log.
    let mut p = Proc::start(Some(&config), ip_listeners + 1);
    const N: usize = 200_000;
    let mut payload = Vec::new();
    for i in 0..N {
        payload.extend_from_slice(format!("<13>m{i:08} {}\n", "x".repeat(80)).as_bytes());
    }
    let mut s = connect(&p, dir.path());
    s.set_blocking(false);
    // Push until the connection stays full: with back-pressure this happens long before the
    // ~19 MB are sent; without it sluice would read everything into memory.
    let sent = send_until_blocked(&p, payload.len(), |at| s.write(&payload[at..]));
    assert!(
        sent < payload.len() / 2,
        "sender was not slowed: {sent} of {} bytes accepted",
        payload.len()
    );

    // Start reading stdout: everything flows, in order, nothing lost.
    let reader = read_lines(&mut p, N);
    s.set_blocking(true);
    if let Err(e) = s.write_all(&payload[sent..]) {
        panic!("{e}; sluice's log:\n{}", p.log_so_far().join("\n"));
    }
    drop(s);
    let lines = reader.join().unwrap();
    assert_eq!(lines.len(), N);
    for (i, l) in lines.iter().enumerate() {
        assert!(l.starts_with(&format!("<13>m{i:08} ")), "line {i}: {l}");
    }
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait().code(), Some(0));
}

#[test]
fn check_config_reports_file_output_errors_with_their_lines() {
    let (code, err, f) = check_config(
        r#"[listen.udp]
kind = "udp"
address = "127.0.0.1:5514"

[output.f]
kind = "file"
path = "/tmp/sluice-check/x.log"
owner = "no-such-user-sluice"
group = "no-such-group-sluice"
file_mode = "0999"
fsync = "sometimes"
rotate = { size = "1KiB", compress = "lz4", naming = "alpha" }

[output.g]
kind = "file"
path = "/tmp/sluice-check/y.log"
rotate = { keep = 3 }

[output.s]
kind = "stdout"
rotate = { size = "1MiB" }
file_mode = "0600"

[[route]]
to = ["f", "g", "s"]
"#,
    );
    assert_eq!(code, Some(78));
    for want in [
        format!("{f}:8:9: output.f.owner: unknown user \"no-such-user-sluice\""),
        format!("{f}:9:9: output.f.group: unknown group \"no-such-group-sluice\""),
        format!("{f}:10:13: output.f.file_mode: invalid mode \"0999\""),
        format!("{f}:11:9: output.f.fsync: unknown fsync policy \"sometimes\""),
        format!("{f}:12:19: output.f.rotate.size: must be at least 4KiB"),
        format!("{f}:12:38: output.f.rotate.compress: unknown compression \"lz4\""),
        format!("{f}:12:54: output.f.rotate.naming: unknown naming \"alpha\""),
        format!("{f}:17:19: output.g.rotate: give size, interval or both"),
        format!("{f}:21:19: output.s.rotate: not valid for kind = \"stdout\""),
        format!("{f}:22:13: output.s.file_mode: not valid for kind = \"stdout\""),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
}

/// Renders a man page with groff (`-ww`) and man, asserting neither warns; returns the text.
fn render_man_page(page: &str) -> String {
    // groff and man-db are installed by .ci/install-test-tools.
    let out = Command::new("groff")
        .args(["-man", "-ww", "-z", "-t", page])
        .output()
        .expect("groff not found: run .ci/install-test-tools");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "groff warnings");
    let out = Command::new("man")
        .args(["--warnings", "-l", page])
        .env("MANWIDTH", "80")
        .env("MANPAGER", "cat")
        .output()
        .expect("man not found: run .ci/install-test-tools");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "man warnings");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn man_page_renders_without_warnings() {
    let page = concat!(env!("CARGO_MANIFEST_DIR"), "/man/sluice.8");
    let text = render_man_page(page);
    for section in ["SIGNALS", "FILE OUTPUTS", "WHAT IS LOST WHEN", "logrotate"] {
        assert!(text.contains(section), "no {section} in the rendered page");
    }
}

/// A config for the `--explain` tests: two listeners, routes with every kind of matcher.
const EXPLAIN_CONFIG: &str = r#"
[listen.tcp]
kind = "tcp"
address = "127.0.0.1:0"

[listen.udp]
kind = "udp"
address = "127.0.0.1:0"

[output.mail]
kind = "stdout"

[output.web]
kind = "stdout"

[output.net]
kind = "stdout"

[output.rest]
kind = "stdout"

[[route]]
selector = "mail.*"
to = "mail"

[[route]]
hostname = "x"
to = "web"

[[route]]
listener = "udp"
source = "10.0.0.0/8"
to = "net"

[[route]]
app_name = { regex = "^ss" }
to = ["rest", "web"]
stop = true

[[route]]
to = "mail"
"#;

fn explain(args: &[&str], stdin: &[u8]) -> (Option<i32>, String, String) {
    explain_with(EXPLAIN_CONFIG, args, stdin)
}

#[test]
fn check_config_explain_says_why_each_route_matched_or_not() {
    let (code, out, err) = explain(
        &[
            "--explain",
            "<13>Nov 22 10:00:00 web1 sshd[7]: Accepted key",
        ],
        b"",
    );
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 8, "{out}");
    assert!(lines[0].starts_with("listener \"tcp\" (tcp)"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(lines[1].strip_prefix("event: ").unwrap()).unwrap();
    assert_eq!(json["listener"], "tcp");
    assert_eq!(json["facility"], "user");
    assert_eq!(json["severity"], "notice");
    assert_eq!(json["hostname"], "web1");
    assert_eq!(json["app_name"], "sshd");
    assert_eq!(json["source"], serde_json::Value::Null);
    assert_eq!(
        &lines[2..],
        [
            "route[0]: no match: selector \"mail.*\" does not select user.notice",
            "route[1]: no match: hostname \"web1\" does not match \"x\"",
            "route[2]: no match: listener \"tcp\" is not in [udp]",
            "route[3]: matched -> rest, web; stop = true ended evaluation",
            "route[4]: not evaluated: route[3] has stop = true",
            "outputs: rest, web",
        ]
    );
}

#[test]
fn check_config_explain_reads_stdin_on_the_named_listener() {
    let (code, out, err) = explain(
        &["--explain", "-", "--listener", "udp"],
        b"<22>Nov 22 10:00:00 x postfix: queued\n\n<13>Nov 22 10:00:00 h app: plain\n",
    );
    assert_eq!(code, Some(0), "{err}");
    let samples: Vec<&str> = out.split("\n\n").collect();
    assert_eq!(samples.len(), 2, "{out}");
    assert!(samples[0].contains("route[0]: matched -> mail\n"), "{out}");
    assert!(samples[0].contains("route[1]: matched -> web\n"), "{out}");
    assert!(
        samples[0].contains("route[2]: no match: source [10.0.0.0/8] needs the sender's address, which is unknown here\n"),
        "{out}"
    );
    assert!(samples[0].ends_with("outputs: mail, web"), "{out}");
    assert!(samples[1].contains("\"listener\":\"udp\""), "{out}");
    assert!(
        samples[1]
            .contains("route[3]: no match: app_name \"app\" does not match { regex = \"^ss\" }\n"),
        "{out}"
    );
    assert!(samples[1].ends_with("outputs: mail\n"), "{out}");
}

#[test]
fn check_config_explain_unrouted_and_bad_listener_and_bad_config() {
    let (code, out, _) = explain(&["--explain", "<13>x", "--listener", "udp"], b"");
    assert_eq!(code, Some(0));
    // The last route catches everything; without it the message would be unrouted.
    assert!(out.ends_with("outputs: mail\n"), "{out}");
    let (code, _, err) = explain(&["--explain", "<13>x", "--listener", "nosuch"], b"");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("no listener named \"nosuch\" (defined: tcp, udp)"),
        "{err}"
    );

    let (code, out, _) = explain_with(
        "[listen.u]\nkind = \"udp\"\naddress = \"127.0.0.1:0\"\n[output.o]\nkind = \"stdout\"\n[[route]]\nselector = \"mail.*\"\nto = \"o\"\n",
        &["--explain", "<13>not mail"],
        b"",
    );
    assert_eq!(code, Some(0));
    assert!(out.ends_with("outputs: none (unrouted)\n"));
    let (code, out, _) = explain_with("[listen.u]\nkind = \"udp\"\n", &["--explain", "<13>x"], b"");
    assert_eq!(code, Some(78));
    assert!(out.is_empty());
}

/// Keys of `known` that sluice.toml(5) `page` has no tagged paragraph for in its table's
/// section (`.TP` followed by a tag naming the key, such as `.B rate_limit.burst`).
fn undocumented_keys(page: &str, known: &[String]) -> Vec<String> {
    let mut tags: Vec<(String, String)> = Vec::new();
    let mut section = String::new();
    let mut lines = page.lines();
    while let Some(line) = lines.next() {
        if let Some(name) = line.strip_prefix(".SH ") {
            section = name.trim_matches('"').to_string();
        } else if line == ".TP"
            && let Some(tag) = lines.next()
        {
            let words = tag
                .replace("\\fB", " ")
                .replace("\\fR", " ")
                .replace("\\fI", " ")
                .replace("\\-", "-");
            for w in words.split_whitespace() {
                let w = w.trim_matches(|c: char| c == '"' || c == ',');
                tags.push((section.clone(), w.to_string()));
            }
        }
    }
    known
        .iter()
        .filter(|key| {
            let (section, tail) = match key.split_once('.') {
                Some(("daemon", t)) => ("DAEMON", t),
                Some(("listen", t)) => ("LISTENERS", t.trim_start_matches("*.")),
                Some(("output", t)) => ("OUTPUTS", t.trim_start_matches("*.")),
                Some(("route", t)) => ("ROUTES", t),
                Some(("alert", t)) => ("ALERTS", t),
                _ => return true,
            };
            !tags.iter().any(|(s, w)| s == section && w == tail)
        })
        .cloned()
        .collect()
}

#[test]
fn config_man_page_documents_every_key_and_renders_without_warnings() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/man/sluice.toml.5");
    let page = std::fs::read_to_string(path).unwrap();
    let known = sluice::config::known_keys();
    assert!(known.len() > 60, "{known:?}");
    assert_eq!(undocumented_keys(&page, &known), Vec::<String>::new());
    // The check can fail: without one tag, that key is reported.
    let without = page.replace(".TP\n.B rate_limit.burst\n", "");
    assert_ne!(without, page);
    assert_eq!(
        undocumented_keys(&without, &known),
        ["listen.*.rate_limit.burst"]
    );

    let text = render_man_page(path);
    for section in ["LISTENERS", "OUTPUTS", "ROUTES", "GUARANTEES"] {
        assert!(text.contains(section), "no {section} in the rendered page");
    }
}

#[test]
fn shipped_example_collector_section_is_valid_when_uncommented() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/sluice.toml")).unwrap();
    let start = text.find("# --- Network-device collector").unwrap();
    let end = text.find("# --- TLS relay").unwrap();
    let mut config = text[..start].to_string();
    for line in text[start..end].lines() {
        match line.strip_prefix("# ") {
            Some(l) if l.starts_with('[') || l.contains(" = ") => config.push_str(l),
            _ => {}
        }
        config.push('\n');
    }
    assert!(config.contains("\n[listen.udp]\n") && config.contains("\nrate_limit = "));
    let (code, err, _) = check_config(&config);
    assert_eq!(code, Some(0), "{err}");
}
