"""The daemon: backends -> sampler -> publisher -> HTTP, started and stopped as one."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI

from .backends import OpenedBackends, open_backends
from .config import Settings, parse_listen_address
from .logs import WarnOnce
from .publisher import Publisher
from .sampler import Sampler
from .selfmetrics import BackendStatus, exporter_rows, price_rows
from .server import Readiness, ServerContext, create_app

log = logging.getLogger(__name__)


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
        statuses = [BackendStatus(b.name, True) for b, _ in self.opened.sources]
        statuses += [BackendStatus(n, False, r) for n, r in self.opened.failed.items()]
        self.backend_statuses = statuses
        price = settings.cost.gpu_hourly_price_dollars
        self.publisher = Publisher(warn_once=self.warn_once)
        self.publisher.add(lambda view: exporter_rows(view, statuses))
        if settings.collector_enabled("cost"):
            self.publisher.add(lambda view: price_rows(view, price))
        c = settings.collection
        self.sampler = Sampler(
            self.opened.sources,
            fast_interval=c.fast_interval,
            slow_interval=c.slow_interval,
            call_deadline=c.call_deadline,
            collector_enabled=settings.collector_enabled,
            on_cycle=self.publisher.publish,
            clock=clock,
            warn_once=self.warn_once,
        )

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.publisher.publish(None)
        self.sampler.start()
        log.info(
            "collecting",
            extra={
                "backends": ",".join(b.name for b, _ in self.opened.sources) or "none",
                "gpus": len(self.sampler.workers),
            },
        )

    def stop(self) -> None:
        self.sampler.stop()
        # Never release a vendor library while a call is still inside it.
        if self.sampler.calls_in_flight() == 0:
            for backend, _ in self.opened.sources:
                with contextlib.suppress(Exception):
                    backend.stop()

    # --- readiness ------------------------------------------------------------------------------
    def readiness(self) -> Readiness:
        view = self.sampler.view
        if view is None:
            return Readiness(False, "first collection cycle not done yet")
        age = self.clock() - view.fresh_at
        limit = self.settings.collection.staleness_limit()
        if age > limit:
            return Readiness(False, f"last collection {age:.1f}s ago, more than {limit:g}s")
        return Readiness(True, "")

    def summary(self) -> str:
        view = self.sampler.view
        gpus = len(view.gpus) if view else len(self.sampler.workers)
        up = sum(1 for g in view.gpus if g.up) if view else 0
        names = ", ".join(b.name for b, _ in self.opened.sources) or "no vendor library"
        return f"{gpus} GPU(s) through {names}; {up} up."

    def app(self) -> FastAPI:
        @contextlib.asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            self.start()
            try:
                yield
            finally:
                self.stop()

        app = create_app(
            ServerContext(
                publisher=self.publisher,
                readiness=self.readiness,
                telemetry_path=self.settings.web.telemetry_path,
                summary=self.summary,
            )
        )
        app.router.lifespan_context = lifespan
        return app

    def serve(self) -> None:
        import uvicorn

        host, port = parse_listen_address(self.settings.web.listen_address)
        config = uvicorn.Config(
            self.app(),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        uvicorn.Server(config).run()
