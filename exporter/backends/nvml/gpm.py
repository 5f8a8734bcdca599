"""GPM profiling ratios (Hopper and newer), computed between consecutive fast-tier samples.

Each GPU keeps two GPM sample buffers and alternates them: every read takes a new sample and
asks NVML for the metrics between it and the previous one, so nothing ever sleeps. NVML needs
at least 100 ms between the two samples (closer ones read as zeros or NaN); a read sooner than
that returns the last values again. The buffers are C memory: `free` releases them.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ...catalog import Tier
from ..base import Sample, Unsupported, sample
from .errors import NOT_SUPPORTED_CODES
from .gpu import FieldSpec, NvmlGpu

MIN_INTERVAL = 0.1  # seconds between two GPM samples, per the NVML documentation
MIB = 1048576.0

# (pynvml metric id name, family, labels); % metrics become ratios, MiB/s become bytes/s.
METRICS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("NVML_GPM_METRIC_SM_UTIL", "gpu_sm_active_ratio", {}),
    ("NVML_GPM_METRIC_SM_OCCUPANCY", "gpu_sm_occupancy_ratio", {}),
    ("NVML_GPM_METRIC_ANY_TENSOR_UTIL", "gpu_tensor_active_ratio", {}),
    ("NVML_GPM_METRIC_DRAM_BW_UTIL", "gpu_dram_active_ratio", {}),
    ("NVML_GPM_METRIC_FP64_UTIL", "gpu_pipe_active_ratio", {"pipe": "fp64"}),
    ("NVML_GPM_METRIC_FP32_UTIL", "gpu_pipe_active_ratio", {"pipe": "fp32"}),
    ("NVML_GPM_METRIC_FP16_UTIL", "gpu_pipe_active_ratio", {"pipe": "fp16"}),
    ("NVML_GPM_METRIC_PCIE_TX_PER_SEC", "gpu_pcie_throughput_bytes_per_second",
     {"direction": "tx"}),
    ("NVML_GPM_METRIC_PCIE_RX_PER_SEC", "gpu_pcie_throughput_bytes_per_second",
     {"direction": "rx"}),
    ("NVML_GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC", "gpu_nvlink_throughput_bytes_per_second",
     {"direction": "tx"}),
    ("NVML_GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC", "gpu_nvlink_throughput_bytes_per_second",
     {"direction": "rx"}),
)


@dataclass
class GpmState:
    previous: Any
    current: Any
    taken_at: float
    last: list[Sample] = field(default_factory=list)
    absent: set[str] = field(default_factory=set)
    # The ~19 KB request struct, built once per set of wanted metrics and reused.
    request: Any = None
    wanted: tuple[tuple[str, str, dict[str, str]], ...] = ()


def _state(gpu: NvmlGpu, clock: Callable[[], float]) -> GpmState | None:
    """The GPU's GPM buffers; None right after the first sample (nothing to compare yet)."""
    nv, h = gpu.nvml, gpu.handle
    state = gpu.memo.get("gpm")
    if state is not None:
        return state
    if not nv.nvmlGpmQueryDeviceSupport(h).isSupportedDevice:
        raise Unsupported("GPM needs a Hopper or newer GPU")
    previous, current = nv.nvmlGpmSampleAlloc(), nv.nvmlGpmSampleAlloc()
    gpu.memo["gpm"] = GpmState(previous, current, clock())
    nv.nvmlGpmSampleGet(h, previous)
    return None


def read_gpm(gpu: NvmlGpu, clock: Callable[[], float] = time.monotonic) -> Iterable[Sample]:
    nv, h = gpu.nvml, gpu.handle
    state = _state(gpu, clock)
    if state is None:
        return []
    now = clock()
    if now - state.taken_at < MIN_INTERVAL:
        return list(state.last)
    nv.nvmlGpmSampleGet(h, state.current)
    wanted = tuple(m for m in METRICS if m[0] not in state.absent)
    if state.request is None or wanted != state.wanted:
        state.request, state.wanted = nv.c_nvmlGpmMetricsGet_t(), wanted
        state.request.version = nv.NVML_GPM_METRICS_GET_VERSION
        state.request.numMetrics = len(wanted)
        for i, (name, _, _) in enumerate(wanted):
            state.request.metrics[i].metricId = getattr(nv, name)
    request = state.request
    request.sample1, request.sample2 = state.previous, state.current
    nv.nvmlGpmMetricsGet(request)
    state.previous, state.current, state.taken_at = state.current, state.previous, now
    out = []
    for i, (name, family, labels) in enumerate(wanted):
        metric = request.metrics[i]
        if metric.nvmlReturn != 0:
            if metric.nvmlReturn in NOT_SUPPORTED_CODES:
                state.absent.add(name)
            continue
        unit = metric.metricInfo.unit
        # A metric id this driver does not know can come back "successful" without a name or
        # unit (seen on an H100 with driver 580 for DMMA_TENSOR_UTIL): not a reading.
        if not unit or not metric.metricInfo.shortName or math.isnan(metric.value):
            continue
        is_percent = unit in (b"%", "%")
        value = min(max(metric.value / 100, 0.0), 1.0) if is_percent else metric.value * MIB
        out.append(sample(family, value, **labels))
    state.last = out
    return out


def free(gpu: NvmlGpu) -> None:
    """Release the GPU's GPM buffers (call only when no read is in flight)."""
    state = gpu.memo.pop("gpm", None)
    if state is None:
        return
    for buffer in (state.previous, state.current):
        with contextlib.suppress(gpu.nvml.NVMLError):
            gpu.nvml.nvmlGpmSampleFree(buffer)


FIELDS = [FieldSpec("gpm", Tier.FAST, "profiling", read_gpm)]
