"""The daemon: backends -> sampler -> publisher -> HTTP, started and stopped as one.

It also owns the lifecycle around the vendor libraries: re-initialization after failures
(`recovery`), vendor libraries that appear after start (`auto` keeps looking), and the
release for repairs (SIGUSR1 or POST /admin/release) with its resume (SIGUSR2, POST
/admin/resume, or a timeout).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI

from . import __version__
from .backends import AUTO_ORDER, OpenedBackends, open_backend, open_backends
from .backends.base import BackendUnavailable
from .config import Settings, parse_listen_address
from .devfiles import open_device_files
from .events.kmsg import KmsgDevice, RecordFile
from .events.watcher import EventWatcher
from .events.xid_parse import normalize_bus_id
from .exposition import Row
from .health.engine import HealthEngine
from .health.verdict import NodeVerdict, Status
from .hostfacts import HostFactsReader
from .logs import WarnOnce
from .probing import ProbeService
from .publisher import Publisher
from .recovery import Recovery
from .sampler import PASS_DEADLINE_CALLS, Sampler, SamplerView
from .sdnotify import Supervision
from .selfmetrics import BackendStatus, exporter_rows, price_rows
from .server import QuietServer, Readiness, ServerContext, create_app
from .statuspage import StatusPageData, render_status_page

log = logging.getLogger(__name__)


def node_name() -> str:
    """The Kubernetes node (the chart passes NODE_NAME from the downward API), else the host."""
    return os.environ.get("NODE_NAME") or socket.gethostname()


VENDOR_BACKENDS = ("nvml", "amdsmi")
DISCOVERY_INTERVAL = 60.0  # how often `auto` looks again for a vendor library that was missing


@dataclass
class ReleaseResult:
    released: bool
    detail: str
    device_files_open: list[str] = field(default_factory=list)


class Daemon:
    def __init__(
        self,
        settings: Settings,
        opened: OpenedBackends | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.warn_once = WarnOnce()
        self.opened = opened if opened is not None else open_backends(settings)
        self.admin_token = settings.admin.token()
        self.lifecycle_lock = threading.Lock()
        self.released_at: float | None = None
        self._next_discovery = clock() + DISCOVERY_INTERVAL
        self.publisher = Publisher(warn_once=self.warn_once)
        self.publisher.add(self._exporter_rows)
        if settings.collector_enabled("cost"):
            price = settings.cost.gpu_hourly_price_dollars
            self.publisher.add(lambda view: price_rows(view, price))
        c = settings.collection
        self.sampler = Sampler(
            self.opened.sources,
            fast_interval=c.fast_interval,
            slow_interval=c.slow_interval,
            call_deadline=c.call_deadline,
            collector_enabled=settings.collector_enabled,
            on_cycle=self._on_cycle,
            clock=clock,
            warn_once=self.warn_once,
        )
        self.recovery = Recovery(self.sampler, self.lifecycle_lock, clock)
        self.sampler.after_cycle += [self.recovery.after_cycle, self._discover,
                                     self._resume_when_due]
        self.pods: Any = None  # kubelet.PodAttribution, when attribution is wanted
        k = settings.kubernetes
        if settings.collector_enabled("pods") and k.wanted():
            from .kubelet import PodAttribution  # imports grpc: only on Kubernetes nodes

            self.pods = PodAttribution(
                socket_path=str(k.pod_resources_socket), timeout=k.call_timeout,
                interval=k.refresh_interval, keep_stale=k.keep_stale,
                on_change=self.publisher.refresh, per_process=k.per_process,
                log_root=k.log_dir)
            self.publisher.add(self.pods.rows)
        self.probes: ProbeService | None = None
        if settings.probes.enabled and settings.collector_enabled("probes"):
            self.probes = self._probe_service()
            self.publisher.add(self.probes.rows)
            self.sampler.after_cycle.append(lambda: self.probes.observe(self.sampler.view))
        self.probe_token = settings.probes.token()
        self.systemd = Supervision.disabled()  # sd_notify readiness and watchdog under systemd
        self.events: EventWatcher | None = None
        if settings.collector_enabled("events"):
            e = settings.events
            # The kernel log speaks of real GPUs only: a simulated node (or a test) neither
            # reads the host's log nor writes state there.
            vendor = any(b.name in VENDOR_BACKENDS for b, _ in self.opened.sources)
            self.events = EventWatcher(
                self._gpu_ids, e.state_dir if vendor else None,
                RecordFile(e.kmsg_path) if e.kmsg_path.is_file() else KmsgDevice(e.kmsg_path),
                kmsg_enabled=e.kmsg and vendor, on_change=self.publisher.refresh)
            self.publisher.add(self.events.rows)
        self.host_facts: HostFactsReader | None = None
        if settings.collector_enabled("checklist"):
            self.host_facts = HostFactsReader(max_age=c.slow_interval)
            self.publisher.add(self.host_facts.rows)
        self.health: HealthEngine | None = None
        if settings.collector_enabled("health"):
            events, probes = self.events, self.probes
            self.health = HealthEngine(
                settings.health,
                occurrences=events.recent if events else lambda since: (),
                probe_results=probes.latest_results if probes else tuple,
                clock=clock)
            self.publisher.add(self.health.rows)  # last: reads what the others hold

    def _on_cycle(self, view: SamplerView) -> None:
        if self.health is not None:
            self.health.observe(view)  # before rendering: the verdict sees this very cycle
        self.publisher.publish(view)

    def _probe_service(self) -> ProbeService:
        sims = [b for b, _ in self.opened.sources if b.name == "sim"]
        runtime = self.settings.probes.runtime
        if runtime == "auto":
            runtime = "sim" if sims else "cuda"

        def sim_overrides(gpu: int, probe: str) -> dict[str, float | str]:
            return sims[0].probe_values(gpu, probe) if sims else {}  # type: ignore[attr-defined]

        def allocations(view: SamplerView) -> dict[str, set[tuple[str, str, str]]] | None:
            if self.pods is None:
                return {}
            return self.pods.allocated(view) if self.pods.allocation_known else None

        return ProbeService(self.settings.probes, runtime, sim_overrides,
                            on_change=self.publisher.refresh, clock=self.clock,
                            xid_counts=lambda: self.events.xid_counts() if self.events else {},
                            allocations=allocations)

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.publisher.publish(None)
        if self.pods is not None:
            self.pods.start()
        self.sampler.start()
        if self.probes is not None:
            self.probes.start()
        if self.events is not None:
            self.events.start(b for b, _ in self.opened.sources)
        log.info("collecting", extra={
            "backends": ",".join(s.backend.name for s in self.sampler.sources) or "none",
            "gpus": len(self.sampler.workers)})

    def stop(self) -> None:
        if self.pods is not None:
            self.pods.stop(timeout=1.0)
        if self.probes is not None:
            self.probes.stop()  # kills any probe child: nothing is left running
        if self.events is not None:
            self.events.stop()
        self.sampler.stop()
        # Never release a vendor library while a call is still inside it (a read on a worker,
        # or a restart hung in nvmlInit on the coordinator).
        if self.sampler.calls_in_flight() == 0 and not self.recovery.restarting:
            for source in self.sampler.sources:
                with contextlib.suppress(Exception):
                    source.backend.stop()

    # --- release for repairs --------------------------------------------------------------------
    @property
    def released(self) -> bool:
        return self.released_at is not None

    def release(self, requested_by: str) -> ReleaseResult:
        """Stop collecting and shut the vendor libraries down, so a GPU can be reset or the
        driver upgraded without stopping the daemon. Resumes by itself after
        `admin.release_timeout`."""
        with self.lifecycle_lock:
            if self.released:
                return ReleaseResult(True, "already released", open_device_files())
            self.sampler.pause("released for repairs")
            if self.probes is not None:
                # A probe child holds a CUDA context: it would block the reset as surely as we.
                self.probes.pause("released for repairs")
            if not self.sampler.wait_idle(self.settings.admin.release_wait):
                self.sampler.unpause()
                if self.probes is not None:
                    self.probes.resume()
                detail = ("a vendor library call is still in flight (a GPU is stuck); the "
                          "library cannot be shut down safely: stop the daemon instead")
                log.warning("release refused", extra={"by": requested_by, "detail": detail})
                return ReleaseResult(False, detail, open_device_files())
            for source in self.sampler.sources:
                source.backend.stop()
            self.released_at = self.clock()
        still_open = open_device_files()
        self.publisher.refresh()
        log.warning("vendor libraries released for repairs", extra={
            "by": requested_by, "auto_resume_seconds": self.settings.admin.release_timeout,
            "device_files_open": ",".join(still_open) or "none"})
        return ReleaseResult(True, "released", still_open)

    def resume(self, requested_by: str) -> ReleaseResult:
        with self.lifecycle_lock:
            if not self.released:
                return ReleaseResult(False, "not released")
            for source in self.sampler.sources:
                try:
                    source.backend.start()
                    self.sampler.reconcile(source, source.backend.devices())
                    source.healthy = True
                except Exception as e:  # recovery keeps trying with backoff
                    source.needs_reinit, source.healthy = True, False
                    log.warning("backend did not come back after release",
                                extra={"backend": source.backend.name, "error": str(e)})
            self.released_at = None
            self.sampler.unpause()
            if self.probes is not None:
                self.probes.resume()
            # The repairs the release was for are done: held Xids and windows start over.
            if self.events is not None:
                self.events.settle(requested_by)
            if self.health is not None:
                self.health.settle()
        log.warning("vendor libraries resumed", extra={"by": requested_by})
        self.publisher.refresh()
        return ReleaseResult(False, "resumed")

    def _resume_when_due(self) -> None:
        at = self.released_at
        if at is not None and self.clock() - at >= self.settings.admin.release_timeout:
            self.resume("release timeout")

    def install_signal_handlers(self) -> None:
        """SIGUSR1 releases, SIGUSR2 resumes; the work runs on a thread, never in the handler
        (a release waits for calls in flight, which must not block the event loop). SIGHUP
        does not reload the configuration, and says so instead of killing the daemon (the
        default action of SIGHUP): settings are read once, a restart applies new ones."""
        def spawn(action: Callable[[str], ReleaseResult], name: str) -> Callable[..., None]:
            return lambda *_: threading.Thread(target=action, args=(name,), daemon=True).start()

        signal.signal(signal.SIGUSR1, spawn(self.release, "SIGUSR1"))
        signal.signal(signal.SIGUSR2, spawn(self.resume, "SIGUSR2"))
        signal.signal(signal.SIGHUP, lambda *_: log.warning(
            "SIGHUP ignored: the configuration is not reloaded; restart the daemon to apply "
            "changes (systemctl restart gpu-fleet-exporter, or roll the DaemonSet)"))

    # --- vendor libraries that appear later -----------------------------------------------------
    def _discover(self) -> None:
        if self.settings.collection.backend != "auto" or not self.opened.failed:
            return
        if self.released or self.clock() < self._next_discovery:
            return
        self._next_discovery = self.clock() + DISCOVERY_INTERVAL
        for name in [n for n in AUTO_ORDER if n in self.opened.failed]:
            try:
                backend, devices = open_backend(name, self.settings)
            except BackendUnavailable as e:
                self.opened.failed[name] = str(e)
                continue
            del self.opened.failed[name]
            self.sampler.add_source(backend, devices)
            if self.events is not None:
                self.events.add_backend(backend)  # its events too, from now on
            log.info("vendor library appeared", extra={"backend": name, "gpus": len(devices)})

    def _gpu_ids(self) -> dict[str, tuple[int, str]]:
        """Bus id (normalized) and uuid -> (index, uuid), from the latest telemetry."""
        ids: dict[str, tuple[int, str]] = {}
        view = self.sampler.view
        for gpu in view.gpus if view else ():
            ids[gpu.uuid] = (gpu.index, gpu.uuid)
            for s in gpu.samples:
                if s.family == "gpu_info" and (bus := dict(s.labels).get("pci_bus_id")):
                    ids[normalize_bus_id(bus)] = (gpu.index, gpu.uuid)
        return ids

    # --- what the HTTP side reads ---------------------------------------------------------------
    def backend_statuses(self) -> list[BackendStatus]:
        statuses = [BackendStatus(s.backend.name, s.healthy and not self.released)
                    for s in list(self.sampler.sources)]
        # A copy: discovery (coordinator thread) removes entries while others render.
        statuses += [BackendStatus(n, False, r) for n, r in dict(self.opened.failed).items()]
        return statuses

    def _exporter_rows(self, view: SamplerView | None) -> list[Row]:
        rows = list(exporter_rows(view, self.backend_statuses()))
        rows.append(Row("gpu_exporter_released", (), 1.0 if self.released else 0.0))
        return rows

    def readiness(self) -> Readiness:
        if self.released:
            return Readiness(True, "")  # released on purpose: do not restart or unschedule it
        view = self.sampler.view
        if view is None:
            return Readiness(False, "first collection cycle not done yet")
        age = self.clock() - view.fresh_at
        limit = self.settings.collection.staleness_limit()
        if age > limit:
            return Readiness(False, f"last collection {age:.1f}s ago, more than {limit:g}s")
        if self.settings.health.gate_readiness and (verdict := self.verdict()) is not None:
            failing = verdict.failing()
            if failing:
                what = "; ".join(
                    f"GPU {g.gpu} fails: "
                    f"{', '.join(r.name for r in g.reasons if r.severity is Status.FAIL)}"
                    for g in failing)
                return Readiness(False, f"{what} (health.gate_readiness)")
        return Readiness(True, "")

    def verdict(self) -> NodeVerdict | None:
        return self.health.current if self.health is not None else None

    def status_page(self) -> str:
        return render_status_page(StatusPageData(
            node=node_name(), version=__version__, summary=self.summary(),
            verdict=self.verdict(), view=self.sampler.view,
            probes=self.probes.report() if self.probes is not None else None,
            host=self.host_facts.facts if self.host_facts is not None else None,
            telemetry_path=self.settings.web.telemetry_path))

    def summary(self) -> str:
        view = self.sampler.view
        gpus = len(view.gpus) if view else len(self.sampler.workers)
        up = sum(1 for g in view.gpus if g.up) if view else 0
        names = ", ".join(s.backend.name for s in self.sampler.sources) or "no vendor library"
        state = " Released for repairs." if self.released else ""
        return f"{gpus} GPU(s) through {names}; {up} up.{state}"

    def app(self) -> FastAPI:
        @contextlib.asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            self.start()
            try:
                yield
            finally:
                self.systemd.stopping()
                self.stop()

        app = create_app(ServerContext(
            publisher=self.publisher,
            readiness=self.readiness,
            telemetry_path=self.settings.web.telemetry_path,
            summary=self.summary,
            admin_token=self.admin_token,
            release=self.release,
            resume=self.resume,
            probes=self.probes,
            probe_token=self.probe_token,
            verdict=self.verdict if self.health is not None else None,
            status_page=self.status_page,
        ))
        app.router.lifespan_context = lifespan
        return app

    def server(self, host: str | None = None, port: int | None = None) -> QuietServer:
        """The HTTP server, with the web config (TLS, basic auth, headers) applied; `serve`
        runs it. A bad web config raises ConfigError (exit code 2)."""
        import uvicorn

        from .webconfig import apply_web_config, load_web_config

        if host is None or port is None:
            host, port = parse_listen_address(self.settings.web.listen_address)
        path = self.settings.web.config_file
        web = apply_web_config(load_web_config(path) if path else None, self.app())
        config = uvicorn.Config(
            web.app, host=host, port=port, log_config=None, access_log=False,
            server_header=False, timeout_graceful_shutdown=5, **web.config_kwargs,
        )

        def tick() -> None:
            self.systemd.serving_tick()
            web.tick()  # certificate reload: on the loop, where handshakes start

        def before_shutdown() -> None:
            if self.probes is not None:
                self.probes.pause("the daemon is stopping", final=True)  # kills a child now

        return QuietServer(config, serving_tick=tick, before_shutdown=before_shutdown)

    def serve(self) -> None:
        server = self.server()
        c = self.settings.collection
        self.systemd = Supervision.from_environ(
            max_cycle_gap=c.fast_interval + PASS_DEADLINE_CALLS * c.call_deadline)
        # Last hook: a wedge in any earlier one stops the watchdog pings too.
        self.sampler.after_cycle.append(self.systemd.cycle_hook(self.sampler, self.summary))
        self.install_signal_handlers()
        server.run()
