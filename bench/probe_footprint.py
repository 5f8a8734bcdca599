"""What the probes cost a GPU: the daemon's GPU memory between probes, the probe children's GPU
memory and time on the GPU, and the duty cycle at the default schedule.

    python bench/probe_footprint.py [--gpu 0] [--seconds 90]

Starts the daemon on the real GPUs (nvml backend, default probe settings, plus
`--probes.run-at-start=true --probes.quiet-period=0s` so each probe runs once now instead of
within its interval) and
watches GPU `--gpu` through NVML every 20 ms from a separate process (this one): which processes
hold a context there and how much memory each uses. Then:
- the daemon: ever seen among the GPU's compute processes? libcuda mapped into it?
- each probe child: how long it held the GPU (first to last sighting) and its peak memory;
- the duty cycle: the time each probe holds the GPU (`gpu_probe_duration_seconds{phase="total"}`)
  over its default interval, summed: the share of a GPU's time the probes take at defaults.
Needs nvidia-ml-py and CuPy (for the children); run on an idle GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import free_port, machine, start_daemon, table
from soak import descendants

from exporter.config import ProbeIntervals

MiB = 2**20


@dataclass
class Holder:
    """A process seen with a context on the GPU."""

    pid: int
    first: float
    last: float
    peak_bytes: int
    cmdline: str


def watch(index: int, stop: threading.Event, seen: dict[int, Holder], period: float) -> None:
    import pynvml

    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        while not stop.is_set():
            now = time.monotonic()
            for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                used = int(p.usedGpuMemory or 0)
                h = seen.get(p.pid)
                if h is None:
                    seen[p.pid] = Holder(p.pid, now, now, used, _cmdline(p.pid))
                else:
                    h.last, h.peak_bytes = now, max(h.peak_bytes, used)
            stop.wait(period)
    finally:
        pynvml.nvmlShutdown()


def _cmdline(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    return " ".join(a.decode(errors="replace") for a in argv if a)[:120]


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def probe_totals(url: str, gpu: int) -> dict[str, float]:
    """gpu_probe_duration_seconds{phase="total"} per probe, for one GPU."""
    out = {}
    for line in get(url + "/metrics").splitlines():
        if line.startswith("gpu_probe_duration_seconds{") and 'phase="total"' in line \
                and f'gpu="{gpu}"' in line:
            probe = line.split('probe="', 1)[1].split('"', 1)[0]
            out[probe] = float(line.rsplit(" ", 1)[1])
    return out


def wait_probes_done(url: str, gpu: int, deadline: float) -> dict:
    """/probes once every single-GPU probe has a result or a skip reason for the GPU."""
    from probes.registry import PROBES

    wanted = {n for n, s in PROBES.items() if not s.pair}
    while True:
        report = json.loads(get(url + "/probes"))
        g = next(x for x in report["gpus"] if x["gpu"] == gpu)
        if wanted <= set(g["results"]) | set(g.get("last_skipped") or {}):
            return g
        if time.monotonic() > deadline:
            raise SystemExit(f"probes not all done in time: {sorted(g['results'])}")
        time.sleep(0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=120, help="deadline for the probes")
    ap.add_argument("--period", type=float, default=0.02, help="NVML sampling period")
    args = ap.parse_args()

    port = free_port()
    # Default probe settings, except: every probe once now, and no quiet period before it (the
    # GPU is idle; the quiet period only delays the first run).
    daemon = start_daemon(port, "--collection.backend=nvml", "--probes.run-at-start=true",
                          "--probes.quiet-period=0s")
    url = f"http://127.0.0.1:{port}"
    seen: dict[int, Holder] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(args.gpu, stop, seen, args.period))
    watcher.start()
    try:
        report = wait_probes_done(url, args.gpu, time.monotonic() + args.seconds)
        time.sleep(1.0)  # one more second of sightings after the last child
        totals = probe_totals(url, args.gpu)
        maps = Path(f"/proc/{daemon.pid}/maps").read_text()
        children_now = descendants(daemon.pid)
    finally:
        stop.set()
        watcher.join()
        daemon.terminate()
        daemon.wait(10)

    print(f"# probe footprint, GPU {args.gpu}; {machine()}; {time.strftime('%Y-%m-%d')}")
    daemon_seen = daemon.pid in seen
    print(table([f"daemon (pid {daemon.pid})", "value"], [
        ["seen among the GPU's compute processes", "yes" if daemon_seen else "no"],
        ["GPU memory held", f"{seen[daemon.pid].peak_bytes / MiB:.0f} MiB" if daemon_seen
         else "0 (no context)"],
        # nvmlInit itself maps libcuda (checked on R580); mapped is not a context.
        ["libcuda mapped into the daemon", "yes" if "libcuda.so" in maps else "no"],
        ["libnvidia-ml mapped into the daemon", "yes" if "libnvidia-ml" in maps else "no"],
        ["child processes after the probes", str(len(children_now))],
    ]))
    print()
    rows = []
    for h in sorted(seen.values(), key=lambda h: h.first):
        if h.pid == daemon.pid:
            continue
        rows.append([str(h.pid), h.cmdline.split("probes.child", 1)[-1].split()[0]
                     if "probes.child" in h.cmdline else h.cmdline,
                     f"{h.last - h.first:.2f}", f"{h.peak_bytes / MiB:.0f}"])
    print(table(["child pid", "probe", "seen on the GPU (s)", "peak GPU memory (MiB)"], rows))
    print()
    intervals = ProbeIntervals()
    duty_rows, duty = [], 0.0
    for probe, seconds in sorted(totals.items()):
        every = getattr(intervals, probe, None)
        if not every:
            continue
        share = seconds / every
        duty += share
        duty_rows.append([probe, f"{seconds:.2f}", f"{every / 3600:g} h", f"{100 * share:.4f} %"])
    duty_rows.append(["all", "", "", f"{100 * duty:.4f} %"])
    print(table(["probe", "holds the GPU (s, phase=total)", "default interval",
                 "duty cycle"], duty_rows))
    skipped = report.get("last_skipped") or {}
    if skipped:
        print("\nskipped:", json.dumps(skipped))


if __name__ == "__main__":
    main()
