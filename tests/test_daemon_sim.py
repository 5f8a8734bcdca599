"""End to end on the simulated node: real uvicorn, real HTTP, scenario faults, real promtool.

Order of events, not durations: the scrape completes while a sim call is still blocked on its
event; releasing the event brings the GPU back.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from conftest import require_tool, wait_for
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter.backends import OpenedBackends
from exporter.backends.sim import SimBackend, load_scenario
from exporter.config import load_settings
from exporter.daemon import Daemon

OM = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


class Running:
    def __init__(self, daemon: Daemon, backend: SimBackend, url: str) -> None:
        self.daemon, self.backend, self.url = daemon, backend, url

    def scrape(self, accept: str = "text/plain") -> dict[tuple[str, frozenset], float]:
        r = httpx.get(self.url + "/metrics", headers={"accept": accept}, timeout=5)
        assert r.status_code == 200
        parse = parse_om if "openmetrics" in accept else parse_text
        return {(s.name, frozenset(s.labels.items())): s.value
                for fam in parse(r.text) for s in fam.samples}

    def gpu_up(self) -> dict[str, float]:
        return {dict(labels)["gpu"]: v for (name, labels), v in self.scrape().items()
                if name == "gpu_up"}

    def cycle(self) -> int:
        view = self.daemon.sampler.view
        return view.cycle if view else 0


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    started: list[tuple[uvicorn.Server, threading.Thread, Daemon]] = []

    def start(scenario_text: str | None = None, gpus: int = 4, **collection) -> Running:
        scenario = None
        if scenario_text is not None:
            path = tmp_path / "scenario.yaml"
            path.write_text(scenario_text)
            scenario = load_scenario(path)
        backend = SimBackend(gpus=gpus, seed=7, scenario=scenario)
        backend.start()
        settings = load_settings(overrides={
            "collection": {"fast_interval": 0.05, "slow_interval": 0.2, "call_deadline": 0.3,
                           **collection},
            "web": {"listen_address": "127.0.0.1:0"},
        })
        daemon = Daemon(settings, OpenedBackends(sources=[(backend, list(backend.devices()))]))
        server = uvicorn.Server(uvicorn.Config(daemon.app(), host="127.0.0.1", port=0,
                                               log_config=None, access_log=False))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_for(lambda: server.started, what="uvicorn to start")
        port = server.servers[0].sockets[0].getsockname()[1]
        started.append((server, thread, daemon))
        running = Running(daemon, backend, f"http://127.0.0.1:{port}")
        wait_for(lambda: httpx.get(running.url + "/readyz").status_code == 200, what="ready")
        return running

    yield start
    for server, thread, _ in started:
        server.should_exit = True
        thread.join(10)


def test_hung_sim_call_does_not_block_scrapes_or_other_gpus(serve) -> None:
    node = serve("faults:\n  - {at: 0s, gpu: 2, kind: hang}\n")  # hangs until released
    wait_for(lambda: node.gpu_up().get("2") == 0.0, what="GPU 2 marked down")
    # The call is still blocked; scrapes answer and the other GPUs keep fresh data.
    before = node.cycle()
    wait_for(lambda: node.cycle() >= before + 3, what="three more cycles while GPU 2 hangs")
    up = node.gpu_up()
    assert up == {"0": 1.0, "1": 1.0, "2": 0.0, "3": 1.0}
    metrics = node.scrape()
    assert ("gpu_utilization_ratio", frozenset({("gpu", "1"), ("uuid", _uuid(metrics, "1"))})) \
        in metrics
    assert not any(name == "gpu_utilization_ratio" and dict(labels)["gpu"] == "2"
                   for name, labels in metrics), "stale values for the hung GPU"
    stuck = [v for (name, labels), v in metrics.items()
             if name == "gpu_exporter_collection_errors_total" and ("gpu", "2") in labels]
    assert stuck and sum(stuck) >= 2
    assert node.backend.wait_until_hung(2, timeout=0)  # still inside the blocked call

    node.backend.release_hang(2)
    wait_for(lambda: node.gpu_up().get("2") == 1.0, what="GPU 2 back after release")


def test_lost_gpu_and_its_return(serve) -> None:
    node = serve("faults:\n  - {at: 0s, gpu: 1, kind: lost, duration: 1s}\n")
    wait_for(lambda: node.gpu_up().get("1") == 0.0, what="GPU 1 lost")
    assert node.gpu_up()["0"] == 1.0
    wait_for(lambda: node.gpu_up().get("1") == 1.0, what="GPU 1 back")


def _uuid(metrics, gpu: str) -> str:
    for (name, labels), _ in metrics.items():
        d = dict(labels)
        if name == "gpu_up" and d["gpu"] == gpu:
            return d["uuid"]
    raise AssertionError(gpu)


@pytest.mark.integration
@pytest.mark.parametrize("model", ["h100-sxm", "mi300x"])
def test_promtool_finds_nothing_in_the_sim_node_output(tmp_path: Path, model: str) -> None:
    promtool = require_tool("promtool")
    backend = SimBackend(gpus=8, model=model, seed=3)
    backend.start()
    settings = load_settings(overrides={"cost": {"gpu_hourly_price_dollars": 3.1}})
    daemon = Daemon(settings, OpenedBackends(sources=[(backend, list(backend.devices()))]))
    daemon.sampler.start(schedule=False)
    try:
        daemon.sampler.run_cycle()
        daemon.sampler.run_cycle()  # second cycle: ratios computed between samples exist
        from exporter.exposition import Format

        text = daemon.publisher.current.body(Format.TEXT, False)
    finally:
        daemon.sampler.stop()
    assert len(text) > 10_000
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                       timeout=60)
    assert (r.returncode, r.stdout + r.stderr) == (0, b"")


def test_scenario_xid_and_fell_off_bus_reach_metrics(serve) -> None:
    node = serve("faults:\n  - {at: 0s, gpu: 1, kind: xid, xid: 79}\n"
                 "  - {at: 0s, gpu: 2, kind: lost, fell_off_bus: true}\n")

    def counted() -> bool:
        m = node.scrape()
        return any(name == "gpu_xid_errors_total" and ("gpu", "1") in labels
                   for name, labels in m) and any(
            name == "gpu_events_total" and ("event", "fell_off_bus") in labels
            for name, labels in m)

    wait_for(counted, what="the scenario's events on /metrics")
    m = node.scrape()
    xid = {dict(labels)["action"]: v for (name, labels), v in m.items()
           if name == "gpu_xid_errors_total" and dict(labels)["gpu"] == "1"}
    assert xid == {"reboot_node": 1.0}
    assert node.gpu_up()["2"] == 0.0  # fell off the bus: visible on gpu_up too
    sources = {dict(labels)["source"]: v for (name, labels), v in m.items()
               if name == "gpu_exporter_event_source_up"}
    assert sources == {"sim_events": 1.0}  # no kernel log on a simulated node: not a source
