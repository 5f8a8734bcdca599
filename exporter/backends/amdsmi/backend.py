"""The `amdsmi` backend: AMD Instinct GPUs through ROCm's SMI library.

amdsmi is imported when this backend is chosen, never before (see loader.py for why that import
needs care), and can be injected: tests pass a fake that reproduces the library's shapes, units,
"N/A" values and error codes. It has run only against that fake: no AMD GPU was available to the
project (docs/amd.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..base import BackendEvent, BackendUnavailable, Device, Field, Sample
from . import fast, identity, ras, slow
from .errors import code_of, translate
from .events import AmdEvents
from .gpu import AmdGpu, FieldSpec
from .loader import import_amdsmi
from .values import number

if TYPE_CHECKING:
    from ...config import Settings

log = logging.getLogger(__name__)

FIELD_SPECS: tuple[FieldSpec, ...] = (*identity.FIELDS, *fast.FIELDS, *slow.FIELDS, *ras.FIELDS)

_INIT_ERRORS = {
    34: "the amdgpu kernel driver is not loaded",
    10: "no permission to open the AMD GPU devices (/dev/kfd, /dev/dri)",
    18: "amdsmi failed to initialize",
}


class AmdSmiBackend:
    name = "amdsmi"

    def __init__(self, amdsmi: Any = None) -> None:
        self._smi = amdsmi
        self._initialized = False
        self._events: AmdEvents | None = None
        self._idle = threading.Event()
        self.driver_version = self.rocm_version = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> AmdSmiBackend:
        return cls()

    @property
    def smi(self) -> Any:
        if self._smi is None:
            self._smi = import_amdsmi()
        return self._smi

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        smi = self.smi
        try:
            smi.amdsmi_init(smi.AmdSmiInitFlags.INIT_AMD_GPUS)  # GPUs only: no CPU drivers
        except smi.AmdSmiException as e:
            code = code_of(e)
            reason = _INIT_ERRORS.get(code or -1, " ".join(f"{type(e).__name__}: {e}".split()))
            raise BackendUnavailable(reason) from None
        self._initialized = True
        self.rocm_version = _rocm_version(smi)

    def stop(self) -> None:
        if not self._initialized:
            return
        if self._events is not None:
            self._events.close()
            self._events = None
        self._initialized = False
        try:
            self.smi.amdsmi_shut_down()
        except self.smi.AmdSmiException as e:
            log.warning("amdsmi_shut_down failed", extra={"error": " ".join(str(e).split())})

    def devices(self) -> Sequence[Device]:
        smi = self.smi
        try:
            handles = list(smi.amdsmi_get_processor_handles())
        except smi.AmdSmiLibraryException as e:
            raise translate(e) from None
        gpus: list[AmdGpu] = []
        seen: set[str] = set()
        for index, handle in enumerate(handles):
            try:
                gpu = self._open(index, handle)
            except smi.AmdSmiException as e:
                log.warning("AMD GPU cannot be opened",
                            extra={"gpu": index, "error": " ".join(str(e).split())})
                continue
            if gpu.uuid in seen:
                # Before ROCm 7.0 the partitions of one card share its UUID: keep ours unique.
                gpu.uuid = f"{gpu.uuid}-p{gpu.partition}"
            seen.add(gpu.uuid)
            gpus.append(gpu)
        if self._events is not None:
            self._events.close()
        self._events = AmdEvents(smi, time.time)
        self._events.open([(g.handle, g.uuid) for g in gpus])
        return [Device(g.index, g.uuid, handle=g) for g in gpus]

    def _open(self, index: int, handle: Any) -> AmdGpu:
        smi = self.smi
        uuid = str(smi.amdsmi_get_gpu_device_uuid(handle))
        bdf = str(smi.amdsmi_get_gpu_device_bdf(handle))
        gpu = AmdGpu(smi, handle, index, uuid, bdf, rocm_version=self.rocm_version)
        kfd = gpu.optional("kfd", lambda: gpu.call("amdsmi_get_gpu_kfd_info")) or {}
        partition = number(kfd.get("current_partition_id"))
        if partition is None:  # before 6.3: amdsmi puts the partition in the function digit
            partition = float(int(bdf.rsplit(".", 1)[-1], 16)) if "." in bdf else 0.0
        gpu.partition = int(partition)
        driver = gpu.optional("driver", lambda: gpu.call("amdsmi_get_gpu_driver_info")) or {}
        version = str(driver.get("driver_version", ""))
        gpu.driver_version = "" if version == "N/A" else version
        return gpu

    def fields(self, device: Device) -> Sequence[Field]:
        return [Field(spec.name, spec.tier, spec.collector, _reader(spec))
                for spec in FIELD_SPECS]

    def poll_events(self, timeout: float) -> list[BackendEvent]:
        events = self._events
        if events is None or not self._initialized:
            self._idle.wait(timeout)
            return []
        try:
            return events.poll(timeout)
        except self.smi.AmdSmiLibraryException as e:
            raise translate(e) from None


def _reader(spec: FieldSpec):  # type: ignore[no-untyped-def]
    def read(device: Device) -> list[Sample]:
        return list(spec.read(device.handle))
    return read


def _rocm_version(smi: Any) -> str:
    """ROCm's version (librocm-core), else the library's; never fails."""
    try:
        ok, text = smi.amdsmi_get_rocm_version()
        if ok:
            return str(text)
    except Exception as e:  # older amdsmi: no such call
        log.debug("amdsmi_get_rocm_version unavailable", extra={"error": str(e)})
    try:
        v = smi.amdsmi_get_lib_version()
        return f"{v['major']}.{v['minor']}.{v['release']}"
    except Exception:
        return ""
