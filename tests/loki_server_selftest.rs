//! The in-memory Loki (support/loki_server.rs) checked on its own, with a raw client written
//! here: a protobuf encoder of Loki's PushRequest (independent of the server's decoder), snappy
//! block compression, and HTTP/1.1 over a plain socket.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::support::http_server::Reply;
use crate::support::loki_server::{
    Encoding, Fate, LokiServer, PUSH_PATH, parse_labels, rate_limited,
};

/// One entry to push: nanoseconds, line, structured metadata.
type Ent<'a> = (i64, &'a str, &'a [(&'a str, &'a str)]);

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag(out: &mut Vec<u8>, field: u64, wire: u64) {
    varint(out, (field << 3) | wire);
}

fn bytes_field(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    tag(out, field, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn varint_field(out: &mut Vec<u8>, field: u64, v: u64) {
    tag(out, field, 0);
    varint(out, v);
}

/// `logproto.PushRequest`, with an unknown field in each message to be skipped.
fn encode_push(streams: &[(&str, &[Ent])]) -> Vec<u8> {
    let mut req = Vec::new();
    for (labels, entries) in streams {
        let mut s = Vec::new();
        bytes_field(&mut s, 1, labels.as_bytes());
        for (ts, line, meta) in *entries {
            let mut e = Vec::new();
            let mut t = Vec::new();
            varint_field(&mut t, 1, (ts / 1_000_000_000) as u64);
            varint_field(&mut t, 2, (ts % 1_000_000_000) as u64);
            bytes_field(&mut e, 1, &t);
            bytes_field(&mut e, 2, line.as_bytes());
            for (k, v) in *meta {
                let mut p = Vec::new();
                bytes_field(&mut p, 1, k.as_bytes());
                bytes_field(&mut p, 2, v.as_bytes());
                bytes_field(&mut e, 3, &p);
            }
            // An unknown fixed32 field.
            tag(&mut e, 9, 5);
            e.extend_from_slice(&[1, 2, 3, 4]);
            bytes_field(&mut s, 2, &e);
        }
        varint_field(&mut s, 3, 0xdead_beef);
        bytes_field(&mut req, 1, &s);
    }
    // PushRequest.format (string, field 2) of newer Loki versions: unknown here, skipped.
    bytes_field(&mut req, 2, b"loki");
    req
}

fn snappy(raw: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(raw).unwrap()
}

/// A POST over a fresh connection: (status, body).
fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {resp:?}"));
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn push_proto(
    loki: &LokiServer,
    headers: &[(&str, &str)],
    streams: &[(&str, &[Ent])],
) -> (u16, String) {
    let mut h = vec![("Content-Type", "application/x-protobuf")];
    h.extend_from_slice(headers);
    post(loki.addr(), PUSH_PATH, &h, &snappy(&encode_push(streams)))
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const SEC: i64 = 1_000_000_000;
/// 2024-03-01T10:00:00Z.
const T0: i64 = 1_709_287_200 * SEC;

#[test]
fn a_protobuf_snappy_push_is_decoded_and_answered_204() {
    let loki = LokiServer::start();
    let (status, body) = push_proto(
        &loki,
        &[],
        &[
            (
                r#"{hostname="web1", app_name="sshd"}"#,
                &[
                    (T0 + 1, "first", &[("procid", "42"), ("msgid", "ID7")]),
                    (T0 + 2, "second \u{e9}", &[]),
                ],
            ),
            (
                r#"{app_name="cron",hostname="web\"2\\"}"#,
                &[(T0 + 123_456_789, "third", &[])],
            ),
        ],
    );
    assert_eq!((status, body.as_str()), (204, ""));
    let streams = loki.streams();
    assert_eq!(streams.len(), 2);
    let (labels, tenant, entries) = &streams[0];
    assert_eq!(labels, &map(&[("app_name", "sshd"), ("hostname", "web1")]));
    assert_eq!(tenant, &None);
    assert_eq!(entries.len(), 2);
    assert_eq!(
        (entries[0].ts_ns, entries[0].line.as_str()),
        (T0 + 1, "first")
    );
    assert_eq!(
        entries[0].metadata,
        map(&[("msgid", "ID7"), ("procid", "42")])
    );
    assert_eq!(entries[1].line, "second \u{e9}");
    assert!(entries[1].metadata.is_empty());
    assert_eq!(
        streams[1].0,
        map(&[("app_name", "cron"), ("hostname", "web\"2\\")])
    );
    assert_eq!(streams[1].2[0].ts_ns, T0 + 123_456_789);
    assert_eq!(loki.entry_count(), 3);
    assert_eq!(loki.label_sets(), 2);
    let pushes = loki.pushes();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].encoding, Some(Encoding::Protobuf));
    assert_eq!((pushes[0].status, pushes[0].ignored), (Some(204), 0));

    // The same labels in another order are the same stream; a duplicate entry is dropped.
    let (status, _) = push_proto(
        &loki,
        &[],
        &[(
            r#"{ app_name = "sshd" , hostname = "web1" }"#,
            &[(T0 + 2, "second \u{e9}", &[]), (T0 + 3, "fourth", &[])],
        )],
    );
    assert_eq!(status, 204);
    assert_eq!(loki.streams().len(), 2);
    assert_eq!(loki.streams()[0].2.len(), 3);
    assert_eq!(loki.duplicates(), 1);
}

#[test]
fn a_bad_body_is_refused_whole() {
    let loki = LokiServer::start();
    // Not snappy.
    let (status, body) = post(
        loki.addr(),
        PUSH_PATH,
        &[("Content-Type", "application/x-protobuf")],
        b"\xff\xff\xff\xff\xff\xff",
    );
    assert_eq!(status, 400, "{body}");
    // Snappy, but a truncated message.
    let mut raw = encode_push(&[(r#"{a="b"}"#, &[(T0, "x", &[])])]);
    raw.truncate(raw.len() - 9);
    let (status, body) = post(
        loki.addr(),
        PUSH_PATH,
        &[("Content-Type", "application/x-protobuf")],
        &snappy(&raw),
    );
    assert_eq!(status, 400, "{body}");
    // The framed snappy format is not the block format Loki takes.
    let mut framed = Vec::new();
    snap::write::FrameEncoder::new(&mut framed)
        .write_all(&encode_push(&[(r#"{a="b"}"#, &[(T0, "x", &[])])]))
        .unwrap();
    let (status, _) = post(
        loki.addr(),
        PUSH_PATH,
        &[("Content-Type", "application/x-protobuf")],
        &framed,
    );
    assert_eq!(status, 400);
    let (status, _) = post(
        loki.addr(),
        PUSH_PATH,
        &[("Content-Type", "text/plain")],
        b"x",
    );
    assert_eq!(status, 415);
    let (status, _) = post(loki.addr(), "/loki/api/v1/other", &[], b"");
    assert_eq!(status, 404);
    assert_eq!(loki.entry_count(), 0);
}

#[test]
fn invalid_entries_are_ignored_the_rest_stored_and_counted_in_the_answer() {
    let loki = LokiServer::start();
    loki.set_window(Duration::from_secs(60));
    loki.set_max_line_size(Some(20));
    // A stream starts at T0 + 1 h.
    let newest = T0 + 3600 * SEC;
    assert_eq!(
        push_proto(&loki, &[], &[(r#"{host="a"}"#, &[(newest, "start", &[])])]).0,
        204
    );
    let long = "x".repeat(21);
    let too_many = (0..16)
        .map(|i| format!("l{i}=\"v\""))
        .collect::<Vec<_>>()
        .join(",");
    let too_many = format!("{{{too_many}}}");
    let (status, body) = push_proto(
        &loki,
        &[],
        &[
            (
                r#"{host="a"}"#,
                &[
                    (newest - 30 * SEC, "in the window", &[]),
                    (T0, "too old", &[]),
                    (newest + SEC, &long, &[]),
                    (newest + 2 * SEC, "ok", &[]),
                    (T0 + SEC, "too old too", &[]),
                ],
            ),
            // Refused whole: 16 label names.
            (&too_many, &[(newest, "a", &[]), (newest, "b", &[])]),
            // Does not parse.
            (r#"{host=unquoted}"#, &[(newest, "c", &[])]),
            (r#"{host="b"}"#, &[(T0, "b, its own window", &[])]),
        ],
    );
    assert_eq!(status, 400, "{body}");
    let lines: Vec<&str> = body.trim_end().lines().collect();
    assert_eq!(lines.last(), Some(&"total ignored: 6 out of 9"), "{body}");
    assert_eq!(lines.len(), 7);
    assert!(
        lines[0].starts_with("entry with timestamp 2024-03-01 10:00:00 +0000 UTC ignored, reason: 'entry too far behind, entry timestamp is: 2024-03-01T10:00:00Z, oldest acceptable timestamp is: 2024-03-01T10:59:00Z'"),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("Max entry size '20' bytes exceeded"));
    assert!(
        lines[3].contains("has 16 label names; limit 15"),
        "{}",
        lines[3]
    );
    assert!(lines[5].contains("error parsing labels"), "{}", lines[5]);

    let streams = loki.streams();
    let lines_of = |host: &str| -> Vec<String> {
        streams
            .iter()
            .find(|s| s.0.get("host").map(String::as_str) == Some(host))
            .unwrap()
            .2
            .iter()
            .map(|e| e.line.clone())
            .collect()
    };
    assert_eq!(lines_of("a"), ["start", "in the window", "ok"]);
    assert_eq!(lines_of("b"), ["b, its own window"]);
    assert_eq!(loki.ignored(), 6);
    assert_eq!(loki.pushes()[1].reasons.len(), 6);

    // At most 10 entries are listed; the total counts them all.
    let old: Vec<Ent> = (0..25).map(|i| (T0 + i, "old", &[][..])).collect();
    let (status, body) = push_proto(&loki, &[], &[(r#"{host="a"}"#, &old)]);
    assert_eq!(status, 400);
    assert_eq!(body.trim_end().lines().count(), 11);
    assert!(body.trim_end().ends_with("total ignored: 25 out of 25"));
}

#[test]
fn out_of_order_is_refused_only_with_unordered_writes_off() {
    let loki = LokiServer::start();
    let s = r#"{app_name="x"}"#;
    let entries: &[Ent] = &[(T0 + 10, "b", &[]), (T0 + 5, "a", &[]), (T0 + 10, "c", &[])];
    assert_eq!(push_proto(&loki, &[], &[(s, entries)]).0, 204);
    loki.set_unordered_writes(false);
    let (status, body) = push_proto(&loki, &[], &[(r#"{app_name="y"}"#, entries)]);
    assert_eq!(status, 400);
    assert!(body.contains("reason: 'entry out of order'"), "{body}");
    assert!(
        body.trim_end().ends_with("total ignored: 1 out of 3"),
        "{body}"
    );
    assert_eq!(loki.entry_count(), 5);
}

#[test]
fn a_json_push_gzipped_or_not() {
    let loki = LokiServer::start();
    let body = serde_json::json!({"streams": [{
        "stream": {"hostname": "web1", "app_name": "sshd"},
        "values": [
            [(T0 + 1).to_string(), "plain"],
            [(T0 + 2).to_string(), "with metadata", {"procid": "7"}],
        ],
    }]})
    .to_string();
    let (status, resp) = post(
        loki.addr(),
        PUSH_PATH,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!((status, resp.as_str()), (204, ""));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(
        serde_json::json!({"streams": [{
            "stream": {"hostname": "web1", "app_name": "sshd"},
            "values": [[(T0 + 3).to_string(), "gzipped"]],
        }]})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let (status, _) = post(
        loki.addr(),
        PUSH_PATH,
        &[
            ("Content-Type", "application/json; charset=utf-8"),
            ("Content-Encoding", "gzip"),
        ],
        &gz.finish().unwrap(),
    );
    assert_eq!(status, 204);
    let streams = loki.streams();
    assert_eq!(streams.len(), 1);
    let entries = &streams[0].2;
    assert_eq!(
        entries.iter().map(|e| e.line.as_str()).collect::<Vec<_>>(),
        ["plain", "with metadata", "gzipped"]
    );
    assert_eq!(entries[1].metadata, map(&[("procid", "7")]));
    assert_eq!(entries[2].ts_ns, T0 + 3);
    assert!(
        loki.pushes()
            .iter()
            .all(|p| p.encoding == Some(Encoding::Json))
    );
    // A number where Loki wants a string of nanoseconds.
    let (status, _) = post(
        loki.addr(),
        PUSH_PATH,
        &[("Content-Type", "application/json")],
        br#"{"streams":[{"stream":{"a":"b"},"values":[[1,"x"]]}]}"#,
    );
    assert_eq!(status, 400);
}

#[test]
fn the_tenant_is_recorded_per_stream_and_can_be_required() {
    let loki = LokiServer::start();
    let s = r#"{app_name="x"}"#;
    assert_eq!(
        push_proto(
            &loki,
            &[("X-Scope-OrgID", "team-a")],
            &[(s, &[(T0, "a", &[])])]
        )
        .0,
        204
    );
    assert_eq!(push_proto(&loki, &[], &[(s, &[(T0, "none", &[])])]).0, 204);
    let streams = loki.streams();
    assert_eq!(streams.len(), 2, "a stream per tenant");
    assert_eq!(streams[0].1.as_deref(), Some("team-a"));
    assert_eq!(streams[1].1, None);
    assert_eq!(loki.label_sets(), 1);

    loki.set_require_tenant(true);
    let (status, body) = push_proto(&loki, &[], &[(s, &[(T0 + 1, "refused", &[])])]);
    assert_eq!((status, body.as_str()), (401, "no org id\n"));
    assert_eq!(
        push_proto(
            &loki,
            &[("X-Scope-OrgID", "team-b")],
            &[(s, &[(T0, "b", &[])])]
        )
        .0,
        204
    );
    assert_eq!(loki.entry_count(), 3);
}

#[test]
fn the_request_script_refuses_or_stores_then_fails() {
    let loki = LokiServer::start();
    loki.set_requests(|_, push| match push {
        0 => Fate::Refuse(rate_limited(Some(2))),
        1 => Fate::ApplyThen(Reply::status(503)),
        _ => Fate::Apply,
    });
    let s = r#"{app_name="x"}"#;
    let (status, body) = push_proto(&loki, &[], &[(s, &[(T0, "a", &[])])]);
    assert_eq!(status, 429);
    assert!(body.starts_with("Ingestion rate limit exceeded"), "{body}");
    assert_eq!(loki.entry_count(), 0);
    assert_eq!(loki.requests()[0].status, Some(429));
    assert_eq!(push_proto(&loki, &[], &[(s, &[(T0, "a", &[])])]).0, 503);
    assert_eq!(loki.entry_count(), 1, "stored, though answered 503");
    assert_eq!(push_proto(&loki, &[], &[(s, &[(T0, "a", &[])])]).0, 204);
    assert_eq!((loki.entry_count(), loki.duplicates()), (1, 1));
    let pushes = loki.pushes();
    assert_eq!(
        pushes
            .iter()
            .map(|p| (p.applied, p.status))
            .collect::<Vec<_>>(),
        [(false, Some(429)), (true, Some(503)), (true, Some(204))]
    );
}

#[test]
fn label_selectors_parse_with_escapes() {
    assert_eq!(
        parse_labels(r#"{a="x, y", b_2="q\"uo\\te\n"}"#).unwrap(),
        map(&[("a", "x, y"), ("b_2", "q\"uo\\te\n")])
    );
    for bad in [
        "{}",
        "a=\"b\"",
        "{a=b}",
        "{a=\"b\"",
        "{a=\"b\", a=\"c\"}",
        "{1a=\"b\"}",
        "{a=~\"b\"}",
        "{a=\"\\q\"}",
    ] {
        assert!(parse_labels(bad).is_err(), "{bad} parsed");
    }
}
