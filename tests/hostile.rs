//! The hostile inputs of sections A, B, C01–C06, I and J02 (defined in docs/TESTING.md), each
//! sent over a real socket to an in-process daemon.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use crate::support::*;

/// max_message_size used by these tests (the smallest sluice accepts, RFC 5424's 480).
const MAX: usize = 480;

fn daemon() -> TestDaemon {
    TestDaemon::start(&json_config(&format!(
        "max_message_size = {MAX}\nidle_timeout = \"5s\"\nframe_timeout = \"5s\""
    )))
}

fn out(d: &TestDaemon) -> std::path::PathBuf {
    d.path("out.json")
}

/// Sends `bytes` on a fresh connection and waits for the daemon to close it for a framing
/// error; returns how many connections were closed that way so far.
fn expect_close(d: &TestDaemon, bytes: &[u8]) -> u64 {
    let mut s = connect(d.addr("tcp"));
    s.write_all(bytes).unwrap();
    wait_closed(&mut s, DEADLINE);
    count(&d.listener("tcp").frame_len_invalid)
}

fn messages(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

/// Sends a last marker connection and waits until it and every connection before it (accepted
/// in order) have ended and all they sent is written; returns the events without the marker.
fn settle(d: &TestDaemon) -> Vec<serde_json::Value> {
    static MARKERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let marker = format!(
        "marker-{}",
        MARKERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut s = connect(d.addr("tcp"));
    s.write_all(format!("<13>{marker}\n").as_bytes()).unwrap();
    drop(s);
    let path = out(d);
    let (tcp, udp, o) = (d.listener("tcp"), d.listener("udp"), d.output("out"));
    wait_until("every connection done and written", DEADLINE, || {
        lines(&path)
            .iter()
            .any(|l| l.contains(&format!("\"{marker}\"")))
            && count(&tcp.connections) == count(&tcp.closed)
            && count(&o.written) == count(&tcp.received) + count(&udp.received)
    });
    for (_, m) in d.metrics.listeners() {
        assert_eq!(
            count(&m.received),
            count(&m.parsed_ok) + count(&m.parse_errors),
            "every frame is parsed or flagged"
        );
    }
    json_lines(&path)
        .into_iter()
        .filter(|e| {
            !e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("marker-"))
        })
        .collect()
}

#[test]
fn hostile_a01_huge_octet_count_closes() {
    let d = daemon();
    assert_eq!(expect_close(&d, b"99999999999999999999999999 <13>hi"), 1);
    assert!(settle(&d).is_empty(), "no event from an invalid frame");
}

#[test]
fn hostile_a02_octet_count_usize_overflow_boundary() {
    let d = daemon();
    let mut n = 0;
    for input in [
        &b"1844674407370955161 <13>x"[..],
        b"18446744073709551615 <13>x",
        b"18446744073709551616 <13>x",
        b"99999999999 <13>x",
    ] {
        n += 1;
        assert_eq!(
            expect_close(&d, input),
            n,
            "{}",
            String::from_utf8_lossy(input)
        );
    }
    assert!(settle(&d).is_empty());
}

#[test]
fn hostile_a03_leading_zeros_in_msg_len() {
    let d = daemon();
    let mut input = vec![b'0'; 1000];
    input.extend_from_slice(b"200000 <120>2011-03-01T11:22:12Z host tag: msg");
    assert_eq!(expect_close(&d, &input), 1);
    assert!(settle(&d).is_empty());
}

#[test]
fn hostile_a04_octet_count_above_max_is_truncated_and_skipped_exactly() {
    let d = daemon();
    let body = format!("<13>{}", "A".repeat(596));
    let mut input = format!("{} {body}", body.len()).into_bytes();
    input.extend_from_slice(b"5 <13>x");
    let mut s = connect(d.addr("tcp"));
    s.write_all(&input).unwrap();
    drop(s);
    let ev = wait_json(&out(&d), 2);
    assert_eq!(ev[0]["truncated"], true);
    assert_eq!(ev[0]["message"].as_str().unwrap(), "A".repeat(MAX - 4));
    assert_eq!(ev[1]["message"], "x");
    assert!(ev[1].get("truncated").is_none());
    assert_eq!(count(&d.listener("tcp").truncated), 1);
}

#[test]
fn hostile_a05_oversize_frame_split_across_reads() {
    let d = daemon();
    let total = MAX + 26;
    let header = format!("{total} abc");
    let rest = "x".repeat(total - 6);
    let mut s = send_chunks(
        &d,
        "tcp",
        &[header.as_bytes(), b"def", rest.as_bytes(), b"5 <13>x"],
    );
    s.flush().unwrap();
    drop(s);
    let ev = wait_json(&out(&d), 2);
    assert_eq!(ev[0]["truncated"], true);
    assert_eq!(ev[1]["message"], "x");
    assert_eq!(ev.len(), 2);
}

#[test]
fn hostile_a06_fake_frames_inside_an_oversize_frame_are_payload() {
    let d = daemon();
    let mut body = String::from("<134>1 - h a - - - ");
    while body.len() < 2000 {
        body.push_str("12 <13>fake\n<13>fake2\n");
    }
    let mut input = format!("{} {body}", body.len()).into_bytes();
    input.extend_from_slice(b"5 <13>y");
    let mut s = connect(d.addr("tcp"));
    s.write_all(&input).unwrap();
    drop(s);
    let ev = settle(&d);
    assert_eq!(ev.len(), 2, "{:?}", messages(&ev));
    assert_eq!(ev[0]["truncated"], true);
    assert_eq!(ev[1]["message"], "y");
}

#[test]
fn hostile_a07_zero_length_closes() {
    let d = daemon();
    assert_eq!(expect_close(&d, b"0 <13>hi\n"), 1);
    assert!(settle(&d).is_empty());
}

#[test]
fn hostile_a08_signed_count_is_read_as_a_line() {
    let d = daemon();
    let mut s = connect(d.addr("tcp"));
    s.write_all(b"-5 <13>hi\n+5 <13>hi\n").unwrap();
    drop(s);
    let ev = settle(&d);
    assert_eq!(messages(&ev), vec!["-5 <13>hi", "+5 <13>hi"]);
    assert_eq!(ev[0]["facility"], "user");
    assert_eq!(ev[0]["severity"], "notice");
}

#[test]
fn hostile_a09_garbage_after_digits_never_loops() {
    let d = daemon();
    assert_eq!(expect_close(&d, b"1a <13>hi"), 1);
    assert_eq!(expect_close(&d, b"12x<13>hi"), 2);
    // Vector #4895: `1 <23>4` twice. The first frame is the single byte `<`, then `23>4` is an
    // invalid count: one event, then the connection closes, with no spin.
    assert_eq!(expect_close(&d, b"1 <23>4\n1 <23>4\n"), 3);
    let ev = settle(&d);
    assert_eq!(messages(&ev), vec!["<"]);
}

#[test]
fn hostile_a10_count_not_followed_by_one_space_closes() {
    let d = daemon();
    assert_eq!(expect_close(&d, b"12<13>hello world"), 1);
    assert_eq!(expect_close(&d, b"12  <13>hello"), 2);
    assert_eq!(expect_close(&d, b"12\t<13>hello"), 3);
    assert!(settle(&d).is_empty());
}

#[test]
fn hostile_a11_octet_count_ending_mid_timestamp() {
    let d = daemon();
    let mut s = connect(d.addr("tcp"));
    s.write_all(b"27 <182>2022-08-17T05:02:28.217 mymachine su: 'su root' failed for lonvick on /dev/pts/8\n")
        .unwrap();
    drop(s);
    let ev = settle(&d);
    assert!(!ev.is_empty());
    // The parser saw exactly the 27-byte slice and nothing past it.
    assert_eq!(ev[0]["facility"], "local6");
    assert!(
        !ev[0]["message"].as_str().unwrap().contains("mymachine"),
        "{:?}",
        ev[0]
    );
    assert!(
        ev[0]["hostname"]
            .as_str()
            .is_none_or(|h| !h.contains("mymachine"))
    );
    let all: String = messages(&ev).concat();
    assert!(
        all.contains("failed for lonvick"),
        "the rest is delivered as later frames: {all}"
    );
}

#[test]
fn hostile_a12_close_mid_octet_frame_keeps_the_partial_frame() {
    let d = daemon();
    let mut s = connect(d.addr("tcp"));
    s.write_all(b"100 <13>only-20-bytes").unwrap();
    drop(s);
    let ev = settle(&d);
    assert_eq!(messages(&ev), vec!["only-20-bytes"]);
    assert_eq!(ev[0]["truncated"], true);
    assert_eq!(count(&d.listener("tcp").truncated_at_eof), 1);

    // Same with an RST instead of a FIN.
    let before = count(&d.listener("tcp").bytes);
    let mut s = connect(d.addr("tcp"));
    s.write_all(b"100 <13>reset-mid-frame").unwrap();
    wait_until("bytes read", DEADLINE, || {
        count(&d.listener("tcp").bytes) >= before + 23
    });
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
    wait_until("the partial frame is counted", DEADLINE, || {
        count(&d.listener("tcp").truncated_at_eof) == 2
    });
}

#[test]
fn hostile_a12_close_mid_oversize_octet_frame_counts_truncated_at_eof() {
    let d = TestDaemon::start(&json_config(""));
    let tcp = d.listener("tcp");
    // 200000 declared, 100000 sent, then the peer closes: the first max_message_size bytes
    // were delivered before the close, and the frame still counts as cut by the peer.
    let mut frame = b"200000 <13>".to_vec();
    frame.resize(7 + 100_000, b'z');
    let mut s = connect(d.addr("tcp"));
    s.write_all(&frame).unwrap();
    drop(s);
    let ev = wait_json(&d.path("out.json"), 1);
    assert_eq!(ev[0]["truncated"], true);
    wait_until("the connection ends", DEADLINE, || count(&tcp.closed) == 1);
    assert_eq!(
        (
            count(&tcp.truncated),
            count(&tcp.truncated_at_eof),
            count(&tcp.bytes)
        ),
        (1, 1, frame.len() as u64)
    );
    // A small frame cut the same way counts both too.
    let mut s = connect(d.addr("tcp"));
    s.write_all(b"100 <13>short").unwrap();
    drop(s);
    wait_until("the second connection ends", DEADLINE, || {
        count(&tcp.closed) == 2
    });
    assert_eq!(
        (count(&tcp.truncated), count(&tcp.truncated_at_eof)),
        (2, 2)
    );
}

#[test]
fn hostile_a13_frames_that_never_complete_are_cut_by_frame_timeout() {
    let d = TestDaemon::start(&json_config(
        "max_message_size = \"64KiB\"\nframe_timeout = \"500ms\"\nidle_timeout = \"1m\"",
    ));
    let mut conns: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = connect(d.addr("tcp"));
            s.write_all(b"65536 <13>0123456789").unwrap();
            s
        })
        .collect();
    for s in &mut conns {
        wait_closed(s, DEADLINE);
    }
    assert_eq!(count(&d.listener("tcp").frame_timeouts), 20);
}

#[test]
fn hostile_a14_header_split_at_every_byte() {
    let d = daemon();
    let s = send_chunks(&d, "tcp", &[b"1", b"5 <13>he", b"llo world"]);
    drop(s);
    // The same multi-frame stream, one byte per read, must give the same events as in one piece.
    let stream: &[u8] = b"7 <13>one<13>two\n9 <13>three\r\n<13>four\n";
    let chunks: Vec<&[u8]> = stream.chunks(1).collect();
    let s = send_chunks(&d, "tcp", &chunks);
    drop(s);
    let mut s = connect(d.addr("tcp"));
    s.write_all(stream).unwrap();
    drop(s);
    let ev = settle(&d);
    let mut got = messages(&ev);
    got.sort();
    let mut want = vec![
        "hello world",
        "one",
        "two",
        "three",
        "four",
        "one",
        "two",
        "three",
        "four",
    ];
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn hostile_a15_several_frames_per_read_and_optional_lf() {
    let d = daemon();
    let mut s = connect(d.addr("tcp"));
    s.write_all(b"5 <13>a5 <13>b").unwrap();
    drop(s);
    let mut s = connect(d.addr("tcp"));
    s.write_all(b"5 <13>c\n5 <13>d\r\n").unwrap();
    drop(s);
    let ev = settle(&d);
    let mut got = messages(&ev);
    got.sort();
    assert_eq!(got, vec!["a", "b", "c", "d"]);
    assert_eq!(
        count(&d.listener("tcp").empty_frames),
        0,
        "a trailer after a frame is no empty frame"
    );
}

#[test]
fn hostile_a16_mixed_framing_detected_per_frame() {
    let d = daemon();
    let mut s = connect(d.addr("tcp"));
    s.write_all(b"5 <13>a<13>b\n5 <13>c").unwrap();
    drop(s);
    assert_eq!(messages(&settle(&d)), vec!["a", "b", "c"]);
}

#[test]
fn hostile_b01_endless_line_is_truncated_and_memory_bounded() {
    let d = daemon();
    let mut s = connect(d.addr("tcp"));
    s.write_all(b"<13>").unwrap();
    let block = vec![b'A'; 1 << 20];
    for _ in 0..10 {
        s.write_all(&block).unwrap();
    }
    s.write_all(b"\n<13>after\n").unwrap();
    drop(s);
    let ev = settle(&d);
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0]["truncated"], true);
    assert_eq!(ev[0]["message"].as_str().unwrap().len(), MAX - 4);
    assert_eq!(ev[1]["message"], "after");
}

#[test]
fn hostile_b02_oversize_line_then_good_line_in_one_read() {
    let d = daemon();
    let mut input = b"<13>".to_vec();
    input.extend(std::iter::repeat_n(b'A', MAX + 100));
    input.extend_from_slice(b"\n<13>next\n");
    let mut s = connect(d.addr("tcp"));
    s.write_all(&input).unwrap();
    drop(s);
    let ev = settle(&d);
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[1]["message"], "next");
}

#[test]
fn hostile_b03_truncation_boundaries() {
    let d = daemon();
    for len in [MAX - 1, MAX, MAX + 1] {
        let mut input = b"<13>".to_vec();
        input.extend(std::iter::repeat_n(b'B', len - 4));
        input.extend_from_slice(b"\n<13>next\n");
        let mut s = connect(d.addr("tcp"));
        s.write_all(&input).unwrap();
        drop(s);
        let ev = settle(&d);
        let last_two = &ev[ev.len() - 2..];
        assert_eq!(last_two[1]["message"], "next", "line of {len} bytes");
        let truncated = last_two[0].get("truncated").is_some();
        assert_eq!(truncated, len > MAX, "line of {len} bytes");
        let kept = last_two[0]["message"].as_str().unwrap().len();
        assert_eq!(kept, len.min(MAX) - 4, "line of {len} bytes");
    }
}

#[test]
fn hostile_b04_crlf_line_endings() {
    let d = daemon();
    let mut s = connect(d.addr("tcp"));
    s.write_all(b"<13>Oct 11 22:14:15 host app: hi\r\n<13>Oct 11 22:14:15 host app: a\rb\n")
        .unwrap();
    drop(s);
    let ev = settle(&d);
    assert_eq!(messages(&ev), vec!["hi", "a\rb"]);
}

#[test]
fn hostile_b05_nul_trailer_by_default_else_data() {
    // By default a NUL ends an LF-framed message (NUL LF is one trailer); inside an
    // octet-counted frame it is data.
    let d = daemon();
    let mut s = connect(d.addr("tcp"));
    s.write_all(b"<13>a\0<13>b\0\n<13>c\0<13>d\n7 <13>e\0f")
        .unwrap();
    drop(s);
    assert_eq!(messages(&settle(&d)), vec!["a", "b", "c", "d", "e\0f"]);
    let tcp = d.listener("tcp");
    assert_eq!(count(&tcp.nul_terminated), 3);
    assert_eq!(count(&tcp.empty_frames), 0);

    let d = TestDaemon::start(&json_config(&format!(
        "max_message_size = {MAX}\nnul_trailer = false"
    )));
    let mut s = connect(d.addr("tcp"));
    s.write_all(b"<13>a\0b\n<13>c\0\n").unwrap();
    drop(s);
    assert_eq!(
        messages(&settle(&d)),
        vec!["a\0b", "c"],
        "with nul_trailer = false NUL is data; a NUL before LF is a trailer"
    );
    assert_eq!(count(&d.listener("tcp").nul_terminated), 0);
}

#[test]
fn hostile_b06_space_before_next_frame() {
    let d = daemon();
    let mut s = connect(d.addr("tcp"));
    s.write_all(b"<13>a\n <13>b\n").unwrap();
    drop(s);
    assert_eq!(messages(&settle(&d)), vec!["a", "b"]);
}

#[test]
fn hostile_b07_empty_lines_are_counted_not_emitted() {
    let d = daemon();
    let mut s = connect(d.addr("tcp"));
    s.write_all(b"\n\n\n\0\0\r\n\0\0\n").unwrap();
    drop(s);
    assert!(settle(&d).is_empty());
    assert_eq!(
        count(&d.listener("tcp").empty_frames),
        7,
        "one per empty line (each NUL ends one, NUL LF is one trailer), not per byte"
    );

    let d = TestDaemon::start(&json_config(&format!(
        "max_message_size = {MAX}\nnul_trailer = false"
    )));
    let mut s = connect(d.addr("tcp"));
    s.write_all(b"\n\n\n\0\0\0\n").unwrap();
    drop(s);
    assert!(settle(&d).is_empty());
    assert_eq!(
        count(&d.listener("tcp").empty_frames),
        4,
        "with nul_trailer = false, NUL-only lines end at LF"
    );
}

#[test]
fn hostile_b08_tls_client_hello_on_plain_port() {
    let d = daemon();
    let mut s = connect(d.addr("tcp"));
    s.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        .unwrap();
    s.write_all(&[0u8; 64]).unwrap();
    wait_closed(&mut s, DEADLINE);
    assert_eq!(count(&d.listener("tcp").tls_on_plain_port), 1);
    assert!(settle(&d).is_empty(), "no binary junk in the log");
}

#[test]
fn hostile_c01_connect_then_nothing_frees_the_slot() {
    let d = TestDaemon::start(&json_config(
        "max_connections = 1\nidle_timeout = \"300ms\"",
    ));
    let mut silent = connect(d.addr("tcp"));
    wait_closed(&mut silent, DEADLINE);
    assert_eq!(count(&d.listener("tcp").idle_timeouts), 1);
    // The only slot is free again.
    let mut s = connect(d.addr("tcp"));
    s.write_all(b"<13>served\n").unwrap();
    drop(s);
    assert_eq!(messages(&wait_json(&out(&d), 1)), vec!["served"]);
}

#[test]
fn hostile_c02_idle_connection_is_closed() {
    let d = TestDaemon::start(&json_config("idle_timeout = \"300ms\""));
    let mut s = connect(d.addr("tcp"));
    s.write_all(b"<13>one\n").unwrap();
    wait_closed(&mut s, DEADLINE);
    assert_eq!(count(&d.listener("tcp").idle_timeouts), 1);
    assert_eq!(messages(&wait_json(&out(&d), 1)), vec!["one"]);
}

#[test]
fn hostile_c03_slowloris_inside_a_frame() {
    const IDLE_TIMEOUT: Duration = Duration::from_secs(1);
    let d = TestDaemon::start(&json_config(&format!(
        "idle_timeout = \"{}ms\"\nframe_timeout = \"1s\"",
        IDLE_TIMEOUT.as_millis()
    )));
    let mut s = connect(d.addr("tcp"));
    s.write_all(b"1000 <13>").unwrap();
    // One byte every fifth of the idle timeout never trips it; the frame deadline still
    // applies. The pause paces the attacker (the loop ends when the cut is counted).
    let start = std::time::Instant::now();
    while count(&d.listener("tcp").frame_timeouts) == 0 {
        assert!(
            start.elapsed() < DEADLINE,
            "slowloris connection was never cut"
        );
        if s.write_all(b"x").is_err() {
            break;
        }
        std::thread::sleep(IDLE_TIMEOUT / 5);
    }
    wait_closed(&mut s, DEADLINE);
    assert_eq!(count(&d.listener("tcp").frame_timeouts), 1);
    assert_eq!(count(&d.listener("tcp").idle_timeouts), 0);
}

/// The other side of C03: a sender that streams steadily, with every write ending inside the
/// next frame, completes a frame on every read and is never cut, however long it streams.
#[test]
fn hostile_c03_steady_stream_ending_mid_frame_is_not_slowloris() {
    const FRAME_TIMEOUT: Duration = Duration::from_millis(300);
    let d = TestDaemon::start(&json_config(&format!(
        "idle_timeout = \"1s\"\nframe_timeout = \"{}ms\"",
        FRAME_TIMEOUT.as_millis()
    )));
    let mut s = connect(d.addr("tcp"));
    const WRITES: usize = 30;
    // Each write finishes the previous message and begins the next: 30 writes a sixth of the
    // frame timeout apart keep one frame or another open for five times the frame timeout.
    // The pause paces the sender; what is checked is waited for below.
    s.write_all(b"<13>m0").unwrap();
    for i in 1..=WRITES {
        std::thread::sleep(FRAME_TIMEOUT / 6);
        s.write_all(format!(" end\n<13>m{i}").as_bytes()).unwrap();
    }
    s.write_all(b" end\n").unwrap();
    let got = wait_json(&out(&d), WRITES + 1);
    let expected: Vec<String> = (0..=WRITES).map(|i| format!("m{i} end")).collect();
    assert_eq!(messages(&got), expected);
    assert_eq!(count(&d.listener("tcp").frame_timeouts), 0);
}

#[test]
fn hostile_c04_connection_flood_past_the_cap() {
    let d = TestDaemon::start(&json_config("max_connections = 3"));
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect(d.addr("tcp"))).collect();
    wait_until("3 connections accepted", DEADLINE, || {
        count(&d.listener("tcp").connections) == 3
    });
    for _ in 0..10 {
        let mut s = connect(d.addr("tcp"));
        wait_closed(&mut s, DEADLINE);
    }
    assert_eq!(count(&d.listener("tcp").sessions_rejected), 10);
    // Existing sessions are unaffected.
    for (i, s) in held.iter_mut().enumerate() {
        s.write_all(format!("<13>held {i}\n").as_bytes()).unwrap();
    }
    drop(held);
    assert_eq!(wait_json(&out(&d), 3).len(), 3);
}

#[test]
fn hostile_c05_stalled_peer_costs_nothing() {
    let d = daemon();
    let mut stalled = connect(d.addr("tcp"));
    stalled
        .write_all(b"300 <13>half a frame and then silence")
        .unwrap();
    let mut s = connect(d.addr("tcp"));
    let mut burst = Vec::new();
    for i in 0..5000 {
        burst.extend_from_slice(format!("<13>m{i}\n").as_bytes());
    }
    s.write_all(&burst).unwrap();
    drop(s);
    assert_eq!(wait_json(&out(&d), 5000).len(), 5000);
    drop(stalled);
}

#[test]
fn hostile_c06_reset_then_reconnect_starts_clean() {
    let d = daemon();
    let mut s = connect(d.addr("tcp"));
    s.write_all(b"100 <13>partial").unwrap();
    wait_until("bytes read", DEADLINE, || {
        count(&d.listener("tcp").bytes) >= 15
    });
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
    wait_until("the partial frame is counted", DEADLINE, || {
        count(&d.listener("tcp").truncated_at_eof) == 1
    });
    let mut s = connect(d.addr("tcp"));
    s.write_all(b"5 <13>x").unwrap();
    drop(s);
    let ev = settle(&d);
    assert_eq!(messages(&ev), vec!["partial", "x"]);
    assert!(
        ev[1].get("truncated").is_none(),
        "nothing carried over from the reset connection"
    );
}

#[test]
fn hostile_i01_datagram_larger_than_max() {
    let d = TestDaemon::start(&json_config("max_message_size = \"8KiB\""));
    let mut dg = b"<13>".to_vec();
    dg.extend(std::iter::repeat_n(b'D', 65_000 - 4));
    send_udp(d.addr("udp"), &[&dg]);
    let ev = wait_json(&out(&d), 1);
    assert_eq!(ev[0]["truncated"], true);
    assert_eq!(ev[0]["message"].as_str().unwrap().len(), 8192 - 4);
    assert_eq!(count(&d.listener("udp").truncated), 1);
}

#[test]
fn hostile_i02_zero_length_datagram() {
    let d = daemon();
    send_udp(d.addr("udp"), &[b"", b"<13>after\n"]);
    let ev = wait_json(&out(&d), 1);
    assert_eq!(messages(&ev), vec!["after"]);
    assert_eq!(count(&d.listener("udp").empty_frames), 1);
    assert_eq!(count(&d.listener("udp").received), 1);
}

#[test]
fn hostile_i03_burst_beyond_receive_buffer_is_counted_by_the_kernel() {
    // A tiny receive buffer and a blocked reader thread would be ideal; a burst from a tight
    // loop overflows a 4 KiB buffer on loopback, and every datagram is then either received or
    // in the kernel's drop counter, which sluice exports.
    let d = TestDaemon::start(&json_config_with_udp("receive_buffer_size = \"4KiB\""));
    let m = d.listener("udp");
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let msg = [b'x'; 1000];
    let mut sent = 0u64;
    let start = std::time::Instant::now();
    while count(&m.kernel_drops) == 0
        && sent < 2_000_000
        && start.elapsed() < Duration::from_secs(20)
    {
        for _ in 0..1000 {
            sock.send_to(&msg, d.addr("udp")).unwrap();
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    wait_until("received + kernel drops == sent", DEADLINE, || {
        count(&m.received) + count(&m.kernel_drops) == sent
    });
    assert!(
        count(&m.kernel_drops) > 0,
        "the burst should have overflowed a 4 KiB buffer"
    );
}

#[test]
fn hostile_i04_one_event_per_datagram() {
    let d = daemon();
    send_udp(d.addr("udp"), &[b"12 <13>hello\n"]);
    wait_json(&out(&d), 1);
    send_udp(d.addr("udp"), &[b"<13>a\n<13>b\n"]);
    let ev = wait_json(&out(&d), 2);
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0]["message"], "12 <13>hello");
    assert_eq!(ev[1]["message"], "a\n<13>b");
}

#[test]
fn hostile_i05_disallowed_sender_is_dropped_before_parsing() {
    let d = TestDaemon::start(&json_config("allowed_sources = [\"10.0.0.0/8\"]"));
    send_udp(d.addr("udp"), &[b"<13>from loopback\n"]);
    let mut s = connect(d.addr("tcp"));
    wait_closed(&mut s, DEADLINE);
    wait_until("disallowed counted", DEADLINE, || {
        count(&d.listener("udp").disallowed) == 1 && count(&d.listener("tcp").disallowed) == 1
    });
    assert_eq!(count(&d.listener("udp").received), 0);
    assert!(lines(&out(&d)).is_empty());

    let d = TestDaemon::start(&json_config("allowed_sources = [\"127.0.0.0/8\"]"));
    send_udp(d.addr("udp"), &[b"<13>allowed\n"]);
    assert_eq!(messages(&wait_json(&out(&d), 1)), vec!["allowed"]);
}

#[test]
fn hostile_i06_dev_log_trailing_nul_or_lf() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("log.sock");
    let d = TestDaemon::start(&format!(
        r#"
[listen.local]
kind = "unix"
path = "{}"

[output.out]
kind = "file"
path = "{{dir}}/out.json"
format = "json"

[[route]]
to = ["out"]
"#,
        sock.display()
    ));
    let c = std::os::unix::net::UnixDatagram::unbound().unwrap();
    c.send_to(b"<13>test\0", &sock).unwrap();
    c.send_to(b"<13>test\n\0", &sock).unwrap();
    let ev = wait_json(&d.path("out.json"), 2);
    assert_eq!(messages(&ev), vec!["test", "test"]);
    assert_eq!(ev[0]["source"], serde_json::Value::Null);
}

/// A daemon whose UDP, TCP and unix listeners allow 5 messages at once per source and refill
/// one an hour (so a test's duration cannot refill a token).
fn rate_limited_daemon() -> TestDaemon {
    TestDaemon::start(&rate_limited_daemon_config())
}

fn rate_limited_daemon_config() -> String {
    String::from(
        r#"
[listen.udp]
kind = "udp"
address = "127.0.0.1:0"
rate_limit = { messages = 1, interval = "1h", burst = 5 }

[listen.tcp]
kind = "tcp"
address = "127.0.0.1:0"
rate_limit = { messages = 1, interval = "1h", burst = 5 }

[listen.local]
kind = "unix"
path = "{dir}/log.sock"
rate_limit = { messages = 5, interval = "1h" }

[output.out]
kind = "file"
path = "{dir}/out.json"
format = "json"

[[route]]
to = ["out"]
"#,
    )
}

/// Waits until `listener` has accounted for `n` messages, received or rate-limited.
fn wait_accounted(d: &TestDaemon, listener: &str, n: u64) -> (u64, u64) {
    let m = d.listener(listener);
    wait_until(&format!("{n} messages on {listener}"), DEADLINE, || {
        count(&m.received) + count(&m.rate_limited) >= n
    });
    (count(&m.received), count(&m.rate_limited))
}

#[test]
fn hostile_j02_udp_flood_from_one_source_is_rate_limited_and_counted() {
    let d = rate_limited_daemon();
    let msgs: Vec<String> = (0..12).map(|i| format!("<13>flood {i}")).collect();
    let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_bytes()).collect();
    send_udp(d.addr("udp"), &refs);
    assert_eq!(wait_accounted(&d, "udp", 12), (5, 7));
    // Another source has its own bucket.
    let other = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    other.send_to(b"<13>other source", d.addr("udp")).unwrap();
    assert_eq!(wait_accounted(&d, "udp", 13), (6, 7));
    let events = wait_json(&out(&d), 6);
    assert_eq!(
        messages(&events),
        [
            "flood 0",
            "flood 1",
            "flood 2",
            "flood 3",
            "flood 4",
            "other source"
        ]
    );
    assert_eq!(count(&d.listener("udp").kernel_drops), 0);
}

/// A sender that changes source port, over a listener with several sockets: its datagrams land
/// on several sockets, read by several tasks, and still draw on one bucket.
#[test]
fn hostile_j02_udp_sockets_of_one_listener_share_the_buckets() {
    let d = TestDaemon::start(&rate_limited_daemon_config().replace(
        "[listen.udp]\nkind = \"udp\"",
        "[listen.udp]\nkind = \"udp\"\nsockets = 4",
    ));
    assert_eq!(udp_socket_drops(d.addr("udp")).len(), 4);
    // 32 source ports, 2 datagrams each: spread over the 4 sockets.
    send_udp_from_many(d.addr("udp"), 32, 2);
    assert_eq!(wait_accounted(&d, "udp", 64), (5, 59));
}

#[test]
fn hostile_j02_tcp_connections_of_one_address_share_a_bucket() {
    let d = rate_limited_daemon();
    let mut a = connect(d.addr("tcp"));
    a.write_all(b"<13>a1\n<13>a2\n<13>a3\n").unwrap();
    assert_eq!(wait_accounted(&d, "tcp", 3), (3, 0));
    let mut b = connect(d.addr("tcp"));
    b.write_all(b"<13>b1\n<13>b2\n<13>b3\n<13>b4\n").unwrap();
    assert_eq!(wait_accounted(&d, "tcp", 7), (5, 2));
    a.write_all(b"<13>a4\n").unwrap();
    assert_eq!(wait_accounted(&d, "tcp", 8), (5, 3));
    let events = wait_json(&out(&d), 5);
    assert_eq!(messages(&events), ["a1", "a2", "a3", "b1", "b2"]);
}

#[test]
fn hostile_j02_unix_socket_is_limited_per_listener() {
    let d = rate_limited_daemon();
    let s = std::os::unix::net::UnixDatagram::unbound().unwrap();
    for i in 0..9 {
        s.send_to(format!("<13>local {i}").as_bytes(), d.path("log.sock"))
            .unwrap();
    }
    // burst defaults to messages.
    assert_eq!(wait_accounted(&d, "local", 9), (5, 4));
}

#[test]
fn hostile_j02_rate_limiting_is_logged_once_per_interval() {
    let (_dir, p) = Proc::start_toml(
        r#"
[listen.udp]
kind = "udp"
address = "127.0.0.1:0"
rate_limit = { messages = 2, interval = "1h" }

[output.o]
kind = "stdout"

[[route]]
to = "o"
"#,
        1,
    );
    let msgs: Vec<&[u8]> = vec![b"<13>m"; 50];
    send_udp(p.addr("udp"), &msgs);
    let line = p.wait_log("begin to drop messages due to rate-limiting");
    assert!(line.contains("source=127.0.0.1"), "{line}");
    // The stop reads the socket empty first, so all 50 are counted.
    p.signal(libc::SIGTERM);
    // One line for the 48 drops, not one each: nothing more about them until the stop.
    let summary = loop {
        let line = p.wait_log("");
        assert!(!line.contains("rate-limiting"), "logged again: {line}");
        if line.contains("stopped") {
            break line;
        }
    };
    assert!(summary.contains("rate_limited=48"), "{summary}");
}
