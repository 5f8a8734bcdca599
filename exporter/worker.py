"""One GPU's worker: the only thread that ever calls the vendor library for that GPU.

It reads the fields of the tiers it is handed, one by one, records the call in flight (so the
sampler can see a deadline pass), remembers unsupported fields, and publishes its results only
if its pass was not abandoned in the meantime (a deadline, a release). See sampler.py for the
cycles that drive it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .backends.base import (
    PROCESS_MEMORY,
    Backend,
    Device,
    DeviceLost,
    Field,
    Sample,
    Unsupported,
)
from .catalog import Tier

if TYPE_CHECKING:
    from .sampler import Sampler

SAMPLED_TIERS = (Tier.IDENTITY, Tier.FAST, Tier.SLOW)
# A whole pass over a GPU's due fields may take this many call deadlines before it is cut off.
PASS_DEADLINE_CALLS = 3


@dataclass(frozen=True)
class GpuState:
    """What the last cycles learned about one GPU: immutable, safe to hand to other threads."""

    backend: str
    index: int
    uuid: str
    up: bool
    down_reason: str | None
    samples: tuple[Sample, ...]

    @property
    def processes(self) -> tuple[GpuProcess, ...]:
        """The compute processes the backend reported (host PIDs), for pod attribution."""
        return tuple(GpuProcess(int(dict(s.labels)["pid"]), s.value if s.value >= 0 else None)
                     for s in self.samples if s.family == PROCESS_MEMORY)


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_bytes: float | None  # None: the driver does not report per-process memory


@dataclass
class Job:
    cycle: int
    tiers: tuple[Tier, ...]


@dataclass
class _Call:
    field: Field
    started: float


@dataclass
class _WorkerState:
    """Guarded by the sampler's condition variable."""

    job: Job | None = None
    call: _Call | None = None
    pass_started: float = 0.0
    abandoned_cycle: int = -1
    done_cycle: int = -1
    up: bool = False
    down_reason: str | None = "not read yet"
    full_pass_needed: bool = True
    missing: bool = False  # no longer enumerated: not read until it is enumerated again
    values: dict[str, tuple[Sample, ...]] = field(default_factory=dict)
    unsupported: set[str] = field(default_factory=set)
    durations: dict[Tier, float] = field(default_factory=dict)


@dataclass(eq=False)
class Source:
    """One backend and the workers of its GPUs."""

    backend: Backend
    workers: list[GpuWorker] = field(default_factory=list)
    needs_reinit: bool = False  # a GPU was lost or the library failed
    healthy: bool = True  # False while a re-initialization keeps failing


class GpuWorker:
    """The one thread that ever calls the vendor library for this GPU."""

    def __init__(self, sampler: Sampler, source: Source, device: Device) -> None:
        self.sampler = sampler
        self.source = source
        self.backend = source.backend
        self.state = _WorkerState()
        # Its own condition on the sampler's lock: handing this worker a job wakes only it.
        self.wake = threading.Condition(sampler.lock)
        self.set_device(device)
        self.thread = threading.Thread(
            target=self._run, name=f"gpu-{self.backend.name}-{device.index}", daemon=True
        )

    def set_device(self, device: Device) -> None:
        """(Re)bind to a device as enumerated, e.g. after the backend was re-initialized."""
        self.device = device
        self.state.missing = False
        self.fields_by_tier: dict[Tier, list[Field]] = {t: [] for t in SAMPLED_TIERS}
        for f in self.backend.fields(device):
            if self.sampler.collector_enabled(f.collector):
                self.fields_by_tier[f.tier].append(f)
        # A new driver may support what the old one did not: ask again.
        self.state.unsupported.clear()
        self.state.full_pass_needed = True

    # --- worker thread -------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self.wake:
                while self.state.job is None and not self.sampler.stopping:
                    self.wake.wait()
                if self.sampler.stopping:
                    return
                job = self.state.job
                assert job is not None
                tiers = SAMPLED_TIERS if self.state.full_pass_needed else job.tiers
            self._pass(job, tiers)

    def _pass(self, job: Job, tiers: Iterable[Tier]) -> None:
        cond, clock = self.sampler.cond, self.sampler.clock
        results: dict[str, tuple[Sample, ...]] = {}
        newly_unsupported: set[str] = set()
        errors: list[tuple[Tier, str]] = []
        durations: dict[Tier, float] = {}
        lost: str | None = None
        for tier in tiers:
            t0 = clock()
            for f in self.fields_by_tier[tier]:
                with cond:
                    if self.state.abandoned_cycle == job.cycle or f.name in self.state.unsupported:
                        continue
                    # No notify here: waking the coordinator on every call costs more than the
                    # call (GIL hand-offs); it checks calls in flight on its own timer.
                    self.state.call = _Call(f, clock())
                try:
                    results[f.name] = tuple(f.read(self.device))
                except Unsupported:
                    newly_unsupported.add(f.name)
                    results[f.name] = ()
                except DeviceLost as e:
                    lost = str(e) or "lost"
                except Exception as e:  # one field's failure never fails the GPU or the cycle
                    results[f.name] = ()
                    errors.append((tier, type(e).__name__))
                    self.sampler.warn_once(
                        f"read:{self.device.uuid}:{f.name}:{type(e).__name__}",
                        "field read failed",
                        gpu=self.device.index, field=f.name, error=f"{type(e).__name__}: {e}",
                    )
                finally:
                    with cond:
                        self.state.call = None
                if lost:
                    break
            durations[tier] = clock() - t0
            if lost:
                break
        with cond:
            st = self.state
            st.unsupported |= newly_unsupported
            if st.abandoned_cycle == job.cycle:
                pass  # the coordinator already marked this GPU down and counted the error
            elif lost:
                self.sampler.count_error(Tier.FAST, self.device, "lost")
                self._mark_down(f"lost: {lost}")
                self.source.needs_reinit = True
            else:
                st.values.update(results)
                st.up, st.down_reason, st.full_pass_needed = True, None, False
                st.durations = durations
            for tier, reason in errors:
                self.sampler.count_error(tier, self.device, reason)
            st.job = None
            st.done_cycle = job.cycle
            cond.notify_all()

    # --- called with the condition held ----------------------------------------------------
    def _mark_down(self, reason: str) -> None:
        st = self.state
        # Keep only the descriptive series, so a down GPU still says what it is; no stale values.
        st.values = {
            name: kept
            for name, samples in st.values.items()
            if (kept := tuple(s for s in samples if s.family == "gpu_info"))
        }
        st.up, st.down_reason, st.full_pass_needed = False, reason, True
        st.durations = {}

    def overdue(self, now: float, call_deadline: float) -> tuple[str, Tier] | None:
        """What is late, as (field name or "pass", tier), or None while within deadlines."""
        st = self.state
        if st.job is None:
            return None
        tier = st.call.field.tier if st.call else Tier.FAST
        if st.call and now - st.call.started >= call_deadline:
            return st.call.field.name, tier
        if now - st.pass_started >= call_deadline * PASS_DEADLINE_CALLS:
            return "pass", tier
        return None

    def next_deadline(self, call_deadline: float) -> float | None:
        st = self.state
        if st.job is None:
            return None
        candidates = [st.pass_started + call_deadline * PASS_DEADLINE_CALLS]
        if st.call:
            candidates.append(st.call.started + call_deadline)
        return min(candidates)

    def snapshot(self) -> GpuState:
        st = self.state
        samples = tuple(s for values in st.values.values() for s in values)
        return GpuState(self.backend.name, self.device.index, self.device.uuid, st.up,
                        st.down_reason, samples)


