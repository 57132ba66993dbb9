//! RELP with its real peer, rsyslog's omrelp and imrelp (Debian's rsyslog-relp and librelp0,
//! installed by .ci/install-test-tools), both ways, with a kill -9 of the receiver mid-stream;
//! and the `relp` listener's answers and hostile input on raw sockets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::interop::{Rsyslog, pki};
use crate::support::*;

/// Messages sent each way.
const N: usize = 100_000;
/// librelp's default window: at most this many messages can be written by the receiver and
/// not yet acknowledged when it is killed, so at most this many are sent twice per kill.
const WINDOW: usize = 128;
/// How long a whole run may take.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// Fails, naming the install script, unless rsyslog-relp is unpacked.
fn need_relp_modules() {
    let dir = tools_root().join("usr/lib/x86_64-linux-gnu/rsyslog");
    for m in ["omrelp.so", "imrelp.so"] {
        assert!(
            dir.join(m).exists(),
            "{m} not found in {}: run .ci/install-test-tools (rsyslog-relp)",
            dir.display()
        );
    }
}

/// How often each message number of 0..`n` appears in `path` (lines holding `msgnum:NNNNNNNN`).
fn tally(path: &Path, n: usize) -> Vec<u32> {
    let mut counts = vec![0u32; n];
    let data = std::fs::read(path).unwrap_or_default();
    for line in data.split(|&b| b == b'\n') {
        let Some(at) = line.windows(7).position(|w| w == b"msgnum:") else {
            continue;
        };
        let digits = line.get(at + 7..at + 15).unwrap_or_default();
        if let Some(i) = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse::<usize>().ok())
            .filter(|&i| i < n)
        {
            counts[i] += 1;
        }
    }
    counts
}

fn lines_in(path: &Path) -> usize {
    std::fs::read(path)
        .map(|d| d.iter().filter(|&&b| b == b'\n').count())
        .unwrap_or(0)
}

/// Waits until every number of 0..`n` is in `path`; returns the count per number.
fn wait_all(path: &Path, n: usize, started: Instant) -> Vec<u32> {
    loop {
        let counts = tally(path, n);
        let missing = counts.iter().filter(|&&c| c == 0).count();
        if missing == 0 {
            return counts;
        }
        assert!(
            started.elapsed() < RUN_DEADLINE,
            "after {RUN_DEADLINE:?}, {missing} of {n} messages missing, first {:?}",
            counts.iter().position(|&c| c == 0)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn duplicates(counts: &[u32]) -> usize {
    counts.iter().map(|&c| c.saturating_sub(1) as usize).sum()
}

/// rsyslog taking plain syslog on imtcp (its port written to `imtcp.port`) and relaying each
/// message with omrelp to 127.0.0.1:`port`; `omrelp_extra` adds action parameters (TLS).
fn rsyslog_relay_config(dir: &Path, port: u16, module_extra: &str, omrelp_extra: &str) -> String {
    format!(
        r#"
global(workDirectory="{dir}")
module(load="imtcp")
module(load="omrelp" {module_extra})
template(name="seq" type="string" string="<%PRI%>%TIMESTAMP% %HOSTNAME% %syslogtag%%msg%")
input(type="imtcp" port="0" listenPortFileName="{dir}/imtcp.port" ruleset="relay")
ruleset(name="relay") {{
  action(type="omrelp" target="127.0.0.1" port="{port}" template="seq"
         action.resumeRetryCount="-1" action.resumeInterval="1"
         queue.type="LinkedList" queue.size="200000" {omrelp_extra})
}}
"#,
        dir = dir.display(),
    )
}

/// Starts rsyslog with `config` in `dir` and returns it with its imtcp address.
fn start_relay(dir: &Path, config: &str) -> (Rsyslog, SocketAddr) {
    need_relp_modules();
    let port_file = dir.join("imtcp.port");
    let _ = std::fs::remove_file(&port_file);
    let r = Rsyslog::start(dir, config);
    wait_until("rsyslog's imtcp port", DEADLINE, || {
        std::fs::read_to_string(&port_file).is_ok_and(|p| p.trim().parse::<u16>().is_ok())
    });
    let port: u16 = std::fs::read_to_string(&port_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (r, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn relp_listener_config(port: u16, keys: &str) -> String {
    ConfigBuilder::new()
        .listener(
            "relp",
            "relp",
            &format!("address = \"127.0.0.1:{port}\"\n{keys}"),
        )
        .file("out", "out.log", "raw", "")
        .route_to(&["out"])
        .build()
}

#[test]
fn omrelp_to_sluice_100k_with_kill_9_of_sluice() {
    // rsyslog relays 100,000 numbered messages with omrelp to a sluice `relp` listener writing
    // a file; sluice is killed with SIGKILL mid-stream and started again on the same port.
    // Oracle: every number is in the file (sluice acknowledged only what its file output had
    // written, so rsyslog resent the rest), and duplicates are at most one window.
    let port = free_tcp_port();
    let (dir, mut sluice) = Proc::start_toml(&relp_listener_config(port, ""), 1);
    let rdir = tempfile::tempdir().unwrap();
    let (_rsyslog, imtcp) = start_relay(
        rdir.path(),
        &rsyslog_relay_config(rdir.path(), port, "", ""),
    );
    let out = dir.path().join("out.log");
    let started = Instant::now();
    let (flood, _) = flood_tcp(imtcp, N, 1000);
    wait_until("a third of the messages written", RUN_DEADLINE, || {
        lines_in(&out) >= N / 3
    });
    sluice.signal(libc::SIGKILL);
    sluice.wait();
    let at_kill = lines_in(&out);
    let _sluice = Proc::start(Some(&dir.path().join("sluice.toml")), 1);
    flood.join().unwrap();
    let counts = wait_all(&out, N, started);
    let dups = duplicates(&counts);
    eprintln!(
        "omrelp -> sluice: {N} messages in {:?}, killed at {at_kill} written, {dups} duplicates",
        started.elapsed()
    );
    assert!(
        dups <= WINDOW,
        "{dups} duplicates, more than one window ({WINDOW})"
    );
}

fn imrelp_config(dir: &Path, port: u16, input_extra: &str) -> String {
    format!(
        r#"
global(workDirectory="{dir}")
main_queue(queue.type="Direct")
module(load="imrelp")
template(name="msgonly" type="string" string="%msg%\n")
input(type="imrelp" port="{port}" ruleset="out" {input_extra})
ruleset(name="out" queue.type="Direct") {{
  action(type="omfile" file="{dir}/rsyslog.out" template="msgonly")
}}
"#,
        dir = dir.display(),
    )
}

/// Waits until something accepts connections on `port`.
fn wait_port(port: u16) {
    wait_until("the receiver to listen", DEADLINE, || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

#[test]
fn sluice_to_imrelp_100k_with_kill_9_of_rsyslog() {
    // sluice takes 100,000 numbered messages over TCP and sends them with its `relp` output to
    // rsyslog's imrelp, which writes them to a file (direct queues: written before the answer).
    // rsyslog is killed with SIGKILL mid-stream and started again.
    // Oracle: every number arrives (a record leaves sluice's backlog only on `200 OK`; the
    // window not confirmed is resent on the new session), duplicates at most one window.
    let port = free_tcp_port();
    let rdir = tempfile::tempdir().unwrap();
    let config = imrelp_config(rdir.path(), port, "");
    need_relp_modules();
    let mut rsyslog = Rsyslog::start(rdir.path(), &config);
    wait_port(port);
    let d = TestDaemon::start(
        &ConfigBuilder::new()
            .tcp("tcp", "")
            .output("relp", "relp", &format!("address = \"127.0.0.1:{port}\""))
            .route_to(&["relp"])
            .build(),
    );
    let out = rdir.path().join("rsyslog.out");
    let started = Instant::now();
    let (flood, _) = flood_tcp(d.addr("tcp"), N, 1000);
    wait_until("a third of the messages written", RUN_DEADLINE, || {
        lines_in(&out) >= N / 3
    });
    let _ = rsyslog.0.kill();
    let _ = rsyslog.0.wait();
    let at_kill = lines_in(&out);
    eprintln!("killed after {:?}", started.elapsed());
    drop(rsyslog);
    let _rsyslog = Rsyslog::start(rdir.path(), &config);
    flood.join().unwrap();
    let counts = wait_all(&out, N, started);
    let dups = duplicates(&counts);
    eprintln!(
        "sluice -> imrelp: {N} messages in {:?}, killed at {at_kill} written, {dups} duplicates",
        started.elapsed()
    );
    assert!(
        dups <= WINDOW,
        "{dups} duplicates, more than one window ({WINDOW})"
    );
    assert!(d.output_counter("relp", "reconnects") >= 2);
    d.wait_written("relp", N as u64);
}

#[test]
fn omrelp_over_tls_to_sluice() {
    // rsyslog's omrelp with tls="on" (librelp's TLS, checking sluice's certificate by name)
    // to a `relp` listener with `tls = true`.
    let dir = tempfile::tempdir().unwrap();
    let d_ = dir.path();
    pki(d_, &["rsyslog"]);
    let p = |f: &str| d_.join(f).display().to_string();
    let port = free_tcp_port();
    let d = TestDaemon::start(&relp_listener_config(
        port,
        &format!(
            "tls = true\ncert_file = \"{}\"\nkey_file = \"{}\"",
            p("server.pem"),
            p("server.key")
        ),
    ));
    let (_rsyslog, imtcp) = start_relay(
        d_,
        &rsyslog_relay_config(
            d_,
            port,
            "",
            &format!(
                r#"tls="on" tls.caCert="{}" tls.myCert="{}" tls.myPrivKey="{}" tls.authMode="name" tls.permittedPeer=["localhost"]"#,
                p("ca.pem"),
                p("rsyslog.pem"),
                p("rsyslog.key")
            ),
        ),
    );
    const M: usize = 1000;
    let (flood, _) = flood_tcp(imtcp, M, 100);
    flood.join().unwrap();
    let counts = wait_all(&d.path("out.log"), M, Instant::now());
    assert_eq!(duplicates(&counts), 0);
    let m = d.listener("relp");
    assert!(count(&m.tls_handshakes) >= 1);
    assert_eq!(count(&m.relp_acked), M as u64);
}

/// A raw RELP client.
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let s = connect(addr);
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Client { s, buf: Vec::new() }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    fn open(&mut self) {
        self.send(b"1 open 30 relp_version=0\ncommands=syslog\n");
        let (txnr, data) = self.answer(DEADLINE).expect("an answer to open");
        assert_eq!(txnr, 1);
        assert!(data.starts_with("200 OK\n"), "{data:?}");
        assert!(data.contains("commands=syslog"), "{data:?}");
    }

    /// The next `rsp` (txnr and data), or `None` if none comes within `wait`.
    fn answer(&mut self, wait: Duration) -> Option<(u32, String)> {
        let start = Instant::now();
        loop {
            if let Some(nl) = self.frame_end() {
                let frame: Vec<u8> = self.buf.drain(..=nl).collect();
                let text = String::from_utf8(frame).unwrap();
                let mut parts = text.splitn(4, ' ');
                let txnr = parts.next().unwrap().parse().unwrap();
                assert_eq!(parts.next(), Some("rsp"), "{text:?}");
                let _len = parts.next();
                let data = parts
                    .next()
                    .unwrap_or("")
                    .trim_end_matches('\n')
                    .to_string();
                return Some((txnr, data));
            }
            if start.elapsed() >= wait {
                return None;
            }
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
        }
    }

    /// Where the first complete frame in `buf` ends (its LF trailer), by its DATALEN.
    fn frame_end(&self) -> Option<usize> {
        let text = &self.buf;
        let sp1 = text.iter().position(|&b| b == b' ')?;
        let sp2 = sp1 + 1 + text[sp1 + 1..].iter().position(|&b| b == b' ')?;
        let rest = &text[sp2 + 1..];
        let end = rest.iter().position(|&b| b == b' ' || b == b'\n')?;
        let len: usize = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
        let trailer = sp2 + 1 + end + if len == 0 { 0 } else { 1 + len };
        (text.len() > trailer).then_some(trailer)
    }
}

fn syslog_frame(txnr: u32, msg: &str) -> Vec<u8> {
    format!("{txnr} syslog {} {msg}\n", msg.len()).into_bytes()
}

fn relp_daemon(keys: &str) -> TestDaemon {
    TestDaemon::start(
        &ConfigBuilder::new()
            .listener(
                "relp",
                "relp",
                &format!("address = \"127.0.0.1:0\"\n{keys}"),
            )
            .file("out", "out.log", "raw", "")
            .route_to(&["out"])
            .build(),
    )
}

#[test]
fn relp_listener_answers_each_message_in_order_once_written() {
    let d = relp_daemon("");
    let mut c = Client::connect(d.addr("relp"));
    c.open();
    let mut batch = Vec::new();
    for i in 0..5u32 {
        batch.extend(syslog_frame(i + 2, &format!("<13>1 - h app - - - msg {i}")));
    }
    c.send(&batch);
    for i in 0..5u32 {
        assert_eq!(
            c.answer(DEADLINE),
            Some((i + 2, "200 OK".to_string())),
            "answer {i}"
        );
    }
    // Answered means written: the lines are in the file already.
    assert_eq!(lines(&d.path("out.log")).len(), 5);
    c.send(b"7 close 0\n");
    assert_eq!(c.answer(DEADLINE), Some((7, "200 OK".to_string())));
    wait_closed(&mut c.s, DEADLINE);
    let m = d.listener("relp");
    assert_eq!(count(&m.relp_acked), 5);
    assert_eq!(count(&m.received), 5);
}

#[test]
fn relp_acks_stop_while_a_blocking_output_is_full() {
    // An output whose collector is down and whose queue holds 10 events under `block`: the
    // listener answers what the queue took, then nothing, and the sender's window fills.
    let dead = free_tcp_port();
    let d = TestDaemon::start(
        &ConfigBuilder::new()
            .listener("relp", "relp", "address = \"127.0.0.1:0\"")
            .output(
                "fwd",
                "forward",
                &format!(
                    "address = \"127.0.0.1:{dead}\"\nqueue = {{ max_events = 10, when_full = \"block\" }}"
                ),
            )
            .route_to(&["fwd"])
            .build(),
    );
    let mut c = Client::connect(d.addr("relp"));
    c.open();
    for i in 0..40u32 {
        c.send(&syslog_frame(
            i + 2,
            &format!("<13>1 - h app - - - msg {i}"),
        ));
    }
    let mut acked = 0;
    while let Some((_, data)) = c.answer(Duration::from_secs(2)) {
        assert_eq!(data, "200 OK");
        acked += 1;
    }
    assert!(
        acked < 40,
        "all 40 answered though the queue holds 10 and its collector is down"
    );
    assert_eq!(count(&d.listener("relp").relp_acked), acked);
    // The collector comes up: the queue drains, and the rest are answered, in order.
    let collector = TcpListener::bind(("127.0.0.1", dead)).unwrap();
    std::thread::spawn(move || {
        for s in collector.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s, &mut std::io::sink());
            });
        }
    });
    for i in acked..40 {
        assert_eq!(
            c.answer(DEADLINE),
            Some((i as u32 + 2, "200 OK".to_string()))
        );
    }
}

/// Sends `bytes` after `open` (when `open_first`) and checks the connection is closed and
/// counted in `counter`.
fn closed_for(
    keys: &str,
    open_first: bool,
    bytes: &[u8],
    counter: fn(&sluice::metrics::ListenerMetrics) -> &std::sync::atomic::AtomicU64,
) {
    let d = relp_daemon(keys);
    let mut c = Client::connect(d.addr("relp"));
    if open_first {
        c.open();
    }
    c.send(bytes);
    wait_closed(&mut c.s, DEADLINE);
    let m = d.listener("relp");
    wait_until("the fault counted", DEADLINE, || count(counter(&m)) == 1);
    wait_until("the connection closed", DEADLINE, || count(&m.closed) == 1);
}

#[test]
fn relp_hostile_k01_bad_txnr() {
    closed_for("", true, b"x2 syslog 3 abc\n", |m| &m.relp_frame_invalid);
    closed_for("", false, b"1234567890 open 1 a\n", |m| {
        &m.relp_frame_invalid
    });
}

#[test]
fn relp_hostile_k02_txnr_out_of_sequence() {
    closed_for("", true, &syslog_frame(5, "<13>x"), |m| {
        &m.relp_session_errors
    });
}

#[test]
fn relp_hostile_k03_bad_datalen() {
    closed_for("", true, b"2 syslog 3x abc\n", |m| &m.relp_frame_invalid);
    closed_for("", true, b"2 syslog 3 abcdef\n", |m| &m.relp_frame_invalid);
}

#[test]
fn relp_hostile_k04_command_before_open() {
    closed_for("", false, &syslog_frame(1, "<13>hello"), |m| {
        &m.relp_session_errors
    });
}

#[test]
fn relp_hostile_k05_oversize_is_cut_flagged_and_the_rest_skipped() {
    // As the tcp listener does: the first `max_message_size` bytes are kept and flagged, the
    // rest is discarded exactly as it arrives (never buffered), and the session goes on; closing
    // would only make the sender resend the message for ever.
    let d = relp_daemon("max_message_size = 1024\nframe_timeout = \"1s\"");
    let mut c = Client::connect(d.addr("relp"));
    c.open();
    let head = "<13>1 - h app - - - ";
    let body = format!("{head}{}", "x".repeat(5000 - head.len()));
    let mut bytes = format!("2 syslog 5000 {body}\n").into_bytes();
    bytes.extend(syslog_frame(3, "<13>1 - h app - - - next"));
    c.send(&bytes);
    assert_eq!(c.answer(DEADLINE), Some((2, "200 OK".to_string())));
    assert_eq!(c.answer(DEADLINE), Some((3, "200 OK".to_string())));
    let got = lines(&d.path("out.log"));
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], body[..1024]);
    assert_eq!(got[1], "<13>1 - h app - - - next");
    let m = d.listener("relp");
    assert_eq!((count(&m.relp_oversize), count(&m.truncated)), (1, 1));
    // A DATALEN of 999,999 whose bytes never come: the start is kept and answered, then the
    // frame timeout closes the session (nothing allocated from the declared length).
    let mut more = b"4 syslog 999999 ".to_vec();
    more.extend(std::iter::repeat_n(b'y', 2000));
    c.send(&more);
    assert_eq!(c.answer(DEADLINE), Some((4, "200 OK".to_string())));
    wait_closed(&mut c.s, DEADLINE);
    // The session is counted as it ends, which the client may see first.
    wait_until("the frame timeout counted", DEADLINE, || {
        count(&m.frame_timeouts) >= 1
    });
    assert_eq!(count(&m.frame_timeouts), 1);
    assert_eq!(count(&m.relp_oversize), 2);
    // A cut message whose trailer is not LF: closed, counted.
    closed_for(
        "max_message_size = 1024",
        true,
        format!("2 syslog 2000 {}X", "z".repeat(2000)).as_bytes(),
        |m| &m.relp_frame_invalid,
    );
}

#[test]
fn relp_hostile_k06_slowloris() {
    closed_for(
        "frame_timeout = \"1s\"",
        true,
        b"2 syslog 100 <13>slow",
        |m| &m.frame_timeouts,
    );
    closed_for("idle_timeout = \"1s\"", true, b"", |m| &m.idle_timeouts);
}

#[test]
fn relp_messages_before_a_fault_are_answered_and_kept() {
    let d = relp_daemon("");
    let mut c = Client::connect(d.addr("relp"));
    c.open();
    let mut bytes = syslog_frame(2, "<13>1 - h app - - - kept");
    bytes.extend_from_slice(b"3 syslog x\n");
    c.send(&bytes);
    assert_eq!(c.answer(DEADLINE), Some((2, "200 OK".to_string())));
    wait_closed(&mut c.s, DEADLINE);
    assert_eq!(lines(&d.path("out.log")).len(), 1);
}

#[test]
fn sluice_relp_output_to_sluice_relp_listener_over_tls() {
    // Both ends sluice: the output's TLS client keys as forward's, the listener's as tls's.
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path(), &["relay"]);
    let p = |f: &str| dir.path().join(f).display().to_string();
    let collector = relp_daemon(&format!(
        "tls = true\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_auth = \"ca\"\nclient_ca_file = \"{}\"",
        p("server.pem"),
        p("server.key"),
        p("ca.pem")
    ));
    let relay = TestDaemon::start(
        &ConfigBuilder::new()
            .tcp("tcp", "")
            .output(
                "relp",
                "relp",
                &format!(
                    "address = \"{}\"\ntls = true\nca_file = \"{}\"\nserver_name = \"localhost\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nwindow = 16",
                    collector.addr("relp"),
                    p("ca.pem"),
                    p("relay.pem"),
                    p("relay.key")
                ),
            )
            .route_to(&["relp"])
            .build(),
    );
    const M: usize = 5000;
    send_lines_to(relay.addr("tcp"), (0..M).map(msgnum_line));
    let counts = wait_all(&collector.path("out.log"), M, Instant::now());
    assert_eq!(duplicates(&counts), 0);
    relay.wait_written("relp", M as u64);
    assert_eq!(count(&collector.listener("relp").relp_acked), M as u64);
    assert_eq!(count(&collector.listener("relp").tls_handshakes), 1);
}

/// A RELP receiver on a raw socket that answers `500 error` to the first `refuse` messages it
/// is sent and `200 OK` to the rest; returns what it answered `200 OK`, in order.
fn refusing_receiver(refuse: usize) -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept2 = kept.clone();
    std::thread::spawn(move || {
        let mut refused = 0;
        for s in l.incoming() {
            let Ok(s) = s else { return };
            let mut c = Client { s, buf: Vec::new() };
            c.s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            // Frames from the sender: `txnr command datalen data`.
            loop {
                let Some(end) = c.frame_end() else {
                    let mut chunk = [0u8; 4096];
                    match c.s.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => break,
                    }
                    continue;
                };
                let frame: Vec<u8> = c.buf.drain(..=end).collect();
                let text = String::from_utf8_lossy(&frame).into_owned();
                let mut parts = text.splitn(4, ' ');
                let txnr = parts.next().unwrap().to_string();
                let command = parts.next().unwrap().to_string();
                let data = parts
                    .nth(1)
                    .unwrap_or("")
                    .trim_end_matches('\n')
                    .to_string();
                let answer = match command.as_str() {
                    "open" => "200 OK\nrelp_version=0\ncommands=syslog".to_string(),
                    "syslog" if refused < refuse => {
                        refused += 1;
                        "500 error".to_string()
                    }
                    "syslog" => {
                        kept2.lock().unwrap().push(data);
                        "200 OK".to_string()
                    }
                    _ => "200 OK".to_string(),
                };
                let rsp = format!("{txnr} rsp {} {answer}\n", answer.len());
                if c.s.write_all(rsp.as_bytes()).is_err() {
                    break;
                }
            }
        }
    });
    (addr, kept)
}

#[test]
fn relp_output_retries_what_the_receiver_answers_500() {
    // A `500 error` is "not now": the record stays at the head of the backlog and is sent again
    // after the backoff, on a new session; nothing is lost, and nothing is dead-lettered. What
    // was pipelined after the refused record is sent again with it (the receiver may have
    // taken it: duplicates, at most one window).
    let (addr, kept) = refusing_receiver(2);
    let d = TestDaemon::start(
        &ConfigBuilder::new()
            .tcp("tcp", "")
            .output(
                "relp",
                "relp",
                &format!("address = \"{addr}\"\nformat = \"raw\""),
            )
            .route_to(&["relp"])
            .build(),
    );
    send_lines_to(d.addr("tcp"), (0..10).map(msgnum_line));
    d.wait_written("relp", 10);
    let kept = kept.lock().unwrap().clone();
    let want: Vec<String> = (0..10).map(msgnum_line).collect();
    // The last session took everything from the refused record on, in order.
    assert!(kept.ends_with(&want), "{kept:?}");
    assert!(kept.len() - want.len() <= 10, "{kept:?}");
    assert!(d.output_counter("relp", "retries") >= 1);
    assert_eq!(d.output_counter("relp", "rejected"), 0);
}

#[test]
fn relp_config_errors_name_their_keys() {
    let (code, err, _) =
        check_config("[listen.r]\nkind = \"relp\"\naddress = \"127.0.0.1:2514\"\ntls = true\n");
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("listen.r.cert_file"), "{err}");
    let (code, err, _) = check_config(
        "[listen.r]\nkind = \"relp\"\naddress = \"127.0.0.1:2514\"\ncert_file = \"/x.pem\"\n",
    );
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("listen.r.cert_file: has no effect without tls = true"),
        "{err}"
    );
    let (code, err, _) = check_config(
        "[output.o]\nkind = \"relp\"\naddress = \"nohost\"\nwindow = 0\nca_file = \"/x.pem\"\n",
    );
    assert_eq!(code, Some(78), "{err}");
    for key in ["output.o.address", "output.o.window", "output.o.ca_file"] {
        assert!(err.contains(key), "{key} not in {err}");
    }
}

#[test]
fn relp_answers_wait_for_a_failing_file_and_are_500_when_its_lines_are_dropped() {
    // A file output on /dev/full (every write fails with ENOSPC): the line is kept for a retry,
    // so the message is not answered (and the session reads nothing more meanwhile); once
    // other senders bring more than the 1 MiB a file may retain, the kept lines are dropped
    // (`dropped_write_error`) and the answers are `500 error`.
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.log");
    std::os::unix::fs::symlink("/dev/full", &full).unwrap();
    // Sessions whose lines are still kept for a retry at the stop wait for their answer until
    // the shutdown deadline: a short one.
    let d = TestDaemon::start(
        &(String::from("[daemon]\nshutdown_timeout = \"1s\"\n")
            + &ConfigBuilder::new()
                .listener("relp", "relp", "address = \"127.0.0.1:0\"")
                .output(
                    "full",
                    "file",
                    &format!("path = \"{}\"\nformat = \"raw\"", full.display()),
                )
                .route_to(&["full"])
                .build()),
    );
    let mut c = Client::connect(d.addr("relp"));
    c.open();
    c.send(&syslog_frame(2, "<13>1 - h app - - - first"));
    assert_eq!(
        c.answer(Duration::from_millis(1500)),
        None,
        "answered before written"
    );
    // Each session waits for its own answer before reading on: 20 senders of 60 KiB each.
    let big = format!("<13>1 - h app - - - {}", "x".repeat(60 * 1024));
    let _others: Vec<Client> = (0..20)
        .map(|_| {
            let mut other = Client::connect(d.addr("relp"));
            other.open();
            other.send(&syslog_frame(2, &big));
            other
        })
        .collect();
    assert_eq!(c.answer(DEADLINE), Some((2, "500 error".to_string())));
    assert!(count(&d.listener("relp").relp_refused) >= 1);
    assert_eq!(count(&d.listener("relp").relp_acked), 0);
    assert!(d.output_counter("full", "dropped_write_error") >= 1);
}

#[test]
fn relp_answers_for_a_disk_queue_survive_kill_9() {
    // A relp listener feeding a forward output whose collector is down, through a disk queue:
    // every message answered `200 OK` is on disk, so after a kill -9 and a restart with the
    // collector up, every one of them is delivered.
    let collector_port = free_tcp_port();
    let port = free_tcp_port();
    let config = ConfigBuilder::new()
        .listener("relp", "relp", &format!("address = \"127.0.0.1:{port}\""))
        .output(
            "fwd",
            "forward",
            &format!(
                "address = \"127.0.0.1:{collector_port}\"\nframing = \"lf\"\nqueue = {{ kind = \"disk\" }}"
            ),
        )
        .route_to(&["fwd"])
        .build();
    let (dir, mut p) = Proc::start_toml(
        &format!("[daemon]\nstate_dir = \"{{dir}}/state\"\n{config}"),
        1,
    );
    let mut c = Client::connect(p.addr("relp"));
    c.open();
    const M: usize = 1000;
    for chunk in 0..M / 100 {
        let mut frames = Vec::new();
        for i in chunk * 100..(chunk + 1) * 100 {
            frames.extend(syslog_frame(i as u32 + 2, &msgnum_line(i)));
        }
        c.send(&frames);
        for i in chunk * 100..(chunk + 1) * 100 {
            assert_eq!(
                c.answer(DEADLINE),
                Some((i as u32 + 2, "200 OK".to_string()))
            );
        }
    }
    p.signal(libc::SIGKILL);
    p.wait();
    let collector = TcpListener::bind(("127.0.0.1", collector_port)).unwrap();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for s in collector.incoming() {
            let Ok(mut s) = s else { return };
            let sink = sink.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                while let Ok(n) = s.read(&mut chunk) {
                    if n == 0 {
                        return;
                    }
                    sink.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            });
        }
    });
    let _p = Proc::start(Some(&dir.path().join("sluice.toml")), 1);
    let file = dir.path().join("collected");
    wait_until("every answered message delivered", DEADLINE, || {
        std::fs::write(&file, &*got.lock().unwrap()).unwrap();
        tally(&file, M).iter().all(|&c| c > 0)
    });
}

#[test]
fn relp_session_ends_with_serverclose_at_stop() {
    // At SIGTERM a RELP session does not hold the stop for `shutdown_timeout` (rsyslog keeps its
    // session open for ever): what was read is answered, then `serverclose`, and the sender
    // resends the rest to the next sluice.
    let mut d = relp_daemon("");
    let mut c = Client::connect(d.addr("relp"));
    c.open();
    c.send(&syslog_frame(2, "<13>1 - h app - - - before the stop"));
    assert_eq!(c.answer(DEADLINE), Some((2, "200 OK".to_string())));
    let started = Instant::now();
    d.stop();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the stop waited {:?} (shutdown_timeout is 10 s)",
        started.elapsed()
    );
    let mut rest = Vec::new();
    c.s.set_read_timeout(Some(DEADLINE)).unwrap();
    let _ = c.s.read_to_end(&mut rest);
    let mut all = c.buf.clone();
    all.extend_from_slice(&rest);
    assert_eq!(all, b"0 serverclose 0\n");
    assert_eq!(lines(&d.path("out.log")).len(), 1);
    assert_eq!(count(&d.listener("relp").shutdown_cut), 0);
}

#[test]
fn sluice_to_imrelp_over_tls() {
    // sluice's relp output with tls = true to imrelp with tls="on" (librelp's TLS), each side
    // checking the other's certificate.
    need_relp_modules();
    let dir = tempfile::tempdir().unwrap();
    let d_ = dir.path();
    pki(d_, &["relay"]);
    let p = |f: &str| d_.join(f).display().to_string();
    let port = free_tcp_port();
    let _rsyslog = Rsyslog::start(
        d_,
        &imrelp_config(
            d_,
            port,
            &format!(
                r#"tls="on" tls.caCert="{}" tls.myCert="{}" tls.myPrivKey="{}" tls.authMode="name" tls.permittedPeer=["relay.example.net"]"#,
                p("ca.pem"),
                p("server.pem"),
                p("server.key")
            ),
        ),
    );
    wait_port(port);
    let d = TestDaemon::start(
        &ConfigBuilder::new()
            .tcp("tcp", "")
            .output(
                "relp",
                "relp",
                &format!(
                    "address = \"127.0.0.1:{port}\"\ntls = true\nca_file = \"{}\"\nserver_name = \"localhost\"\ncert_file = \"{}\"\nkey_file = \"{}\"",
                    p("ca.pem"),
                    p("relay.pem"),
                    p("relay.key")
                ),
            )
            .route_to(&["relp"])
            .build(),
    );
    const M: usize = 1000;
    send_lines_to(d.addr("tcp"), (0..M).map(msgnum_line));
    let counts = wait_all(&d_.join("rsyslog.out"), M, Instant::now());
    assert_eq!(duplicates(&counts), 0);
    d.wait_written("relp", M as u64);
}
