"""The status page: the renderer alone (escaping, empty and down states, no outside reference),
and the page as a browser shows it (headless Chromium over real uvicorn, desktop and phone).

Screenshots of both sizes are kept in $TEST_ARTIFACTS_DIR (default artifacts/) for CI.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from browser import Browser, find_chromium
from conftest import REPO, wait_for
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from exporter.backends.base import sample
from exporter.backends.sim import SimBackend
from exporter.health.verdict import GpuVerdict, NodeVerdict, Reason, Status
from exporter.sampler import Sampler, SamplerView
from exporter.statuspage import StatusPageData, render_status_page
from probes.result import Measurement, Outcome, ProbeResult

NOW = 1_760_000_000.0
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR") or REPO / "artifacts")


@dataclasses.dataclass(frozen=True)
class _Host:
    """Stands in for exporter.hostfacts.HostFacts: the page reads it by attribute name."""

    kernel: str = "6.8.0-60-generic"
    iommu: str = "passthrough"
    aspm_policy: str = "default"
    cpu_governor: str = "performance"
    transparent_hugepages: str = "madvise"
    hugepages: dict[int, int] = dataclasses.field(default_factory=lambda: {2 * 2**20: 0, 2**30: 8})


def _sim_view(gpus: int = 4) -> SamplerView:
    """One real collection cycle of the simulated node: realistic telemetry."""
    backend = SimBackend(gpus=gpus, seed=7)
    backend.start()
    sampler = Sampler([(backend, backend.devices())], fast_interval=60, slow_interval=60,
                      call_deadline=5)
    sampler.start(schedule=False)
    try:
        return sampler.run_cycle()
    finally:
        sampler.stop()
        backend.stop()


def _result(probe: str, gpu: int, uuid: str, outcome: Outcome, age: float,
            reason: str = "") -> dict[str, Any]:
    return ProbeResult(probe, gpu, uuid, outcome, reason=reason, measurement=Measurement(),
                       started_at=NOW - age, total_seconds=4.2).to_dict()


def _data(view: SamplerView) -> StatusPageData:
    """GPU 2 fell off the bus (down, fail), GPU 1 has a row remap pending (warn)."""
    states = list(view.gpus)
    states[2] = dataclasses.replace(
        states[2], up=False, down_reason="GPU is lost (fell off the bus)",
        samples=tuple(s for s in states[2].samples if s.family == "gpu_info"))
    # GPU 3 is held back by HW thermal slowdown (shown) while idle (not worth showing).
    states[3] = dataclasses.replace(states[3], samples=tuple(
        dataclasses.replace(s, value=1.0) if s.family == "gpu_clock_event_active"
        and dict(s.labels)["reason"] in ("hw_thermal_slowdown", "gpu_idle") else s
        for s in states[3].samples))
    view = dataclasses.replace(view, gpus=tuple(states))
    reasons = {
        1: (Reason("row_remap_pending", Status.WARN, "a row remap is pending: reset the GPU",
                   since=NOW - 7200),),
        2: (Reason("fell_off_bus", Status.FAIL, "Xid 79: GPU has fallen off the bus",
                   since=NOW - 300),),
    }
    verdict = NodeVerdict(gpus=tuple(GpuVerdict(g.index, g.uuid, reasons.get(g.index, ()))
                                     for g in view.gpus), evaluated_at=NOW)
    uuid = {g.index: g.uuid for g in view.gpus}
    probes = {"runtime": "sim", "disabled": None, "next_runs": {}, "gpus": [
        {"gpu": 0, "uuid": uuid[0], "model": "", "last_skipped": {},
         "results": {"gemm": [_result("gemm", 0, uuid[0], Outcome.PASS, 180)]}},
        {"gpu": 3, "uuid": uuid[3], "model": "", "last_skipped": {"gemm": "GPU busy"},
         "results": {"pcie_bandwidth": [_result(
             "pcie_bandwidth", 3, uuid[3], Outcome.FAIL, 600,
             "h2d_bytes_per_second 20.1e9 below the minimum 40e9")]}},
    ]}
    return StatusPageData(node="gpu-node-17", version="0.1.0",
                          summary="sim backend, 4 GPUs, cycle 1", verdict=verdict, view=view,
                          probes=probes, host=_Host(), generated_at=NOW)


@pytest.fixture(scope="module")
def data() -> StatusPageData:
    return _data(_sim_view())


# --- the renderer alone ---------------------------------------------------------------------------
def test_markup_in_model_reason_and_node_is_escaped(data: StatusPageData) -> None:
    evil_model = '<script>alert("model")</script>'
    evil_detail = '<img src=x onerror="alert(1)">'
    assert data.view is not None and data.verdict is not None
    gpu0 = data.view.gpus[0]
    info = [sample("gpu_info", 1, model=evil_model)]
    states = (dataclasses.replace(gpu0, samples=(*info, *gpu0.samples[1:])),
              *data.view.gpus[1:])
    gv = dataclasses.replace(data.verdict.gpus[0], reasons=(
        Reason("xid_<b>", Status.FAIL, evil_detail),))
    page = render_status_page(dataclasses.replace(
        data, node="<i>node</i>", view=dataclasses.replace(data.view, gpus=states),
        verdict=dataclasses.replace(data.verdict, gpus=(gv, *data.verdict.gpus[1:]))))
    assert "<script" not in page and "<img" not in page and "<i>" not in page
    assert "<b>" not in page.split("xid_", 1)[1][:10]
    assert "&lt;script&gt;alert(&quot;model&quot;)" in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page


def test_no_collection_yet(data: StatusPageData) -> None:
    page = render_status_page(dataclasses.replace(data, verdict=None, view=None, probes=None))
    assert "No collection yet" in page
    assert "data-gpu=" not in page
    assert 'data-node-status="unknown"' in page
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert '<meta http-equiv="refresh" content="15">' in page


def test_down_gpu_shows_why_and_no_telemetry(data: StatusPageData) -> None:
    page = render_status_page(data)
    row = _row_html(page, 2)
    assert "down: GPU is lost (fell off the bus)" in row
    assert "fell_off_bus" in row and 'data-status="fail"' in row
    assert " °C" not in row and "MHz" not in row  # values of a down GPU are absent, not stale
    assert "- / -" not in row and ">none<" not in row.split('data-label="Clock events"')[1]
    assert "MHz" in _row_html(page, 0)


def test_clock_events_show_active_reasons_but_not_idle(data: StatusPageData) -> None:
    page = render_status_page(data)
    gpu3 = _row_html(page, 3).split('data-label="Clock events"')[1].split("</td>")[0]
    assert '<span class="tag">hw_thermal_slowdown</span>' in gpu3 and "gpu_idle" not in gpu3
    gpu0 = _row_html(page, 0).split('data-label="Clock events"')[1].split("</td>")[0]
    assert ">none<" in gpu0


def test_probe_outcomes_with_age_and_reason(data: StatusPageData) -> None:
    page = render_status_page(data)
    assert re.search(r'class="pill ok">pass</span> gemm <small>3 min ago</small>',
                     _row_html(page, 0))
    gpu3 = _row_html(page, 3)
    assert re.search(r'class="pill fail">fail</span> pcie_bandwidth <small>10 min ago', gpu3)
    assert "below the minimum" in gpu3
    assert re.search(r"skipped</span> gemm<small[^>]*>GPU busy", gpu3)
    assert "Probes are off" in render_status_page(dataclasses.replace(data, probes=None))


def test_header_counts_and_facts(data: StatusPageData) -> None:
    page = render_status_page(data)
    header = page.split("<header", 1)[1].split("</header>", 1)[0]
    assert 'data-node-status="fail"' in header
    assert re.search(r'<li class="ok"><b>2</b> ok</li><li class="warn"><b>1</b> warn</li>'
                     r'<li class="fail"><b>1</b> fail</li>', header)
    assert "kernel <b>6.8.0-60-generic</b>" in header and "8×1 GiB" in header


def test_nothing_points_outside_the_origin(data: StatusPageData) -> None:
    page = render_status_page(data)
    assert "http://" not in page and "https://" not in page
    refs = re.findall(r'\b(?:src|href|action)\s*=\s*"([^"]*)"', page)
    assert refs, "expected the footer's links"
    assert all(not re.match(r"^([a-z][a-z0-9+.-]*:|//|/)", r, re.I) for r in refs), refs
    assert set(refs) == {"metrics", "health", "probes"}
    assert "url(" not in page and "@import" not in page and "<script" not in page


def _row_html(page: str, gpu: int) -> str:
    match = re.search(rf'<tr [^>]*data-gpu="{gpu}"[^>]*>.*?</tr>', page, re.S)
    assert match, f"no row for GPU {gpu}"
    return match.group(0)


# --- in a browser ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def page_url(data: StatusPageData) -> Iterator[str]:
    """The page under real uvicorn on a free loopback port, and a page that leaks on purpose
    (the driver's request recording must see a request to another origin)."""
    app = FastAPI()

    @app.get("/", response_class=HTMLResponse)
    def status() -> str:
        return render_status_page(data)

    @app.get("/leaky", response_class=HTMLResponse)
    def leaky() -> str:
        return '<!doctype html><img src="http://127.0.0.1:9/pixel.png" alt="">'

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None,
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, what="uvicorn to start")
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser(find_chromium()) as b:
        yield b


_ROWS_JS = """Array.from(document.querySelectorAll('tr[data-gpu]')).map(r => ({
  gpu: r.dataset.gpu, status: r.dataset.status, cls: r.className, text: r.innerText,
  height: r.getBoundingClientRect().height, right: r.getBoundingClientRect().right,
  badge: getComputedStyle(r.querySelector('.badge')).backgroundColor}))"""


def _check_page(browser: Browser, url: str) -> list[dict[str, Any]]:
    """What both sizes must show: every GPU, the right statuses, nothing outside the origin."""
    rows = browser.evaluate(_ROWS_JS)
    assert [r["gpu"] for r in rows] == ["0", "1", "2", "3"]
    assert all(r["height"] > 0 for r in rows), "a GPU row is not rendered"
    by_gpu = {r["gpu"]: r for r in rows}
    assert {g: r["status"] for g, r in by_gpu.items()} == {
        "0": "ok", "1": "warn", "2": "fail", "3": "ok"}
    assert "fail" in by_gpu["2"]["cls"].split()
    # innerText holds only rendered text: the reason and the down reason are visible.
    assert "fell_off_bus" in by_gpu["2"]["text"] and "fallen off the bus" in by_gpu["2"]["text"]
    assert "row_remap_pending" in by_gpu["1"]["text"]
    assert "FAIL" in by_gpu["2"]["text"].upper()  # the word, not only the colour
    assert len({by_gpu[g]["badge"] for g in "012"}) == 3  # fail, ok, warn look different
    header = browser.evaluate(
        "[document.querySelector('header').dataset.nodeStatus,"
        " document.querySelector('header h1 .badge').innerText]")
    assert header[0] == "fail" and header[1].lower() == "fail"
    origin = url.rstrip("/")
    assert url in browser.requests  # the recording works: the document itself is in it
    outside = [u for u in browser.requests if not (u == origin or u.startswith(origin + "/"))]
    assert not outside, f"requests left the page's origin: {outside}"
    return rows


def test_browser_desktop(browser: Browser, page_url: str) -> None:
    browser.load(page_url, width=1280, height=900)
    _check_page(browser, page_url)
    assert browser.evaluate("getComputedStyle(document.querySelector('table')).display") \
        == "table"
    shot = browser.screenshot(ARTIFACTS / "status-page-desktop.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_browser_phone(browser: Browser, page_url: str) -> None:
    browser.load(page_url, width=390, height=844, mobile=True, scale=2)
    rows = _check_page(browser, page_url)
    width = browser.evaluate("window.innerWidth")
    assert width == 390  # the viewport meta took effect (no 980px desktop layout)
    assert browser.evaluate("document.documentElement.scrollWidth") <= width
    # Stacked cards: no table header, each GPU a block that fits the screen.
    assert browser.evaluate("getComputedStyle(document.querySelector('thead')).display") \
        == "none"
    assert all(r["right"] <= width for r in rows)
    shot = browser.screenshot(ARTIFACTS / "status-page-phone.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_driver_sees_a_request_to_another_origin(browser: Browser, page_url: str) -> None:
    """The origin check above can fail: a page that leaks is caught by the same recording."""
    browser.load(page_url + "leaky", width=800, height=600)
    assert "http://127.0.0.1:9/pixel.png" in browser.requests


def test_generated_at_is_now_by_default() -> None:
    before = time.time()
    data = StatusPageData(node="n", version="v", summary="", verdict=None)
    assert before <= data.generated_at <= time.time()


# --- the real daemon's page -----------------------------------------------------------------------
DAEMON_FAULTS = """faults:
  - {kind: lost, gpu: 2, at: 0s, fell_off_bus: true}
  - {kind: row_remap_pending, gpu: 1, at: 0s}
"""


@pytest.fixture
def daemon_url(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """The daemon on the simulated node (4 GPUs, GPU 2 off the bus, GPU 1 with a pending
    remap) under real uvicorn: the page as an operator gets it, probes and events on."""
    import httpx
    from e2e_stack import sim_node

    with sim_node(tmp_path, DAEMON_FAULTS, {"collection": {
            "fast_interval": 0.05, "slow_interval": 0.2, "call_deadline": 0.5}},
            gpus=4, seed=5) as (base, daemon):
        url = base + "/"

        def verdict() -> dict[int, str]:
            r = httpx.get(url + "health", timeout=5)
            return {g["gpu"]: g["status"] for g in r.json()["gpus"]} if r.status_code == 200 \
                else {}

        wait_for(lambda: verdict() == {0: "ok", 1: "warn", 2: "fail", 3: "ok"},
                 what="the fault scenario in the verdict")
        yield url, daemon


def test_daemon_status_page_in_browser(browser: Browser, daemon_url: tuple[str, Any]) -> None:
    """The page the daemon serves at /, rendered by Chromium: every GPU of the node, the GPU
    that fell off the bus marked failing with its reason, the same statuses as /health, and no
    request leaving the origin (the page's CSP forbids any, and none is attempted)."""
    url, daemon = daemon_url
    browser.load(url, width=1280, height=900)
    rows = browser.evaluate(_ROWS_JS)
    assert [r["gpu"] for r in rows] == ["0", "1", "2", "3"]
    statuses = {int(r["gpu"]): r["status"] for r in rows}
    verdict = daemon.verdict()
    assert statuses == {g.gpu: g.status.label for g in verdict.gpus}
    assert statuses[2] == "fail" and "fail" in rows[2]["cls"].split()
    assert "fell_off_bus" in rows[2]["text"]
    assert "row_remap_pending" in rows[1]["text"]
    origin = url.rstrip("/")
    outside = [u for u in browser.requests if not (u == origin or u.startswith(origin + "/"))]
    assert url in browser.requests and not outside, browser.requests
    shot = browser.screenshot(ARTIFACTS / "status-page-daemon.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
