"""The fast tier: activity, memory, temperatures, power, clocks, processes.

Board readings (temperatures, power) come from the gpu_metrics table of the card's first
partition, one cheap sysfs read; activity, memory, clocks and processes are per handle.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ...catalog import Tier
from ..base import PROCESS_MEMORY, Sample, Unsupported, sample
from .gpu import AmdGpu, FieldSpec
from .identity import CLOCKS
from .values import first, number

# gpu_metrics temperature keys by the contract's `sensor` label (°C).
TEMPERATURES = {"edge": "temperature_edge", "hotspot": "temperature_hotspot",
                "hbm": "temperature_mem"}


def metrics(gpu: AmdGpu) -> dict[str, Any]:
    return gpu.call("amdsmi_get_gpu_metrics_info")


def read_activity(gpu: AmdGpu) -> Iterable[Sample]:
    act = gpu.call("amdsmi_get_gpu_activity")
    gfx = number(act.get("gfx_activity"))
    if gfx is None:
        gfx = _partition_busy(gpu)  # partitioned MI300: device-wide gfx_activity is retired
    values = {"gpu_utilization_ratio": gfx, "gpu_memory_activity_ratio":
              number(act.get("umc_activity")), "gpu_decoder_utilization_ratio":
              number(act.get("mm_activity"))}
    found = {k: v for k, v in values.items() if v is not None and v <= 100}
    if not found:
        raise Unsupported("no activity reading")
    for family, percent in found.items():
        yield sample(family, percent / 100)


def _partition_busy(gpu: AmdGpu) -> float | None:
    """This partition's busy percentage: the mean over its XCCs of gfx_busy_inst."""
    table = gpu.optional("xcp_stats", lambda: metrics(gpu).get("xcp_stats.gfx_busy_inst"))
    if not isinstance(table, list) or gpu.partition >= len(table):
        return None
    row = table[gpu.partition]
    xccs = [v for x in (row if isinstance(row, list) else []) if (v := number(x)) is not None]
    return sum(xccs) / len(xccs) if xccs else None


def read_memory(gpu: AmdGpu) -> Iterable[Sample]:
    vram = gpu.smi.AmdSmiMemoryType.VRAM
    total = number(gpu.call("amdsmi_get_gpu_memory_total", vram))
    used = number(gpu.call("amdsmi_get_gpu_memory_usage", vram))
    if total is None or used is None:
        raise Unsupported("no VRAM reading")
    yield sample("gpu_memory_total_bytes", total)
    yield sample("gpu_memory_used_bytes", used)
    yield sample("gpu_memory_free_bytes", max(0.0, total - used))


def read_board(gpu: AmdGpu) -> Iterable[Sample]:
    """Temperatures and socket power, once per card."""
    gpu.whole_board()
    m = metrics(gpu)
    found = False
    for sensor, key in TEMPERATURES.items():
        if (celsius := number(m.get(key))) is not None:
            found = True
            yield sample("gpu_temperature_celsius", celsius, sensor=sensor)
    # MI300 fills current_socket_power, MI200 average_socket_power (W); the other is N/A.
    watts = first(m.get("current_socket_power"), m.get("average_socket_power"))
    if watts is not None:
        found = True
        yield sample("gpu_power_watts", watts)
    if not found:
        raise Unsupported("no temperature or power in gpu_metrics")


def read_clocks(gpu: AmdGpu) -> Iterable[Sample]:
    for label, info in gpu.each(
            (label, lambda n=name: gpu.call("amdsmi_get_clock_info",
                                           getattr(gpu.smi.AmdSmiClkType, n)))
            for label, name in CLOCKS.items()):
        mhz = first(info.get("clk"), info.get("cur_clk"))  # "cur_clk" up to ROCm 6.1
        if mhz is not None:
            yield sample("gpu_clock_hertz", mhz * 1e6, clock=label)


def read_processes(gpu: AmdGpu) -> Iterable[Sample]:
    processes = gpu.call("amdsmi_get_gpu_process_list")
    yield sample("gpu_processes", len(processes))
    for p in processes:
        if isinstance(p, dict) and isinstance(p.get("pid"), int):
            used = number(p.get("mem"))  # bytes of device memory the process holds
            yield sample(PROCESS_MEMORY, -1 if used is None else used, pid=p["pid"])


FIELDS = [
    FieldSpec("activity", Tier.FAST, "utilization", read_activity),
    FieldSpec("processes", Tier.FAST, "utilization", read_processes),
    FieldSpec("memory", Tier.FAST, "memory", read_memory),
    FieldSpec("board", Tier.FAST, "thermal", read_board),
    FieldSpec("clocks", Tier.FAST, "clocks", read_clocks),
]
