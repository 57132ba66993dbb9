#!/usr/bin/env python3
"""Tailing benchmark (issue 20): sluice's `kind = "tail"` beside rsyslog's imfile, in one run.

Each daemon in turn follows one file that a writer grows as fast as it can (--lines lines of
--size bytes, appended in 1 MiB writes), and writes every line to a file in the traditional
format (sluice's `format = "traditional"`, rsyslog's RSYSLOG_TraditionalFileFormat). The daemons
run back to back, --runs times each, alternating, so the ratio holds on a noisy machine.

    cargo build --release --bin sluice
    benches/tail.py                      # 1,000,000 lines of 100 bytes, 3 runs each
    benches/tail.py --lines 2000000 --runs 5

Lines per second run from the writer's first write to the moment the output holds every line;
lines per CPU-second divide by the daemon's user+system time (/proc/PID/stat) over the same
span. rsyslog is Debian's, as .ci/install-test-tools unpacks it (imfile in inotify mode, its
default). Prints the median of the runs and their spread (lowest to highest).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(os.environ.get("SLUICE_TEST_TOOLS") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sluice-test-tools"), "root")
RSYSLOG = os.environ.get("RSYSLOGD", os.path.join(TOOLS, "usr/sbin/rsyslogd"))
RSYSLOG_MODS = os.path.join(os.path.dirname(os.path.dirname(RSYSLOG)),
                            "lib/x86_64-linux-gnu/rsyslog")
SLUICE = os.environ.get("SLUICE", os.path.join(ROOT, "target/release/sluice"))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def sluice(work, src, out):
    conf = os.path.join(work, "sluice.toml")
    with open(conf, "w") as f:
        f.write(f'[daemon]\nstate_dir = "{work}/state"\n\n'
                f'[listen.app]\nkind = "tail"\npaths = ["{src}"]\nstart_at = "beginning"\n\n'
                f'[output.out]\nkind = "file"\npath = "{out}"\nformat = "traditional"\n\n'
                f'[[route]]\nto = ["out"]\n')
    return [SLUICE, "--config", conf]


def rsyslog(work, src, out):
    conf = os.path.join(work, "rsyslog.conf")
    with open(conf, "w") as f:
        f.write(f'global(workDirectory="{work}")\nmodule(load="imfile")\n'
                f'input(type="imfile" file="{src}" tag="app" ruleset="r")\n'
                f'ruleset(name="r") {{ action(type="omfile" file="{out}" '
                f'template="RSYSLOG_TraditionalFileFormat") }}\n')
    return [RSYSLOG, "-n", "-f", conf, "-i", os.path.join(work, "rs.pid"), "-M", RSYSLOG_MODS]


DAEMONS = {"sluice": sluice, "rsyslog": rsyslog}


class LineCounter:
    """Counts the LFs of a file as it grows, reading only what is new."""

    def __init__(self, path):
        self.path, self.at, self.n = path, 0, 0

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.at)
                while chunk := f.read(1 << 22):
                    self.n += chunk.count(b"\n")
                    self.at += len(chunk)
        except FileNotFoundError:
            pass
        return self.n


def one_run(name, lines, size, timeout):
    work = tempfile.mkdtemp(prefix=f"tailbench-{name}-")
    try:
        src, out = os.path.join(work, "in.log"), os.path.join(work, "out.log")
        open(src, "w").close()
        cmd = DAEMONS[name](work, src, out)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # both have found the file (sluice logs it within milliseconds)
        assert proc.poll() is None, f"{name} exited: {cmd}"
        line = b"x" * (size - 13)
        per_write = max(1, (1 << 20) // size)
        block = b"".join(b"seq=%07d %s\n" % (i % 10_000_000, line) for i in range(per_write))
        counter = LineCounter(out)
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        with open(src, "ab") as f:
            written = 0
            while written < lines:
                k = min(per_write, lines - written)
                f.write(block if k == per_write else block[: k * size])
                f.flush()
                written += k
        while counter.poll() < lines:
            if time.monotonic() - t0 > timeout:
                raise SystemExit(f"{name}: only {counter.n} of {lines} lines after {timeout}s")
            time.sleep(0.01)
        wall = time.monotonic() - t0
        cpu = cpu_seconds(proc.pid) - cpu0
        proc.terminate()
        proc.wait(timeout=30)
        return lines / wall, lines / cpu if cpu > 0 else float("inf")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=100, help="bytes per line, LF included")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=300)
    args = ap.parse_args()
    for path in (SLUICE, RSYSLOG, os.path.join(RSYSLOG_MODS, "imfile.so")):
        if not os.path.exists(path):
            sys.exit(f"{path} missing (cargo build --release; .ci/install-test-tools)")
    results = {n: [] for n in DAEMONS}
    for r in range(args.runs):
        for name in DAEMONS:
            wall, per_cpu = one_run(name, args.lines, args.size, args.timeout)
            results[name].append((wall, per_cpu))
            print(f"run {r + 1} {name:8} {wall:12,.0f} lines/s {per_cpu:12,.0f} lines/CPU-s",
                  flush=True)
    print(f"\n{args.lines:,} lines of {args.size} bytes, median of {args.runs} (spread)")
    print(f"{'daemon':8} {'lines/s':>28} {'lines per CPU-second':>32}")
    med = {}
    for name, rows in results.items():
        walls, cpus = [w for w, _ in rows], [c for _, c in rows]
        med[name] = (statistics.median(walls), statistics.median(cpus))
        print(f"{name:8} {med[name][0]:10,.0f} ({min(walls):,.0f}-{max(walls):,.0f})"
              f" {med[name][1]:12,.0f} ({min(cpus):,.0f}-{max(cpus):,.0f})")
    print(f"sluice/rsyslog: {med['sluice'][0] / med['rsyslog'][0]:.2f}x lines/s, "
          f"{med['sluice'][1] / med['rsyslog'][1]:.2f}x per CPU-second")


if __name__ == "__main__":
    main()
