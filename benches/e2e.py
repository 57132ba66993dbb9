#!/usr/bin/env python3
"""End-to-end benchmark: sluice, rsyslog and syslog-ng side by side, in one run (issue 8).

Each daemon in turn listens on loopback and writes what it receives to a file (or, for the
slow-output case, to a pipe read slowly); benches/loadgen.rs sends. Every case runs all daemons
back to back, so the ratios hold on a noisy machine even when the absolute figures do not.

    benches/peers-setup.sh                # once: syslog-ng + loggen from Debian, rsyslog unpacked
    benches/e2e.py                        # builds sluice, loadgen and collector (release), runs every case
    benches/e2e.py --udp-ladder 200000,300000,400000,500000,600000 --rss-secs 15

Cases (pick with --cases):
  tcp3164   N messages of --size bytes, RFC 3164 LF-framed, one TCP connection, flat out
  tcp5424   the same, RFC 5424 octet-counted
  udp       UDP at --udp-rate msg/s offered for --udp-secs: % delivered
  ladder    UDP at each rate of --udp-ladder: the highest rate (as sent) each daemon takes with
            < 0.1% loss
  capladder the ladder again with each daemon held to --udp-cpu-cap of one CPU (a cgroup; root):
            the highest loss-free rate per CPU, below the sender's ceiling, and its ratio
  conns     RSS per connection of 1,000 idle TCP connections; 10,000 connections accepted
  latency   p99 from send to written line at half of sluice's tcp3164 wall throughput, to a
            named pipe and to a file (--latency-outputs), after a warm-up second
  rss       RSS every second for --rss-secs while the output (a pipe) drains slowly
  mixed3164 a collector's mixed stream (benches/mixed.rs: 200 hosts, 30 programs, every facility
            and severity, lognormal sizes, skewed and replayed stamps, device dialects) over 50
            TCP connections, LF-framed RFC 3164, through a real rule set: Debian's files
            (syslog, auth.log, kern.log, mail.log, user.log), network.log, a per-host file
            template devices/HOST/PROGRAM.log and a forward of everything (RFC 5424,
            octet-counted) to benches/collector.rs on loopback. Every file is checked against
            the generator's own count for every daemon.
  mixed5424 the same in RFC 5424, octet-counted, a third with structured data
  alerts    tcp3164 into sluice alone, without and with --alert-rules [[alert]] rules (a mix of
            rate, ratio, zscore and new_pattern rules, most fed every message), alternating
            runs: the throughput cost of alerting (median of --repeat runs, and the spread;
            and the median of each pair's cost, a run with rules against the one before it)
            and the CPU the `alert-engine` thread spends per message it judged (from /proc,
            steadier than the wall figures on a shared machine); then paced at each of --alert-rates: the share of messages the alert engine's
            queue dropped (never slowing the listener, they go unjudged)
  alerts-mixed  the same without and with the rules on the mixed3164 workload (no paced runs);
            its padding words make almost every line a template never seen before, the worst
            case for the new_pattern rule
  alerts-site   the same on the mixed3164 workload with templates that repeat, as in a site's
            logs (loadgen --workload site: each program's padding one of 12 phrases, values
            drawn anew; about 2,800 templates in 1M lines); `--alert-without new_log_pattern`
            measures the other rules alone on any of the three
  es        N RFC 3164 messages over TCP, indexed into Elasticsearch's _bulk API: sluice's
            `kind = "elasticsearch"`, rsyslog's omelasticsearch, syslog-ng's elasticsearch-http(),
            each with its default batching, into benches/es_sink.py (a separate process that
            counts action lines and answers every item 201 at once): documents per second and
            per daemon CPU-second, until the sink has counted N (not in the default --cases)

Wall msg/s runs from the first send (loadgen's `started_unix_s`, after it built its messages
and connected) to the last write (the output file's mtime); msg per
CPU-second divides by the daemon's user+system time (/proc/PID/stat) over the same span.
It needs only this repository and the peers benches/peers-setup.sh installs.
"""
import argparse
import json
import os
import re
import resource
import shutil
import signal
import stat
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFIX = os.environ.get("PEERS_PREFIX") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sluice-peers")
RSYSLOG = os.environ.get("RSYSLOGD", os.path.join(PREFIX, "rsyslog-root/usr/sbin/rsyslogd"))
RSYSLOG_MODS = os.path.join(os.path.dirname(os.path.dirname(RSYSLOG)), "lib/x86_64-linux-gnu/rsyslog")
# The es case's syslog-ng: the one on PATH if it has elasticsearch-http() (syslog-ng-mod-http and
# syslog-ng-scl installed), else the one .ci/install-test-tools unpacks (SYSLOG_NG_ROOT).
TEST_TOOLS = os.path.join(os.environ.get("SLUICE_TEST_TOOLS") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sluice-test-tools"), "root")
SYSLOG_NG_ROOT = os.environ.get("SYSLOG_NG_ROOT") or (
    "/" if shutil.which("syslog-ng") and os.path.exists("/usr/lib/syslog-ng/3.38/libhttp.so")
    else TEST_TOOLS)
ES_SINK = os.path.join(ROOT, "benches/es_sink.py")
SLUICE = os.environ.get("SLUICE", os.path.join(ROOT, "target/release/sluice"))
LOADGEN = os.environ.get("LOADGEN", os.path.join(ROOT, "target/release/examples/loadgen"))
COLLECTOR = os.environ.get("COLLECTOR", os.path.join(ROOT, "target/release/examples/collector"))
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
# Enough descriptors for 10,000 connections on both ends (capped by the hard limit).
NOFILE = 65536
MAX_CONNS = 20000
BASE_PORT = 17514
# --udp-sockets: sluice's `sockets` (SO_REUSEPORT) and rsyslog's imudp `threads`.
UDP_SOCKETS = 1
# --udp-senders: sending threads (source ports) for UDP; 0 picks by rate.
UDP_SENDERS = 0
# --work-dir: where every case's daemon writes (None: the system's temp dir).
WORK_DIR = None
# The alerts case: how many of ALERT_RULES sluice's config carries (0 outside that case).
ALERTS_ON = 0
# Alert rules as users write them; all but the last four are fed every message of the bench.
ALERT_RULES = [
    'name = "volume"\nkind = "zscore"\nby = ["hostname"]',
    'name = "errors"\nkind = "zscore"\nseries = "ratio"\nselector = "*.err"\nby = ["hostname"]',
    'name = "error_ratio"\nkind = "ratio"\nselector = "*.err"\nabove = 0.1',
    'name = "new_log_pattern"\nkind = "new_pattern"',
    'name = "flood"\nkind = "rate"\nby = ["hostname", "app_name"]\nabove = 100000000',
    'name = "silent"\nkind = "rate"\nby = ["hostname"]\nbelow = 1',
    'name = "ssh_fail_burst"\nkind = "rate"\nselector = "auth,authpriv.*"\nmessage = "Failed password"\nby = ["hostname"]\nabove = 100',
    'name = "kernel"\nkind = "rate"\nselector = "kern.*"\nabove = 10',
    'name = "critical"\nkind = "rate"\nselector = "*.crit"\nabove = 0',
    'name = "oom"\nkind = "rate"\nmessage = "Out of memory"\nabove = 0',
]


def proc_stat(path):
    """(name, user s, system s) from a /proc `stat` file (a process's or a thread's)."""
    with open(path) as f:
        stat = f.read()
    fields = stat.rsplit(")", 1)[1].split()
    return stat[stat.index("(") + 1:stat.rindex(")")], int(fields[11]) / TICK, int(fields[12]) / TICK


def patterns_skipped(log):
    """Lines new-pattern rules skipped while the engine was behind, from sluice's final counters
    (`patterns_skipped=N` per rule, in the last counters line of its log)."""
    lines = [l for l in log.splitlines() if "alert_feed_dropped=" in l]
    return sum(int(n) for n in re.findall(r"patterns_skipped=(\d+)", lines[-1])) if lines else 0


def cpu_seconds(pid):
    try:
        _, user, system = proc_stat(f"/proc/{pid}/stat")
        return user + system
    except FileNotFoundError:
        return 0.0


def thread_cpu_seconds(pid, name):
    """CPU seconds so far of `pid`'s threads called `name` (sluice's `alert-engine`): the
    steadier measure of the alert rules' cost on a machine whose wall figures swing."""
    total = 0.0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return 0.0
    for task in tasks:
        try:
            comm, user, system = proc_stat(f"/proc/{pid}/task/{task}/stat")
        except FileNotFoundError:
            continue
        if comm == name:
            total += user + system
    return total


def cpu_split(pid):
    """(user s, system s, context switches) of every thread of `pid` so far: where a daemon's
    CPU goes (its own code, or the kernel's copies and wake-ups) and how often its threads
    slept and were woken."""
    try:
        _, user, system = proc_stat(f"/proc/{pid}/stat")
        switches = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/status") as f:
                    for line in f:
                        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                            switches += int(line.split()[1])
            except FileNotFoundError:
                pass
        return user, system, switches
    except FileNotFoundError:
        return 0.0, 0.0, 0


def rss_bytes(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def count_lines(path):
    n = 0
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            n += chunk.count(b"\n")
    return n


def raise_nofile():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    want = NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


# --- daemon configurations: the same job for each (listen on loopback, every message to `out`) ---

def rsyslog(work, port, proto, out):
    conf = os.path.join(work, "rsyslog.conf")
    mod = "imtcp" if proto == "tcp" else "imudp"
    opts = f' MaxSessions="{MAX_CONNS}"' if proto == "tcp" else \
        (f' threads="{UDP_SOCKETS}"' if UDP_SOCKETS > 1 else "")
    # The same 8 MiB receive buffer sluice (its default) and syslog-ng (so-rcvbuf) get.
    rcvbuf = ' rcvbufSize="8m"' if proto == "udp" else ""
    with open(conf, "w") as f:
        f.write(f'global(workDirectory="{work}")\nmodule(load="{mod}"{opts})\n'
                f'input(type="{mod}" port="{port}" address="127.0.0.1"{rcvbuf})\n'
                f'*.* action(type="omfile" file="{out}")\n')
    return [RSYSLOG, "-n", "-f", conf, "-i", os.path.join(work, "rs.pid"), "-M", RSYSLOG_MODS]


def is_fifo(path):
    return os.path.exists(path) and stat.S_ISFIFO(os.stat(path).st_mode)


def syslog_ng(work, port, proto, out, rfc5424=False):
    conf = os.path.join(work, "syslog-ng.conf")
    flow = "flags(flow-control);" if proto == "tcp" else ""
    driver = "syslog" if rfc5424 else "network"  # syslog() speaks RFC 6587 octet-counting
    with open(conf, "w") as f:
        f.write('@version: 3.38\noptions { threaded(yes); use-dns(no); keep-hostname(yes); };\n'
                f'source s {{ {driver}(ip("127.0.0.1") transport("{proto}") port({port}) '
                f'max-connections({MAX_CONNS}) log-iw-size(100000) so-rcvbuf(8388608)); }};\n'
                f'destination d {{ {"pipe" if is_fifo(out) else "file"}("{out}"); }};\nlog {{ source(s); destination(d); {flow} }};\n')
    return ["syslog-ng", "-F", "-f", conf, "-p", os.path.join(work, "sng.pid"),
            "-R", os.path.join(work, "sng.persist"), "-c", os.path.join(work, "sng.ctl")]


def sluice(work, port, proto, out):
    conf = os.path.join(work, "sluice.toml")
    extra = f"max_connections = {MAX_CONNS}\n" if proto == "tcp" else f"sockets = {UDP_SOCKETS}\n"
    if out == "/dev/stdout":
        output = '[output.out]\nkind = "stdout"\nformat = "traditional"\n'
    else:
        output = f'[output.out]\nkind = "file"\npath = "{out}"\nformat = "traditional"\n'
    with open(conf, "w") as f:
        f.write(f'[daemon]\nstate_dir = "{work}"\n\n'
                f'[listen.bench]\nkind = "{proto}"\naddress = "127.0.0.1:{port}"\n{extra}\n'
                f'{output}\n[[route]]\nto = ["out"]\n')
        for rule in ALERT_RULES[:ALERTS_ON]:
            f.write(f'\n[[alert]]\n{rule}\n')
    return [SLUICE, "--config", conf]


DAEMONS = {"sluice": sluice, "rsyslog": rsyslog, "syslog-ng": syslog_ng}


# The es case: listen on TCP, every message to the bulk sink at `es_port` as a JSON document.

def sluice_es(work, port, es_port):
    conf = os.path.join(work, "sluice.toml")
    with open(conf, "w") as f:
        f.write(f'[daemon]\nstate_dir = "{work}"\n\n'
                f'[listen.bench]\nkind = "tcp"\naddress = "127.0.0.1:{port}"\n\n'
                f'[output.es]\nkind = "elasticsearch"\nurl = "http://127.0.0.1:{es_port}"\n'
                f'index = "bench"\n\n[[route]]\nto = ["es"]\n')
    return [SLUICE, "--config", conf], None


def rsyslog_es(work, port, es_port):
    # The usual fields, as in tests/es_interop.rs; batches as the main queue hands them over.
    conf = os.path.join(work, "rsyslog.conf")
    props = [("@timestamp", 'name="timereported" dateFormat="rfc3339"'), ("host", 'name="hostname"'),
             ("severity", 'name="syslogseverity-text"'), ("facility", 'name="syslogfacility-text"'),
             ("app-name", 'name="app-name"'), ("procid", 'name="procid"'), ("msgid", 'name="msgid"'),
             ("structured-data", 'name="structured-data"'), ("message", 'name="msg"')]
    template = "\n".join(f'  property(outname="{o}" {a} format="jsonf")' for o, a in props)
    with open(conf, "w") as f:
        f.write(f'global(workDirectory="{work}")\nmodule(load="imtcp" MaxSessions="{MAX_CONNS}")\n'
                f'module(load="omelasticsearch")\n'
                f'input(type="imtcp" port="{port}" address="127.0.0.1")\n'
                f'template(name="es" type="list" option.jsonf="on") {{\n{template}\n}}\n'
                f'action(type="omelasticsearch" server="127.0.0.1" serverport="{es_port}" '
                f'searchIndex="bench" esVersion.major="8" bulkmode="on" template="es")\n')
    return [RSYSLOG, "-n", "-f", conf, "-i", os.path.join(work, "rs.pid"), "-M", RSYSLOG_MODS], None


def syslog_ng_es(work, port, es_port):
    # elasticsearch-http() as shipped: batch-lines(100), workers(4), format-json --scope rfc5424.
    conf = os.path.join(work, "syslog-ng.conf")
    root = SYSLOG_NG_ROOT
    scl = os.path.join(root, "usr/share/syslog-ng/include/scl/elasticsearch/elastic-http.conf")
    with open(conf, "w") as f:
        f.write(f'@version: 3.38\n@include "{scl}"\n'
                'options { threaded(yes); use-dns(no); keep-hostname(yes); stats-freq(0); };\n'
                f'source s {{ network(ip("127.0.0.1") transport("tcp") port({port}) '
                f'max-connections({MAX_CONNS}) log-iw-size(100000)); }};\n'
                f'destination d {{ elasticsearch-http(url("http://127.0.0.1:{es_port}/_bulk") '
                'index("bench") type("")); };\nlog { source(s); destination(d); flags(flow-control); };\n')
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(os.path.join(root, d) for d in (
        "usr/lib/syslog-ng", "usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"))
    return [os.path.join(root, "usr/sbin/syslog-ng"), "-F", "--no-caps", "-f", conf,
            "-p", os.path.join(work, "sng.pid"), "-R", os.path.join(work, "sng.persist"),
            "-c", os.path.join(work, "sng.ctl"),
            f"--module-path={os.path.join(root, 'usr/lib/syslog-ng/3.38')}"], env


ES_DAEMONS = {"sluice": sluice_es, "rsyslog": rsyslog_es, "syslog-ng": syslog_ng_es}


class Daemon:
    """One daemon instance in its own temp dir, its output in `out`."""

    def __init__(self, name, proto, port, rfc5424=False, out=None, stdout=None, es_port=None):
        self.name, self.port = name, port
        self.work = tempfile.mkdtemp(prefix=f"e2e-{name}-", dir=WORK_DIR)
        self.out = out or os.path.join(self.work, "out.log")
        env = None
        if es_port is not None:
            cmd, env = ES_DAEMONS[name](self.work, port, es_port)
        elif name == "syslog-ng":
            cmd = DAEMONS[name](self.work, port, proto, self.out, rfc5424)
        else:
            cmd = DAEMONS[name](self.work, port, proto, self.out)
        self.stderr = open(os.path.join(self.work, "stderr"), "w")
        self.proc = subprocess.Popen(cmd, stdout=stdout or subprocess.DEVNULL, stderr=self.stderr,
                                     preexec_fn=raise_nofile, env=env)
        self.proto = proto

    def wait_ready(self):
        """Until the port is bound (listed in /proc/net/tcp or udp), or 10 s."""
        deadline = time.time() + 10
        want = {f"0100007F:{self.port:04X}", f"00000000:{self.port:04X}"}
        table = "/proc/net/tcp" if self.proto == "tcp" else "/proc/net/udp"
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {open(self.stderr.name).read()[-800:]}")
            with open(table) as f:
                if any(len(l.split()) > 1 and l.split()[1] in want for l in f):
                    time.sleep(0.3)  # rsyslog binds before its workers run
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not bind port {self.port}")

    def cpu(self):
        return cpu_seconds(self.proc.pid)

    def rss(self):
        return rss_bytes(self.proc.pid)

    def wait_output(self, last_seq, timeout, quiet_secs=1.0):
        """Until the line of message `last_seq` is written, or the output stops growing for
        `quiet_secs` (a lost datagram never comes)."""
        marker = f"seq={last_seq:010d}".encode()
        last, since = -1, time.time()
        deadline = time.time() + timeout
        while time.time() < deadline:
            size = os.path.getsize(self.out) if os.path.exists(self.out) else 0
            if size != last:
                last, since = size, time.time()
                with open(self.out, "rb") as f:
                    f.seek(max(0, size - 8192))
                    if marker in f.read():
                        return
            elif time.time() - since >= quiet_secs:
                return
            time.sleep(0.02)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def cleanup(self):
        shutil.rmtree(self.work, ignore_errors=True)


def loadgen(*args, timeout=600):
    r = subprocess.run([LOADGEN, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                       preexec_fn=raise_nofile)
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if r.returncode != 0 or not lines:
        raise RuntimeError(f"loadgen failed: {r.stderr[-800:]}")
    return json.loads(lines[-1])


def sending_started(sent, launched):
    """When loadgen began sending (its `started_unix_s`), for the wall time of a run: the mixed
    workload builds its million messages first, a second and more that every daemon would
    otherwise be charged for as it waits. The launch time if loadgen did not say."""
    return max(sent.get("started_unix_s", launched), launched)


def ports():
    n = BASE_PORT
    while True:
        yield n
        n += 1


PORTS = ports()


def fmt_rate(x):
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.0f}k"


# --- cases ---

def case_tcp(args, names, fmt):
    """Flat out over one connection to a file: wall msg/s and msg per daemon CPU-second. With
    --repeat, the daemons take turns and each figure is the median of its runs."""
    runs = {name: [] for name in names}
    for _ in range(args.repeat):
        for name in names:
            r = tcp_run(args, name, fmt)
            runs[name].append(r)
            print(f"  tcp{fmt} {name:9s} {r['lines']:>8d}/{r['sent']} lines  {fmt_rate(r['msg_per_s']):>6s} msg/s  "
                  f"cpu {r['cpu_s']:.2f}s  {fmt_rate(r['msg_per_cpu_s']):>6s} msg/cpu-s", flush=True)
    res = {}
    for name, rs in runs.items():
        res[name] = dict(lines=min(r["lines"] for r in rs), sent=rs[0]["sent"], runs=len(rs),
                         msg_per_s=statistics.median(r["msg_per_s"] for r in rs),
                         msg_per_cpu_s=statistics.median(r["msg_per_cpu_s"] for r in rs))
    return res


def tcp_run(args, name, fmt, rate=0):
    d = Daemon(name, "tcp", next(PORTS), rfc5424=(fmt == "5424"))
    try:
        d.wait_ready()
        cpu0, t0 = d.cpu(), time.time()
        engine0 = thread_cpu_seconds(d.proc.pid, "alert-engine")
        sent = loadgen("--proto", "tcp", "--format", fmt, "--count", args.n, "--size", args.size,
                       "--duration", args.timeout, "--rate", rate, f"127.0.0.1:{d.port}")
        d.wait_output(sent["acked"] - 1, args.timeout)
        cpu = d.cpu() - cpu0
        engine_cpu = thread_cpu_seconds(d.proc.pid, "alert-engine") - engine0
        end = os.stat(d.out).st_mtime if os.path.exists(d.out) else time.time()
        d.stop()
        lines = count_lines(d.out)
        wall = max(end - sending_started(sent, t0), 1e-6)
        res = dict(lines=lines, sent=sent["acked"], wall_s=wall, cpu_s=cpu,
                   msg_per_s=lines / wall, msg_per_cpu_s=lines / max(cpu, 1e-6),
                   engine_cpu_s=engine_cpu)
        # sluice logs its final counters at the stop: what the alert engine's queue dropped.
        log = open(d.stderr.name).read()
        dropped = re.findall(r"alert_feed_dropped=(\d+)", log)
        if dropped:
            res["alert_feed_dropped"] = int(dropped[-1])
        res["patterns_skipped"] = patterns_skipped(log)
        return res
    finally:
        d.stop()
        d.cleanup()


class CpuCap:
    """A cgroup that holds a daemon to `fraction` of one CPU (quota per 10 ms period, short so
    that a throttled daemon pauses for milliseconds, not for tenths of a second). cgroup v2 or
    v1's cpu controller; needs root. With every daemon under the same cap, the highest UDP rate
    each takes without loss is measurable below the sender's own ceiling, and their ratio is a
    ratio per CPU."""

    PERIOD_US = 10_000

    def __init__(self, fraction):
        v2 = "/sys/fs/cgroup/cgroup.controllers"
        if os.path.exists(v2) and "cpu" in open(v2).read().split():
            self.path = "/sys/fs/cgroup/sluice-e2e"
            with open("/sys/fs/cgroup/cgroup.subtree_control", "w") as f:
                f.write("+cpu")
            os.makedirs(self.path, exist_ok=True)
            with open(os.path.join(self.path, "cpu.max"), "w") as f:
                f.write(f"{int(fraction * self.PERIOD_US)} {self.PERIOD_US}")
        elif os.path.isdir("/sys/fs/cgroup/cpu"):
            self.path = "/sys/fs/cgroup/cpu/sluice-e2e"
            os.makedirs(self.path, exist_ok=True)
            with open(os.path.join(self.path, "cpu.cfs_period_us"), "w") as f:
                f.write(str(self.PERIOD_US))
            with open(os.path.join(self.path, "cpu.cfs_quota_us"), "w") as f:
                f.write(str(int(fraction * self.PERIOD_US)))
        else:
            raise RuntimeError("no cgroup cpu controller to cap the daemons with")

    def add(self, pid):
        with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
            f.write(str(pid))

    def remove(self):
        try:
            os.rmdir(self.path)
        except OSError:
            pass


def udp_run(name, rate, secs, size, senders, cap=None):
    d = Daemon(name, "udp", next(PORTS))
    try:
        d.wait_ready()
        if cap:
            cap.add(d.proc.pid)
        sent = loadgen("--proto", "udp", "--rate", rate, "--count", rate * secs, "--duration", secs * 2,
                       "--size", size, "--connections", senders, f"127.0.0.1:{d.port}")
        d.wait_output(-1, 30, quiet_secs=1.5)
        d.stop()
        lines = count_lines(d.out)
        return dict(offered=rate, achieved=sent["rate"], sent=sent["acked"], lines=lines,
                    delivered=lines / max(sent["acked"], 1))
    finally:
        d.stop()
        d.cleanup()


def senders_for(rate):
    if UDP_SENDERS:
        return UDP_SENDERS
    # One sending thread (sendmmsg) manages about 600k datagrams/s here; more threads would only
    # take CPU from the receiver on a small machine.
    return max(1, (rate + 599_999) // 600_000)


def case_udp(args, names):
    res = {}
    for name in names:
        r = udp_run(name, args.udp_rate, args.udp_secs, args.size, senders_for(args.udp_rate))
        res[name] = r
        print(f"  udp {name:9s} offered {fmt_rate(r['offered'])}/s (sent at {fmt_rate(r['achieved'])}/s): "
              f"{r['lines']}/{r['sent']} = {100 * r['delivered']:.2f}% delivered", flush=True)
    return res


def case_ladder(args, names, rates=None, cap=None, label="ladder"):
    res = {}
    for name in names:
        best, rungs = 0, []
        for rate in rates or args.udp_ladder:
            r = udp_run(name, rate, args.udp_secs, args.size, senders_for(rate), cap)
            rungs.append(r)
            ok = r["delivered"] >= 0.999
            print(f"  {label} {name:9s} {fmt_rate(rate)}/s (sent at {fmt_rate(r['achieved'])}/s): "
                  f"{100 * r['delivered']:.2f}% {'ok' if ok else 'LOSS'}", flush=True)
            if not ok:
                break
            # What the sender achieved counts: on a small machine it may fall short of the rung.
            best = max(best, int(r["achieved"]))
        res[name] = dict(best=best, rungs=rungs)
    return res


def case_capped_ladder(args, names):
    """The UDP ladder with every daemon held to --udp-cpu-cap of one CPU (see CpuCap)."""
    try:
        cap = CpuCap(args.udp_cpu_cap)
    except (OSError, RuntimeError) as e:
        print(f"  capladder skipped: no CPU cap here ({e}); it needs root and a cgroup cpu controller",
              flush=True)
        return {}
    try:
        res = case_ladder(args, names, args.udp_capped_ladder, cap, f"ladder at {args.udp_cpu_cap:g} CPU")
    finally:
        cap.remove()
    return dict(cpu=args.udp_cpu_cap, **res)


def case_conns(args, names):
    """RSS per idle connection (1,000), and how many of 10,000 connections are accepted."""
    res = {}
    for name in names:
        d = Daemon(name, "tcp", next(PORTS))
        try:
            d.wait_ready()
            out = {}
            for n in (1000, 10000):
                base_rss, base_fds = d.rss(), open_fds(d.proc.pid)
                gen = subprocess.Popen([LOADGEN, "--proto", "tcp", "--connections", str(n), "--idle-secs", "60",
                                        f"127.0.0.1:{d.port}"], stdout=subprocess.PIPE, text=True,
                                       preexec_fn=raise_nofile)
                first = json.loads(gen.stdout.readline() or "{}")
                # Until the daemon holds every connection, or stops taking more for 2 s.
                last, since = -1, time.time()
                while time.time() - since < 2:
                    fds = open_fds(d.proc.pid) - base_fds
                    if fds >= first.get("connections", n):
                        time.sleep(1.0)  # let per-connection state settle
                        break
                    if fds != last:
                        last, since = fds, time.time()
                    time.sleep(0.1)
                accepted = open_fds(d.proc.pid) - base_fds
                rss = d.rss() - base_rss
                out[n] = dict(connected=first.get("connections", 0), accepted=accepted,
                              rss_bytes=rss, per_conn_bytes=rss / max(accepted, 1))
                print(f"  conns {name:9s} {n:>5d}: client connected {first.get('connections', 0)}, daemon holds "
                      f"{accepted}, RSS +{rss / 1048576:.1f} MiB = {rss / max(accepted, 1) / 1024:.1f} KiB each",
                      flush=True)
                gen.send_signal(signal.SIGTERM)
                gen.wait()
                time.sleep(1.0)
            res[name] = out
        finally:
            d.stop()
            d.cleanup()
    return res


def timer_noise(secs=5.0):
    """How late a thread that sleeps 1 ms wakes, on this machine as it is now (no load from
    here): the floor under any latency measured through several threads. Returns (p99, max) in
    ms."""
    late = []
    end = time.monotonic() + secs
    while time.monotonic() < end:
        t = time.monotonic()
        time.sleep(0.001)
        late.append(time.monotonic() - t - 0.001)
    late.sort()
    return late[int(len(late) * 0.99)] * 1000, late[-1] * 1000


def case_latency(args, names, rate):
    """p99 send -> written line at `rate`, for each output in --latency-outputs: `pipe` (the
    daemon's file output opened on a named pipe, so no page cache is allocated on the way) and
    `file` (a regular file). On this project's VM, writing a page the guest has not touched
    lately costs a host page fault (~300 MB/s for one writer), which at 900k msg/s of 256 B is
    most of what one core can do: `file` then measures the VM as much as the daemon. Each figure
    is the median of --repeat runs, the daemons taking turns."""
    res = {}
    secs = args.latency_secs
    p99, worst = timer_noise()
    res["timer_noise_ms"] = dict(p99=p99, max=worst)
    print(f"  timer noise: a 1 ms sleep wakes late by p99 {p99:.1f} ms, max {worst:.1f} ms", flush=True)
    for output in args.latency_outputs.split(","):
        runs = {name: [] for name in names}
        for _ in range(args.repeat):
            for name in names:
                runs[name].append(latency_run(args, name, rate, secs, output))
        res[output] = {}
        for name, rs in runs.items():
            rs.sort(key=lambda r: r.get("p99_us", 0))
            med = rs[len(rs) // 2]
            res[output][name] = dict(median=med, p99_ms_runs=[r.get("p99_us", 0) / 1000 for r in rs])
            each = ", ".join(f"{r.get('p99_us', 0) / 1000:.1f}" for r in rs)
            print(f"  latency to a {output:4s} {name:9s} median of {len(rs)}: p99 {med.get('p99_us', 0) / 1000:.1f} ms "
                  f"(runs: {each}), "
                  f"sent at {fmt_rate(med['achieved'])}/s", flush=True)
    return res


def latency_run(args, name, rate, secs, output):
    out = None
    if output == "pipe":
        out = os.path.join(tempfile.mkdtemp(prefix="e2e-fifo-"), "out.pipe")
        os.mkfifo(out)
    d = Daemon(name, "tcp", next(PORTS), out=out)
    try:
        d.wait_ready()
        r = loadgen("--proto", "tcp", "--rate", rate, "--count", rate * secs, "--duration", secs * 2,
                    "--size", args.size, "--latency-file", d.out,
                    "--latency-warmup-secs", args.latency_warmup, f"127.0.0.1:{d.port}")
        lat = r.get("latency", {})
        lat.pop("window_max_us", None)
        print(f"  latency to a {output:4s} {name:9s} at {fmt_rate(rate)}/s (sent at {fmt_rate(r['rate'])}/s): "
              f"{lat.get('lines', 0)} lines, p50 {lat.get('p50_us', 0) / 1000:.1f} ms, "
              f"p99 {lat.get('p99_us', 0) / 1000:.1f} ms, max {lat.get('max_us', 0) / 1000:.1f} ms "
              f"(first {args.latency_warmup:g} s: max {lat.get('warmup_max_us', 0) / 1000:.1f} ms)",
              flush=True)
        return dict(rate=rate, achieved=r["rate"], **lat)
    finally:
        d.stop()
        d.cleanup()
        if out:
            shutil.rmtree(os.path.dirname(out), ignore_errors=True)


def slow_reader(pipe, bytes_per_s, stop):
    """Reads `pipe` at no more than `bytes_per_s`: a slow output."""
    t0, got = time.time(), 0
    fd = pipe.fileno()
    while not stop.is_set():
        ahead = got / bytes_per_s - (time.time() - t0)
        if ahead > 0:
            time.sleep(min(ahead, 0.05))
            continue
        try:
            b = os.read(fd, 65536)
        except OSError:
            return
        if not b:
            return
        got += len(b)


def case_rss(args, names):
    """Senders outpace a slow output (a pipe read at --rss-drain bytes/s): RSS must level off."""
    res = {}
    secs = args.rss_secs
    for name in names:
        d = Daemon(name, "tcp", next(PORTS), out="/dev/stdout", stdout=subprocess.PIPE)
        stop = threading.Event()
        reader = threading.Thread(target=slow_reader, args=(d.proc.stdout, args.rss_drain, stop), daemon=True)
        reader.start()
        try:
            d.wait_ready()
            rate = 100_000
            gen = subprocess.Popen([LOADGEN, "--proto", "tcp", "--rate", str(rate), "--count", str(rate * secs),
                                    "--duration", str(secs), "--connections", "4", "--size", str(args.size),
                                    f"127.0.0.1:{d.port}"], stdout=subprocess.DEVNULL, preexec_fn=raise_nofile)
            samples = []
            for _ in range(secs):
                time.sleep(1.0)
                samples.append(d.rss())
            gen.kill()
            gen.wait()
            third = max(1, len(samples) // 3)
            mid, last = max(samples[third:2 * third] or samples), max(samples[-third:])
            growth = (last - mid) / max(mid, 1)
            res[name] = dict(samples_mib=[round(s / 1048576, 1) for s in samples], peak_mib=max(samples) / 1048576,
                             growth_last_third=growth, plateau=growth < 0.05)
            print(f"  rss {name:9s} MiB per second: {' '.join(f'{s / 1048576:.0f}' for s in samples)} -> "
                  f"{'plateau' if growth < 0.05 else 'GROWING'} ({100 * growth:+.1f}% in the last third)", flush=True)
        finally:
            stop.set()
            d.stop()
            d.cleanup()
    return res


class EsSink:
    """benches/es_sink.py in its own process: counts documents, answers every item at once."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, ES_SINK, "0"], stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())

    def get(self, path="/_sink"):
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request("POST" if path.endswith("reset") else "GET", path, body=b"")
            return json.loads(c.getresponse().read())
        finally:
            c.close()

    def reset(self):
        self.get("/_sink/reset")

    def cpu(self):
        return cpu_seconds(self.proc.pid)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def case_es(args, names):
    """Documents into the bulk sink: wall docs/s (first send to the last bulk request) and docs
    per daemon CPU-second over the same span, median of --repeat runs with min..max."""
    sink = EsSink()
    runs = {name: [] for name in names}
    try:
        for _ in range(args.repeat):
            for name in names:
                r = es_run(args, name, sink)
                runs[name].append(r)
                print(f"  es {name:9s} {r['docs']:>8d}/{r['sent']} docs  {fmt_rate(r['msg_per_s']):>6s} docs/s  "
                      f"cpu {r['cpu_s']:.2f}s  {fmt_rate(r['msg_per_cpu_s']):>6s} docs/cpu-s  "
                      f"{r['docs_per_request']:.0f} docs/request  sink cpu {r['sink_cpu_s']:.2f}s", flush=True)
    finally:
        sink.stop()
    res = {}
    for name, rs in runs.items():
        res[name] = dict(docs=min(r["docs"] for r in rs), sent=rs[0]["sent"], runs=len(rs),
                         msg_per_s=statistics.median(r["msg_per_s"] for r in rs),
                         msg_per_cpu_s=statistics.median(r["msg_per_cpu_s"] for r in rs),
                         msg_per_cpu_s_range=(min(r["msg_per_cpu_s"] for r in rs),
                                              max(r["msg_per_cpu_s"] for r in rs)),
                         msg_per_s_range=(min(r["msg_per_s"] for r in rs), max(r["msg_per_s"] for r in rs)),
                         docs_per_request=statistics.median(r["docs_per_request"] for r in rs))
    return res


def es_run(args, name, sink):
    sink.reset()
    d = Daemon(name, "tcp", next(PORTS), es_port=sink.port)
    try:
        d.wait_ready()
        cpu0, sink_cpu0, t0 = d.cpu(), sink.cpu(), time.time()
        sent = loadgen("--proto", "tcp", "--format", "3164", "--count", args.n, "--size", args.size,
                       "--duration", args.timeout, f"127.0.0.1:{d.port}")
        # Until the sink has every document, or it has counted nothing new for 3 s.
        deadline, last, since = time.time() + args.timeout, -1, time.time()
        while time.time() < deadline:
            st = sink.get()
            if st["docs"] >= sent["acked"]:
                break
            if st["docs"] != last:
                last, since = st["docs"], time.time()
            elif time.time() - since > 3:
                break
            time.sleep(0.02)
        cpu, sink_cpu = d.cpu() - cpu0, sink.cpu() - sink_cpu0
        st = sink.get()
        d.stop()
        wall = max(st["last"] - sending_started(sent, t0), 1e-6)
        return dict(docs=st["docs"], sent=sent["acked"], wall_s=wall, cpu_s=cpu, sink_cpu_s=sink_cpu,
                    msg_per_s=st["docs"] / wall, msg_per_cpu_s=st["docs"] / max(cpu, 1e-6),
                    docs_per_request=st["docs"] / max(st["requests"], 1))
    finally:
        d.stop()
        d.cleanup()


# --- the mixed cases: a collector's rule set, the same for each daemon ---
# Files under `out`: syslog, auth.log, kern.log, mail.log, user.log, network.log and
# devices/HOST/PROGRAM.log; everything is also forwarded, RFC 5424 octet-counted, to a collector
# on `fwd_port`. benches/mixed.rs counts what each file must hold.

MIXED_FILES = [("syslog", "*.*;auth,authpriv.none"), ("auth.log", "auth,authpriv.*"),
               ("kern.log", "kern.*"), ("mail.log", "mail.*"), ("user.log", "user.*"),
               ("network.log", "local6,local7.*")]
MIXED_DEVICES = "*.*;local6,local7.none"
# Open files each daemon may keep for the per-host template (the workload has about 830).
MIXED_OPEN_FILES = 1000
MIXED_CONNS = 50


def sluice_mixed(work, port, out, fwd_port, rfc5424):
    conf = os.path.join(work, "sluice.toml")
    with open(conf, "w") as f:
        f.write(f'[daemon]\nstate_dir = "{work}"\n\n'
                f'[listen.bench]\nkind = "tcp"\naddress = "127.0.0.1:{port}"\n\n')
        for i, (name, _) in enumerate(MIXED_FILES):
            f.write(f'[output.f{i}]\nkind = "file"\npath = "{out}/{name}"\n\n')
        f.write(f'[output.devices]\nkind = "file"\npath = "{out}/devices/{{hostname}}/{{app_name}}.log"\n'
                f'max_open_files = {MIXED_OPEN_FILES}\n\n'
                f'[output.fwd]\nkind = "forward"\naddress = "127.0.0.1:{fwd_port}"\n\n')
        for i, (_, sel) in enumerate(MIXED_FILES):
            f.write(f'[[route]]\nselector = "{sel}"\nto = ["f{i}"]\n\n')
        f.write(f'[[route]]\nselector = "{MIXED_DEVICES}"\nto = ["devices"]\n\n[[route]]\nto = ["fwd"]\n')
        for rule in ALERT_RULES[:ALERTS_ON]:
            f.write(f'\n[[alert]]\n{rule}\n')
    return [SLUICE, "--config", conf], None


def rsyslog_mixed(work, port, out, fwd_port, rfc5424):
    conf = os.path.join(work, "rsyslog.conf")
    with open(conf, "w") as f:
        # Debian's rsyslog.conf writes the traditional format.
        f.write(f'global(workDirectory="{work}")\n'
                'module(load="builtin:omfile" template="RSYSLOG_TraditionalFileFormat")\n'
                f'module(load="imtcp" MaxSessions="{MAX_CONNS}")\n'
                f'input(type="imtcp" port="{port}" address="127.0.0.1")\n'
                f'template(name="devices" type="string" string="{out}/devices/%HOSTNAME%/%PROGRAMNAME%.log")\n')
        for name, sel in MIXED_FILES:
            f.write(f'{sel} action(type="omfile" file="{out}/{name}")\n')
        f.write(f'{MIXED_DEVICES} action(type="omfile" dynaFile="devices" '
                f'dynaFileCacheSize="{MIXED_OPEN_FILES}" createDirs="on")\n'
                f'*.* action(type="omfwd" target="127.0.0.1" port="{fwd_port}" protocol="tcp" '
                'TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")\n')
    return [RSYSLOG, "-n", "-f", conf, "-i", os.path.join(work, "rs.pid"), "-M", RSYSLOG_MODS], None


def syslog_ng_mixed(work, port, out, fwd_port, rfc5424):
    conf = os.path.join(work, "syslog-ng.conf")
    driver = "syslog" if rfc5424 else "network"
    facilities = {"*.*;auth,authpriv.none": "not facility(auth, authpriv)",
                  "auth,authpriv.*": "facility(auth, authpriv)", "kern.*": "facility(kern)",
                  "mail.*": "facility(mail)", "user.*": "facility(user)",
                  "local6,local7.*": "facility(local6, local7)"}
    with open(conf, "w") as f:
        # A window of 1000 messages per connection (log-iw-size is shared by max-connections).
        f.write('@version: 3.38\noptions { threaded(yes); use-dns(no); keep-hostname(yes); create-dirs(yes); '
                f'log-fifo-size(100000); }};\nsource s {{ {driver}(ip("127.0.0.1") transport("tcp") port({port}) '
                f'max-connections({MIXED_CONNS * 2}) log-iw-size({MIXED_CONNS * 2000})); }};\n')
        for i, (name, sel) in enumerate(MIXED_FILES):
            f.write(f'filter f{i} {{ {facilities[sel]}; }};\ndestination d{i} {{ file("{out}/{name}"); }};\n'
                    f'log {{ source(s); filter(f{i}); destination(d{i}); flags(flow-control); }};\n')
        f.write(f'filter fdev {{ not facility(local6, local7); }};\n'
                f'destination ddev {{ file("{out}/devices/${{HOST}}/${{PROGRAM}}.log"); }};\n'
                'log { source(s); filter(fdev); destination(ddev); flags(flow-control); };\n'
                f'destination dfwd {{ syslog("127.0.0.1" transport("tcp") port({fwd_port})); }};\n'
                'log { source(s); destination(dfwd); flags(flow-control); };\n')
    return ["syslog-ng", "-F", "-f", conf, "-p", os.path.join(work, "sng.pid"),
            "-R", os.path.join(work, "sng.persist"), "-c", os.path.join(work, "sng.ctl")], None


MIXED_DAEMONS = {"sluice": sluice_mixed, "rsyslog": rsyslog_mixed, "syslog-ng": syslog_ng_mixed}


class Collector:
    """The forward target of the mixed cases: benches/collector.rs, which counts octet-counted
    frames (RFC 6587) on every connection it accepts, and the time of the last one. (A Python
    loop here took CPU from the daemons and read more slowly than sluice sends.)"""

    def __init__(self):
        self.proc = subprocess.Popen([COLLECTOR], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.port = int(self.proc.stdout.readline())
        self.lock = threading.Lock()

    def ask(self, command):
        with self.lock:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
            return self.proc.stdout.readline().split()

    def reset(self):
        self.ask("reset")

    def get(self):
        frames, last = self.ask("get")
        return int(frames), float(last)

    def stop(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def files_under(root):
    for d, _, names in os.walk(root):
        for n in names:
            yield os.path.join(d, n)


def case_mixed(args, names, fmt):
    """The mixed workload: wall msg/s (first send to the last line written or forwarded) and msg
    per daemon CPU-second, median of --repeat runs with min..max; every file checked against the
    generator's count."""
    collector = Collector()
    runs = {name: [] for name in names}
    try:
        for _ in range(args.repeat):
            for name in names:
                r = mixed_run(args, name, fmt, collector)
                runs[name].append(r)
                print(f"  mixed{fmt} {name:9s} {r['lines']:>8d} lines, {r['forwarded']}/{r['sent']} forwarded, "
                      f"{r['files_wrong']} of {r['files']} files wrong  {fmt_rate(r['msg_per_s']):>6s} msg/s  "
                      f"cpu {r['cpu_s']:.2f}s (user {r['user_s']:.2f}s, sys {r['sys_s']:.2f}s, "
                      f"{r['switches']} context switches)  {fmt_rate(r['msg_per_cpu_s']):>6s} msg/cpu-s", flush=True)
                for w in r["wrong"][:5]:
                    print(f"      {w}")
    finally:
        collector.stop()
    res = {}
    for name, rs in runs.items():
        res[name] = dict(sent=rs[0]["sent"], runs=len(rs), files_wrong=max(r["files_wrong"] for r in rs),
                         msg_per_s=statistics.median(r["msg_per_s"] for r in rs),
                         msg_per_cpu_s=statistics.median(r["msg_per_cpu_s"] for r in rs),
                         msg_per_cpu_s_range=(min(r["msg_per_cpu_s"] for r in rs),
                                              max(r["msg_per_cpu_s"] for r in rs)),
                         msg_per_s_range=(min(r["msg_per_s"] for r in rs), max(r["msg_per_s"] for r in rs)))
    return res


def mixed_run(args, name, fmt, collector, workload="mixed"):
    collector.reset()
    port = next(PORTS)
    work = tempfile.mkdtemp(prefix=f"e2e-mixed-{name}-", dir=args.work_dir)
    out = os.path.join(work, "out")
    os.makedirs(out)
    cmd, env = MIXED_DAEMONS[name](work, port, out, collector.port, fmt == "5424")
    stderr = open(os.path.join(work, "stderr"), "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, preexec_fn=raise_nofile, env=env)
    d = Daemon.__new__(Daemon)
    d.name, d.port, d.proc, d.proto, d.work, d.stderr = name, port, proc, "tcp", work, stderr
    try:
        d.wait_ready()
        cpu0, t0 = d.cpu(), time.time()
        split0 = cpu_split(proc.pid)
        engine0 = thread_cpu_seconds(proc.pid, "alert-engine")
        sent = loadgen("--workload", workload, "--proto", "tcp", "--format", fmt, "--count", args.n,
                       "--connections", MIXED_CONNS, f"127.0.0.1:{port}")
        expected = sent["expected"]
        # Until the collector has every message, or has counted nothing new for 3 s; then until
        # the files stop growing for half a second.
        deadline, last, since = time.time() + args.timeout, -1, time.time()
        while time.time() < deadline:
            n, _ = collector.get()
            if n >= sent["sent"]:
                break
            if n != last:
                last, since = n, time.time()
            elif time.time() - since > 3:
                break
            time.sleep(0.02)
        last, since = None, time.time()
        while time.time() < deadline:
            sizes = sum(os.path.getsize(p) for p in files_under(out))
            if sizes != last:
                last, since = sizes, time.time()
            elif time.time() - since > 0.5:
                break
            time.sleep(0.05)
        cpu = d.cpu() - cpu0
        engine_cpu = thread_cpu_seconds(proc.pid, "alert-engine") - engine0
        user_s, sys_s, switches = (b - a for a, b in zip(split0, cpu_split(proc.pid)))
        forwarded, fwd_last = collector.get()
        end = max([fwd_last] + [os.stat(p).st_mtime for p in files_under(out)])
        d.stop()
        log = open(stderr.name).read()
        dropped = re.findall(r"alert_feed_dropped=(\d+)", log)
        got = {os.path.relpath(p, out): count_lines(p) for p in files_under(out)}
        got["forwarded"] = collector.get()[0]
        wrong = [f"{k}: {got.get(k, 0)} lines, expected {v}" for k, v in sorted(expected.items())
                 if got.get(k, 0) != v]
        wrong += [f"{k}: {v} lines, expected none" for k, v in sorted(got.items()) if k not in expected]
        lines = sum(v for k, v in got.items() if k != "forwarded")
        wall = max(end - sending_started(sent, t0), 1e-6)
        return dict(sent=sent["sent"], lines=lines, forwarded=forwarded, files=len(expected),
                    files_wrong=len(wrong), wrong=wrong, wall_s=wall, cpu_s=cpu,
                    user_s=user_s, sys_s=sys_s, switches=switches,
                    msg_per_s=sent["sent"] / wall, msg_per_cpu_s=sent["sent"] / max(cpu, 1e-6),
                    alert_feed_dropped=int(dropped[-1]) if dropped else 0, engine_cpu_s=engine_cpu,
                    patterns_skipped=patterns_skipped(log))
    finally:
        d.stop()
        d.cleanup()


def case_alerts(args, mixed=None):
    """sluice's tcp3164 throughput without and with --alert-rules rules, runs alternating; with
    `mixed` (a loadgen workload: mixed or site), on that RFC 3164 workload and the mixed cases'
    rule set instead (no paced runs)."""
    global ALERTS_ON
    runs = {0: [], args.alert_rules: []}
    collector = Collector() if mixed else None
    try:
        for _ in range(args.repeat):
            for n in runs:
                ALERTS_ON = n
                try:
                    r = (mixed_run(args, "sluice", "3164", collector, mixed) if mixed
                         else tcp_run(args, "sluice", "3164"))
                finally:
                    ALERTS_ON = 0
                runs[n].append(r)
                print(f"  alerts={n:<3d} {r['lines']:>8d}/{r['sent']} lines  {fmt_rate(r['msg_per_s']):>6s} msg/s  "
                      f"cpu {r['cpu_s']:.2f}s  {fmt_rate(r['msg_per_cpu_s']):>6s} msg/cpu-s  "
                      f"engine {r.get('engine_cpu_s', 0):.2f}s  "
                      f"unjudged {r.get('alert_feed_dropped', 0) / r['sent'] * 100:.1f}%  "
                      f"patterns skipped {r.get('patterns_skipped', 0) / r['sent'] * 100:.1f}%", flush=True)
    finally:
        if collector:
            collector.stop()
    res = {}
    for n, rs in runs.items():
        rates = [r["msg_per_s"] for r in rs]
        res[str(n)] = dict(msg_per_s=statistics.median(rates), min=min(rates), max=max(rates),
                           msg_per_cpu_s=statistics.median(r["msg_per_cpu_s"] for r in rs),
                           lines=min(r["lines"] for r in rs), sent=rs[0]["sent"])
    base, on = res["0"], res[str(args.alert_rules)]
    res["drop"] = 1 - on["msg_per_s"] / base["msg_per_s"]
    res["cpu_drop"] = 1 - on["msg_per_cpu_s"] / base["msg_per_cpu_s"]
    # Each run with rules against the run without just before it: the two share the machine's
    # phase, which on a shared VM moves both by more than the rules do.
    paired = [1 - w["msg_per_s"] / wo["msg_per_s"] for wo, w in zip(runs[0], runs[args.alert_rules])]
    res["paired_drop"] = statistics.median(paired)
    res["paired_quartiles"] = statistics.quantiles(paired, n=4)[::2] if len(paired) > 1 else [paired[0]] * 2
    on["feed_dropped"] = statistics.median(r.get("alert_feed_dropped", 0) / r["sent"] for r in runs[args.alert_rules])
    on["patterns_skipped"] = statistics.median(r.get("patterns_skipped", 0) / r["sent"] for r in runs[args.alert_rules])
    # The engine thread's CPU per message it judged: steadier than the wall figures.
    on["engine_ns_per_msg"] = statistics.median(
        r.get("engine_cpu_s", 0) * 1e9 / max(r["sent"] - r.get("alert_feed_dropped", 0), 1)
        for r in runs[args.alert_rules])
    # Paced: the share of messages the engine's queue dropped at each offered rate.
    res["paced"] = []
    if mixed:
        return res
    ALERTS_ON = args.alert_rules
    try:
        for rate in args.alert_rates:
            r = tcp_run(args, "sluice", "3164", rate=rate)
            share = r.get("alert_feed_dropped", 0) / max(r["sent"], 1)
            res["paced"].append(dict(rate=rate, feed_dropped=share, msg_per_s=r["msg_per_s"]))
            print(f"  alerts={args.alert_rules} paced at {fmt_rate(rate)}/s: {fmt_rate(r['msg_per_s'])} msg/s written, "
                  f"{share * 100:.2f}% not judged (engine queue full)", flush=True)
    finally:
        ALERTS_ON = 0
    return res


def ratio(a, b):
    return a / b if b else float("inf")


def main():
    global UDP_SOCKETS, UDP_SENDERS, WORK_DIR, ALERT_RULES
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=1_000_000, help="messages per TCP throughput run")
    p.add_argument("--size", type=int, default=256, help="bytes per message")
    p.add_argument("--repeat", type=int, default=3, help="runs per daemon of each TCP and latency case (median)")
    p.add_argument("--cases", default="tcp3164,tcp5424,mixed3164,mixed5424,udp,ladder,capladder,conns,latency,rss")
    p.add_argument("--daemons", default="sluice,rsyslog,syslog-ng")
    p.add_argument("--udp-rate", type=int, default=200_000)
    p.add_argument("--udp-secs", type=int, default=5)
    p.add_argument("--udp-ladder", default="200000,300000,400000,500000,600000",
                   type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--udp-sockets", type=int, default=1,
                   help="sluice's `sockets` (SO_REUSEPORT) and rsyslog's imudp threads for the UDP cases")
    p.add_argument("--udp-senders", type=int, default=0,
                   help="UDP sending threads, each from its own port (default: 1 per 600k msg/s)")
    p.add_argument("--udp-cpu-cap", type=float, default=0.25, help="CPUs each daemon gets in the capladder case")
    p.add_argument("--udp-capped-ladder", default="25000,50000,75000,100000,125000,150000,200000,250000",
                   type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--latency-secs", type=int, default=10)
    p.add_argument("--latency-outputs", default="pipe,file", help="pipe, file or both")
    p.add_argument("--latency-warmup", type=float, default=1.0,
                   help="seconds at the start reported apart (receive windows and buffers grow)")
    p.add_argument("--latency-rate", type=int, default=0, help="default: half of sluice's tcp3164 msg/s")
    p.add_argument("--rss-secs", type=int, default=15)
    p.add_argument("--rss-drain", type=int, default=1_000_000, help="bytes/s the slow output takes")
    p.add_argument("--alert-rules", type=int, default=10, help=f"[[alert]] rules in the alerts case (at most {len(ALERT_RULES)})")
    p.add_argument("--alert-without", default="", type=lambda s: [x for x in s.split(",") if x],
                   help="names of ALERT_RULES left out before --alert-rules takes the first ones "
                        "(new_log_pattern: what the other rules cost alone)")
    p.add_argument("--alert-rates", default="250000,500000,750000",
                   type=lambda s: [int(x) for x in s.split(",") if x],
                   help="paced rates at which the alerts case measures what the engine's queue drops")
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--work-dir", help="where every case's daemon writes its files (default: the system's temp dir); "
                   "a tmpfs such as /dev/shm leaves out the file system's inode allocation, which on ext4 "
                   "after earlier runs' deletions costs every daemon more than its own work")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--json", help="also write every figure to this file")
    args = p.parse_args()
    UDP_SOCKETS, UDP_SENDERS, WORK_DIR = args.udp_sockets, args.udp_senders, args.work_dir
    names = [re.match(r'name = "([^"]+)"', r).group(1) for r in ALERT_RULES]
    unknown = [n for n in args.alert_without if n not in names]
    if unknown:
        p.error(f"--alert-without: no rule named {', '.join(unknown)} (ALERT_RULES: {', '.join(names)})")
    ALERT_RULES = [r for r, n in zip(ALERT_RULES, names) if n not in args.alert_without]
    args.alert_rules = min(args.alert_rules, len(ALERT_RULES))
    raise_nofile()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "sluice", "--example", "loadgen",
                        "--example", "collector"], cwd=ROOT,
                       check=True)
    names = [n for n in args.daemons.split(",") if n]
    if "rsyslog" in names and not os.path.exists(RSYSLOG):
        sys.exit(f"{RSYSLOG} missing: run benches/peers-setup.sh first")
    cases = args.cases.split(",")
    results = {}
    print(f"e2e: {', '.join(names)}; {os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
    if "tcp3164" in cases:
        results["tcp3164"] = case_tcp(args, names, "3164")
    if "tcp5424" in cases:
        results["tcp5424"] = case_tcp(args, names, "5424")
    if "udp" in cases:
        results["udp"] = case_udp(args, names)
    if "ladder" in cases:
        results["ladder"] = case_ladder(args, names)
    if "capladder" in cases:
        results["capladder"] = case_capped_ladder(args, names)
    if "conns" in cases:
        results["conns"] = case_conns(args, names)
    if "latency" in cases:
        rate = args.latency_rate
        if not rate:
            s = results.get("tcp3164", {}).get("sluice")
            rate = int(s["msg_per_s"] / 2) if s else 200_000
        results["latency"] = case_latency(args, names, rate)
    if "rss" in cases:
        results["rss"] = case_rss(args, names)
    if "mixed3164" in cases:
        results["mixed3164"] = case_mixed(args, names, "3164")
    if "mixed5424" in cases:
        results["mixed5424"] = case_mixed(args, names, "5424")
    if "es" in cases:
        results["es"] = case_es(args, names)
    if "alerts" in cases:
        results["alerts"] = case_alerts(args)
    if "alerts-mixed" in cases:
        results["alerts-mixed"] = case_alerts(args, mixed="mixed")
    if "alerts-site" in cases:
        results["alerts-site"] = case_alerts(args, mixed="site")

    print("\nsummary (sluice / peer, same run):")
    for c in ("tcp3164", "tcp5424", "mixed3164", "mixed5424"):
        r = results.get(c, {})
        s = r.get("sluice")
        for peer in ("rsyslog", "syslog-ng"):
            if s and peer in r:
                print(f"  {c}: sluice/{peer} wall x{ratio(s['msg_per_s'], r[peer]['msg_per_s']):.2f}, "
                      f"per CPU-s x{ratio(s['msg_per_cpu_s'], r[peer]['msg_per_cpu_s']):.2f}")
    r = results.get("es", {})
    if "sluice" in r:
        for peer in ("rsyslog", "syslog-ng"):
            if peer in r:
                print(f"  es: sluice/{peer} wall x{ratio(r['sluice']['msg_per_s'], r[peer]['msg_per_s']):.2f}, "
                      f"per CPU-s x{ratio(r['sluice']['msg_per_cpu_s'], r[peer]['msg_per_cpu_s']):.2f}")
    for key in ("ladder", "capladder"):
        if "sluice" not in results.get(key, {}):
            continue
        lad = results[key]
        label = "udp ladder" if key == "ladder" else f"udp ladder at {lad['cpu']:g} CPU"

        def best(name):
            # A daemon that lost nothing on any rung was limited by the sender, not by itself.
            r = lad[name]
            capped = all(x["delivered"] >= 0.999 for x in r["rungs"])
            return f"{fmt_rate(r['best'])}/s" + (" (no loss on any rung: the sender's limit)" if capped else "")

        for peer in ("rsyslog", "syslog-ng"):
            if peer in lad:
                s, b = lad["sluice"]["best"], lad[peer]["best"]
                print(f"  {label}: sluice {best('sluice')}, {peer} {best(peer)}"
                      + (f", x{s / b:.2f}" if b else ""))
    for case in ("alerts", "alerts-mixed", "alerts-site"):
        a = results.get(case)
        if not a:
            continue
        base, on = a["0"], a[str(args.alert_rules)]
        print(f"  {case}: {args.alert_rules} rules cost {a['drop'] * 100:.1f}% of wall msg/s "
              f"({fmt_rate(base['msg_per_s'])} -> {fmt_rate(on['msg_per_s'])}; runs {fmt_rate(base['min'])}-"
              f"{fmt_rate(base['max'])} vs {fmt_rate(on['min'])}-{fmt_rate(on['max'])}), "
              f"{a['cpu_drop'] * 100:.1f}% of msg per CPU-s; flat out, the engine's queue dropped "
              f"{on['feed_dropped'] * 100:.1f}% (not judged) and new_pattern skipped "
              f"{on.get('patterns_skipped', 0) * 100:.1f}% of the lines (engine behind); the engine's thread "
              f"{on['engine_ns_per_msg']:.0f} ns of CPU a message judged; paired runs: the median cost "
              f"{a['paired_drop'] * 100:.1f}% (quartiles {a['paired_quartiles'][0] * 100:.1f}% and "
              f"{a['paired_quartiles'][1] * 100:.1f}%)")
        for p in a["paced"]:
            print(f"  {case} paced at {fmt_rate(p['rate'])}/s: {p['feed_dropped'] * 100:.2f}% not judged")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
