"""NVML events: Xid critical errors and other device events, read by the events thread.

One event set for all GPUs of the backend. `poll` waits at most half a second inside
nvmlEventSetWait while holding `lock`; `close` takes the same lock, so NVML is never shut down
(and the set never freed) while the events thread is inside the library.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from typing import Any

from ..base import BackendEvent
from .errors import code_of

log = logging.getLogger(__name__)

NVML_ERROR_TIMEOUT = 10
WAIT_MS = 500
# What we register for and how each is named in gpu_events_total (Xids are counted as Xids).
EVENTS = {
    "nvmlEventTypeXidCriticalError": "xid",
    "nvmlEventTypeDoubleBitEccError": "ecc_double_bit",
    "nvmlEventTypePowerSourceChange": "power_source_change",
    "nvmlEventMigConfigChange": "mig_config_change",
    "nvmlEventTypeDramRetirementEvent": "dram_retirement",
    "nvmlEventTypeDramRetirementFailure": "dram_retirement_failure",
    "nvmlEventTypeGpuUnavailableError": "gpu_unavailable",
    "nvmlEventTypeGpuRecoveryAction": "recovery_action",
}


class NvmlEvents:
    def __init__(self, nvml: Any, wallclock: Any) -> None:
        self.nvml, self.wallclock = nvml, wallclock
        self.lock = threading.Lock()
        # Set first by close(): the events thread stops entering NVML, so close() gets the
        # lock within one wait (a lock alone is not fair: the poller could retake it forever).
        self.closing = threading.Event()
        self.event_set: Any = None
        self.uuids: dict[int, str] = {}  # address of a registered handle -> uuid
        self.names = {getattr(nvml, k): v for k, v in EVENTS.items() if hasattr(nvml, k)}

    def open(self, gpus: list[tuple[Any, str]]) -> None:
        """Register every GPU for the events it supports (called with NVML initialized)."""
        nv = self.nvml
        with self.lock:
            try:
                self.event_set = nv.nvmlEventSetCreate()
            except nv.NVMLError as e:
                log.info("NVML events unavailable", extra={"error": str(e)})
                return
            wanted = 0
            for bit in self.names:
                wanted |= bit
            for handle, uuid in gpus:
                try:
                    mask = nv.nvmlDeviceGetSupportedEventTypes(handle) & wanted
                    if mask:
                        nv.nvmlDeviceRegisterEvents(handle, mask, self.event_set)
                        self.uuids[_address(handle)] = uuid
                except nv.NVMLError as e:
                    log.info("GPU not registered for NVML events",
                             extra={"uuid": uuid, "error": str(e)})

    def poll(self, timeout: float) -> list[BackendEvent]:
        nv = self.nvml
        with self.lock:
            if self.closing.is_set() or self.event_set is None or not self.uuids:
                return []
            try:
                data = nv.nvmlEventSetWait_v2(self.event_set, int(min(timeout, WAIT_MS / 1000)
                                                                   * 1000))
            except nv.NVMLError as e:
                if code_of(e) == NVML_ERROR_TIMEOUT:
                    return []
                raise
        kind = self.names.get(data.eventType, f"event_{data.eventType:#x}")
        uuid = self.uuids.get(_address(data.device), "")
        code = int(data.eventData) if kind == "xid" else None
        return [BackendEvent(uuid, kind, code, f"NVML event {kind}", self.wallclock())]

    def close(self) -> None:
        self.closing.set()
        with self.lock:  # waits for a poll in flight: never free the set under it
            if self.event_set is not None:
                with contextlib.suppress(self.nvml.NVMLError):
                    self.nvml.nvmlEventSetFree(self.event_set)
            self.event_set = None
            self.uuids.clear()


def _address(handle: Any) -> int:
    """A handle's identity: the device pointer NVML hands out (the event carries it back)."""
    try:
        return ctypes.cast(handle, ctypes.c_void_p).value or 0
    except (TypeError, ctypes.ArgumentError):
        return id(handle)
