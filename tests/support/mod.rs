//! Test helpers: an in-process daemon on 127.0.0.1 port 0, polling with deadlines, output readers.

#![allow(dead_code)]

pub mod es_server;
pub mod http_server;
pub mod loki_server;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::config::Config;
use sluice::metrics::{ListenerMetrics, Metrics, OutputMetrics};
use tokio_util::sync::CancellationToken;

/// Default deadline for a condition to become true.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// A TCP port on 127.0.0.1 free a moment ago (bound, read and released), for a peer that
/// cannot report the port it binds or must come back on the same one.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The store outputs' tests: a TCP listener `tcp` whose every message goes to output `name` of
/// `kind` at `url`, with extra `keys` (TOML lines), without a `[daemon]` table.
pub fn store_pipeline(name: &str, kind: &str, url: &str, keys: &str) -> String {
    ConfigBuilder::new()
        .tcp("tcp", "")
        .output(name, kind, &format!("url = \"{url}\"\n{keys}"))
        .route_to(&[name])
        .build()
}

/// [`store_pipeline`] with its state under `{dir}/state` and a 2 s shutdown.
pub fn store_config(name: &str, kind: &str, url: &str, keys: &str) -> String {
    let daemon = "[daemon]\nstate_dir = \"{dir}/state\"\nshutdown_timeout = \"2s\"\n\n";
    format!("{daemon}{}", store_pipeline(name, kind, url, keys))
}

/// Waits until output `name`'s `written` counter reaches `n`.
pub fn wait_output_written(d: &TestDaemon, name: &str, n: u64, deadline: Duration) {
    wait_until(&format!("{n} events written"), deadline, || {
        d.output_counter(name, "written") >= n
    });
}

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
    pub hangup: sluice::daemon::Hangup,
    pub control: sluice::daemon::Control,
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
        let hangup = bound.hangup();
        let control = bound.control();
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
            hangup,
            control,
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

    /// Reloads the daemon with TOML (`{dir}` as in [`TestDaemon::start`]); returns when applied.
    pub fn reload(&self, toml: &str) -> Result<(), String> {
        let text = toml.replace("{dir}", self.dir.path().to_str().unwrap());
        let config = Config::from_toml_str(&text, "test.toml").unwrap_or_else(|e| panic!("{e}"));
        self.control
            .reload_blocking(config)
            .map_err(|e| e.to_string())
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn listener(&self, name: &str) -> Arc<ListenerMetrics> {
        self.metrics.listener(name)
    }

    /// The counter `name` of output `output`, by the name the metrics endpoint shows.
    pub fn output_counter(&self, output: &str, name: &str) -> u64 {
        self.output(output)
            .snapshot()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("output {output} has no counter {name:?}"))
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

/// A metric's value from the Prometheus endpoint at `addr` (`series` with its labels).
pub fn scrape(addr: SocketAddr, series: &str) -> u64 {
    let text = scrape_text(addr);
    sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// The whole exposition the Prometheus endpoint at `addr` serves.
pub fn scrape_text(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: sluice\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// The value of the sample `series` (with its labels) in an exposition.
pub fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
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

/// Builds a test config from its tables, so tests state only what differs: listeners first,
/// then outputs, then routes, each in the order added. Key lines are TOML, `{dir}` included (see
/// [`TestDaemon::start`]); a table is written as its header, its `kind` line, then the keys, so
/// a test may still `replace` `"[listen.udp]\nkind = \"udp\""` to add a key.
#[derive(Clone, Default)]
pub struct ConfigBuilder {
    listeners: Vec<String>,
    outputs: Vec<String>,
    routes: Vec<String>,
}

impl ConfigBuilder {
    pub fn new() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// `[listen.<name>]` of `kind`, with `keys` (TOML lines, may be empty).
    pub fn listener(mut self, name: &str, kind: &str, keys: &str) -> ConfigBuilder {
        self.listeners.push(table("listen", name, kind, keys));
        self
    }

    /// A TCP listener on 127.0.0.1, port 0, with extra `keys`.
    pub fn tcp(self, name: &str, keys: &str) -> ConfigBuilder {
        self.listener(name, "tcp", &format!("address = \"127.0.0.1:0\"\n{keys}"))
    }

    /// A UDP listener on 127.0.0.1, port 0, with extra `keys`.
    pub fn udp(self, name: &str, keys: &str) -> ConfigBuilder {
        self.listener(name, "udp", &format!("address = \"127.0.0.1:0\"\n{keys}"))
    }

    /// A TLS listener on 127.0.0.1, port 0, serving `cert`/`key` (paths), with extra `keys`.
    pub fn tls(self, name: &str, cert: &str, key: &str, keys: &str) -> ConfigBuilder {
        self.listener(
            name,
            "tls",
            &format!(
                "address = \"127.0.0.1:0\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n{keys}"
            ),
        )
    }

    /// `[output.<name>]` of `kind`, with `keys` (TOML lines, may be empty).
    pub fn output(mut self, name: &str, kind: &str, keys: &str) -> ConfigBuilder {
        self.outputs.push(table("output", name, kind, keys));
        self
    }

    /// A file output writing `{dir}/<file>` in `format`, with extra `keys`.
    pub fn file(self, name: &str, file: &str, format: &str, keys: &str) -> ConfigBuilder {
        self.output(
            name,
            "file",
            &format!("path = \"{{dir}}/{file}\"\nformat = \"{format}\"\n{keys}"),
        )
    }

    /// A `[[route]]` with `keys` (TOML lines: `to`, selectors, matchers, `stop`).
    pub fn route(mut self, keys: &str) -> ConfigBuilder {
        self.routes.push(format!("[[route]]\n{}\n", keys.trim()));
        self
    }

    /// A `[[route]]` that sends every message to `outputs`.
    pub fn route_to(self, outputs: &[&str]) -> ConfigBuilder {
        self.route(&format!("to = {outputs:?}"))
    }

    /// The config's TOML text.
    pub fn build(&self) -> String {
        let mut text = String::new();
        for t in self
            .listeners
            .iter()
            .chain(&self.outputs)
            .chain(&self.routes)
        {
            text.push_str(t);
            text.push('\n');
        }
        text
    }
}

/// `[<section>.<name>]`, its `kind`, then the non-empty lines of `keys`.
fn table(section: &str, name: &str, kind: &str, keys: &str) -> String {
    let mut t = format!("[{section}.{name}]\nkind = \"{kind}\"\n");
    for line in keys.lines().map(str::trim).filter(|l| !l.is_empty()) {
        t.push_str(line);
        t.push('\n');
    }
    t
}

/// Everything routed to `{dir}/out.json` as JSON (output `out`), with no listener yet.
pub fn json_out() -> ConfigBuilder {
    ConfigBuilder::new()
        .file("out", "out.json", "json", "")
        .route_to(&["out"])
}

/// [`json_config`] as a builder, to add listeners or outputs to.
pub fn json_builder(tcp_extra: &str) -> ConfigBuilder {
    let udp_extra = tcp_extra
        .lines()
        .filter(|l| {
            ["max_message_size", "allowed_sources", "timezone"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .collect::<Vec<_>>()
        .join("\n");
    json_out().tcp("tcp", tcp_extra).udp("udp", &udp_extra)
}

/// A config with one TCP listener `tcp` (extra keys in `tcp_extra`, those that also apply to
/// UDP copied to it), one UDP listener `udp`, and everything routed to `{dir}/out.json` as JSON.
pub fn json_config(tcp_extra: &str) -> String {
    json_builder(tcp_extra).build()
}

/// [`json_config`] with `udp_keys` (TOML lines) added to the UDP listener.
pub fn json_config_with_udp(udp_keys: &str) -> String {
    json_out().tcp("tcp", "").udp("udp", udp_keys).build()
}

/// A UDP listener `udp` whose every message goes to the forward output `name` (`keys`: its
/// address, protocol, TLS files...): the relay side of forwarding tests.
pub fn udp_forwarding_to(name: &str, keys: &str) -> ConfigBuilder {
    ConfigBuilder::new()
        .udp("udp", "")
        .output(name, "forward", keys)
        .route_to(&[name])
}

/// The keys of a forward output to `address` over TLS, trusting `ca` for a server certificate
/// named `localhost`, and presenting `cert`/`key` as its client certificate (paths).
pub fn tls_forward_keys(address: &str, ca: &str, cert: &str, key: &str) -> String {
    format!(
        "address = \"{address}\"\nprotocol = \"tls\"\nca_file = \"{ca}\"\nserver_name = \"localhost\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\""
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

/// The kernel's drop counter of each UDP socket bound to `addr`, from /proc/net/udp (or udp6):
/// more than one socket when a listener shares its port with SO_REUSEPORT. The table is read
/// in pieces while other tests open and close sockets, so a line can be missed: read until two
/// reads agree.
pub fn udp_socket_drops(addr: SocketAddr) -> Vec<u64> {
    let mut last = read_udp_socket_drops(addr);
    for _ in 0..50 {
        let now = read_udp_socket_drops(addr);
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("/proc/net/udp never read the same twice for {addr}");
}

fn read_udp_socket_drops(addr: SocketAddr) -> Vec<u64> {
    // /proc shows an address as 32-bit words, each in host (little-endian) order, then the port.
    let words = |octets: &[u8]| -> String {
        octets
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_le_bytes(w.try_into().unwrap())))
            .collect()
    };
    let (table, ip) = match addr.ip() {
        std::net::IpAddr::V4(ip) => ("/proc/net/udp", words(&ip.octets())),
        std::net::IpAddr::V6(ip) => ("/proc/net/udp6", words(&ip.octets())),
    };
    let local = format!("{ip}:{:04X}", addr.port());
    std::fs::read_to_string(table)
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(1) == Some(local.as_str()))
        .map(|l| l.split_whitespace().last().unwrap().parse().unwrap())
        .collect()
}

/// Sends `per_source` datagrams `<13>s{source}-{i}` from each of `sources` sockets (so from as
/// many source ports, which SO_REUSEPORT spreads over a listener's sockets); returns them.
pub fn send_udp_from_many(addr: SocketAddr, sources: usize, per_source: usize) -> Vec<String> {
    let mut sent = Vec::new();
    for source in 0..sources {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..per_source {
            let m = format!("<13>s{source}-{i}");
            s.send_to(m.as_bytes(), addr).unwrap();
            sent.push(m);
        }
    }
    sent
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

/// The sluice binary under test.
pub fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

/// A running `sluice` process whose stderr is scanned for the addresses it bound.
pub struct Proc {
    pub child: Child,
    addrs: Vec<(String, SocketAddr)>,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Proc {
    pub fn start(config: Option<&std::path::Path>, listeners: usize) -> Proc {
        let mut cmd = sluice();
        if let Some(c) = config {
            cmd.args(["--config", c.to_str().unwrap()]);
        }
        Proc::spawn(cmd, listeners)
    }

    /// Runs `cmd` (sluice, or a wrapper that execs it) and waits for `listeners` "listening"
    /// lines in its log.
    pub fn spawn(mut cmd: Command, listeners: usize) -> Proc {
        let mut child = cmd
            .env(
                "SLUICE_LOG",
                std::env::var("TEST_SLUICE_LOG").unwrap_or("info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut p = Proc {
            child,
            addrs: Vec::new(),
            stderr: rx,
        };
        while p.addrs.len() < listeners {
            let line = p.wait_log("address=");
            if let (Some(l), Some(a)) = (field(&line, "listener="), field(&line, "address=")) {
                p.addrs.push((l, a.parse().unwrap()));
            }
        }
        p
    }

    /// Starts sluice on TOML in which `{dir}` stands for a fresh temporary directory (returned,
    /// with the config written in it as `sluice.toml`).
    pub fn start_toml(toml: &str, listeners: usize) -> (tempfile::TempDir, Proc) {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("sluice.toml");
        std::fs::write(&config, toml.replace("{dir}", dir.path().to_str().unwrap())).unwrap();
        let p = Proc::start(Some(&config), listeners);
        (dir, p)
    }

    /// Waits for a line of sluice's log containing `what`, and returns it.
    pub fn wait_log(&self, what: &str) -> String {
        loop {
            let line = self
                .stderr
                .recv_timeout(DEADLINE)
                .unwrap_or_else(|_| panic!("sluice never logged {what:?}"));
            if line.contains(what) {
                return line;
            }
        }
    }

    /// The log lines not yet consumed by [`Proc::wait_log`], up to a second of silence: for
    /// failure messages.
    pub fn log_so_far(&self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_secs(1)) {
            lines.push(l);
        }
        lines
    }

    /// The log lines sluice writes during the next `window` (not consumed before).
    pub fn log_for(&self, window: Duration) -> Vec<String> {
        let end = Instant::now() + window;
        let mut lines = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(l) => lines.push(l),
                Err(_) => break,
            }
        }
        lines
    }

    pub fn addr(&self, name: &str) -> SocketAddr {
        self.addrs.iter().find(|(n, _)| n == name).unwrap().1
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    pub fn wait(&mut self) -> std::process::ExitStatus {
        let start = std::time::Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(start.elapsed() < DEADLINE * 4, "sluice did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn field(line: &str, key: &str) -> Option<String> {
    let start = line.find(key)? + key.len();
    Some(line[start..].split_whitespace().next()?.to_string())
}

/// Runs `sluice --check-config` on `toml` written to a temporary `bad.toml`; returns the exit
/// code, stderr and the file's path as printed in messages.
pub fn check_config(toml: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, toml).unwrap();
    let out = sluice()
        .args(["--check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path.display().to_string(),
    )
}

/// Runs `sluice --check-config` with `args` (an `--explain`) on `toml`, feeding `stdin`; returns
/// the exit code, stdout and stderr.
pub fn explain_with(toml: &str, args: &[&str], stdin: &[u8]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, toml).unwrap();
    let mut child = sluice()
        .args(["--check-config", "--config", config.to_str().unwrap()])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Where `.ci/install-test-tools` unpacked Debian's rsyslog, fail2ban and logrotate:
/// `$SLUICE_TEST_TOOLS/root`, by default `~/.cache/sluice-test-tools/root`. Panics, naming the
/// script, when they are missing: these tests never pass by skipping.
pub fn tools_root() -> PathBuf {
    let prefix = std::env::var_os("SLUICE_TEST_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                });
            cache.join("sluice-test-tools")
        });
    let root = prefix.join("root");
    for tool in [
        "usr/sbin/rsyslogd",
        "usr/bin/fail2ban-regex",
        "usr/sbin/logrotate",
    ] {
        assert!(
            root.join(tool).exists(),
            "{} not found: run .ci/install-test-tools",
            root.join(tool).display()
        );
    }
    root
}

/// The line [`flood_tcp`] sends for message `i`, without its LF.
pub fn msgnum_line(i: usize) -> String {
    format!("<13>Nov 22 10:00:00 host app: msgnum:{i:08}")
}

/// Sends [`msgnum_line`] 0..`n` over one TCP connection from a thread, `chunk` lines per
/// `write`, as fast as the connection takes them. The counter tells how many were sent.
pub fn flood_tcp(
    addr: SocketAddr,
    n: usize,
    chunk: usize,
) -> (
    std::thread::JoinHandle<()>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
    flood_tcp_gated(addr, n, chunk, open)
}

/// [`flood_tcp`] that sends no message numbered `gate` or more until the caller raises it:
/// the caller decides what is sent before and after a step of its own (a rotation), however
/// fast the sender is. Its thread panics (and `join` reports it) when the gate stays shut for
/// [`DEADLINE`] times 4.
pub fn flood_tcp_gated(
    addr: SocketAddr,
    n: usize,
    chunk: usize,
    gate: Arc<std::sync::atomic::AtomicUsize>,
) -> (
    std::thread::JoinHandle<()>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    let thread = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut buf = Vec::with_capacity(chunk * 64);
        for start in (0..n).step_by(chunk) {
            let end = (start + chunk).min(n);
            wait_until("the gate to open", DEADLINE * 4, || {
                gate.load(std::sync::atomic::Ordering::Relaxed) >= end
            });
            buf.clear();
            for i in start..end {
                buf.extend_from_slice(msgnum_line(i).as_bytes());
                buf.push(b'\n');
            }
            s.write_all(&buf).unwrap();
            counter.store((start + chunk).min(n), std::sync::atomic::Ordering::Relaxed);
        }
    });
    (thread, sent)
}

/// Sends `lines` (each with its LF) on one TCP connection to `addr`.
pub fn send_lines_to(addr: SocketAddr, lines: impl IntoIterator<Item = String>) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut buf = Vec::new();
    for l in lines {
        buf.extend_from_slice(l.as_bytes());
        buf.push(b'\n');
    }
    s.write_all(&buf).unwrap();
}

/// Sends [`msgnum_line`] 0..`n` over one TCP connection from a thread, about `per_second` a
/// second (a tenth of them every 100 ms): a steady load for a test that lasts `n /
/// per_second` seconds.
pub fn paced_tcp(addr: SocketAddr, n: usize, per_second: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let step = (per_second / 10).max(1);
        let start = std::time::Instant::now();
        let mut buf = Vec::new();
        for (k, first) in (0..n).step_by(step).enumerate() {
            buf.clear();
            for i in first..(first + step).min(n) {
                buf.extend_from_slice(msgnum_line(i).as_bytes());
                buf.push(b'\n');
            }
            s.write_all(&buf).unwrap();
            // Pacing the load, not waiting for a result.
            let due = start + Duration::from_millis(100 * (k as u64 + 1));
            std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        }
    })
}

/// Marks the message numbers in one file's (decompressed) `data` as seen, asserting that every
/// line is whole, none was seen before, and they are in the order sent.
pub fn mark_msgnums(name: &str, data: &[u8], seen: &mut [bool]) {
    assert!(
        data.is_empty() || data.ends_with(b"\n"),
        "{name} ends mid-line"
    );
    let prefix = msgnum_line(0);
    let prefix = &prefix[..prefix.len() - 8];
    let mut last = None;
    for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let line = std::str::from_utf8(line).unwrap();
        let n: usize = line
            .strip_prefix(prefix)
            .filter(|r| r.len() == 8)
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("{name}: split or garbled line {line:?}"));
        assert!(!seen[n], "msgnum {n} doubled ({name})");
        seen[n] = true;
        assert!(last.is_none_or(|l| l < n), "{name}: {n} after {last:?}");
        last = Some(n);
    }
}

/// Fails with the first few numbers not seen.
pub fn assert_all_seen(seen: &[bool]) {
    let missing: Vec<usize> = (0..seen.len()).filter(|&i| !seen[i]).take(10).collect();
    assert!(missing.is_empty(), "lost, first ones: {missing:?}");
}

/// A file's content, gunzipped when its name ends in `.gz`.
pub fn read_gunzipped(p: &Path) -> Vec<u8> {
    let raw = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    if p.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::with_capacity(raw.len() * 8);
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        raw
    }
}
