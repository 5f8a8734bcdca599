"""Idle cost of the daemon: CPU (% of one core) and RSS with default intervals, scraped every 15 s.

    .venv/bin/python bench/idle_cost.py [--gpus 8] [--minutes 5] [--scrape-interval 15]

CPU is utime+stime from /proc/<pid>/stat over the measured window, after a warm-up of one slow
interval; RSS is VmRSS at the end and VmHWM (peak). Scrapes ask for OpenMetrics with gzip, as
Prometheus does.
"""

from __future__ import annotations

import argparse
import time
import urllib.request

from _common import (
    PROMETHEUS_ACCEPT,
    cpu_seconds,
    free_port,
    machine,
    rss_bytes,
    start_daemon,
    table,
)


def scrape(port: int) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                 headers={"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"})
    with urllib.request.urlopen(req) as r:
        return len(r.read())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--scrape-interval", type=float, default=15)
    ap.add_argument("--warmup", type=float, default=35)
    args = ap.parse_args()

    port = free_port()
    proc = start_daemon(port, "--collection.backend=sim", f"--sim.gpus={args.gpus}")
    try:
        end_warmup = time.monotonic() + args.warmup
        while time.monotonic() < end_warmup:
            scrape(port)
            time.sleep(min(args.scrape_interval, max(0.0, end_warmup - time.monotonic())))
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        scrapes, size = 0, 0
        while time.monotonic() - t0 < args.minutes * 60:
            size = scrape(port)
            scrapes += 1
            time.sleep(args.scrape_interval)
        cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
        rss, peak = rss_bytes(proc.pid), rss_bytes(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        proc.wait(10)
    pct = 100 * (cpu1 - cpu0) / (t1 - t0)
    print(f"Machine: {machine()}; {args.gpus} simulated GPUs, default intervals (fast 5 s, "
          f"slow 30 s); scraped every {args.scrape_interval:g} s (OpenMetrics, gzip, "
          f"{size / 1024:.0f} KiB); measured {t1 - t0:.0f} s after {args.warmup:g} s warm-up.\n")
    print(table(["CPU, % of one core", "RSS", "peak RSS", "scrapes"],
                [[f"{pct:.2f} %", f"{rss / 2**20:.1f} MiB", f"{peak / 2**20:.1f} MiB",
                  str(scrapes)]]))


if __name__ == "__main__":
    main()
