"""HTTP: /metrics serves prepared bytes; /healthz, /readyz and a landing page.

Handlers never compute metrics and never call a vendor library: they pick the bytes of the
current exposition for the negotiated format. Rendering a format for the first time after a
change happens in the thread pool, so the event loop stays free for other requests.
"""

from __future__ import annotations

import asyncio
import html
import logging
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from . import __version__
from .auth import FailureLimiter, require_bearer
from .exposition import gzip_accepted, negotiate
from .publisher import Publisher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str


@dataclass
class ServerContext:
    publisher: Publisher
    readiness: Callable[[], Readiness]
    telemetry_path: str = "/metrics"
    summary: Callable[[], str] = lambda: ""
    admin_token: str | None = None
    release: Callable[[str], Any] | None = None
    resume: Callable[[str], Any] | None = None
    probes: Any = None  # exporter.probing.ProbeService, when probes are enabled
    probe_token: str | None = None
    verdict: Callable[[], Any] | None = None  # -> health.verdict.NodeVerdict | None
    status_page: Callable[[], str] | None = None  # the HTML of "/"
    # Failed token attempts per client address, shared by every token-protected endpoint.
    token_limiter: FailureLimiter = field(default_factory=FailureLimiter)


MAX_BODY = 64 * 1024  # the largest request body read (POST /probes/run takes a few bytes)
MAX_HEADERS = 16 * 1024  # request line and headers; h11 enforces it only on slow deliveries
MAX_TARGET = 8 * 1024  # path and query


class RequestLimits:
    """ASGI middleware: 431 for headers over MAX_HEADERS bytes, 414 for a target over
    MAX_TARGET, before any route sees the request. uvicorn's h11 limit applies only while a
    request is incomplete: one that arrives in a single read is parsed whatever its size."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            refused = None
            if sum(len(k) + len(v) + 4 for k, v in scope["headers"]) > MAX_HEADERS:
                refused = 431, "request headers too large"
            elif len(scope.get("raw_path") or b"") + len(scope["query_string"]) > MAX_TARGET:
                refused = 414, "request target too long"
            if refused:
                response = JSONResponse({"detail": refused[1]}, status_code=refused[0],
                                        headers={"Connection": "close"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The request body, or 413 as soon as it is known to exceed `limit`: from its
    Content-Length before reading anything, else while reading (chunked)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise HTTPException(413, f"request body over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class ProbeRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    probe: str
    gpu: int | None = Field(None, ge=0, description="one GPU by index; all GPUs when absent")
    force: bool = Field(False, description="run even if the GPU is busy (skips the idle gate)")


def create_app(ctx: ServerContext) -> FastAPI:
    app = FastAPI(
        title="gpu-fleet-exporter",
        version=__version__,
        docs_url=None,  # Swagger UI pulls assets from a CDN: nothing we serve leaves the node
        redoc_url=None,
        redirect_slashes=False,  # /metrics/ is not /metrics: no redirects a scraper must follow
    )
    app.add_middleware(RequestLimits)
    from probes.registry import PROBES

    run_schema = ProbeRunRequest.model_json_schema()
    run_schema["properties"]["probe"]["enum"] = list(PROBES)  # documented; 404 otherwise

    @app.api_route(ctx.telemetry_path, methods=["GET", "HEAD"], include_in_schema=False)
    async def metrics(request: Request) -> Response:
        exposition = ctx.publisher.current
        fmt = negotiate(request.headers.get("accept"))
        compressed = gzip_accepted(request.headers.get("accept-encoding"))
        body = exposition.cached(fmt, compressed)
        if body is None:
            body = await run_in_threadpool(exposition.body, fmt, compressed)
        headers = {"Vary": "Accept, Accept-Encoding"}
        if compressed:
            headers["Content-Encoding"] = "gzip"
        return Response(body, media_type=fmt.content_type, headers=headers)

    @app.get("/healthz", response_class=PlainTextResponse, summary="The process is alive")
    async def healthz() -> str:
        return "ok\n"

    @app.get(
        "/readyz",
        response_class=PlainTextResponse,
        summary="Ready to be scraped: first cycle done and data fresh",
        responses={503: {"description": "not ready, with the reason"}},
    )
    async def readyz() -> Response:
        state = ctx.readiness()
        return PlainTextResponse(
            ("ready\n" if state.ready else f"not ready: {state.reason}\n"),
            status_code=200 if state.ready else 503,
        )

    async def _admin(request: Request, action: Callable[[str], Any] | None) -> JSONResponse:
        require_bearer(request, ctx.admin_token, "the admin API", "admin.token_file",
                       ctx.token_limiter)
        assert action is not None
        who = f"POST {request.url.path} from {request.client.host if request.client else '?'}"
        log.info("admin request", extra={"request": who})  # audit trail
        result = await run_in_threadpool(action, who)  # may wait for calls in flight
        body = asdict(result)
        refused = request.url.path.endswith("/release") and not result.released
        return JSONResponse(body, status_code=409 if refused else 200)

    @app.post("/admin/release", summary="Release the vendor libraries for a GPU reset or a "
              "driver upgrade", responses={401: {}, 403: {}, 409: {}, 429: {}})
    async def admin_release(request: Request) -> JSONResponse:
        return await _admin(request, ctx.release)

    @app.post("/admin/resume", summary="Resume collecting after a release",
              responses={401: {}, 403: {}, 429: {}})
    async def admin_resume(request: Request) -> JSONResponse:
        return await _admin(request, ctx.resume)

    @app.get("/health", summary="The health verdict of each GPU, with its reasons",
             responses={404: {}, 503: {"description": "no collection cycle done yet"}})
    async def health() -> JSONResponse:
        if ctx.verdict is None:
            raise HTTPException(404, "the health verdict is disabled (collectors.health)")
        verdict = ctx.verdict()
        if verdict is None:
            raise HTTPException(503, "no verdict yet: the first collection cycle is not done")
        # 200 whatever the verdict: the body says it; an admission check reads "status".
        return JSONResponse(verdict.to_dict())

    @app.get("/probes", summary="Last results of each probe on each GPU")
    async def probes_report() -> dict[str, Any]:
        if ctx.probes is None:
            raise HTTPException(404, "probes are disabled (probes.enabled)")
        return ctx.probes.report()

    @app.post("/probes/run", summary="Run a probe now",
              responses={400: {}, 401: {}, 403: {}, 404: {}, 409: {}, 413: {}, 422: {},
                         429: {}},
              # The body is read by hand (after the token check); the schema still says it.
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": run_schema}}}})
    async def probes_run(request: Request) -> JSONResponse:
        # The token first: an unauthenticated caller learns nothing, not even validation.
        require_bearer(request, ctx.probe_token, "triggering probes", "probes.token_file",
                       ctx.token_limiter)
        from probes.registry import PROBES
        from probes.runner import Busy

        try:
            body = ProbeRunRequest.model_validate_json(await read_body(request))
        except ValidationError as e:
            raise HTTPException(422, e.errors(include_url=False, include_input=False)) from None
        if ctx.probes is None:
            raise HTTPException(404, "probes are disabled (probes.enabled)")
        if body.probe not in PROBES:
            raise HTTPException(404, f"unknown probe {body.probe!r}; known: {', '.join(PROBES)}")
        gpus = None if body.gpu is None else [body.gpu]
        if gpus and not ctx.probes.targets(gpus):
            raise HTTPException(404, f"no GPU {body.gpu}")
        if PROBES[body.probe].pair and gpus:
            raise HTTPException(400, f"{body.probe} measures every pair of GPUs: leave out gpu")
        who = request.client.host if request.client else "?"
        log.info("probe run requested", extra={"probe": body.probe, "gpu": body.gpu, "by": who})
        try:
            results = await run_in_threadpool(ctx.probes.run, body.probe, gpus, body.force, True)
        except Busy as e:
            raise HTTPException(409, str(e)) from None
        return JSONResponse({"results": [r.to_dict() for r in results]})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def landing() -> HTMLResponse:
        # Rendered off the event loop: it walks every GPU's samples and the probe report.
        page = await run_in_threadpool(ctx.status_page) if ctx.status_page else \
            _landing_page(ctx)
        # The page loads nothing: say so to the browser too, so nothing can be made to.
        return HTMLResponse(page, headers={
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                       "base-uri 'none'; form-action 'none'; "
                                       "frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store"})

    return app


class QuietServer(uvicorn.Server):
    """uvicorn with a housekeeping tick of 0.5 s instead of 0.1 s.

    uvicorn wakes ten times a second to refresh its Date header and look for a shutdown
    request; on an idle exporter that alone is about 0.15 % of a core, on every node of the
    fleet. Every tick here does the once-a-second work (counter 0), so the Date header stays
    current, and a shutdown is still noticed within half a second.
    """

    TICK = 0.5

    def __init__(self, config: uvicorn.Config,
                 serving_tick: Callable[[], None] = lambda: None,
                 before_shutdown: Callable[[], None] = lambda: None) -> None:
        super().__init__(config)
        # Called every tick: the systemd watchdog's proof that the event loop runs (not named
        # on_tick: uvicorn has a method of that name).
        self.on_serving_tick = serving_tick
        self.before_shutdown = before_shutdown

    async def main_loop(self) -> None:
        while not await self.on_tick(0):
            self.on_serving_tick()
            await asyncio.sleep(self.TICK)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # First, before uvicorn waits (up to its graceful timeout) for requests in flight: a
        # probe triggered over HTTP waits on its child, so the child goes first and a SIGTERM
        # ends the daemon within seconds, not after the probe's own deadline.
        try:
            self.before_shutdown()
        finally:
            await super().shutdown(sockets)


def _landing_page(ctx: ServerContext) -> str:
    path = html.escape(ctx.telemetry_path)
    summary = html.escape(ctx.summary())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gpu-fleet-exporter</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:40rem}}</style>
</head><body>
<h1>gpu-fleet-exporter {html.escape(__version__)}</h1>
<p>{summary}</p>
<ul>
<li><a href="{path}">{path}</a>: metrics (Prometheus text or OpenMetrics, gzip)</li>
<li><a href="/healthz">/healthz</a>: the process is alive</li>
<li><a href="/readyz">/readyz</a>: first collection done and data fresh</li>
</ul>
</body></html>
"""
