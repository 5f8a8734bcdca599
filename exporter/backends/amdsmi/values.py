"""amdsmi's values made honest: "N/A", sentinels and units.

Most getters turn an unsupported value into the string "N/A", but not all of them, and not for
every field width (power_info passes UINT32_MAX through in 7.0): every value goes through
`number()`, which also rejects the all-ones sentinel of each width.
"""

from __future__ import annotations

from typing import Any

SENTINELS = frozenset({0xFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF})
MB = 1024 * 1024
# PCIe transfer rate (MT/s, as amdsmi reports speeds) -> generation.
PCIE_GENERATIONS = {2500: 1, 5000: 2, 8000: 3, 16000: 4, 32000: 5, 64000: 6}


def number(value: Any, *, narrow: bool = False) -> float | None:
    """A usable number, or None for "N/A", None, strings and sentinels.

    `narrow` also rejects 0xFF (u8 fields); otherwise 255 is a legitimate value (a count, a
    temperature never, but a clock or a lane count could be)."""
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, int | float):
        return None
    if isinstance(value, int) and value in SENTINELS and (narrow or value != 0xFF):
        return None
    return float(value)


def first(*values: Any) -> float | None:
    """The first usable number: amdsmi renames keys across releases."""
    for v in values:
        if (n := number(v)) is not None:
            return n
    return None


def pcie_generation(mt_per_s: float | None) -> int | None:
    if mt_per_s is None:
        return None
    return PCIE_GENERATIONS.get(int(mt_per_s))
