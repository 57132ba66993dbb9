//! The `tail` listener (issue 20), run as a user runs it: the sluice binary following real files
//! in a temporary directory, rotated by Debian's logrotate or by a writer, killed with SIGKILL
//! and started again. Every test counts each sequence-numbered line it wrote in what sluice
//! delivered: lost and doubled lines are both failures (or, where a rotation loses lines by
//! design, measured and printed).

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sluice::listen::tail::DEFAULT_SCAN_INTERVAL;

use crate::support::*;

/// A sluice config: one tail listener `app` with `keys`, its events written to `{dir}/out.log`
/// (output `out`) in `format`, positions under `{dir}/state`, metrics served.
fn tail_config(dir: &Path, keys: &str, format: &str) -> String {
    format!(
        r#"
[daemon]
state_dir = "{d}/state"
metrics_address = "127.0.0.1:0"

[listen.app]
kind = "tail"
{keys}

[output.out]
kind = "file"
path = "{d}/out.log"
format = "{format}"
fsync = "every_batch"

[[route]]
to = ["out"]
"#,
        d = dir.display()
    )
}

/// Starts sluice on `toml` (written to `dir/sluice.toml`; it serves metrics) and waits until
/// each of its tail listeners has done its first scan (`scans_total` at least 1).
fn start(dir: &Path, toml: &str) -> Proc {
    let config = dir.join("sluice.toml");
    std::fs::write(&config, toml).unwrap();
    let p = Proc::start(Some(&config), 1);
    let metrics = p.addr("metrics");
    wait_until("the first scan of every tail listener", DEADLINE, || {
        let text = scrape_text(metrics);
        let scans: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("sluice_listener_scans_total{"))
            .collect();
        !scans.is_empty() && scans.iter().all(|l| !l.ends_with(" 0"))
    });
    p
}

/// Listener `app`'s and output `out`'s counters on a sluice process's metrics endpoint, by
/// the names it shows without the prefix: `scans_total`, `bytes_behind`, `received_total`, and
/// `written_total` (the output's).
fn endpoint_counters(metrics: SocketAddr) -> impl Fn(&str) -> u64 {
    move |name| {
        let series = match name {
            "written_total" => r#"sluice_output_written_total{output="out"}"#.to_string(),
            _ => format!("sluice_listener_{name}{{listener=\"app\"}}"),
        };
        scrape(metrics, &series)
    }
}

/// [`endpoint_counters`] of an in-process daemon.
fn daemon_counters(d: &TestDaemon) -> impl Fn(&str) -> u64 + '_ {
    move |name| match name {
        "written_total" => d.output_counter("out", "written"),
        _ => {
            let field = name.trim_end_matches("_total");
            d.listener("app")
                .snapshot()
                .into_iter()
                .find(|(n, _)| *n == field)
                .unwrap_or_else(|| panic!("no listener counter {field}"))
                .1
        }
    }
}

/// Waits until nothing more can come from listener `app` through output `out` unless a file
/// is written again: the listener has completed two scans of its globs since the call (so one
/// began after it, and every file the globs match now was looked at), its files hold nothing
/// it has not read, and the output wrote every event the listener received. What a test then
/// reads from the output is final, so "exactly once" means no copy comes late. The deadline
/// allows for the two scans, `scan_interval` apart.
fn wait_quiet(counter: impl Fn(&str) -> u64, scan_interval: Duration) {
    let scans = counter("scans_total");
    wait_until(
        "the tail listener and its output to be quiet",
        DEADLINE + 2 * scan_interval,
        || {
            // In this order: a scan is counted after its round's gauges are published, so the
            // gauge read after the count rose covers that scan; the output's count is read
            // after the listener's, so it cannot lag behind events received later.
            counter("scans_total") >= scans + 2
                && counter("bytes_behind") == 0
                && counter("received_total") == counter("written_total")
        },
    );
}

/// The line a writer writes for number `i`.
fn seq_line(i: usize) -> String {
    format!("seq={i:08} the quick brown fox jumps over the lazy dog")
}

/// How often each sequence number appears in `text`.
fn count_seqs(text: &[u8], counts: &mut HashMap<usize, usize>) {
    let text = String::from_utf8_lossy(text);
    for part in text.split("seq=").skip(1) {
        if let Some(n) = part.get(..8).and_then(|d| d.parse().ok()) {
            *counts.entry(n).or_default() += 1;
        }
    }
}

fn delivered(dir: &Path) -> HashMap<usize, usize> {
    let mut counts = HashMap::new();
    count_seqs(
        &std::fs::read(dir.join("out.log")).unwrap_or_default(),
        &mut counts,
    );
    counts
}

/// Waits until `n` distinct numbers were delivered; returns the counts.
fn wait_delivered(dir: &Path, n: usize, deadline: Duration) -> HashMap<usize, usize> {
    let mut counts = HashMap::new();
    wait_until(&format!("{n} lines delivered"), deadline, || {
        counts = delivered(dir);
        counts.len() >= n
    });
    counts
}

/// Lines delivered more than once, summed over their extra copies.
fn duplicates(counts: &HashMap<usize, usize>) -> usize {
    counts.values().map(|c| c - 1).sum()
}

fn assert_exactly_once(counts: &HashMap<usize, usize>, n: usize) {
    let missing: Vec<usize> = (0..n).filter(|i| !counts.contains_key(i)).collect();
    assert!(
        missing.is_empty(),
        "{} lines lost, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let doubled: Vec<(&usize, &usize)> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        doubled.is_empty(),
        "{} lines doubled, e.g. {:?}",
        doubled.len(),
        &doubled[..doubled.len().min(5)]
    );
}

/// The files sluice (`pid`) has open whose path contains `name`.
fn open_fds(pid: u32, name: &str) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p.contains(name))
        .collect()
}

/// The offset saved for the file at `path` in a positions file (`DEV INODE OFFSET FP_LEN
/// FP_CRC PATH` lines), if it holds one.
fn saved_offset(positions: &Path, path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(positions).ok()?;
    text.lines().skip(1).find_map(|l| {
        let fields: Vec<&str> = l.splitn(6, ' ').collect();
        (fields.len() == 6 && Path::new(fields[5]) == path).then(|| fields[2].parse().unwrap())
    })
}

/// Appends lines `from..to` to `path`, `batch` per open-write-close (as a program that opens
/// its log for each record, or `>>` in a shell, does). A missing file (between logrotate's
/// rename and its create) is waited for, not created: logrotate creates it.
fn append_reopening(path: &Path, from: usize, to: usize, batch: usize, pause: Duration) {
    let mut i = from;
    while i < to {
        let mut buf = String::new();
        for k in i..(i + batch).min(to) {
            buf.push_str(&seq_line(k));
            buf.push('\n');
        }
        let mut f = loop {
            match std::fs::OpenOptions::new().append(true).open(path) {
                Ok(f) => break f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{}: {e}", path.display()),
            }
        };
        f.write_all(buf.as_bytes()).unwrap();
        i = (i + batch).min(to);
        std::thread::sleep(pause);
    }
}

/// `DIR/logs/app.log`, created empty: the directory and the file.
fn empty_app_log(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let logs = dir.join("logs");
    std::fs::create_dir(&logs).unwrap();
    let log = logs.join("app.log");
    std::fs::write(&log, "").unwrap();
    (logs, log)
}

/// `DIR/logrotate.conf` rotating `log` with `directives`, one per line.
fn logrotate_conf(dir: &Path, log: &Path, directives: &[&str]) -> std::path::PathBuf {
    let conf = dir.join("logrotate.conf");
    let body: String = directives.iter().map(|d| format!("    {d}\n")).collect();
    std::fs::write(&conf, format!("{} {{\n{body}}}\n", log.display())).unwrap();
    conf
}

fn logrotate(conf: &Path, state: &Path) {
    let out = Command::new(tools_root().join("usr/sbin/logrotate"))
        .arg("-f")
        .arg("-s")
        .arg(state)
        .arg(conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "logrotate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn new_files_are_followed_from_their_start_and_deleted_ones_let_go() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    // There before the first start: read from its end (start_at = "end").
    std::fs::write(logs.join("old.log"), "before the start\n").unwrap();
    let p = start(
        dir.path(),
        &tail_config(
            dir.path(),
            &format!(
                r#"paths = ["{}/*.log"]
app_name = "shop"
facility = "local1"
severity = "info"
scan_interval = "500ms""#,
                logs.display()
            ),
            "json",
        ),
    );
    let mut old = std::fs::OpenOptions::new()
        .append(true)
        .open(logs.join("old.log"))
        .unwrap();
    old.write_all(b"after the start\n").unwrap();
    // Created after the start: found by the glob, read from its beginning.
    std::fs::write(logs.join("new.log"), b"new one\nnew two\xff\n").unwrap();
    std::fs::write(logs.join("new.log.1.gz"), "not text\n").unwrap();
    let events = wait_json(&dir.path().join("out.log"), 3);
    let mut messages: Vec<String> = events
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    messages.sort();
    assert_eq!(
        messages,
        vec!["after the start", "new one", "new two\u{FFFD}"],
        "{events:?}"
    );
    for e in &events {
        assert_eq!(e["app_name"], "shop");
        assert_eq!(e["facility"], "local1");
        assert_eq!(e["severity"], "info");
        assert_eq!(e["hostname"], hostname().as_str());
        assert_eq!(e["listener"], "app");
    }
    assert_eq!(open_fds(p.pid(), "new.log").len(), 1);
    assert!(
        open_fds(p.pid(), ".gz").is_empty(),
        "compressed files are never opened"
    );

    std::fs::remove_file(logs.join("new.log")).unwrap();
    wait_until("the deleted file's descriptor closed", DEADLINE, || {
        open_fds(p.pid(), "new.log").is_empty()
    });
    assert_eq!(open_fds(p.pid(), "old.log").len(), 1);
    // Letting the deleted file go sends nothing more.
    wait_quiet(
        endpoint_counters(p.addr("metrics")),
        Duration::from_millis(500),
    );
    assert_eq!(json_lines(&dir.path().join("out.log")).len(), 3);
}

#[test]
fn a_10mb_line_without_lf_is_cut_and_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let _p = start(
        dir.path(),
        &tail_config(
            dir.path(),
            &format!(
                "paths = [\"{}/*.log\"]\nmax_line_bytes = \"64KiB\"",
                logs.display()
            ),
            "json",
        ),
    );
    let mut f = std::fs::File::create(logs.join("big.log")).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..10 {
        f.write_all(&chunk).unwrap();
    }
    let events = wait_json(&dir.path().join("out.log"), 1);
    assert_eq!(events[0]["truncated"], true);
    assert_eq!(events[0]["message"].as_str().unwrap().len(), 64 * 1024);
    // The rest of the long line is skipped; the next line is whole.
    f.write_all(b"xxxx\nnext line\n").unwrap();
    let events = wait_json(&dir.path().join("out.log"), 2);
    assert_eq!(events[1]["message"], "next line");
    assert!(events[1].get("truncated").is_none());
}

/// The records of a sample: each starts at a line beginning with a date.
fn records(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.starts_with("2026-") || out.is_empty() {
            out.push(line.to_string());
        } else {
            let last = out.last_mut().unwrap();
            last.push('\n');
            last.push_str(line);
        }
    }
    out
}

#[test]
fn java_and_python_traces_become_one_event_each() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let java = include_str!("data/tail_java_trace.log");
    let python = include_str!("data/tail_python_traceback.log");
    std::fs::write(logs.join("java.log"), java).unwrap();
    std::fs::write(logs.join("python.log"), python).unwrap();
    let p = start(
        dir.path(),
        &tail_config(
            dir.path(),
            &format!(
                r#"paths = ["{}/*.log"]
start_at = "beginning"
multiline = {{ start = '^\d{{4}}-\d{{2}}-\d{{2}} ', timeout = "300ms" }}"#,
                logs.display()
            ),
            "json",
        ),
    );
    let mut want: Vec<String> = records(java).into_iter().chain(records(python)).collect();
    assert_eq!(want.len(), 5 + 5);
    let events = wait_json(&dir.path().join("out.log"), want.len());
    let mut got: Vec<String> = events
        .iter()
        .map(|e| e["message"].as_str().unwrap().replace("\\x09", "\t"))
        .collect();
    got.sort();
    want.sort();
    // Control characters are escaped by the JSON writer as \n and \t; compare unescaped.
    assert_eq!(got, want);
    // No record is held for more lines either: the positions saved (up to the first byte of a
    // record not yet handed on) are both files' ends.
    let positions = dir.path().join("state/tail/app.positions");
    wait_until("both files' ends saved as positions", DEADLINE, || {
        ["java.log", "python.log"].iter().all(|name| {
            saved_offset(&positions, &logs.join(name))
                == std::fs::metadata(logs.join(name)).ok().map(|m| m.len())
        })
    });
    wait_quiet(endpoint_counters(p.addr("metrics")), DEFAULT_SCAN_INTERVAL);
    assert_eq!(json_lines(&dir.path().join("out.log")).len(), want.len());
}

/// A writer appends `n` lines (reopening the file per batch) while logrotate rotates with
/// `create` `rotations` times: every line is delivered exactly once.
#[test]
fn logrotate_create_loses_and_doubles_nothing() {
    const N: usize = 60_000;
    const ROTATIONS: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let (logs, log) = empty_app_log(dir.path());
    let p = start(
        dir.path(),
        &tail_config(
            dir.path(),
            &format!("paths = [\"{}\"]\nscan_interval = \"1s\"", log.display()),
            "raw",
        ),
    );
    let conf = logrotate_conf(dir.path(), &log, &["create", "rotate 30", "missingok"]);
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (log, written) = (log.clone(), written.clone());
        std::thread::spawn(move || {
            for start in (0..N).step_by(1000) {
                append_reopening(&log, start, start + 1000, 100, Duration::from_millis(2));
                written.store(start + 1000, Ordering::Relaxed);
            }
        })
    };
    for k in 1..=ROTATIONS {
        let at = N * k / (ROTATIONS + 1);
        wait_until(&format!("{at} written"), DEADLINE * 4, || {
            written.load(Ordering::Relaxed) >= at
        });
        logrotate(&conf, &dir.path().join("logrotate.state"));
    }
    writer.join().unwrap();
    let counts = wait_delivered(dir.path(), N, DEADLINE * 4);
    assert!(logs.join(format!("app.log.{ROTATIONS}")).exists());
    wait_quiet(endpoint_counters(p.addr("metrics")), Duration::from_secs(1));
    assert_exactly_once(&delivered(dir.path()), N);
    assert_eq!(counts.len(), N);
}

/// copytruncate + delaycompress: the writer keeps its file open (O_APPEND) while logrotate copies
/// it and truncates it. Lines written between the copy and the truncate are lost from the disk by
/// design; sluice doubles nothing, and every line it misses is at a rotation. The figure is
/// printed (see README, "Rotation").
#[test]
fn logrotate_copytruncate_doubles_nothing_and_loses_only_at_the_truncate() {
    const N: usize = 60_000;
    const ROTATIONS: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let (logs, log) = empty_app_log(dir.path());
    let p = start(
        dir.path(),
        &tail_config(
            dir.path(),
            &format!("paths = [\"{}\"]", log.display()),
            "raw",
        ),
    );
    let conf = logrotate_conf(
        dir.path(),
        &log,
        &[
            "copytruncate",
            "compress",
            "delaycompress",
            "rotate 30",
            "missingok",
        ],
    );
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (log, written) = (log.clone(), written.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            for start in (0..N).step_by(100) {
                let mut buf = String::new();
                for i in start..start + 100 {
                    buf.push_str(&seq_line(i));
                    buf.push('\n');
                }
                f.write_all(buf.as_bytes()).unwrap();
                written.store(start + 100, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    for k in 1..=ROTATIONS {
        let at = N * k / (ROTATIONS + 1);
        wait_until(&format!("{at} written"), DEADLINE * 4, || {
            written.load(Ordering::Relaxed) >= at
        });
        logrotate(&conf, &dir.path().join("logrotate.state"));
    }
    writer.join().unwrap();
    // What is on disk now: the live file, app.log.1 (delaycompress) and the .gz ones.
    let mut on_disk = HashMap::new();
    for e in std::fs::read_dir(&logs).unwrap().flatten() {
        count_seqs(&read_gunzipped(&e.path()), &mut on_disk);
    }
    assert!(logs.join("app.log.2.gz").exists());
    assert!(logs.join("app.log.1").exists());
    let last = N - 1;
    wait_until("the last line delivered", DEADLINE * 4, || {
        delivered(dir.path()).contains_key(&last)
    });
    wait_quiet(endpoint_counters(p.addr("metrics")), DEFAULT_SCAN_INTERVAL);
    let counts = delivered(dir.path());
    assert_eq!(duplicates(&counts), 0, "copytruncate doubled lines");
    let lost: Vec<usize> = (0..N).filter(|i| !counts.contains_key(i)).collect();
    // Lost lines come in runs, one per truncate at most.
    let runs = lost.windows(2).filter(|w| w[1] != w[0] + 1).count() + usize::from(!lost.is_empty());
    let lost_on_disk = (0..N).filter(|i| !on_disk.contains_key(i)).count();
    eprintln!(
        "copytruncate: {} of {N} lines not delivered over {ROTATIONS} rotations ({runs} runs); {lost_on_disk} also missing from the files on disk",
        lost.len()
    );
    assert!(runs <= ROTATIONS, "{runs} runs of lost lines: {lost:?}");
}

/// A writer appends 1,000,000 numbered lines (about 90,000 a second) and renames its file away
/// 20 times (rename, then a new file under the name, as logrotate's `create` with a signalled
/// writer does): every line is delivered exactly once. About 20 s in the debug build.
#[test]
fn a_million_lines_over_twenty_rotations_lose_and_double_nothing() {
    const N: usize = 1_000_000;
    const ROTATIONS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let (logs, log) = empty_app_log(dir.path());
    let p = start(
        dir.path(),
        &tail_config(
            dir.path(),
            &format!("paths = [\"{}\"]", log.display()),
            "raw",
        ),
    );
    let per_file = N / (ROTATIONS + 1) + 1;
    let mut f =
        std::io::BufWriter::new(std::fs::OpenOptions::new().append(true).open(&log).unwrap());
    let started = Instant::now();
    for i in 0..N {
        writeln!(f, "{}", seq_line(i)).unwrap();
        if i % 500 == 499 {
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        if i % per_file == per_file - 1 {
            f.flush().unwrap();
            // Replaces the previous app.log.1: sluice may still be reading it (deleted, open).
            std::fs::rename(&log, logs.join("app.log.1")).unwrap();
            f = std::io::BufWriter::new(std::fs::File::create(&log).unwrap());
        }
    }
    f.flush().unwrap();
    drop(f);
    eprintln!(
        "wrote {N} lines with {ROTATIONS} rotations in {:?}",
        started.elapsed()
    );
    wait_delivered(dir.path(), N, DEADLINE * 8);
    wait_quiet(endpoint_counters(p.addr("metrics")), DEFAULT_SCAN_INTERVAL);
    assert_exactly_once(&delivered(dir.path()), N);
}

/// SIGKILL mid-stream, then a restart: nothing lost, and the lines read twice are at most what
/// sluice handed on in one `checkpoint_interval` (plus one read of 256 KiB).
#[test]
fn kill_9_mid_stream_loses_nothing_and_doubles_at_most_a_checkpoint_interval() {
    const N: usize = 60_000;
    const RATE_PER_S: usize = 10_000;
    const CHECKPOINT: Duration = Duration::from_millis(500);
    let dir = tempfile::tempdir().unwrap();
    let (_, log) = empty_app_log(dir.path());
    let toml = tail_config(
        dir.path(),
        &format!(
            "paths = [\"{}\"]\ncheckpoint_interval = \"{}ms\"",
            log.display(),
            CHECKPOINT.as_millis()
        ),
        "raw",
    );
    let mut p = start(dir.path(), &toml);
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (log, done) = (log.clone(), done.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            let batch = RATE_PER_S / 100;
            for start in (0..N).step_by(batch) {
                let mut buf = String::new();
                for i in start..start + batch {
                    buf.push_str(&seq_line(i));
                    buf.push('\n');
                }
                f.write_all(buf.as_bytes()).unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
            done.store(true, Ordering::Relaxed);
        })
    };
    wait_delivered(dir.path(), N / 3, DEADLINE * 2);
    p.signal(libc::SIGKILL);
    p.wait();
    let before = delivered(dir.path()).len();
    assert!(before < N, "the kill came after the end");
    let p = start(dir.path(), &toml);
    writer.join().unwrap();
    assert!(done.load(Ordering::Relaxed));
    wait_delivered(dir.path(), N, DEADLINE * 4);
    wait_quiet(endpoint_counters(p.addr("metrics")), DEFAULT_SCAN_INTERVAL);
    let counts = delivered(dir.path());
    let doubled = duplicates(&counts);
    let line_bytes = seq_line(0).len() + 1;
    let bound = RATE_PER_S * CHECKPOINT.as_millis() as usize / 1000 + 256 * 1024 / line_bytes;
    eprintln!("kill -9 at {before} lines: {doubled} read twice (bound {bound})");
    assert!((0..N).all(|i| counts.contains_key(&i)), "lines lost");
    assert!(doubled <= bound, "{doubled} lines doubled, over {bound}");
}

#[test]
fn positions_survive_a_restart_and_a_corrupt_positions_file_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let (logs, log) = empty_app_log(dir.path());
    let toml = tail_config(
        dir.path(),
        &format!("paths = [\"{}/*.log\"]", logs.display()),
        "raw",
    );
    let mut p = start(dir.path(), &toml);
    append_reopening(&log, 0, 100, 100, Duration::ZERO);
    wait_delivered(dir.path(), 100, DEADLINE);
    p.signal(libc::SIGTERM);
    assert!(p.wait().success());
    // Written while sluice is down: read at the next start, from the saved position.
    append_reopening(&log, 100, 200, 100, Duration::ZERO);
    // Created while it is down, after its first run: read from its beginning.
    let other = logs.join("other.log");
    std::fs::write(&other, "").unwrap();
    append_reopening(&other, 200, 250, 50, Duration::ZERO);
    let mut p = start(dir.path(), &toml);
    let counts = wait_delivered(dir.path(), 250, DEADLINE);
    assert_exactly_once(&counts, 250);
    p.signal(libc::SIGTERM);
    assert!(p.wait().success());

    let positions = dir.path().join("state/tail/app.positions");
    assert!(
        std::fs::read_to_string(&positions)
            .unwrap()
            .starts_with("sluice-tail-positions 1\n")
    );
    std::fs::write(&positions, "garbage\n").unwrap();
    let config = dir.path().join("sluice.toml");
    let p = Proc::start(Some(&config), 0);
    let warning = p.wait_log("positions file unreadable");
    assert!(warning.contains("app.positions:1"), "{warning}");
    // Read again from the beginning: doubled, not lost.
    wait_until("every line read again", DEADLINE, || {
        delivered(dir.path()).values().all(|&c| c == 2)
    });
    assert!(dir.path().join("state/tail/app.positions.corrupt").exists());
}

#[test]
fn check_config_names_a_bad_regex_with_its_key_and_line() {
    let (code, stderr, path) = check_config(
        r#"
[listen.app]
kind = "tail"
paths = ["/var/log/app/*.log", "relative/*.log"]
multiline = { start = '^(unclosed', max_lines = 0 }
start_at = "middle"
rate_limit = { messages = 10 }

[output.out]
kind = "stdout"
"#,
    );
    assert_eq!(code, Some(78), "{stderr}");
    for want in [
        format!("{path}:5:"),
        "listen.app.multiline.start: invalid regular expression".to_string(),
        "listen.app.multiline.max_lines".to_string(),
        "listen.app.paths: invalid glob \"relative/*.log\"".to_string(),
        "listen.app.start_at: unknown value \"middle\"".to_string(),
        "listen.app.rate_limit: not valid for kind = \"tail\"".to_string(),
    ] {
        assert!(stderr.contains(&want), "{want:?} not in:\n{stderr}");
    }
}

/// A reload that changes a tail listener restarts it; the new one goes on from the positions
/// the old one saved as it stopped: nothing lost, nothing read twice.
#[test]
fn a_changed_listener_goes_on_from_its_positions_after_a_reload() {
    let toml = |app: &str| {
        format!(
            r#"
[daemon]
state_dir = "{{dir}}/state"

[listen.app]
kind = "tail"
paths = ["{{dir}}/app.log"]
start_at = "beginning"
app_name = "{app}"

[output.out]
kind = "file"
path = "{{dir}}/out.log"
format = "raw"

[[route]]
to = ["out"]
"#
        )
    };
    let d = TestDaemon::start(&toml("before"));
    let log = d.path("app.log");
    std::fs::write(&log, "").unwrap();
    append_reopening(&log, 0, 1000, 100, Duration::ZERO);
    wait_delivered(d.dir.path(), 1000, DEADLINE);
    d.reload(&toml("after")).unwrap();
    append_reopening(&log, 1000, 2000, 100, Duration::ZERO);
    let counts = wait_delivered(d.dir.path(), 2000, DEADLINE);
    wait_quiet(daemon_counters(&d), DEFAULT_SCAN_INTERVAL);
    assert_exactly_once(&delivered(d.dir.path()), 2000);
    assert_eq!(counts.len(), 2000);
    let out = std::fs::read_to_string(d.path("out.log")).unwrap();
    assert!(
        out.contains(&format!(
            " after - - [file@32473 path=\"{}\"] seq=00001999",
            log.display()
        )),
        "{}",
        &out[out.len() - 200..]
    );
}

/// Under `when_full = "block"` a full output pauses reading: the file is the buffer. Nothing is
/// read ahead into memory (`bytes_behind` stays high), and once the output drains every line
/// comes, in order.
#[test]
fn a_full_block_output_pauses_reading_and_loses_nothing() {
    use std::io::BufRead;
    const N: usize = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let mut text = String::new();
    for i in 0..N {
        text.push_str(&seq_line(i));
        text.push('\n');
    }
    std::fs::write(&log, &text).unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[daemon]
state_dir = "{d}/state"
metrics_address = "127.0.0.1:0"

[listen.app]
kind = "tail"
paths = ["{d}/app.log"]
start_at = "beginning"

[output.o]
kind = "stdout"
format = "raw"
queue = {{ max_events = 100, when_full = "block" }}

[[route]]
to = ["o"]
"#,
            d = dir.path().display()
        ),
    )
    .unwrap();
    // stdout is a pipe nobody reads yet: the output blocks once it is full.
    let mut p = Proc::start(Some(&config), 1);
    let metrics = p.addr("metrics");
    let behind = r#"sluice_listener_bytes_behind{listener="app"}"#;
    let received = r#"sluice_listener_received_total{listener="app"}"#;
    // Wait for the jam rather than for time: the stdout pipe is full (the output's write to it
    // blocks), and the listener waits for room in the output's full queue (`senders_waiting`).
    // From here the output can take at most what its buffer holds before its next write blocks
    // too, so the counts read now are what reading ahead would have raised.
    let pipe = p.child.stdout.as_ref().unwrap();
    let waiting = r#"sluice_output_senders_waiting{output="o"}"#;
    wait_until(
        "the pipe full and the listener waiting for room",
        DEADLINE,
        || pipe_full(pipe) && scrape(metrics, waiting) >= 1,
    );
    let (got, left) = (scrape(metrics, received), scrape(metrics, behind));
    assert!(
        got < N as u64 / 10,
        "{got} lines read while the output was full"
    );
    assert!(left > text.len() as u64 / 2, "only {left} bytes behind");
    assert_eq!(
        scrape(metrics, r#"sluice_listener_files_open{listener="app"}"#),
        1
    );

    let stdout = p.child.stdout.take().unwrap();
    let lines: Vec<String> = std::io::BufReader::new(stdout)
        .lines()
        .take(N)
        .map(Result::unwrap)
        .collect();
    for (i, l) in lines.iter().enumerate() {
        assert!(l.ends_with(&seq_line(i)), "line {i}: {l}");
    }
    wait_until("nothing behind", DEADLINE, || scrape(metrics, behind) == 0);
}

/// True when the pipe whose read end is `pipe` is full: it holds (`FIONREAD`) more than its
/// size (`F_GETPIPE_SZ`) less a page. The kernel keeps a pipe's data in pages and a write that
/// finds no free page blocks, so one writer's pipe is full with its last page partly used.
fn pipe_full(pipe: &impl std::os::fd::AsRawFd) -> bool {
    let fd = pipe.as_raw_fd();
    let mut unread: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer; F_GETPIPE_SZ takes no argument.
    let (ok, size) = unsafe {
        (
            libc::ioctl(fd, libc::FIONREAD, &mut unread),
            libc::fcntl(fd, libc::F_GETPIPE_SZ),
        )
    };
    assert!(
        ok == 0 && size > 0,
        "FIONREAD/F_GETPIPE_SZ on the pipe failed"
    );
    // SAFETY: sysconf has no memory effects.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as libc::c_int;
    unread > size - page
}

/// `parse = "json"` keeps a JSON object line as an object in the JSON format, and flags a line
/// that is not one; `parse = "syslog"` reads a line's own syslog fields.
#[test]
fn json_and_syslog_lines_are_parsed_as_asked() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::fs::write(
        logs.join("app.json"),
        "{\"level\":\"warn\",\"msg\":\"disk\",\"free\":3}\nnot json\n",
    )
    .unwrap();
    std::fs::write(
        logs.join("relay.log"),
        "<34>1 2026-03-14T09:30:00Z gw su - ID47 - 'su root' failed\n",
    )
    .unwrap();
    let config = format!(
        r#"
[daemon]
state_dir = "{d}/state"
metrics_address = "127.0.0.1:0"

[listen.json]
kind = "tail"
paths = ["{d}/logs/*.json"]
start_at = "beginning"
parse = "json"

[listen.relay]
kind = "tail"
paths = ["{d}/logs/*.log"]
start_at = "beginning"
parse = "syslog"

[output.out]
kind = "file"
path = "{d}/out.log"
format = "json"

[[route]]
to = ["out"]
"#,
        d = dir.path().display()
    );
    let _p = start(dir.path(), &config);
    let events = wait_json(&dir.path().join("out.log"), 3);
    let by_msg = |m: &str| {
        events
            .iter()
            .find(|e| e["message"].as_str().unwrap().contains(m))
            .unwrap_or_else(|| panic!("no {m:?} in {events:?}"))
    };
    let json = by_msg("disk");
    assert_eq!(json["fields"]["free"], 3, "{json}");
    assert_eq!(json["fields"]["level"], "warn");
    assert!(json.get("parse_error").is_none());
    let bad = by_msg("not json");
    assert!(bad.get("fields").is_none());
    assert!(
        bad["parse_error"]
            .as_str()
            .unwrap()
            .starts_with("invalid_json"),
        "{bad}"
    );
    let relay = by_msg("su root");
    assert_eq!(relay["hostname"], "gw");
    assert_eq!(relay["app_name"], "su");
    assert_eq!(relay["facility"], "auth");
    assert_eq!(relay["severity"], "crit");
    assert_eq!(relay["message"], "'su root' failed");
    // A syslog line's own SD is kept, and the file's element is added to it.
    assert_eq!(
        relay["structured_data"]["file@32473"]["path"],
        logs.join("relay.log").display().to_string(),
        "{relay}"
    );
}

/// The path of each line's file is on its event as `[file@32473 path="..."]`: two files of
/// one listener told apart in the JSON format, and in the frame a `raw` output writes.
#[test]
fn each_event_names_its_file_in_structured_data() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    // A name that needs SD escaping (`]`) and one that does not.
    let (a, b) = (logs.join("access.log"), logs.join("err]or.log"));
    std::fs::write(&a, "GET /a 200\nGET /b 404\n").unwrap();
    std::fs::write(&b, "upstream timed out\n").unwrap();
    let config = format!(
        r#"
[daemon]
state_dir = "{d}/state"
metrics_address = "127.0.0.1:0"

[listen.web]
kind = "tail"
paths = ["{d}/logs/*.log"]
start_at = "beginning"

[output.json]
kind = "file"
path = "{d}/out.json"
format = "json"

[output.raw]
kind = "file"
path = "{d}/out.raw"
format = "raw"

[[route]]
to = ["json", "raw"]
"#,
        d = dir.path().display()
    );
    let _p = start(dir.path(), &config);
    let events = wait_json(&dir.path().join("out.json"), 3);
    let mut got: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            let path = &e["structured_data"]["file@32473"]["path"];
            (
                e["message"].as_str().unwrap().to_string(),
                path.as_str()
                    .unwrap_or_else(|| panic!("no path in {e}"))
                    .to_string(),
            )
        })
        .collect();
    got.sort();
    let name = |p: &Path| p.display().to_string();
    assert_eq!(
        got,
        [
            ("GET /a 200".to_string(), name(&a)),
            ("GET /b 404".to_string(), name(&a)),
            ("upstream timed out".to_string(), name(&b)),
        ]
    );
    wait_lines(&dir.path().join("out.raw"), 3);
    let raw = std::fs::read_to_string(dir.path().join("out.raw")).unwrap();
    let escaped = name(&b).replace(']', "\\]");
    assert!(
        raw.contains(&format!(
            " web - - [file@32473 path=\"{escaped}\"] upstream timed out\n"
        )),
        "{raw}"
    );
}

/// With more matching files than `max_open_files`, the others wait (`files_waiting`), and a
/// file read to its end and unchanged for a scan gives its slot to one of them: every line of
/// every file comes exactly once, and sluice never holds more than `max_open_files` of them.
/// A file that gave up its slot goes on from its position when its turn comes again.
#[test]
fn max_open_files_rotates_through_waiting_files() {
    const FILES: usize = 5;
    const PER_FILE: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let log = |k: usize| logs.join(format!("app{k}.log"));
    for k in 0..FILES {
        let mut text = String::new();
        for i in k * PER_FILE..(k + 1) * PER_FILE {
            text.push_str(&seq_line(i));
            text.push('\n');
        }
        std::fs::write(log(k), text).unwrap();
    }
    let config = format!(
        r#"
[daemon]
state_dir = "{d}/state"
metrics_address = "127.0.0.1:0"

[listen.app]
kind = "tail"
paths = ["{d}/logs/*.log"]
start_at = "beginning"
max_open_files = 2
scan_interval = "200ms"

[output.out]
kind = "file"
path = "{d}/out.log"
format = "raw"

[[route]]
to = ["out"]
"#,
        d = dir.path().display()
    );
    let config_path = dir.path().join("sluice.toml");
    std::fs::write(&config_path, &config).unwrap();
    let p = Proc::start(Some(&config_path), 1);
    let metrics = p.addr("metrics");
    let gauge = |name: &str| {
        scrape(
            metrics,
            &format!("sluice_listener_{name}{{listener=\"app\"}}"),
        )
    };
    // Sampled as often as the poll allows while the files are read: never more than 2 open.
    let logs_dir = logs.display().to_string();
    let most_open = std::cell::Cell::new(0);
    let sample = || {
        let open = open_fds(p.pid(), &logs_dir).len();
        most_open.set(most_open.get().max(open));
    };
    wait_until("every line of the 5 files", Duration::from_secs(30), || {
        sample();
        delivered(dir.path()).len() >= FILES * PER_FILE
    });
    let most = most_open.get();
    assert!(most <= 2, "{most} of the files open at once");
    assert_eq!(gauge("files_open"), 2);
    assert_eq!(gauge("files_waiting"), (FILES - 2) as u64);
    assert!(
        gauge("files_parked_total") >= (FILES - 2) as u64,
        "3 files had to give up their slots"
    );

    // Lines added to every file later come too, each once, read from where each stopped.
    for k in 0..FILES {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(log(k))
            .unwrap();
        let i = FILES * PER_FILE + k;
        f.write_all(format!("{}\n", seq_line(i)).as_bytes())
            .unwrap();
    }
    let n = FILES * PER_FILE + FILES;
    wait_until("the added lines", Duration::from_secs(30), || {
        sample();
        delivered(dir.path()).len() >= n
    });
    wait_quiet(endpoint_counters(metrics), Duration::from_millis(200));
    sample();
    let most = most_open.get();
    assert!(most <= 2, "{most} of the files open at once");
    assert_exactly_once(&delivered(dir.path()), n);
}
