//! Parsing throughput on a realistic mix, sluice against the Rust parsers users would otherwise
//! pick, in one run: syslog_loose (Vector's parser, called as Vector calls it) and
//! syslog_rfc5424 (RFC 5424 only: it rejects the RFC 3164 messages, quickly). Every parser
//! starts from the bytes a socket gives: the peers take `&str`, so the UTF-8 check they need
//! (`String::from_utf8_lossy` and `trim`, as Vector does; `str::from_utf8`) counts, as sluice's
//! own check of MSG does.
//!
//!     cargo bench --bench parse
//!
//! Criterion reports messages per second ("elem/s"); README.md has the table. The mix has two
//! stamps far from the receive time (the RFC 3164 example and a Cisco device whose clock is not
//! set), which take sluice's slower path through the time zone.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice::parse::{ParseOptions, Zone, parse};

#[path = "mix.rs"]
mod mix;
use mix::MIX;

fn mix(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_mix");
    group.throughput(Throughput::Elements(MIX.len() as u64));
    // A listener's default zone (the host's), and a fixed receive time, seconds after the
    // stamps of live traffic, so the run does not depend on the day it is made.
    let received_at = "2026-11-22T10:00:05Z".parse().unwrap_or_default();
    let opts = ParseOptions::new(received_at, Zone::Local);
    group.bench_function("sluice", |b| {
        b.iter(|| {
            for m in MIX {
                black_box(parse(black_box(m.as_bytes()), &opts));
            }
        })
    });
    group.bench_function("syslog_loose", |b| {
        b.iter(|| {
            for m in MIX {
                black_box(loose(black_box(m.as_bytes())));
            }
        })
    });
    // The same call on text already known to be UTF-8, for comparison: what the conversion costs.
    group.bench_function("syslog_loose_given_str", |b| {
        b.iter(|| {
            for m in MIX {
                let year = |_| 2026;
                let v = syslog_loose::Variant::Either;
                let parsed = syslog_loose::parse_message_with_year_exact(black_box(m), year, v);
                black_box(parsed.is_ok());
            }
        })
    });
    group.bench_function("syslog_rfc5424", |b| {
        b.iter(|| {
            for m in MIX {
                black_box(rfc5424(black_box(m.as_bytes())));
            }
        })
    });
    group.finish();

    // RFC 5424 alone, where syslog_rfc5424 parses every message.
    let only_5424: Vec<&str> = MIX.iter().copied().filter(|m| m.contains(">1 ")).collect();
    let mut group = c.benchmark_group("parse_rfc5424");
    group.throughput(Throughput::Elements(only_5424.len() as u64));
    group.bench_function("sluice", |b| {
        b.iter(|| {
            for m in &only_5424 {
                black_box(parse(black_box(m.as_bytes()), &opts));
            }
        })
    });
    group.bench_function("syslog_rfc5424", |b| {
        b.iter(|| {
            for m in &only_5424 {
                black_box(rfc5424(black_box(m.as_bytes())));
            }
        })
    });
    group.finish();
}

/// syslog_loose as Vector's syslog source calls it.
fn loose(bytes: &[u8]) -> bool {
    let line = String::from_utf8_lossy(bytes);
    let year = |_| 2026;
    let v = syslog_loose::Variant::Either;
    black_box(syslog_loose::parse_message_with_year_exact(
        line.trim(),
        year,
        v,
    ))
    .is_ok()
}

/// syslog_rfc5424 on what is UTF-8.
fn rfc5424(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|s| black_box(syslog_rfc5424::parse_message(s)).is_ok())
}

criterion_group!(benches, mix);
criterion_main!(benches);
