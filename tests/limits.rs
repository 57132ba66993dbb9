//! Descriptor limits (issue 21): sluice raises its soft RLIMIT_NOFILE, `--check-config` warns
//! when the configuration could need more descriptors than it will have, and running out of
//! them neither spins nor floods the log.

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use crate::support::{DEADLINE, Proc, sluice, wait_lines};

/// `cmd` with its RLIMIT_NOFILE set to `soft` and `hard` in the child.
fn with_nofile(mut cmd: Command, soft: u64, hard: u64) -> Command {
    // SAFETY: setrlimit is async-signal-safe, as the child of a fork requires.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    cmd
}

/// Starts sluice on `toml` (`{dir}` as in [`Proc::start_toml`]) under the descriptor limits
/// given, once `listeners` sockets are bound.
fn start_limited(toml: &str, listeners: usize, soft: u64, hard: u64) -> (tempfile::TempDir, Proc) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, toml.replace("{dir}", dir.path().to_str().unwrap())).unwrap();
    let mut cmd = sluice();
    cmd.args(["--config", config.to_str().unwrap()]);
    let p = Proc::spawn(with_nofile(cmd, soft, hard), listeners);
    (dir, p)
}

/// `sluice --check-config` on `toml` under a hard descriptor limit: exit code and stderr.
fn check_config_limited(toml: &str, hard: u64) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, toml.replace("{dir}", dir.path().to_str().unwrap())).unwrap();
    let mut cmd = sluice();
    cmd.args(["--check-config", "--config", config.to_str().unwrap()]);
    let out = with_nofile(cmd, hard.min(256), hard).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// CPU time (user + system) the process has used.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_sec)
}

const TCP_AND_FILE: &str = r#"
[listen.tcp]
kind = "tcp"
address = "127.0.0.1:0"
max_connections = 1000

[output.out]
kind = "file"
path = "{dir}/out.log"
format = "raw"

[[route]]
to = ["out"]
"#;

#[test]
fn check_config_warns_when_connections_and_files_exceed_the_descriptor_limit() {
    // 1000 connections + 256 files + 65 sockets and margin is more than 1024.
    let (code, stderr) = check_config_limited(TCP_AND_FILE, 1024);
    assert_eq!(code, Some(0), "a warning, not an error: {stderr}");
    let warning = stderr
        .lines()
        .find(|l| l.starts_with("warning: sluice may need"))
        .unwrap_or_else(|| panic!("no descriptor warning in {stderr:?}"));
    assert!(
        warning.contains("need 1321 file descriptors")
            && warning.contains("1000 for the listeners' max_connections")
            && warning.contains("256 for the file outputs' max_open_files")
            && warning.contains("limit of 1024"),
        "{warning}"
    );
    // Under a limit that fits, nothing is said.
    let (code, stderr) = check_config_limited(TCP_AND_FILE, 1321);
    assert_eq!(code, Some(0));
    assert!(!stderr.contains("file descriptors"), "{stderr}");
}

#[test]
fn sluice_raises_its_soft_descriptor_limit_to_the_hard_limit_and_logs_it() {
    // Logged before the sockets are bound: read the log from the start.
    let (_dir, p) = start_limited(TCP_AND_FILE, 0, 256, 4096);
    let line = p.wait_log("descriptor limit");
    assert!(
        line.contains("limit=4096") && line.contains("was=256"),
        "{line}"
    );
    // 1321 descriptors fit under 4096: no warning before the listener is up.
    let line = p.wait_log("");
    assert!(line.contains("listening"), "{line}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", p.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>()[3..5],
        ["4096", "4096"],
        "{line}"
    );
}

#[test]
fn running_out_of_descriptors_keeps_cpu_and_log_bounded_and_recovers() {
    let (dir, p) = start_limited(
        &format!(
            "[daemon]\nmetrics_address = \"127.0.0.1:0\"\n[listen.udp]\nkind = \"udp\"\naddress = \"127.0.0.1:0\"\n{TCP_AND_FILE}"
        ),
        3,
        64,
        64,
    );
    // More connections than sluice has descriptors, to a listener and to the metrics endpoint:
    // the ones it cannot take wait in the kernel's accept queue.
    let mut conns: Vec<TcpStream> = Vec::new();
    for addr in [p.addr("tcp"), p.addr("metrics")] {
        for _ in 0..100 {
            conns.push(TcpStream::connect(addr).unwrap());
        }
    }
    let first = p.wait_log("accept failed");
    assert!(first.contains("Too many open files"), "{first}");
    let cpu_before = cpu_time(p.pid());
    let window = Duration::from_secs(3);
    let log = p.log_for(window);
    let cpu = cpu_time(p.pid()) - cpu_before;
    assert!(
        cpu < Duration::from_millis(500),
        "sluice used {cpu:?} of CPU in {window:?} without descriptors"
    );
    let accept_lines = log.iter().filter(|l| l.contains("accept failed")).count();
    // One line per accept loop per interval; without the backoff there were 500k a second.
    assert!(
        accept_lines < 10,
        "{accept_lines} accept failures logged in {window:?}: {:?}",
        &log[..log.len().min(5)]
    );
    // Once the connections are gone, sluice works again: a message reaches its file.
    drop(conns);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let out = dir.path().join("out.log");
    let mut sent = 0;
    crate::support::wait_until(
        "a message written after the connections closed",
        DEADLINE,
        || {
            // UDP may be dropped while sluice catches up: send until one lands.
            udp.send_to(format!("<13>after {sent}").as_bytes(), p.addr("udp"))
                .unwrap();
            sent += 1;
            !crate::support::lines(&out).is_empty()
        },
    );
}

#[test]
fn file_output_opens_its_file_while_listeners_are_at_their_cap() {
    // 40 connections and 4 files fit under 128 descriptors with the margin: the cap, not the
    // descriptor limit, refuses the rest, so descriptors are left for the file.
    let toml = r#"
[listen.tcp]
kind = "tcp"
address = "127.0.0.1:0"
max_connections = 40

[listen.udp]
kind = "udp"
address = "127.0.0.1:0"

[output.out]
kind = "file"
path = "{dir}/out.log"
format = "raw"
max_open_files = 4

[[route]]
to = ["out"]
"#;
    let (code, stderr) = check_config_limited(toml, 128);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("file descriptors"), "{stderr}");
    let (dir, p) = start_limited(toml, 2, 128, 128);
    let mut conns: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(p.addr("tcp")).unwrap())
        .collect();
    p.wait_log("connection refused: max_connections reached");
    // The held connections still work.
    conns[0].write_all(b"<13>over tcp\n").unwrap();
    crate::support::send_udp(p.addr("udp"), &[b"<13>over udp"]);
    let mut got = wait_lines(&dir.path().join("out.log"), 2);
    got.sort();
    assert_eq!(got, ["<13>over tcp", "<13>over udp"]);
    let refused = p.log_for(Duration::ZERO);
    assert!(
        !refused.iter().any(|l| l.contains("Too many open files")),
        "{refused:?}"
    );
}
