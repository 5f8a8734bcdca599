"""Recovery and release for repairs: re-init after a lost GPU (never with a call in flight),
backoff, re-enumeration by UUID, vendor libraries that appear later, release/resume."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for
from fakes import FakeBackend
from fastapi.testclient import TestClient

from exporter.backends import OpenedBackends
from exporter.backends.base import BackendUnavailable
from exporter.catalog import Tier
from exporter.config import load_settings
from exporter.daemon import Daemon
from exporter.recovery import Recovery
from exporter.sampler import Sampler

TOKEN = "s3cret-token-of-sufficient-length"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend(gpus=3)


def _sampler(fake: FakeBackend, clock=None) -> Sampler:
    kwargs = {"clock": clock} if clock else {}
    s = Sampler([(fake, fake.devices())], fast_interval=60, slow_interval=60,
                call_deadline=0.2, **kwargs)
    s.start(schedule=False)
    return s


def _up(view) -> dict[str, bool]:
    return {g.uuid: g.up for g in view.gpus}


def test_lost_gpu_triggers_reinit_and_comes_back(fake: FakeBackend) -> None:
    s = _sampler(fake)
    recovery = Recovery(s, threading.Lock(), initial=0)
    try:
        s.run_cycle()
        fake.lost.add(1)
        s.run_cycle((Tier.FAST,))
        assert s.sources[0].needs_reinit
        recovery.after_cycle()
        assert (fake.stops, fake.starts) == (1, 1)
        assert not s.sources[0].needs_reinit
        fake.lost.clear()
        view = s.run_cycle((Tier.FAST,))
        assert all(_up(view).values())
    finally:
        s.stop()


def test_no_reinit_while_a_call_is_in_flight(fake: FakeBackend) -> None:
    s = _sampler(fake)
    recovery = Recovery(s, threading.Lock(), initial=0)
    try:
        s.run_cycle()
        gate = fake.block(0, "utilization")
        fake.lost.add(1)
        s.run_cycle((Tier.FAST,))  # GPU 0 abandoned inside its call, GPU 1 lost
        recovery.after_cycle()
        assert fake.stops == 0, "NVML shut down under a call in flight"
        gate.set()
        del fake.gates[(0, "utilization")]
        wait_for(lambda: s.calls_in_flight() == 0, what="blocked call to return")
        recovery.after_cycle()
        assert fake.stops == 1
    finally:
        s.stop()


def test_failing_reinit_backs_off(fake: FakeBackend) -> None:
    clock = Clock()
    s = _sampler(fake, clock)
    recovery = Recovery(s, threading.Lock(), clock, initial=5, maximum=20)
    try:
        s.run_cycle()
        fake.lost.add(0)
        s.run_cycle((Tier.FAST,))
        fake.fail_start = BackendUnavailable("driver not loaded")
        attempts_at = []
        for _ in range(60):  # one simulated minute, a check every second
            before = recovery.attempts
            recovery.after_cycle()
            if recovery.attempts > before:
                attempts_at.append(clock.now - 1000)
            clock.now += 1
        assert attempts_at == [0, 5, 15, 35, 55]  # 5, 10, 20, 20 s apart: doubling, capped
        assert not s.sources[0].healthy
        fake.fail_start = None
        fake.lost.clear()
        clock.now += 20
        recovery.after_cycle()
        assert s.sources[0].healthy and not s.sources[0].needs_reinit
        assert all(_up(s.run_cycle((Tier.FAST,))).values())
    finally:
        s.stop()


def test_reenumeration_adds_new_gpus_and_keeps_missing_ones_down(fake: FakeBackend) -> None:
    s = _sampler(fake)
    try:
        s.run_cycle()
        gone = fake._devices.pop(2)
        new = fake.add_gpu()
        s.reconcile(s.sources[0], fake.devices())
        view = s.run_cycle((Tier.FAST,))
        up = _up(view)
        assert up[new.uuid] is True
        assert up[gone.uuid] is False
        assert view.gpus[2].down_reason == "missing after re-enumeration"
    finally:
        s.stop()


def _daemon(fake: FakeBackend, tmp_path: Path, **admin) -> Daemon:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    settings = load_settings(overrides={
        "collection": {"fast_interval": 0.05, "call_deadline": 0.2},
        "admin": {"token_file": str(token_file), **admin}})
    return Daemon(settings, OpenedBackends(sources=[(fake, fake.devices())]))


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_admin_endpoints_need_the_token(fake: FakeBackend, tmp_path: Path) -> None:
    daemon = _daemon(fake, tmp_path)
    with TestClient(daemon.app()) as client:
        assert client.post("/admin/release").status_code == 401
        assert client.post("/admin/release", headers=_auth("wrong-token")).status_code == 401
        assert client.post("/admin/release",
                           headers={"authorization": TOKEN}).status_code == 401
        assert client.get("/admin/release").status_code == 405
        assert not daemon.released
    disabled = Daemon(load_settings(), OpenedBackends(sources=[(fake, fake.devices())]))
    with TestClient(disabled.app()) as client:
        r = client.post("/admin/release", headers=_auth())
        assert r.status_code == 403 and "admin.token_file" in r.json()["detail"]


def test_release_and_resume_over_http(fake: FakeBackend, tmp_path: Path) -> None:
    daemon = _daemon(fake, tmp_path)
    with TestClient(daemon.app()) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, what="first cycle")
        r = client.post("/admin/release", headers=_auth())
        assert r.status_code == 200 and r.json()["released"] is True
        assert r.json()["device_files_open"] == []
        assert fake.stopped and fake.stops == 1
        text = client.get("/metrics").text
        assert "gpu_exporter_released 1.0" in text
        assert 'gpu_up{gpu="0",uuid="GPU-fake-0"} 0.0' in text
        assert "gpu_utilization_ratio" not in text
        reads = dict(fake.reads)
        # While released nothing is read, however many cycles pass.
        assert client.get("/readyz").status_code == 200
        assert dict(fake.reads) == reads

        r = client.post("/admin/resume", headers=_auth())
        assert r.status_code == 200
        assert fake.starts == 1
        wait_for(lambda: 'gpu_up{gpu="0",uuid="GPU-fake-0"} 1.0' in client.get("/metrics").text,
                 what="collection to resume")
        assert "gpu_exporter_released 0.0" in client.get("/metrics").text


def test_release_is_refused_while_a_call_is_stuck(fake: FakeBackend, tmp_path: Path) -> None:
    daemon = _daemon(fake, tmp_path, release_wait=0.1)
    gate = fake.block(1, "utilization")
    with TestClient(daemon.app()) as client:
        wait_for(lambda: fake.entered[(1, "utilization")].is_set(), what="the call to hang")
        r = client.post("/admin/release", headers=_auth())
        assert r.status_code == 409 and "in flight" in r.json()["detail"]
        assert fake.stops == 0 and not daemon.released
        gate.set()


def test_release_resumes_by_itself_after_the_timeout(fake: FakeBackend, tmp_path: Path) -> None:
    daemon = _daemon(fake, tmp_path, release_timeout=0.2)
    daemon.start()
    try:
        assert daemon.release("test").released
        wait_for(lambda: not daemon.released, what="automatic resume")
        assert fake.starts == 1
    finally:
        daemon.stop()


def test_signals_release_and_resume(fake: FakeBackend, tmp_path: Path) -> None:
    daemon = _daemon(fake, tmp_path)
    old = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGUSR2)}
    daemon.start()
    try:
        daemon.install_signal_handlers()
        os.kill(os.getpid(), signal.SIGUSR1)
        wait_for(lambda: daemon.released, what="SIGUSR1 to release")
        os.kill(os.getpid(), signal.SIGUSR2)
        wait_for(lambda: not daemon.released, what="SIGUSR2 to resume")
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        daemon.stop()


def test_a_vendor_library_that_appears_later_is_picked_up(monkeypatch, fake) -> None:
    settings = load_settings(overrides={"collection": {"backend": "auto"}})
    opened = OpenedBackends(failed={"nvml": "libnvidia-ml.so.1 not found"})
    daemon = Daemon(settings, opened)
    attempts = []

    def open_backend(name, _settings):
        attempts.append(name)
        if len(attempts) == 1:
            raise BackendUnavailable("still missing")
        return fake, list(fake.devices())

    monkeypatch.setattr("exporter.daemon.open_backend", open_backend)
    daemon._next_discovery = 0
    daemon._discover()
    assert [s.name for s in daemon.backend_statuses()] == ["nvml"]
    assert not daemon.backend_statuses()[0].up
    daemon._next_discovery = 0
    daemon._discover()
    assert [(s.name, s.up) for s in daemon.backend_statuses()] == [("fake", True)]
    assert len(daemon.sampler.workers) == 3


def test_a_release_during_a_pass_keeps_every_gpu_down(fake: FakeBackend, tmp_path: Path) -> None:
    """A read in flight when the release comes must not bring its GPU back up afterwards."""
    daemon = _daemon(fake, tmp_path, release_wait=5)
    daemon.sampler.start(schedule=False)
    try:
        daemon.sampler.run_cycle()
        gate = fake.block(0, "utilization")
        cycle = threading.Thread(target=daemon.sampler.run_cycle, args=((Tier.FAST,),))
        cycle.start()
        wait_for(lambda: fake.entered[(0, "utilization")].is_set(), what="the read to block")
        releaser = threading.Thread(target=daemon.release, args=("test",))
        releaser.start()
        wait_for(lambda: daemon.sampler.paused is not None, what="the pause")
        gate.set()
        releaser.join(10)
        cycle.join(10)
        assert daemon.released
        view = daemon.sampler.view
        assert [g.up for g in view.gpus] == [False, False, False]
        assert all({s.family for s in g.samples} <= {"gpu_info"} for g in view.gpus)
    finally:
        daemon.sampler.stop()


def test_a_release_stops_probe_children_too(fake: FakeBackend, tmp_path: Path) -> None:
    daemon = _daemon(fake, tmp_path)
    assert daemon.probes is not None
    daemon.start()
    try:
        assert daemon.release("test").released
        assert daemon.probes.runner.stopped == "released for repairs"
        daemon.resume("test")
        assert daemon.probes.runner.stopped is None
    finally:
        daemon.stop()


@contextlib.contextmanager
def gpu1_lost(fake: FakeBackend) -> Iterator[tuple[Sampler, list, Recovery]]:
    """A sampler whose GPU 1 was just lost, every published view kept, a Recovery without
    backoff; the sampler stops after the block."""
    s = _sampler(fake)
    published: list = []
    s.on_cycle = published.append
    try:
        s.run_cycle()
        fake.lost.add(1)
        s.run_cycle((Tier.FAST,))
        yield s, published, Recovery(s, threading.Lock(), initial=0)
    finally:
        s.stop()


def test_gpus_read_as_down_while_a_restart_takes_longer_than_a_call_may(
        fake: FakeBackend) -> None:
    """nvmlInit stuck in the driver: past the call deadline the library's GPUs read as down, so
    nothing stale is served as healthy while it hangs."""
    release = threading.Event()
    seen_during_start = []
    with gpu1_lost(fake) as (_, published, recovery):  # call deadline 0.2 s

        def start() -> None:  # what /metrics serves while nvmlInit hangs
            wait_for(lambda: not published[-1].gpus[0].up, what="the GPUs marked down")
            seen_during_start.append([g.up for g in published[-1].gpus])
            release.set()

        fake.lost.clear()
        fake.start = start  # type: ignore[method-assign]
        recovery.after_cycle()
        assert release.is_set() and seen_during_start == [[False, False, False]]
        assert "re-initializing" in (published[-1].gpus[0].down_reason or "")


def test_a_quick_restart_never_shows_the_healthy_gpus_down(fake: FakeBackend) -> None:
    """A lost GPU is retried for as long as it stays lost: each retry must not flap the GPUs
    that were never lost to down for a scrape that lands in it."""
    with gpu1_lost(fake) as (s, published, recovery):
        for _ in range(3):  # GPU 1 stays lost: three re-inits
            recovery.after_cycle()
            s.run_cycle((Tier.FAST,))
        assert recovery.attempts == 3
        assert all(v.gpus[0].up and v.gpus[2].up for v in published)


def test_a_failed_restart_marks_the_librarys_gpus_down(fake: FakeBackend) -> None:
    with gpu1_lost(fake) as (s, published, recovery):
        fake.fail_start = BackendUnavailable("driver unloaded")
        recovery.after_cycle()
        assert [g.up for g in published[-1].gpus] == [False, False, False]
        assert published[-1].gpus[0].down_reason == "vendor library failed to re-initialize"
        # The next cycles leave the shut-down library alone: the GPUs keep that reason (a read
        # would say "uninitialized" and judge a healthy GPU lost).
        reads = dict(fake.reads)
        view = s.run_cycle((Tier.FAST,))
        assert fake.reads == reads
        assert {g.down_reason for g in view.gpus} == {"vendor library failed to re-initialize"}


def test_a_stop_never_shuts_a_library_down_under_a_hung_restart(fake: FakeBackend,
                                                                 tmp_path: Path) -> None:
    """nvmlInit hung on the coordinator: the daemon's stop must not call nvmlShutdown under it
    (the process exits instead; the library is released with it)."""
    daemon = _daemon(fake, tmp_path)
    daemon.recovery.initial = 0
    s = daemon.sampler
    s.start(schedule=False)
    entered, release = threading.Event(), threading.Event()

    def hung_start() -> None:
        entered.set()
        release.wait(10)

    try:
        s.run_cycle()
        fake.lost.add(1)
        s.run_cycle((Tier.FAST,))
        fake.start = hung_start  # type: ignore[method-assign]
        restart = threading.Thread(target=daemon.recovery.after_cycle)
        restart.start()
        wait_for(entered.is_set, what="the restart to hang")
        stops = fake.stops
        daemon.stop()
        assert fake.stops == stops, "the library was shut down under a restart in flight"
    finally:
        release.set()
        restart.join(10)
    assert not daemon.recovery.restarting
