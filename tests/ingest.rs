//! End to end: real clients (util-linux logger, raw sockets) into files, written as JSON events
//! (README.md, "How input is handled"); queue policies and their counters.

use std::io::Write;
use std::process::Command;

use serde_json::json;

use crate::support::*;

/// The event whose MSG is `m`.
fn event_with_message(events: &[serde_json::Value], m: &str) -> serde_json::Value {
    events
        .iter()
        .find(|e| e["message"] == m)
        .unwrap_or_else(|| panic!("no event {m:?} in {events:#?}"))
        .clone()
}

fn logger(args: &[&str]) {
    let st = Command::new("logger")
        .args(args)
        .status()
        .expect("util-linux logger is installed");
    assert!(st.success(), "logger {args:?}");
}

#[test]
fn logger_over_udp_tcp_octet_counted_and_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("dev-log");
    let d = TestDaemon::start(
        &json_builder("")
            .listener("local", "unix", &format!("path = \"{}\"", sock.display()))
            .build(),
    );
    let udp = d.addr("udp");
    let tcp = d.addr("tcp");
    let (up, tp) = (udp.port().to_string(), tcp.port().to_string());
    logger(&[
        "-n",
        "127.0.0.1",
        "-P",
        &up,
        "--udp",
        "-t",
        "lg",
        "-p",
        "local3.warning",
        "via udp",
    ]);
    logger(&[
        "-n",
        "127.0.0.1",
        "-P",
        &tp,
        "--tcp",
        "-t",
        "lg",
        "-p",
        "auth.info",
        "via tcp",
    ]);
    logger(&[
        "-n",
        "127.0.0.1",
        "-P",
        &tp,
        "--tcp",
        "--octet-count",
        "-t",
        "lg",
        "via octet-counted tcp",
    ]);
    logger(&[
        "-n",
        "127.0.0.1",
        "-P",
        &up,
        "--udp",
        "--rfc3164",
        "-t",
        "lg",
        "via udp 3164",
    ]);
    logger(&[
        "-u",
        sock.to_str().unwrap(),
        "-t",
        "lg",
        "-p",
        "mail.err",
        "via unix socket",
    ]);
    let ev = wait_json(&d.path("out.json"), 5);
    let find = |m: &str| event_with_message(&ev, m);
    let e = find("via udp");
    assert_eq!(
        (e["facility"].as_str(), e["severity"].as_str()),
        (Some("local3"), Some("warning"))
    );
    assert_eq!(e["app_name"], "lg");
    assert_eq!(e["listener"], "udp");
    assert_eq!(
        e["protocol"], "rfc5424",
        "logger sends RFC 5424 to remote hosts by default"
    );
    assert!(e.get("parse_error").is_none(), "{e}");
    let e = find("via tcp");
    assert_eq!(
        (e["facility"].as_str(), e["severity"].as_str()),
        (Some("auth"), Some("info"))
    );
    assert_eq!(e["listener"], "tcp");
    assert!(e.get("parse_error").is_none(), "{e}");
    let e = find("via octet-counted tcp");
    assert!(e.get("parse_error").is_none(), "{e}");
    let e = find("via udp 3164");
    assert_eq!(e["protocol"], "rfc3164");
    assert_eq!(e["app_name"], "lg");
    assert!(e["timestamp"].is_string());
    let e = find("via unix socket");
    assert_eq!(
        (e["facility"].as_str(), e["severity"].as_str()),
        (Some("mail"), Some("err"))
    );
    assert_eq!(e["app_name"], "lg");
    assert_eq!(e["listener"], "local");
    assert_eq!(e["source"], serde_json::Value::Null);
}

#[test]
fn logger_and_glibc_style_senders_over_a_unix_stream_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("log-stream");
    let d = TestDaemon::start(
        &json_builder("")
            .listener(
                "local",
                "unix_stream",
                &format!("path = \"{}\"\nmode = \"0600\"", sock.display()),
            )
            .build(),
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // util-linux logger on a stream socket (--tcp with -u): LF-framed, local format.
    logger(&[
        "-u",
        sock.to_str().unwrap(),
        "--tcp",
        "-t",
        "lg",
        "-p",
        "daemon.warning",
        "via logger on unix stream",
    ]);
    logger(&[
        "-u",
        sock.to_str().unwrap(),
        "--tcp",
        "--octet-count",
        "-t",
        "lg",
        "via logger octet-counted",
    ]);
    // glibc's syslog(3) when /dev/log is a stream socket: each message ends with a NUL, and
    // one connection carries many.
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.write_all(b"<29>Dec  2 10:00:00 app[7]: glibc one\0<29>Dec  2 10:00:01 app[7]: glibc two\0")
        .unwrap();
    drop(s);
    let ev = wait_json(&d.path("out.json"), 4);
    let find = |m: &str| event_with_message(&ev, m);
    let e = find("via logger on unix stream");
    assert_eq!(
        (e["facility"].as_str(), e["severity"].as_str()),
        (Some("daemon"), Some("warning"))
    );
    assert_eq!(
        (&e["app_name"], &e["listener"]),
        (&json!("lg"), &json!("local"))
    );
    assert_eq!(e["source"], serde_json::Value::Null);
    assert!(e.get("parse_error").is_none(), "{e}");
    assert!(
        find("via logger octet-counted")
            .get("parse_error")
            .is_none()
    );
    for m in ["glibc one", "glibc two"] {
        let e = find(m);
        assert_eq!((&e["app_name"], &e["procid"]), (&json!("app"), &json!("7")));
        assert!(e.get("parse_error").is_none(), "{e}");
    }
    let m = d.listener("local");
    assert_eq!(count(&m.received), 4);
    wait_until("the connections to be counted closed", DEADLINE, || {
        count(&m.closed) == 3
    });
    assert_eq!(count(&m.connections), 3);
}

/// RFC 5424 §6.5, examples 1 to 4.
#[test]
fn rfc5424_section_6_5_examples_give_the_design_json() {
    let d = TestDaemon::start(&json_config(""));
    let examples: [&[u8]; 4] = [
        b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \xEF\xBB\xBF'su root' failed for lonvick on /dev/pts/8",
        b"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.",
        b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"] \xEF\xBB\xBFAn application event log entry...",
        b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"][examplePriority@32473 class=\"high\"]",
    ];
    let mut s = connect(d.addr("tcp"));
    for e in examples {
        s.write_all(format!("{} ", e.len()).as_bytes()).unwrap();
        s.write_all(e).unwrap();
    }
    drop(s);
    let mut ev = wait_json(&d.path("out.json"), 4);
    for e in &mut ev {
        let obj = e.as_object_mut().unwrap();
        let received = obj.remove("received_at").unwrap();
        assert!(received.as_str().unwrap().ends_with('Z'));
        let source = obj.remove("source").unwrap();
        assert!(source.as_str().unwrap().starts_with("127.0.0.1:"));
    }
    assert_eq!(
        ev[0],
        json!({"listener":"tcp","protocol":"rfc5424","facility":"auth","severity":"crit",
            "timestamp":"2003-10-11T22:14:15.003Z","hostname":"mymachine.example.com","app_name":"su",
            "procid":null,"msgid":"ID47","structured_data":null,
            "message":"'su root' failed for lonvick on /dev/pts/8"})
    );
    assert_eq!(
        ev[1],
        json!({"listener":"tcp","protocol":"rfc5424","facility":"local4","severity":"notice",
            "timestamp":"2003-08-24T05:14:15.000003-07:00","hostname":"192.0.2.1","app_name":"myproc",
            "procid":"8710","msgid":null,"structured_data":null,
            "message":"%% It's time to make the do-nuts."})
    );
    assert_eq!(
        ev[2],
        json!({"listener":"tcp","protocol":"rfc5424","facility":"local4","severity":"notice",
            "timestamp":"2003-10-11T22:14:15.003Z","hostname":"mymachine.example.com","app_name":"evntslog",
            "procid":null,"msgid":"ID47",
            "structured_data":{"exampleSDID@32473":{"iut":"3","eventSource":"Application","eventID":"1011"}},
            "message":"An application event log entry..."})
    );
    assert_eq!(
        ev[3]["structured_data"],
        json!({"exampleSDID@32473":{"iut":"3","eventSource":"Application","eventID":"1011"},
               "examplePriority@32473":{"class":"high"}})
    );
    assert_eq!(ev[3]["message"], "");
}

#[test]
fn ordinary_rfc3164_messages() {
    let d = TestDaemon::start(&json_config(""));
    send_udp(
        d.addr("udp"),
        &[
            b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
            b"<13>Oct  1 09:00:00 host sshd[123]: Accepted publickey for alice",
            b"<38>Nov 22 10:00:00 sshd[42]: no hostname, as glibc sends to /dev/log",
        ],
    );
    let ev = wait_json(&d.path("out.json"), 3);
    assert_eq!(ev[0]["facility"], "auth");
    assert_eq!(ev[0]["severity"], "crit");
    assert_eq!(ev[0]["hostname"], "mymachine");
    assert_eq!(ev[0]["app_name"], "su");
    assert_eq!(
        ev[0]["message"],
        "'su root' failed for lonvick on /dev/pts/8"
    );
    assert!(
        ev[0]["timestamp"]
            .as_str()
            .unwrap()
            .contains("-10-11T22:14:15")
    );
    assert_eq!(ev[1]["hostname"], "host");
    assert_eq!(ev[1]["app_name"], "sshd");
    assert_eq!(ev[1]["procid"], "123");
    assert_eq!(ev[1]["message"], "Accepted publickey for alice");
    assert_eq!(ev[2]["hostname"], serde_json::Value::Null);
    assert_eq!(ev[2]["app_name"], "sshd");
    assert_eq!(ev[2]["procid"], "42");
    for e in &ev {
        assert_eq!(e["protocol"], "rfc3164");
        assert!(e.get("parse_error").is_none(), "{e}");
    }
}

/// `timezone` places zone-less RFC 3164 stamps, with the zone's DST rules; stamps that carry an
/// offset keep it.
#[test]
fn listener_timezone_places_zone_less_stamps() {
    let d = TestDaemon::start(&json_config("timezone = \"America/New_York\""));
    let frames: [&[u8]; 3] = [
        b"<13>Jan  5 10:00:00 host app: winter",
        b"<13>Jul  5 10:00:00 host app: summer",
        b"<13>2024-07-05T10:00:00+02:00 host app: own offset",
    ];
    send_udp(d.addr("udp"), &frames);
    let ev = wait_json(&d.path("out.json"), 3);
    let stamp = |i: usize| ev[i]["timestamp"].as_str().unwrap().to_string();
    assert!(stamp(0).ends_with("-01-05T10:00:00-05:00"), "{}", stamp(0));
    assert!(stamp(1).ends_with("-07-05T10:00:00-04:00"), "{}", stamp(1));
    assert_eq!(stamp(2), "2024-07-05T10:00:00+02:00");
}

#[test]
fn malformed_messages_are_kept_with_a_flag_and_counted() {
    let d = TestDaemon::start(&json_config(""));
    send_udp(
        d.addr("udp"),
        &[
            b"<999>bad pri",
            b"<13>1 2003-13-45T99:00:00Z h a - - - bad date",
            b"hello, no pri",
        ],
    );
    let ev = wait_json(&d.path("out.json"), 3);
    assert_eq!(ev[0]["facility"], "user");
    assert_eq!(ev[0]["severity"], "notice");
    assert_eq!(ev[0]["message"], "<999>bad pri");
    assert!(
        ev[0]["parse_error"]
            .as_str()
            .unwrap()
            .starts_with("invalid_pri at byte ")
    );
    assert!(
        ev[1]["parse_error"]
            .as_str()
            .unwrap()
            .starts_with("bad_timestamp at byte ")
    );
    assert!(
        ev[2].get("parse_error").is_none(),
        "a message without PRI is RFC 3164 user.notice"
    );
    assert_eq!(ev[2]["message"], "hello, no pri");
    let m = d.listener("udp");
    assert_eq!(count(&m.received), 3);
    assert_eq!(count(&m.parse_errors), 2);
    assert_eq!(count(&m.parsed_ok), 1);
}

#[test]
fn every_format_writes_one_line_per_event() {
    let formats = [
        "traditional",
        "precise",
        "rfc3164",
        "rfc5424",
        "json",
        "raw",
    ];
    let config = formats
        .iter()
        .fold(ConfigBuilder::new().udp("udp", ""), |c, f| {
            c.file(f, &format!("{f}.log"), f, "")
        })
        .route_to(&formats);
    let d = TestDaemon::start(&config.build());
    send_udp(
        d.addr("udp"),
        &[b"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - [a@1 x=\"y\"] line\none"],
    );
    let get = |f: &str| wait_lines(&d.path(&format!("{f}.log")), 1);
    assert_eq!(
        get("traditional"),
        vec!["Aug 24 05:14:15 192.0.2.1 myproc[8710]: line#012one"]
    );
    assert_eq!(
        get("precise"),
        vec!["2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc[8710]: line#012one"]
    );
    assert_eq!(
        get("rfc3164"),
        vec!["<165>Aug 24 05:14:15 192.0.2.1 myproc[8710]: line#012one"]
    );
    assert_eq!(
        get("rfc5424"),
        vec![
            "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - [a@1 x=\"y\"] line#012one"
        ]
    );
    assert_eq!(get("json").len(), 1);
    assert_eq!(
        get("raw"),
        vec![
            "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - [a@1 x=\"y\"] line",
            "one"
        ],
        "raw writes the original bytes exactly"
    );
}

#[test]
fn drop_newest_counts_what_a_full_queue_refuses() {
    // A 10-event queue and a burst read in a few large batches: most of each batch cannot fit.
    let d = TestDaemon::start(
        &ConfigBuilder::new()
            .tcp("tcp", "")
            .file(
                "small",
                "small.log",
                "raw",
                "queue = { max_events = 10, when_full = \"drop_newest\" }",
            )
            .file("big", "big.log", "raw", "")
            .route_to(&["small", "big"])
            .build(),
    );
    let mut payload = Vec::new();
    for i in 0..1000 {
        payload.extend_from_slice(format!("<13>m{i}\n").as_bytes());
    }
    let mut s = connect(d.addr("tcp"));
    s.write_all(&payload).unwrap();
    drop(s);
    d.wait_written("big", 1000);
    let small = d.output("small");
    wait_until("small output settles", DEADLINE, || {
        count(&small.written) + count(&small.dropped_queue_full) == 1000
    });
    assert!(
        count(&small.dropped_queue_full) > 0,
        "a 10-event queue cannot take 1000 at once"
    );
    assert_eq!(
        lines(&d.path("small.log")).len() as u64,
        count(&small.written)
    );
    assert_eq!(
        count(&d.output("big").dropped_queue_full),
        0,
        "block never drops"
    );
}

#[test]
fn unix_socket_replaces_a_stale_socket_and_is_world_writable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("log");
    // A socket file left behind by a daemon that died: bound once, then its owner is gone.
    drop(std::os::unix::net::UnixDatagram::bind(&sock).unwrap());
    assert!(sock.exists());
    let unix = || {
        ConfigBuilder::new().listener("local", "unix", &format!("path = \"{}\"", sock.display()))
    };
    let d = TestDaemon::start(
        &unix()
            .file("o", "o.log", "raw", "")
            .route_to(&["o"])
            .build(),
    );
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666);
    let c = std::os::unix::net::UnixDatagram::unbound().unwrap();
    c.send_to(b"<13>hello", &sock).unwrap();
    assert_eq!(wait_lines(&d.path("o.log"), 1), vec!["<13>hello"]);

    // A live socket is not stolen: a second daemon on the same path refuses to start.
    let text = unix().output("o", "stdout", "").route_to(&["o"]).build();
    let config = sluice::config::Config::from_toml_str(&text, "t.toml").unwrap();
    let err = sluice::daemon::bind(&config).unwrap_err();
    assert!(
        format!("{err:#}").contains("in use by another process"),
        "{err:#}"
    );
}

/// `sockets = 4`: four sockets share the port, the kernel spreads 64 senders over them, and
/// every one is read: a socket no task read would keep its senders' datagrams.
#[test]
fn udp_listener_with_several_sockets_reads_every_one() {
    let d = TestDaemon::start(&json_config_with_udp("sockets = 4"));
    let addr = d.addr("udp");
    assert_eq!(udp_socket_drops(addr).len(), 4);
    let mut sent: Vec<String> = send_udp_from_many(addr, 64, 10)
        .into_iter()
        .map(|m| m.trim_start_matches("<13>").to_string())
        .collect();
    let events = wait_json(&d.path("out.json"), sent.len());
    let mut got: Vec<String> = events
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    sent.sort();
    assert_eq!(got, sent);
}

/// A dual-stack `[::]` listener with several sockets takes IPv4 and IPv6 senders on all of them
/// (the extra sockets are bound as the first, or the kernel would not group them).
#[test]
fn dual_stack_udp_listener_with_several_sockets_takes_both_families() {
    let d = TestDaemon::start(&json_config("").replace(
        "[listen.udp]\nkind = \"udp\"\naddress = \"127.0.0.1:0\"",
        "[listen.udp]\nkind = \"udp\"\naddress = \"[::]:0\"\nsockets = 2",
    ));
    assert_eq!(udp_socket_drops(d.addr("udp")).len(), 2);
    let port = d.addr("udp").port();
    let mut sent = 0;
    for (local, to) in [
        ("127.0.0.1:0", format!("127.0.0.1:{port}")),
        ("[::1]:0", format!("[::1]:{port}")),
    ] {
        for source in 0..16 {
            let s = std::net::UdpSocket::bind(local).unwrap();
            s.send_to(format!("<13>{local} {source}").as_bytes(), &to)
                .unwrap();
            sent += 1;
        }
    }
    assert_eq!(wait_json(&d.path("out.json"), sent).len(), sent);
}

/// With several sockets, `kernel_drops` is the sum of every socket's drops: a burst past tiny
/// buffers from many senders is all either received or counted.
#[test]
fn udp_kernel_drops_sum_over_every_socket_of_a_listener() {
    let d = TestDaemon::start(&json_config_with_udp(
        "sockets = 3\nreceive_buffer_size = \"4KiB\"",
    ));
    let m = d.listener("udp");
    let addr = d.addr("udp");
    // SO_REUSEPORT picks a socket by a hash of the sender's port: with 12 senders one of 3
    // sockets got none about 2% of the time; with 48, about once in 300 million.
    let senders: Vec<_> = (0..48)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let msg = [b'x'; 1000];
    let mut sent = 0u64;
    let start = std::time::Instant::now();
    // Until the kernel dropped on every socket (so its sum is tested), within bounds.
    while udp_sockets_dropping(addr) < 3
        && sent < 2_000_000
        && start.elapsed() < std::time::Duration::from_secs(20)
    {
        for s in &senders {
            for _ in 0..25 {
                s.send_to(&msg, addr).unwrap();
                sent += 1;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(
        udp_sockets_dropping(addr),
        3,
        "every socket should have overflowed"
    );
    wait_until("received + kernel drops == sent", DEADLINE, || {
        count(&m.received) + count(&m.kernel_drops) == sent
    });
}

/// How many of the UDP sockets bound to `addr` have dropped datagrams.
fn udp_sockets_dropping(addr: std::net::SocketAddr) -> usize {
    udp_socket_drops(addr).iter().filter(|&&n| n > 0).count()
}

#[test]
fn stop_right_after_a_udp_burst_writes_everything_read() {
    let mut d = TestDaemon::start(&json_config(""));
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    const N: u64 = 20_000;
    // On one CPU, so that the datagrams wait in one input backlog (below).
    pin_this_thread_to_one_cpu();
    for i in 0..N {
        sock.send_to(format!("<13>u{i}").as_bytes(), d.addr("udp"))
            .unwrap();
    }
    d.stop();
    let m = d.listener("udp");
    let written = lines(&d.path("out.json")).len() as u64;
    assert_eq!(
        written,
        count(&m.received),
        "every datagram read was written"
    );
    // The rest is in the kernel's drop counter, but for datagrams still on their way when the
    // listener closed its socket: a loopback send returns once the datagram is in the CPU's
    // input backlog, and on a loaded machine the kernel may deliver it to the socket later
    // (ksoftirqd), after the drain found the socket empty; it is freed with the socket. The
    // sender's CPU holds at most netdev_max_backlog datagrams waiting and as many being
    // handled. (CI beside a build: 504 of 20,000 unaccounted; two busy loops beside these
    // tests: 1,013 and 440; none once the test waited before stopping.)
    let accounted = count(&m.received) + count(&m.kernel_drops);
    let in_flight = kernel_input_backlog_bound();
    assert!(
        accounted <= N && N - accounted <= in_flight,
        "read {} + dropped {} of {N}: more than a CPU's input backlog ({in_flight}) unaccounted",
        count(&m.received),
        count(&m.kernel_drops)
    );
}

/// How many datagrams one CPU's input backlog can hold between a loopback send and the socket:
/// `net.core.netdev_max_backlog` waiting, and as many the kernel took to handle.
fn kernel_input_backlog_bound() -> u64 {
    let path = "/proc/sys/net/core/netdev_max_backlog";
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let max: u64 = text
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    2 * max
}

/// Keeps the calling thread on the CPU it runs on now.
fn pin_this_thread_to_one_cpu() {
    // SAFETY: sched_getcpu takes nothing; the set is a plain bit set initialised by CPU_ZERO,
    // and sched_setaffinity(0, ...) reads it for the calling thread only.
    unsafe {
        let cpu = libc::sched_getcpu();
        assert!(
            cpu >= 0,
            "sched_getcpu: {}",
            std::io::Error::last_os_error()
        );
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu as usize, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(
            rc,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[test]
fn connections_still_in_the_accept_queue_at_stop_are_served() {
    let mut d = TestDaemon::start(&json_config(""));
    for i in 0..50 {
        let mut s = connect(d.addr("tcp"));
        s.write_all(format!("<13>conn {i}\n").as_bytes()).unwrap();
    }
    // Stop at once: many of these connections have not been accepted yet.
    d.stop();
    assert_eq!(lines(&d.path("out.json")).len(), 50);
}
