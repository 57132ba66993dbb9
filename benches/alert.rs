//! The alert engine's cost per message (issue 17), on the two streams of `benches/e2e.py`'s
//! alert cases, without sockets or threads around it:
//!
//! - `mixed`: issue 18's collector stream (benches/mixed.rs, RFC 3164), where most messages
//!   are new templates and MSG is dense with numbers, addresses and ids;
//! - `site`: the same stream with templates that repeat, as in a site's logs (benches/mixed.rs,
//!   `Templates::Repeating`: each program's padding one of 12 phrases, values drawn anew);
//! - `uniform`: loadgen's message, one template with a sequence number and a stamp, from four
//!   senders taking turns a message at a time (no two events in a row share a host);
//! - `one_sender`: the same from one sender, as e2e.py's alerts case sends it (one connection,
//!   `host00`): the runs the engine's group keys are made for.
//!
//! `mask` is the new-pattern masking alone; `engine_10_rules` feeds the engine the 10 rules of
//! e2e.py's `ALERT_RULES` in batches of 256, the clock advancing 10 µs a message (windows close
//! as they would at 100 k msg/s).
//!
//!     cargo bench --bench alert
//!
//! Criterion reports messages per second ("elem/s"); README.md, "The cost of alert rules", has
//! the figures.

use std::hint::black_box;

use chrono::{DateTime, TimeDelta, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice::alert::engine::Engine;
use sluice::alert::pattern::mask_into;
use sluice::config::Config;
use sluice::event::Event;
use sluice::parse::{ParseOptions, Zone, parse};

#[path = "mixed.rs"]
#[allow(dead_code)]
mod mixed;

/// The rules of benches/e2e.py's `ALERT_RULES`, in the same order.
const RULES: &str = r#"
[[alert]]
name = "volume"
kind = "zscore"
by = ["hostname"]
[[alert]]
name = "errors"
kind = "zscore"
series = "ratio"
selector = "*.err"
by = ["hostname"]
[[alert]]
name = "error_ratio"
kind = "ratio"
selector = "*.err"
above = 0.1
[[alert]]
name = "new_log_pattern"
kind = "new_pattern"
[[alert]]
name = "flood"
kind = "rate"
by = ["hostname", "app_name"]
above = 100000000
[[alert]]
name = "silent"
kind = "rate"
by = ["hostname"]
below = 1
[[alert]]
name = "ssh_fail_burst"
kind = "rate"
selector = "auth,authpriv.*"
message = "Failed password"
by = ["hostname"]
above = 100
[[alert]]
name = "kernel"
kind = "rate"
selector = "kern.*"
above = 10
[[alert]]
name = "critical"
kind = "rate"
selector = "*.crit"
above = 0
[[alert]]
name = "oom"
kind = "rate"
message = "Out of memory"
above = 0
"#;

const MESSAGES: u64 = 20_000;
/// Events the engine's thread takes at once, about (its feed wakes it at 256 queued).
const BATCH: usize = 256;

fn now() -> DateTime<Utc> {
    "2026-12-04T10:00:05Z".parse().unwrap_or_default()
}

fn event(raw: &[u8]) -> Event {
    let raw = bytes::Bytes::copy_from_slice(raw);
    Event {
        parsed: parse(&raw, &ParseOptions::new(now(), Zone::Local)),
        raw,
        received_at: now(),
        source: None,
        listener: "bench".into(),
        tls_peer: None,
        truncated: false,
    }
}

fn mixed_events(templates: mixed::Templates) -> Vec<Event> {
    let w = mixed::build(mixed::Syntax::Rfc3164, templates, MESSAGES, 1, 7, now());
    w.per_conn[0]
        .split(|b| *b == b'\n')
        .filter(|m| !m.is_empty())
        .map(event)
        .collect()
}

/// loadgen's uniform message (benches/loadgen.rs, `Template`): 256 bytes, user.info, from
/// `senders` connections taking turns.
fn uniform_events(senders: u64) -> Vec<Event> {
    (0..MESSAGES)
        .map(|i| {
            let mut m = format!(
                "<14>Dec  4 10:00:05 host{:02} loadgen[{}]: seq={i:010} t={:013} ",
                i % senders,
                i % senders,
                1_796_378_405_000_000 + i * 10
            );
            while m.len() < 256 {
                m.push('x');
            }
            event(m.as_bytes())
        })
        .collect()
}

fn engine() -> Engine {
    let toml = format!(
        "[listen.tcp]\nkind = \"tcp\"\naddress = \"127.0.0.1:5514\"\n\n\
         [output.null]\nkind = \"file\"\npath = \"/dev/null\"\n\n[[route]]\nto = [\"null\"]\n{RULES}"
    );
    let c = Config::from_toml_str(&toml, "bench.toml").unwrap_or_else(|e| panic!("{:?}", e.0));
    let metrics = c.alerts.iter().map(|_| Default::default()).collect();
    Engine::new(&c.alerts, metrics)
}

fn bench(c: &mut Criterion) {
    for (name, events) in [
        ("mixed", mixed_events(mixed::Templates::Fresh)),
        ("site", mixed_events(mixed::Templates::Repeating)),
        ("uniform", uniform_events(4)),
        ("one_sender", uniform_events(1)),
    ] {
        let mut group = c.benchmark_group(format!("alert_{name}"));
        group.throughput(Throughput::Elements(events.len() as u64));
        group.bench_function("mask", |b| {
            let mut out = Vec::new();
            b.iter(|| {
                for ev in &events {
                    mask_into(black_box(ev.message()), &mut out);
                    black_box(&out);
                }
            })
        });
        group.bench_function("engine_10_rules", |b| {
            let mut e = engine();
            let mut at = now();
            b.iter(|| {
                // As the engine's thread takes them: a batch at one instant.
                for batch in events.chunks(BATCH) {
                    at += TimeDelta::microseconds(10 * BATCH as i64);
                    e.advance(at);
                    for ev in batch {
                        e.count(black_box(ev), at);
                    }
                }
                black_box(e.take_notices());
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
