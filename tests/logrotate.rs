//! The README's logrotate stanza, run by Debian's logrotate against a live sluice while a sender
//! floods it: three forced rotations (move, SIGHUP from postrotate, delayed gzip), and every line
//! sent is in exactly one of the files afterwards, in order, whole.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::*;

const MESSAGES: usize = 300_000;
const ROTATIONS: usize = 3;

/// The stanza in README.md, for sluice's `dir` and `pid`.
fn readme_stanza(dir: &std::path::Path, pid: u32) -> String {
    let readme = include_str!("../README.md");
    let start = readme
        .find("**With logrotate**")
        .expect("README has a logrotate section");
    let block = &readme[start..];
    let open = block.find("```\n").unwrap() + 4;
    let close = open + block[open..].find("```").unwrap();
    let stanza = &block[open..close];
    assert!(stanza.contains("$(pidof sluice)"), "{stanza}");
    stanza
        .replace("/var/log/", &format!("{}/", dir.display()))
        // Only this test's sluice: others may be starting, and SIGHUP before their handler is
        // installed would end them.
        .replace("$(pidof sluice)", &pid.to_string())
}

#[test]
fn readme_logrotate_stanza_under_load_loses_and_doubles_nothing() {
    let root = tools_root();
    let (dir, mut p) = Proc::start_toml(
        r#"
[listen.tcp]
kind = "tcp"
address = "127.0.0.1:0"

[output.syslog]
kind = "file"
path = "{dir}/log/syslog"
format = "raw"

[output.auth]
kind = "file"
path = "{dir}/log/auth.log"
format = "raw"

[[route]]
to = ["syslog", "auth"]
"#,
        1,
    );
    let logs = dir.path().join("log");
    let conf = dir.path().join("logrotate.conf");
    std::fs::write(&conf, readme_stanza(&logs, p.pid())).unwrap();

    // Each rotation comes after a quarter of the messages and before the next: a sender
    // faster than logrotate (a release build) must not finish before the last one, which
    // would leave no current file to check.
    let gate = Arc::new(AtomicUsize::new(MESSAGES / (ROTATIONS + 1)));
    let (sender, sent) = flood_tcp_gated(p.addr("tcp"), MESSAGES, 1000, gate.clone());
    for k in 1..=ROTATIONS {
        let at = MESSAGES * k / (ROTATIONS + 1);
        wait_until(&format!("{at} sent"), DEADLINE * 4, || {
            sent.load(Ordering::Relaxed) >= at
        });
        // As on a real host, each run finds lines written since the last one (else `notifempty`
        // and `missingok` would skip a file and shift the numbers).
        wait_until("new lines in both files", DEADLINE, || {
            ["syslog", "auth.log"]
                .iter()
                .all(|n| std::fs::metadata(logs.join(n)).is_ok_and(|m| m.len() > 0))
        });
        let out = Command::new(root.join("usr/sbin/logrotate"))
            .arg("-f")
            .arg("-s")
            .arg(dir.path().join("logrotate.state"))
            .arg(&conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "logrotate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // sluice reopens on postrotate's SIGHUP in its own time: a quarter let go at once
        // could all land in the rotated files. A chunk at a time until the new files have
        // lines, then the rest.
        let next = MESSAGES * (k + 1) / (ROTATIONS + 1);
        let mut open = at;
        wait_until("lines in the reopened files", DEADLINE, || {
            let reopened = ["syslog", "auth.log"]
                .iter()
                .all(|n| std::fs::metadata(logs.join(n)).is_ok_and(|m| m.len() > 0));
            open = (open + 1000).min(next);
            gate.store(open, Ordering::Relaxed);
            reopened
        });
        gate.store(next, Ordering::Relaxed);
    }
    sender.join().unwrap();
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait().code(), Some(0));

    for name in ["syslog", "auth.log"] {
        // delaycompress: .1 stays plain, older ones are gzipped.
        let mut files = vec![logs.join(name), logs.join(format!("{name}.1"))];
        for n in 2..=ROTATIONS {
            files.push(logs.join(format!("{name}.{n}.gz")));
        }
        let mut on_disk: Vec<String> = std::fs::read_dir(&logs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(name))
            .collect();
        on_disk.sort();
        assert_eq!(on_disk.len(), files.len(), "{on_disk:?}");
        let mut seen = vec![false; MESSAGES];
        for f in &files {
            mark_msgnums(&f.display().to_string(), &read_gunzipped(f), &mut seen);
        }
        assert_all_seen(&seen);
    }
}
