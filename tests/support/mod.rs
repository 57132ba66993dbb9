//! Test helpers: an in-process daemon on 127.0.0.1 port 0, polling with deadlines, output readers.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::config::Config;
use sluice::metrics::{ListenerMetrics, Metrics, OutputMetrics};
use tokio_util::sync::CancellationToken;

/// Default deadline for a condition to become true.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// Polls `cond` until it holds or `deadline` passes; panics with `what` on timeout.
pub fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    while !cond() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A daemon running in-process on its own runtime thread.
pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub metrics: Arc<Metrics>,
    addrs: Vec<(String, SocketAddr)>,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl TestDaemon {
    /// Starts a daemon from TOML in which `{dir}` stands for a fresh temporary directory.
    pub fn start(toml: &str) -> TestDaemon {
        let dir = tempfile::tempdir().unwrap();
        let text = toml.replace("{dir}", dir.path().to_str().unwrap());
        let config = Config::from_toml_str(&text, "test.toml").unwrap_or_else(|e| panic!("{e}"));
        let bound = sluice::daemon::bind(&config).unwrap();
        let metrics = bound.metrics();
        let addrs = config
            .listeners
            .iter()
            .filter_map(|l| bound.local_addr(&l.name).map(|a| (l.name.to_string(), a)))
            .collect();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(sluice::daemon::run(config, bound, token))
        });
        TestDaemon {
            dir,
            metrics,
            addrs,
            shutdown,
            thread: Some(thread),
        }
    }

    /// The bound address of a listener.
    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(n, _)| n == listener)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no listener {listener}"))
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn listener(&self, name: &str) -> Arc<ListenerMetrics> {
        self.metrics.listener(name)
    }

    pub fn output(&self, name: &str) -> Arc<OutputMetrics> {
        self.metrics.output(name)
    }

    /// Orderly stop (as SIGTERM) and wait for the drain to finish.
    pub fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
    }

    /// Waits until output `name` has written `n` events.
    pub fn wait_written(&self, output: &str, n: u64) {
        let m = self.output(output);
        wait_until(&format!("{n} events written to {output}"), DEADLINE, || {
            sluice::metrics::get(&m.written) >= n
        });
    }

    /// Waits until listener `name` has received `n` frames.
    pub fn wait_received(&self, listener: &str, n: u64) {
        let m = self.listener(listener);
        wait_until(
            &format!("{n} frames received on {listener}"),
            DEADLINE,
            || sluice::metrics::get(&m.received) >= n,
        );
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A counter's value.
pub fn count(c: &std::sync::atomic::AtomicU64) -> u64 {
    sluice::metrics::get(c)
}

/// Lines of a file (empty if it does not exist yet).
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read(path)
        .map(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Each line of a JSON-lines file, parsed.
pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    lines(path)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Waits until the file has at least `n` lines and returns them.
pub fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    wait_until(
        &format!("{n} lines in {}", path.display()),
        DEADLINE,
        || lines(path).len() >= n,
    );
    lines(path)
}

/// Waits until the JSON-lines file has at least `n` events and returns them.
pub fn wait_json(path: &Path, n: usize) -> Vec<serde_json::Value> {
    wait_lines(path, n);
    json_lines(path)
}

/// A config with one TCP listener `tcp` (extra keys in `tcp_extra`), one UDP listener `udp`, and
/// everything routed to `{dir}/out.json` as JSON.
pub fn json_config(tcp_extra: &str) -> String {
    format!(
        r#"
[listen.tcp]
kind = "tcp"
address = "127.0.0.1:0"
{tcp_extra}

[listen.udp]
kind = "udp"
address = "127.0.0.1:0"
{udp_extra}

[output.out]
kind = "file"
path = "{{dir}}/out.json"
format = "json"

[[route]]
to = ["out"]
"#,
        udp_extra = tcp_extra
            .lines()
            .filter(|l| ["max_message_size", "allowed_sources", "timezone"]
                .iter()
                .any(|k| l.starts_with(k)))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

/// Connects to a TCP listener.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Sends each chunk as its own write, pausing until the daemon has read it, so the chunks
/// arrive in separate reads.
pub fn send_chunks(d: &TestDaemon, listener: &str, chunks: &[&[u8]]) -> TcpStream {
    let mut s = connect(d.addr(listener));
    let m = d.listener(listener);
    for c in chunks {
        let before = count(&m.bytes);
        s.write_all(c).unwrap();
        wait_until("the daemon to read a chunk", DEADLINE, || {
            count(&m.bytes) >= before + c.len() as u64
        });
    }
    s
}

/// Sends datagrams to a UDP listener.
pub fn send_udp(addr: SocketAddr, datagrams: &[&[u8]]) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in datagrams {
        s.send_to(d, addr).unwrap();
    }
}

/// True once the peer has closed the connection (read returns 0 or an error).
pub fn wait_closed(s: &mut TcpStream, deadline: Duration) {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
        assert!(
            start.elapsed() < deadline,
            "connection was not closed within {deadline:?}"
        );
    }
}
