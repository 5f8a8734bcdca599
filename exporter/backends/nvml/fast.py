"""Fast-tier fields: cheap calls (microseconds) read every few seconds."""

from __future__ import annotations

from collections.abc import Iterable

from ...catalog import Tier
from ..base import PROCESS_MEMORY, Sample, Unsupported, sample
from .errors import is_not_supported
from .fieldvalues import field_values
from .gpu import FieldSpec, NvmlGpu
from .identity import CLOCKS

# Clock-event (throttle) reason bits, as nvml.h defines them, by the contract's label.
CLOCK_EVENT_BITS = {
    "gpu_idle": 0x1,
    "applications_clocks_setting": 0x2,
    "sw_power_cap": 0x4,
    "hw_slowdown": 0x8,
    "sync_boost": 0x10,
    "sw_thermal_slowdown": 0x20,
    "hw_thermal_slowdown": 0x40,
    "hw_power_brake_slowdown": 0x80,
    "display_clock_setting": 0x100,
}
NVML_PSTATE_UNKNOWN = 32


def read_utilization(gpu: NvmlGpu) -> Iterable[Sample]:
    rates = gpu.nvml.nvmlDeviceGetUtilizationRates(gpu.handle)
    yield sample("gpu_utilization_ratio", rates.gpu / 100)
    yield sample("gpu_memory_activity_ratio", rates.memory / 100)


def read_codecs(gpu: NvmlGpu) -> Iterable[Sample]:
    nv, h = gpu.nvml, gpu.handle
    for key, (util, _period_us) in gpu.each([
        ("encoder", lambda: nv.nvmlDeviceGetEncoderUtilization(h)),
        ("decoder", lambda: nv.nvmlDeviceGetDecoderUtilization(h)),
    ]):
        yield sample(f"gpu_{key}_utilization_ratio", util / 100)


def read_pstate(gpu: NvmlGpu) -> Iterable[Sample]:
    state = gpu.nvml.nvmlDeviceGetPerformanceState(gpu.handle)
    if state == NVML_PSTATE_UNKNOWN:
        raise Unsupported("performance state unknown")
    yield sample("gpu_performance_state", state)


def read_processes(gpu: NvmlGpu) -> Iterable[Sample]:
    processes = gpu.compat(("nvmlDeviceGetComputeRunningProcesses",
                            "nvmlDeviceGetComputeRunningProcesses_v2"), gpu.handle)
    yield sample("gpu_processes", len(processes))
    for p in processes:
        # usedGpuMemory is None where the driver cannot tell (NVML_VALUE_NOT_AVAILABLE).
        used = getattr(p, "usedGpuMemory", None)
        yield sample(PROCESS_MEMORY, -1 if used is None else used, pid=p.pid)


def read_memory(gpu: NvmlGpu) -> Iterable[Sample]:
    nv = gpu.nvml
    # v2 separates memory reserved by the driver from `used` (nvidia-smi's numbers); drivers
    # older than R510 lack it, and then `used` includes the reserved part.
    if gpu.memo.get("memory_v1"):
        info, reserved = nv.nvmlDeviceGetMemoryInfo(gpu.handle), None
    else:
        try:
            info = nv.nvmlDeviceGetMemoryInfo(gpu.handle, version=nv.nvmlMemory_v2)
            reserved = info.reserved
        except nv.NVMLError as e:
            if not is_not_supported(nv, e):
                raise
            gpu.memo["memory_v1"] = True
            info, reserved = nv.nvmlDeviceGetMemoryInfo(gpu.handle), None
    yield sample("gpu_memory_total_bytes", info.total)
    yield sample("gpu_memory_used_bytes", info.used)
    yield sample("gpu_memory_free_bytes", info.free)
    if reserved is not None:
        yield sample("gpu_memory_reserved_bytes", reserved)


def read_temperature(gpu: NvmlGpu) -> Iterable[Sample]:
    nv = gpu.nvml
    yield sample("gpu_temperature_celsius",
                 nv.nvmlDeviceGetTemperature(gpu.handle, nv.NVML_TEMPERATURE_GPU), sensor="gpu")


def read_memory_temperature(gpu: NvmlGpu) -> Iterable[Sample]:
    fid = gpu.nvml.NVML_FI_DEV_MEMORY_TEMP
    values = field_values(gpu, [fid])
    if fid in values and values[fid] > 0:  # 0 means no HBM sensor on some boards
        yield sample("gpu_temperature_celsius", values[fid], sensor="memory")


def read_power(gpu: NvmlGpu) -> Iterable[Sample]:
    yield sample("gpu_power_watts", gpu.nvml.nvmlDeviceGetPowerUsage(gpu.handle) / 1000)


def read_fans(gpu: NvmlGpu) -> Iterable[Sample]:
    nv, h = gpu.nvml, gpu.handle
    count = nv.nvmlDeviceGetNumFans(h)
    if count == 0:
        raise Unsupported("no fans (passively cooled board)")
    for key, speed in gpu.each(
        (str(i), lambda i=i: nv.nvmlDeviceGetFanSpeed_v2(h, i)) for i in range(count)
    ):
        yield sample("gpu_fan_speed_ratio", speed / 100, fan=key)


def read_clocks(gpu: NvmlGpu) -> Iterable[Sample]:
    nv, h = gpu.nvml, gpu.handle
    for key, mhz in gpu.each(
        (f"clock:{c}", lambda k=k: nv.nvmlDeviceGetClockInfo(h, getattr(nv, k)))
        for c, k in CLOCKS.items()
    ):
        yield sample("gpu_clock_hertz", mhz * 1e6, clock=key.split(":", 1)[1])


def read_clock_events(gpu: NvmlGpu) -> Iterable[Sample]:
    # The "ClocksEvent" names arrived in R535; older drivers have the "ClocksThrottle" ones.
    h = gpu.handle
    if "clock_events_supported" not in gpu.memo:
        gpu.memo["clock_events_supported"] = gpu.compat(
            ("nvmlDeviceGetSupportedClocksEventReasons",
             "nvmlDeviceGetSupportedClocksThrottleReasons"), h)
    supported = gpu.memo["clock_events_supported"]
    active = gpu.compat(("nvmlDeviceGetCurrentClocksEventReasons",
                         "nvmlDeviceGetCurrentClocksThrottleReasons"), h)
    for reason, bit in CLOCK_EVENT_BITS.items():
        if supported & bit:
            yield sample("gpu_clock_event_active", 1 if active & bit else 0, reason=reason)


FIELDS = [
    FieldSpec("utilization", Tier.FAST, "utilization", read_utilization),
    FieldSpec("codecs", Tier.FAST, "utilization", read_codecs),
    FieldSpec("performance_state", Tier.FAST, "utilization", read_pstate),
    FieldSpec("processes", Tier.FAST, "utilization", read_processes),
    FieldSpec("memory_info", Tier.FAST, "memory", read_memory),
    FieldSpec("temperature", Tier.FAST, "thermal", read_temperature),
    FieldSpec("memory_temperature", Tier.FAST, "thermal", read_memory_temperature),
    FieldSpec("power", Tier.FAST, "power", read_power),
    FieldSpec("fans", Tier.FAST, "thermal", read_fans),
    FieldSpec("clocks", Tier.FAST, "clocks", read_clocks),
    FieldSpec("clock_events", Tier.FAST, "clock_events", read_clock_events),
]
