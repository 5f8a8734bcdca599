"""Identity-tier facts (read at start and when a GPU comes back) and the node checklist."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ...catalog import Tier
from ..base import Sample, Unsupported, sample
from ..sysfs import PCI_DEVICES, numa_node_of
from .errors import is_not_supported
from .gpu import FieldSpec, NvmlGpu

CLOCKS = {"graphics": "NVML_CLOCK_GRAPHICS", "sm": "NVML_CLOCK_SM",
          "memory": "NVML_CLOCK_MEM", "video": "NVML_CLOCK_VIDEO"}


def _optional_text(gpu: NvmlGpu, fn: str) -> str:
    """Serial and VBIOS are absent on some boards: an empty label, not a missing gpu_info."""
    try:
        return str(getattr(gpu.nvml, fn)(gpu.handle))
    except gpu.nvml.NVMLError as e:
        if is_not_supported(gpu.nvml, e):
            return ""
        raise


def pci_bus_id(gpu: NvmlGpu) -> str:
    return str(gpu.nvml.nvmlDeviceGetPciInfo(gpu.handle).busId)


def read_identity(gpu: NvmlGpu) -> Iterable[Sample]:
    nv = gpu.nvml
    yield sample(
        "gpu_info", 1,
        vendor="nvidia",
        model=str(nv.nvmlDeviceGetName(gpu.handle)),
        pci_bus_id=pci_bus_id(gpu),
        serial=_optional_text(gpu, "nvmlDeviceGetSerial"),
        driver_version=gpu.driver_version,
        vbios_version=_optional_text(gpu, "nvmlDeviceGetVbiosVersion"),
        cuda_version=gpu.cuda_version,
        rocm_version="",
        compute_partition="",  # AMD's partition modes; MIG has families of its own
        memory_partition="",
    )


def read_max_clocks(gpu: NvmlGpu) -> Iterable[Sample]:
    nv = gpu.nvml
    for clock, value in gpu.each(
        (f"max_clock:{c}", lambda k=k: nv.nvmlDeviceGetMaxClockInfo(gpu.handle, getattr(nv, k)))
        for c, k in CLOCKS.items()
    ):
        yield sample("gpu_clock_max_hertz", value * 1e6, clock=clock.split(":", 1)[1])


def read_pcie_max(gpu: NvmlGpu) -> Iterable[Sample]:
    nv, h = gpu.nvml, gpu.handle
    # The GPU's own maximum, not "device and slot" (nvmlDeviceGetMaxPcieLinkGeneration), so a
    # GPU in a slower slot shows as running below its maximum.
    got = dict(gpu.each([
        ("pcie_max_gen", lambda: nv.nvmlDeviceGetGpuMaxPcieLinkGeneration(h)),
        ("pcie_max_width", lambda: nv.nvmlDeviceGetMaxPcieLinkWidth(h)),
    ]))
    if "pcie_max_gen" in got:
        yield sample("gpu_pcie_link_max_generation", got["pcie_max_gen"])
    if "pcie_max_width" in got:
        yield sample("gpu_pcie_link_max_width_lanes", got["pcie_max_width"])


def read_numa_node(gpu: NvmlGpu) -> Iterable[Sample]:
    try:
        node = int(gpu.nvml.nvmlDeviceGetNumaNodeId(gpu.handle))
    except gpu.nvml.NVMLError:
        node = _sysfs_numa_node(pci_bus_id(gpu))
    if node is None or node < 0:
        raise Unsupported("no NUMA node (single-node host or not reported)")
    yield sample("gpu_numa_node", node)


def _sysfs_numa_node(bus_id: str, root: Path = PCI_DEVICES) -> int | None:
    return numa_node_of(bus_id, root)


def read_checklist(gpu: NvmlGpu) -> Iterable[Sample]:
    nv, h = gpu.nvml, gpu.handle
    for key, value in gpu.each([
        ("persistence", lambda: nv.nvmlDeviceGetPersistenceMode(h)),
        ("ecc_mode", lambda: nv.nvmlDeviceGetEccMode(h)[0]),
        ("mig_mode", lambda: nv.nvmlDeviceGetMigMode(h)[0]),
        ("compute_mode", lambda: nv.nvmlDeviceGetComputeMode(h)),
        ("app_clocks", lambda: _applications_clocks_locked(gpu)),
    ]):
        family = {
            "persistence": "gpu_persistence_mode_enabled",
            "ecc_mode": "gpu_ecc_mode_enabled",
            "mig_mode": "gpu_mig_mode_enabled",
            "compute_mode": "gpu_compute_mode",
            "app_clocks": "gpu_applications_clocks_locked",
        }[key]
        yield sample(family, int(value))


def _applications_clocks_locked(gpu: NvmlGpu) -> int:
    """1 when application clocks differ from their defaults (someone set them)."""
    nv, h = gpu.nvml, gpu.handle
    for kind in ("NVML_CLOCK_GRAPHICS", "NVML_CLOCK_MEM"):
        clock = getattr(nv, kind)
        if nv.nvmlDeviceGetApplicationsClock(h, clock) != \
                nv.nvmlDeviceGetDefaultApplicationsClock(h, clock):
            return 1
    return 0


FIELDS = [
    FieldSpec("identity", Tier.IDENTITY, "identity", read_identity),
    FieldSpec("max_clocks", Tier.IDENTITY, "clocks", read_max_clocks),
    FieldSpec("pcie_max", Tier.IDENTITY, "pcie", read_pcie_max),
    FieldSpec("numa_node", Tier.IDENTITY, "checklist", read_numa_node),
    FieldSpec("checklist", Tier.SLOW, "checklist", read_checklist),
]
