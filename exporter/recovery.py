"""Recovery: re-initialize a backend after a lost GPU or a library failure, with backoff.

Runs on the sampler's coordinator thread after each cycle. A backend is re-initialized only
when none of its GPUs is inside a vendor call: shutting NVML down under a call in flight is
undefined behaviour in the library. A GPU reset, driver reload or hot re-enumeration thus heals
without a restart; a GPU that stays broken is retried less and less often (5 s doubling to 5 min).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .sampler import Sampler, Source

log = logging.getLogger(__name__)

INITIAL_BACKOFF = 5.0
MAX_BACKOFF = 300.0


class Recovery:
    def __init__(
        self,
        sampler: Sampler,
        lifecycle_lock: threading.Lock,
        clock: Callable[[], float] = time.monotonic,
        initial: float = INITIAL_BACKOFF,
        maximum: float = MAX_BACKOFF,
    ) -> None:
        self.sampler, self.lock, self.clock = sampler, lifecycle_lock, clock
        self.initial, self.maximum = initial, maximum
        self._due: dict[int, float] = {}
        self._backoff: dict[int, float] = {}
        self.attempts = 0
        self.restarting = False  # a vendor library is inside stop()/start() on this thread now

    def after_cycle(self) -> None:
        for source in list(self.sampler.sources):
            key = id(source)
            if not source.needs_reinit:
                if all(w.state.up for w in source.workers):
                    self._backoff.pop(key, None)  # healthy again: next trouble retries fast
                continue
            if self.clock() < self._due.get(key, 0.0):
                continue
            if not self.lock.acquire(blocking=False):
                continue  # a release or resume is in progress
            try:
                self._reinit(source)
            finally:
                self.lock.release()

    def _reinit(self, source: Source) -> None:
        key = id(source)
        with self.sampler.cond:
            if self.sampler.paused or not self.sampler.idle(source):
                return  # never while a call is in flight; try again after the next cycle
        backoff = self._backoff.get(key, self.initial)
        self._due[key] = self.clock() + backoff
        self._backoff[key] = min(backoff * 2, self.maximum)
        self.attempts += 1
        backend = source.backend
        slow = _SlowRestart(self.sampler, source)
        self.restarting = True
        try:
            backend.stop()
            backend.start()
            devices = list(backend.devices())
        except Exception as e:
            source.healthy = False
            slow.failed()
            log.warning("backend re-initialization failed; retrying with backoff",
                        extra={"backend": backend.name, "error": f"{type(e).__name__}: {e}",
                               "retry_in_seconds": backoff})
            return
        finally:
            self.restarting = False
        slow.finished()
        source.healthy = True
        self.sampler.reconcile(source, devices)
        # A GPU still lost now (not enumerated) is tried again with the same backoff, so it
        # returns by itself after a reset instead of staying missing until a restart.
        source.needs_reinit = any(w.state.missing for w in source.workers)
        log.info("backend re-initialized",
                 extra={"backend": backend.name, "gpus": len(devices)})


class _SlowRestart:
    """Marks a library's GPUs down if its restart takes longer than one call may.

    A restart that hangs (nvmlInit stuck in the driver) must not leave the last values served
    as healthy; a quick one must not show the GPUs that were never lost as down either: the
    re-init after a lost GPU is retried for as long as it stays lost, and every retry would
    flap the healthy GPUs of the node to `gpu_up 0` for a scrape that lands in it.
    """

    def __init__(self, sampler: Sampler, source: Source) -> None:
        self.sampler, self.source = sampler, source
        self.done = False
        self.timer = threading.Timer(sampler.call_deadline, self._timed_out)
        self.timer.daemon = True
        self.timer.start()

    def finished(self) -> None:
        self.timer.cancel()
        with self.sampler.cond:
            self.done = True

    def failed(self) -> None:
        self.finished()
        self._mark_down("vendor library failed to re-initialize")

    def _timed_out(self) -> None:
        with self.sampler.cond:
            if not self.done:  # else the restart finished first
                self._mark_down("vendor library re-initializing")

    def _mark_down(self, reason: str) -> None:
        # The condition is held through the publish: no cycle runs meanwhile, so this view
        # cannot overwrite a newer one.
        with self.sampler.cond:
            for w in self.source.workers:
                w._mark_down(reason)
            self.sampler.on_cycle(self.sampler._make_view())
