"""Load and soak: N concurrent scrapers for M minutes against the 8-GPU simulated node.

    .venv/bin/python bench/soak.py [--minutes 10] [--scrapers 200] [--scenario FILE]
        [--warmup SECONDS] [--rss-limit 5]

Starts the daemon as a subprocess on loopback (sim backend, 8 GPUs, the faults-demo scenario,
probes run at start and then every --probe-interval seconds with no jitter and no quiet period,
so probes really run during the soak), waits for /readyz, then runs N scraper threads. Each
scraper keeps one HTTP/1.1 keep-alive connection and sends /metrics requests back to back (closed
loop: the next request leaves when the previous answer is read), with Prometheus' OpenMetrics
Accept header and gzip. A failure is a non-200 answer, an answer that is not gzip'd OpenMetrics,
or any exception (timeout, reset); the scraper reconnects after one.

A sampler reads the daemon's /proc every --sample-every seconds: VmRSS, Threads, open fds and
child processes (descendants, by a /proc scan of PPid). Warm-up is the first --warmup seconds
(default: 60 s, or 20 % of a run shorter than 5 minutes); "warm" figures are the sample taken
when it ends, "end" figures the last sample under load, "idle" figures the minimum over a few
seconds after the scrapers closed their connections. Exits 1 when a request failed, RSS grew by
--rss-limit % or more from warm to end, or threads, fds or children leaked (end vs warm under
load beyond a small tolerance, or idle after the run vs idle before it).
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PROMETHEUS_ACCEPT,
    REPO,
    free_port,
    machine,
    rss_bytes,
    start_daemon,
    table,
)

DEFAULT_SCENARIO = REPO / "exporter/backends/sim/scenarios/faults-demo.yaml"
PROBES = ("graph-replay", "pcie-bandwidth", "memory-bandwidth", "gemm", "p2p-bandwidth",
          "ecc-xid-scan")
# Allowed growth: a worker thread or two started late, a log or socket fd in flight.
THREAD_TOLERANCE = 2
FD_TOLERANCE = 4
CHILD_TOLERANCE = 0


@dataclass
class Sample:
    t: float  # seconds since the scrapers started
    rss: int
    threads: int
    fds: int
    children: int


@dataclass
class Result:
    seconds: float
    scrapers: int
    warmup: float
    requests: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    before: Sample | None = None  # idle, before the scrapers start
    warm: Sample | None = None
    end: Sample | None = None
    after: Sample | None = None  # idle, after the scrapers closed
    peak_rss: int = 0
    probe_runs: dict[str, int] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)

    @property
    def rss_growth(self) -> float:
        assert self.warm and self.end
        return 100 * (self.end.rss - self.warm.rss) / self.warm.rss


def descendants(pid: int) -> list[int]:
    """PIDs of every descendant of pid, from the PPid line of /proc/*/status."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            text = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        parent[int(d)] = int(text.rsplit(")", 1)[1].split()[1])
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        found += kids
        todo += kids
    return found


def sample(pid: int, t: float) -> Sample:
    threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            threads = int(line.split()[1])
    return Sample(t, rss_bytes(pid), threads, len(os.listdir(f"/proc/{pid}/fd")),
                  len(descendants(pid)))


def settled(pid: int, t: float, seconds: float = 5.0) -> Sample:
    """Minimum of each figure over a few seconds: a probe child or socket in flight passes."""
    got = []
    until = time.monotonic() + seconds
    while True:
        got.append(sample(pid, t))
        if time.monotonic() >= until:
            break
        time.sleep(0.5)
    return Sample(t, min(s.rss for s in got), min(s.threads for s in got),
                  min(s.fds for s in got), min(s.children for s in got))


def scraper(port: int, until: float, latencies: list[float], errors: dict[str, int],
            lock: threading.Lock) -> None:
    headers = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}
    conn: http.client.HTTPConnection | None = None
    mine: list[float] = []
    while time.monotonic() < until:
        t0 = time.perf_counter()
        err = None
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("GET", "/metrics", headers=headers)
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                err = f"HTTP {r.status}"
            elif (r.getheader("Content-Encoding") != "gzip"
                  or not (r.getheader("Content-Type") or "").startswith(
                      "application/openmetrics-text") or not body):
                err = "not gzip'd OpenMetrics"
        except (OSError, http.client.HTTPException) as e:
            err = type(e).__name__
            if conn is not None:
                conn.close()
            conn = None
        mine.append(time.perf_counter() - t0)
        if err:
            with lock:
                errors[err] = errors.get(err, 0) + 1
    if conn is not None:
        conn.close()
    with lock:
        latencies.extend(mine)


def probe_runs(port: int) -> dict[str, int]:
    """gpu_probe_runs_total summed over GPUs and probes, by outcome."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        text = r.read().decode()
    out: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("gpu_probe_runs_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            out[outcome] = out.get(outcome, 0) + int(float(line.rsplit(" ", 1)[1]))
    return out


def daemon_flags(scenario: Path, probe_interval: float) -> list[str]:
    return ["--collection.backend=sim", "--sim.gpus=8", f"--sim.scenario={scenario}",
            "--log.level=warning", "--probes.run-at-start=true", "--probes.jitter=0",
            "--probes.quiet-period=0",
            *(f"--probes.intervals.{p}={probe_interval:g}" for p in PROBES)]


def run_soak(seconds: float, scrapers: int, scenario: Path = DEFAULT_SCENARIO,
             warmup: float | None = None, sample_every: float = 2.0,
             probe_interval: float = 30.0) -> Result:
    if warmup is None:
        warmup = 60.0 if seconds >= 300 else 0.2 * seconds
    res = Result(seconds=seconds, scrapers=scrapers, warmup=warmup)
    port = free_port()
    proc = start_daemon(port, *daemon_flags(scenario, probe_interval))
    try:
        res.before = settled(proc.pid, 0.0, 2.0)
        lock = threading.Lock()
        t0 = time.monotonic()
        until = t0 + seconds
        workers = [threading.Thread(target=scraper, daemon=True,
                                    args=(port, until, res.latencies, res.errors, lock))
                   for _ in range(scrapers)]
        for w in workers:
            w.start()
        while (now := time.monotonic()) < until:
            s = sample(proc.pid, now - t0)
            res.samples.append(s)
            if res.warm is None and s.t >= warmup:
                res.warm = s
            time.sleep(min(sample_every, max(0.0, until - time.monotonic())))
        res.end = sample(proc.pid, time.monotonic() - t0)
        res.samples.append(res.end)
        for w in workers:
            w.join(120)
        res.warm = res.warm or res.samples[0]
        res.peak_rss = rss_bytes(proc.pid, "VmHWM")
        res.probe_runs = probe_runs(port)
        time.sleep(1.0)  # the server notices the closed keep-alive connections
        res.after = settled(proc.pid, time.monotonic() - t0, 5.0)
        if proc.poll() is not None:
            res.errors["daemon exited"] = 1
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except Exception:
            proc.kill()
            proc.wait(5)
    res.requests = len(res.latencies)
    res.failed = sum(res.errors.values())
    return res


def problems(res: Result, rss_limit: float = 5.0) -> list[str]:
    assert res.before and res.warm and res.end and res.after
    out = []
    if res.failed:
        out.append(f"{res.failed} failed requests: {res.errors}")
    if res.rss_growth >= rss_limit:
        out.append(f"RSS grew {res.rss_growth:.2f} % after warm-up (limit {rss_limit:g} %)")
    for name, tol in (("threads", THREAD_TOLERANCE), ("fds", FD_TOLERANCE),
                      ("children", CHILD_TOLERANCE)):
        warm, end = getattr(res.warm, name), getattr(res.end, name)
        before, after = getattr(res.before, name), getattr(res.after, name)
        if end - warm > tol and name != "children":
            out.append(f"{name} grew under load: {warm} at warm-up, {end} at the end")
        if after - before > tol:
            out.append(f"{name} leaked: {before} idle before, {after} idle after")
    return out


def report(res: Result) -> str:
    assert res.before and res.warm and res.end and res.after
    q = statistics.quantiles(res.latencies, n=100) if len(res.latencies) > 1 else [0.0] * 99
    mib = 2**20
    load = table(
        ["scrapers", "seconds", "requests", "failed", "req/s", "p50 ms", "p99 ms", "max ms"],
        [[str(res.scrapers), f"{res.seconds:g}", str(res.requests), str(res.failed),
          f"{res.requests / res.seconds:.0f}", f"{q[49] * 1e3:.0f}", f"{q[98] * 1e3:.0f}",
          f"{max(res.latencies, default=0) * 1e3:.0f}"]])
    res_rows = [
        ["RSS MiB", f"{res.before.rss / mib:.1f}", f"{res.warm.rss / mib:.1f}",
         f"{res.end.rss / mib:.1f}", f"{res.after.rss / mib:.1f}",
         f"{res.rss_growth:+.2f} % (peak {res.peak_rss / mib:.1f} MiB)"],
    ]
    for name in ("threads", "fds", "children"):
        b, w, e, a = (getattr(s, name) for s in (res.before, res.warm, res.end, res.after))
        res_rows.append([name, str(b), str(w), str(e), str(a), f"{e - w:+d} / {a - b:+d}"])
    resources = table(["daemon", "idle before", f"warm ({res.warm.t:.0f} s)",
                       f"end ({res.end.t:.0f} s)", "idle after",
                       "end-warm / after-before"], res_rows)
    runs = ", ".join(f"{k} {v}" for k, v in sorted(res.probe_runs.items())) or "none"
    return f"{load}\n\n{resources}\n\nProbe runs completed (gpu_probe_runs_total): {runs}."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--scrapers", type=int, default=200)
    ap.add_argument("--scenario", type=Path, default=DEFAULT_SCENARIO)
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds (default 60, or 20 %% of a run under 5 minutes)")
    ap.add_argument("--sample-every", type=float, default=2.0)
    ap.add_argument("--probe-interval", type=float, default=30.0)
    ap.add_argument("--rss-limit", type=float, default=5.0, help="percent")
    args = ap.parse_args()
    res = run_soak(args.minutes * 60, args.scrapers, args.scenario.resolve(), args.warmup,
                   args.sample_every, args.probe_interval)
    print(f"Machine: {machine()}; 8 simulated GPUs, scenario {args.scenario.name}, probes every "
          f"{args.probe_interval:g} s; {args.scrapers} closed-loop scrapers (OpenMetrics, gzip, "
          f"keep-alive) for {args.minutes:g} min; warm-up {res.warmup:g} s.\n")
    print(report(res))
    bad = problems(res, args.rss_limit)
    for p in bad:
        print(f"FAIL: {p}", file=sys.stderr)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
