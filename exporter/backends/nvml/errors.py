"""What an NVML error means for the exporter: absent, GPU lost, library gone, or transient.

pynvml raises one NVMLError subclass per return code; we decide by the numeric code (`e.value`),
which is stable across pynvml releases, rather than by class names that come and go.
"""

from __future__ import annotations

from typing import Any

from ..base import DeviceLost, Unsupported

# "This GPU or driver does not have it": the series is absent and the field is not asked again.
# InvalidArgument is here because NVML answers it for a sensor, fan, link or field id this
# driver does not know (see docs/nvml.md); NoPermission because nothing will change it.
NOT_SUPPORTED_CODES = frozenset({
    2,   # INVALID_ARGUMENT
    3,   # NOT_SUPPORTED
    4,   # NO_PERMISSION
    6,   # NOT_FOUND
    13,  # FUNCTION_NOT_FOUND: symbol missing in an older driver
    22,  # VGPU_ECC_NOT_SUPPORTED
    25,  # ARGUMENT_VERSION_MISMATCH: struct version unknown to this driver
    26,  # DEPRECATED
})
# The GPU cannot be read: mark it down and re-initialize NVML (with backoff).
LOST_CODES = frozenset({
    15,   # GPU_IS_LOST: fell off the bus
    16,   # RESET_REQUIRED
    17,   # OPERATING_SYSTEM: blocked by the OS / cgroups
    11,   # IRQ_ISSUE
    999,  # UNKNOWN: what a vanished device usually answers
})
# The library itself is unusable until re-initialized (driver unloaded, upgraded, shut down).
LIBRARY_CODES = frozenset({
    1,   # UNINITIALIZED
    9,   # DRIVER_NOT_LOADED
    12,  # LIBRARY_NOT_FOUND
    18,  # LIB_RM_VERSION_MISMATCH: the driver was upgraded under us
})


class LibraryFailure(DeviceLost):
    """NVML as a whole stopped working; every GPU of this backend is affected."""


def code_of(error: BaseException) -> int | None:
    value = getattr(error, "value", None)
    return value if isinstance(value, int) else None


def translate(error: BaseException) -> Exception:
    """Map an NVMLError to the backend protocol's errors; other errors pass through."""
    code = code_of(error)
    text = f"{type(error).__name__}: {error}"
    if code in NOT_SUPPORTED_CODES:
        return Unsupported(text)
    if code in LIBRARY_CODES:
        return LibraryFailure(text)
    if code in LOST_CODES:
        return DeviceLost(text)
    return error if isinstance(error, Exception) else RuntimeError(text)


def is_not_supported(nvml: Any, error: BaseException) -> bool:
    return isinstance(error, nvml.NVMLError) and code_of(error) in NOT_SUPPORTED_CODES
