"""What an amdsmi error means for the exporter, by its status code (`err_code`).

All failures are AmdSmiLibraryException (or a subclass) carrying the C status; the names live
in `amdsmi_wrapper.AMDSMI_STATUS_*`, but the numbers are stable from ROCm 6.1 to 7.x while the
Python names are not (AmdSmiRetCode exists only in 5.x), so we decide by number.
"""

from __future__ import annotations

from ..base import DeviceLost, Unsupported

NOT_SUPPORTED = frozenset({
    2,   # NOT_SUPPORTED
    3,   # NOT_YET_IMPLEMENTED
    10,  # NO_PERM: needs root; nothing will change it while we run
    40,  # NO_DATA
})
# The handle no longer names a device (the library was re-initialized, the GPU reset or gone):
# the GPU is down until the backend enumerates again.
STALE = frozenset({31})  # NOT_FOUND
# The library or the driver went away: mark the GPUs down and re-initialize (with backoff).
LIBRARY = frozenset({
    18,  # INIT_ERROR
    32,  # NOT_INIT
    34,  # DRIVER_NOT_LOADED
    4, 5,  # FAIL_LOAD_MODULE, FAIL_LOAD_SYMBOL
})
NO_DATA = 40


class LibraryFailure(DeviceLost):
    """amdsmi as a whole stopped working; every GPU of this backend is affected."""


def code_of(error: BaseException) -> int | None:
    code = getattr(error, "err_code", None)
    return code if isinstance(code, int) else None


def translate(error: BaseException) -> Exception:
    """Map an amdsmi exception to the backend protocol's errors; others (busy, timeout,
    retry: transient) pass through and count as a failed read of this cycle."""
    code = code_of(error)
    text = f"{type(error).__name__}: {' '.join(str(error).split())}"
    if code in NOT_SUPPORTED:
        return Unsupported(text)
    if code in LIBRARY:
        return LibraryFailure(text)
    if code in STALE:
        return DeviceLost(text)
    return error if isinstance(error, Exception) else RuntimeError(text)
