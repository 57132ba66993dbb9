//! `[[alert]]` rules end to end, the way a user runs them: the real daemon on 127.0.0.1, syslog
//! over TCP, alerts to a real Prometheus Alertmanager (Debian's `prometheus-alertmanager`,
//! unpacked by .ci/install-test-tools and started here on free ports, clustering off) and to a
//! `webhook` output, checked through Alertmanager's own `GET /api/v2/alerts`, through the
//! notifications Alertmanager sends its receiver, and through the webhook's bodies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::http_server::HttpServer;
use crate::support::{TestDaemon, free_tcp_port, send_lines_to, tools_root, wait_until};

/// An Alertmanager process, killed when dropped.
struct Alertmanager {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Alertmanager {
    /// Starts Alertmanager routing every alert to `receiver` (a webhook), resolved ones too,
    /// grouped by alertname with short waits so the test does not wait minutes.
    fn start(receiver: &str) -> Alertmanager {
        let bin = tools_root().join("usr/bin/prometheus-alertmanager");
        assert!(
            bin.exists(),
            "{} not found: run .ci/install-test-tools",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: test\n  group_by: ['alertname', 'hostname']\n  \
                 group_wait: 100ms\n  group_interval: 200ms\n  repeat_interval: 1h\n\
                 receivers:\n  - name: test\n    webhook_configs:\n      - url: {receiver}\n        \
                 send_resolved: true\n"
            ),
        )
        .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let am = Alertmanager {
            child,
            addr,
            _dir: dir,
        };
        wait_until("Alertmanager to answer", Duration::from_secs(30), || {
            get(am.addr, "/api/v2/status").is_some_and(|(code, _)| code == 200)
        });
        am
    }

    /// `GET /api/v2/alerts`: the alerts Alertmanager holds as active (resolved ones are left
    /// out by its API).
    fn alerts(&self) -> Vec<Value> {
        match get(self.addr, "/api/v2/alerts") {
            Some((200, body)) => serde_json::from_slice::<Vec<Value>>(&body).unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

/// A plain HTTP/1.0 GET (no chunked answer, the server closes): status and body.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, buf[head_end + 4..].to_vec()))
}

fn label<'a>(alert: &'a Value, name: &str) -> Option<&'a str> {
    alert["labels"][name].as_str()
}

/// Every alert in the bodies of a receiver's requests: Alertmanager's notifications and the
/// webhook output's posts share the `{"alerts": [...]}` shape.
fn received_alerts(server: &HttpServer) -> Vec<Value> {
    server
        .requests()
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .flat_map(|v| v["alerts"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn config(am: SocketAddr, hook: &str, dir: &Path) -> String {
    format!(
        r#"
[listen.tcp]
kind = "tcp"
address = "127.0.0.1:0"

[output.file]
kind = "file"
path = "{dir}/all.log"

[output.am]
kind = "alertmanager"
url = "http://{am}"

[output.hook]
kind = "webhook"
url = "{hook}"

[[route]]
to = ["file"]

[[alert]]
name = "ssh_fail_burst"
kind = "rate"
selector = "auth,authpriv.*"
message = "Failed password"
by = ["hostname"]
window = "1s"
above = 5
for = "0s"
resend_interval = "1s"
to = ["am", "hook"]
"#,
        dir = dir.display()
    )
}

#[test]
fn a_burst_fires_in_alertmanager_and_resolves() {
    // Alertmanager's own receiver, and the webhook output's.
    let am_receiver = HttpServer::ok();
    let hook = HttpServer::ok();
    let am = Alertmanager::start(&am_receiver.url("/am"));
    let dir = tempfile::tempdir().unwrap();
    let d = TestDaemon::start(&config(am.addr, &hook.url("/hook"), dir.path()));
    let lines: Vec<String> = (0..60)
        .map(|i| {
            format!("<38>1 2026-03-01T00:00:00Z web1 sshd {i} - - Failed password for root from 10.0.0.{i} port 22 ssh2")
        })
        .chain((0..60).map(|i| format!("<38>1 2026-03-01T00:00:00Z web2 sshd {i} - - Accepted password for bob")))
        .collect();
    send_lines_to(d.addr("tcp"), lines);

    // Alertmanager holds the alert as active, labelled as Prometheus' ruler labels them.
    let mut active = Vec::new();
    wait_until(
        "the alert active in Alertmanager",
        Duration::from_secs(20),
        || {
            active = am
                .alerts()
                .into_iter()
                .filter(|a| label(a, "alertname") == Some("ssh_fail_burst"))
                .collect();
            !active.is_empty()
        },
    );
    assert_eq!(active.len(), 1, "{active:#?}");
    let a = &active[0];
    assert_eq!(label(a, "hostname"), Some("web1"), "{a:#?}");
    assert_eq!(label(a, "severity"), Some("warning"), "{a:#?}");
    assert_eq!(a["status"]["state"], "active", "{a:#?}");
    let description = a["annotations"]["description"].as_str().unwrap_or_default();
    assert!(
        description.starts_with("rate above threshold for hostname=web1: value ")
            && description.ends_with("(expected at most 5)"),
        "{description}"
    );
    assert!(
        a["generatorURL"]
            .as_str()
            .is_some_and(|u| u.ends_with("/alert/ssh_fail_burst")),
        "{a:#?}"
    );
    // The healthy host raised nothing.
    assert!(
        am.alerts()
            .iter()
            .all(|a| label(a, "hostname") != Some("web2"))
    );

    // No more failures: the next window clears it; Alertmanager drops it from its active
    // alerts and notifies its receiver of the resolution.
    wait_until(
        "the alert resolved in Alertmanager",
        Duration::from_secs(20),
        || {
            am.alerts()
                .iter()
                .all(|a| label(a, "alertname") != Some("ssh_fail_burst"))
        },
    );
    wait_until(
        "Alertmanager's resolved notification",
        Duration::from_secs(20),
        || {
            received_alerts(&am_receiver)
                .iter()
                .any(|a| a["status"] == "resolved" && label(a, "hostname") == Some("web1"))
        },
    );
    let notified = received_alerts(&am_receiver);
    assert!(
        notified
            .iter()
            .any(|a| a["status"] == "firing" && label(a, "alertname") == Some("ssh_fail_burst")),
        "{notified:#?}"
    );

    // The webhook output got the firing once and the resolution once (no re-sends).
    wait_until("the webhook's resolution", Duration::from_secs(10), || {
        received_alerts(&hook)
            .iter()
            .any(|a| a["status"] == "resolved")
    });
    let hooked = received_alerts(&hook);
    let states: Vec<&str> = hooked.iter().filter_map(|a| a["status"].as_str()).collect();
    assert_eq!(states, ["firing", "resolved"], "{hooked:#?}");
    assert_eq!(label(&hooked[0], "hostname"), Some("web1"));
    assert_eq!(hooked[0]["startsAt"], hooked[1]["startsAt"]);
    let requests = hook.requests();
    assert_eq!(requests[0].path, "/hook");
    assert_eq!(requests[0].header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(body["version"], "1");
    assert_eq!(body["source"], "sluice");

    // The rule's counters.
    let m = d.metrics.alert("ssh_fail_burst");
    assert_eq!(sluice::metrics::get(&m.events), 60);
    assert_eq!(sluice::metrics::get(&m.fired), 1);
    assert_eq!(sluice::metrics::get(&m.resolved), 1);
    assert_eq!(sluice::metrics::get(&m.firing), 0);
    assert_eq!(
        sluice::metrics::get(&d.metrics.alert_feed.dropped_queue_full),
        0
    );
    // Alertmanager was sent the alert and its re-sends at /api/v2/alerts, all accepted.
    assert_eq!(d.output_counter("am", "rejected"), 0);
    assert!(d.output_counter("am", "written") >= 2);
}

/// With `[daemon] alert_listener`, firings and resolutions enter the pipeline as events of that
/// listener, which a route writes to a file; the rule's counters reach /metrics.
#[test]
fn alert_events_are_routed_from_the_internal_listener_and_counted() {
    let d = TestDaemon::start(
        r#"
[daemon]
alert_listener = "alerts"

[listen.tcp]
kind = "tcp"
address = "127.0.0.1:0"

[output.all]
kind = "file"
path = "{dir}/all.log"
format = "raw"

[output.alerts]
kind = "file"
path = "{dir}/alerts.log"
format = "raw"

[[route]]
listener = "alerts"
to = ["alerts"]
stop = true

[[route]]
to = ["all"]

[[alert]]
name = "burst"
kind = "rate"
window = "1s"
above = 5
"#,
    );
    let lines: Vec<String> = (0..20)
        .map(|i| format!("<14>1 2026-03-01T00:00:00Z h1 app - - - message {i}"))
        .collect();
    send_lines_to(d.addr("tcp"), lines);
    let alerts = d.path("alerts.log");
    wait_until(
        "a firing and its resolution routed",
        Duration::from_secs(15),
        || crate::support::lines(&alerts).len() >= 2,
    );
    let got = crate::support::lines(&alerts);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got[0].contains(" sluice - ALERT [alert@32473 alertname=\"burst\" state=\"firing\""),
        "{}",
        got[0]
    );
    assert!(got[1].contains("state=\"resolved\""), "{}", got[1]);
    // The alert events fed no rule, and nothing went to the other route.
    crate::support::wait_lines(&d.path("all.log"), 20);
    assert_eq!(crate::support::lines(&d.path("all.log")).len(), 20);
    let m = d.metrics.alert("burst");
    assert_eq!(sluice::metrics::get(&m.events), 20);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(
        &mut text,
        &sluice::exporter::registry(d.metrics.clone()),
    )
    .unwrap();
    for line in [
        "sluice_alert_events_total{alert=\"burst\"} 20",
        "sluice_alert_fired_total{alert=\"burst\"} 1",
        "sluice_alert_resolved_total{alert=\"burst\"} 1",
        "sluice_alert_firing{alert=\"burst\"} 0",
        "sluice_alert_groups_refused_total{alert=\"burst\"} 0",
        "sluice_alert_feed_dropped_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
}

/// The rules are fed every event once, whichever routes took it: none, one output or two
/// (the dispatcher takes the engine's reference from an output's batch at the hand-over).
#[test]
fn rules_count_routed_and_unrouted_events_once() {
    let d = TestDaemon::start(
        r#"
[listen.tcp]
kind = "tcp"
address = "127.0.0.1:0"

[output.a]
kind = "file"
path = "{dir}/a.log"
format = "raw"

[output.b]
kind = "file"
path = "{dir}/b.log"
format = "raw"

[[route]]
app_name = "web"
to = ["a", "b"]

[[route]]
app_name = "api"
to = ["b"]

[[alert]]
name = "all"
kind = "rate"
above = 1000000

[[alert]]
name = "odd"
kind = "rate"
message = "odd"
above = 1000000
"#,
    );
    // 30 events: web (two outputs), api (one), db (no route), each odd or even.
    let lines: Vec<String> = (0..30)
        .map(|i| {
            let app = ["web", "api", "db"][i % 3];
            let parity = if i % 2 == 1 { "odd" } else { "even" };
            format!("<14>1 2026-03-01T00:00:00Z h1 {app} - - - message {i} {parity}")
        })
        .collect();
    send_lines_to(d.addr("tcp"), lines);
    crate::support::wait_lines(&d.path("a.log"), 10);
    crate::support::wait_lines(&d.path("b.log"), 20);
    let counted = |rule: &str, want: u64| {
        let m = d.metrics.alert(rule);
        wait_until(
            &format!("{want} events counted by {rule}"),
            Duration::from_secs(10),
            || sluice::metrics::get(&m.events) >= want,
        );
        assert_eq!(sluice::metrics::get(&m.events), want, "{rule}");
    };
    counted("all", 30);
    counted("odd", 15);
    assert_eq!(crate::support::lines(&d.path("a.log")).len(), 10);
    assert_eq!(crate::support::lines(&d.path("b.log")).len(), 20);
    assert_eq!(sluice::metrics::get(&d.metrics.unrouted), 10);
}

const EXPLAINED: &str = r#"
[listen.udp]
kind = "udp"
address = "127.0.0.1:5514"

[output.f]
kind = "file"
path = "/tmp/sluice-explain-unused.log"

[[route]]
to = ["f"]

[[alert]]
name = "ssh_fail_burst"
kind = "rate"
selector = "auth,authpriv.*"
message = "Failed password"
above = 100

[[alert]]
name = "error_ratio"
kind = "ratio"
selector = "*.err"
above = 0.1

[[alert]]
name = "kernel_only"
kind = "rate"
selector = "kern.*"
above = 1
"#;

#[test]
fn explain_lists_the_alert_rules_a_message_feeds() {
    let (code, out, err) = crate::support::explain_with(
        EXPLAINED,
        &[
            "--explain",
            "<38>1 2026-03-01T00:00:00Z web1 sshd - - - Failed password for root",
        ],
        b"",
    );
    assert_eq!(code, Some(0), "{err}");
    for want in [
        "alert \"ssh_fail_burst\": counted\n",
        "alert \"error_ratio\": counted in the total only\n",
        "alert \"kernel_only\": not fed: selector \"kern.*\" does not select auth.info\n",
        "alerts: ssh_fail_burst, error_ratio\n",
    ] {
        assert!(out.contains(want), "no {want:?} in\n{out}");
    }
}

/// `--learn-baseline` reads log files and writes a baseline a `kind = "baseline"` rule loads;
/// a missing baseline is a config error at its key.
#[test]
fn learn_baseline_writes_what_a_rule_loads() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("messages");
    let mut text = String::new();
    for i in 0..600 {
        // RFC 3164 lines as a syslog file holds them: 10 minutes, one a second, 5% err.
        let pri = if i % 20 == 0 { 11 } else { 14 };
        text.push_str(&format!(
            "<{pri}>Mar  1 00:{:02}:{:02} web1 app[{}]: served /item/{} in {} ms\n",
            i / 60,
            i % 60,
            1000 + i,
            i * 7,
            i % 90
        ));
    }
    std::fs::write(&log, text).unwrap();
    let out = dir.path().join("baseline.json");
    let run = crate::support::sluice()
        .args([
            "--learn-baseline",
            log.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let b: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(b["events"], 600);
    assert_eq!(b["errors"], 30);
    assert_eq!(b["span_seconds"], 599.0);
    assert_eq!(
        b["patterns"][0],
        serde_json::json!(["served /item/<N> in <N> ms", 600])
    );
    let rule = |path: &str| {
        format!(
            "{EXPLAINED}\n[[alert]]\nname = \"vs_baseline\"\nkind = \"baseline\"\nbaseline = \"{path}\"\n"
        )
    };
    let (code, err, _) = crate::support::check_config(&rule(out.to_str().unwrap()));
    assert_eq!(code, Some(0), "{err}");
    let (code, err, _) = crate::support::check_config(&rule("/nonexistent/baseline.json"));
    assert_eq!(code, Some(78));
    assert!(
        err.contains(":35:12: alert[3].baseline: cannot read /nonexistent/baseline.json"),
        "{err}"
    );
}

/// A reload replaces the engine: the new one waits for the old one to save its pattern table,
/// loads it (so templates learnt before the reload do not alert again), and judges the new
/// rules; the stop ends both.
#[test]
fn a_reload_hands_the_engine_over() {
    let config = |above: u32| {
        format!(
            r#"
[daemon]
state_dir = "{{dir}}"
alert_listener = "alerts"

[listen.tcp]
kind = "tcp"
address = "127.0.0.1:0"

[output.alerts]
kind = "file"
path = "{{dir}}/alerts.log"
format = "raw"

[[route]]
listener = "alerts"
to = ["alerts"]

[[alert]]
name = "patterns"
kind = "new_pattern"
warmup_events = 10
window = "1s"

[[alert]]
name = "burst"
kind = "rate"
window = "1s"
above = {above}
"#
        )
    };
    let mut d = TestDaemon::start(&config(1000));
    let line = |i: usize| format!("<14>1 2026-03-01T00:00:00Z h1 app - - - job {i} done");
    send_lines_to(d.addr("tcp"), (0..20).map(line));
    let m = d.metrics.alert("patterns");
    wait_until("20 events judged", Duration::from_secs(10), || {
        sluice::metrics::get(&m.events) >= 20
    });
    d.reload(&config(5)).unwrap();
    // After the reload, a new template first: it alerts only if the new engine loaded the old
    // one's table (warm, 20 events seen); then the known template, which must not alert, and
    // enough messages for the lower threshold to fire.
    send_lines_to(
        d.addr("tcp"),
        std::iter::once("<14>1 2026-03-01T00:00:00Z h1 app - - - disk 3 failed".to_string())
            .chain((20..40).map(line)),
    );
    let alerts = d.path("alerts.log");
    wait_until(
        "the alerts after the reload",
        Duration::from_secs(15),
        || {
            let got = crate::support::lines(&alerts);
            got.iter()
                .any(|l| l.contains("alertname=\"burst\" state=\"firing\""))
                && got
                    .iter()
                    .any(|l| l.contains("alertname=\"patterns\" state=\"firing\""))
        },
    );
    let got = crate::support::lines(&alerts);
    let patterns: Vec<&String> = got
        .iter()
        .filter(|l| l.contains("alertname=\"patterns\" state=\"firing\""))
        .collect();
    assert_eq!(patterns.len(), 1, "{got:#?}");
    assert!(
        patterns[0].contains("label.pattern=\"disk <N> failed\""),
        "{got:#?}"
    );
    assert_eq!(sluice::metrics::get(&m.fired), 1);
    d.stop();
    // The table was saved at the stop.
    let saved = std::fs::read_to_string(d.path("alert-patterns.patterns")).unwrap();
    assert!(saved.contains("\tjob <N> done\n"), "{saved}");
    assert!(saved.contains("\tdisk <N> failed\n"), "{saved}");
}

/// A webhook that fails is retried with a backoff until it takes the alert; nothing is lost.
#[test]
fn a_failing_webhook_is_retried() {
    use crate::support::http_server::Reply;
    let hook = HttpServer::start(|_, n| {
        if n < 2 {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    });
    let d = TestDaemon::start(&format!(
        r#"
[listen.tcp]
kind = "tcp"
address = "127.0.0.1:0"

[output.file]
kind = "file"
path = "{{dir}}/all.log"

[output.hook]
kind = "webhook"
url = "{}"

[[route]]
to = ["file"]

[[alert]]
name = "burst"
kind = "rate"
window = "1s"
above = 5
to = ["hook"]
"#,
        hook.url("/hook")
    ));
    send_lines_to(
        d.addr("tcp"),
        (0..20).map(|i| format!("<14>1 2026-03-01T00:00:00Z h1 app - - - message {i}")),
    );
    wait_until(
        "the firing and resolution delivered",
        Duration::from_secs(20),
        || {
            let delivered: Vec<Value> = hook
                .requests()
                .iter()
                .filter(|r| r.stored())
                .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
                .flat_map(|v| v["alerts"].as_array().cloned().unwrap_or_default())
                .collect();
            delivered.iter().any(|a| a["status"] == "firing")
                && delivered.iter().any(|a| a["status"] == "resolved")
        },
    );
    assert_eq!(hook.answered(503), 2);
    assert!(d.output_counter("hook", "retries") >= 2);
    assert_eq!(d.output_counter("hook", "rejected"), 0);
}
