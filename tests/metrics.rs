//! `[daemon] metrics_address`: Prometheus text at /metrics, and the shipped Grafana dashboard
//! asks only for metrics sluice exposes; the endpoint's connection cap and timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use sluice::exporter::{METRICS_CONNECTION_TIMEOUT, METRICS_MAX_CONNECTIONS};

use crate::support::{DEADLINE, Proc, wait_closed, wait_lines, wait_until};

/// A plain HTTP/1.1 GET; returns the status line and the body.
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    try_get(addr, path).expect("the connection was closed without an answer")
}

/// [`get`], or `None` when the endpoint closes the connection without answering.
fn try_get(addr: SocketAddr, path: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    // A refused connection may be closed before the request is written, or reset by it.
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: sluice\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    if resp.is_empty() {
        return None;
    }
    let (head, body) = resp.split_once("\r\n\r\n").expect("no HTTP header end");
    Some((head.lines().next().unwrap().to_string(), body.to_string()))
}

/// The value of the sample line starting with `series ` in an exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

fn start() -> (tempfile::TempDir, Proc) {
    Proc::start_toml(
        r#"
[daemon]
metrics_address = "127.0.0.1:0"
[listen.udp]
kind = "udp"
address = "127.0.0.1:0"
[output.f]
kind = "file"
path = "{dir}/out.log"
format = "raw"
[[route]]
name = "users"
selector = "user.*"
to = ["f"]
[[route]]
selector = "mail.*"
to = ["f"]
"#,
        // The udp listener and the metrics socket.
        2,
    )
}

#[test]
fn metrics_endpoint_serves_every_counter_per_listener_and_output() {
    let (dir, p) = start();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for m in [
        &b"<13>one"[..],
        b"<13>two",
        b"<13>three",
        b"<34>auth is not routed",
    ] {
        udp.send_to(m, p.addr("udp")).unwrap();
    }
    wait_lines(&dir.path().join("out.log"), 3);
    let metrics = p.addr("metrics");
    let mut text = String::new();
    wait_until("counters scraped", DEADLINE, || {
        let (status, body) = get(metrics, "/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK");
        text = body;
        sample(&text, r#"sluice_output_written_total{output="f"}"#) == Some(3.0)
            && sample(&text, "sluice_unrouted_total") == Some(1.0)
    });
    assert_eq!(
        sample(&text, r#"sluice_listener_received_total{listener="udp"}"#),
        Some(4.0)
    );
    // Per route: by name, or by position when it has none.
    assert_eq!(
        sample(&text, r#"sluice_route_matched_total{route="users"}"#),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, r#"sluice_route_matched_total{route="1"}"#),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, r#"sluice_listener_parsed_ok_total{listener="udp"}"#),
        Some(4.0)
    );
    assert_eq!(
        sample(&text, r#"sluice_output_queue_depth{output="f"}"#),
        Some(0.0)
    );
    assert!(
        text.contains("# TYPE sluice_output_queue_depth gauge"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE sluice_output_files_open gauge"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE sluice_listener_received counter"),
        "{text}"
    );
    // Every field of every counter set is exposed.
    for field in sluice::metrics::ListenerMetrics::default().snapshot() {
        // The tail listener's levels are gauges.
        let gauge = ["files_open", "bytes_behind", "files_waiting"].contains(&field.0);
        let name = format!(
            "sluice_listener_{}{}{{listener=\"udp\"}}",
            field.0,
            if gauge { "" } else { "_total" }
        );
        assert!(sample(&text, &name).is_some(), "{name} missing");
    }
    assert!(
        text.contains("# TYPE sluice_listener_bytes_behind gauge"),
        "{text}"
    );
    for field in sluice::metrics::OutputMetrics::default().snapshot() {
        let gauge = [
            "queue_depth",
            "files_open",
            "in_flight",
            "requests_in_flight",
            "senders_waiting",
        ]
        .contains(&field.0);
        let name = format!(
            "sluice_output_{}{}{{output=\"f\"}}",
            field.0,
            if gauge { "" } else { "_total" }
        );
        assert!(sample(&text, &name).is_some(), "{name} missing");
    }
    assert_eq!(
        sample(&text, "sluice_metrics_connections_refused_total"),
        Some(0.0)
    );
    assert_eq!(get(metrics, "/other").0, "HTTP/1.1 404 Not Found");
}

#[test]
fn metrics_endpoint_closes_connections_over_its_cap_and_counts_them() {
    let (_dir, p) = start();
    let addr = p.addr("metrics");
    // Idle connections take every slot; the kernel hands them to accept in connect order, so the
    // ones after them are the ones over the cap.
    let held: Vec<TcpStream> = (0..METRICS_MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let over = 5;
    for _ in 0..over {
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).unwrap();
        wait_closed(&mut s, DEADLINE);
        // Closed at once, not by the timeout that ends an idle connection it served.
        assert!(
            started.elapsed() < METRICS_CONNECTION_TIMEOUT - Duration::from_secs(1),
            "a connection over the cap was kept {:?}",
            started.elapsed()
        );
    }
    drop(held);
    // Until the endpoint has seen the held ones close, a scrape may be refused (and counted) too.
    let mut refused_meanwhile = 0;
    let mut text = String::new();
    wait_until(
        "a scrape answered once slots are free",
        DEADLINE,
        || match try_get(addr, "/metrics") {
            Some((_, body)) => {
                text = body;
                true
            }
            None => {
                refused_meanwhile += 1;
                false
            }
        },
    );
    assert_eq!(
        sample(&text, "sluice_metrics_connections_refused_total"),
        Some((over + refused_meanwhile) as f64),
        "{text}"
    );
    let line = p.wait_log("metrics: connection refused");
    assert!(line.contains("max_connections=64"), "{line}");
}

#[test]
fn metrics_endpoint_closes_idle_and_unfinished_requests_after_its_timeout() {
    let (_dir, p) = start();
    let addr = p.addr("metrics");
    let started = Instant::now();
    let mut idle = TcpStream::connect(addr).unwrap();
    // A request whose headers never end (slowloris).
    let mut partial = TcpStream::connect(addr).unwrap();
    partial
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: sluice\r\n")
        .unwrap();
    // Meanwhile a scraper is answered.
    assert_eq!(get(addr, "/metrics").0, "HTTP/1.1 200 OK");
    for s in [&mut idle, &mut partial] {
        wait_closed(s, METRICS_CONNECTION_TIMEOUT + DEADLINE);
        let waited = started.elapsed();
        assert!(
            waited >= METRICS_CONNECTION_TIMEOUT - Duration::from_millis(200),
            "closed after {waited:?}, before the timeout"
        );
    }
}

#[test]
fn grafana_dashboard_uses_only_exposed_metrics() {
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/etc/grafana-sluice.json"
    ))
    .unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut exprs = Vec::new();
    for panel in json["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    let names: std::collections::BTreeSet<String> = exprs
        .iter()
        .flat_map(|e| {
            regex::Regex::new(r"sluice_[a-z_]+")
                .unwrap()
                .find_iter(e)
                .map(|m| m.as_str().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(names.len() >= 8, "{names:?}");
    let (_dir, p) = start();
    let (_, text) = get(p.addr("metrics"), "/metrics");
    for name in names {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))),
            "dashboard uses {name}, which sluice does not expose"
        );
    }
}
