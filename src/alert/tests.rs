//! The rules in simulated time: events are fed with the clock the test chooses, so windows,
//! `for`, re-sends and resolutions are exact. And the `[[alert]]` config, errors included.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};

use super::engine::{AlertState, Engine, FORGET_WINDOWS, Notice};
use super::pattern::mask;
use crate::config::Config;
use crate::event::Event;
use crate::parse::{ParseOptions, Zone, parse};

const BASE: &str = r#"
[listen.udp]
kind = "udp"
address = "127.0.0.1:5514"

[output.am]
kind = "alertmanager"
url = "http://127.0.0.1:9093"

[output.hook]
kind = "webhook"
url = "http://127.0.0.1:9000/hook"

[[route]]
to = ["hook"]
"#;

fn config(alerts: &str) -> Result<Config, Vec<String>> {
    Config::from_toml_str(&format!("{BASE}{alerts}"), "t.toml")
        .map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
}

fn engine(alerts: &str) -> (Engine, Vec<Arc<crate::metrics::AlertMetrics>>) {
    let c = config(alerts).unwrap_or_else(|e| panic!("{e:#?}"));
    let metrics: Vec<_> = c.alerts.iter().map(|_| Arc::default()).collect();
    (Engine::new(&c.alerts, metrics.clone()), metrics)
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn event(pri: u8, host: &str, msg: &str) -> Event {
    parsed_event(format!(
        "<{pri}>1 2026-03-01T00:00:00Z {host} app - - - {msg}"
    ))
}

/// `raw` parsed as received at `t0()`.
pub(super) fn parsed_event(raw: String) -> Event {
    let raw = bytes::Bytes::from(raw);
    let now = t0();
    Event {
        parsed: parse(&raw, &ParseOptions::new(now, Zone::Local)),
        raw,
        received_at: now,
        source: None,
        listener: "udp".into(),
        tls_peer: None,
        truncated: false,
    }
}

/// Feeds `n` events spread evenly over `[start, start + secs)`.
fn feed(e: &mut Engine, ev: &Event, start: DateTime<Utc>, secs: i64, n: usize) {
    for i in 0..n {
        let at = start + TimeDelta::milliseconds(secs * 1000 * i as i64 / n.max(1) as i64);
        e.observe(ev, at);
    }
}

fn states(ns: &[Notice]) -> Vec<(AlertState, bool)> {
    ns.iter().map(|n| (n.state, n.resend)).collect()
}

#[test]
fn rate_fires_after_for_once_and_resolves() {
    let (mut e, m) = engine(
        r#"
[[alert]]
name = "ssh_fail_burst"
kind = "rate"
selector = "auth,authpriv.*"
message = "Failed password"
by = ["hostname"]
window = "1m"
above = 100
for = "2m"
to = ["am", "hook"]
"#,
    );
    let fail = event(4 * 8 + 5, "web1", "Failed password for root from 10.0.0.1");
    let other = event(4 * 8 + 5, "web1", "Accepted password for root");
    e.advance(t0());
    // Minute 0: 50 failures (fine). Minutes 1..5: 150 each (above).
    feed(&mut e, &fail, t0(), 60, 50);
    feed(&mut e, &other, t0(), 60, 500);
    for minute in 1..5 {
        feed(&mut e, &fail, t0() + TimeDelta::minutes(minute), 60, 150);
    }
    e.advance(t0() + TimeDelta::minutes(5));
    let ns = e.take_notices();
    // Condition first held at the end of minute 1 (t=2m); for 2m: fires at t=4m. One firing,
    // then a re-send one resend_interval (1m) later, at t=5m.
    assert_eq!(
        states(&ns),
        vec![(AlertState::Firing, false), (AlertState::Firing, true)],
        "{ns:#?}"
    );
    assert_eq!(ns[0].starts_at, t0() + TimeDelta::minutes(4));
    assert_eq!(ns[0].labels, vec![("hostname".into(), "web1".into())]);
    assert_eq!(ns[0].value, 150.0);
    assert_eq!(ns[0].expected, "at most 100");
    // endsAt four re-send intervals ahead, so Alertmanager keeps it while re-sent.
    assert_eq!(ns[0].ends_at, t0() + TimeDelta::minutes(8));
    assert_eq!(ns[1].ends_at, t0() + TimeDelta::minutes(9));
    assert_eq!(e.firing(0), 1);
    assert_eq!(crate::metrics::get(&m[0].fired), 1);
    assert_eq!(crate::metrics::get(&m[0].events), 50 + 4 * 150);
    // Minute 5: quiet again: resolved at its end.
    feed(&mut e, &fail, t0() + TimeDelta::minutes(5), 60, 10);
    e.advance(t0() + TimeDelta::minutes(6));
    let ns = e.take_notices();
    assert_eq!(states(&ns), vec![(AlertState::Resolved, false)], "{ns:#?}");
    assert_eq!(ns[0].starts_at, t0() + TimeDelta::minutes(4));
    assert_eq!(ns[0].ends_at, t0() + TimeDelta::minutes(6));
    assert_eq!(e.firing(0), 0);
    assert_eq!(crate::metrics::get(&m[0].resolved), 1);
}

#[test]
fn long_and_short_group_keys_are_kept_apart() {
    // Keys up to 30 bytes are kept in the group, longer ones apart: both are found again.
    let (mut e, _) = engine(
        r#"
[[alert]]
name = "per_host"
kind = "rate"
by = ["hostname"]
above = 5
"#,
    );
    let long = format!("{}.example.net", "a".repeat(40));
    let longer = format!("{long}x");
    e.advance(t0());
    for (host, n) in [
        ("h1", 10),
        (long.as_str(), 10),
        (longer.as_str(), 3),
        ("h2", 3),
    ] {
        feed(&mut e, &event(14, host, "x"), t0(), 60, n);
    }
    e.advance(t0() + TimeDelta::minutes(1));
    let mut fired: Vec<String> = e
        .take_notices()
        .into_iter()
        .map(|n| n.labels[0].1.clone())
        .collect();
    fired.sort();
    assert_eq!(fired, vec![long, "h1".to_string()]);
}

#[test]
fn groups_are_bounded_and_refusals_counted() {
    let (mut e, m) = engine(
        r#"
[[alert]]
name = "per_host"
kind = "rate"
by = ["hostname"]
above = 5
max_groups = 3
"#,
    );
    e.advance(t0());
    for h in 0..5 {
        let ev = event(14, &format!("h{h}"), "x");
        feed(&mut e, &ev, t0(), 60, 10);
    }
    e.advance(t0() + TimeDelta::minutes(1));
    let ns = e.take_notices();
    assert_eq!(ns.len(), 3, "{ns:#?}");
    assert_eq!(crate::metrics::get(&m[0].groups_refused), 20);
    assert_eq!(crate::metrics::get(&m[0].groups), 3);
}

#[test]
fn rate_below_finds_a_silent_host() {
    let (mut e, _) = engine(
        r#"
[[alert]]
name = "host_silent"
kind = "rate"
by = ["hostname"]
below = 1
"#,
    );
    let a = event(14, "a", "tick");
    let b = event(14, "b", "tick");
    e.advance(t0());
    for minute in 0..3 {
        feed(&mut e, &a, t0() + TimeDelta::minutes(minute), 60, 30);
        feed(&mut e, &b, t0() + TimeDelta::minutes(minute), 60, 30);
    }
    // b falls silent in minute 3.
    feed(&mut e, &a, t0() + TimeDelta::minutes(3), 60, 30);
    e.advance(t0() + TimeDelta::minutes(4));
    let ns = e.take_notices();
    assert_eq!(ns.len(), 1, "{ns:#?}");
    assert_eq!(ns[0].labels, vec![("hostname".into(), "b".into())]);
    assert_eq!(ns[0].summary, "rate below threshold");
    assert_eq!(ns[0].value, 0.0);
}

#[test]
fn ratio_counts_matched_over_total() {
    let (mut e, _) = engine(
        r#"
[[alert]]
name = "error_ratio"
kind = "ratio"
selector = "*.err"
total_selector = "*.*"
above = 0.2
min_events = 10
"#,
    );
    let ok = event(14, "a", "fine");
    let err = event(11, "a", "broken");
    e.advance(t0());
    feed(&mut e, &ok, t0(), 60, 90);
    feed(&mut e, &err, t0(), 60, 10);
    feed(&mut e, &ok, t0() + TimeDelta::minutes(1), 60, 70);
    feed(&mut e, &err, t0() + TimeDelta::minutes(1), 60, 30);
    e.advance(t0() + TimeDelta::minutes(2));
    let ns = e.take_notices();
    assert_eq!(ns.len(), 1, "{ns:#?}");
    assert_eq!(ns[0].value, 0.3);
    assert_eq!(ns[0].starts_at, t0() + TimeDelta::minutes(2));
}

#[test]
fn zscore_flags_spikes_and_drops_like_the_reference() {
    let (mut e, _) = engine(
        r#"
[[alert]]
name = "volume"
kind = "zscore"
window = "1m"
threshold = 3.0
"#,
    );
    let ev = event(14, "a", "x");
    e.advance(t0());
    // Ten minutes of 100 ± 5, then a spike of 300, then back, then a drop to 0.
    let counts = [
        100, 95, 105, 100, 98, 102, 97, 103, 100, 99, 300, 101, 100, 0, 100,
    ];
    for (minute, n) in counts.iter().enumerate() {
        feed(
            &mut e,
            &ev,
            t0() + TimeDelta::minutes(minute as i64),
            60,
            *n,
        );
    }
    e.advance(t0() + TimeDelta::minutes(counts.len() as i64));
    let ns = e.take_notices();
    let got: Vec<(AlertState, &str, &str)> = ns
        .iter()
        .filter(|n| !n.resend)
        .map(|n| (n.state, n.summary.as_str(), n.severity.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (AlertState::Firing, "rate spike", "critical"),
            (AlertState::Resolved, "rate spike", "critical"),
            (AlertState::Firing, "rate drop", "critical"),
            (AlertState::Resolved, "rate drop", "critical"),
        ],
        "{ns:#?}"
    );
    assert_eq!(ns[0].starts_at, t0() + TimeDelta::minutes(11));
}

#[test]
fn zscore_on_errors_where_there_were_none() {
    let (mut e, _) = engine(
        r#"
[[alert]]
name = "errors"
kind = "zscore"
series = "ratio"
selector = "*.err"
"#,
    );
    let ok = event(14, "a", "x");
    let err = event(11, "a", "y");
    e.advance(t0());
    for minute in 0..6 {
        feed(&mut e, &ok, t0() + TimeDelta::minutes(minute), 60, 100);
    }
    feed(&mut e, &ok, t0() + TimeDelta::minutes(6), 60, 90);
    feed(&mut e, &err, t0() + TimeDelta::minutes(6), 60, 10);
    e.advance(t0() + TimeDelta::minutes(7));
    let ns = e.take_notices();
    assert_eq!(ns.len(), 1, "{ns:#?}");
    assert_eq!(ns[0].summary, "error spike");
    assert_eq!(ns[0].value, 0.1);
}

/// A seeded xorshift generator: the same random values in every run.
fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// The new-pattern detector is not fooled by numbers, ids and addresses: 10,000 messages from
/// 20 templates with random values give exactly 20 patterns.
#[test]
fn ten_thousand_messages_from_twenty_templates_are_twenty_patterns() {
    let mut next = xorshift(0x2545_f491_4f6c_dd1d);
    type Template = fn(&mut dyn FnMut() -> u64) -> String;
    let templates: [Template; 20] = [
        |r| {
            format!(
                "Accepted password for user{} from {}.{}.{}.{} port {} ssh2",
                r() % 1000,
                r() % 256,
                r() % 256,
                r() % 256,
                r() % 256,
                r() % 65536
            )
        },
        |r| {
            format!(
                "Failed password for invalid user admin from 10.{}.{}.{} port {}",
                r() % 256,
                r() % 256,
                r() % 256,
                r() % 65536
            )
        },
        |r| {
            format!(
                "session {} opened for user root by (uid={})",
                r() % 100000,
                r() % 1000
            )
        },
        |r| {
            format!(
                "request id={:08x}-{:04x}-{:04x}-{:04x}-{:012x} completed in {} ms",
                r() as u32,
                r() as u16,
                r() as u16,
                r() as u16,
                r() & 0xffff_ffff_ffff,
                r() % 5000
            )
        },
        |r| {
            format!(
                "segfault at 0x{:x} ip 0x{:x} sp 0x{:x} error 4",
                r(),
                r(),
                r()
            )
        },
        |r| {
            format!(
                "GET /api/items/{} HTTP/1.1 {} {}",
                r() % 100000,
                200 + r() % 300,
                r() % 100000
            )
        },
        |r| {
            format!(
                "connection from [{:x}:{:x}::{:x}]:{} closed",
                r() as u16,
                r() as u16,
                r() as u16,
                r() % 65536
            )
        },
        |r| {
            format!(
                "user \"{}\" not found",
                ["alice", "bob", "carol x", "d'angelo"][(r() % 4) as usize]
            )
        },
        |r| {
            format!(
                "disk /dev/nvme{}n1 usage at {}.{}%",
                r() % 4,
                r() % 100,
                r() % 10
            )
        },
        |r| {
            format!(
                "kernel: eth0: link up, {} Mbps, full duplex",
                [100, 1000, 10000][(r() % 3) as usize]
            )
        },
        |r| {
            format!(
                "cron job '{}' finished with status {}",
                ["backup", "rotate logs", "sync"][(r() % 3) as usize],
                r() % 3
            )
        },
        |r| {
            format!(
                "container {:012x} started",
                r() & 0xffff_ffff_ffff | 0xa0_0000_0000
            )
        },
        |r| {
            format!(
                "DHCPACK on 192.168.{}.{} to {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                r() % 256,
                r() % 256,
                r() % 256,
                r() % 256,
                r() % 256,
                r() % 256,
                r() % 256,
                r() % 256
            )
        },
        |r| {
            format!(
                "temperature {}.{} C above threshold {} C",
                r() % 100,
                r() % 10,
                r() % 100
            )
        },
        |r| format!("queue depth {} exceeds {}", r() % 1_000_000, r() % 1000),
        |r| format!("backup of volume vol-{} took {}s", r() % 10000, r() % 10000),
        |r| {
            format!(
                "login failure for '{}' from {}.{}.{}.{}:{}",
                ["x", "y y"][(r() % 2) as usize],
                r() % 256,
                r() % 256,
                r() % 256,
                r() % 256,
                r() % 65536
            )
        },
        |r| {
            format!(
                "retrying in {} seconds (attempt {} of {})",
                r() % 60,
                r() % 10,
                r() % 10
            )
        },
        |r| {
            format!(
                "checksum mismatch: expected {:016x} got {:016x}",
                r() | 1,
                r() | 1
            )
        },
        |r| format!("worker {} exited with code {}", r() % 64, r() % 256),
    ];
    let mut table = super::pattern::PatternTable::new(1000);
    for i in 0..10_000 {
        let msg = templates[i % 20](&mut next);
        table.observe(&mask(msg.as_bytes()));
    }
    let patterns: Vec<String> = table
        .frequencies()
        .iter()
        .map(|(t, _)| String::from_utf8_lossy(t).into_owned())
        .collect();
    assert_eq!(table.len(), 20, "{patterns:#?}");
}

/// Ids in lines every host writes: an SSH key's fingerprint (base64, with `+` and `/`) in
/// sshd's login line, and a Kubernetes pod's name (a hash, then a short suffix).
#[test]
fn ssh_key_fingerprints_and_pod_hashes_are_ids() {
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const POD: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut pick = |set: &[u8], n: usize| -> String {
        (0..n)
            .map(|_| char::from(set[(next() % set.len() as u64) as usize]))
            .collect()
    };
    let mut logins = super::pattern::PatternTable::new(1000);
    let mut pods = super::pattern::PatternTable::new(1000);
    for _ in 0..1000 {
        let (port, fingerprint) = (pick(b"0123456789", 5), pick(BASE64, 43));
        logins.observe(&mask(
            format!(
                "Accepted publickey for deploy from 10.1.2.3 port {port} ssh2: ED25519 \
                 SHA256:{fingerprint}"
            )
            .as_bytes(),
        ));
        let pod = format!("web-{}-{}", pick(POD, 10), pick(POD, 5));
        pods.observe(&mask(
            format!("Started container app in pod {pod} on node-7").as_bytes(),
        ));
    }
    let templates = |t: &super::pattern::PatternTable| -> Vec<(String, u64)> {
        (t.frequencies().iter())
            .map(|(t, c)| (String::from_utf8_lossy(t).into_owned(), *c))
            .collect()
    };
    // A fingerprint whose letters and digits change fewer than 3 times (a few in 1,000) is cut
    // into words at its `+` and `/`.
    let logins = templates(&logins);
    assert_eq!(
        logins[0].0,
        "Accepted publickey for deploy from <IP> port <N> <ID>: <ID> <ID>:<ID>"
    );
    assert!(logins[0].1 >= 990, "{logins:#?}");
    // A pod's 10-byte hash is an id when it holds a digit (95% do), its 5-byte suffix likewise
    // (78%); one of letters alone is a word.
    let pods = templates(&pods);
    let hashed: u64 = (pods.iter())
        .filter(|(t, _)| t.starts_with("Started container app in pod web-<ID>-"))
        .map(|(_, c)| c)
        .sum();
    assert!(hashed >= 920, "{hashed} of 1000: {pods:#?}");
    assert_eq!(
        pods[0].0,
        "Started container app in pod web-<ID>-<ID> on node-<N>"
    );
}

#[test]
fn new_pattern_counts_forgotten_templates_and_refused_alerts() {
    let (mut e, m) = engine(
        r#"
[[alert]]
name = "new_log_pattern"
kind = "new_pattern"
warmup_events = 2
max_patterns = 3
max_groups = 2
"#,
    );
    // 8 templates: the first 2 only learn, then 2 alerts open and the other 4 are refused;
    // the table holds 3 and forgot 5.
    for w in [
        "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta",
    ] {
        e.observe(&event(14, "a", &format!("{w} 1 done")), t0());
    }
    assert_eq!(e.take_notices().len(), 2);
    e.advance(t0() + TimeDelta::seconds(1));
    assert_eq!(crate::metrics::get(&m[0].patterns), 3);
    assert_eq!(crate::metrics::get(&m[0].patterns_evicted), 5);
    assert_eq!(crate::metrics::get(&m[0].groups_refused), 4);
    assert_eq!(crate::metrics::get(&m[0].events), 8);
}

/// Behind its queue, the engine counts lines a new-pattern rule knows by shape and skips the
/// others (counted), while the other rules count every line; caught up, it learns them again.
#[test]
fn behind_new_pattern_rules_skip_unknown_lines_and_rates_count_all() {
    let (mut e, m) = engine(
        r#"
[[alert]]
name = "new_log_pattern"
kind = "new_pattern"
warmup_events = 1
[[alert]]
name = "volume"
kind = "rate"
above = 1000
"#,
    );
    e.advance(t0());
    e.observe(&event(14, "a", "job 1 done"), t0());
    e.set_behind(true);
    for msg in [
        "job 2 done",
        "disk sda full",
        "job 3 done",
        "user x logged in",
    ] {
        e.observe(&event(14, "a", msg), t0());
    }
    e.advance(t0() + TimeDelta::seconds(1));
    assert!(e.take_notices().is_empty());
    assert_eq!(e.patterns(0).map(|t| t.len()), Some(1));
    assert_eq!(crate::metrics::get(&m[0].patterns_skipped), 2);
    assert_eq!(crate::metrics::get(&m[0].events), 5);
    assert_eq!(crate::metrics::get(&m[1].events), 5);
    e.set_behind(false);
    e.observe(
        &event(14, "a", "disk sda full"),
        t0() + TimeDelta::seconds(1),
    );
    let ns = e.take_notices();
    assert_eq!(ns.len(), 1, "{ns:#?}");
    assert_eq!(
        ns[0].labels,
        vec![("pattern".into(), "disk sda full".into())]
    );
    assert_eq!(e.patterns(0).map(|t| t.len()), Some(2));
}

#[test]
fn new_pattern_learns_during_warmup_then_alerts_once_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rules = format!(
        r#"
[daemon]
state_dir = "{}"

[[alert]]
name = "new_log_pattern"
kind = "new_pattern"
selector = "*.*"
warmup_events = 100
window = "5m"
to = ["am"]
"#,
        dir.path().display()
    );
    // [daemon] must come before the base's tables in TOML: put the rule text first.
    let text = format!("{rules}{BASE}");
    let c = Config::from_toml_str(&text, "t.toml").unwrap();
    let mut e = Engine::new(&c.alerts, vec![Arc::default()]);
    for i in 0..100 {
        e.observe(&event(14, "a", &format!("template {} seen", i % 7)), t0());
        e.observe(&event(14, "a", &format!("other {i}")), t0());
    }
    assert!(e.take_notices().is_empty());
    // After the warm-up: a new template alerts, once; its values do not make it new again.
    e.observe(
        &event(14, "a", "disk 3 failed"),
        t0() + TimeDelta::minutes(1),
    );
    e.observe(
        &event(14, "a", "disk 4 failed"),
        t0() + TimeDelta::minutes(1),
    );
    e.observe(
        &event(14, "a", "template 9 seen"),
        t0() + TimeDelta::minutes(1),
    );
    let ns = e.take_notices();
    assert_eq!(ns.len(), 1, "{ns:#?}");
    assert_eq!(
        ns[0].labels,
        vec![("pattern".into(), "disk <N> failed".into())]
    );
    // Resolved one window after it fired.
    e.advance(t0() + TimeDelta::minutes(7));
    let ns = e.take_notices();
    assert_eq!(states(&ns), vec![(AlertState::Resolved, false)]);
    e.save();
    // A restart loads the table: nothing known alerts again, the warm-up is over.
    let mut e = Engine::new(&c.alerts, vec![Arc::default()]);
    assert_eq!(e.patterns(0).unwrap().len(), 3);
    e.observe(
        &event(14, "a", "disk 7 failed"),
        t0() + TimeDelta::minutes(8),
    );
    e.observe(
        &event(14, "a", "fan 2 stopped"),
        t0() + TimeDelta::minutes(8),
    );
    let ns = e.take_notices();
    assert_eq!(ns.len(), 1, "{ns:#?}");
    assert_eq!(ns[0].labels[0].1, "fan <N> stopped");
}

#[test]
fn config_errors_name_key_and_line() {
    let errs = config(
        r#"
[[alert]]
name = "a"
kind = "rate"
above = 1
colour = "red"

[[alert]]
name = "b"
kind = "sometimes"

[[alert]]
name = "c"
kind = "rate"
above = 1
to = ["nowhere"]

[[alert]]
name = "d"
kind = "rate"
threshold = 2.0
by = ["planet"]
"#,
    )
    .unwrap_err();
    let want = [
        "t.toml:21:1: alert[0].colour: unknown key",
        "t.toml:25:8: alert[1].kind: unknown alert kind \"sometimes\"",
        "t.toml:31:6: alert[2].to: no output named \"nowhere\"",
        "t.toml:33:1: alert[3].above: missing",
        "t.toml:36:1: alert[3].threshold: not valid for kind = \"rate\"",
        "t.toml:37:6: alert[3].by: unknown field \"planet\"",
    ];
    assert_eq!(errs.len(), want.len(), "{errs:#?}");
    for (got, want) in errs.iter().zip(want) {
        assert!(
            got.starts_with(want),
            "{got}\n  does not start with\n{want}"
        );
    }
}

#[test]
fn baseline_rule_applies_the_reference_rules() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.json");
    super::baseline::Baseline {
        events: 6000,
        errors: 60,
        span_seconds: 3600.0,
        events_per_minute: 100.0,
        error_ratio: 0.01,
        patterns: Vec::new(),
    }
    .save(&path)
    .unwrap();
    let (mut e, _) = engine(&format!(
        "[[alert]]\nname = \"vs\"\nkind = \"baseline\"\nbaseline = \"{}\"\n",
        path.display()
    ));
    let ok = event(14, "a", "x");
    let err = event(11, "a", "y");
    e.advance(t0());
    // Minute 0: 150/min, 1% errors: within 0.5x-2x and under 2x the error ratio.
    feed(&mut e, &ok, t0(), 60, 148);
    feed(&mut e, &err, t0(), 60, 2);
    // Minute 1: 250/min: above 2x. Minute 3: 40/min: below 0.5x. Minute 5: 100/min with 5%
    // errors: above 2x the error ratio. Minutes 2 and 4: normal.
    feed(&mut e, &ok, t0() + TimeDelta::minutes(1), 60, 250);
    feed(&mut e, &ok, t0() + TimeDelta::minutes(2), 60, 100);
    feed(&mut e, &ok, t0() + TimeDelta::minutes(3), 60, 40);
    feed(&mut e, &ok, t0() + TimeDelta::minutes(4), 60, 100);
    feed(&mut e, &ok, t0() + TimeDelta::minutes(5), 60, 95);
    feed(&mut e, &err, t0() + TimeDelta::minutes(5), 60, 5);
    e.advance(t0() + TimeDelta::minutes(6));
    let got: Vec<(AlertState, String)> = e
        .take_notices()
        .into_iter()
        .filter(|n| !n.resend)
        .map(|n| (n.state, n.summary))
        .collect();
    assert_eq!(
        got,
        vec![
            (AlertState::Firing, "rate above baseline".to_string()),
            (AlertState::Resolved, "rate above baseline".to_string()),
            (AlertState::Firing, "rate below baseline".to_string()),
            (AlertState::Resolved, "rate below baseline".to_string()),
            (AlertState::Firing, "error ratio above baseline".to_string()),
        ]
    );
}

proptest::proptest! {
    /// The engine's comparison is `==`, at every length and on every differing byte.
    #[test]
    fn same_bytes_is_slice_equality(
        a in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
        flip in proptest::prelude::any::<proptest::sample::Index>(),
        bit in 0u8..8,
        cut in 0usize..3,
    ) {
        proptest::prop_assert!(super::same_bytes(&a, &a.clone()));
        if !a.is_empty() {
            let mut b = a.clone();
            b[flip.index(a.len())] ^= 1 << bit;
            proptest::prop_assert!(!super::same_bytes(&a, &b));
        }
        let shorter = &a[..a.len().saturating_sub(cut)];
        proptest::prop_assert_eq!(super::same_bytes(&a, shorter), cut == 0 || a.is_empty());
    }

    /// Group keys' UTF-8 test is `from_utf8`, at every length, with a non-ASCII byte anywhere.
    #[test]
    fn is_text_is_from_utf8(
        a in proptest::collection::vec(0u8..0x80, 0..40),
        at in proptest::prelude::any::<proptest::sample::Index>(),
        high in proptest::prelude::any::<Option<u8>>(),
    ) {
        let mut a = a;
        if let (Some(h), false) = (high, a.is_empty()) {
            let k = at.index(a.len());
            a[k] = h | 0x80;
        }
        proptest::prop_assert_eq!(super::is_text(&a), std::str::from_utf8(&a).is_ok());
    }
}

/// An event from `host`'s `app`.
fn app_event(pri: u8, host: &str, app: &str) -> Event {
    parsed_event(format!(
        "<{pri}>1 2026-03-01T00:00:00Z {host} {app} - - - x"
    ))
}

proptest::proptest! {
    /// Counts go to their groups whatever the order of the keys: runs of one key, keys that
    /// alternate, keys that are prefixes of others, values read from the header and written
    /// out (severity), no key at all; the clock moving within the window.
    #[test]
    fn groups_count_every_event_in_any_order(
        picks in proptest::collection::vec((0usize..3, 0usize..2, proptest::prelude::any::<bool>(), 0i64..3), 0..200),
    ) {
        const HOSTS: [&str; 3] = ["h", "h1", "h1x"];
        const APPS: [&str; 2] = ["a", "ab"];
        let (mut e, _) = engine(
            r#"
[[alert]]
name = "host_app"
kind = "rate"
by = ["hostname", "app_name"]
above = 0
[[alert]]
name = "per_severity"
kind = "rate"
by = ["severity"]
above = 0
[[alert]]
name = "all"
kind = "rate"
above = 0
[[alert]]
name = "error_share"
kind = "ratio"
selector = "*.err"
by = ["hostname"]
above = 0
min_events = 1
"#,
        );
        e.advance(t0());
        let mut want: std::collections::BTreeMap<(String, String), f64> = Default::default();
        let mut errors: std::collections::BTreeMap<&str, (f64, f64)> = Default::default();
        let mut at = t0();
        for (h, a, error, step_ms) in &picks {
            let pri = if *error { 8 + 3 } else { 8 + 6 };
            at += TimeDelta::milliseconds(*step_ms);
            e.count(&app_event(pri, HOSTS[*h], APPS[*a]), at);
            *want.entry(("host_app".into(), format!("{}/{}", HOSTS[*h], APPS[*a]))).or_default() += 1.0;
            let sev = if *error { "err" } else { "info" };
            *want.entry(("per_severity".into(), sev.into())).or_default() += 1.0;
            *want.entry(("all".into(), String::new())).or_default() += 1.0;
            let share = errors.entry(HOSTS[*h]).or_default();
            share.0 += f64::from(u8::from(*error));
            share.1 += 1.0;
        }
        for (host, (err, total)) in errors {
            if err > 0.0 {
                want.insert(("error_share".into(), host.into()), err / total);
            }
        }
        e.advance(t0() + TimeDelta::minutes(1));
        let got: std::collections::BTreeMap<(String, String), f64> = e
            .take_notices()
            .into_iter()
            .map(|n| {
                let labels: Vec<String> = n.labels.iter().map(|(_, v)| v.clone()).collect();
                ((n.alertname.to_string(), labels.join("/")), n.value)
            })
            .collect();
        proptest::prop_assert_eq!(got, want);
    }
}

proptest::proptest! {
    /// Message matchers decided once per shape (values without digits) count what a test of
    /// each message counts; one whose value holds digits is tested on each message, as
    /// messages of one shape differ there ("error 42" and "error 43").
    #[test]
    fn message_matchers_count_alike_with_shapes(
        lines in proptest::collection::vec((0usize..5, 0u32..100, 0usize..2), 0..300),
    ) {
        let (mut e, _) = engine(
            r#"
[[alert]]
name = "new_log_pattern"
kind = "new_pattern"
[[alert]]
name = "oom"
kind = "rate"
message = "Out of memory"
above = 0
[[alert]]
name = "error_42"
kind = "rate"
message = "error 42"
above = 0
[[alert]]
name = "oom_on_db"
kind = "rate"
hostname = "db"
message = ["Out of memory", "oom-kill"]
above = 0
"#,
        );
        let text = |kind: usize, v: u32| match kind {
            0 => format!("Out of memory: killed process {v:02}"),
            1 => format!("process {v:02} ok"),
            2 => format!("error {v:02} seen"),
            3 => format!("oom-kill:task={v:02}"),
            _ => format!("error {v} and Out of memory"),
        };
        let mut want: std::collections::BTreeMap<String, f64> = Default::default();
        e.advance(t0());
        for (kind, v, host) in &lines {
            let (msg, host) = (text(*kind, *v), ["db", "web"][*host]);
            for (rule, hit) in [
                ("oom", msg.contains("Out of memory")),
                ("error_42", msg.contains("error 42")),
                ("oom_on_db", host == "db" && (msg.contains("Out of memory") || msg.contains("oom-kill"))),
            ] {
                if hit {
                    *want.entry(rule.into()).or_default() += 1.0;
                }
            }
            e.count(&event(14, host, &msg), t0());
        }
        e.advance(t0() + TimeDelta::minutes(1));
        let got: std::collections::BTreeMap<String, f64> = e
            .take_notices()
            .into_iter()
            .filter(|n| &*n.alertname != "new_log_pattern")
            .map(|n| (n.alertname.to_string(), n.value))
            .collect();
        proptest::prop_assert_eq!(got, want);
    }
}

/// An event with `host` and `app` as raw bytes (any bytes: made by hand, as the parsers
/// refuse some).
fn raw_app_event(host: &[u8], app: &[u8]) -> Event {
    let mut ev = app_event(14, "h", "a");
    let mut raw = host.to_vec();
    raw.push(b' ');
    raw.extend_from_slice(app);
    ev.raw = bytes::Bytes::from(raw);
    let host_end = host.len() as u32;
    ev.parsed.hostname = Some(crate::event::Span {
        start: 0,
        end: host_end,
    });
    ev.parsed.app_name = Some(crate::event::Span {
        start: host_end + 1,
        end: host_end + 1 + app.len() as u32,
    });
    ev
}

/// Keys are the `by` values with a NUL between them, whether the values hold NULs or not:
/// `x\0y`+`z` and `x`+`y\0z` are one group, `x`+`y` another.
#[test]
fn values_with_nul_make_the_same_keys() {
    let (mut e, _) = engine(
        r#"
[[alert]]
name = "host_app"
kind = "rate"
by = ["hostname", "app_name"]
above = 0
"#,
    );
    e.advance(t0());
    for (host, app, n) in [("x\0y", "z", 3), ("x", "y\0z", 2), ("x", "y", 4)] {
        // The parsers refuse a NUL there.
        let ev = raw_app_event(host.as_bytes(), app.as_bytes());
        assert_eq!((ev.hostname(), ev.app_name()), (Some(host), Some(app)));
        for _ in 0..n {
            e.count(&ev, t0());
        }
    }
    e.advance(t0() + TimeDelta::minutes(1));
    let mut got: Vec<f64> = e.take_notices().iter().map(|n| n.value).collect();
    got.sort_by(f64::total_cmp);
    assert_eq!(got, vec![4.0, 5.0]);
}

/// Runs of one key go to the group their bytes name, not where the run before went: keys
/// whose values join alike (`ab`+`c`, `a`+`bc`), a value that is not UTF-8 (kept as empty,
/// so its group is the empty value's), a group refused, and groups forgotten and made again
/// (the rules' tables change under the group each last counted into).
#[test]
fn runs_of_one_key_count_where_their_bytes_say() {
    let (mut e, m) = engine(
        r#"
[[alert]]
name = "host_app"
kind = "rate"
by = ["hostname", "app_name"]
above = 0
[[alert]]
name = "host"
kind = "rate"
by = ["hostname"]
above = 0
max_groups = 1
"#,
    );
    let values = |ns: Vec<Notice>| -> Vec<(String, String, f64)> {
        let mut v: Vec<_> = ns
            .into_iter()
            .filter(|n| n.state == AlertState::Firing)
            .map(|n| {
                let labels: Vec<&str> = n.labels.iter().map(|(_, v)| v.as_str()).collect();
                (n.alertname.to_string(), labels.join("/"), n.value)
            })
            .collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        v
    };
    e.advance(t0());
    for (host, app, n) in [
        (&b"ab"[..], &b"c"[..], 2),
        (b"a", b"bc", 3),
        (b"ab", b"c", 1),
        (b"\xff", b"c", 1),
        (b"", b"c", 2),
    ] {
        let ev = raw_app_event(host, app);
        for _ in 0..n {
            e.count(&ev, t0());
        }
    }
    e.advance(t0() + TimeDelta::minutes(1));
    let want = |rule: &str, key: &str, n: f64| (rule.to_string(), key.to_string(), n);
    assert_eq!(
        values(e.take_notices()),
        vec![
            want("host", "ab", 3.0),
            want("host_app", "/c", 3.0),
            want("host_app", "a/bc", 3.0),
            want("host_app", "ab/c", 3.0),
        ]
    );
    // "host" holds one group: `a`, the non-UTF-8 host and the empty one were refused.
    assert_eq!(crate::metrics::get(&m[1].groups_refused), 6);
    // Every group idle until forgotten; then `a` gets the room `ab` had.
    let later = t0() + TimeDelta::minutes(1 + FORGET_WINDOWS as i64 + 1);
    e.advance(later);
    e.take_notices();
    let ev = raw_app_event(b"a", b"bc");
    for _ in 0..4 {
        e.count(&ev, later);
    }
    e.advance(later + TimeDelta::minutes(1));
    assert_eq!(
        values(e.take_notices()),
        vec![want("host", "a", 4.0), want("host_app", "a/bc", 4.0)]
    );
    assert_eq!(crate::metrics::get(&m[1].groups_refused), 6);
}
