//! systemd integration: the shipped units pass `systemd-analyze verify`, sluice takes sockets
//! passed by socket activation, and it reports READY/WATCHDOG/STOPPING over sd_notify.

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{DEADLINE, Proc, sluice, wait_lines};

/// A systemd tool, which .ci/install-test-tools installs (package `systemd`).
fn systemd_tool(name: &str) -> Command {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join(name).is_file());
    assert!(found, "{name} is missing: run .ci/install-test-tools");
    Command::new(name)
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_sluice");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    for unit in ["sluice.service", "sluice.socket"] {
        let text = std::fs::read_to_string(src.join(unit)).unwrap();
        // verify checks that ExecStart's binary exists; the installed path does not here.
        std::fs::write(dir.path().join(unit), text.replace("/usr/sbin/sluice", bin)).unwrap();
    }
    let out = systemd_tool("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("sluice.service"))
        .arg(dir.path().join("sluice.socket"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    assert!(
        !stderr.contains("sluice."),
        "systemd-analyze verify complained about the units:\n{stderr}"
    );
    let service = std::fs::read_to_string(src.join("sluice.service")).unwrap();
    for line in [
        "Type=notify",
        "ExecStartPre=/usr/sbin/sluice --check-config --config /etc/sluice/sluice.toml",
        "RestartPreventExitStatus=78",
        "LimitNOFILE=65536",
        "Alias=syslog.service",
    ] {
        assert!(
            service.lines().any(|l| l == line),
            "sluice.service lacks {line}"
        );
    }
}

/// A port the kernel just handed out (and took back), for a wrapper that binds by number.
fn free_port(datagram: bool) -> u16 {
    if datagram {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

#[test]
fn socket_activation_takes_inherited_sockets_by_address_and_by_name() {
    let (udp_port, tcp_port, stray_port) = (free_port(true), free_port(false), free_port(false));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.log");
    let config = dir.path().join("sluice.toml");
    // The udp listener's configured address differs from the passed socket's: only its name
    // (FileDescriptorName) can match it. The tcp listener matches by address.
    std::fs::write(
        &config,
        format!(
            r#"
[listen.udp]
kind = "udp"
address = "127.0.0.2:{udp_port}"
[listen.tcp]
kind = "tcp"
address = "127.0.0.1:{tcp_port}"
[output.f]
kind = "file"
path = "{}"
format = "raw"
[[route]]
to = ["f"]
"#,
            out.display()
        ),
    )
    .unwrap();
    // systemd-socket-activate binds either stream or datagram sockets, so two nest: the outer
    // passes its stream sockets through the inner, which adds the datagram one and execs sluice.
    // Each waits for traffic on its sockets before starting the next.
    let mut cmd = systemd_tool("systemd-socket-activate");
    cmd.arg(format!("--listen=127.0.0.1:{tcp_port}"))
        .arg(format!("--listen=127.0.0.1:{stray_port}"))
        .arg("systemd-socket-activate")
        .args(["--datagram", &format!("--listen=127.0.0.1:{udp_port}")])
        // Names for every fd the inner one passes on, the outer's first.
        .arg("--fdname=tcp:stray:udp")
        .arg(env!("CARGO_BIN_EXE_sluice"))
        .arg("--config")
        .arg(&config);
    let p = Proc::spawn(cmd, 0);

    let mut tcp = connect_retrying(tcp_port);
    tcp.write_all(b"<13>over inherited tcp\n").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let start = Instant::now();
    // The inner wrapper starts once the outer saw the connection; resend until sluice logs.
    loop {
        udp.send_to(b"<13>over inherited udp", ("127.0.0.1", udp_port))
            .unwrap();
        if std::fs::read_to_string(&out).is_ok_and(|s| s.contains("over inherited udp")) {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "udp message never written");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(tcp);
    let lines = wait_lines(&out, 2);
    assert!(
        lines.iter().any(|l| l == "<13>over inherited tcp"),
        "{lines:?}"
    );
    p.wait_log("listener=udp");
    let stray = p.wait_log("no listener is configured for");
    assert!(stray.contains(&stray_port.to_string()), "{stray}");
    // The passed socket, not a fresh one on 127.0.0.2, serves the udp listener.
    assert!(
        UdpSocket::bind(("127.0.0.2", udp_port)).is_ok(),
        "sluice bound the configured address although systemd passed a socket for the listener"
    );
}

fn connect_retrying(port: u16) -> TcpStream {
    let start = Instant::now();
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e) => assert!(start.elapsed() < DEADLINE, "connect: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn notifies_ready_watchdog_and_stopping_on_an_abstract_socket() {
    let name = format!("sluice-test-notify-{}", std::process::id());
    let sock = UnixDatagram::bind_addr(&UnixAddr::from_abstract_name(&name).unwrap()).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.log");
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[daemon]
state_dir = "{}"
[listen.udp]
kind = "udp"
address = "127.0.0.1:0"
[output.f]
kind = "file"
path = "{}"
format = "raw"
[output.fwd]
kind = "forward"
address = "127.0.0.1:9"
protocol = "tcp"
queue = {{ kind = "disk" }}
[[route]]
to = ["f", "fwd"]
"#,
            dir.path().join("state").display(),
            out.display()
        ),
    )
    .unwrap();
    let mut cmd = sluice();
    cmd.args(["--config", config.to_str().unwrap()])
        .env("NOTIFY_SOCKET", format!("@{name}"))
        .env("WATCHDOG_USEC", "200000");
    let p = Proc::spawn(cmd, 1);
    let mut buf = [0u8; 256];
    let mut recv = || {
        let n = sock.recv(&mut buf).expect("no sd_notify message");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(recv(), "READY=1");
    // Ready means served: the disk queue exists and a message sent now is written.
    assert!(
        dir.path().join("state/fwd").is_dir(),
        "READY=1 before the disk queue started"
    );
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(b"<13>after ready", p.addr("udp"))
        .unwrap();
    wait_lines(&out, 1);
    // WATCHDOG_USEC=200ms: a ping every 100ms.
    let start = Instant::now();
    assert_eq!(recv(), "WATCHDOG=1");
    assert_eq!(recv(), "WATCHDOG=1");
    assert!(start.elapsed() < Duration::from_secs(2));
    p.signal(libc::SIGTERM);
    let start = Instant::now();
    loop {
        let m = recv();
        if m == "STOPPING=1" {
            break;
        }
        assert_eq!(m, "WATCHDOG=1");
        assert!(start.elapsed() < DEADLINE, "no STOPPING=1");
    }
}
