#!/usr/bin/env python3
"""Kafka output throughput: sluice relays (release build) taking RFC 3164 over TCP from
benches/loadgen.rs and producing to one tansu broker (in-memory storage), acks=all.

Reports, per run, messages per second (first message sent to the last acknowledged, from
sluice's `written` counter on its metrics endpoint) and messages per CPU-second of the sluice
processes (user + system time from /proc, over the same span), and tansu's CPU-seconds beside.

    cargo build --release --bin sluice --example loadgen
    .ci/install-test-tools                   # tansu, in ~/.cache/sluice-test-tools/tansu
    benches/kafka.py [--count 1000000] [--relays 1] [--compression none] [--runs 3]
                     [--batch-events 2000] [--batch-size 1MiB]
"""

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLUICE = os.environ.get("SLUICE", os.path.join(ROOT, "target/release/sluice"))
LOADGEN = os.environ.get("LOADGEN", os.path.join(ROOT, "target/release/examples/loadgen"))
TOOLS = os.environ.get(
    "SLUICE_TEST_TOOLS", os.path.join(os.path.expanduser("~"), ".cache/sluice-test-tools")
)
TANSU = os.path.join(TOOLS, "tansu/bin/tansu")
TICKS = os.sysconf("SC_CLK_TCK")


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


def written(metrics_port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
    m = re.search(rb'sluice_output_written_total\{output="kafka"\} (\d+)', text)
    return int(m.group(1)) if m else 0


def run(args, work):
    broker_port = free_port()
    url = f"tcp://127.0.0.1:{broker_port}"
    tansu = subprocess.Popen(
        [TANSU, "broker", "--storage-engine", "memory://tansu/",
         "--listener-url", url, "--advertised-listener-url", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    relays = []
    try:
        wait_port(broker_port)
        subprocess.run([TANSU, "topic", "create", "--broker", url, "--partitions",
                        str(args.partitions), "syslog"], check=True, capture_output=True)
        for r in range(args.relays):
            tcp, metrics = free_port(), free_port()
            d = tempfile.mkdtemp(dir=work)
            conf = os.path.join(d, "sluice.toml")
            with open(conf, "w") as f:
                f.write(f"""[daemon]
state_dir = "{d}"
metrics_address = "127.0.0.1:{metrics}"
stats_interval = "1h"

[listen.tcp]
kind = "tcp"
address = "127.0.0.1:{tcp}"

[output.kafka]
kind = "kafka"
brokers = ["127.0.0.1:{broker_port}"]
topic = "syslog"
compression = "{args.compression}"
batch = {{ max_events = {args.batch_events}, max_size = "{args.batch_size}" }}
queue = {{ max_events = 200000 }}

[[route]]
to = ["kafka"]
""")
            p = subprocess.Popen([SLUICE, "--config", conf], stdout=subprocess.DEVNULL,
                                 stderr=open(os.path.join(d, "log"), "w"))
            relays.append((p, tcp, metrics))
        for _, tcp, metrics in relays:
            wait_port(tcp)
            wait_port(metrics)
        per = args.count // args.relays
        cpu0 = sum(cpu_seconds(p.pid) for p, _, _ in relays)
        tansu0 = cpu_seconds(tansu.pid)
        start = time.time()
        senders = [threading.Thread(target=subprocess.run, args=(
            [LOADGEN, f"127.0.0.1:{tcp}", "--count", str(per), "--connections",
             str(args.connections), "--duration", "600"],), kwargs={"check": True,
                                                              "capture_output": True})
            for _, tcp, _ in relays]
        for t in senders:
            t.start()
        deadline = start + 600
        while any(written(m) < per for _, _, m in relays):
            if time.time() > deadline:
                raise RuntimeError("not all acknowledged within 600 s")
            time.sleep(0.02)
        took = time.time() - start
        cpu = sum(cpu_seconds(p.pid) for p, _, _ in relays) - cpu0
        tansu_cpu = cpu_seconds(tansu.pid) - tansu0
        for t in senders:
            t.join()
        return per * args.relays, took, cpu, tansu_cpu
    finally:
        for p, _, _ in relays:
            p.terminate()
            p.wait()
        tansu.kill()
        tansu.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--relays", type=int, default=1)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--compression", default="none")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch-events", type=int, default=2000)
    ap.add_argument("--batch-size", default="1MiB")
    args = ap.parse_args()
    for path in (SLUICE, LOADGEN, TANSU):
        if not os.path.exists(path):
            sys.exit(f"{path} missing: build with cargo build --release --bin sluice "
                     "--example loadgen, and run .ci/install-test-tools")
    results = []
    with tempfile.TemporaryDirectory() as work:
        for i in range(args.runs):
            n, took, cpu, tansu_cpu = run(args, work)
            results.append((n / took, n / cpu if cpu else float("inf"), tansu_cpu))
            print(f"run {i + 1}: {n} messages in {took:.2f} s: {n / took:,.0f} msg/s, "
                  f"{n / cpu:,.0f} msg per sluice CPU-s ({cpu:.2f} CPU-s), tansu {tansu_cpu:.2f} CPU-s",
                  flush=True)
    med = sorted(results)[len(results) // 2]
    print(f"median: {med[0]:,.0f} msg/s, {med[1]:,.0f} msg per sluice CPU-s "
          f"({args.relays} relay(s), compression {args.compression}, {args.partitions} partitions, "
          f"batch {args.batch_events} events / {args.batch_size})")


if __name__ == "__main__":
    main()
