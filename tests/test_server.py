"""HTTP behaviour through the real ASGI app: routes, negotiation, gzip, readiness, junk."""

from __future__ import annotations

import gzip

import pytest
from fakes import FakeBackend
from fastapi.testclient import TestClient
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om

from exporter.backends import OpenedBackends
from exporter.config import load_settings
from exporter.daemon import Daemon

OM = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


def _daemon(**collection) -> Daemon:
    fake = FakeBackend(gpus=2)
    settings = load_settings(overrides={"collection": {"fast_interval": 60, **collection},
                                        "cost": {"gpu_hourly_price_dollars": 2.5}})
    return Daemon(settings, OpenedBackends(sources=[(fake, fake.devices())]))


@pytest.fixture
def client():
    daemon = _daemon()
    with TestClient(daemon.app()) as c:  # runs the lifespan: sampler started, first cycle
        c.daemon = daemon
        yield c


def _wait_first_cycle(client) -> None:
    from conftest import wait_for

    wait_for(lambda: client.get("/readyz").status_code == 200, what="first cycle")


def test_metrics_text_by_default(client) -> None:
    _wait_first_cycle(client)
    r = client.get("/metrics", headers={"accept-encoding": "identity"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "content-encoding" not in r.headers
    assert 'gpu_up{gpu="1",uuid="GPU-fake-1"} 1.0' in r.text
    assert 'gpu_hourly_price_dollars{gpu="0",uuid="GPU-fake-0"} 2.5' in r.text
    assert 'gpu_exporter_backend_up{backend="fake"} 1.0' in r.text
    assert "gpu_exporter_last_collection_timestamp_seconds" in r.text


def test_metrics_openmetrics_and_gzip(client) -> None:
    _wait_first_cycle(client)
    r = client.get("/metrics", headers={"accept": OM, "accept-encoding": "gzip"})
    assert r.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert r.headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in r.headers["vary"]
    # httpx decodes gzip transparently; the body is the OpenMetrics text and parses.
    families = {f.name for f in parse_om(r.text)}
    assert {"gpu_up", "gpu_energy_joules", "gpu_info"} <= families


def test_gzip_body_is_really_gzip(client) -> None:
    _wait_first_cycle(client)
    with client.stream("GET", "/metrics", headers={"accept-encoding": "gzip"}) as r:
        raw = b"".join(r.iter_raw())
    assert gzip.decompress(raw).startswith(b"# HELP")


def test_metrics_is_an_explicit_route_not_a_redirect(client) -> None:
    r = client.get("/metrics/", follow_redirects=False)
    assert r.status_code == 404
    assert client.head("/metrics").status_code == 200


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_wrong_methods_get_405(client, method: str) -> None:
    assert client.request(method, "/metrics").status_code == 405
    assert client.request(method, "/healthz").status_code == 405


@pytest.mark.parametrize("path", ["/nope", "/metrics.json", "/../etc/passwd", "/%00", "/docs"])
def test_junk_paths_get_404(client, path: str) -> None:
    assert client.get(path).status_code == 404


def test_status_page_links_the_endpoints_and_forbids_other_origins(client) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for href in ('href="metrics"', 'href="health"', 'href="probes"'):
        assert href in r.text
    # The browser is told too: nothing on the page may load from anywhere.
    assert r.headers["content-security-policy"].startswith("default-src 'none'")


def test_readyz_before_first_cycle_and_when_stale() -> None:
    daemon = _daemon()
    app = daemon.app()
    client = TestClient(app)  # lifespan not run: no cycle yet
    r = client.get("/readyz")
    assert r.status_code == 503 and "first collection" in r.text
    assert client.get("/healthz").status_code == 200
    daemon.sampler.start(schedule=False)
    try:
        daemon.sampler.run_cycle()
        assert client.get("/readyz").status_code == 200
        daemon.clock = lambda: daemon.sampler.view.fresh_at + 10_000
        r = client.get("/readyz")
        assert r.status_code == 503 and "last collection" in r.text
    finally:
        daemon.sampler.stop()


def test_custom_telemetry_path() -> None:
    fake = FakeBackend(gpus=1)
    settings = load_settings(overrides={"web": {"telemetry_path": "/gpu/metrics"}})
    daemon = Daemon(settings, OpenedBackends(sources=[(fake, fake.devices())]))
    with TestClient(daemon.app()) as c:
        assert c.get("/gpu/metrics").status_code == 200
        assert c.get("/metrics").status_code == 404
