#!/usr/bin/env python3
"""Kafka output throughput: sluice relays (release build), and for comparison rsyslog's omkafka
and syslog-ng's kafka-c, taking RFC 3164 over TCP from benches/loadgen.rs and producing to one
tansu broker (in-memory storage, a fresh broker per run), acks=all.

Reports, per run, messages per second (first message sent until the topic holds them all, read
from the broker with kafka-python rather than from the daemons) and messages per CPU-second of
the daemon processes (user + system time from /proc, over the same span), and tansu's
CPU-seconds beside. After each run (untimed; --no-verify skips it) the topic is read back and
every `seq=` number sent must be there. With several daemons they take
turns run by run (sluice, rsyslog, syslog-ng, sluice, ...).

The peers run Debian 12's modules (syslog-ng-mod-rdkafka, rsyslog-kafka) with librdkafka 2.16.1
from PyPI (LD_LIBRARY_PATH, for the peers only): Debian's librdkafka 2.0.2 fails tansu 0.6's
ApiVersion v3 answer ("Read underflow"). benches/peers-setup.sh installs all three.

    cargo build --release --bin sluice --example loadgen
    .ci/install-test-tools                   # tansu, in ~/.cache/sluice-test-tools/tansu
    benches/peers-setup.sh                   # for --daemons rsyslog,syslog-ng
    benches/kafka.py [--count 1000000] [--relays 1] [--compression none] [--runs 3]
                     [--batch-events 2000] [--batch-size 1MiB] [--max-in-flight 4] [--format json]
                     [--daemons sluice,rsyslog,syslog-ng] [--timeout 300]
"""

import argparse
import collections
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

# This file is named kafka.py too: its own directory must not shadow kafka-python.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
try:
    from kafka import KafkaClient, KafkaConsumer, TopicPartition
    from kafka.protocol.fetch import FetchRequest
except ImportError:
    # kafka-python is Debian's python3-kafka; a python3 earlier on PATH (pyenv) may lack it.
    if sys.executable != "/usr/bin/python3" and os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    sys.exit("kafka-python missing: apt-get install python3-kafka (or run .ci/install-test-tools)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLUICE = os.environ.get("SLUICE", os.path.join(ROOT, "target/release/sluice"))
LOADGEN = os.environ.get("LOADGEN", os.path.join(ROOT, "target/release/examples/loadgen"))
TOOLS = os.environ.get(
    "SLUICE_TEST_TOOLS", os.path.join(os.path.expanduser("~"), ".cache/sluice-test-tools")
)
TANSU = os.path.join(TOOLS, "tansu/bin/tansu")
PEERS = os.environ.get("PEERS_PREFIX", os.path.join(
    os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "sluice-peers"))
RSYSLOG = os.path.join(PEERS, "rsyslog-root/usr/sbin/rsyslogd")
RSYSLOG_MODS = os.path.join(PEERS, "rsyslog-root/usr/lib/x86_64-linux-gnu/rsyslog")
RDKAFKA = os.path.join(PEERS, "librdkafka")  # librdkafka.so.1 from PyPI, see peers-setup.sh
TICKS = os.sysconf("SC_CLK_TCK")
TOPIC = "syslog"
SEQ = re.compile(rb"seq=(\d+)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, deadline=20):
    end = time.time() + deadline
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


# --- the daemons: each listens on `tcp` and produces every message to TOPIC on the broker ------
# Comparable producer settings: acks=all, idempotent, no compression (or --compression), up to
# --batch-events messages / --batch-size bytes per request, 5 ms linger, messages keyed by
# hostname (4 hosts, so 4 keys). sluice's values are --format (JSON by default); the peers write
# the traditional line (rsyslog's RSYSLOG_TraditionalFileFormat, syslog-ng the same fields).

def librdkafka_conf(args):
    return {"acks": "all", "enable.idempotence": "true", "compression.codec": args.compression,
            "linger.ms": "5", "batch.num.messages": str(args.batch_events),
            "batch.size": str(parse_size(args.batch_size)), "partitioner": "murmur2_random"}


def parse_size(text):
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for unit, mult in units.items():
        if text.endswith(unit):
            return int(text[:-len(unit)]) * mult
    return int(text)


def sluice(args, d, tcp, broker):
    conf = os.path.join(d, "sluice.toml")
    in_flight = "" if args.max_in_flight is None else f"max_in_flight = {args.max_in_flight}\n"
    with open(conf, "w") as f:
        f.write(f"""[daemon]
state_dir = "{d}"
stats_interval = "1h"

[listen.tcp]
kind = "tcp"
address = "127.0.0.1:{tcp}"

[output.kafka]
kind = "kafka"
brokers = ["127.0.0.1:{broker}"]
topic = "{TOPIC}"
format = "{args.format}"
compression = "{args.compression}"
batch = {{ max_events = {args.batch_events}, max_size = "{args.batch_size}" }}
{in_flight}queue = {{ max_events = 200000 }}

[[route]]
to = ["kafka"]
""")
    return [SLUICE, "--config", conf], None


def peer_env():
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = RDKAFKA
    return env


def rsyslog(args, d, tcp, broker):
    conf = os.path.join(d, "rsyslog.conf")
    params = ", ".join(f'"{k}={v}"' for k, v in librdkafka_conf(args).items())
    with open(conf, "w") as f:
        f.write(f'global(workDirectory="{d}")\n'
                'module(load="imtcp")\nmodule(load="omkafka")\n'
                f'input(type="imtcp" port="{tcp}" address="127.0.0.1")\n'
                'template(name="host" type="string" string="%hostname%")\n'
                f'action(type="omkafka" broker=["127.0.0.1:{broker}"] topic="{TOPIC}" '
                'key="host" dynaKey="on" template="RSYSLOG_TraditionalFileFormat" '
                # Without these, a message librdkafka refuses with "Queue full" (its default
                # 100,000 messages in flight) is lost: omkafka resubmits it, rsyslog retries.
                'resubmitOnFailure="on" action.resumeRetryCount="-1" '
                f'confParam=[{params}])\n')
    return [RSYSLOG, "-n", "-f", conf, "-i", os.path.join(d, "rs.pid"), "-M", RSYSLOG_MODS], \
        peer_env()


def syslog_ng(args, d, tcp, broker):
    conf = os.path.join(d, "syslog-ng.conf")
    params = " ".join(f'"{k}" => "{v}"' for k, v in librdkafka_conf(args).items())
    with open(conf, "w") as f:
        f.write('@version: 3.38\n'
                'options { threaded(yes); use-dns(no); keep-hostname(yes); stats-freq(0); };\n'
                f'source s {{ network(ip("127.0.0.1") transport("tcp") port({tcp}) '
                'log-iw-size(100000)); };\n'
                f'destination k {{ kafka-c(bootstrap-servers("127.0.0.1:{broker}") '
                f'topic("{TOPIC}") key("$HOST") message("$DATE $HOST $MSGHDR$MSG") '
                f'config({params})); }};\n'
                # flow-control: the TCP source waits for the destination instead of dropping.
                'log { source(s); destination(k); flags(flow-control); };\n')
    return [shutil.which("syslog-ng") or "syslog-ng", "-F", "-f", conf,
            "-p", os.path.join(d, "sng.pid"), "-R", os.path.join(d, "sng.persist"),
            "-c", os.path.join(d, "sng.ctl")], peer_env()


DAEMONS = {"sluice": sluice, "rsyslog": rsyslog, "syslog-ng": syslog_ng}


class TopicEnd:
    """Messages in the topic (a fresh broker per run): the sum of its partitions' ends.

    tansu 0.6 answers ListOffsets with the record batch written last (latest: its base offset
    + 1) or first (earliest), not the highest or lowest offset; with two relays in one
    partition those differ. So the end is the high watermark a fetch reports, and reading
    starts at offset 0.
    """

    def __init__(self, broker, partitions):
        self.consumer = KafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False)
        self.client = KafkaClient(bootstrap_servers=broker)
        self.tps = [TopicPartition(TOPIC, p) for p in range(partitions)]

    def count(self):
        return sum(self.ends().values())

    def ends(self):
        node = self.client.least_loaded_node()
        while not self.client.ready(node):
            self.client.poll(timeout_ms=100)
        ends = {}
        for tp in self.tps:
            f = self.client.send(node, FetchRequest[4](
                -1, 100, 1, 1, 0, [(TOPIC, [(tp.partition, 0, 1)])]))
            self.client.poll(future=f)
            _, [(_, err, high_watermark, _, _, _)] = f.value.topics[0]
            if err:
                raise RuntimeError(f"fetch error {err} on partition {tp.partition}")
            ends[tp] = high_watermark
        return ends

    def missing(self, per, copies, deadline):
        """Reads the whole topic back: (messages, how many of the `copies` x `per` sent are
        not there). Each relay's loadgen numbers its messages 0..per-1, so every `seq=`
        number must be there `copies` times."""
        ends = self.ends()
        c = self.consumer
        c.assign(self.tps)
        for tp in self.tps:
            c.seek(tp, 0)
        seqs, n = collections.Counter(), 0
        left = {tp for tp, end in ends.items() if end > 0}
        while left:
            if time.time() > deadline:
                raise RuntimeError("reading the topic back timed out")
            for tp, msgs in c.poll(timeout_ms=500, max_records=50000).items():
                for m in msgs:
                    if m.offset < ends[tp]:
                        n += 1
                        found = SEQ.search(m.value)
                        if found:
                            seqs[int(found.group(1))] += 1
            left = {tp for tp in left if c.position(tp) < ends[tp]}
        return n, sum(max(0, copies - seqs[i]) for i in range(per))

    def close(self):
        self.consumer.close()
        self.client.close()


def run(args, work, name):
    broker_port = free_port()
    url = f"tcp://127.0.0.1:{broker_port}"
    tansu = subprocess.Popen(
        [TANSU, "broker", "--storage-engine", "memory://tansu/",
         "--listener-url", url, "--advertised-listener-url", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    relays = []
    topic = None
    try:
        wait_port(broker_port)
        subprocess.run([TANSU, "topic", "create", "--broker", url, "--partitions",
                        str(args.partitions), TOPIC], check=True, capture_output=True)
        topic = TopicEnd(f"127.0.0.1:{broker_port}", args.partitions)
        for _ in range(args.relays if name == "sluice" else 1):
            tcp = free_port()
            d = tempfile.mkdtemp(dir=work)
            cmd, env = DAEMONS[name](args, d, tcp, broker_port)
            log = os.path.join(d, "log")
            p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                 stderr=open(log, "w"))
            relays.append((p, tcp, log))
        for p, tcp, log in relays:
            wait_port(tcp)
        if name == "rsyslog":
            time.sleep(0.3)  # rsyslog binds before its workers run
        per = args.count // len(relays)
        total = per * len(relays)
        cpu0 = sum(cpu_seconds(p.pid) for p, _, _ in relays)
        tansu0 = cpu_seconds(tansu.pid)
        start = time.time()
        senders = [threading.Thread(target=subprocess.run, args=(
            [LOADGEN, f"127.0.0.1:{tcp}", "--count", str(per), "--connections",
             str(args.connections), "--duration", str(args.timeout)],), kwargs={
                 "check": True, "capture_output": True, "timeout": args.timeout + 30})
            for _, tcp, _ in relays]
        for t in senders:
            t.start()
        deadline = start + args.timeout
        got = 0
        while got < total and time.time() < deadline:
            if any(p.poll() is not None for p, _, _ in relays):
                break
            time.sleep(0.1)
            got = topic.count()
        took = time.time() - start
        cpu = sum(cpu_seconds(p.pid) for p, _, _ in relays if p.poll() is None) - cpu0
        tansu_cpu = cpu_seconds(tansu.pid) - tansu0
        for t in senders:
            t.join()
        if got >= total and args.verify:
            got, missing = topic.missing(per, len(relays), time.time() + args.timeout)
            if missing:
                raise RuntimeError(f"{name}: the topic holds {got} messages but {missing} "
                                   f"of the {total} sent are not there")
        if got < total:
            with open(relays[0][2]) as f:
                tail = f.read()[-2000:]
            raise RuntimeError(f"{name}: {got} of {total} messages in the topic after "
                               f"{took:.0f} s; its log ends:\n{tail}")
        return total, got, took, cpu, tansu_cpu
    finally:
        if topic is not None:
            topic.close()
        for p, _, _ in relays:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        tansu.kill()
        tansu.wait()


def spread(values):
    values = sorted(values)
    return values[len(values) // 2], values[0], values[-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--relays", type=int, default=1, help="sluice relays (the peers run one)")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--compression", default="none")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch-events", type=int, default=2000)
    ap.add_argument("--batch-size", default="1MiB")
    ap.add_argument("--max-in-flight", type=int, default=None,
                    help="sluice's max_in_flight (batches in librdkafka at once); its default if not given")
    ap.add_argument("--format", default="json",
                    help="sluice's value format (the peers always write the traditional line)")
    ap.add_argument("--daemons", default="sluice", help="comma-separated: sluice,rsyslog,syslog-ng")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per run")
    ap.add_argument("--no-verify", dest="verify", action="store_false",
                    help="skip reading each topic back (untimed) for every seq= number")
    args = ap.parse_args()
    names = args.daemons.split(",")
    for name in names:
        if name not in DAEMONS:
            sys.exit(f"unknown daemon {name}: one of {', '.join(DAEMONS)}")
    needed = [SLUICE, LOADGEN, TANSU]
    if "rsyslog" in names:
        needed += [RSYSLOG, os.path.join(RSYSLOG_MODS, "omkafka.so")]
    if any(n != "sluice" for n in names):
        needed.append(os.path.join(RDKAFKA, "librdkafka.so.1"))
    if "syslog-ng" in names:
        needed.append("/usr/lib/syslog-ng/3.38/libkafka.so")
    for path in needed:
        if not os.path.exists(path):
            sys.exit(f"{path} missing: build with cargo build --release --bin sluice "
                     "--example loadgen, run .ci/install-test-tools and (for the peers) "
                     "benches/peers-setup.sh")
    results = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as work:
        for i in range(args.runs):
            for name in names:
                try:
                    n, got, took, cpu, tansu_cpu = run(args, work, name)
                except Exception as e:  # a failed run is reported and the others go on
                    print(f"run {i + 1} {name}: FAILED: {e}", flush=True)
                    continue
                results[name].append((n / took, n / cpu if cpu else float("inf")))
                extra = f" ({got - n} more in the topic: repeated)" if got > n else ""
                print(f"run {i + 1} {name}: {n} messages in {took:.2f} s: {n / took:,.0f} msg/s, "
                      f"{n / cpu:,.0f} msg per daemon CPU-s ({cpu:.2f} CPU-s), "
                      f"tansu {tansu_cpu:.2f} CPU-s{extra}", flush=True)
    print(f"compression {args.compression}, {args.partitions} partitions, batch "
          f"{args.batch_events} events / {args.batch_size}, linger 5 ms, acks=all, idempotent; "
          f"{args.count} messages per run, sluice {args.relays} relay(s), format {args.format}")
    med = {}
    for name in names:
        if not results[name]:
            print(f"{name}: no successful run")
            continue
        rate, cpu = spread([r[0] for r in results[name]]), spread([r[1] for r in results[name]])
        med[name] = (rate[0], cpu[0])
        print(f"{name}: median of {len(results[name])}: {rate[0]:,.0f} msg/s "
              f"({rate[1]:,.0f}-{rate[2]:,.0f}), {cpu[0]:,.0f} msg per CPU-s "
              f"({cpu[1]:,.0f}-{cpu[2]:,.0f})")
    if "sluice" in med:
        for name in med:
            if name != "sluice":
                print(f"sluice/{name}: {med['sluice'][0] / med[name][0]:.2f}x msg/s, "
                      f"{med['sluice'][1] / med[name][1]:.2f}x msg per CPU-s")


if __name__ == "__main__":
    main()
