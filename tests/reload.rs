//! Live reload (SIGHUP): new routes, outputs and listeners take effect atomically; unchanged
//! listeners keep their sockets and connections; an invalid config changes nothing.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::*;

/// One TCP listener, outputs `a` and `b`, and every message routed to `{to}`.
fn t9_config(to: &str) -> String {
    format!(
        r#"
[listen.tcp]
kind = "tcp"
address = "127.0.0.1:0"

[output.a]
kind = "file"
path = "{{dir}}/a.log"
format = "raw"

[output.b]
kind = "file"
path = "{{dir}}/b.log"
format = "raw"

[[route]]
to = ["{to}"]
"#
    )
}

/// Sends [`msgnum_line`] `range` over `s`, 100 lines per write.
fn send_range(s: &mut TcpStream, range: std::ops::Range<usize>) {
    let mut buf = Vec::new();
    for i in range {
        buf.extend_from_slice(msgnum_line(i).as_bytes());
        buf.push(b'\n');
        if buf.len() > 100 * 48 {
            s.write_all(&buf).unwrap();
            buf.clear();
        }
    }
    s.write_all(&buf).unwrap();
}

/// Connects to `addr` over and over from a thread until told to stop; counts refusals. This is
/// how a sender would notice a window in which the listening socket was closed.
struct ConnectProbe {
    stop: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
    attempts: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ConnectProbe {
    fn start(addr: std::net::SocketAddr) -> ConnectProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicUsize::new(0));
        let attempts = Arc::new(AtomicUsize::new(0));
        let (s, r, a) = (stop.clone(), refused.clone(), attempts.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                a.fetch_add(1, Ordering::Relaxed);
                if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
                    r.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        ConnectProbe {
            stop,
            refused,
            attempts,
            thread: Some(thread),
        }
    }

    /// Stops probing; returns (attempts, refusals).
    fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        (
            self.attempts.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}

/// Checks that `path` holds exactly msgnums `range`, in order.
fn assert_holds(path: &std::path::Path, range: std::ops::Range<usize>) {
    let lines = lines(path);
    assert_eq!(lines.len(), range.len(), "{}", path.display());
    for (line, i) in lines.iter().zip(range) {
        assert_eq!(line, &msgnum_line(i), "{}", path.display());
    }
}

/// T9 (reliability case, docs/TESTING.md; after rsyslog's imtcp-basic-hup.sh): half the messages, SIGHUP with the
/// route changed from A to B, the other half over the same TCP connection.
#[test]
fn t9_sighup_switches_route_mid_connection_and_loses_nothing() {
    const HALF: usize = 2000;
    let (dir, mut p) = Proc::start_toml(&t9_config("a"), 1);
    let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let addr = p.addr("tcp");
    let mut conn = TcpStream::connect(addr).unwrap();
    send_range(&mut conn, 0..HALF);
    wait_until("the first half in a.log", DEADLINE, || {
        lines(&a).len() == HALF
    });

    let probe = ConnectProbe::start(addr);
    std::fs::write(
        dir.path().join("sluice.toml"),
        t9_config("b").replace("{dir}", dir.path().to_str().unwrap()),
    )
    .unwrap();
    p.signal(libc::SIGHUP);
    p.wait_log("configuration reloaded");
    // Let the probe also cover the moments right after the switch.
    let attempts_at_reload = probe.attempts.load(Ordering::Relaxed);
    wait_until("probe connections after the reload", DEADLINE, || {
        probe.attempts.load(Ordering::Relaxed) > attempts_at_reload + 20
    });
    let (attempts, refused) = probe.finish();
    assert_eq!(refused, 0, "{refused} of {attempts} connections refused");

    send_range(&mut conn, HALF..2 * HALF);
    drop(conn);
    wait_until("the second half in b.log", DEADLINE, || {
        lines(&b).len() == HALF
    });
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait().code(), Some(0));
    assert_holds(&a, 0..HALF);
    assert_holds(&b, HALF..2 * HALF);
}

#[test]
fn invalid_config_on_sighup_keeps_the_running_one_and_logs_every_error() {
    let (dir, mut p) = Proc::start_toml(&t9_config("a"), 1);
    let a = dir.path().join("a.log");
    let config = dir.path().join("sluice.toml");
    // Two mistakes: an unknown key (line 4) and a route to an output that does not exist.
    std::fs::write(
        &config,
        "[listen.tcp]\nkind = \"tcp\"\naddress = \"127.0.0.1:0\"\nmax_conections = 5\n\n[[route]]\nto = [\"nowhere\"]\n",
    )
    .unwrap();
    p.signal(libc::SIGHUP);
    let first = p.wait_log("configuration reload refused");
    let second = p.wait_log("configuration reload refused");
    let both = format!("{first}\n{second}");
    assert!(both.contains("sluice.toml:4"), "{both}");
    assert!(both.contains("max_conections"), "{both}");
    assert!(both.contains("nowhere"), "{both}");

    // Still running on the old config: the same socket, routing to a.
    let mut s = TcpStream::connect(p.addr("tcp")).unwrap();
    send_range(&mut s, 0..10);
    drop(s);
    wait_until("10 lines in a.log", DEADLINE, || lines(&a).len() == 10);
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait().code(), Some(0));
}

/// Listeners added, removed and changed; an unchanged output keeps its open file.
#[test]
fn reload_adds_removes_and_rebinds_listeners_and_keeps_unchanged_outputs() {
    let before = routed_to_all_log(
        "[listen.keep]\nkind = \"tcp\"\naddress = \"127.0.0.1:0\"\n\n[listen.gone]\nkind = \"udp\"\naddress = \"127.0.0.1:0\"\n",
    );
    let d = TestDaemon::start(&before);
    let keep = d.addr("keep");
    let gone = d.addr("gone");
    let mut conn = connect(keep);
    send_range(&mut conn, 0..5);
    send_udp(gone, &[msgnum_line(5).as_bytes()]);
    d.wait_written("all", 6);
    let out = d.output("all");
    assert_eq!(count(&out.files_created), 1);

    // A fresh port for the new listener: bind one, note it, let it go.
    let fresh = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let after = routed_to_all_log(&format!(
        "[listen.keep]\nkind = \"tcp\"\naddress = \"127.0.0.1:0\"\n\n[listen.new]\nkind = \"udp\"\naddress = \"{fresh}\"\n"
    ));
    d.reload(&after).unwrap();
    // The kept listener's connection carries on; the new one receives.
    send_range(&mut conn, 6..8);
    send_udp(fresh, &[msgnum_line(8).as_bytes()]);
    d.wait_written("all", 9);
    // The unchanged output neither reopened nor recreated its file.
    assert_eq!(count(&out.files_created), 1);
    assert_eq!(count(&out.files_reopened), 0);
    // UDP and TCP interleave: compare the sets, not the order.
    let mut got = lines(&d.path("all.log"));
    got.sort();
    assert_eq!(got, (0..9).map(msgnum_line).collect::<Vec<_>>());
    // The removed listener's socket is closed: its port can be bound again.
    wait_until("the removed listener's port to be free", DEADLINE, || {
        std::net::UdpSocket::bind(gone).is_ok()
    });

    // Changing a listener that keeps its address rebinds it.
    let changed = after.replace(
        "[listen.new]\nkind = \"udp\"",
        "[listen.new]\nmax_message_size = 480\nkind = \"udp\"",
    );
    assert_ne!(changed, after);
    d.reload(&changed).unwrap();
    // Both tasks read the one socket for a moment (the old one finishes what it has): a
    // datagram in that moment may still be read with the old settings. Send until the new
    // settings show.
    let long = format!("<13>host app: {}", "x".repeat(600));
    wait_until("a datagram truncated at 480 bytes", DEADLINE, || {
        send_udp(fresh, &[long.as_bytes()]);
        std::thread::sleep(Duration::from_millis(20));
        count(&d.listener("new").truncated) >= 1
    });
}

/// A forward output with a disk queue that changes its address on reload hands its queued
/// events to its successor: they reach the new collector.
#[test]
fn changed_disk_forward_output_hands_its_backlog_to_the_new_one() {
    // An address nothing listens on: bind a port and close it.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = |addr: std::net::SocketAddr| {
        format!(
            r#"
[daemon]
state_dir = "{{dir}}/state"

[listen.tcp]
kind = "tcp"
address = "127.0.0.1:0"

[output.siem]
kind = "forward"
protocol = "tcp"
addresses = ["{addr}"]
format = "raw"
framing = "lf"
queue = {{ kind = "disk" }}

[[route]]
to = ["siem"]
"#
        )
    };
    let d = TestDaemon::start(&config(dead));
    let mut conn = connect(d.addr("tcp"));
    send_range(&mut conn, 0..100);
    wait_until("100 events in the disk backlog", DEADLINE, || {
        count(&d.output("siem").queue_depth) == 100
    });

    let collector = TcpListener::bind("127.0.0.1:0").unwrap();
    let live = collector.local_addr().unwrap();
    d.reload(&config(live)).unwrap();
    send_range(&mut conn, 100..200);
    let (s, _) = collector.accept().unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut got = Vec::new();
    for line in BufReader::new(s).lines() {
        got.push(line.unwrap_or_else(|e| {
            let o = d.output("siem");
            panic!(
                "after {} lines: {e}; depth {} written {} queued {} reconnects {}",
                got.len(),
                count(&o.queue_depth),
                count(&o.written),
                count(&o.queued),
                count(&o.reconnects)
            )
        }));
        if got.len() == 200 {
            break;
        }
    }
    let expected: Vec<String> = (0..200).map(msgnum_line).collect();
    assert_eq!(got, expected);
}

/// A TCP listener whose settings change but not its address takes over the same socket: no
/// connection is refused while it changes, and connections already open carry on.
#[test]
fn changed_tcp_listener_keeps_its_socket_without_a_refusal() {
    let config = |max: usize| {
        routed_to_all_log(&format!(
            "[listen.tcp]\nkind = \"tcp\"\naddress = \"{{addr}}\"\nmax_connections = {max}\n"
        ))
    };
    let d = TestDaemon::start(&config(100).replace("{addr}", "127.0.0.1:0"));
    let addr = d.addr("tcp");
    let mut conn = connect(addr);
    send_range(&mut conn, 0..5);
    d.wait_written("all", 5);
    let probe = ConnectProbe::start(addr);
    for max in [200, 300, 400] {
        d.reload(&config(max).replace("{addr}", &addr.to_string()))
            .unwrap();
    }
    let (attempts, refused) = probe.finish();
    assert_eq!(refused, 0, "{refused} of {attempts} connections refused");
    send_range(&mut conn, 5..10);
    let mut fresh = connect(addr);
    send_range(&mut fresh, 10..15);
    d.wait_written("all", 15);
    let mut got = lines(&d.path("all.log"));
    got.sort();
    assert_eq!(got, (0..15).map(msgnum_line).collect::<Vec<_>>());
}

/// `sockets` on reload: more sockets join the port when the listener already shares it; fewer,
/// or sharing a port bound alone, wait for a restart (closing a socket would lose what it
/// holds; the kernel refuses to share a port bound without SO_REUSEPORT). Every socket held is
/// read throughout.
#[test]
fn reload_changes_the_number_of_udp_sockets_where_the_kernel_allows() {
    let config = |sockets: usize, address: &str| {
        routed_to_all_log(&format!(
            "[listen.udp]\nkind = \"udp\"\naddress = \"{address}\"\nsockets = {sockets}\n"
        ))
    };
    let d = TestDaemon::start(&config(2, "127.0.0.1:0"));
    let addr = d.addr("udp");
    let address = addr.to_string();
    let mut sent = 0;
    let mut check = |want_sockets: usize| {
        assert_eq!(udp_socket_drops(addr).len(), want_sockets);
        sent += send_udp_from_many(addr, 32, 2).len() as u64;
        d.wait_written("all", sent);
    };
    check(2);
    d.reload(&config(3, &address)).unwrap();
    check(3);
    d.reload(&config(1, &address)).unwrap();
    check(3);
    // The sockets kept are the ones a later reload starts from.
    d.reload(&config(4, &address)).unwrap();
    check(4);

    let single = TestDaemon::start(&config(1, "127.0.0.1:0"));
    let addr = single.addr("udp");
    single.reload(&config(2, &addr.to_string())).unwrap();
    assert_eq!(udp_socket_drops(addr).len(), 1);
    send_udp_from_many(addr, 8, 2);
    single.wait_written("all", 16);
}

/// `listener` (TOML tables) with every message routed to `{dir}/all.log`, raw.
fn routed_to_all_log(listener: &str) -> String {
    format!(
        r#"{listener}
[output.all]
kind = "file"
path = "{{dir}}/all.log"
format = "raw"

[[route]]
to = ["all"]
"#
    )
}
