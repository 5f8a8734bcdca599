"""Probes in the daemon: scheduled runs, the idle gate fed by telemetry, results as metrics.

APScheduler (3.x) runs one job per probe on its interval with jitter. A run goes GPU by GPU,
skipping busy GPUs (with the reason), and never waits on a probe already running on a GPU. The
runner's deadline bounds every run, and `gpu_probe_last_run_timestamp_seconds` shows its age,
so a run that stops happening is visible, not silent.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from probes.ecc_xid_scan import Health, health_of, judge
from probes.gate import Activity, GateSettings, busy_reason
from probes.registry import PROBES
from probes.result import Measurement, Outcome, ProbeResult
from probes.runner import Busy, Runner, Target
from probes.simulated import sim_params
from probes.thresholds import GpuFacts, Thresholds

from .config import ProbeSettings
from .exposition import Row
from .sampler import GpuState, SamplerView

log = logging.getLogger(__name__)


@dataclass
class _GpuInfo:
    index: int
    uuid: str
    facts: GpuFacts
    numa_node: int | None
    activity: Activity


def gpu_facts(gpu: GpuState) -> tuple[GpuFacts, int | None]:
    """Model and links as the telemetry reports them (maximums: a downtrained link fails)."""
    model, gen, width, numa, nvlinks = "", None, None, None, 0
    for s in gpu.samples:
        if s.family == "gpu_info":
            model = dict(s.labels).get("model", "")
        elif s.family == "gpu_pcie_link_max_generation":
            gen = int(s.value)
        elif s.family == "gpu_pcie_link_max_width_lanes":
            width = int(s.value)
        elif s.family == "gpu_numa_node":
            numa = int(s.value)
        elif s.family == "gpu_nvlink_up":
            nvlinks += 1  # every link the GPU has: links that went down must not lower the bar
    return GpuFacts(model, gen, width, nvlinks), numa


class ProbeService:
    def __init__(
        self,
        settings: ProbeSettings,
        runtime: str,
        sim_overrides: Callable[[int, str], Mapping[str, float | str]] | None = None,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        xid_counts: Callable[[], dict[str, dict[tuple[int, str], float]]] = dict,
        allocations: Callable[[SamplerView], dict[str, set[tuple[str, str, str]]] | None] = (
            lambda view: {}),
    ) -> None:
        # uuid -> pods holding the GPU (None: attribution on but unknown), for the idle gate.
        self.allocations = allocations
        self.xid_counts = xid_counts  # uuid -> (xid, action) -> count, for ecc_xid_scan
        self._samples: dict[str, tuple[Any, ...]] = {}
        self._baseline: dict[str, Health] = {}
        self.settings, self.runtime = settings, runtime
        self.thresholds = Thresholds.load(settings.thresholds_file)
        self.runner = Runner(self.thresholds, runtime=runtime, timeout=settings.timeout,
                             cache_dir=settings.cache_dir)
        self.gate = GateSettings(settings.max_utilization, settings.max_memory_used_bytes,
                                 settings.quiet_period, settings.skip_allocated)
        self.sim_overrides = sim_overrides or (lambda gpu, probe: {})
        self.on_change, self.clock = on_change, clock
        self._lock = threading.Lock()
        self._gpus: dict[str, _GpuInfo] = {}
        self.results: dict[tuple[str, str, str], ProbeResult] = {}  # (uuid, probe, peer)
        self.runs: Counter[tuple[str, str, str]] = Counter()  # (uuid, probe, outcome)
        self.last_skip: dict[tuple[str, str], str] = {}  # (uuid, probe) -> reason
        self.scheduler: Any = None
        self.disabled_reason: str | None = None
        if runtime == "cuda" and importlib.util.find_spec("cupy") is None:
            self.disabled_reason = ("CuPy is not installed: pip install "
                                    "'gpu-fleet-exporter[probes-cuda13]' (or probes-cuda12)")

    # --- telemetry in ---------------------------------------------------------------------------
    def observe(self, view: SamplerView | None) -> None:
        """Called after every collection cycle: keeps the idle gate's recent history."""
        if view is None:
            return
        now = self.clock()
        holders = self.allocations(view)
        with self._lock:
            for gpu in view.gpus:
                facts, numa = gpu_facts(gpu)
                info = self._gpus.get(gpu.uuid)
                if info is None:
                    info = self._gpus[gpu.uuid] = _GpuInfo(gpu.index, gpu.uuid, facts, numa,
                                                          Activity())
                info.index, info.facts, info.numa_node = gpu.index, facts, numa
                self._samples[gpu.uuid] = gpu.samples
                values = {s.family: s.value for s in gpu.samples if not s.labels}
                act = info.activity
                act.processes = int(values["gpu_processes"]) if "gpu_processes" in values \
                    else None
                act.memory_used_bytes = values.get("gpu_memory_used_bytes")
                act.pods_unknown = holders is None
                act.pods = tuple(sorted("/".join(t) for t in (holders or {}).get(gpu.uuid, ())))
                util = values.get("gpu_utilization_ratio") if gpu.up else 1.0
                act.record(now, util, self.gate.quiet_seconds)

    # --- running --------------------------------------------------------------------------------
    def targets(self, gpus: Iterable[int] | None = None) -> list[Target]:
        with self._lock:
            infos = sorted(self._gpus.values(), key=lambda i: i.index)
        wanted = set(gpus) if gpus is not None else None
        return [Target(i.index, i.uuid, i.facts, i.numa_node) for i in infos
                if wanted is None or i.index in wanted]

    def run(self, probe: str, gpus: Iterable[int] | None = None, force: bool = False,
            raise_busy: bool = False) -> list[ProbeResult]:
        """Run a probe on the given GPUs (all by default), or on each ordered pair of them."""
        targets = self.targets(gpus)
        if PROBES[probe].in_process:
            return [self._scan(t) for t in targets]
        pairs: list[tuple[Target, Target | None]]
        if PROBES[probe].pair:
            pairs = list(itertools.permutations(targets, 2))
        else:
            pairs = [(t, None) for t in targets]
        results = []
        for target, peer in pairs:
            if self.runner.stopped:
                break  # shutdown or release: no further child
            result = self._run_one(probe, target, peer, force, raise_busy)
            if result is not None:
                results.append(result)
        return results

    def _run_one(self, probe: str, target: Target, peer: Target | None, force: bool,
                 raise_busy: bool) -> ProbeResult | None:
        if not force:
            reason = self._busy_reason(target)
            if reason is None and peer is not None and (why := self._busy_reason(peer)):
                reason = f"peer GPU {peer.index}: {why}"
            if reason:
                self._skip(target, probe, peer, reason)
                return None
        params = (sim_params(target.facts.model, probe, self.sim_overrides(target.index, probe))
                  if self.runtime == "sim" else {})
        try:
            result = self.runner.run(probe, target, peer, params, self._peers(target, probe))
        except Busy as e:
            if raise_busy:
                raise
            self._skip(target, probe, peer, str(e))
            return None
        self._record(result)
        return result

    def _scan(self, target: Target) -> ProbeResult:
        """ecc_xid_scan: what changed since the last scan of this GPU (the first one starts
        the window). No GPU work, so no idle gate and no child."""
        with self._lock:
            samples = self._samples.get(target.uuid, ())
        now = health_of(samples, self.xid_counts().get(target.uuid, {}))
        before = self._baseline.get(target.uuid)
        self._baseline[target.uuid] = now
        result = ProbeResult("ecc_xid_scan", target.index, target.uuid, Outcome.PASS,
                             measurement=Measurement(), started_at=time.time())
        if before is None:
            result.reason = "first scan: the window starts now"
        elif problems := judge(before, now):
            result.outcome, result.reason = Outcome.FAIL, "; ".join(problems)
        self._record(result)
        return result

    def _busy_reason(self, target: Target) -> str | None:
        with self._lock:
            info = self._gpus.get(target.uuid)
            return busy_reason(info.activity if info else None, self.gate, self.clock())

    def _peers(self, target: Target, probe: str) -> dict[str, list[float]]:
        """The latest figures of the other GPUs of the same model on this node."""
        peers: dict[str, list[float]] = {}
        with self._lock:
            for (uuid, name, _), result in self.results.items():
                info = self._gpus.get(uuid)
                if (name != probe or uuid == target.uuid or info is None
                        or info.facts.model != target.facts.model or result.measurement is None
                        or result.outcome is not Outcome.PASS):
                    continue
                for q, v in result.measurement.quantities.items():
                    peers.setdefault(q, []).append(v)
        return peers

    def _skip(self, target: Target, probe: str, peer: Target | None, reason: str) -> None:
        with self._lock:
            self.runs[(target.uuid, probe, Outcome.SKIPPED.value)] += 1
            self.last_skip[(target.uuid, probe)] = reason
        log.info("probe skipped", extra={"probe": probe, "gpu": target.index, "reason": reason})
        self.on_change()

    def _record(self, result: ProbeResult) -> None:
        with self._lock:
            self.runs[(result.uuid, result.probe, result.outcome.value)] += 1
            if result.outcome is Outcome.SKIPPED:
                # gpu_probe_success covers the last run that was not skipped.
                self.last_skip[(result.uuid, result.probe)] = result.reason
            else:
                self.results[(result.uuid, result.probe, result.peer_uuid or "")] = result
        level = logging.WARNING if result.outcome in (Outcome.FAIL, Outcome.ERROR) else logging.INFO
        log.log(level, "probe finished", extra={
            "probe": result.probe, "gpu": result.gpu, "outcome": result.outcome.value,
            "reason": result.reason, "seconds": round(result.total_seconds, 3)})
        self.on_change()

    # --- schedule ---------------------------------------------------------------------------
    def start(self) -> None:
        if self.disabled_reason:
            log.warning("probes disabled", extra={"reason": self.disabled_reason})
            return
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        # One worker: scheduled probes run one after another on the node, so two of ours never
        # compete for a GPU (a run due while another runs waits for it instead of skipping).
        self.scheduler = BackgroundScheduler(
            daemon=True, executors={"default": ThreadPoolExecutor(max_workers=1)})
        first = datetime.now() + timedelta(seconds=5) if self.settings.run_at_start else None
        for name in PROBES:
            interval = getattr(self.settings.intervals, name)
            self.scheduler.add_job(
                self._scheduled, "interval", args=[name], id=name, seconds=interval,
                jitter=self.settings.jitter or None, next_run_time=first,
                # One run of a probe at a time; a late run is run, not silently dropped.
                max_instances=1, coalesce=True, misfire_grace_time=None)
        self.scheduler.start()

    def _scheduled(self, probe: str) -> None:
        try:
            self.run(probe)
        except Exception:  # the scheduler thread must survive any bug in one run
            log.exception("scheduled probe run failed", extra={"probe": probe})

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        self.runner.stop("the daemon is stopping", final=True)

    def pause(self, reason: str, final: bool = False) -> None:
        """No probe while the GPUs are released for repairs (or, `final`, the daemon stops):
        running children are killed."""
        self.runner.stop(reason, final)

    def resume(self) -> None:
        self.runner.restart()

    # --- out: metrics and JSON -------------------------------------------------------------
    def latest_results(self) -> list[ProbeResult]:
        """The last result that was not skipped, per GPU, probe and peer (for the verdict)."""
        with self._lock:
            return list(self.results.values())

    def rows(self, view: SamplerView | None) -> list[Row]:
        rows: list[Row] = []
        with self._lock:
            gpus = dict(self._gpus)
            results = dict(self.results)
            runs = dict(self.runs)
        for info in gpus.values():
            ident = (("gpu", str(info.index)), ("uuid", info.uuid))
            for name in PROBES:
                if PROBES[name].pair and len(gpus) < 2:
                    continue  # no pair to measure: no line to draw
                for lim in self.thresholds.limits(name, info.facts):
                    key = (*ident, ("probe", name), ("quantity", lim.quantity))
                    rows.append(Row("gpu_probe_threshold", (*key, ("bound", lim.bound)),
                                    lim.value))
                    if lim.warn_min is not None:
                        rows.append(Row("gpu_probe_threshold", (*key, ("bound", "warn_min")),
                                        lim.warn_min))
        for (uuid, probe, outcome), count in sorted(runs.items()):
            info = gpus.get(uuid)
            if info is not None:
                rows.append(Row("gpu_probe_runs_total", (("gpu", str(info.index)), ("uuid", uuid),
                                ("probe", probe), ("outcome", outcome)), float(count)))
        latest: dict[tuple[str, str], ProbeResult] = {}
        for (uuid, probe, _peer), result in results.items():
            key = (uuid, probe)
            if key not in latest or result.started_at > latest[key].started_at:
                latest[key] = result
            rows += self._quantity_rows(result)
        for (uuid, probe), result in latest.items():
            ident = (("gpu", str(result.gpu)), ("uuid", uuid), ("probe", probe))
            rows.append(Row("gpu_probe_success", ident,
                            1.0 if result.outcome is Outcome.PASS else 0.0))
            rows.append(Row("gpu_probe_last_run_timestamp_seconds", ident, result.started_at))
            rows.append(Row("gpu_probe_duration_seconds", (*ident, ("phase", "total")),
                            result.total_seconds))
            if result.measurement is not None:
                rows.append(Row("gpu_probe_duration_seconds", (*ident, ("phase", "measure")),
                                result.measurement.measure_seconds))
        return rows

    def _quantity_rows(self, result: ProbeResult) -> list[Row]:
        if result.measurement is None or result.outcome is Outcome.ERROR:
            return []
        spec = PROBES[result.probe]
        ident = (("gpu", str(result.gpu)), ("uuid", result.uuid), ("probe", result.probe))
        out = []
        for quantity, value in result.measurement.quantities.items():
            export = spec.quantities.get(quantity)
            if export is None:
                continue
            labels = dict(export.labels)
            if spec.pair:
                labels["peer_uuid"] = result.peer_uuid or ""
            out.append(Row(export.family, ident + tuple(labels.items()), value))
        return out

    def report(self) -> dict[str, Any]:
        """GET /probes: the last result of each probe on each GPU, and the last skip reason."""
        with self._lock:
            gpus = sorted(self._gpus.values(), key=lambda i: i.index)
            results = dict(self.results)
            skips = dict(self.last_skip)
        out = []
        for info in gpus:
            probes: dict[str, Any] = {}
            for (uuid, name, _peer), result in sorted(results.items()):
                if uuid == info.uuid:
                    probes.setdefault(name, []).append(result.to_dict())
            out.append({"gpu": info.index, "uuid": info.uuid, "model": info.facts.model,
                        "results": probes,
                        "last_skipped": {p: r for (u, p), r in skips.items() if u == info.uuid}})
        jobs = {}
        if self.scheduler is not None:
            for job in self.scheduler.get_jobs():
                jobs[job.id] = job.next_run_time.isoformat() if job.next_run_time else None
        return {"runtime": self.runtime, "disabled": self.disabled_reason, "gpus": out,
                "next_runs": jobs}
