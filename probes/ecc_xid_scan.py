"""The ECC/Xid scan: no GPU work, only what the telemetry and the event log saw in the window.

It fails when, since the window began, a GPU counted new uncorrectable ECC errors, its row
remapping failed, its SRAM errors passed the RMA threshold, or it logged an Xid whose catalog
action is a GPU reset or worse. The window is the time since the scan last ran (the daemon)
or the `--window` the admission check watches for.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

SEVERE_ACTIONS = frozenset({"reset_gpu", "reboot_node", "contact_support"})


@dataclass(frozen=True)
class Health:
    uncorrected: float | None = None  # aggregate uncorrectable ECC errors, all locations
    remap_failure: bool = False
    sram_threshold: bool = False
    xids: dict[tuple[int, str], float] = field(default_factory=dict)  # (xid, action) -> n


def health_of(samples: Iterable[object], xids: dict[tuple[int, str], float]) -> Health:
    """From one GPU's telemetry samples (family, labels, value) and its Xid counts."""
    uncorrected = None
    remap = sram = False
    for s in samples:
        family, labels, value = s.family, dict(s.labels), s.value  # type: ignore[attr-defined]
        if (family == "gpu_ecc_errors_total" and labels.get("type") == "uncorrected"
                and labels.get("scope") == "aggregate" and labels.get("location") == "total"):
            uncorrected = value
        elif family == "gpu_row_remap_failure":
            remap = value == 1
        elif family == "gpu_sram_ecc_threshold_exceeded":
            sram = value == 1
    return Health(uncorrected, remap, sram, dict(xids))


def judge(before: Health, after: Health) -> list[str]:
    """What went wrong in the window; empty when nothing did."""
    problems = []
    if before.uncorrected is not None and after.uncorrected is not None \
            and after.uncorrected > before.uncorrected:
        problems.append(f"{after.uncorrected - before.uncorrected:.0f} new uncorrectable ECC "
                        "error(s)")
    if after.remap_failure and not before.remap_failure:
        problems.append("row remapping failed")
    if after.sram_threshold and not before.sram_threshold:
        problems.append("SRAM ECC errors passed the RMA threshold")
    for (xid, action), n in sorted(after.xids.items()):
        new = n - before.xids.get((xid, action), 0)
        if new > 0 and action in SEVERE_ACTIONS:
            problems.append(f"Xid {xid} x{new:.0f} ({action})")
    return problems
