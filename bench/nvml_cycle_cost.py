"""Cost of a collection cycle against its floor, on a real NVIDIA GPU.

The floor is the sum, over the NVML calls one cycle of a tier makes, of each call's median time
when called alone (the same call with the same arguments, repeated). The cycle cost is the
median wall time of the sampler's cycle for that tier (all GPUs in parallel) and of one GPU's
pass. Target: within 1.2x of the floor.

A call repeated in a tight loop answers faster than the same call made once per cycle after a
pause, so a second floor replays the cycle's recorded call sequence directly through pynvml
with the same pacing as the cycles (a 110 ms pause before each): the difference between it and
the pass is the exporter's own cost.

    python bench/nvml_cycle_cost.py [--repeat 50]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections import defaultdict
from typing import Any

import pynvml

from exporter.backends.nvml import NvmlBackend
from exporter.catalog import Tier
from exporter.sampler import Sampler


class CallLog:
    """pynvml with every nvml* function call appended to `calls` (function, args, kwargs)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.recording = False

    def __getattr__(self, name: str) -> Any:
        target = getattr(pynvml, name)
        if not (name.startswith("nvml") and callable(target) and not isinstance(target, type)):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.recording:
                self.calls.append((name, args, kwargs))
            return target(*args, **kwargs)

        return call


def median_ms(fn, args, kwargs, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        with contextlib.suppress(pynvml.NVMLError):
            fn(*args, **kwargs)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args()
    log = CallLog()
    backend = NvmlBackend(nvml=log)
    backend.start()
    devices = list(backend.devices())
    sampler = Sampler([(backend, devices)], fast_interval=60, slow_interval=60, call_deadline=5)
    sampler.start(schedule=False)
    sampler.run_cycle()  # first pass: discovers what is supported, allocates GPM buffers
    time.sleep(0.2)
    rows = []
    for tier in (Tier.FAST, Tier.SLOW):
        log.calls.clear()
        log.recording = True
        sampler.run_cycle((tier,))
        log.recording = False
        calls = list(log.calls)
        per_fn: dict[str, float] = defaultdict(float)
        floor = 0.0
        for name, a, kw in calls:
            ms = median_ms(getattr(pynvml, name), a, kw, args.repeat)
            per_fn[name] += ms
            floor += ms
        paced = []
        for _ in range(args.repeat):
            time.sleep(0.11)
            t0 = time.perf_counter()
            for name, a, kw in calls:
                with contextlib.suppress(pynvml.NVMLError):
                    getattr(pynvml, name)(*a, **kw)
            paced.append(time.perf_counter() - t0)
        sequence = statistics.median(paced) * 1e3
        cycle, passes = [], []
        for _ in range(args.repeat):
            time.sleep(0.11)  # GPM compares samples >= 100 ms apart; not part of the timing
            t0 = time.perf_counter()
            view = sampler.run_cycle((tier,))
            cycle.append(time.perf_counter() - t0)
            passes.append(view.tier_duration[tier])
        c, p = statistics.median(cycle) * 1e3, statistics.median(passes) * 1e3
        rows.append((tier.value, len(calls), floor, sequence, p, c, per_fn))
    sampler.stop()
    backend.stop()

    print(f"{len(devices)} GPU(s); medians of {args.repeat} repetitions; times in ms.\n")
    print("| tier | NVML calls per cycle | floor (sum of call medians) | same calls, paced | "
          "one GPU's pass | whole cycle | cycle / floor | cycle / paced calls |")
    print("|---|---|---|---|---|---|---|---|")
    for tier, n, floor, seq, p, c, _ in rows:
        print(f"| {tier} | {n} | {floor:.3f} | {seq:.3f} | {p:.3f} | {c:.3f} | "
              f"{c / floor:.2f}x | {c / seq:.2f}x |")
    for tier, _, _, _, _, _, per_fn in rows:
        top = sorted(per_fn.items(), key=lambda kv: -kv[1])[:6]
        print(f"\n{tier}: costliest calls: " + ", ".join(f"{k} {v:.3f}" for k, v in top))


if __name__ == "__main__":
    main()
