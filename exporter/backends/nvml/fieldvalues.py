"""nvmlDeviceGetFieldValues: many counters in one driver call, each with its own status.

The call raises only when it fails as a whole; each entry carries its own return code and a
value whose union member is named by its valueType. An id this driver does not know answers
InvalidArgument or NotSupported per entry: it is remembered and not asked again.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..base import Unsupported
from .errors import LIBRARY_CODES, LOST_CODES, NOT_SUPPORTED_CODES
from .gpu import NvmlGpu

_UNION_MEMBER = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal",
                 6: "usVal"}


def field_values(gpu: NvmlGpu, ids: Sequence[int]) -> dict[int, float]:
    """Values of the supported ids (raw NVML units); raise Unsupported when none is."""
    wanted = [i for i in ids if f"fv:{i}" not in gpu.absent]
    if not wanted:
        raise Unsupported("none of these field ids is supported")
    out: dict[int, float] = {}
    for entry in gpu.nvml.nvmlDeviceGetFieldValues(gpu.handle, wanted):
        if entry.nvmlReturn != 0:
            if entry.nvmlReturn in LOST_CODES or entry.nvmlReturn in LIBRARY_CODES:
                raise gpu.nvml.NVMLError(entry.nvmlReturn)  # translated like any call
            if entry.nvmlReturn in NOT_SUPPORTED_CODES:
                gpu.absent.add(f"fv:{entry.fieldId}")
            continue
        member = _UNION_MEMBER.get(entry.valueType)
        if member is None:
            continue
        out[int(entry.fieldId)] = float(getattr(entry.value, member))
    if not out and all(f"fv:{i}" in gpu.absent for i in wanted):
        raise Unsupported("none of these field ids is supported")
    return out
