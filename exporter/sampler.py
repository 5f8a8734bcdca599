"""Sampling: one persistent worker thread per GPU, cycles of tiers, a deadline on every read.

A cycle hands every idle worker the tiers that are due and waits for them, but never past the
deadline of a read in flight: that GPU is then marked down (`gpu_up 0`, its values dropped) and
the cycle completes without it. A worker stuck inside the vendor library is left alone (Python
cannot kill a thread inside a C call); it is not given new work and no second worker is started
for its GPU, so a hung driver call costs one thread, never a queue of them. When the call
returns, the worker's next pass reads every tier again and the GPU comes back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .backends.base import Backend, Device, DeviceLost, Field, Sample, Unsupported
from .catalog import Tier

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class SamplerView:
    """A consistent picture of the sampler after a cycle, for rendering and readiness."""

    cycle: int
    gpus: tuple[GpuState, ...]
    tier_duration: dict[Tier, float]
    tier_completed_at: dict[Tier, float]  # unix time
    errors: dict[tuple[str, str, str], int]  # (tier, gpu, reason) -> count
    fresh_at: float  # monotonic time of the last completed cycle


@dataclass
class _Job:
    cycle: int
    tiers: tuple[Tier, ...]


@dataclass
class _Call:
    field: Field
    started: float


@dataclass
class _WorkerState:
    """Guarded by the sampler's condition variable."""

    job: _Job | None = None
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

    def _pass(self, job: _Job, tiers: Iterable[Tier]) -> None:
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


class Sampler:
    """Runs cycles over all GPU workers, on a schedule of tiers, from one coordinator thread."""

    def __init__(
        self,
        sources: Sequence[tuple[Backend, Sequence[Device]]],
        *,
        fast_interval: float,
        slow_interval: float,
        call_deadline: float,
        collector_enabled: Callable[[str], bool] = lambda _: True,
        on_cycle: Callable[[SamplerView], None] = lambda _: None,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
        warn_once: Callable[..., None] | None = None,
    ) -> None:
        # One lock guards all worker state. `cond` wakes the coordinator (a call started or a
        # pass finished); each worker waits on its own condition for work, so a call starting
        # on one GPU does not wake the threads of the others.
        self.lock = threading.RLock()  # re-entrant: add_source -> reconcile nest
        self.cond = threading.Condition(self.lock)
        self.clock, self.wallclock = clock, wallclock
        self.fast_interval, self.slow_interval = fast_interval, slow_interval
        self.call_deadline = call_deadline
        self.on_cycle = on_cycle
        self.warn_once = warn_once or _log_warning
        self.stopping = False
        self.collector_enabled = collector_enabled
        self.sources: list[Source] = []
        self.paused: str | None = None  # why collection is paused (released for repairs)
        self.after_cycle: list[Callable[[], None]] = []  # run by the coordinator thread
        self._started = False
        for backend, devices in sources:
            self.add_source(backend, devices)
        self._cycle = 0
        self._errors: Counter[tuple[str, str, str]] = Counter()
        self._tier_duration: dict[Tier, float] = {}
        self._tier_completed_at: dict[Tier, float] = {}
        self._fresh_at = float("-inf")
        self._view: SamplerView | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()  # cuts the coordinator's wait short (resume)
        self._coordinator = threading.Thread(target=self._schedule, name="sampler", daemon=True)

    @property
    def workers(self) -> list[GpuWorker]:
        return [w for s in self.sources for w in s.workers]

    # --- sources and devices ------------------------------------------------------------------
    def add_source(self, backend: Backend, devices: Iterable[Device]) -> Source:
        """Serve a backend's GPUs (at start, or when a vendor library appears later)."""
        with self.cond:
            source = Source(backend)
            self.sources.append(source)
            self.reconcile(source, devices)
            return source

    def reconcile(self, source: Source, devices: Iterable[Device]) -> None:
        """Match freshly enumerated devices to workers by UUID (condition held or not started).

        A known GPU keeps its worker and history; a new one gets a worker; one that is no
        longer enumerated stays, down, so `gpu_up 0` shows it missing instead of vanishing.
        """
        with self.cond:
            by_uuid = {w.device.uuid: w for w in source.workers}
            seen = set()
            for dev in devices:
                seen.add(dev.uuid)
                worker = by_uuid.get(dev.uuid)
                if worker is not None:
                    worker.set_device(dev)
                    continue
                worker = GpuWorker(self, source, dev)
                source.workers.append(worker)
                if self._started:
                    worker.thread.start()
            for uuid, worker in by_uuid.items():
                if uuid not in seen:
                    worker._mark_down("missing after re-enumeration")
                    worker.state.missing = True

    def idle(self, source: Source) -> bool:
        """True when no worker of this source is inside a vendor call (condition held)."""
        return all(w.state.job is None for w in source.workers)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no vendor call is in flight on any GPU; False if one outlives `timeout`."""
        deadline = self.clock() + timeout
        with self.cond:
            while any(w.state.job is not None for w in self.workers):
                left = deadline - self.clock()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def pause(self, reason: str) -> SamplerView:
        """Stop dispatching (cycles in flight finish); every GPU reads as down for `reason`."""
        with self.cond:
            self.paused = reason
            for w in self.workers:
                if w.state.job is not None:
                    # A pass in flight must not bring its GPU back up when it finishes.
                    w.state.abandoned_cycle = w.state.job.cycle
                w._mark_down(reason)
            view = self._make_view()
        self.on_cycle(view)
        return view

    def unpause(self) -> None:
        with self.cond:
            self.paused = None
        self._wake.set()

    # --- lifecycle -------------------------------------------------------------------------
    def start(self, schedule: bool = True) -> None:
        """Start the workers, and unless `schedule` is False the coordinator's schedule."""
        with self.cond:
            self._started = True
            for w in self.workers:
                w.thread.start()
        if schedule:
            self._coordinator.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop scheduling and let idle workers exit; a worker stuck in a call is abandoned."""
        self._stop.set()
        self._wake.set()
        if self._coordinator.is_alive():
            self._coordinator.join(timeout)
        with self.cond:
            self.stopping = True
            for w in self.workers:
                w.wake.notify()
        for w in self.workers:
            w.thread.join(timeout=0.1)

    def calls_in_flight(self) -> int:
        with self.cond:
            return sum(1 for w in self.workers if w.state.job is not None)

    @property
    def view(self) -> SamplerView | None:
        return self._view

    # --- scheduling -------------------------------------------------------------------------
    def _schedule(self) -> None:
        next_fast = next_slow = self.clock()
        first = True
        while not self._stop.is_set():
            now = self.clock()
            tiers = [Tier.FAST]
            if first:
                tiers = list(SAMPLED_TIERS)
            elif now >= next_slow:
                tiers.append(Tier.SLOW)
            if Tier.SLOW in tiers:
                next_slow = max(next_slow + self.slow_interval, now)
            next_fast = max(next_fast + self.fast_interval, now)
            if self.paused is None:
                try:
                    self.run_cycle(tuple(tiers))
                    first = False
                except Exception:  # the scheduler must outlive any bug in a cycle
                    log.exception("collection cycle failed")
            for hook in self.after_cycle:
                try:
                    hook()
                except Exception:
                    log.exception("after-cycle hook failed")
            self._wake.wait(max(0.0, min(next_fast, next_slow) - self.clock()))
            self._wake.clear()

    def run_cycle(self, tiers: tuple[Tier, ...] = SAMPLED_TIERS) -> SamplerView:
        """Read the given tiers on every GPU that is not stuck; return when all are done or due."""
        started = self.clock()
        with self.cond:
            if self.paused is not None:  # released between the schedule's check and now
                return self._view or self._make_view()
            self._cycle += 1
            cycle = self._cycle
            dispatched = []
            for w in self.workers:
                if w.state.missing:
                    continue
                if w.state.job is not None:
                    # Still inside a call from an earlier cycle: do not queue behind it.
                    call = w.state.call
                    self.count_error(call.field.tier if call else Tier.FAST, w.device, "stuck")
                    if w.state.up:
                        w._mark_down("stuck in a library call")
                    continue
                w.state.job = _Job(cycle, tiers)
                w.state.pass_started = started  # waiting for the worker counts against the pass
                w.wake.notify()
                dispatched.append(w)
            self._wait(cycle, dispatched)
            durations: dict[Tier, float] = {}
            for w in dispatched:
                if w.state.done_cycle == cycle and w.state.up:
                    for tier, d in w.state.durations.items():
                        durations[tier] = max(durations.get(tier, 0.0), d)
            now_wall = self.wallclock()
            for tier in tiers:
                self._tier_duration[tier] = durations.get(tier, self.clock() - started)
                self._tier_completed_at[tier] = now_wall
            self._fresh_at = self.clock()
            view = self._make_view()
        self.on_cycle(view)
        return view

    def _make_view_locked(self) -> SamplerView:
        with self.cond:
            return self._make_view()

    def _make_view(self) -> SamplerView:
        """Snapshot of every GPU and the cycle statistics (condition held)."""
        view = SamplerView(
            cycle=self._cycle,
            gpus=tuple(w.snapshot() for w in self.workers),
            tier_duration=dict(self._tier_duration),
            tier_completed_at=dict(self._tier_completed_at),
            errors=dict(self._errors),
            fresh_at=self._fresh_at,
        )
        self._view = view
        return view

    def _wait(self, cycle: int, dispatched: list[GpuWorker]) -> None:
        """Wait (condition held) until every dispatched worker finished or passed a deadline."""
        pending = list(dispatched)
        while True:
            now = self.clock()
            still = []
            for w in pending:
                if w.state.done_cycle >= cycle:
                    continue
                late = w.overdue(now, self.call_deadline)
                if late is not None:
                    name, tier = late
                    self.count_error(tier, w.device, "deadline")
                    self.warn_once(
                        f"deadline:{w.device.uuid}:{name}", "read passed its deadline; GPU down",
                        gpu=w.device.index, field=name, deadline=self.call_deadline,
                    )
                    w.state.abandoned_cycle = cycle
                    w._mark_down(f"read of {name} passed its {self.call_deadline:g}s deadline")
                    continue
                still.append(w)
            pending = still
            if not pending:
                return
            # Workers notify only when a pass ends; a call that started since this check is
            # looked at again within a quarter of the deadline.
            deadlines = [d for w in pending if (d := w.next_deadline(self.call_deadline))]
            poll = self.call_deadline / 4
            timeout = min([d - now for d in deadlines] + [poll])
            self.cond.wait(max(0.0, timeout))

    # --- bookkeeping (condition held) -----------------------------------------------------------
    def count_error(self, tier: Tier, device: Device, reason: str) -> None:
        self._errors[(tier.value, str(device.index), reason)] += 1


def _log_warning(key: str, message: str, **fields: object) -> None:
    log.warning("%s %s", message, " ".join(f"{k}={v}" for k, v in fields.items()))
