"""The slow tier: power limits, energy, thresholds, PCIe link and replays, violations, XGMI.

Everything of the board comes from the card's first partition. Nothing here blocks: PCIe
throughput (about a second per call) and violation status (two reads 100 ms apart) are not
used; the violation time is integrated from gpu_metrics' residency accumulators instead.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from ...catalog import Tier
from ..base import Sample, Unsupported, sample
from .fast import metrics
from .gpu import AmdGpu, FieldSpec
from .values import first, number, pcie_generation

MICRO = 1e-6
KB = 1024
# gpu_metrics residency accumulators (MI300, metrics v1.6+) by the contract's `policy` label:
# PPT is the package power limit, socket thermal the die's, PROCHOT the board's throttle line.
RESIDENCIES = {"power": "ppt_residency_acc", "thermal": "socket_thm_residency_acc",
               "board_limit": "prochot_residency_acc"}
# Temperature thresholds: (sensor type, metric) -> the contract's `threshold` label.
THRESHOLDS = {"slowdown": ("HOTSPOT", "CRITICAL"), "shutdown": ("HOTSPOT", "EMERGENCY"),
              "memory_max": ("VRAM", "CRITICAL")}


def read_power_limits(gpu: AmdGpu) -> Iterable[Sample]:
    gpu.whole_board()
    cap = gpu.call("amdsmi_get_power_cap_info")  # µW (power_info's power_limit unit varies)
    for label, key in (("enforced", "power_cap"), ("default", "default_power_cap")):
        if (uw := number(cap.get(key))) is not None and uw > 0:
            yield sample("gpu_power_limit_watts", uw * MICRO, limit=label)


def read_energy(gpu: AmdGpu) -> Iterable[Sample]:
    gpu.whole_board()
    e = gpu.call("amdsmi_get_energy_count")
    ticks = first(e.get("energy_accumulator"), e.get("power"))  # "power" up to ROCm 6.3
    resolution = number(e.get("counter_resolution"))
    if ticks is None or not resolution:
        raise Unsupported("no energy counter")
    yield sample("gpu_energy_joules_total", ticks * resolution * MICRO)


def read_thresholds(gpu: AmdGpu) -> Iterable[Sample]:
    gpu.whole_board()
    t, m = gpu.smi.AmdSmiTemperatureType, gpu.smi.AmdSmiTemperatureMetric
    for label, celsius in gpu.each(
            (label, lambda s=sensor, k=metric: gpu.call("amdsmi_get_temp_metric",
                                                       getattr(t, s), getattr(m, k)))
            for label, (sensor, metric) in THRESHOLDS.items()):
        if (value := number(celsius)) is not None and value > 0:
            yield sample("gpu_temperature_threshold_celsius", value, threshold=label)


def read_pcie(gpu: AmdGpu) -> Iterable[Sample]:
    gpu.whole_board()
    link = gpu.call("amdsmi_get_pcie_info").get("pcie_metric", {})
    gen = pcie_generation(number(link.get("pcie_speed")))
    width = number(link.get("pcie_width"))
    replays = number(link.get("pcie_replay_count"))
    if gen is None and width is None and replays is None:
        raise Unsupported("no PCIe link metrics")
    if gen is not None:
        yield sample("gpu_pcie_link_generation", gen)
    if width is not None:
        yield sample("gpu_pcie_link_width_lanes", width)
    if replays is not None:
        yield sample("gpu_pcie_replay_total", replays)


def read_violations(gpu: AmdGpu) -> Iterable[Sample]:
    """Seconds each policy held the clocks down: the share of accumulator ticks spent in it,
    times the time between our readings (the tick period itself is not documented)."""
    gpu.whole_board()
    m = metrics(gpu)
    ticks = number(m.get("accumulation_counter"))
    now = {p: number(m.get(k)) for p, k in RESIDENCIES.items()}
    if ticks is None or all(v is None for v in now.values()):
        raise Unsupported("no residency accumulators (MI300 and newer)")
    t = time.monotonic()
    totals: dict[str, float] = gpu.memo.setdefault("violation_seconds", dict.fromkeys(now, 0.0))
    last: tuple[float, float, dict[str, float | None]] | None = gpu.memo.get("violation_last")
    if last is not None and ticks > last[1] and t > last[0]:
        for policy, value in now.items():
            before = last[2].get(policy)
            if value is not None and before is not None and value >= before:
                share = min(1.0, (value - before) / (ticks - last[1]))
                totals[policy] += share * (t - last[0])
    gpu.memo["violation_last"] = (t, ticks, now)
    for policy, value in now.items():
        if value is not None:
            yield sample("gpu_violation_seconds_total", totals[policy], policy=policy)


def read_xgmi(gpu: AmdGpu) -> Iterable[Sample]:
    gpu.whole_board()
    m: dict[str, Any] = metrics(gpu)
    found = False
    for direction, key in (("read", "xgmi_read_data_acc"), ("write", "xgmi_write_data_acc")):
        values = m.get(key)
        for link, kb in enumerate(values if isinstance(values, list) else []):
            if (n := number(kb)) is not None:
                found = True
                yield sample("gpu_xgmi_data_bytes_total", n * KB, link=link, direction=direction)
    if not found:
        raise Unsupported("no XGMI accumulators")


FIELDS = [
    FieldSpec("power_limits", Tier.SLOW, "power", read_power_limits),
    FieldSpec("energy", Tier.SLOW, "power", read_energy),
    FieldSpec("thresholds", Tier.SLOW, "thermal", read_thresholds),
    FieldSpec("pcie", Tier.SLOW, "pcie", read_pcie),
    FieldSpec("violations", Tier.SLOW, "clock_events", read_violations),
    FieldSpec("xgmi", Tier.SLOW, "xgmi", read_xgmi),
]
