"""Time from an Xid record written to the kernel-log source to the counter in /metrics' bytes.

    python bench/xid_latency.py [--records 100]

The path is the daemon's own: the follower reads the record, the watcher counts it and asks
the publisher to re-render, and the bytes /metrics would serve contain the new count. The
source is a file of kmsg records (this machine's /dev/kmsg carries no Xids, and writing fake
ones into a real kernel log would mislead whoever reads it): a file is polled every 50 ms,
while /dev/kmsg wakes the reader at once, so these figures are an upper bound.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

from _common import machine, table

from exporter.events.kmsg import RecordFile
from exporter.events.watcher import EventWatcher
from exporter.exposition import Format
from exporter.publisher import Publisher

BUS = "00000000:3b:00.0"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100)
    args = ap.parse_args()
    path = Path(tempfile.mkdtemp()) / "kmsg"
    path.write_text("")
    publisher = Publisher()
    watcher = EventWatcher(lambda: {BUS: (0, "GPU-bench")}, None, RecordFile(path),
                           on_change=publisher.refresh, current_boot=lambda: "bench")
    publisher.add(watcher.rows)
    watcher.start()
    deadline = time.monotonic() + 10
    while watcher.sources.get("kmsg") is None and time.monotonic() < deadline:
        time.sleep(0.01)
    pattern = re.compile(rb'gpu_xid_errors_total\{[^}]*xid="13"[^}]*\} (\d+)')
    latencies = []
    try:
        for i in range(1, args.records + 1):
            line = (f"3,{i},{i},-;NVRM: Xid (PCI:0000:3b:00): 13, pid=1, name=bench, "
                    "Graphics Exception\n")
            t0 = time.perf_counter()
            with path.open("a") as f:
                f.write(line)
            while True:
                m = pattern.search(publisher.current.body(Format.TEXT, False))
                if m and int(float(m.group(1))) >= i:
                    break
                time.sleep(0.001)
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.02)  # records apart, as Xids are
    finally:
        watcher.stop()
    q = statistics.quantiles(latencies, n=100)
    print(f"Machine: {machine()}; {args.records} records, file source polled every 50 ms.\n")
    print(table(["records", "p50 ms", "p99 ms", "max ms"],
                [[str(len(latencies)), f"{q[49] * 1e3:.1f}", f"{q[98] * 1e3:.1f}",
                  f"{max(latencies) * 1e3:.1f}"]]))


if __name__ == "__main__":
    main()
