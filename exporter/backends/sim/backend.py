"""The `sim` backend: a simulated GPU node behind the same protocol as NVML and amdsmi.

It is how a newcomer sees the product without a GPU and how end-to-end tests drive it. Fields are
grouped the way a vendor library answers (one field per call), each in the tier and collector of
the catalog families it emits, so the sampler schedules, times out and remembers "unsupported"
exactly as it does for real hardware. Faults from the scenario act on reads: a lost GPU raises
DeviceLost, a hung call blocks on an Event (never a sleep) until `release_hang` or the end of its
window, and counters move only when their fault's time has come on the injected clock.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..base import BackendEvent, Device, DeviceLost, Field
from .fields import FieldTable, SimGpu
from .node import plan_node
from .profiles import DEFAULT_MODEL, profile
from .scenario import Scenario, load_scenario
from .telemetry import Conditions, Counters, GpuTelemetry

if TYPE_CHECKING:
    from ...config import Settings


@dataclass(frozen=True)
class _PendingEvent:
    t: float
    event: BackendEvent  # timestamp filled in on delivery


class SimBackend:
    name = "sim"

    def __init__(
        self,
        gpus: int = 8,
        model: str = DEFAULT_MODEL,
        seed: int = 1,
        scenario: Scenario | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        mig_gpus: tuple[int, ...] = (),
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self.profile = profile(model)
        self.scenario = scenario if scenario is not None else Scenario()
        self.scenario.check_gpus(gpus)
        self.scenario.check_links(self.profile.nvlink_links, model)
        self.seed = seed
        self._clock, self._wallclock = clock, wallclock
        self._t0 = clock()  # scenario times count from here, across stop()/start()
        self._gpus: list[SimGpu] = []
        for layout in plan_node(self.profile, gpus, seed, tuple(mig_gpus)):
            telemetry = GpuTelemetry(self.profile, layout, seed,
                                     conditions=self._conditions_of(layout.index))
            counters = Counters.since_driver_load(telemetry, seed, 0.0)
            self._gpus.append(SimGpu(layout, telemetry, counters))
        self._devices = tuple(Device(g.index, g.layout.uuid, handle=g) for g in self._gpus)
        self._fields = FieldTable(self.profile, self.scenario, seed, self._gpus, self._enter).fields
        self._cond = threading.Condition()  # guards hang state and the event queue
        self._events = self._plan_events()
        self._stopped = threading.Event()

    @classmethod
    def from_settings(cls, settings: Settings) -> SimBackend:
        sim = settings.sim
        scenario = load_scenario(sim.scenario) if sim.scenario else None
        return cls(gpus=sim.gpus, model=sim.model, seed=sim.seed, scenario=scenario)

    # --- the Backend protocol ----------------------------------------------------------------
    def start(self) -> None:
        self._stopped.clear()

    def stop(self) -> None:
        """Wake poll_events and release any hung call, so nothing stays blocked on the sim."""
        self._stopped.set()
        with self._cond:
            for gpu in self._gpus:
                if gpu.hang is not None:
                    gpu.hang.set()

    def devices(self) -> Sequence[Device]:
        return self._devices

    def fields(self, device: Device) -> Sequence[Field]:
        layout = self._gpus[device.index].layout
        # MIG instances exist only on a GPU in MIG mode; the others have no MIG fields at all.
        return [f for f in self._fields if layout.mig or f.collector != "mig"]

    def poll_events(self, timeout: float) -> list[BackendEvent]:
        """Events whose time has come, each once; waits (on an Event, not a sleep) for the next."""
        waited = 0.0
        while True:
            due = self._take_due_events()
            if due or self._stopped.is_set() or waited >= timeout:
                return due
            step = timeout - waited
            with self._cond:
                if self._events:
                    step = min(step, max(0.0, self._events[0].t - self.sim_time()))
            self._stopped.wait(step)
            waited += step

    # --- for tests and the probes ----------------------------------------------------------
    def sim_time(self) -> float:
        """Seconds since the backend was created, on the injected clock."""
        return self._clock() - self._t0

    def release_hang(self, gpu_index: int) -> bool:
        """Let a read blocked by a hang fault on this GPU return; False if none is blocked."""
        with self._cond:
            event = self._gpus[gpu_index].hang
        if event is None:
            return False
        event.set()
        return True

    def wait_until_hung(self, gpu_index: int, timeout: float) -> bool:
        """Block until a read on this GPU is stuck in a hang fault (or timeout): for tests."""
        with self._cond:
            return self._cond.wait_for(lambda: self._gpus[gpu_index].hang is not None, timeout)

    def probe_values(self, gpu_index: int, probe: str) -> dict[str, float | str]:
        """Results a probe should report now, from the scenario's `probe` faults."""
        return self.scenario.probe_values(gpu_index, probe, self.sim_time())

    # --- faults acting on reads ----------------------------------------------------------------
    def _conditions_of(self, index: int) -> Callable[[float], Conditions]:
        def conditions(t: float) -> Conditions:
            events = self.scenario.active(index, "clock_event", t)
            return Conditions(busy=bool(self.scenario.active(index, "busy", t)),
                              reasons=frozenset(f.reason for f in events))
        return conditions

    def _enter(self, gpu: SimGpu) -> float:
        """Apply hang and lost faults to a read; return the simulated time of the read."""
        t = self.sim_time()
        for fault in self.scenario.active(gpu.index, "hang", t):
            with self._cond:
                if id(fault) in gpu.hangs_started or self._stopped.is_set():
                    continue
                gpu.hangs_started.add(id(fault))
                gpu.hang = event = threading.Event()
                self._cond.notify_all()
            # Blocks like a driver call on a wedged GPU: until released or the window ends.
            event.wait(None if math.isinf(fault.end) else max(0.0, fault.end - t))
            with self._cond:
                gpu.hang = None
            t = self.sim_time()
        lost = self.scenario.active(gpu.index, "lost", t)
        if lost:
            raise DeviceLost("GPU has fallen off the bus" if any(f.fell_off_bus for f in lost)
                             else "GPU is lost")
        return t

    def _plan_events(self) -> list[_PendingEvent]:
        pending = []
        for fault in self.scenario.faults:
            for index in fault.gpu:
                layout = self._gpus[index].layout
                codes = []
                pid = process = None
                if fault.kind == "xid":
                    codes, pid, process = [fault.xid], fault.pid, fault.process
                elif fault.kind == "lost" and fault.fell_off_bus:
                    pending.append(_PendingEvent(fault.at, BackendEvent(
                        layout.uuid, "fell_off_bus", None, "GPU has fallen off the bus")))
                    codes = [79]
                for code in codes:
                    who = f"pid={pid}, name={process or '<unknown>'}, " if pid else ""
                    message = f"NVRM: Xid (PCI:{layout.pci_bus_id}): {code}, {who}simulated fault"
                    pending.append(_PendingEvent(fault.at, BackendEvent(
                        layout.uuid, "xid", code, message, pid=pid, process=process)))
        return sorted(pending, key=lambda p: p.t)  # stable: file order among equal times

    def _take_due_events(self) -> list[BackendEvent]:
        with self._cond:
            now = self.sim_time()
            due = [p for p in self._events if p.t <= now]
            self._events = self._events[len(due):]
        wall_now = self._wallclock()
        return [dataclasses.replace(p.event, timestamp=wall_now - (now - p.t)) for p in due]
