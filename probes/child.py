"""The probe child process: `python -m probes.child PROBE --uuid UUID [...]`.

Started by the runner with `CUDA_VISIBLE_DEVICES` set to the GPU's UUID (and the peer's for a
pair probe) and a writable `CUPY_CACHE_DIR`. It prints exactly one JSON `Measurement` on
standard output and exits 0; anything else (a crash, a CUDA error, running out of memory, a
kill at the deadline) is an `error` for the runner. It owns the GPU context and exits after the
probe, so the daemon itself never holds GPU memory.

`--runtime sim` replays the values the runner passes in `params["sim"]` (the simulated node's
probes, used by tests and by the simulated daemon), with the behaviours a real child can show:
crash, hang, garbage output, out of memory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

from .registry import PROBES
from .result import Measurement


def _sim(probe: str, params: dict) -> Measurement:
    sim = params.get("sim", {})
    behaviour = sim.get("behaviour", "ok")
    if behaviour == "crash":
        os.abort()  # like a segfault in a driver library: killed by a signal
    if behaviour == "hang":
        threading.Event().wait()  # blocks until the runner kills us at the deadline
    if behaviour == "garbage":
        sys.stdout.write("\x00\x01 not json {\n")
        sys.exit(0)
    if behaviour == "oom":
        print("cudaErrorMemoryAllocation: out of memory", file=sys.stderr)
        sys.exit(1)
    return Measurement(
        quantities={k: float(v) for k, v in sim.get("quantities", {}).items()},
        corrupted=sim.get("corrupted"),
        measure_seconds=float(sim.get("measure_seconds", 0.01)),
        start_seconds=float(sim.get("start_seconds", 0.0)),
        skipped=sim.get("skipped"),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m probes.child")
    ap.add_argument("probe", choices=sorted(PROBES))
    ap.add_argument("--uuid", required=True)
    ap.add_argument("--peer-uuid")
    ap.add_argument("--params", default="{}", help="JSON object overriding the defaults")
    ap.add_argument("--memory-bytes", type=int)
    ap.add_argument("--runtime", choices=("cuda", "sim"), default="cuda")
    args = ap.parse_args(argv)
    spec = PROBES[args.probe]
    params = {**spec.params, **json.loads(args.params)}
    started = time.perf_counter()
    if args.runtime == "sim":
        measurement = _sim(args.probe, params)
    else:
        from .cuda_runtime import run  # imports CuPy: only ever in this child

        measurement = run(spec, args.uuid, args.peer_uuid, params,
                          args.memory_bytes or spec.memory_bytes, started)
    sys.stdout.write(measurement.to_json() + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
