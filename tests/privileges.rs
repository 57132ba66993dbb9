//! `[daemon] user`, `group`, `supplementary_groups`: bind as root, then drop for good.

use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;

use crate::support::{Proc, check_config, sluice, wait_lines};

/// These tests need root (CI runs as root); as anyone else they would prove nothing.
fn assert_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "privilege tests must run as root"
    );
}

/// The `Name:\tvalues` line of /proc/PID/status, values split on whitespace.
fn status_field(pid: u32, name: &str) -> Vec<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"));
    line[name.len() + 1..]
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn drops_to_nobody_after_binding_and_still_receives() {
    assert_root();
    let dir = tempfile::tempdir().unwrap();
    // nobody must be able to create the log file.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = dir.path().join("out.log");
    let toml = format!(
        r#"
[daemon]
user = "nobody"
supplementary_groups = ["nogroup"]
[listen.udp]
kind = "udp"
address = "127.0.0.1:0"
[output.f]
kind = "file"
path = "{}"
format = "raw"
[[route]]
to = ["f"]
"#,
        out.display()
    );
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, toml).unwrap();
    // The drop happens before the runtime, so once sluice logs its listener it has dropped.
    let p = Proc::start(Some(&config), 1);
    let pid = p.pid();
    assert_eq!(status_field(pid, "Uid"), ["65534"; 4]);
    assert_eq!(status_field(pid, "Gid"), ["65534"; 4]);
    assert_eq!(status_field(pid, "Groups"), ["65534"]);
    assert_eq!(status_field(pid, "CapEff"), ["0000000000000000"]);
    assert_eq!(status_field(pid, "CapPrm"), ["0000000000000000"]);
    // Every thread of the runtime too, not only the main one.
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid: u32 = task.unwrap().file_name().to_str().unwrap().parse().unwrap();
        assert_eq!(status_field(tid, "Uid"), ["65534"; 4], "thread {tid}");
    }
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(b"<13>after the drop", p.addr("udp"))
        .unwrap();
    assert_eq!(wait_lines(&out, 1), ["<13>after the drop"]);
    let meta = std::fs::metadata(&out).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 65534);
}

#[test]
fn refuses_an_output_directory_the_dropped_user_cannot_write() {
    assert_root();
    let dir = tempfile::tempdir().unwrap();
    // nobody can see into the directory but not write in it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o755)).unwrap();
    let toml = format!(
        r#"
[daemon]
user = "nobody"
[listen.udp]
kind = "udp"
address = "127.0.0.1:0"
[output.f]
kind = "file"
path = "{}/out.log"
[[route]]
to = ["f"]
"#,
        logs.display()
    );
    let (code, stderr, _) = check_config(&toml);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains(&logs.display().to_string()) && stderr.contains("user nobody"),
        "{stderr}"
    );

    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, &toml).unwrap();
    let mut cmd = sluice();
    cmd.args(["--config", config.to_str().unwrap()]);
    // The daemon refuses what --check-config refuses, before binding anything, with 78.
    let mut p = Proc::spawn(cmd, 0);
    let err = p.wait_log("(as user nobody");
    assert!(err.contains(&logs.display().to_string()), "{err}");
    assert_eq!(p.wait().code(), Some(78));
}

/// A minimal valid config with these `[daemon]` lines.
fn with_daemon(lines: &str) -> String {
    format!(
        r#"
[daemon]
{lines}
[listen.udp]
kind = "udp"
address = "127.0.0.1:0"
[output.o]
kind = "stdout"
[[route]]
to = ["o"]
"#
    )
}

#[test]
fn unknown_user_and_group_without_user_are_config_errors() {
    let (code, stderr, _) = check_config(&with_daemon(r#"user = "no-such-user-sluice""#));
    assert_eq!(code, Some(78));
    assert!(
        stderr.contains(":3:8: daemon.user: unknown user"),
        "{stderr}"
    );
    let (code, stderr, _) = check_config(&with_daemon(r#"group = "nogroup""#));
    assert_eq!(code, Some(78));
    assert!(
        stderr.contains("daemon.group: needs daemon.user"),
        "{stderr}"
    );
}
