//! The test HTTP server of the store outputs' tests (support/http_server.rs), checked with a raw
//! HTTP/1.1 client on std sockets: what it records, and that each scripted answer reaches the
//! client as a store's would, the failures (no answer, RST, connection refused) included.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use crate::support::http_server::{HttpServer, Reply, tls_server_config};
use crate::support::*;

/// A response as read off the wire.
#[derive(Debug)]
pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Resp {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP/1.1 request with `Host` and `Content-Length`.
pub(crate) fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Reads one response (its body by Content-Length).
pub(crate) fn read_response(s: &mut impl Read) -> std::io::Result<Resp> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("EOF after {} bytes of head", head.len()),
            ));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok(Resp {
        status: status.parse().unwrap(),
        headers,
        body,
    })
}

/// Sends one request on `s` and reads its response.
fn exchange(s: &mut TcpStream, req: &[u8]) -> Resp {
    s.write_all(req).unwrap();
    read_response(s).unwrap()
}

fn post(server: &HttpServer, body: &[u8]) -> Resp {
    let mut s = TcpStream::connect(server.addr()).unwrap();
    exchange(&mut s, &request("POST", "/ingest", &[], body))
}

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn records_method_path_headers_and_body_and_answers_200() {
    let server = HttpServer::ok();
    assert!(server.url("/ingest").starts_with("http://127.0.0.1:"));
    let mut s = TcpStream::connect(server.addr()).unwrap();
    let r = exchange(
        &mut s,
        &request(
            "POST",
            "/ingest?pipeline=syslog",
            &[
                ("X-Api-Key", "secret"),
                ("Content-Type", "application/x-ndjson"),
            ],
            b"{\"a\":1}\n",
        ),
    );
    assert_eq!(r.status, 200);
    // A second request on the same (kept-alive) connection.
    let r = exchange(&mut s, &request("PUT", "/other", &[], b"two"));
    assert_eq!(r.status, 200);

    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    let first = &reqs[0];
    assert_eq!(
        (first.n, first.method.as_str(), first.path.as_str()),
        (0, "POST", "/ingest?pipeline=syslog")
    );
    assert_eq!(first.header("x-api-key"), Some("secret"));
    assert_eq!(first.header("Content-Type"), Some("application/x-ndjson"));
    assert_eq!(first.body, b"{\"a\":1}\n");
    assert_eq!(
        (first.wire_len, first.complete, first.status),
        (8, true, Some(200))
    );
    assert_eq!((reqs[1].n, reqs[1].method.as_str()), (1, "PUT"));
    assert_eq!(
        server.stored_bodies(),
        vec![b"{\"a\":1}\n".to_vec(), b"two".to_vec()]
    );
}

#[test]
fn gzip_bodies_are_recorded_gunzipped_and_bad_gzip_is_a_400() {
    let server = HttpServer::ok();
    let text = "line\n".repeat(1000);
    let packed = gzip(text.as_bytes());
    let mut s = TcpStream::connect(server.addr()).unwrap();
    let r = exchange(
        &mut s,
        &request("POST", "/", &[("Content-Encoding", "gzip")], &packed),
    );
    assert_eq!(r.status, 200);
    let r = exchange(
        &mut s,
        &request("POST", "/", &[("Content-Encoding", "gzip")], b"not gzip"),
    );
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("gzip"));

    let reqs = server.requests();
    assert_eq!(reqs[0].body, text.as_bytes());
    assert_eq!(reqs[0].wire_len, packed.len());
    assert_eq!(reqs[1].status, Some(400));
    assert_eq!(server.stored_bodies(), vec![text.into_bytes()]);
}

#[test]
fn scripted_statuses_headers_and_bodies_reach_the_client() {
    const ES_400: &str =
        r#"{"error":{"type":"mapper_parsing_exception","reason":"failed to parse"},"status":400}"#;
    let server = HttpServer::start(|_, n| match n {
        0 => Reply::json(400, ES_400),
        1 => Reply::status(413),
        2 => Reply::retry_after(429, 1),
        3 => Reply::status(500),
        4 => Reply::retry_after(503, 2).header("X-Why", "maintenance"),
        _ => Reply::ok(),
    });
    let r: Vec<Resp> = (0..6)
        .map(|i| post(&server, format!("{i}").as_bytes()))
        .collect();
    let statuses: Vec<u16> = r.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [400, 413, 429, 500, 503, 200]);
    assert_eq!(r[0].body, ES_400.as_bytes());
    assert_eq!(r[0].header("content-type"), Some("application/json"));
    assert_eq!(r[2].header("retry-after"), Some("1"));
    assert_eq!(r[4].header("retry-after"), Some("2"));
    assert_eq!(r[4].header("x-why"), Some("maintenance"));
    // Only the 2xx answer counts as stored.
    assert_eq!(server.stored_bodies(), vec![b"5".to_vec()]);
    assert_eq!(server.answered(413), 1);

    // The script can be replaced at any time; the ranks go on.
    server.set(|r, n| {
        if r.body == b"big" {
            Reply::status(413)
        } else {
            Reply::status(200 + n as u16)
        }
    });
    assert_eq!(post(&server, b"x").status, 206);
    assert_eq!(post(&server, b"big").status, 413);
    server.set_reply(Reply::status(204));
    assert_eq!(post(&server, b"y").status, 204);
    assert_eq!(
        server.stored_bodies(),
        vec![b"5".to_vec(), b"x".to_vec(), b"y".to_vec()]
    );
}

#[test]
fn hang_reads_the_request_and_never_answers_until_the_server_drops() {
    let server = HttpServer::start(|_, _| Reply::Hang);
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.write_all(&request("POST", "/ingest", &[], b"waiting"))
        .unwrap();
    wait_until("the request recorded", DEADLINE, || {
        server.requests().len() == 1
    });
    let rec = &server.requests()[0];
    assert_eq!(
        (rec.body.as_slice(), rec.complete, rec.status),
        (&b"waiting"[..], true, None)
    );
    // No answer, and the connection stays open.
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 16];
    for _ in 0..2 {
        let e = s.read(&mut buf).expect_err("no answer, no EOF");
        assert!(
            matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{e}"
        );
    }
    assert!(server.stored_bodies().is_empty());
    drop(server);
    wait_closed(&mut s, DEADLINE);
}

#[test]
fn reset_with_a_small_body_sends_an_rst_and_no_answer() {
    let server = HttpServer::start(|_, _| Reply::Reset);
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(&request("POST", "/ingest", &[], b"hello"))
        .unwrap();
    // SO_LINGER 0: an RST, not a FIN (a FIN would read as Ok(0)).
    let mut buf = [0u8; 16];
    let e = s.read(&mut buf).expect_err("no answer");
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
    let rec = &server.requests()[0];
    assert_eq!((rec.complete, rec.status), (false, None));
    assert!(server.stored_bodies().is_empty());
}

#[test]
fn reset_cuts_a_large_request_mid_body() {
    let server = HttpServer::start(|_, n| if n == 0 { Reply::Reset } else { Reply::ok() });
    const LEN: usize = 32 << 20;
    let s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut writer = s.try_clone().unwrap();
    writer.set_write_timeout(Some(DEADLINE)).unwrap();
    let sending = std::thread::spawn(move || {
        writer.write_all(&request("POST", "/ingest", &[], &vec![b'x'; LEN]))
    });
    let write = sending.join().unwrap();
    let mut reader = s;
    let read = read_response(&mut reader);
    let write_err = write.expect_err("the body cannot all be sent");
    let read_err = read.expect_err("no answer");
    assert!(
        write_err.kind() == ErrorKind::ConnectionReset
            || read_err.kind() == ErrorKind::ConnectionReset,
        "no RST seen: write {write_err}, read {read_err}"
    );
    let rec = &server.requests()[0];
    assert!(!rec.complete && rec.wire_len < LEN, "{}", rec.wire_len);
    assert_eq!(rec.status, None);
    // The next request is served.
    assert_eq!(post(&server, b"after").status, 200);
    assert_eq!(server.stored_bodies(), vec![b"after".to_vec()]);
}

#[test]
fn down_refuses_connections_and_up_serves_on_the_same_port() {
    let server = HttpServer::ok();
    let addr = server.addr();
    assert_eq!(post(&server, b"1").status, 200);
    let mut idle = TcpStream::connect(addr).unwrap();
    server.down();
    assert!(!server.is_up());
    let e = TcpStream::connect(addr).expect_err("refused while down");
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
    // Open connections are closed too.
    wait_closed(&mut idle, DEADLINE);
    server.up();
    assert_eq!(server.addr(), addr);
    assert_eq!(post(&server, b"2").status, 200);
    server.down();
    server.up();
    assert_eq!(post(&server, b"3").status, 200);
    assert_eq!(
        server.stored_bodies(),
        vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]
    );
}

#[test]
fn drop_stops_the_server() {
    let server = HttpServer::ok();
    let addr = server.addr();
    let mut open = TcpStream::connect(addr).unwrap();
    drop(server);
    wait_closed(&mut open, DEADLINE);
    let e = TcpStream::connect(addr).expect_err("refused after drop");
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn https_is_served_with_the_given_certificate() {
    let pki = crate::tls::Pki::new();
    pki.server();
    let server = HttpServer::start_tls(
        tls_server_config(pki.p("server.pem"), pki.p("server.key")),
        |_, _| Reply::json(201, r#"{"ok":true}"#),
    );
    assert!(server.url("/x").starts_with("https://127.0.0.1:"));

    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(pki.p("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(server.addr()).unwrap());
    tls.write_all(&request("POST", "/secure", &[], b""))
        .unwrap();
    let r = read_response(&mut tls).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (201, &b"{\"ok\":true}"[..]));
    tls.write_all(&request("POST", "/secure", &[], b"over tls"))
        .unwrap();
    assert_eq!(read_response(&mut tls).unwrap().status, 201);
    assert_eq!(
        server.stored_bodies(),
        vec![Vec::new(), b"over tls".to_vec()]
    );
}
