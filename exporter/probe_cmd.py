"""`gpu-fleet-exporter probe`: run the probes once, without the daemon; the exit code decides.

It is the node admission check (an init container, a pre-job hook). The exit code is the
daemon's health verdict (exporter.health), judged on what this run saw: the telemetry at start
and end, the Xids of the window and the probes' results. 0 ok (warnings are printed), 1 at
least one GPU fails (a probe failure confirmed by a retry, a row-remap failure, a severe Xid,
...: quarantine the node), 3 unknown (no GPU, CuPy missing, a probe broke or could not run),
2 usage. Window-based reasons (sustained throttling, a slow link while busy) need the daemon's
history and are not judged here.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from probes.registry import PROBES
from probes.result import Outcome, ProbeResult

from .config import Settings
from .daemon import VENDOR_BACKENDS
from .events.kmsg import KmsgDevice
from .events.watcher import EventWatcher
from .health.engine import HealthEngine
from .health.verdict import NodeVerdict, Status
from .probing import ProbeService
from .sampler import Sampler

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_UNKNOWN = 0, 1, 2, 3


def run_probes(settings: Settings, opened: Any, gpus: list[int] | None,
               names: list[str] | None, force: bool, as_json: bool,
               window: float = 10.0) -> int:
    unknown = sorted(set(names or ()) - set(PROBES))
    if unknown:
        print(f"gpu-fleet-exporter: unknown probe(s) {', '.join(unknown)}; known: "
              f"{', '.join(PROBES)}", file=sys.stderr)
        return EXIT_USAGE
    c = settings.collection
    sampler = Sampler(opened.sources, fast_interval=c.fast_interval,
                      slow_interval=c.slow_interval, call_deadline=c.call_deadline,
                      collector_enabled=settings.collector_enabled)
    sampler.start(schedule=False)
    watcher = _watcher(settings, opened, sampler)
    try:
        view = sampler.run_cycle()
        return _run(settings, opened, sampler, view, watcher, gpus, names, force, as_json,
                    window)
    finally:
        if watcher is not None:
            watcher.stop()
        sampler.stop()
        if sampler.calls_in_flight() == 0:
            for backend, _ in opened.sources:
                backend.stop()


def _watcher(settings: Settings, opened: Any, sampler: Sampler) -> EventWatcher | None:
    """Xids during the check, from the kernel log (or NVML events, or the simulated node's
    scenario): for ecc_xid_scan. It keeps no state: the daemon's cursor is the daemon's."""
    vendor = any(b.name in VENDOR_BACKENDS for b, _ in opened.sources)

    def ids() -> dict[str, tuple[int, str]]:
        view = sampler.view
        return {g.uuid: (g.index, g.uuid) for g in view.gpus} if view else {}

    watcher = EventWatcher(ids, None, KmsgDevice(settings.events.kmsg_path),
                           kmsg_enabled=settings.events.kmsg and vendor)
    watcher.start(b for b, _ in opened.sources)
    return watcher


def _run(settings: Settings, opened: Any, sampler: Sampler, view: Any,
         watcher: EventWatcher | None, gpus: list[int] | None, names: list[str] | None,
         force: bool, as_json: bool, window: float) -> int:
    if not view.gpus:
        print("gpu-fleet-exporter: no GPU to probe", file=sys.stderr)
        return EXIT_UNKNOWN
    known = {g.index for g in view.gpus}
    if gpus and not set(gpus) <= known:
        print(f"gpu-fleet-exporter: no GPU {sorted(set(gpus) - known)}; this node has "
              f"{sorted(known)}", file=sys.stderr)
        return EXIT_USAGE
    # An admission check looks at the GPU as it is now: no quiet period to wait for.
    probe_settings = settings.probes.model_copy(update={"quiet_period": 0.0})
    sims = [b for b, _ in opened.sources if b.name == "sim"]
    runtime = settings.probes.runtime
    if runtime == "auto":
        runtime = "sim" if sims else "cuda"
    service = ProbeService(probe_settings, runtime,
                           (lambda g, p: sims[0].probe_values(g, p)) if sims else None,
                           xid_counts=watcher.xid_counts if watcher else dict)
    if service.disabled_reason:
        print(f"gpu-fleet-exporter: probes cannot run: {service.disabled_reason}",
              file=sys.stderr)
        return EXIT_UNKNOWN
    service.observe(view)
    health = HealthEngine(settings.health, watcher.recent if watcher else lambda since: (),
                          service.latest_results)
    health.observe(view)
    results: list[ProbeResult] = []
    skipped: list[dict[str, Any]] = []
    wanted = names or list(PROBES)
    started = time.monotonic()
    if "ecc_xid_scan" in wanted:
        service.run("ecc_xid_scan", gpus)  # the window starts: a baseline, not a verdict
    for name in wanted:
        if PROBES[name].in_process or (PROBES[name].pair and len(service.targets(gpus)) < 2):
            continue  # the scan judges at the end; one GPU has no pair to measure
        results += service.run(name, gpus, force)
    if "ecc_xid_scan" in wanted:
        # The observation window itself (not a synchronisation): watch for new faults.
        time.sleep(max(0.0, window - (time.monotonic() - started)))
    end = sampler.run_cycle()
    service.observe(end)
    health.observe(end)
    if "ecc_xid_scan" in wanted:
        results += service.run("ecc_xid_scan", gpus)
    verdict = health.evaluate(end)
    assert verdict is not None
    if gpus:
        verdict = NodeVerdict(tuple(g for g in verdict.gpus if g.gpu in gpus),
                              verdict.evaluated_at)
    index = {t.uuid: t.index for t in service.targets()}
    for (uuid, probe), reason in service.last_skip.items():
        skipped.append({"gpu": index.get(uuid), "uuid": uuid, "probe": probe, "reason": reason})
    code = exit_code(verdict, results, skipped)
    if as_json:
        print(json.dumps({"results": [r.to_dict() for r in results], "skipped": skipped,
                          "health": verdict.to_dict(), "exit_code": code}, indent=2))
    else:
        _table(results, skipped, index)
        _verdict_table(verdict)
    return code


def exit_code(verdict: NodeVerdict, results: list[ProbeResult],
              skipped: list[dict[str, Any]]) -> int:
    """DESIGN.md's table: a failing GPU wins over anything unknown; warnings exit 0."""
    if verdict.status is Status.FAIL:
        return EXIT_FAIL
    if skipped or not results or any(r.outcome in (Outcome.ERROR, Outcome.SKIPPED)
                                     for r in results):
        return EXIT_UNKNOWN
    return EXIT_OK


def _verdict_table(verdict: NodeVerdict) -> None:
    table = Table(title="health verdict", header_style="bold")
    for col in ("GPU", "Verdict", "Reasons"):
        table.add_column(col)
    style = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "red"}
    for g in verdict.gpus:
        reasons = "; ".join(f"{r.name} ({r.severity.label}): {r.detail}" for r in g.reasons)
        table.add_row(str(g.gpu), f"[{style[g.status]}]{g.status.label}[/]", reasons or "-")
    _console().print(table)


def _console() -> Console:
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # a log or a pipe: do not squeeze into 80 columns
    return console


def _figures(r: ProbeResult) -> str:
    if r.measurement is None:
        return "-"
    parts = []
    for q, v in r.measurement.quantities.items():
        if q.endswith("_bytes_per_second"):
            parts.append(f"{q.removesuffix('_bytes_per_second')} {v / 1e9:.1f} GB/s")
        elif q.endswith("_flop_per_second"):
            parts.append(f"{q.removesuffix('_flop_per_second')} {v / 1e12:.0f} TFLOP/s")
        elif q.endswith("_seconds"):
            parts.append(f"{q.removesuffix('_seconds')} {v * 1e3:.3g} ms")
        else:
            parts.append(f"{q} {v:.3g}")
    if r.measurement.corrupted is not None:
        parts.append(f"corrupted {r.measurement.corrupted}")
    return ", ".join(parts)


def _table(results: list[ProbeResult], skipped: list[dict[str, Any]],
           index: dict[str, int]) -> None:
    table = Table(title="gpu-fleet-exporter probe", header_style="bold")
    for col in ("GPU", "Probe", "Outcome", "Figures", "Start s", "Measure s", "Reason"):
        table.add_column(col)
    style = {Outcome.PASS: "green", Outcome.FAIL: "red", Outcome.ERROR: "red",
             Outcome.SKIPPED: "yellow"}
    for r in results:
        outcome = r.outcome.value + (" (warn)" if r.warn else "")
        gpu = str(r.gpu) + (f" -> {index.get(r.peer_uuid, '?')}" if r.peer_uuid else "")
        m = r.measurement
        table.add_row(gpu, r.probe, f"[{style[r.outcome]}]{outcome}[/]", _figures(r),
                      f"{m.start_seconds:.2f}" if m else "-",
                      f"{m.measure_seconds:.3f}" if m else "-", r.reason or "")
    for s in skipped:
        table.add_row(str(s["gpu"]), s["probe"], "[yellow]skipped[/]", "-", "-", "-",
                      s["reason"])
    _console().print(table)
