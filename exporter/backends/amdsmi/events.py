"""amdsmi events: one reader thread for every GPU of the backend.

A reader (AmdSmiEventReader) is created per handle, which arms the handle's notification mask;
one `read()` then returns the events of every armed handle, so one thread polls them all. A read
with no event raises NO_DATA instead of returning an empty list.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ..base import BackendEvent
from .errors import NO_DATA, code_of

log = logging.getLogger(__name__)

# Event types we arm, and the `event` label each becomes in gpu_events_total.
EVENTS = {"THERMAL_THROTTLE": "thermal_throttle", "GPU_PRE_RESET": "gpu_pre_reset",
          "GPU_POST_RESET": "gpu_post_reset", "VMFAULT": "vm_fault"}


class AmdEvents:
    def __init__(self, smi: Any, wallclock: Callable[[], float]) -> None:
        self.smi, self.wallclock = smi, wallclock
        self.readers: list[Any] = []
        self.uuids: dict[int, str] = {}  # handle address -> uuid (c_void_p is unhashable)
        # A read in flight holds this; close() takes it, so the library is never shut down
        # under a read (the read returns within its timeout).
        self._reading = threading.Lock()

    def open(self, gpus: list[tuple[Any, str]]) -> None:
        kinds = [getattr(self.smi.AmdSmiEvtNotificationType, k) for k in EVENTS
                 if hasattr(self.smi.AmdSmiEvtNotificationType, k)]
        for handle, uuid in gpus:
            try:
                self.readers.append(self.smi.AmdSmiEventReader(handle, kinds))
                self.uuids[_address(handle)] = uuid
            except self.smi.AmdSmiException as e:  # no /dev/kfd access, unsupported: no events
                log.info("amdsmi events unavailable for a GPU",
                         extra={"uuid": uuid, "error": " ".join(str(e).split())})

    def poll(self, timeout: float) -> list[BackendEvent]:
        with self._reading:
            if not self.readers:
                return []
            try:
                raw = self.readers[0].read(max(1, int(timeout * 1000)))
            except self.smi.AmdSmiLibraryException as e:
                if code_of(e) == NO_DATA:
                    return []
                raise
        out = []
        for ev in raw:
            name = str(ev.get("event", ""))
            handle = ev.get("processor_handle")
            uuid = self.uuids.get(_address(handle))
            if uuid is None or name not in EVENTS:
                continue
            out.append(BackendEvent(uuid, EVENTS[name], None, str(ev.get("message", "")),
                                    self.wallclock()))
        return out

    def close(self) -> None:
        with self._reading:  # waits for a read in flight to return
            for reader in self.readers:
                try:
                    reader.stop()
                except Exception as e:  # the library may already be gone; nothing to free
                    log.debug("amdsmi event reader stop failed", extra={"error": str(e)})
            self.readers.clear()


def _address(handle: Any) -> int | None:
    """A handle as a dict key: 7.0 gives events a c_void_p, 6.4 the bare address."""
    return handle.value if hasattr(handle, "value") else handle

