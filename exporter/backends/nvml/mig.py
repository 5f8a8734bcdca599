"""MIG instances: identity (enumerated every slow cycle) and memory (fast tier).

MIG handles are invalidated when instances are destroyed, so they are re-enumerated every slow
cycle and a failing handle only drops that instance's memory until then.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ...catalog import Tier
from ..base import Sample, sample
from .errors import is_not_supported
from .gpu import FieldSpec, NvmlGpu

_PROFILE = re.compile(r"\d+g\.\d+gb(?:\+\w+)?")


@dataclass(frozen=True)
class MigInstance:
    handle: Any
    uuid: str
    gpu_instance: int
    compute_instance: int
    profile: str


def profile_of(name: str) -> str:
    """'NVIDIA H100 80GB HBM3 MIG 3g.40gb' -> '3g.40gb'; the whole name when no profile shows."""
    match = _PROFILE.search(name)
    return match.group(0) if match else name


def read_mig_devices(gpu: NvmlGpu) -> Iterable[Sample]:
    nv, h = gpu.nvml, gpu.handle
    current, _pending = nv.nvmlDeviceGetMigMode(h)
    instances: list[MigInstance] = []
    if current == nv.NVML_DEVICE_MIG_ENABLE:
        for slot in range(nv.nvmlDeviceGetMaxMigDeviceCount(h)):
            try:
                mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(h, slot)
            except nv.NVMLError as e:
                if is_not_supported(nv, e):  # an empty slot answers NotFound
                    continue
                raise
            instances.append(MigInstance(
                mig, str(nv.nvmlDeviceGetUUID(mig)), int(nv.nvmlDeviceGetGpuInstanceId(mig)),
                int(nv.nvmlDeviceGetComputeInstanceId(mig)),
                profile_of(str(nv.nvmlDeviceGetName(mig)))))
    gpu.memo["mig"] = instances
    for inst in instances:
        yield sample("gpu_mig_info", 1, mig_uuid=inst.uuid, gpu_instance=inst.gpu_instance,
                     compute_instance=inst.compute_instance, profile=inst.profile)


def read_mig_memory(gpu: NvmlGpu) -> Iterable[Sample]:
    nv = gpu.nvml
    for inst in gpu.memo.get("mig", ()):
        try:
            info = nv.nvmlDeviceGetMemoryInfo(inst.handle, version=nv.nvmlMemory_v2)
        except nv.NVMLError:
            continue  # destroyed or reconfigured: the next slow cycle re-enumerates
        yield sample("gpu_mig_memory_used_bytes", info.used, mig_uuid=inst.uuid)
        yield sample("gpu_mig_memory_total_bytes", info.total, mig_uuid=inst.uuid)


FIELDS = [
    FieldSpec("mig_devices", Tier.SLOW, "mig", read_mig_devices),
    FieldSpec("mig_memory", Tier.FAST, "mig", read_mig_memory),
]
