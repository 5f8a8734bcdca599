"""RAS: ECC errors per block (correctable, uncorrectable, deferred), ECC mode, bad pages.

amdsmi counts errors per RAS block of the card (UMC is the HBM controller); the contract puts
the block in `location` and the deferred errors in `type`. Pages retired by the driver (the RAS
EEPROM's bad-page table) are `gpu_retired_pages_total{cause="double_bit"}`: amdgpu retires a
page on an uncorrectable (or poisoned) error, the table does not say more.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ...catalog import Tier
from ..base import Sample, Unsupported, sample
from .gpu import AmdGpu, FieldSpec
from .values import number

TYPES = {"corrected": "correctable_count", "uncorrected": "uncorrectable_count",
         "deferred": "deferred_count"}
UMC = "UMC"
PAGE_PENDING = 1  # amdsmi_memory_page_status_t: RESERVED 0, PENDING 1, UNRESERVABLE 2


def _counts(counts: dict[str, Any], location: str) -> Iterable[Sample]:
    for label, key in TYPES.items():
        if (n := number(counts.get(key))) is not None:
            yield sample("gpu_ecc_errors_total", n, type=label, scope="volatile",
                         location=location)


def enabled_blocks(gpu: AmdGpu) -> list[Any]:
    """The RAS blocks with ECC on, from the bitmask (the per-block feature list raises on the
    first block it cannot query, so it is not used)."""
    mask = int(gpu.call("amdsmi_get_gpu_ecc_enabled"))
    return [b for b in gpu.smi.AmdSmiGpuBlock
            if b.value and b.value & mask and b.value < (1 << 63)]


def read_ecc(gpu: AmdGpu) -> Iterable[Sample]:
    gpu.whole_board()
    yield from _counts(gpu.call("amdsmi_get_gpu_total_ecc_count"), "total")
    blocks = gpu.optional("ecc_blocks", lambda: enabled_blocks(gpu)) or []
    yield sample("gpu_ecc_mode_enabled", 1 if any(b.name == UMC for b in blocks) else 0)
    for block in blocks:
        counts = gpu.optional(f"ecc:{block.name}",
                              lambda b=block: gpu.call("amdsmi_get_gpu_ecc_count", b))
        if counts is not None:
            yield from _counts(counts, block.name.lower())


def read_bad_pages(gpu: AmdGpu) -> Iterable[Sample]:
    gpu.whole_board()
    pages = gpu.call("amdsmi_get_gpu_bad_page_info")
    if not isinstance(pages, list):
        raise Unsupported("no bad page table")
    pending = sum(1 for p in pages if isinstance(p, dict) and p.get("status") == PAGE_PENDING)
    yield sample("gpu_retired_pages_total", len(pages) - pending, cause="double_bit")
    yield sample("gpu_retired_pages_pending", 1 if pending else 0)


FIELDS = [
    FieldSpec("ecc", Tier.SLOW, "reliability", read_ecc),
    FieldSpec("bad_pages", Tier.SLOW, "reliability", read_bad_pages),
]
