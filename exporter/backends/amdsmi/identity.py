"""What a GPU is: gpu_info (with the partition modes), maximum clocks and PCIe link, NUMA node."""

from __future__ import annotations

from collections.abc import Iterable

from ...catalog import Tier
from ..base import Sample, Unsupported, sample
from ..sysfs import numa_node_of
from .gpu import AmdGpu, FieldSpec
from .values import number, pcie_generation

# amdsmi clock domains by the contract's `clock` label. AMD has no separate SM clock: the
# graphics clock (sclk) is what runs the compute units.
CLOCKS = {"graphics": "GFX", "memory": "MEM", "video": "VCLK0"}


def _text(value: object) -> str:
    text = str(value).strip() if value is not None else ""
    # All-ones serials are the library's "not supported".
    return "" if text in ("N/A", "") or set(text.lower().removeprefix("0x")) == {"f"} else text


def read_info(gpu: AmdGpu) -> Iterable[Sample]:
    asic = gpu.call("amdsmi_get_gpu_asic_info")
    vbios = gpu.optional("vbios", lambda: gpu.call("amdsmi_get_gpu_vbios_info")) or {}
    serial = _text(asic.get("asic_serial"))
    if not serial:
        board = gpu.optional("board", lambda: gpu.call("amdsmi_get_gpu_board_info")) or {}
        serial = _text(board.get("product_serial"))
    # MI200 and consumer parts answer NOT_SUPPORTED: not partitionable, an empty label.
    compute = gpu.optional("compute_partition",
                           lambda: gpu.call("amdsmi_get_gpu_compute_partition"))
    memory = gpu.optional("memory_partition", lambda: gpu.call("amdsmi_get_gpu_memory_partition"))
    yield sample("gpu_info", 1, vendor="amd", model=_text(asic.get("market_name")),
                 pci_bus_id=gpu.bdf, serial=serial, driver_version=gpu.driver_version,
                 vbios_version=_text(vbios.get("version")), cuda_version="",
                 rocm_version=gpu.rocm_version, compute_partition=_text(compute),
                 memory_partition=_text(memory))


def read_max_clocks(gpu: AmdGpu) -> Iterable[Sample]:
    for label, domain in gpu.each([(k, _clock(gpu, v)) for k, v in CLOCKS.items()]):
        top = number(domain.get("max_clk"))
        if top:
            yield sample("gpu_clock_max_hertz", top * 1e6, clock=label)


def _clock(gpu: AmdGpu, name: str):  # type: ignore[no-untyped-def]
    return lambda: gpu.call("amdsmi_get_clock_info", getattr(gpu.smi.AmdSmiClkType, name))


def read_pcie_max(gpu: AmdGpu) -> Iterable[Sample]:
    static = gpu.call("amdsmi_get_pcie_info").get("pcie_static", {})
    gen = number(static.get("pcie_interface_version")) or pcie_generation(
        number(static.get("max_pcie_speed")))
    width = number(static.get("max_pcie_width"))
    if gen is None and width is None:
        raise Unsupported("no static PCIe information")
    if gen is not None:
        yield sample("gpu_pcie_link_max_generation", gen)
    if width is not None:
        yield sample("gpu_pcie_link_max_width_lanes", width)


def read_numa_node(gpu: AmdGpu) -> Iterable[Sample]:
    node = numa_node_of(gpu.bdf)
    if node is None or node < 0:
        raise Unsupported("no NUMA node (single-node host or not reported)")
    yield sample("gpu_numa_node", node)


FIELDS = [
    FieldSpec("identity", Tier.IDENTITY, "identity", read_info),
    FieldSpec("max_clocks", Tier.IDENTITY, "clocks", read_max_clocks),
    FieldSpec("pcie_max", Tier.IDENTITY, "pcie", read_pcie_max),
    FieldSpec("numa_node", Tier.IDENTITY, "checklist", read_numa_node),
]
