"""/metrics latency and throughput from Python client threads (for machines without wrk).

    python bench/scrape_latency.py --url http://127.0.0.1:9472/metrics [--threads 16]
        [--seconds 10]

Each thread keeps one HTTP/1.1 connection and sends Prometheus' Accept and gzip headers.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import threading
import time
from urllib.parse import urlparse

from _common import PROMETHEUS_ACCEPT


def worker(url: str, until: float, out: list[float], errors: list[int]) -> None:
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    headers = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}
    while time.monotonic() < until:
        t0 = time.perf_counter()
        conn.request("GET", u.path, headers=headers)
        r = conn.getresponse()
        r.read()
        out.append(time.perf_counter() - t0)
        if r.status != 200:
            errors.append(r.status)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10)
    args = ap.parse_args()
    until = time.monotonic() + args.seconds
    samples: list[float] = []
    errors: list[int] = []
    threads = [threading.Thread(target=worker, args=(args.url, until, samples, errors))
               for _ in range(args.threads)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    q = statistics.quantiles(samples, n=100)
    print("| requests | requests/s | p50 ms | p99 ms | non-200 |")
    print("|---|---|---|---|---|")
    print(f"| {len(samples)} | {len(samples) / wall:.0f} | {q[49] * 1e3:.2f} | "
          f"{q[98] * 1e3:.2f} | {len(errors)} |")


if __name__ == "__main__":
    main()
