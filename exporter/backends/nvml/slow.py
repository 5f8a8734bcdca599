"""Slow-tier fields: calls that cost milliseconds (energy ~3 ms, field batches, config reads)."""

from __future__ import annotations

from collections.abc import Iterable

from ...catalog import Tier
from ..base import Sample, sample
from .fieldvalues import field_values
from .gpu import FieldSpec, NvmlGpu

THRESHOLDS = {
    "shutdown": "NVML_TEMPERATURE_THRESHOLD_SHUTDOWN",
    "slowdown": "NVML_TEMPERATURE_THRESHOLD_SLOWDOWN",
    "max_operating": "NVML_TEMPERATURE_THRESHOLD_GPU_MAX",
    "memory_max": "NVML_TEMPERATURE_THRESHOLD_MEM_MAX",
}

# Cumulative nanosecond counters, read as field values in one call. The perf-policy ids 74-81
# are the counters nvmlDeviceGetViolationStatus returns (deprecated in R580), one call for all.
VIOLATION_FIELDS = {
    "power": 74, "thermal": 75, "sync_boost": 76, "board_limit": 77, "low_utilization": 78,
    "reliability": 79, "total_app_clocks": 80, "total_base_clocks": 81,
}
# Per-reason clock-event counters. R575 numbered the thermal and power-brake ones 251-253;
# R580 moved them to 269-271 (251-268 are power-smoothing fields there). Never send 251-253 to
# a newer driver expecting these counters.
CLOCK_EVENT_FIELDS_R580 = {"sw_thermal_slowdown": 269, "hw_thermal_slowdown": 270,
                           "hw_power_brake_slowdown": 271}
CLOCK_EVENT_FIELDS_R575 = {"sw_thermal_slowdown": 251, "hw_thermal_slowdown": 252,
                           "hw_power_brake_slowdown": 253}
NS = 1e-9


def clock_event_fields(driver_major: int) -> dict[str, int]:
    fields = {"sw_power_cap": 74, "sync_boost": 76}
    if driver_major >= 580:
        fields |= CLOCK_EVENT_FIELDS_R580
    elif driver_major == 575:
        fields |= CLOCK_EVENT_FIELDS_R575
    return fields


def read_thresholds(gpu: NvmlGpu) -> Iterable[Sample]:
    nv, h = gpu.nvml, gpu.handle
    for key, celsius in gpu.each(
        (f"threshold:{t}", lambda k=k: nv.nvmlDeviceGetTemperatureThreshold(h, getattr(nv, k)))
        for t, k in THRESHOLDS.items()
    ):
        if celsius > 0:
            yield sample("gpu_temperature_threshold_celsius", celsius,
                         threshold=key.split(":", 1)[1])


def read_power_limits(gpu: NvmlGpu) -> Iterable[Sample]:
    nv, h = gpu.nvml, gpu.handle
    for key, mw in gpu.each([
        ("enforced", lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h)),
        ("default", lambda: nv.nvmlDeviceGetPowerManagementDefaultLimit(h)),
    ]):
        yield sample("gpu_power_limit_watts", mw / 1000, limit=key)


def read_energy(gpu: NvmlGpu) -> Iterable[Sample]:
    # Millijoules since the driver loaded; it restarts at a driver reload, which Prometheus'
    # rate() treats as a counter reset.
    yield sample("gpu_energy_joules_total",
                 gpu.nvml.nvmlDeviceGetTotalEnergyConsumption(gpu.handle) / 1000)


def read_clock_event_counters(gpu: NvmlGpu) -> Iterable[Sample]:
    events = clock_event_fields(gpu.driver_major)
    values = field_values(gpu, sorted(set(events.values()) | set(VIOLATION_FIELDS.values())))
    for reason, fid in events.items():
        if fid in values:
            yield sample("gpu_clock_event_seconds_total", values[fid] * NS, reason=reason)
    for policy, fid in VIOLATION_FIELDS.items():
        if fid in values:
            yield sample("gpu_violation_seconds_total", values[fid] * NS, policy=policy)


def read_recovery_action(gpu: NvmlGpu) -> Iterable[Sample]:
    fid = gpu.nvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION
    values = field_values(gpu, [fid])
    if fid in values:
        yield sample("gpu_recovery_action", values[fid])


def read_pcie_link(gpu: NvmlGpu) -> Iterable[Sample]:
    nv, h = gpu.nvml, gpu.handle
    for key, value in gpu.each([
        ("gen", lambda: nv.nvmlDeviceGetCurrPcieLinkGeneration(h)),
        ("width", lambda: nv.nvmlDeviceGetCurrPcieLinkWidth(h)),
    ]):
        family = "gpu_pcie_link_generation" if key == "gen" else "gpu_pcie_link_width_lanes"
        yield sample(family, value)


def read_pcie_replay(gpu: NvmlGpu) -> Iterable[Sample]:
    yield sample("gpu_pcie_replay_total", gpu.nvml.nvmlDeviceGetPcieReplayCounter(gpu.handle))


FIELDS = [
    FieldSpec("temperature_thresholds", Tier.SLOW, "thermal", read_thresholds),
    FieldSpec("power_limits", Tier.SLOW, "power", read_power_limits),
    FieldSpec("energy", Tier.SLOW, "power", read_energy),
    FieldSpec("clock_event_counters", Tier.SLOW, "clock_events", read_clock_event_counters),
    FieldSpec("recovery_action", Tier.SLOW, "reliability", read_recovery_action),
    FieldSpec("pcie_link", Tier.SLOW, "pcie", read_pcie_link),
    FieldSpec("pcie_replay", Tier.SLOW, "pcie", read_pcie_replay),
]
