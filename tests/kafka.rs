//! The `kafka` output against a real Kafka-protocol broker, tansu (built by
//! .ci/install-test-tools with `cargo install tansu --features dynostore`), its topic read back
//! by an independent client, kafka-python (Debian's python3-kafka). Each test starts its own
//! broker on a free loopback port with in-memory storage, and stops it.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;

/// Longest wait for a whole run to reach the topic.
const DELIVERY: Duration = Duration::from_secs(60);
/// Hosts the test messages come from, one partition key each.
const HOSTS: usize = 4;
/// Partitions of the test topic.
const PARTITIONS: u32 = 3;

/// The tansu binary: `$SLUICE_TEST_TOOLS/tansu/bin/tansu`. Panics, naming the install script,
/// when it is missing: this test never passes by skipping.
fn tansu_bin() -> PathBuf {
    let root = tools_root();
    let bin = root.parent().unwrap().join("tansu/bin/tansu");
    assert!(
        bin.exists(),
        "{} not found: run .ci/install-test-tools (cargo install tansu)",
        bin.display()
    );
    bin
}

/// A python3 that imports kafka-python: the one on PATH, else Debian's, where python3-kafka
/// installs it.
fn python_with_kafka() -> String {
    for py in ["python3", "/usr/bin/python3"] {
        let ok = Command::new(py)
            .args(["-c", "import kafka"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return py.to_string();
        }
    }
    panic!("no python3 imports kafka: run .ci/install-test-tools (python3-kafka)");
}

/// A tansu broker on 127.0.0.1:`port`, storing in memory (or where `storage` says); killed on
/// drop.
struct Tansu {
    port: u16,
    /// The port clients are told to connect to (a TLS front's), when not `port`.
    advertised: Option<u16>,
    /// `--storage-engine`; `sqlite://` paths are relative to `dir`.
    storage: String,
    /// More broker arguments (`--authentication`).
    args: Vec<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
    log: tempfile::NamedTempFile,
}

impl Tansu {
    fn start() -> Tansu {
        let mut t = Tansu::new();
        t.up();
        t
    }

    /// A broker not started yet.
    fn new() -> Tansu {
        Tansu {
            port: free_tcp_port(),
            advertised: None,
            storage: "memory://tansu/".into(),
            args: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            log: tempfile::NamedTempFile::new().unwrap(),
        }
    }

    /// Starts the broker (again) on its port and waits until it takes connections.
    fn up(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised.unwrap_or(self.port));
        let child = Command::new(tansu_bin())
            .args(["broker", "--storage-engine", &self.storage])
            .args([
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(&self.args)
            .current_dir(self.dir.path())
            .stdout(self.log.reopen().unwrap())
            .stderr(self.log.reopen().unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        wait_until("tansu to listen", DEADLINE, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
    }

    /// Kills the broker (SIGKILL): what it held in memory is gone.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates `topic` with `partitions` (tansu, like most clusters here, does not create
    /// topics on first use).
    fn create_topic(&self, topic: &str, partitions: u32) {
        let out = Command::new(tansu_bin())
            .args(["topic", "create", "--broker"])
            .arg(format!("tcp://{}", self.address()))
            .args(["--partitions", &partitions.to_string(), topic])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tansu topic create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Every message of `topic`, read with kafka-python from the first offset to the last.
    fn consume(&self, topic: &str) -> Vec<Consumed> {
        self.consume_with(topic, &self.address(), "{}")
    }

    /// Every message of `topic` read through `bootstrap`, with kafka-python's client options
    /// `options` (a JSON object: TLS files, SASL credentials).
    fn consume_with(&self, topic: &str, bootstrap: &str, options: &str) -> Vec<Consumed> {
        let out = Command::new(python_with_kafka())
            .args(["-c", CONSUMER, bootstrap, topic, options])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kafka-python consumer failed: {}\nbroker log: {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.log.path()).unwrap_or_default()
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let mut f = l.splitn(4, '\t');
                let mut next = || f.next().unwrap_or_else(|| panic!("bad line {l:?}"));
                let partition = next().parse().unwrap();
                let offset = next().parse().unwrap();
                let key = next().to_string();
                let value = next().to_string();
                Consumed {
                    partition,
                    offset,
                    key,
                    value,
                }
            })
            .collect()
    }
}

impl Tansu {
    /// The header of every record batch of `topic`.
    fn batches(&self, topic: &str) -> Vec<BatchHeader> {
        let out = Command::new(python_with_kafka())
            .args(["-c", BATCHES, &self.address(), topic])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kafka-python fetch failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let f: Vec<i64> = l.split('\t').map(|v| v.parse().unwrap()).collect();
                BatchHeader {
                    partition: f[0] as u32,
                    count: f[2],
                    producer_id: f[3],
                    producer_epoch: f[4],
                    base_sequence: f[5],
                }
            })
            .collect()
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// kafka-python reading every partition of a topic from the beginning to the end offsets it
/// had at the start; one line per message: partition, offset, key and value, tab-separated.
const CONSUMER: &str = r#"
import json, sys, time
from kafka import KafkaConsumer, TopicPartition
broker, topic, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
deadline = time.time() + 60
c = KafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False,
                  auto_offset_reset='earliest', max_partition_fetch_bytes=4 << 20, **options)
parts = None
while not parts and time.time() < deadline:
    parts = c.partitions_for_topic(topic)
if not parts:
    sys.exit('no partitions for topic ' + topic)
tps = [TopicPartition(topic, p) for p in sorted(parts)]
c.assign(tps)
c.seek_to_beginning(*tps)
end = c.end_offsets(tps)
left = {tp for tp in tps if end[tp] > 0}
out = sys.stdout
while left:
    if time.time() > deadline:
        sys.exit('consumer timed out')
    for tp, msgs in c.poll(timeout_ms=500, max_records=20000).items():
        for m in msgs:
            out.write('%d\t%d\t%s\t%s\n' % (tp.partition, m.offset,
                      (m.key or b'').decode(), m.value.decode().rstrip('\n')))
    left = {tp for tp in left if c.position(tp) < end[tp]}
"#;

/// kafka-python fetching every record batch of a topic, whose headers it prints as stored:
/// partition, base offset, record count, producer id, producer epoch and base sequence,
/// tab-separated. The header is read from the bytes (the v2 record batch layout of the Kafka
/// protocol), as kafka-python 2.0 does not expose the producer fields.
const BATCHES: &str = r#"
import struct, sys
from kafka import KafkaClient
from kafka.protocol.fetch import FetchRequest
broker, topic = sys.argv[1], sys.argv[2]
c = KafkaClient(bootstrap_servers=broker)
c.poll(future=c.cluster.request_update())
node = c.least_loaded_node()
while not c.ready(node):
    c.poll(timeout_ms=100)
for p in sorted(c.cluster.partitions_for_topic(topic) or []):
    offset = 0
    while True:
        f = c.send(node, FetchRequest[4](-1, 100, 1, 64 << 20, 0, [(topic, [(p, offset, 16 << 20)])]))
        c.poll(future=f)
        _, [(_, err, hw, _, _, data)] = f.value.topics[0]
        if err:
            sys.exit('fetch error %d' % err)
        at, got = 0, False
        while at + 61 <= len(data):
            base, length = struct.unpack_from('>qi', data, at)
            if at + 12 + length > len(data):
                break
            last_delta, = struct.unpack_from('>i', data, at + 23)
            pid, epoch, seq, count = struct.unpack_from('>qhii', data, at + 43)
            print('%d\t%d\t%d\t%d\t%d\t%d' % (p, base, count, pid, epoch, seq))
            offset, got = base + last_delta + 1, True
            at += 12 + length
        if not got or offset >= hw:
            break
"#;

/// One record batch's header, as stored.
#[derive(Debug, Clone, Copy)]
struct BatchHeader {
    partition: u32,
    count: i64,
    producer_id: i64,
    producer_epoch: i64,
    base_sequence: i64,
}

/// One message read back.
#[derive(Debug, Clone)]
struct Consumed {
    partition: u32,
    offset: u64,
    key: String,
    value: String,
}

impl Consumed {
    /// The `msgnum:NNNNNNNN` of its value.
    fn msgnum(&self) -> usize {
        let at = self
            .value
            .find("msgnum:")
            .unwrap_or_else(|| panic!("no msgnum in {:?}", self.value));
        self.value[at + 7..at + 15].parse().unwrap()
    }
}

/// The line for message `i`, from host `host{i % HOSTS}`.
fn host_line(i: usize) -> String {
    format!("<13>Nov 22 10:00:00 host{} app: msgnum:{i:08}", i % HOSTS)
}

/// Sends messages `range` over one TCP connection.
fn send(d: &TestDaemon, range: std::ops::Range<usize>) {
    send_lines_to(d.addr("tcp"), range.map(host_line));
}

/// A TCP listener whose every message goes to the kafka output `kafka`, with extra `keys`;
/// state under `state` (a disk queue survives the daemon).
fn config(broker: &str, keys: &str, state: &str) -> String {
    let daemon = format!("[daemon]\nstate_dir = \"{state}\"\nshutdown_timeout = \"2s\"\n\n");
    let pipeline = ConfigBuilder::new()
        .tcp("tcp", "")
        .output(
            "kafka",
            "kafka",
            &format!("brokers = [\"{broker}\"]\ntopic = \"syslog\"\ntimeout = \"5s\"\n{keys}"),
        )
        .route_to(&["kafka"])
        .build();
    format!("{daemon}{pipeline}")
}

fn counter(d: &TestDaemon, name: &str) -> u64 {
    d.output_counter("kafka", name)
}

/// Checks the topic holds every number of 0..`n`; each host in one partition, with its
/// messages in the order sent (first copies: a retried batch may add later duplicates).
/// Returns how many duplicates there were.
fn check_topic(consumed: &[Consumed], n: usize) -> usize {
    let mut seen = vec![0u32; n];
    let mut host_partition: std::collections::HashMap<&str, u32> = Default::default();
    let mut sorted: Vec<&Consumed> = consumed.iter().collect();
    sorted.sort_by_key(|c| (c.partition, c.offset));
    let mut last: std::collections::HashMap<&str, usize> = Default::default();
    for c in sorted {
        let i = c.msgnum();
        assert!(i < n, "unexpected msgnum {i}");
        let host = c.key.as_str();
        assert_eq!(host, format!("host{}", i % HOSTS), "key of msgnum {i}");
        let p = *host_partition.entry(host).or_insert(c.partition);
        assert_eq!(
            p, c.partition,
            "{host} in partitions {p} and {}",
            c.partition
        );
        seen[i] += 1;
        if seen[i] == 1 {
            if let Some(&prev) = last.get(host) {
                assert!(prev < i, "{host}: msgnum {i} after {prev} in partition {p}");
            }
            last.insert(host, i);
        }
    }
    let missing: Vec<usize> = (0..n).filter(|&i| seen[i] == 0).take(10).collect();
    assert!(missing.is_empty(), "lost, first ones: {missing:?}");
    seen.iter().map(|&c| c as usize - 1).sum()
}

/// Waits until the output has had `n` messages acknowledged.
fn wait_acked(d: &TestDaemon, n: u64) {
    wait_until(&format!("{n} acknowledged"), DELIVERY, || {
        counter(d, "written") >= n
    });
}

#[test]
fn kafka_every_message_arrives_with_each_host_in_order() {
    // 100k messages: about 10 s in a debug build on 2 cores, most of it kafka-python reading.
    const N: usize = 100_000;
    let broker = Tansu::start();
    broker.create_topic("syslog", PARTITIONS);
    let state = tempfile::tempdir().unwrap();
    let d = TestDaemon::start(&config(
        &broker.address(),
        "compression = \"gzip\"",
        state.path().to_str().unwrap(),
    ));
    let started = Instant::now();
    send(&d, 0..N);
    wait_acked(&d, N as u64);
    eprintln!("{N} acknowledged in {:?}", started.elapsed());
    let consumed = broker.consume("syslog");
    assert_eq!(check_topic(&consumed, N), 0, "no retry, no duplicate");
    let partitions: std::collections::BTreeSet<u32> =
        consumed.iter().map(|c| c.partition).collect();
    assert!(partitions.len() > 1, "hosts spread over the partitions");
    // The value is the JSON event (the default format).
    let v: serde_json::Value = serde_json::from_str(&consumed[0].value).unwrap();
    assert_eq!(v["app_name"], "app");
    assert!(counter(&d, "produced") >= N as u64);
    assert_eq!(counter(&d, "in_flight"), 0);
    // The bootstrap connection, and the broker's own once its node id is known, when
    // librdkafka does not reuse the first.
    assert!((1..=2).contains(&counter(&d, "reconnects")));
    assert_eq!(counter(&d, "retries"), 0);
    // Idempotent: every batch carries a producer id, and each partition's sequence numbers
    // run on without a gap or a repeat (the broker would refuse either).
    let batches = broker.batches("syslog");
    assert_eq!(batches.iter().map(|b| b.count).sum::<i64>(), N as i64);
    let mut next: std::collections::HashMap<(u32, i64, i64), i64> = Default::default();
    for b in &batches {
        assert!(b.producer_id >= 0, "batch without a producer id: {b:?}");
        let want = next
            .entry((b.partition, b.producer_id, b.producer_epoch))
            .or_insert(0);
        assert_eq!(b.base_sequence, *want, "sequence of {b:?}");
        *want += b.count;
    }
}

#[test]
fn kafka_broker_killed_and_restarted_loses_nothing_unacknowledged() {
    // tansu's storage here is memory: a killed broker forgets its log. So the topic is read
    // before the kill (everything acknowledged so far), and again after the restart (what
    // sluice kept and sent again): together they must hold every message.
    const HALF: usize = 20_000;
    let mut broker = Tansu::start();
    broker.create_topic("syslog", PARTITIONS);
    let state = tempfile::tempdir().unwrap();
    let d = TestDaemon::start(&config(
        &broker.address(),
        "",
        state.path().to_str().unwrap(),
    ));
    send(&d, 0..HALF);
    wait_acked(&d, HALF as u64);
    let before = broker.consume("syslog");
    broker.kill();
    // Mid-stream: the second half arrives while the broker is gone.
    send(&d, HALF..2 * HALF);
    wait_until("retries while the broker is down", DELIVERY, || {
        counter(&d, "retries") >= 2
    });
    assert_eq!(
        counter(&d, "written"),
        HALF as u64,
        "nothing acknowledged by a dead broker"
    );
    broker.up();
    broker.create_topic("syslog", PARTITIONS);
    wait_acked(&d, 2 * HALF as u64);
    let after = broker.consume("syslog");
    let mut all = before;
    all.extend(after.iter().cloned().map(|mut c| {
        // Offsets start again on the new log: keep the two logs apart.
        c.offset += 1 << 40;
        c
    }));
    check_topic(&all, 2 * HALF);
    assert!(
        after.iter().all(|c| c.msgnum() >= HALF),
        "nothing acknowledged before the kill was sent again"
    );
    assert!(counter(&d, "reconnects") >= 2, "connected again");
}

#[test]
fn kafka_disk_queue_survives_a_sluice_restart() {
    const N: usize = 5_000;
    let mut broker = Tansu::start();
    let address = broker.address();
    broker.kill();
    let state = tempfile::tempdir().unwrap();
    let config = config(
        &address,
        "queue = { kind = \"disk\", max_size = \"100MiB\" }",
        state.path().to_str().unwrap(),
    );
    let mut d = TestDaemon::start(&config);
    send(&d, 0..N);
    wait_until("all in the disk queue", DELIVERY, || {
        counter(&d, "queue_depth") == N as u64
    });
    assert!(
        counter(&d, "retries") >= 1,
        "a refused connection is retried"
    );
    d.stop();
    assert_eq!(counter(&d, "written"), 0);

    broker.up();
    broker.create_topic("syslog", PARTITIONS);
    let d = TestDaemon::start(&config);
    wait_acked(&d, N as u64);
    assert_eq!(check_topic(&broker.consume("syslog"), N), 0);
    wait_until("the queue empty", DEADLINE, || {
        counter(&d, "queue_depth") == 0
    });
}

#[test]
fn kafka_silent_broker_does_not_block_other_outputs() {
    // A "broker" that takes connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap().to_string();
    let hold = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().take(64) {
            held.push(s);
        }
    });
    const N: usize = 5_000;
    let state = tempfile::tempdir().unwrap();
    let text = config(
        &address,
        "queue = { max_events = 100, when_full = \"drop_newest\" }",
        state.path().to_str().unwrap(),
    )
    .replace(
        "[[route]]\nto = [\"kafka\"]",
        "[output.file]\nkind = \"file\"\npath = \"{dir}/all.log\"\n\n[[route]]\nto = [\"kafka\", \"file\"]",
    );
    let d = TestDaemon::start(&text);
    send(&d, 0..N);
    d.wait_written("file", N as u64);
    let mut seen = vec![0u32; N];
    for l in lines(&d.path("all.log")) {
        let at = l.find("msgnum:").unwrap();
        seen[l[at + 7..at + 15].parse::<usize>().unwrap()] += 1;
    }
    assert!(
        seen.iter().all(|&c| c == 1),
        "the file output has each message once"
    );
    wait_until(
        "the kafka output drops what its queue cannot hold",
        DEADLINE,
        || counter(&d, "dropped_queue_full") >= (N - 100) as u64,
    );
    assert_eq!(counter(&d, "written"), 0);
    drop(d);
    drop(hold);
}

#[test]
fn kafka_config_errors_name_the_key_and_line() {
    let cases = [
        ("acks = \"1\"", "acks", "only \"all\""),
        (
            "compression = \"brotli\"",
            "compression",
            "unknown compression",
        ),
        ("key = \"pid\"", "key", "unknown key"),
        ("topic = \"sys log\"", "topic", "not allowed"),
        (
            "topic = \"syslog-{colour}\"",
            "topic",
            "unknown placeholder",
        ),
        ("brokers = [\"kafka1\"]", "brokers", "expected host:port"),
        ("batch = { max_events = 0 }", "batch.max_events", ""),
        (
            "sasl = { mechanism = \"gssapi\", user = \"u\", password_file = \"/p\" }",
            "sasl.mechanism",
            "unknown mechanism",
        ),
        ("ca_file = \"/ca.pem\"", "ca_file", ""),
        (
            "max_message_size = 999",
            "max_message_size",
            "from 1000 to 1000000000",
        ),
    ];
    for (line, key, what) in cases {
        // The bad line is line 4, after the header, kind and one good key.
        let base = ["brokers = [\"127.0.0.1:9092\"]", "topic = \"syslog\""];
        let keep = base
            .iter()
            .filter(|b| b.split(' ').next() != line.split(' ').next())
            .copied()
            .collect::<Vec<_>>();
        let toml = format!(
            "[output.k]\nkind = \"kafka\"\n{}\n{line}\n[[route]]\nto = [\"k\"]\n",
            keep.join("\n")
        );
        let line_no = 3 + keep.len();
        let (code, stderr, path) = check_config(&toml);
        assert_eq!(code, Some(78), "{line}: {stderr}");
        assert!(
            stderr.contains(&format!("{path}:{line_no}:"))
                && stderr.contains(&format!("output.k.{key}")),
            "{line}: expected line {line_no} and key output.k.{key} in {stderr}"
        );
        assert!(
            stderr.contains(what),
            "{line}: expected {what:?} in {stderr}"
        );
    }
    let (code, stderr, _) = check_config("[output.k]\nkind = \"kafka\"\n[[route]]\nto = [\"k\"]\n");
    assert_eq!(code, Some(78));
    assert!(
        stderr.contains("output.k.brokers") && stderr.contains("output.k.topic"),
        "{stderr}"
    );
    // librdkafka verifies brokers against a CA only: a pinned certificate is refused.
    let pin = format!("sha256:{}", "ab".repeat(32));
    let (code, stderr, path) = check_config(&format!(
        "[output.k]\nkind = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\ntopic = \"t\"\n\
         tls = true\nfingerprints = [\"{pin}\"]\n[[route]]\nto = [\"k\"]\n"
    ));
    assert_eq!(code, Some(78));
    assert!(
        stderr.contains(&format!("{path}:5:"))
            && stderr.contains("output.k.fingerprints")
            && stderr.contains("not supported by the kafka output"),
        "{stderr}"
    );
    // --check-config reads the SASL password file.
    let (code, stderr, path) = check_config(
        "[output.k]\nkind = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\ntopic = \"t\"\n\
         sasl = { mechanism = \"scram-sha-512\", user = \"u\", password_file = \"/nonexistent/pw\" }\n\
         [[route]]\nto = [\"k\"]\n",
    );
    assert_eq!(code, Some(78));
    assert!(
        stderr.contains(&format!("{path}:5:"))
            && stderr.contains("output.k.sasl.password_file: /nonexistent/pw"),
        "{stderr}"
    );
}

#[test]
fn kafka_every_compression_is_read_back_by_kafka_python() {
    const N: usize = 2_000;
    let broker = Tansu::start();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("syslog-{codec}");
        broker.create_topic(&topic, PARTITIONS);
        let state = tempfile::tempdir().unwrap();
        let text = config(
            &broker.address(),
            &format!("compression = \"{codec}\""),
            state.path().to_str().unwrap(),
        )
        .replace("topic = \"syslog\"", &format!("topic = \"{topic}\""));
        let d = TestDaemon::start(&text);
        send(&d, 0..N);
        wait_acked(&d, N as u64);
        assert_eq!(check_topic(&broker.consume(&topic), N), 0, "{codec}");
    }
}

#[test]
fn kafka_topic_template_takes_the_facility() {
    let broker = Tansu::start();
    broker.create_topic("syslog-user", 1);
    broker.create_topic("syslog-auth", 1);
    let state = tempfile::tempdir().unwrap();
    let text = config(
        &broker.address(),
        "format = \"rfc5424\"",
        state.path().to_str().unwrap(),
    )
    .replace("topic = \"syslog\"", "topic = \"syslog-{facility}\"");
    let d = TestDaemon::start(&text);
    // PRI 13 is user.notice, 34 auth.crit.
    send_lines_to(
        d.addr("tcp"),
        (0..100).map(|i| {
            let pri = if i % 2 == 0 { 13 } else { 34 };
            format!(
                "<{pri}>Nov 22 10:00:00 host{} app: msgnum:{i:08}",
                i % HOSTS
            )
        }),
    );
    wait_acked(&d, 100);
    let user = broker.consume("syslog-user");
    let auth = broker.consume("syslog-auth");
    assert_eq!((user.len(), auth.len()), (50, 50));
    assert!(
        user.iter()
            .all(|c| c.msgnum() % 2 == 0 && c.value.starts_with("<13>1 "))
    );
    assert!(
        auth.iter()
            .all(|c| c.msgnum() % 2 == 1 && c.value.starts_with("<34>1 "))
    );
}

#[test]
fn kafka_two_relays_into_one_topic_keep_each_host_in_order() {
    // Scale-out: two stateless relays, each taking some hosts, one topic.
    const N: usize = 40_000;
    let broker = Tansu::start();
    broker.create_topic("syslog", PARTITIONS);
    let (sa, sb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = TestDaemon::start(&config(&broker.address(), "", sa.path().to_str().unwrap()));
    let b = TestDaemon::start(&config(&broker.address(), "", sb.path().to_str().unwrap()));
    let (aa, ba) = (a.addr("tcp"), b.addr("tcp"));
    let ta = std::thread::spawn(move || {
        send_lines_to(aa, (0..N).filter(|i| i % HOSTS < 2).map(host_line))
    });
    let tb = std::thread::spawn(move || {
        send_lines_to(ba, (0..N).filter(|i| i % HOSTS >= 2).map(host_line))
    });
    ta.join().unwrap();
    tb.join().unwrap();
    wait_acked(&a, (N / 2) as u64);
    wait_acked(&b, (N / 2) as u64);
    assert_eq!(check_topic(&broker.consume("syslog"), N), 0);
}

#[test]
fn kafka_missing_topic_is_retried_until_it_is_created() {
    // sluice does not create topics: until the operator does, attempts fail and back off, and
    // nothing leaves the backlog. Keyless messages then spread over the partitions.
    const N: usize = 1_000;
    let broker = Tansu::start();
    let state = tempfile::tempdir().unwrap();
    let d = TestDaemon::start(&config(
        &broker.address(),
        "key = \"none\"",
        state.path().to_str().unwrap(),
    ));
    send(&d, 0..N);
    wait_until("retries while the topic is missing", DELIVERY, || {
        counter(&d, "retries") >= 2
    });
    assert_eq!(counter(&d, "written"), 0);
    assert_eq!(counter(&d, "queue_depth"), N as u64);
    broker.create_topic("syslog", PARTITIONS);
    wait_acked(&d, N as u64);
    let consumed = broker.consume("syslog");
    assert!(consumed.iter().all(|c| c.key.is_empty()), "no key");
    let mut seen = vec![0u32; N];
    for c in &consumed {
        seen[c.msgnum()] += 1;
    }
    assert!(seen.iter().all(|&c| c == 1), "each message once");
}

#[test]
fn kafka_message_too_large_is_dead_lettered_and_the_rest_go_on() {
    // librdkafka refuses a message larger than `max_message_size` (its message.max.bytes)
    // before sending: it is refused for good, counted, handed to the dead-letter output with
    // the reason, and the messages after it are produced in order.
    const N: usize = 200;
    const BIG: usize = 77;
    let broker = Tansu::start();
    broker.create_topic("syslog", PARTITIONS);
    let state = tempfile::tempdir().unwrap();
    let text = config(
        &broker.address(),
        "max_message_size = 2000\ndead_letter = \"refused\"\nbatch = { max_events = 50 }",
        state.path().to_str().unwrap(),
    )
    .replace(
        "[[route]]",
        "[output.refused]\nkind = \"file\"\npath = \"{dir}/refused.log\"\nformat = \"rfc5424\"\n\n[[route]]",
    );
    let d = TestDaemon::start(&text);
    send_lines_to(
        d.addr("tcp"),
        (0..N).map(|i| {
            let line = host_line(i);
            if i == BIG {
                format!("{line} {}", "x".repeat(3000))
            } else {
                line
            }
        }),
    );
    wait_until("every message produced or refused", DELIVERY, || {
        counter(&d, "written") + counter(&d, "rejected") >= N as u64
    });
    assert_eq!(counter(&d, "rejected"), 1);
    assert_eq!(counter(&d, "dead_lettered"), 1);
    assert_eq!(counter(&d, "written"), (N - 1) as u64);
    assert_eq!(counter(&d, "retries"), 0, "a refusal is not retried");
    let refused = wait_lines(&d.dir.path().join("refused.log"), 1);
    assert!(refused[0].contains("sluice - DEADLETTER"), "{}", refused[0]);
    assert!(refused[0].contains("output=\"kafka\""), "{}", refused[0]);
    assert!(
        refused[0].contains("MessageSizeTooLarge"),
        "the reason: {}",
        refused[0]
    );
    assert!(
        refused[0].contains(&format!("msgnum:{BIG:08}")),
        "{}",
        refused[0]
    );
    let consumed = broker.consume("syslog");
    assert!(consumed.iter().all(|c| c.msgnum() != BIG));
    // Every other message once, each host's in order.
    let mut renumbered: Vec<Consumed> = consumed.clone();
    renumbered.retain(|c| c.msgnum() != BIG);
    assert_eq!(renumbered.len(), N - 1);
    let mut last: std::collections::HashMap<&str, usize> = Default::default();
    let mut sorted: Vec<&Consumed> = consumed.iter().collect();
    sorted.sort_by_key(|c| (c.partition, c.offset));
    for c in sorted {
        let i = c.msgnum();
        if let Some(&prev) = last.get(c.key.as_str()) {
            assert!(prev < i, "{}: {i} after {prev}", c.key);
        }
        last.insert(c.key.as_str(), i);
    }
}

/// A TLS front for a tansu broker: tansu 0.6 takes `--cert` and `--key` but its listener never
/// uses them (the acceptor it builds is dropped unused), so it cannot serve TLS itself. This
/// front (rustls, on its own runtime) terminates TLS, requires a client certificate from the
/// test CA, and passes the bytes on to the broker's plaintext port, which advertises the
/// front's address to clients.
struct TlsFront {
    port: u16,
    /// Client certificates verified, handshakes that failed.
    handshakes: Arc<(AtomicU64, AtomicU64)>,
    _runtime: tokio::runtime::Runtime,
}

impl TlsFront {
    fn start(pki: &crate::tls::Pki, upstream: u16) -> TlsFront {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(pki.p("ca.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let certs = CertificateDer::pem_file_iter(pki.p("server.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(pki.p("server.key")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let handshakes: Arc<(AtomicU64, AtomicU64)> = Arc::default();
        let counts = handshakes.clone();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, counts) = (acceptor.clone(), counts.clone());
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(tcp).await {
                        Ok(t) => t,
                        Err(_) => {
                            counts.1.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    };
                    if tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .is_some_and(|c| !c.is_empty())
                    {
                        counts.0.fetch_add(1, Ordering::Relaxed);
                    }
                    let Ok(mut broker) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
                });
            }
        });
        TlsFront {
            port,
            handshakes,
            _runtime: runtime,
        }
    }
}

#[test]
fn kafka_over_tls_with_a_client_certificate() {
    const N: usize = 5_000;
    let pki = crate::tls::Pki::new();
    pki.server();
    pki.client("client", "sluice.example");
    let mut broker = Tansu::new();
    let front = TlsFront::start(&pki, broker.port);
    broker.advertised = Some(front.port);
    broker.up();
    broker.create_topic("syslog", PARTITIONS);
    let state = tempfile::tempdir().unwrap();
    let tls_keys = format!(
        "tls = true\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\ncompression = \"zstd\"",
        pki.p("ca.pem"),
        pki.p("client.pem"),
        pki.p("client.key")
    );
    let front_address = format!("127.0.0.1:{}", front.port);
    let d = TestDaemon::start(&config(
        &front_address,
        &tls_keys,
        state.path().to_str().unwrap(),
    ));
    send(&d, 0..N);
    wait_acked(&d, N as u64);
    assert!(
        front.handshakes.0.load(Ordering::Relaxed) >= 1,
        "sluice showed its client certificate"
    );
    // Read back through the front too: the broker sends clients there.
    let options = format!(
        r#"{{"security_protocol": "SSL", "ssl_cafile": "{}", "ssl_certfile": "{}", "ssl_keyfile": "{}"}}"#,
        pki.p("ca.pem"),
        pki.p("client.pem"),
        pki.p("client.key")
    );
    assert_eq!(
        check_topic(&broker.consume_with("syslog", &front_address, &options), N),
        0
    );

    // A CA the front's certificate does not chain to: nothing is delivered, and sluice
    // retries.
    let other = crate::tls::Pki::new();
    let state2 = tempfile::tempdir().unwrap();
    let d2 = TestDaemon::start(
        &config(
            &front_address,
            &tls_keys.replace(&pki.p("ca.pem"), &other.p("ca.pem")),
            state2.path().to_str().unwrap(),
        )
        .replace("timeout = \"5s\"", "timeout = \"2s\""),
    );
    send(&d2, 0..10);
    wait_until("retries with an untrusted broker", DELIVERY, || {
        counter(&d2, "retries") >= 1
    });
    assert_eq!(counter(&d2, "written"), 0);
    assert!(
        front.handshakes.1.load(Ordering::Relaxed) >= 1,
        "sluice ended the handshake"
    );
}

#[test]
fn kafka_sasl_scram_sha_256_and_512_against_tansu_users() {
    // tansu keeps SCRAM users in its sqlite storage (its memory storage keeps none): the users
    // and the topic are made before the broker is started again with --authentication, as
    // its tools do not authenticate.
    const N: usize = 2_000;
    let mut broker = Tansu::new();
    broker.storage = "sqlite://tansu.db".into();
    broker.up();
    broker.create_topic("syslog", PARTITIONS);
    for mechanism in ["scram256", "scram512"] {
        let out = Command::new(tansu_bin())
            .args(["user", "create", "--broker"])
            .arg(format!("tcp://{}", broker.address()))
            .args(["--mechanism", mechanism, "sluice", "s3cret-pw"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tansu user create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    broker.kill();
    broker.args = vec!["--authentication".into()];
    broker.up();
    let secrets = tempfile::tempdir().unwrap();
    let (good, bad) = (secrets.path().join("pw"), secrets.path().join("wrong"));
    std::fs::write(&good, "s3cret-pw\n").unwrap();
    std::fs::write(&bad, "not-the-pw\n").unwrap();
    let sasl = |mechanism: &str, file: &std::path::Path| {
        format!(
            "sasl = {{ mechanism = \"{mechanism}\", user = \"sluice\", password_file = \"{}\" }}",
            file.display()
        )
    };
    let mut sent = 0;
    for mechanism in ["scram-sha-256", "scram-sha-512"] {
        let state = tempfile::tempdir().unwrap();
        let d = TestDaemon::start(&config(
            &broker.address(),
            &sasl(mechanism, &good),
            state.path().to_str().unwrap(),
        ));
        send(&d, sent..sent + N);
        wait_acked(&d, N as u64);
        sent += N;
    }
    let options = r#"{"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "sluice", "sasl_plain_password": "s3cret-pw"}"#;
    assert_eq!(
        check_topic(
            &broker.consume_with("syslog", &broker.address(), options),
            sent
        ),
        0
    );

    // A wrong password: the broker refuses the authentication, nothing is delivered, and
    // the attempts are retried.
    let state = tempfile::tempdir().unwrap();
    let d = TestDaemon::start(
        &config(
            &broker.address(),
            &sasl("scram-sha-256", &bad),
            state.path().to_str().unwrap(),
        )
        .replace("timeout = \"5s\"", "timeout = \"2s\""),
    );
    send(&d, 0..10);
    wait_until("retries with a wrong password", DELIVERY, || {
        counter(&d, "retries") >= 1
    });
    assert_eq!(counter(&d, "written"), 0);
}
