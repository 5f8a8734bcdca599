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
from dataclasses import dataclass

from .backends.base import Backend, Device
from .catalog import Tier
from .worker import PASS_DEADLINE_CALLS, SAMPLED_TIERS, GpuState, GpuWorker, Job, Source

__all__ = ["PASS_DEADLINE_CALLS", "SAMPLED_TIERS", "GpuState", "GpuWorker", "Sampler",
           "SamplerView", "Source"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplerView:
    """A consistent picture of the sampler after a cycle, for rendering and readiness."""

    cycle: int
    gpus: tuple[GpuState, ...]
    tier_duration: dict[Tier, float]
    tier_completed_at: dict[Tier, float]  # unix time
    errors: dict[tuple[str, str, str], int]  # (tier, gpu, reason) -> count
    fresh_at: float  # monotonic time of the last completed cycle



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
                if not w.source.healthy:
                    # Its library failed to restart and is shut down: a read would answer
                    # "uninitialized" and make a healthy GPU look lost. Recovery retries it.
                    continue
                if w.state.job is not None:
                    # Still inside a call from an earlier cycle: do not queue behind it.
                    call = w.state.call
                    self.count_error(call.field.tier if call else Tier.FAST, w.device, "stuck")
                    if w.state.up:
                        w._mark_down("stuck in a library call")
                    continue
                w.state.job = Job(cycle, tiers)
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
