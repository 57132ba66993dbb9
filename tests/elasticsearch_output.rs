//! The `elasticsearch` output (issue 15), as a user runs it: sequence-numbered messages over
//! TCP into sluice, out to the in-memory Elasticsearch of support/es_server.rs, which answers
//! `_bulk` as the Elasticsearch reference documents it (per-item statuses, 409 on a duplicate
//! `create`, data streams that take only `create`), failures included. The checks count the
//! documents the server stored against what was sent, and read the output's counters
//! (`written`, `rejected`, `retries`, `requests`, `bytes_sent`, `queue_depth`) by name.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::support::es_server::{EsServer, Fate, Op, too_many_requests, unavailable};
use crate::support::http_server::{Recorded, Reply};
use crate::support::*;

/// Longest wait for a whole run to be delivered.
const DELIVERY: Duration = Duration::from_secs(40);

/// The data stream the output writes to when given no `index` nor `data_stream`.
const DEFAULT_STREAM: &str = "logs-syslog-default";

/// A TCP listener `tcp` whose every message goes to the elasticsearch output `es` at `url`,
/// with extra `keys` (TOML lines); state under `{dir}/state`.
fn config(url: &str, keys: &str) -> String {
    store_config("es", "elasticsearch", url, keys)
}

/// [`config`] without its `[daemon]` table.
fn pipeline(url: &str, keys: &str) -> String {
    store_pipeline("es", "elasticsearch", url, keys)
}

/// A daemon sending to `es` with `keys`.
fn daemon(es: &EsServer, keys: &str) -> TestDaemon {
    TestDaemon::start(&config(&es.url(), keys))
}

/// A counter of the output `es`, by name.
fn counter(d: &TestDaemon, name: &str) -> u64 {
    d.output_counter("es", name)
}

/// Sends [`msgnum_line`] 0..`n` on one connection and waits until they are sent.
fn send(d: &TestDaemon, n: usize) {
    let (sender, _) = flood_tcp(d.addr("tcp"), n, 500);
    sender.join().unwrap();
}

/// Sends `lines` (each with its LF) on one connection.
fn send_lines(d: &TestDaemon, lines: impl IntoIterator<Item = String>) {
    send_lines_to(d.addr("tcp"), lines);
}

/// Waits until `written` reaches `n`.
fn wait_written(d: &TestDaemon, n: u64) {
    wait_output_written(d, "es", n, DELIVERY);
}

/// Waits until the backlog is empty and no more requests are going out.
fn wait_settled(d: &TestDaemon) {
    wait_until("the queue empty", DEADLINE, || {
        counter(d, "queue_depth") == 0
    });
}

/// The message number of a document (`"message": "msgnum:00000042"`), if it is one.
fn msgnum_of(doc: &Value) -> Option<usize> {
    doc["message"]
        .as_str()
        .and_then(|m| m.strip_prefix("msgnum:"))
        .and_then(|n| n.parse().ok())
}

fn msgnum(doc: &Value) -> usize {
    msgnum_of(doc).unwrap_or_else(|| panic!("not a numbered document: {doc}"))
}

/// The message numbers of the documents stored in `index`.
fn stored(es: &EsServer, index: &str) -> Vec<usize> {
    es.docs(index).iter().map(msgnum).collect()
}

/// Of 0..`n`: the numbers never seen (the first ten) and how many were seen twice or more.
fn tally(seqs: &[usize], n: usize) -> (Vec<usize>, usize) {
    let mut seen = vec![0u32; n];
    for &s in seqs {
        seen[s] += 1;
    }
    let missing = (0..n).filter(|&i| seen[i] == 0).take(10).collect();
    (missing, seen.iter().filter(|&&c| c > 1).count())
}

fn assert_exactly_once(seqs: &[usize], n: usize) {
    assert_eq!(tally(seqs, n), (vec![], 0), "missing (first ten), doubled");
    assert_eq!(seqs.len(), n);
}

/// How many times each message number was sent to the server, over every bulk request.
fn sent_counts(es: &EsServer) -> HashMap<usize, usize> {
    let mut counts = HashMap::new();
    for b in es.bulks() {
        for it in &b.items {
            if let Some(n) = msgnum_of(&it.doc) {
                *counts.entry(n).or_default() += 1;
            }
        }
    }
    counts
}

/// The bulk requests' paths without their query strings.
fn assert_bulk_paths(es: &EsServer) {
    for b in es.bulks() {
        assert_eq!(b.path.split('?').next(), Some("/_bulk"), "url + /_bulk");
    }
}

/// An RFC 3339 date as an instant.
fn instant(v: &Value) -> DateTime<Utc> {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("not a date string: {v}"));
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("not RFC 3339 ({e}): {s}"))
        .with_timezone(&Utc)
}

/// The fields of a document with `ecs = false`: the JSON event (`format = "json"`).
const JSON_FIELDS: &[&str] = &[
    "received_at",
    "source",
    "listener",
    "protocol",
    "facility",
    "severity",
    "timestamp",
    "hostname",
    "app_name",
    "procid",
    "msgid",
    "structured_data",
    "message",
];

#[test]
fn every_message_is_stored_exactly_once_in_the_default_data_stream() {
    let es = EsServer::start();
    let d = daemon(&es, "id = \"hash\"\nbatch = { max_events = 500 }");
    send(&d, 20_000);
    wait_written(&d, 20_000);
    assert_eq!(es.indices(), [DEFAULT_STREAM]);
    assert_exactly_once(&stored(&es, DEFAULT_STREAM), 20_000);

    let bulks = es.bulks();
    assert!(bulks.len() >= 40, "{} bulk requests", bulks.len());
    for b in &bulks {
        assert_eq!(b.status, Some(200));
        assert!(b.items.len() <= 500, "a batch over max_events");
        for it in &b.items {
            // A data stream takes create; a hashed id on each.
            assert_eq!((it.op, it.index.as_str()), (Op::Create, DEFAULT_STREAM));
            assert!(it.id.as_ref().is_some_and(|i| !i.is_empty()));
        }
    }
    assert_bulk_paths(&es);
    for r in es
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/_bulk"))
    {
        assert_eq!(r.method, "POST");
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("application/x-ndjson")),
            "{:?}",
            r.headers
        );
    }
    // Distinct events, distinct ids: no conflict on a first delivery.
    assert_eq!(es.items_answered(409), 0);

    for doc in es.docs(DEFAULT_STREAM) {
        for f in JSON_FIELDS {
            assert!(doc.get(*f).is_some(), "no {f:?} in {doc}");
        }
        // @timestamp is the message's stamp (it has one here).
        assert_eq!(
            instant(&doc["@timestamp"]),
            instant(&doc["timestamp"]),
            "{doc}"
        );
    }
    let first = &es.docs(DEFAULT_STREAM)[0];
    assert_eq!(
        (&first["hostname"], &first["app_name"]),
        (&"host".into(), &"app".into())
    );
    assert_eq!(
        (&first["facility"], &first["severity"]),
        (&"user".into(), &"notice".into())
    );
    assert_eq!(first["listener"], "tcp");

    wait_settled(&d);
    assert_eq!(counter(&d, "written"), 20_000);
    assert_eq!((counter(&d, "rejected"), counter(&d, "retries")), (0, 0));
    let requests = counter(&d, "requests") as usize;
    assert!(
        requests >= bulks.len() && requests <= es.requests().len(),
        "requests = {requests}, {} bulk requests",
        bulks.len()
    );
    let wire: usize = es
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/_bulk"))
        .map(|r| r.wire_len)
        .sum();
    assert!(counter(&d, "bytes_sent") >= wire as u64);
}

/// An RFC 5424 line stamped `stamp` (or `-`), message `msg`.
fn rfc5424(stamp: &str, msg: &str) -> String {
    format!("<13>1 {stamp} host app 42 ID7 - {msg}")
}

#[test]
fn the_index_template_takes_the_date_of_each_event_in_utc() {
    let es = EsServer::start();
    let d = daemon(&es, "index = \"syslog-{year}.{month}.{day}\"");
    let today = || format!("syslog-{}", Utc::now().format("%Y.%m.%d"));
    let before = today();
    send_lines(
        &d,
        (0..50)
            .map(|i| rfc5424("2024-03-01T10:00:00.000Z", &format!("msgnum:{i:08}")))
            // 23:30 at UTC-2 is 01:30 UTC the next day.
            .chain(
                (50..100).map(|i| rfc5424("2024-03-02T23:30:00-02:00", &format!("msgnum:{i:08}"))),
            )
            // No stamp: the day it was received.
            .chain([rfc5424("-", "msgnum:00000100")]),
    );
    wait_written(&d, 101);
    let after = today();
    let indices = es.indices();
    assert_eq!(indices.len(), 3, "{indices:?}");
    assert_exactly_once(&stored(&es, "syslog-2024.03.01"), 50);
    let mut next_day = stored(&es, "syslog-2024.03.03");
    next_day.iter_mut().for_each(|n| *n -= 50);
    assert_exactly_once(&next_day, 50);
    let received = if indices.contains(&before) {
        before
    } else {
        after
    };
    assert_eq!(stored(&es, &received), [100], "{indices:?}");
    for doc in es.docs("syslog-2024.03.03") {
        assert_eq!(
            instant(&doc["@timestamp"]).to_rfc3339(),
            "2024-03-03T01:30:00+00:00"
        );
    }
    // @timestamp falls back to received_at.
    let nostamp = &es.docs(&received)[0];
    let lag = instant(&nostamp["received_at"]) - instant(&nostamp["@timestamp"]);
    assert!(
        lag >= chrono::TimeDelta::zero() && lag < chrono::TimeDelta::milliseconds(1),
        "@timestamp {} for received_at {} (at most cut to milliseconds)",
        nostamp["@timestamp"],
        nostamp["received_at"]
    );
    assert_eq!(counter(&d, "rejected"), 0);
}

#[test]
fn a_lost_answer_stores_nothing_twice_with_hashed_ids() {
    // The server stores batches 0, 2 and 4 but the client never learns it: a reset, a 503,
    // no answer at all. With ids, the batches sent again meet 409s, which count as delivered.
    let es = EsServer::start();
    es.set_requests(|_, bulk| match bulk {
        0 => Fate::ApplyThen(Reply::Reset),
        2 => Fate::ApplyThen(unavailable()),
        4 => Fate::ApplyThen(Reply::Hang),
        _ => Fate::Apply,
    });
    let d = daemon(
        &es,
        "id = \"hash\"\ntimeout = \"1s\"\nbatch = { max_events = 200 }",
    );
    send(&d, 2000);
    wait_written(&d, 2000);
    wait_settled(&d);
    assert_exactly_once(&stored(&es, DEFAULT_STREAM), 2000);
    let lost: usize = es.bulks()[..5]
        .iter()
        .filter(|b| [0, 2, 4].contains(&b.bulk))
        .map(|b| b.items.len())
        .sum();
    assert!(lost > 0, "the lost batches held items");
    assert!(
        es.items_answered(409) >= lost,
        "every item of a lost batch met its copy: {} 409s for {lost}",
        es.items_answered(409)
    );
    assert_eq!(counter(&d, "written"), 2000, "a 409 is delivered, once");
    assert_eq!(counter(&d, "rejected"), 0);
    assert!(counter(&d, "retries") >= 3);
}

#[test]
fn items_answered_429_are_retried_alone() {
    // Every message number ending in 3 is refused with 429 the first time the server sees it.
    let es = EsServer::start();
    es.set_items(|it| {
        (it.seen == 0 && it.doc.and_then(msgnum_of).is_some_and(|n| n % 10 == 3)).then_some(429)
    });
    let d = daemon(&es, "batch = { max_events = 100 }");
    send(&d, 2000);
    wait_written(&d, 2000);
    wait_settled(&d);
    assert_exactly_once(&stored(&es, DEFAULT_STREAM), 2000);
    assert_eq!(es.items_answered(429), 200);
    // Only the refused items went again; each of the others once.
    let counts = sent_counts(&es);
    for n in 0..2000 {
        let want = if n % 10 == 3 { 2 } else { 1 };
        assert_eq!(
            counts.get(&n),
            Some(&want),
            "message {n} sent {:?} times",
            counts.get(&n)
        );
    }
    assert_eq!(counter(&d, "written"), 2000);
    assert_eq!(counter(&d, "rejected"), 0);
    assert!(counter(&d, "retries") >= 1);
}

#[test]
fn a_mapping_error_is_rejected_counted_and_never_blocks_the_rest() {
    let es = EsServer::start();
    es.set_mapping(|_, doc| {
        doc["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("poison"))
            .then(|| "failed to parse field [message] of type [long]".into())
    });
    let d = daemon(&es, "batch = { max_events = 100 }");
    // 1000 numbered messages, and a poisoned one after every 100th.
    let poison = |i: usize| format!("<13>Nov 22 10:00:00 host app: poison:{i}");
    send_lines(
        &d,
        (0..1000).flat_map(|i| {
            let mut v = vec![msgnum_line(i)];
            if i % 100 == 50 {
                v.push(poison(i));
            }
            v
        }),
    );
    wait_until("every event written or rejected", DELIVERY, || {
        counter(&d, "written") + counter(&d, "rejected") >= 1010
    });
    assert_eq!(counter(&d, "rejected"), 10);
    assert_eq!(counter(&d, "written"), 1000);
    assert_exactly_once(&stored(&es, DEFAULT_STREAM), 1000);
    // A 400 item is not sent again.
    let poisoned: usize = es
        .bulks()
        .iter()
        .flat_map(|b| b.items.clone())
        .filter(|it| {
            it.doc["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("poison"))
        })
        .count();
    assert_eq!(poisoned, 10);
    assert_eq!(es.items_answered(400), 10);

    // And what comes after is delivered as usual.
    send_lines(&d, (1000..1010).map(msgnum_line));
    wait_written(&d, 1010);
    wait_settled(&d);
    assert_exactly_once(&stored(&es, DEFAULT_STREAM), 1010);
}

#[test]
fn a_data_stream_is_written_with_create_ops() {
    // The server refuses `index` on a data stream (400 per item): with create, nothing is.
    let es = EsServer::start();
    es.set_data_streams(&["logs-*-*", "audit"]);
    let d = daemon(&es, "data_stream = \"logs-app-prod\"");
    send(&d, 500);
    wait_written(&d, 500);
    wait_settled(&d);
    assert_exactly_once(&stored(&es, "logs-app-prod"), 500);
    assert_eq!(es.indices(), ["logs-app-prod"]);
    for b in es.bulks() {
        assert!(
            b.items.iter().all(|it| it.op == Op::Create),
            "only create ops"
        );
    }
    assert_eq!(counter(&d, "rejected"), 0);
    drop(d);

    // A data stream whose name is not of the `logs-*-*` kind: create ops too.
    let d = daemon(&es, "data_stream = \"audit\"\nid = \"hash\"");
    send(&d, 100);
    wait_written(&d, 100);
    assert_exactly_once(&stored(&es, "audit"), 100);
    assert_eq!(counter(&d, "rejected"), 0);
}

#[test]
fn an_outage_of_whole_request_failures_under_load_loses_nothing() {
    let es = EsServer::start();
    let d = daemon(
        &es,
        "id = \"hash\"\ntimeout = \"2s\"\nbatch = { max_events = 500 }",
    );
    let (sender, _) = flood_tcp(d.addr("tcp"), 20_000, 200);
    wait_until("the first 2000 written", DELIVERY, || {
        counter(&d, "written") >= 2000
    });
    // Three seconds of 503s, 429s with Retry-After and resets mid-body.
    es.set_requests(|_, bulk| match bulk % 3 {
        0 => Fate::Refuse(unavailable()),
        1 => Fate::Refuse(too_many_requests(Some(1))),
        _ => Fate::Refuse(Reply::Reset),
    });
    let outage_from = es.bulks().len();
    let requests_from = es.requests().len();
    // The outage lasts until sluice has met each of the three refusals, not for a time.
    wait_until("a 503, a 429 and a reset mid-body", DELIVERY, || {
        let during = es.requests().split_off(requests_from);
        let met = |refusal: &dyn Fn(&Recorded) -> bool| {
            during
                .iter()
                .any(|r| r.path.contains("_bulk") && refusal(r))
        };
        met(&|r| r.status == Some(503))
            && met(&|r| r.status == Some(429))
            && met(&|r| !r.complete && r.status.is_none())
    });
    es.set_requests(|_, _| Fate::Apply);
    sender.join().unwrap();
    wait_written(&d, 20_000);
    wait_settled(&d);
    assert_exactly_once(&stored(&es, DEFAULT_STREAM), 20_000);
    let refused = es.bulks()[outage_from..]
        .iter()
        .filter(|b| !b.applied)
        .count();
    assert!(refused >= 1, "the outage was seen");
    assert!(counter(&d, "retries") >= refused as u64);
    assert_eq!(counter(&d, "rejected"), 0);
    assert_eq!(counter(&d, "written"), 20_000);
}

#[test]
fn ecs_documents_have_ecs_field_names() {
    let es = EsServer::start();
    let d = daemon(&es, "ecs = true");
    send_lines(
        &d,
        [concat!(
            "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog 1234 ID47 ",
            "[exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"] ",
            "An application event log entry"
        )
        .to_string()],
    );
    wait_written(&d, 1);
    let docs = es.docs(DEFAULT_STREAM);
    assert_eq!(docs.len(), 1);
    let doc = &docs[0];
    assert_eq!(
        instant(&doc["@timestamp"]),
        "2003-10-11T22:14:15.003Z".parse::<DateTime<Utc>>().unwrap()
    );
    assert_eq!(doc["message"], "An application event log entry");
    assert_eq!(doc["host"]["name"], "mymachine.example.com");
    let syslog = &doc["log"]["syslog"];
    assert_eq!(syslog["facility"]["name"], "local4", "{doc}");
    assert_eq!(syslog["severity"]["name"], "notice");
    assert_eq!(syslog["appname"], "evntslog");
    assert_eq!(syslog["procid"], "1234");
    assert_eq!(syslog["msgid"], "ID47");
    let sd = &syslog["structured_data"]["exampleSDID@32473"];
    assert_eq!(
        (&sd["iut"], &sd["eventSource"], &sd["eventID"]),
        (&"3".into(), &"Application".into(), &"1011".into())
    );
    // Nested objects, not dotted keys; and not the sluice names as well.
    assert!(doc.get("host.name").is_none() && doc.get("log.syslog.appname").is_none());
    for sluice_name in ["hostname", "app_name", "structured_data"] {
        assert!(doc.get(sluice_name).is_none(), "{sluice_name} in {doc}");
    }
}

#[test]
fn the_disk_queue_delivers_across_a_restart() {
    let es = EsServer::start();
    es.down();
    let state = tempfile::tempdir().unwrap();
    let config = config(
        &es.url(),
        "id = \"hash\"\nqueue = { kind = \"disk\", max_size = \"100MiB\" }",
    )
    .replace("{dir}/state", state.path().to_str().unwrap());
    let mut d = TestDaemon::start(&config);
    send(&d, 1000);
    wait_until("1000 in the disk queue", DEADLINE, || {
        counter(&d, "queue_depth") == 1000
    });
    assert!(counter(&d, "retries") >= 1, "connection refused is retried");
    d.stop();
    assert_eq!(counter(&d, "written"), 0);

    es.up();
    let d = TestDaemon::start(&config);
    wait_written(&d, 1000);
    wait_settled(&d);
    assert_exactly_once(&stored(&es, DEFAULT_STREAM), 1000);
    assert_eq!(counter(&d, "written"), 1000);
}

/// A file holding `content`, in a temporary directory kept alive by the returned guard.
fn secret_file(content: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, content).unwrap();
    (dir, path.display().to_string())
}

#[test]
fn gzip_basic_auth_and_headers_as_the_http_output() {
    let (_dir, password) = secret_file("s3cret\n");
    let es = EsServer::start();
    let d = daemon(
        &es,
        &format!(
            r#"compression = "gzip"
headers = {{ "X-Opaque-Id" = "sluice" }}
auth = {{ kind = "basic", user = "elastic", password_file = "{password}" }}"#
        ),
    );
    send(&d, 300);
    wait_written(&d, 300);
    assert_exactly_once(&stored(&es, DEFAULT_STREAM), 300);
    let bulks: Vec<_> = es
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/_bulk"))
        .collect();
    let wire: usize = bulks.iter().map(|r| r.wire_len).sum();
    let plain: usize = bulks.iter().map(|r| r.body.len()).sum();
    assert!(wire < plain / 2, "compressed: {wire} bytes for {plain}");
    for r in &bulks {
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        // base64("elastic:s3cret")
        assert_eq!(
            r.header("authorization"),
            Some("Basic ZWxhc3RpYzpzM2NyZXQ=")
        );
        assert_eq!(r.header("x-opaque-id"), Some("sluice"));
    }
}

/// `--check-config` on an elasticsearch output to `url` with `keys`: the exit code and the
/// error line naming one of `keys_named` (the whole stderr in the panic if none does).
fn config_error(url: &str, keys: &str, keys_named: &[&str]) -> (Option<i32>, String) {
    let (code, err, _) = check_config(&pipeline(url, keys));
    let line = err
        .lines()
        .find(|l| keys_named.iter().any(|k| l.contains(&format!("{k}:"))))
        .unwrap_or_else(|| panic!("no error at {keys_named:?}:\n{err}"))
        .to_string();
    (code, line)
}

#[test]
fn check_config_names_the_bad_key() {
    const URL: &str = "http://127.0.0.1:9";
    let (code, line) = config_error(
        URL,
        "data_stream = \"logs-a-b\"\nindex = \"syslog-{year}.{month}.{day}\"",
        &["output.es.index", "output.es.data_stream"],
    );
    assert_eq!(code, Some(78));
    assert!(
        line.contains("index") && line.contains("data_stream"),
        "{line}"
    );

    let (code, line) = config_error("ftp://x", "", &["output.es.url"]);
    assert_eq!(code, Some(78));
    assert!(line.to_lowercase().contains("scheme"), "{line}");

    let (code, line) = config_error(URL, "id = \"uuid\"", &["output.es.id"]);
    assert_eq!(code, Some(78));
    assert!(line.contains("hash") && line.contains("none"), "{line}");

    // And a good one passes.
    let (code, err, _) = check_config(&pipeline(
        URL,
        "index = \"syslog-{year}.{month}.{day}\"\nid = \"hash\"\necs = true",
    ));
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn a_store_outage_of_60_s_under_load_loses_nothing() {
    let es = EsServer::start();
    let d = daemon(&es, "id = \"hash\"\ntimeout = \"2s\"");
    // 30,000 messages at 500 a second: the store is down for the last 58 s of the load.
    let sender = paced_tcp(d.addr("tcp"), 30_000, 500);
    wait_until("the first 1000 written", DELIVERY, || {
        counter(&d, "written") >= 1000
    });
    es.down();
    sender.join().unwrap();
    assert!(
        counter(&d, "queue_depth") > 20_000,
        "the backlog held the outage"
    );
    es.up();
    wait_until("every event written", Duration::from_secs(120), || {
        counter(&d, "written") >= 30_000
    });
    wait_settled(&d);
    assert_exactly_once(&stored(&es, DEFAULT_STREAM), 30_000);
    assert!(counter(&d, "retries") >= 1);
    assert_eq!(counter(&d, "rejected"), 0);
}

/// The output's keys for the in-flight tests: hashed ids, 3 requests in flight of 20 events.
const IN_FLIGHT: &str = "id = \"hash\"\nmax_in_flight = 3\nbatch = { max_events = 20 }";

/// With the server holding every request, answers the newest held request first each time
/// every request the daemon sent (`sent()`, its `requests` counter) has arrived and is held or
/// answered, until `done()`. Returns how many times a request was answered while an older one
/// was still held, and the most requests the daemon had in flight at such a time.
fn answer_newest_first(es: &EsServer, d: &TestDaemon, n: usize) -> (usize, usize) {
    let sent = || counter(d, "requests") as usize;
    let in_flight = || counter(d, "requests_in_flight") as usize;
    let done = || es.doc_count() >= n;
    let (mut overtaken, mut most) = (0, 0);
    wait_until("every document stored", DELIVERY, || {
        let held = es.http().held();
        if let Some(&newest) = held.last()
            && es.http().received() == sent()
            && es.http().active() == held.len()
        {
            most = most.max(in_flight());
            if held.len() > 1 {
                overtaken += 1;
            }
            es.http().release(newest);
        }
        done()
    });
    (overtaken, most)
}

#[test]
fn requests_in_flight_are_bounded_and_answered_in_any_order() {
    const N: usize = 600;
    let es = EsServer::start();
    es.http().hold(true);
    let d = daemon(&es, IN_FLIGHT);
    send(&d, N);
    let (overtaken, most) = answer_newest_first(&es, &d, N);
    wait_written(&d, N as u64);
    wait_settled(&d);
    assert_exactly_once(&stored(&es, DEFAULT_STREAM), N);
    // Nothing failed, so nothing was sent twice.
    assert!(sent_counts(&es).values().all(|&c| c == 1));
    assert_eq!(es.items_answered(409), 0);
    let peak = es.http().peak_concurrent();
    assert!((2..=3).contains(&peak), "{peak} requests at once");
    assert!((2..=3).contains(&most), "requests_in_flight was {most}");
    assert!(overtaken > 0, "no request was answered before an older one");
    assert_eq!(counter(&d, "requests_in_flight"), 0);
    assert_eq!(counter(&d, "in_flight"), 0);
}

#[test]
fn a_request_refused_for_now_is_sent_again_alone_while_later_ones_were_taken() {
    const N: usize = 200;
    let es = EsServer::start();
    es.down();
    // The request carrying the oldest events is answered 503 once; the two in flight beside
    // it are stored.
    let refused = std::sync::atomic::AtomicBool::new(false);
    es.set_requests(move |rec, _| {
        let oldest = rec.complete && String::from_utf8_lossy(&rec.body).contains("msgnum:00000000");
        if oldest && !refused.swap(true, std::sync::atomic::Ordering::SeqCst) {
            Fate::Refuse(unavailable())
        } else {
            Fate::Apply
        }
    });
    let d = daemon(&es, IN_FLIGHT);
    send(&d, N);
    wait_until("every event queued", DEADLINE, || {
        counter(&d, "queue_depth") == N as u64
    });
    es.http().hold(true);
    es.up();
    answer_newest_first(&es, &d, N);
    wait_written(&d, N as u64);
    wait_settled(&d);
    assert_exactly_once(&stored(&es, DEFAULT_STREAM), N);
    // Only the refused request's 20 events went twice: the stored ones after it were carried,
    // not sent again (no 409).
    for (n, c) in sent_counts(&es) {
        assert_eq!(c, if n < 20 { 2 } else { 1 }, "msgnum {n}");
    }
    assert_eq!(es.items_answered(409), 0);
    assert_eq!(es.http().answered(503), 1);
}

#[test]
fn a_kill_with_requests_in_flight_loses_nothing_from_the_disk_queue() {
    const N: usize = 100;
    let es = EsServer::start();
    es.down();
    let toml = format!(
        "[daemon]\nstate_dir = \"{{dir}}/state\"\nmetrics_address = \"127.0.0.1:0\"\n\n{}",
        pipeline(
            &es.url(),
            &format!("{IN_FLIGHT}\nqueue = {{ kind = \"disk\", fsync = \"every_batch\" }}")
        )
    );
    let (dir, p) = Proc::start_toml(&toml, 2);
    send_lines_to(p.addr("tcp"), (0..N).map(msgnum_line));
    let metrics = p.addr("metrics");
    let series = |name: &str| format!("sluice_output_{name}{{output=\"es\"}}");
    wait_until("every event in the disk queue", DEADLINE, || {
        scrape(metrics, &series("queue_depth")) == N as u64
    });
    // The store comes back holding its answers: a window of three requests goes out.
    es.http().hold(true);
    es.up();
    wait_until("three requests held", DELIVERY, || {
        es.http().held().len() == 3
    });
    assert_eq!(scrape(metrics, &series("requests_in_flight")), 3);
    assert_eq!(scrape(metrics, &series("in_flight")), 60);
    // The newest is stored and answered; the two before it are not when sluice dies.
    let held = es.http().held();
    es.http().release(held[2]);
    wait_until("the newest request stored", DEADLINE, || {
        es.doc_count() == 20
    });
    p.signal(libc::SIGKILL);
    drop(p);
    // Its held requests die with their connections, unapplied.
    es.down();
    es.http().hold(false);
    es.up();
    assert_eq!(es.doc_count(), 20);

    let _p = Proc::start(Some(&dir.path().join("sluice.toml")), 2);
    wait_until("every document stored", DELIVERY, || es.doc_count() >= N);
    assert_exactly_once(&stored(&es, DEFAULT_STREAM), N);
    // The batch stored before the kill was sent again, and its 409s counted as stored.
    assert_eq!(es.items_answered(409), 20);
}
