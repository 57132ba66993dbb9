//! The `loki` output (issue 15), as a user runs it: sequence-numbered messages over TCP into
//! sluice, out to the in-memory Loki of support/loki_server.rs, which decodes the push API
//! (snappy protobuf or JSON) for real and answers as Loki does: 204, 400 with "total ignored:
//! N out of M" after storing the valid entries, 429, 5xx. The checks read the streams the
//! server stored (labels, tenant, entries with their structured metadata) against what was
//! sent, and the output's counters (`written`, `rejected`, `retries`, `labels_demoted`,
//! `queue_depth`) by name.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::support::http_server::Reply;
use crate::support::loki_server::{
    Encoding, Entry, Fate, Labels, LokiServer, PUSH_PATH, StoredStream, rate_limited, unavailable,
};
use crate::support::*;

/// Longest wait for a whole run to be delivered.
const DELIVERY: Duration = Duration::from_secs(40);

/// The output's labels when it is given none.
const DEFAULT_LABELS: [&str; 5] = ["hostname", "app_name", "facility", "severity", "listener"];

/// A TCP listener `tcp` whose every message goes to the loki output `loki` at `url`, with
/// extra `keys` (TOML lines); state under `{dir}/state`.
fn config(url: &str, keys: &str) -> String {
    store_config("loki", "loki", url, keys)
}

/// [`config`] without its `[daemon]` table.
fn pipeline(url: &str, keys: &str) -> String {
    store_pipeline("loki", "loki", url, keys)
}

/// A daemon sending to `loki` with `keys`.
fn daemon(loki: &LokiServer, keys: &str) -> TestDaemon {
    TestDaemon::start(&config(&loki.url(), keys))
}

/// A counter of the output `loki`, by name.
fn counter(d: &TestDaemon, name: &str) -> u64 {
    d.output_counter("loki", name)
}

/// Waits until `written` reaches `n`.
fn wait_written(d: &TestDaemon, n: u64) {
    wait_output_written(d, "loki", n, DELIVERY);
}

/// Waits until the backlog is empty.
fn wait_settled(d: &TestDaemon) {
    wait_until("the queue empty", DEADLINE, || {
        counter(d, "queue_depth") == 0
    });
}

/// The host of message `i` among `hosts`.
fn host(i: usize, hosts: usize) -> String {
    format!("host{:03}", i % hosts)
}

/// Message `i` from [`host`], app `app` with pid 4242: `<13>Nov 22 10:00:00 host007
/// app[4242]: msgnum:00000042`.
fn host_line(i: usize, hosts: usize) -> String {
    format!(
        "<13>Nov 22 10:00:00 {} app[4242]: msgnum:{i:08}",
        host(i, hosts)
    )
}

/// Sends `lines` (each with its LF) on one connection.
fn send_lines(d: &TestDaemon, lines: impl IntoIterator<Item = String>) {
    send_lines_to(d.addr("tcp"), lines);
}

/// Sends [`host_line`] 0..`n` over `hosts` hosts on one connection, from a thread.
fn flood_hosts(d: &TestDaemon, n: usize, hosts: usize) -> std::thread::JoinHandle<()> {
    let addr = d.addr("tcp");
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut buf = Vec::new();
        for start in (0..n).step_by(500) {
            buf.clear();
            for i in start..(start + 500).min(n) {
                buf.extend_from_slice(host_line(i, hosts).as_bytes());
                buf.push(b'\n');
            }
            s.write_all(&buf).unwrap();
        }
    })
}

/// The message number in a line (`...msgnum:00000042`), if it holds one.
fn msgnum_of(line: &str) -> Option<usize> {
    let at = line.find("msgnum:")? + "msgnum:".len();
    line.get(at..at + 8)?.parse().ok()
}

fn msgnum(e: &Entry) -> usize {
    msgnum_of(&e.line).unwrap_or_else(|| panic!("not a numbered entry: {e:?}"))
}

/// Checks that every number of 0..`n` was stored at least once, and that within each stream
/// the numbers come in the order sent (a copy of an earlier entry, from a retry, aside).
fn assert_all_in_stream_order(streams: &[StoredStream], n: usize) {
    let mut seen = vec![false; n];
    for (labels, tenant, entries) in streams {
        let mut in_stream = HashSet::new();
        let mut last: Option<usize> = None;
        for e in entries {
            let m = msgnum(e);
            assert!(m < n, "msgnum {m} was never sent");
            seen[m] = true;
            if !in_stream.insert(m) {
                continue;
            }
            assert!(
                last.is_none_or(|l| l < m),
                "stream {labels:?} ({tenant:?}): {m} after {last:?}"
            );
            last = Some(m);
        }
    }
    let missing: Vec<usize> = (0..n).filter(|&i| !seen[i]).take(10).collect();
    assert!(missing.is_empty(), "lost, first ones: {missing:?}");
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Nanoseconds since the epoch.
fn ns(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap()
}

/// Every push request went to the push path as a POST with `content_type`.
fn assert_push_requests(loki: &LokiServer, content_type: &str) {
    let requests = loki.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", PUSH_PATH));
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with(content_type)),
            "{:?}",
            r.headers
        );
    }
}

/// The checks common to the two encodings: 20,000 messages from 50 hosts, default labels.
fn fifty_hosts(encoding: &str) -> LokiServer {
    let loki = LokiServer::start();
    let d = daemon(
        &loki,
        &format!("encoding = \"{encoding}\"\nbatch = {{ max_events = 500 }}"),
    );
    let start = Utc::now();
    flood_hosts(&d, 20_000, 50).join().unwrap();
    wait_written(&d, 20_000);
    wait_settled(&d);
    let end = Utc::now();
    let streams = loki.streams();
    assert_all_in_stream_order(&streams, 20_000);
    assert_eq!(
        loki.entry_count(),
        20_000,
        "a first delivery stores each once"
    );
    assert_eq!(streams.len(), 50, "a stream per host");
    for (l, tenant, entries) in &streams {
        assert_eq!(tenant, &None, "no tenant configured");
        let h = &l["hostname"];
        assert_eq!(
            l,
            &labels(&[
                ("hostname", h),
                ("app_name", "app"),
                ("facility", "user"),
                ("severity", "notice"),
                ("listener", "tcp"),
            ]),
            "the default labels"
        );
        assert_eq!(entries.len(), 400);
        for e in entries {
            let m = msgnum(e);
            assert_eq!(h, &host(m, 50), "{e:?} in the stream of {h}");
            // The line is the message in the traditional format.
            assert!(
                e.line
                    .trim_end_matches('\n')
                    .ends_with(&format!("{h} app[4242]: msgnum:{m:08}")),
                "{e:?}"
            );
            // The fields that are not labels, and not empty: here only the procid.
            assert_eq!(e.metadata, labels(&[("procid", "4242")]), "{e:?}");
            // The time it was received, in nanoseconds.
            assert!(
                e.ts_ns >= ns(start) - 1_000_000_000 && e.ts_ns <= ns(end) + 1_000_000_000,
                "{} not between {start} and {end}",
                e.ts_ns
            );
        }
    }
    assert!(loki.pushes().len() >= 40, "{} pushes", loki.pushes().len());
    assert!(loki.pushes().iter().all(|p| p.status == Some(204)));
    assert_eq!(counter(&d, "written"), 20_000);
    assert_eq!((counter(&d, "rejected"), counter(&d, "retries")), (0, 0));
    assert!(counter(&d, "requests") >= loki.pushes().len() as u64);
    assert_eq!(counter(&d, "labels_demoted"), 0);
    // One push in flight at a time: two pushes of a stream never race each other.
    assert_eq!(loki.http().peak_concurrent(), 1);
    loki
}

#[test]
fn every_message_of_fifty_hosts_is_stored_in_stream_order_as_snappy_protobuf() {
    let loki = fifty_hosts("protobuf");
    assert_push_requests(&loki, "application/x-protobuf");
    assert!(
        loki.pushes()
            .iter()
            .all(|p| p.encoding == Some(Encoding::Protobuf))
    );
    // Snappy: the body on the wire is smaller than the lines it carries.
    let wire: usize = loki.requests().iter().map(|r| r.wire_len).sum();
    let lines: usize = loki.entries().iter().map(|e| e.line.len()).sum();
    assert!(
        wire < lines,
        "{wire} bytes on the wire for {lines} of lines"
    );
}

#[test]
fn every_message_of_fifty_hosts_is_stored_in_stream_order_as_json() {
    let loki = fifty_hosts("json");
    assert_push_requests(&loki, "application/json");
    assert!(
        loki.pushes()
            .iter()
            .all(|p| p.encoding == Some(Encoding::Json))
    );
}

#[test]
fn an_outage_of_503s_and_429s_loses_nothing() {
    let loki = LokiServer::start();
    let d = daemon(&loki, "timeout = \"2s\"\nbatch = { max_events = 500 }");
    let sender = flood_hosts(&d, 20_000, 50);
    wait_until("the first 2000 written", DELIVERY, || {
        counter(&d, "written") >= 2000
    });
    // Three seconds of 503s, 429s with Retry-After and 500s.
    loki.set_requests(|_, push| match push % 3 {
        0 => Fate::Refuse(unavailable()),
        1 => Fate::Refuse(rate_limited(Some(1))),
        _ => Fate::Refuse(Reply::status(500)),
    });
    let outage_from = loki.pushes().len();
    // The outage lasts until sluice has met each of the three refusals, not for a time.
    wait_until("a 503, a 429 and a 500", DELIVERY, || {
        let during = loki.pushes().split_off(outage_from);
        [503, 429, 500]
            .iter()
            .all(|&code| during.iter().any(|p| !p.applied && p.status == Some(code)))
    });
    loki.set_requests(|_, _| Fate::Apply);
    sender.join().unwrap();
    wait_written(&d, 20_000);
    wait_settled(&d);
    assert_all_in_stream_order(&loki.streams(), 20_000);
    let refused = loki.pushes()[outage_from..]
        .iter()
        .filter(|p| !p.applied)
        .count();
    assert!(refused >= 1, "the outage was seen");
    assert!(counter(&d, "retries") >= refused as u64);
    assert_eq!(
        counter(&d, "rejected"),
        0,
        "a 429 or 5xx is not a rejection"
    );
    assert_eq!(counter(&d, "written"), 20_000);
    assert_eq!(loki.ignored(), 0);
}

#[test]
fn a_429_is_retried_after_its_retry_after() {
    let loki = LokiServer::start();
    loki.set_requests(|_, push| {
        if push == 0 {
            Fate::Refuse(rate_limited(Some(2)))
        } else {
            Fate::Apply
        }
    });
    let d = daemon(&loki, "");
    send_lines(&d, (0..10).map(|i| host_line(i, 1)));
    wait_written(&d, 10);
    let requests = loki.requests();
    assert!(requests.len() >= 2);
    let waited = requests[1].at - requests[0].at;
    assert!(
        waited >= Duration::from_millis(1900),
        "retried after {waited:?}, Retry-After: 2"
    );
    assert_all_in_stream_order(&loki.streams(), 10);
    assert_eq!(counter(&d, "rejected"), 0);
    assert!(counter(&d, "retries") >= 1);
}

/// An RFC 5424 line from `host`/`app` stamped `t` (microseconds), message `msg`.
fn rfc5424_at(t: DateTime<Utc>, msg: &str) -> String {
    format!(
        "<13>1 {} host app 42 ID7 - {msg}",
        t.format("%Y-%m-%dT%H:%M:%S%.6fZ")
    )
}

#[test]
fn entries_loki_refuses_are_counted_as_rejected_never_retried_and_block_nothing() {
    let loki = LokiServer::start();
    loki.set_window(Duration::from_secs(60));
    loki.set_max_line_size(Some(300));
    let d = daemon(
        &loki,
        "labels = [\"hostname\", \"app_name\"]\ntimestamp = \"message\"\nbatch = { max_events = 50 }",
    );
    let base = Utc::now();
    let at = |i: usize| base + chrono::TimeDelta::milliseconds(i as i64);
    // The stream's newest entry is now.
    send_lines(
        &d,
        (0..10).map(|i| rfc5424_at(at(i), &format!("msgnum:{i:08}"))),
    );
    wait_written(&d, 10);

    // Then 200 more: every 20th stamped two hours ago (too far behind the newest), and two
    // too long for Loki's line size.
    let old = |i: usize| i % 20 == 15;
    let long = |i: usize| i == 100 || i == 150;
    send_lines(
        &d,
        (10..210).map(|i| {
            let t = if old(i) {
                at(i) - chrono::TimeDelta::hours(2)
            } else {
                at(i)
            };
            let pad = if long(i) {
                " ".to_string() + &"x".repeat(400)
            } else {
                String::new()
            };
            rfc5424_at(t, &format!("msgnum:{i:08}{pad}"))
        }),
    );
    let refused_n = (10..210).filter(|&i| old(i) || long(i)).count();
    wait_until("every event written or rejected", DELIVERY, || {
        counter(&d, "written") + counter(&d, "rejected") >= 210
    });
    assert_eq!(loki.ignored(), refused_n, "the server's own count");
    assert_eq!(counter(&d, "rejected") as usize, refused_n);
    assert_eq!(counter(&d, "written") as usize, 210 - refused_n);
    // The valid entries of the refused pushes were stored.
    let stored: Vec<usize> = loki.entries().iter().map(msgnum).collect();
    let want: Vec<usize> = (0..210).filter(|&i| !old(i) && !long(i)).collect();
    assert_eq!(stored, want);
    let pushes = loki.pushes();
    assert!(pushes.iter().any(|p| p.status == Some(400)));
    for p in pushes.iter().filter(|p| p.status == Some(400)) {
        assert!(p.ignored < p.entry_count(), "partly stored: {p:?}");
        assert!(p.response.contains("total ignored:"));
    }
    assert!(
        loki.pushes()
            .iter()
            .flat_map(|p| &p.reasons)
            .any(|r| r.starts_with("entry too far behind"))
    );
    // A 400 is never sent again: each refused entry went out once.
    let sent: Vec<usize> = pushes
        .iter()
        .flat_map(|p| &p.streams)
        .flat_map(|s| &s.entries)
        .map(msgnum)
        .filter(|&m| old(m) || long(m))
        .collect();
    assert_eq!(sent.len(), refused_n, "{sent:?}");
    // Stamps are the messages' own, in nanoseconds; the other fields are metadata.
    let first = &loki.entries()[0];
    assert_eq!(first.ts_ns, ns(at(0)) / 1000 * 1000);
    assert_eq!(
        first.metadata,
        labels(&[
            ("facility", "user"),
            ("severity", "notice"),
            ("listener", "tcp"),
            ("procid", "42"),
            ("msgid", "ID7"),
        ])
    );
    assert_eq!(
        loki.streams()[0].0,
        labels(&[("hostname", "host"), ("app_name", "app")])
    );

    // What comes after is delivered as usual.
    send_lines(
        &d,
        (210..260).map(|i| rfc5424_at(at(i), &format!("msgnum:{i:08}"))),
    );
    wait_written(&d, 260 - refused_n as u64);
    wait_settled(&d);
    assert_eq!(loki.entry_count(), 260 - refused_n);
    assert_eq!(counter(&d, "rejected") as usize, refused_n);
}

#[test]
fn past_max_streams_the_busiest_label_is_demoted_to_metadata() {
    let loki = LokiServer::start();
    let d = daemon(
        &loki,
        "labels = [\"hostname\", \"app_name\", \"severity\"]\nmax_streams = 20\nbatch = { max_events = 100 }",
    );
    flood_hosts(&d, 3000, 300).join().unwrap();
    wait_written(&d, 3000);
    wait_settled(&d);
    // The guard bounds the live label sets: the 20 made before the demotion get no entry after
    // it, and those made after it (here one) count afresh. Each label is demoted once at most,
    // so the sets an output ever makes stay under max_streams per demotion, plus one.
    let demotions = counter(&d, "labels_demoted");
    assert!(demotions >= 1);
    assert!(
        loki.label_sets_sent() as u64 <= 20 * (demotions + 1),
        "{} label sets reached the server after {demotions} demotion(s)",
        loki.label_sets_sent()
    );
    let with_host = loki
        .streams()
        .iter()
        .filter(|(l, _, _)| l.contains_key("hostname"))
        .count();
    assert_eq!(with_host, 20, "the sets made before the demotion");
    let streams = loki.streams();
    assert_all_in_stream_order(&streams, 3000);
    // After the demotion: streams without hostname, whose entries carry it as metadata.
    let demoted: Vec<&StoredStream> = streams
        .iter()
        .filter(|(l, _, _)| !l.contains_key("hostname"))
        .collect();
    assert!(!demoted.is_empty(), "no stream without hostname");
    for (l, _, entries) in &demoted {
        assert_eq!(l, &labels(&[("app_name", "app"), ("severity", "notice")]));
        for e in entries {
            assert_eq!(
                e.metadata.get("hostname"),
                Some(&host(msgnum(e), 300)),
                "{e:?}"
            );
        }
    }
    // Before it, hostname was a label and not metadata too.
    for (l, _, entries) in streams
        .iter()
        .filter(|(l, _, _)| l.contains_key("hostname"))
    {
        assert!(entries.iter().all(|e| !e.metadata.contains_key("hostname")));
        assert_eq!(l.len(), 3);
    }
    assert_eq!(counter(&d, "rejected"), 0);
    assert_eq!(counter(&d, "written"), 3000);
}

#[test]
fn empty_label_values_are_left_out_and_no_label_at_all_is_job_sluice() {
    let loki = LokiServer::start();
    let d = daemon(&loki, "labels = [\"app_name\"]");
    let t = Utc::now();
    send_lines(
        &d,
        [
            rfc5424_at(t, "msgnum:00000000"),
            // No app name.
            rfc5424_at(t, "msgnum:00000001").replace(" app 42 ", " - 42 "),
        ],
    );
    wait_written(&d, 2);
    let streams = loki.streams();
    let by_labels: BTreeMap<Labels, Vec<usize>> = streams
        .iter()
        .map(|(l, _, e)| (l.clone(), e.iter().map(msgnum).collect()))
        .collect();
    assert_eq!(
        by_labels,
        BTreeMap::from([
            (labels(&[("app_name", "app")]), vec![0]),
            (labels(&[("job", "sluice")]), vec![1]),
        ])
    );
    for (_, _, entries) in &streams {
        for e in entries {
            assert!(e.metadata.values().all(|v| !v.is_empty()), "{e:?}");
            assert!(!e.metadata.contains_key("app_name"), "{e:?}");
            assert_eq!(e.metadata.get("hostname").map(String::as_str), Some("host"));
        }
    }
}

/// A file holding `content`, in a temporary directory kept alive by the returned guard.
fn secret_file(content: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, content).unwrap();
    (dir, path.display().to_string())
}

#[test]
fn the_tenant_header_and_basic_auth_go_with_every_push() {
    let (_dir, password) = secret_file("s3cret\n");
    let loki = LokiServer::start();
    loki.set_require_tenant(true);
    let d = daemon(
        &loki,
        &format!(
            "tenant = \"team-a\"\nbatch = {{ max_events = 50 }}\n\
             auth = {{ kind = \"basic\", user = \"loki\", password_file = \"{password}\" }}"
        ),
    );
    send_lines(&d, (0..300).map(|i| host_line(i, 3)));
    wait_written(&d, 300);
    let streams = loki.streams();
    assert_all_in_stream_order(&streams, 300);
    assert_eq!(streams.len(), 3);
    assert!(
        streams
            .iter()
            .all(|(_, t, _)| t.as_deref() == Some("team-a"))
    );
    let requests = loki.requests();
    assert!(requests.len() >= 6);
    for r in &requests {
        assert_eq!(r.header("x-scope-orgid"), Some("team-a"));
        // base64("loki:s3cret")
        assert_eq!(r.header("authorization"), Some("Basic bG9raTpzM2NyZXQ="));
        assert_eq!(r.status, Some(204), "no 401");
    }
}

#[test]
fn the_disk_queue_delivers_across_a_restart() {
    let loki = LokiServer::start();
    loki.down();
    let state = tempfile::tempdir().unwrap();
    let config = config(
        &loki.url(),
        "queue = { kind = \"disk\", max_size = \"100MiB\" }",
    )
    .replace("{dir}/state", state.path().to_str().unwrap());
    let mut d = TestDaemon::start(&config);
    flood_hosts(&d, 1000, 10).join().unwrap();
    wait_until("1000 in the disk queue", DEADLINE, || {
        counter(&d, "queue_depth") == 1000
    });
    assert!(counter(&d, "retries") >= 1, "connection refused is retried");
    d.stop();
    assert_eq!(counter(&d, "written"), 0);

    loki.up();
    let started = Instant::now();
    let d = TestDaemon::start(&config);
    wait_written(&d, 1000);
    wait_settled(&d);
    assert!(started.elapsed() < DELIVERY);
    assert_all_in_stream_order(&loki.streams(), 1000);
    assert_eq!(loki.streams().len(), 10);
    assert_eq!(counter(&d, "written"), 1000);
}

/// `--check-config` on a loki output with `keys`: the exit code and the error line naming
/// `key` (the whole stderr in the panic if none does).
fn config_error(keys: &str, key: &str) -> (Option<i32>, String) {
    let (code, err, _) = check_config(&pipeline("http://127.0.0.1:9", keys));
    let line = err
        .lines()
        .find(|l| l.contains(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no error at {key}:\n{err}"))
        .to_string();
    (code, line)
}

#[test]
fn check_config_names_the_bad_key() {
    let (code, line) = config_error("labels = [\"hostname\", \"colour\"]", "output.loki.labels");
    assert_eq!(code, Some(78));
    assert!(line.contains("colour"), "{line}");

    let (code, line) = config_error("max_streams = 0", "output.loki.max_streams");
    assert_eq!(code, Some(78));
    assert!(line.contains('0') || line.contains("at least"), "{line}");

    let (code, line) = config_error("encoding = \"xml\"", "output.loki.encoding");
    assert_eq!(code, Some(78));
    for choice in ["protobuf", "json"] {
        assert!(line.contains(choice), "{line}");
    }

    let (code, line) = config_error("max_in_flight = 4", "output.loki.max_in_flight");
    assert_eq!(code, Some(78));
    assert!(line.contains("in order"), "{line}");

    let (code, line) = config_error("timestamp = \"sent\"", "output.loki.timestamp");
    assert_eq!(code, Some(78));
    for choice in ["received", "message"] {
        assert!(line.contains(choice), "{line}");
    }

    // And a good one passes, every key given.
    let good = format!(
        "labels = {DEFAULT_LABELS:?}\nencoding = \"json\"\ntenant = \"team-a\"\nmax_streams = 1000\n\
         timestamp = \"message\"\nformat = \"rfc5424\""
    );
    let (code, err, _) = check_config(&pipeline("http://127.0.0.1:9", &good));
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn a_loki_outage_of_60_s_under_load_loses_nothing() {
    let loki = LokiServer::start();
    let d = daemon(&loki, "timeout = \"2s\"");
    // 30,000 messages at 500 a second: Loki is down for the last 58 s of the load.
    let sender = paced_tcp(d.addr("tcp"), 30_000, 500);
    wait_written(&d, 1000);
    loki.down();
    sender.join().unwrap();
    assert!(
        counter(&d, "queue_depth") > 20_000,
        "the backlog held the outage"
    );
    loki.up();
    wait_until("every event written", Duration::from_secs(120), || {
        counter(&d, "written") >= 30_000
    });
    wait_settled(&d);
    assert_all_in_stream_order(&loki.streams(), 30_000);
    assert!(counter(&d, "retries") >= 1);
}
