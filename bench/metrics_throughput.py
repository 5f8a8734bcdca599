"""/metrics under concurrent load: our prepared bytes against prometheus_client's make_asgi_app.

Same run, same machine, same simulated node and families; one uvicorn worker each; load from
wrk on loopback (`apt-get install wrk`). Prints a markdown table for docs/benchmarks.md.

    .venv/bin/python bench/metrics_throughput.py [--gpus 8] [--duration 15] [--connections 16]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
import urllib.request

from _common import (
    PROMETHEUS_ACCEPT,
    REPO,
    free_port,
    machine,
    start_daemon,
    table,
    wait_ready,
)

HEADER_SETS = {
    "text, identity": [],
    "Prometheus (OpenMetrics, gzip)": ["-H", f"Accept: {PROMETHEUS_ACCEPT}",
                                        "-H", "Accept-Encoding: gzip"],
}


def wrk(url: str, headers: list[str], duration: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration}s", "--latency",
         "--timeout", "10s", *headers, url],
        capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
        lat[pct] = float(m.group(1)) * scale
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50_ms": lat["50"], "p99_ms": lat["99"],
            "non2xx": float(errors.group(1)) if errors else 0.0,
            "socket_errors": socket_errors.group(1) if socket_errors else "0"}


def body_size(url: str, headers: list[str]) -> int:
    req = urllib.request.Request(url)
    for i in range(0, len(headers), 2):
        k, v = headers[i + 1].split(": ", 1)
        req.add_header(k, v)
    with urllib.request.urlopen(req) as r:
        return len(r.read())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install wrk")

    ours_port, base_port = free_port(), free_port()
    ours = start_daemon(ours_port, "--collection.backend=sim", f"--sim.gpus={args.gpus}")
    base = subprocess.Popen([sys.executable, str(REPO / "bench" / "baseline_asgi.py"),
                             str(base_port), str(args.gpus)], cwd=REPO,
                            stderr=subprocess.PIPE)
    try:
        wait_ready(f"http://127.0.0.1:{base_port}/readyz", base)
        time.sleep(1)  # let both finish their first collection cycle
        rows, results = [], {}
        for label, headers in HEADER_SETS.items():
            for name, port in (("gpu-fleet-exporter", ours_port), ("make_asgi_app", base_port)):
                url = f"http://127.0.0.1:{port}/metrics"
                size = body_size(url, headers)
                r = wrk(url, headers, args.duration, args.connections)
                results[(label, name)] = r
                rows.append([label, name, f"{r['rps']:.0f}", f"{r['p50_ms']:.2f}",
                             f"{r['p99_ms']:.2f}", f"{size / 1024:.0f} KiB",
                             f"{r['non2xx']:.0f} / {r['socket_errors']}"])
        print(f"Machine: {machine()}; {args.gpus} simulated GPUs; wrk 1 thread, "
              f"{args.connections} connections, {args.duration}s per row; loopback.\n")
        print(table(["request", "server", "requests/s", "p50 ms", "p99 ms", "body",
                     "non-2xx / socket errors"], rows))
        for label in HEADER_SETS:
            ratio = results[(label, "gpu-fleet-exporter")]["rps"] / results[
                (label, "make_asgi_app")]["rps"]
            print(f"\n{label}: {ratio:.1f}x the requests/s of make_asgi_app")
    finally:
        for p in (ours, base):
            p.terminate()
            p.wait(10)


if __name__ == "__main__":
    main()
