"""The CUDA side of the probe child: pin the device, cap memory, run one probe, free it all.

Only `probes.child` imports this module, and only in the child process: importing it pulls in
CuPy. `run` checks that the GPU the child was given (`CUDA_VISIBLE_DEVICES=<uuid>`) is the one
it was asked to measure, because CUDA's device order need not match NVML's index; then it calls
the probe module's `measure(ctx)`.

Start and measurement are reported apart: `start_seconds` is everything before the probe's
timed part (CuPy import, context, kernel compilation, warm-up), `measure_seconds` the timed part.
A probe marks its timed part with `with ctx.timed(): ...` and ends it with a synchronisation.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from .registry import ProbeSpec
from .result import Measurement


@dataclass
class ProbeContext:
    cupy: ModuleType
    devices: tuple[int, ...]  # CUDA ordinals: (0,) or (0, 1) for a pair probe
    params: dict[str, Any]
    memory_bytes: int
    uuid: str
    peer_uuid: str | None = None
    numa_node: int | None = None  # host NUMA node of the GPU, where the system says
    ready_at: float | None = None  # perf_counter() when the first timed segment began
    measure_seconds: float = 0.0  # the timed segments' wall time, summed
    setup_between: float = 0.0  # set-up between timed segments: counted as start time
    notes: list[str] = field(default_factory=list)
    _last_end: float | None = None

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        """A timed segment of the probe: everything outside the segments is start time. The
        body must end with a synchronisation, so that the wall time covers the device work."""
        now = time.perf_counter()
        if self.ready_at is None:
            self.ready_at = now
        elif self._last_end is not None:
            self.setup_between += now - self._last_end
        yield
        self._last_end = time.perf_counter()
        self.measure_seconds += self._last_end - now


def run(spec: ProbeSpec, uuid: str, peer_uuid: str | None, params: dict[str, Any],
        memory_bytes: int, started: float) -> Measurement:
    import cupy

    devices = (0, 1) if spec.pair else (0,)
    wanted = [uuid] + ([peer_uuid] if spec.pair else [])
    if spec.pair and not peer_uuid:
        raise RuntimeError(f"{spec.name} measures a GPU pair: --peer-uuid is required")
    count = cupy.cuda.runtime.getDeviceCount()
    if count < len(devices):
        raise RuntimeError(f"{spec.name} needs {len(devices)} CUDA devices "
                           f"({', '.join(w or '?' for w in wanted)}); CUDA sees {count}")
    for dev, want in zip(devices, wanted, strict=True):
        got = device_uuid(cupy, dev)
        if _uuid_key(got) != _uuid_key(want or ""):
            raise RuntimeError(f"CUDA device {dev} is {got}, not the requested {want} "
                               "(CUDA_VISIBLE_DEVICES must name the GPU by UUID)")

    pool = cupy.get_default_memory_pool()
    for dev in devices:
        with cupy.cuda.Device(dev):
            free, _total = cupy.cuda.runtime.memGetInfo()  # creates the context
            if free < memory_bytes:
                return Measurement(
                    skipped=f"GPU {wanted[dev]} has {free} bytes free, the probe needs "
                            f"{memory_bytes}",
                    start_seconds=time.perf_counter() - started)
            # The cap is per device: a probe that asks for more fails with OutOfMemoryError
            # (an error for the runner) instead of crowding a customer's memory.
            pool.set_limit(size=memory_bytes)

    ctx = ProbeContext(cupy=cupy, devices=devices, params=params, memory_bytes=memory_bytes,
                       uuid=uuid, peer_uuid=peer_uuid, numa_node=_numa_node(cupy, 0))
    try:
        module = importlib.import_module(spec.module)
        m: Measurement = module.measure(ctx)
    finally:
        _free_all(cupy, devices)
    end = time.perf_counter()
    ready = ctx.ready_at if ctx.ready_at is not None else end
    m.start_seconds = ready - started + ctx.setup_between
    m.measure_seconds = ctx.measure_seconds
    if ctx.notes:
        m.detail = "; ".join(filter(None, [m.detail, *ctx.notes]))
    return m


def device_uuid(cupy: ModuleType, ordinal: int) -> str:
    """The CUDA device's UUID as NVML writes it ("GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx")."""
    raw = cupy.cuda.runtime.getDeviceProperties(ordinal)["uuid"]
    data = bytes(b & 0xFF for b in raw) if not isinstance(raw, bytes | bytearray) else bytes(raw)
    if len(data) != 16:
        # CuPy hands back cudaUUID_t's char[16] as a C string: a UUID with a zero byte comes
        # back short. Ask the driver, which fills a 16-byte buffer.
        data = _driver_uuid(ordinal)
    h = data.hex()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _driver_uuid(ordinal: int) -> bytes:
    lib = ctypes.CDLL("libcuda.so.1")
    dev = ctypes.c_int()
    buf = (ctypes.c_ubyte * 16)()
    get_uuid = getattr(lib, "cuDeviceGetUuid_v2", None) or lib.cuDeviceGetUuid
    for rc in (lib.cuInit(0), lib.cuDeviceGet(ctypes.byref(dev), ordinal),
               get_uuid(buf, dev)):
        if rc != 0:
            raise RuntimeError(f"CUDA driver error {rc} reading device {ordinal}'s UUID")
    return bytes(buf)


def _uuid_key(text: str) -> str:
    # NVML writes "GPU-" (or "MIG-" for an instance) before the hex; compare the hex alone.
    t = text.strip().lower()
    for prefix in ("gpu-", "mig-"):
        t = t.removeprefix(prefix)
    return t.replace("-", "")


def _numa_node(cupy: ModuleType, ordinal: int) -> int | None:
    """The GPU's host NUMA node from sysfs, or None where the system does not say (-1)."""
    try:
        bus_id = cupy.cuda.runtime.deviceGetPCIBusId(ordinal).lower()
        with open(f"/sys/bus/pci/devices/{bus_id}/numa_node") as f:
            node = int(f.read().strip())
    except Exception:  # no sysfs entry, a CUDA error, an old CuPy: not known, not fatal
        return None
    return node if node >= 0 else None


def _free_all(cupy: ModuleType, devices: tuple[int, ...]) -> None:
    for dev in devices:
        with cupy.cuda.Device(dev):
            cupy.cuda.runtime.deviceSynchronize()
            cupy.get_default_memory_pool().free_all_blocks()
    cupy.get_default_pinned_memory_pool().free_all_blocks()


# Timing helpers shared by the probes.

def warm_up(stream: Any, op: Callable[[], None], times: int) -> None:
    """Run `op` untimed (first-use costs, clocks rising) and wait for it: start time."""
    for _ in range(times):
        op()
    stream.synchronize()


def event_seconds(cupy: ModuleType, stream: Any, op: Callable[[], None],
                  repeats: int) -> list[float]:
    """Each of `repeats` runs of `op` (which enqueues on `stream`), timed with CUDA events
    recorded around it; the runs are queued back to back, one synchronisation at the end."""
    marks = [(cupy.cuda.Event(), cupy.cuda.Event()) for _ in range(repeats)]
    for start, end in marks:
        start.record(stream)
        op()
        end.record(stream)
    marks[-1][1].synchronize()
    return [cupy.cuda.get_elapsed_time(s, e) / 1e3 for s, e in marks]


def landed(array: Any, value: int, sample: int = 1 << 16) -> bool:
    """Whether the first and last `sample` bytes of a uint8 device array all hold `value`: a
    copy that did not happen (or went elsewhere) shows. Plain copies out, no kernel to build."""
    ends = (array[:sample].get(), array[-sample:].get())
    return all(bool((e == value).all()) for e in ends)


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def node_cpus(node: int) -> set[int]:
    """The CPUs of a NUMA node, from /sys/devices/system/node/nodeN/cpulist ("0-15,32-47")."""
    with open(f"/sys/devices/system/node/node{node}/cpulist") as f:
        text = f.read().strip()
    cpus: set[int] = set()
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


@contextlib.contextmanager
def on_node(node: int | None) -> Iterator[bool]:
    """Run the body on the CPUs of `node` (no-op when None or unreadable); yields whether it
    did. Restores the previous affinity afterwards."""
    if node is None or not hasattr(os, "sched_setaffinity"):
        yield False
        return
    try:
        cpus = node_cpus(node) & os.sched_getaffinity(0)
    except (OSError, ValueError):
        cpus = set()
    if not cpus:
        yield False
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield True
    finally:
        os.sched_setaffinity(0, before)
