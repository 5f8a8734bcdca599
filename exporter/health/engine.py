"""The health engine: telemetry, events and probe results in, one verdict per GPU out.

The sampler's coordinator feeds it each cycle (`observe`); the publisher asks for the verdict
whenever it renders (`rows`), which also stores it as `current`, the one verdict that
`GET /health`, the status page and a gated `/readyz` read. So the metrics and the JSON never
disagree: they are the same object.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from probes.result import ProbeResult

from ..config import HealthSettings
from ..exposition import Row
from ..report import gpu_model
from ..sampler import GpuState, SamplerView
from .events import contained_ecc, event_reasons
from .probes import probe_reasons
from .telemetry import GpuTracker, Latest
from .verdict import GpuVerdict, NodeVerdict, Reason, Status, merge_reasons

Occurrences = Callable[[float], Iterable]  # since (unix time) -> events.watcher.Occurrence


def down_reason(gpu: GpuState) -> Reason | None:
    """What a GPU that did not answer this cycle says about its health."""
    why = gpu.down_reason or ""
    if why.startswith("lost"):
        return Reason("gpu_lost", Status.FAIL, f"the driver reports the GPU {why}")
    if why.startswith("missing"):
        return Reason("gpu_missing", Status.FAIL, "the GPU is gone from the driver's list")
    if "deadline" in why or "stuck" in why:
        return Reason("not_responding", Status.WARN, f"the GPU does not answer: {why}")
    return None  # not read yet, released for repairs, re-initializing: nothing to judge


class HealthEngine:
    def __init__(
        self,
        settings: HealthSettings,
        occurrences: Occurrences = lambda since: (),
        probe_results: Callable[[], Iterable[ProbeResult]] = tuple,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.occurrences, self.probe_results = occurrences, probe_results
        self.clock, self.wallclock = clock, wallclock
        self._lock = threading.Lock()
        self._trackers: dict[str, GpuTracker] = {}
        self._judged: dict[str, list[Reason]] = {}  # uuid -> its own reasons, last judged
        self._latest: tuple[int, dict[str, Latest]] = (-1, {})  # (cycle, uuid -> index)
        self.current: NodeVerdict | None = None  # None until the first collection

    def observe(self, view: SamplerView | None) -> None:
        if view is None:
            return
        now = self.clock()
        latest = {g.uuid: Latest.of(g.samples) for g in view.gpus}
        with self._lock:
            self._latest = (view.cycle, latest)  # evaluate() of this cycle reuses the index
            for gpu in view.gpus:
                if gpu.up:
                    tracker = self._trackers.setdefault(gpu.uuid, GpuTracker(self.settings))
                    tracker.observe(now, latest[gpu.uuid])

    def settle(self) -> None:
        """Repairs are done (resume after a release): windows start again from now."""
        with self._lock:
            self._trackers.clear()
            self._judged.clear()

    def evaluate(self, view: SamplerView | None) -> NodeVerdict | None:
        if view is None:
            return None
        now, wall, h = self.clock(), self.wallclock(), self.settings
        longest = max(h.xid_hold, h.app_xid_window, h.ecc_window)
        by_gpu: dict[str, list] = {}
        for o in self.occurrences(wall - longest):
            by_gpu.setdefault(o.uuid, []).append(o)
        results: dict[str, list[ProbeResult]] = {}
        for r in self.probe_results():
            results.setdefault(r.uuid, []).append(r)
        cycle, latest = self._latest
        if cycle != view.cycle or any(g.uuid not in latest for g in view.gpus):
            latest = {g.uuid: Latest.of(g.samples) for g in view.gpus}
        peer_links = _links_up_by_model(view, latest)
        verdicts = []
        with self._lock:
            for gpu in view.gpus:
                mine = by_gpu.get(gpu.uuid, [])
                reasons = event_reasons(mine, wall, h) + probe_reasons(results.get(gpu.uuid, ()))
                tracker = self._trackers.get(gpu.uuid)
                own: list[Reason] = []  # what its telemetry or its being down says
                if gpu.up and tracker is not None:
                    contained = contained_ecc(mine, wall - h.ecc_window)
                    own += tracker.state_reasons(latest[gpu.uuid],
                                                 peer_links.get(gpu_model(gpu, ''), set()))
                    own += tracker.window_reasons(now, wall, contained)
                elif not gpu.up and (lost := down_reason(gpu)) is not None:
                    # A GPU off the bus is also lost to the driver: one fact, one reason.
                    off_bus = any(r.name == "fell_off_bus" for r in reasons)
                    own += [] if off_bus and lost.name == "gpu_lost" else [lost]
                elif not gpu.up:
                    # Nothing to judge now (the library re-initializing, released for
                    # repairs): the last judgement stands, so a failing GPU never reads ok.
                    own = self._judged.get(gpu.uuid, [])
                self._judged[gpu.uuid] = own
                reasons += own
                verdicts.append(GpuVerdict(gpu.index, gpu.uuid, merge_reasons(reasons),
                                           gpu_model(gpu, '')))
        return NodeVerdict(tuple(verdicts), wall)

    def rows(self, view: SamplerView | None) -> list[Row]:
        """Publisher contributor: evaluates, keeps the verdict as `current`, returns its rows."""
        verdict = self.evaluate(view)
        if verdict is not None:
            self.current = verdict
        return verdict_rows(self.current)


def verdict_rows(verdict: NodeVerdict | None) -> list[Row]:
    rows: list[Row] = []
    for g in verdict.gpus if verdict else ():
        ident = (("gpu", str(g.gpu)), ("uuid", g.uuid))
        rows.append(Row("gpu_health_status", ident, float(g.status)))
        for r in g.reasons:
            rows.append(Row("gpu_health_reason",
                            (*ident, ("reason", r.name), ("severity", r.severity.label)), 1.0))
    return rows


def _links_up_by_model(view: SamplerView, latest: dict[str, Latest]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for gpu in view.gpus:
        up = {link for link, ok in latest[gpu.uuid].nvlinks().items() if ok}
        out.setdefault(gpu_model(gpu, ''), set()).update(up)
    return out
