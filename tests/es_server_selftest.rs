//! The Elasticsearch stand-in of the `elasticsearch` output's tests (support/es_server.rs),
//! checked with a raw HTTP/1.1 client: its bulk answers as the Elasticsearch reference
//! documents them (item per action, in order, under the action's name; `errors`; 201/409/400
//! items; the data stream rule), what it stores, and its scripted failures.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

use crate::http_server_selftest::{Resp, gzip, read_response, request};
use crate::support::DEADLINE;
use crate::support::es_server::{EsServer, Fate, Op, too_many_requests, unavailable};
use crate::support::http_server::Reply;

const NDJSON: (&str, &str) = ("Content-Type", "application/x-ndjson");

/// An NDJSON body from lines (each ends with a newline).
fn ndjson(lines: &[Value]) -> Vec<u8> {
    let mut b = Vec::new();
    for l in lines {
        b.extend_from_slice(l.to_string().as_bytes());
        b.push(b'\n');
    }
    b
}

/// POSTs `body` to `path` with `headers` on a fresh connection.
fn post_with(es: &EsServer, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = TcpStream::connect(es.addr()).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(&request("POST", path, headers, body)).unwrap();
    read_response(&mut s).unwrap()
}

/// POSTs NDJSON lines to /_bulk; returns the status and the parsed answer.
fn bulk(es: &EsServer, lines: &[Value]) -> (u16, Value) {
    let r = post_with(es, "/_bulk", &[NDJSON], &ndjson(lines));
    (r.status, json_body(&r))
}

fn json_body(r: &Resp) -> Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&r.body)))
}

/// Each item of a bulk answer as (action name, its object).
fn items(answer: &Value) -> Vec<(String, Value)> {
    answer["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            let o = i.as_object().unwrap();
            assert_eq!(o.len(), 1, "one key per item: {i}");
            let (k, v) = o.iter().next().unwrap();
            (k.clone(), v.clone())
        })
        .collect()
}

fn statuses(answer: &Value) -> Vec<u64> {
    items(answer)
        .iter()
        .map(|(_, v)| v["status"].as_u64().unwrap())
        .collect()
}

#[test]
fn created_items_come_back_in_order_under_their_action_and_are_stored() {
    let es = EsServer::start();
    let (status, answer) = bulk(
        &es,
        &[
            json!({"create": {"_index": "app", "_id": "a"}}),
            json!({"n": 1}),
            json!({"index": {"_index": "app"}}),
            json!({"n": 2}),
            json!({"create": {"_index": "other"}}),
            json!({"n": 3}),
            json!({"index": {"_index": "app", "_id": "b"}}),
            json!({"n": 4}),
        ],
    );
    assert_eq!(status, 200);
    assert_eq!(answer["errors"], false);
    assert!(answer["took"].is_u64());
    let items = items(&answer);
    let names: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["create", "index", "create", "index"]);
    for (_, it) in &items {
        assert_eq!(
            (it["status"].as_u64(), it["result"].as_str()),
            (Some(201), Some("created"))
        );
        assert_eq!(it["_version"], 1);
        assert!(it["_seq_no"].is_u64() && it["_primary_term"].is_u64());
        assert_eq!(it["_shards"]["failed"], 0);
        assert!(it.get("error").is_none());
    }
    assert_eq!(items[0].1["_id"], "a");
    assert_eq!(items[0].1["_index"], "app");
    assert_eq!(items[2].1["_index"], "other");
    let generated = items[1].1["_id"].as_str().unwrap();
    assert_eq!(generated.len(), 20);
    assert_ne!(generated, items[2].1["_id"].as_str().unwrap());

    assert_eq!(es.indices(), ["app", "other"]);
    assert_eq!(
        es.docs("app"),
        [json!({"n": 1}), json!({"n": 2}), json!({"n": 4})]
    );
    let ids: Vec<String> = es
        .docs_with_ids("app")
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    assert_eq!(ids, ["a", generated, "b"]);
    assert_eq!(es.all_docs().len(), 4);
    assert_eq!(es.doc_count(), 4);
    let b = &es.bulks()[0];
    assert!(b.applied && b.status == Some(200));
    assert_eq!(b.items[1].op, Op::Index);
    assert_eq!(b.items[1].id, None);
    assert_eq!(b.items[3].status, Some(201));
}

#[test]
fn a_duplicate_create_is_a_409_and_index_overwrites() {
    let es = EsServer::start();
    let (_, first) = bulk(
        &es,
        &[
            json!({"create": {"_index": "app", "_id": "x"}}),
            json!({"v": 1}),
        ],
    );
    assert_eq!(first["errors"], false);
    let (status, answer) = bulk(
        &es,
        &[
            json!({"create": {"_index": "app", "_id": "x"}}),
            json!({"v": 2}),
            json!({"create": {"_index": "app", "_id": "y"}}),
            json!({"v": 3}),
            json!({"index": {"_index": "app", "_id": "x"}}),
            json!({"v": 4}),
            json!({"index": {"_index": "app", "_id": "z", "op_type": "create"}}),
            json!({"v": 5}),
            json!({"delete": {"_index": "app", "_id": "y"}}),
            json!({"delete": {"_index": "app", "_id": "nope"}}),
        ],
    );
    // The bulk request itself succeeds; the conflict is in its item.
    assert_eq!(status, 200);
    assert_eq!(answer["errors"], true);
    assert_eq!(statuses(&answer), [409, 201, 200, 201, 200, 404]);
    let items = items(&answer);
    let conflict = &items[0].1;
    assert_eq!(conflict["_id"], "x");
    assert_eq!(
        conflict["error"]["type"],
        "version_conflict_engine_exception"
    );
    assert!(
        conflict["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("document already exists")
    );
    assert_eq!(
        (
            items[2].1["result"].as_str(),
            items[2].1["_version"].as_u64()
        ),
        (Some("updated"), Some(2))
    );
    assert_eq!(
        items[3].0, "create",
        "an index action with op_type create is a create"
    );
    assert_eq!(items[4].1["result"], "deleted");
    assert_eq!(items[5].1["result"], "not_found");
    assert!(items[5].1.get("error").is_none(), "not_found is no error");
    assert_eq!(es.docs("app"), [json!({"v": 4}), json!({"v": 5})]);
    assert_eq!(es.items_answered(409), 1);
}

#[test]
fn a_data_stream_takes_only_create_and_needs_a_timestamp() {
    let es = EsServer::start();
    let ts = "2024-03-01T10:00:00.000Z";
    let (status, answer) = bulk(
        &es,
        &[
            json!({"index": {"_index": "logs-app-default"}}),
            json!({"@timestamp": ts, "n": 1}),
            json!({"create": {"_index": "logs-app-default"}}),
            json!({"@timestamp": ts, "n": 2}),
            json!({"create": {"_index": "logs-app-default", "_id": "h1"}}),
            json!({"n": 3}),
            json!({"create": {"_index": "logs-app-default"}}),
            json!({"@timestamp": "yesterday", "n": 4}),
            // Not a data stream name: any op.
            json!({"index": {"_index": "logs-plain"}}),
            json!({"n": 5}),
        ],
    );
    assert_eq!(status, 200);
    assert_eq!(answer["errors"], true);
    assert_eq!(statuses(&answer), [400, 201, 400, 400, 201]);
    let items = items(&answer);
    let refused = &items[0].1["error"];
    assert_eq!(refused["type"], "illegal_argument_exception");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("only write ops with an op_type of create are allowed in data streams")
    );
    // Items name the backing index.
    let backing = items[1].1["_index"].as_str().unwrap();
    assert!(
        backing.starts_with(".ds-logs-app-default-") && backing.ends_with("-000001"),
        "{backing}"
    );
    for i in [2, 3] {
        assert_eq!(items[i].1["error"]["type"], "document_parsing_exception");
    }
    assert!(
        items[2].1["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("[@timestamp] is missing")
    );
    assert_eq!(
        es.docs("logs-app-default"),
        [json!({"@timestamp": ts, "n": 2})]
    );
    assert_eq!(es.docs("logs-plain").len(), 1);

    // The patterns are configurable.
    es.set_data_streams(&["audit"]);
    let (_, answer) = bulk(
        &es,
        &[
            json!({"index": {"_index": "audit"}}),
            json!({"@timestamp": ts}),
            json!({"index": {"_index": "logs-x-y"}}),
            json!({"@timestamp": ts}),
        ],
    );
    assert_eq!(statuses(&answer), [400, 201]);
}

#[test]
fn mixed_item_failures_set_errors_and_keep_the_order() {
    let es = EsServer::start();
    es.set_mapping(|_, doc| {
        (doc["level"] == "bad").then(|| "failed to parse field [level] of type [long]".into())
    });
    // Every source with "busy" is refused with 429 the first time it is seen, then stored.
    es.set_items(|it| (it.seen == 0 && it.doc.is_some_and(|d| d["busy"] == true)).then_some(429));
    let lines = [
        json!({"create": {"_index": "app"}}),
        json!({"n": 0}),
        json!({"create": {"_index": "app"}}),
        json!(["not", "an", "object"]),
        json!({"create": {"_index": "app"}}),
        json!({"n": 2, "level": "bad"}),
        json!({"create": {"_index": "app"}}),
        json!({"n": 3, "busy": true}),
        json!({"create": {"_index": "Upper"}}),
        json!({"n": 4}),
        json!({"update": {"_index": "app", "_id": "a"}}),
        json!({"doc": {"n": 5}}),
        json!({"create": {"_index": "app"}}),
        json!({"n": 6}),
    ];
    let (status, answer) = bulk(&es, &lines);
    assert_eq!(status, 200);
    assert_eq!(answer["errors"], true);
    assert_eq!(statuses(&answer), [201, 400, 400, 429, 400, 400, 201]);
    let items = items(&answer);
    let kinds: Vec<&str> = items
        .iter()
        .map(|(_, v)| v["error"]["type"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(
        kinds,
        [
            "-",
            "document_parsing_exception",
            "document_parsing_exception",
            "es_rejected_execution_exception",
            "invalid_index_name_exception",
            "illegal_argument_exception",
            "-"
        ]
    );
    assert!(
        items[2].1["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("[level]")
    );
    assert_eq!(es.docs("app"), [json!({"n": 0}), json!({"n": 6})]);

    // The same 429 item again: seen once already, stored now; errors false.
    let (_, again) = bulk(&es, &lines[6..8]);
    assert_eq!(
        (again["errors"].as_bool(), statuses(&again)),
        (Some(false), vec![201])
    );
    assert_eq!(es.docs("app").len(), 3);
    assert_eq!(es.items_answered(429), 1);
}

#[test]
fn whole_request_rules_path_index_gzip_and_get_root() {
    let es = EsServer::start();
    let body = ndjson(&[json!({"create": {}}), json!({"n": 1})]);
    // The index from the path.
    let r = post_with(
        &es,
        "/from-path/_bulk?filter_path=items.*.error",
        &[NDJSON],
        &body,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-elastic-product"), Some("Elasticsearch"));
    assert_eq!(es.docs("from-path").len(), 1);
    // No index anywhere: a 400 for the whole request.
    let r = post_with(&es, "/_bulk", &[NDJSON], &body);
    assert_eq!(r.status, 400);
    assert_eq!(
        json_body(&r)["error"]["type"],
        "action_request_validation_exception"
    );
    // The last line without its newline.
    let lines = b"{\"create\":{\"_index\":\"a\"}}\n{\"n\":1}";
    let r = post_with(&es, "/_bulk", &[NDJSON], lines);
    assert_eq!(r.status, 400);
    assert!(
        json_body(&r)["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("terminated by a newline")
    );
    // A Content-Type it does not take.
    let ok = ndjson(&[json!({"create": {"_index": "a"}}), json!({"n": 1})]);
    let r = post_with(&es, "/_bulk", &[("Content-Type", "text/plain")], &ok);
    assert_eq!(r.status, 406);
    // An unknown action, an unknown parameter: the whole request refused, nothing stored.
    for bad in [
        json!({"upsert": {"_index": "a"}}),
        json!({"create": {"_index": "a", "_type": "_doc"}}),
    ] {
        let r = post_with(&es, "/_bulk", &[NDJSON], &ndjson(&[bad, json!({"n": 1})]));
        assert_eq!(r.status, 400);
    }
    assert!(es.docs("a").is_empty());
    // CRLF lines, gzip, application/json.
    let crlf = b"{\"create\":{\"_index\":\"a\"}}\r\n{\"n\":2}\r\n";
    let r = post_with(
        &es,
        "/_bulk",
        &[
            ("Content-Type", "application/json; charset=UTF-8"),
            ("Content-Encoding", "gzip"),
        ],
        &gzip(crlf),
    );
    assert_eq!(r.status, 200);
    assert_eq!(es.docs("a"), [json!({"n": 2})]);
    // The cluster info clients ask for first.
    let mut s = TcpStream::connect(es.addr()).unwrap();
    s.write_all(&request("GET", "/", &[], b"")).unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 200);
    assert!(
        json_body(&r)["version"]["number"]
            .as_str()
            .unwrap()
            .starts_with("8.")
    );
}

#[test]
fn scripted_whole_request_failures() {
    let es = EsServer::start();
    es.set_max_body(Some(200));
    es.set_requests(|_, bulk| match bulk {
        0 => Fate::Refuse(too_many_requests(Some(2))),
        1 => Fate::Refuse(unavailable()),
        2 => Fate::ApplyThen(unavailable()),
        3 => Fate::ApplyThen(Reply::Reset),
        4 => Fate::Refuse(Reply::Reset),
        _ => Fate::Apply,
    });
    let doc = |n: u64| {
        ndjson(&[
            json!({"create": {"_index": "app", "_id": n.to_string()}}),
            json!({"n": n}),
        ])
    };

    let r = post_with(&es, "/_bulk", &[NDJSON], &doc(0));
    assert_eq!((r.status, r.header("retry-after")), (429, Some("2")));
    assert_eq!(
        json_body(&r)["error"]["type"],
        "es_rejected_execution_exception"
    );
    let r = post_with(&es, "/_bulk", &[NDJSON], &doc(1));
    assert_eq!(r.status, 503);
    assert!(es.docs("app").is_empty(), "refused requests store nothing");

    // Applied, then a 503: stored although the client saw a failure.
    let r = post_with(&es, "/_bulk", &[NDJSON], &doc(2));
    assert_eq!(r.status, 503);
    assert_eq!(es.docs("app"), [json!({"n": 2})]);

    // Applied, then reset: the client sees no answer.
    let mut s = TcpStream::connect(es.addr()).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(&request("POST", "/_bulk", &[NDJSON], &doc(3)))
        .unwrap();
    let e = read_response(&mut s).expect_err("no answer");
    assert!(
        matches!(
            e.kind(),
            ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof
        ),
        "{e}"
    );
    assert_eq!(es.docs("app").len(), 2);

    // Refused with a reset: not applied.
    let mut s = TcpStream::connect(es.addr()).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(&request("POST", "/_bulk", &[NDJSON], &doc(4)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert!(
        s.read(&mut buf)
            .is_err_and(|e| e.kind() == ErrorKind::ConnectionReset)
    );
    assert_eq!(es.docs("app").len(), 2);

    // Over the size limit: 413, whatever the script says.
    let mut big = doc(5);
    big.extend(ndjson(&[
        json!({"create": {"_index": "app"}}),
        json!({"pad": "x".repeat(200)}),
    ]));
    assert_eq!(post_with(&es, "/_bulk", &[NDJSON], &big).status, 413);
    // The retry of the lost one: a 409, the document stored once.
    let (status, answer) = bulk(
        &es,
        &[
            json!({"create": {"_index": "app", "_id": "3"}}),
            json!({"n": 3}),
        ],
    );
    assert_eq!((status, statuses(&answer)), (200, vec![409]));
    assert_eq!(es.docs("app"), [json!({"n": 2}), json!({"n": 3})]);

    let bulks = es.bulks();
    let seen: Vec<(usize, Option<u16>, bool)> = bulks
        .iter()
        .map(|b| (b.bulk, b.status, b.applied))
        .collect();
    assert_eq!(
        seen,
        [
            (0, Some(429), false),
            (1, Some(503), false),
            (2, Some(503), true),
            (3, None, true),
            (5, Some(413), false),
            (6, Some(200), true),
        ],
        "a request cut mid-body (4) is never parsed"
    );
}

#[test]
fn a_hung_bulk_never_answers() {
    let es = EsServer::start();
    es.set_requests(|_, _| Fate::ApplyThen(Reply::Hang));
    let mut s = TcpStream::connect(es.addr()).unwrap();
    let body = ndjson(&[json!({"create": {"_index": "app"}}), json!({"n": 1})]);
    s.write_all(&request("POST", "/_bulk", &[NDJSON], &body))
        .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 16];
    let e = s.read(&mut buf).expect_err("no answer");
    assert!(
        matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{e}"
    );
    assert_eq!(es.docs("app").len(), 1, "applied all the same");
}
