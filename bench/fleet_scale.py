"""What one node and a 10,000-node fleet cost Prometheus, from a real exposition.

    .venv/bin/python bench/fleet_scale.py [--gpus 8] [--nodes 10000] [--scrape-interval 15]

Runs one collection cycle of the simulated node (all collectors on, probes run once so their
series exist), renders /metrics as Prometheus asks for it (OpenMetrics + gzip) and as text,
and counts series per family. Fleet figures are that node times `--nodes`: series in the head
block, samples per second ingested, bytes per scrape over the network. Recording rules: the
number of rules and the series they read, from alerts/*.rules.yml. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import gzip
import re
from collections import Counter
from pathlib import Path

import yaml

from exporter.backends import OpenedBackends
from exporter.backends.sim import SimBackend
from exporter.config import load_settings
from exporter.daemon import Daemon
from exporter.exposition import negotiate

REPO = Path(__file__).resolve().parent.parent
OPENMETRICS = "application/openmetrics-text;version=1.0.0"


def node_exposition(gpus: int) -> tuple[bytes, bytes]:
    backend = SimBackend(gpus=gpus, seed=1)
    backend.start()
    settings = load_settings(overrides={"probes": {"runtime": "sim", "quiet_period": 0}})
    daemon = Daemon(settings, OpenedBackends(sources=[(backend, list(backend.devices()))]))
    daemon.sampler.start(schedule=False)
    try:
        view = daemon.sampler.run_cycle()
        if daemon.probes is not None:
            daemon.probes.observe(view)
            for probe in ("graph_replay", "pcie_bandwidth", "memory_bandwidth", "gemm",
                          "ecc_xid_scan"):
                daemon.probes.run(probe, force=True)
        exposition = daemon.publisher.publish(daemon.sampler.run_cycle())
        text = exposition.body(negotiate("text/plain"), False)
        om = exposition.body(negotiate(OPENMETRICS), False)
        return text, om
    finally:
        daemon.sampler.stop()
        if daemon.probes is not None:
            daemon.probes.stop()


def series_by_family(text: bytes) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            counts[re.split(r"[{ ]", line, maxsplit=1)[0]] += 1
    return counts


def rule_stats() -> list[tuple[str, int, int]]:
    out = []
    for path in sorted((REPO / "alerts").glob("*.rules.yml")):
        groups = yaml.safe_load(path.read_text())["groups"]
        rules = [r for g in groups for r in g["rules"]]
        alerts = sum(1 for r in rules if "alert" in r)
        out.append((path.name, len(rules) - alerts, alerts))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--scrape-interval", type=float, default=15.0)
    args = ap.parse_args()
    text, om = node_exposition(args.gpus)
    counts = series_by_family(text)
    series = sum(counts.values())
    om_gz = len(gzip.compress(om))
    n, every = args.nodes, args.scrape_interval
    print(f"One simulated node: {args.gpus} H100, every collector on, probes run once.\n")
    print("| per node | value |\n|---|---|")
    print(f"| series | {series} |")
    print(f"| series per GPU (node-level ones spread over the GPUs) | {series / args.gpus:.0f} |")
    print(f"| scrape body, text | {len(text) / 1024:.0f} KiB |")
    print(f"| scrape body, OpenMetrics + gzip (Prometheus' request) | {om_gz / 1024:.1f} KiB |")
    print(f"\n| fleet of {n:,} nodes, scraped every {every:g} s | value |\n|---|---|")
    print(f"| active series | {series * n / 1e6:.1f} million |")
    print(f"| samples ingested per second | {series * n / every / 1e3:.0f} thousand |")
    print(f"| scrape traffic into Prometheus | {om_gz * n / every * 8 / 1e6:.0f} Mbit/s |")
    print("\nLargest families (series per node):\n\n| family | series |\n|---|---|")
    for family, count in counts.most_common(12):
        print(f"| `{family}` | {count} |")
    print("\n| rules file | recording rules | alerts |\n|---|---|---|")
    for name, recording, alerts in rule_stats():
        print(f"| {name} | {recording} | {alerts} |")


if __name__ == "__main__":
    main()
