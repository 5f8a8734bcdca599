"""The `nvml` backend: NVIDIA GPUs through pynvml (the nvidia-ml-py distribution).

pynvml is imported when this backend is chosen, never before, and can be injected (tests pass
a fake built from responses recorded on a real GPU). Every field is translated at one place:
NotSupported-like answers become `Unsupported` (remembered by the sampler), GpuIsLost-like
answers `DeviceLost`, and library-wide failures `LibraryFailure`, after which the sampler
re-initializes the backend once no call is in flight.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..base import BackendEvent, BackendUnavailable, Device, DeviceLost, Field, Sample
from . import fast, gpm, identity, links, memory_errors, mig, slow
from .errors import LOST_CODES, code_of, translate
from .events import NvmlEvents
from .gpu import FieldSpec, NvmlGpu

if TYPE_CHECKING:
    from ...config import Settings

log = logging.getLogger(__name__)

FIELD_SPECS: tuple[FieldSpec, ...] = (
    *identity.FIELDS, *fast.FIELDS, *gpm.FIELDS, *slow.FIELDS, *links.FIELDS,
    *memory_errors.FIELDS, *mig.FIELDS,
)

_INIT_ERRORS = {
    9: "the NVIDIA kernel driver is not loaded",
    12: "libnvidia-ml.so.1 not found: no NVIDIA driver on this host (or not mounted into "
        "the container)",
    18: "the NVIDIA driver was upgraded without reloading its kernel module: reboot or "
        "reload the driver",
    28: "no supported NVIDIA GPU found",
    4: "no permission to open the NVIDIA devices (/dev/nvidia*)",
}


def cuda_version(value: int) -> str:
    """NVML's 13000 -> '13.0', as nvidia-smi prints it."""
    return f"{value // 1000}.{(value % 1000) // 10}"


class NvmlBackend:
    name = "nvml"

    def __init__(self, nvml: Any = None) -> None:
        self._nvml = nvml
        self._initialized = False
        self._gpus: dict[str, NvmlGpu] = {}
        self._events: NvmlEvents | None = None
        self._idle = threading.Event()  # poll_events waits on this while there is no set

    @classmethod
    def from_settings(cls, settings: Settings) -> NvmlBackend:
        return cls()

    @property
    def nvml(self) -> Any:
        if self._nvml is None:
            try:
                import pynvml
            except ImportError:
                raise BackendUnavailable(
                    "nvidia-ml-py is not installed: pip install 'gpu-fleet-exporter[nvidia]'"
                ) from None
            self._nvml = pynvml
        return self._nvml

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        nv = self.nvml
        try:
            nv.nvmlInit()
        except nv.NVMLError as e:
            reason = _INIT_ERRORS.get(code_of(e) or -1, f"{type(e).__name__}: {e}")
            raise BackendUnavailable(reason) from None
        except OSError as e:  # a broken libnvidia-ml.so can fail to load at all
            raise BackendUnavailable(f"cannot load libnvidia-ml: {e}") from None
        self._initialized = True
        try:
            self.driver_version = str(nv.nvmlSystemGetDriverVersion())
            self.cuda_version = cuda_version(nv.nvmlSystemGetCudaDriverVersion_v2())
        except nv.NVMLError as e:
            self.stop()
            raise BackendUnavailable(f"NVML answered {type(e).__name__}: {e}") from None

    def stop(self) -> None:
        """Free GPM buffers and shut NVML down; the caller guarantees no call is in flight."""
        if not self._initialized:
            return
        if self._events is not None:
            self._events.close()  # waits for the events thread to leave NVML
            self._events = None
        for gpu in self._gpus.values():
            gpm.free(gpu)
        self._gpus.clear()
        self._initialized = False
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError as e:
            log.warning("nvmlShutdown failed", extra={"error": f"{type(e).__name__}: {e}"})

    def devices(self) -> Sequence[Device]:
        """Enumerate by index; a GPU that cannot be opened is skipped (and logged), the others
        are still served."""
        nv = self.nvml
        try:
            count = nv.nvmlDeviceGetCount()
        except nv.NVMLError as e:
            raise translate(e) from None
        devices = []
        for index in range(count):
            try:
                handle = nv.nvmlDeviceGetHandleByIndex(index)
                uuid = str(nv.nvmlDeviceGetUUID(handle))
            except nv.NVMLError as e:
                level = logging.WARNING if code_of(e) in LOST_CODES else logging.INFO
                log.log(level, "GPU cannot be opened",
                        extra={"gpu": index, "error": f"{type(e).__name__}: {e}"})
                continue
            gpu = NvmlGpu(nv, handle, index, uuid, self.driver_version, self.cuda_version)
            self._gpus[uuid] = gpu
            devices.append(Device(index, uuid, handle=gpu))
        if self._events is not None:
            self._events.close()
        self._events = NvmlEvents(nv, time.time)
        self._events.open([(g.handle, g.uuid) for g in self._gpus.values()])
        return devices

    def fields(self, device: Device) -> Sequence[Field]:
        return [Field(spec.name, spec.tier, spec.collector, self._reader(spec))
                for spec in FIELD_SPECS]

    def poll_events(self, timeout: float) -> list[BackendEvent]:
        """Xid and other device events; waits at most `timeout` (0.5 s inside NVML)."""
        events = self._events
        if events is None or events.closing.is_set() or not self._initialized:
            self._idle.wait(timeout)  # released or not started: nothing to wait on in NVML
            return []
        try:
            return events.poll(timeout)
        except self.nvml.NVMLError as e:
            raise translate(e) from None

    def _reader(self, spec: FieldSpec):
        nv = self.nvml

        def read(device: Device) -> Iterable[Sample]:
            gpu: NvmlGpu = device.handle
            try:
                return list(spec.read(gpu))
            except nv.NVMLError as e:
                raise translate(e) from None

        return read


__all__ = ["DeviceLost", "NvmlBackend"]
