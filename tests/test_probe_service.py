"""Probes in the daemon: the sim scenario's slow-probe faults fail, results reach /metrics and
/probes, POST /probes/run needs its token and answers 409 while a GPU is busy, scheduled jobs
carry jitter, and the `probe` command's exit code is the verdict."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import REPO, require_tool, wait_for
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter.backends import OpenedBackends
from exporter.backends.sim import SimBackend, load_scenario
from exporter.config import load_settings
from exporter.daemon import Daemon
from exporter.exposition import Format

TOKEN = "probe-token-0123456789abcdef"
SLOW_GPU2 = ("faults:\n  - {at: 0s, gpu: 2, kind: probe, probe: pcie_bandwidth,\n"
             "     values: {h2d_bytes_per_second: 20e9}}\n"
             "  - {at: 0s, gpu: 1, kind: busy}\n")


def _daemon(tmp_path: Path, scenario: str = SLOW_GPU2, token: bool = True, **probes) -> Daemon:
    (tmp_path / "scenario.yaml").write_text(scenario)
    backend = SimBackend(gpus=4, seed=3, scenario=load_scenario(tmp_path / "scenario.yaml"))
    backend.start()
    overrides = {"collection": {"fast_interval": 0.05},
                 "probes": {"quiet_period": 0, "timeout": 20, **probes}}
    if token:
        (tmp_path / "token").write_text(TOKEN)
        overrides["probes"]["token_file"] = str(tmp_path / "token")
    return Daemon(load_settings(overrides=overrides),
                  OpenedBackends(sources=[(backend, list(backend.devices()))]))


def _series(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in parse_text(text) for s in fam.samples}


def _value(series, name: str, **labels: str) -> float | None:
    want = set(labels.items())
    hits = [v for (n, ls), v in series.items() if n == name and want <= ls]
    return hits[0] if hits else None


@pytest.fixture
def client(tmp_path: Path):
    daemon = _daemon(tmp_path)
    with TestClient(daemon.app()) as c:
        wait_for(lambda: c.get("/readyz").status_code == 200, what="first cycle")
        wait_for(lambda: len(daemon.probes.targets()) == 4, what="probe targets")
        c.daemon = daemon
        yield c


def _auth() -> dict[str, str]:
    return {"authorization": f"Bearer {TOKEN}"}


def test_a_slow_probe_fault_fails_and_shows_on_metrics_and_probes(client) -> None:
    r = client.post("/probes/run", json={"probe": "pcie_bandwidth", "force": True},
                    headers=_auth())
    assert r.status_code == 200
    by_gpu = {x["gpu"]: x for x in r.json()["results"]}
    assert by_gpu[2]["outcome"] == "fail" and by_gpu[2]["attempts"] == 2
    assert "h2d_bytes_per_second" in by_gpu[2]["reason"]
    assert {by_gpu[g]["outcome"] for g in (0, 1, 3)} == {"pass"}

    s = _series(client.get("/metrics").text)
    assert _value(s, "gpu_probe_success", gpu="2", probe="pcie_bandwidth") == 0.0
    assert _value(s, "gpu_probe_success", gpu="0", probe="pcie_bandwidth") == 1.0
    assert _value(s, "gpu_probe_runs_total", gpu="2", probe="pcie_bandwidth",
                  outcome="fail") == 1.0
    assert _value(s, "gpu_probe_bandwidth_bytes_per_second", gpu="2", probe="pcie_bandwidth",
                  direction="h2d", peer_uuid="") == 20e9
    limit = _value(s, "gpu_probe_threshold", gpu="2", probe="pcie_bandwidth",
                   quantity="h2d_bytes_per_second", bound="min")
    assert limit is not None and limit > 20e9
    assert _value(s, "gpu_probe_duration_seconds", gpu="0", probe="pcie_bandwidth",
                  phase="total") > 0
    assert _value(s, "gpu_probe_last_run_timestamp_seconds", gpu="0",
                  probe="pcie_bandwidth") > 1.7e9

    report = client.get("/probes").json()
    gpu2 = next(g for g in report["gpus"] if g["gpu"] == 2)
    assert gpu2["results"]["pcie_bandwidth"][0]["outcome"] == "fail"
    assert report["runtime"] == "sim"


def test_busy_gpus_are_skipped_with_the_reason(client) -> None:
    r = client.post("/probes/run", json={"probe": "memory_bandwidth", "gpu": 1},
                    headers=_auth())
    assert r.status_code == 200 and r.json()["results"] == []
    report = client.get("/probes").json()
    gpu1 = next(g for g in report["gpus"] if g["gpu"] == 1)
    assert "compute process" in gpu1["last_skipped"]["memory_bandwidth"]
    s = _series(client.get("/metrics").text)
    assert _value(s, "gpu_probe_runs_total", gpu="1", probe="memory_bandwidth",
                  outcome="skipped") == 1.0


def test_probe_trigger_auth_and_bad_requests(client, tmp_path: Path) -> None:
    body = {"probe": "gemm", "gpu": 0, "force": True}
    assert client.post("/probes/run", json=body).status_code == 401
    assert client.post("/probes/run", json=body,
                       headers={"authorization": "Bearer nope"}).status_code == 401
    assert client.post("/probes/run", json={**body, "probe": "nope"},
                       headers=_auth()).status_code == 404
    assert client.post("/probes/run", json={**body, "gpu": 9}, headers=_auth()).status_code \
        == 404
    assert client.post("/probes/run", json={"gpu": "x"}, headers=_auth()).status_code == 422
    assert client.post("/probes/run", json={"gpu": "x"}).status_code == 401  # token first
    assert client.post("/probes/run", json={"probe": "p2p_bandwidth", "gpu": 0},
                       headers=_auth()).status_code == 400
    assert client.post("/probes/run", content=b"{not json",
                       headers={**_auth(), "content-type": "application/json"}).status_code \
        == 422
    runner = client.daemon.probes.runner
    uuid = client.daemon.probes.targets([0])[0].uuid
    runner._claim([uuid])  # a probe is running on GPU 0
    try:
        r = client.post("/probes/run", json=body, headers=_auth())
        assert r.status_code == 409 and "already running" in r.json()["detail"]
    finally:
        runner._release([uuid])
    assert client.post("/probes/run", json=body, headers=_auth()).status_code == 200


def test_without_a_token_the_trigger_is_disabled(tmp_path: Path) -> None:
    with TestClient(_daemon(tmp_path, token=False).app()) as c:
        r = c.post("/probes/run", json={"probe": "gemm"}, headers=_auth())
        assert r.status_code == 403 and "probes.token_file" in r.json()["detail"]


def test_scheduled_runs_start_and_carry_jitter(tmp_path: Path) -> None:
    daemon = _daemon(tmp_path, scenario="faults: []\n", run_at_start=True, jitter=30,
                     intervals={"pcie_bandwidth": 3600})
    daemon.start()
    try:
        job = daemon.probes.scheduler.get_job("pcie_bandwidth")
        assert job.trigger.interval == timedelta(hours=1) and job.trigger.jitter == 30
        now = datetime.now(job.trigger.timezone)
        fires = {job.trigger.get_next_fire_time(now, now) for _ in range(20)}
        assert len(fires) > 1, "jitter should spread the fire times"
        assert all(now + timedelta(hours=1) <= f <= now + timedelta(hours=1, seconds=30)
                   for f in fires)
        # Fire the job now, once telemetry exists (a run before the first cycle has no GPUs).
        wait_for(lambda: len(daemon.probes.targets()) == 4, what="probe targets")
        daemon.probes.scheduler.modify_job("pcie_bandwidth", next_run_time=datetime.now(
            job.trigger.timezone))
        wait_for(lambda: any(k[1] == "pcie_bandwidth" for k in daemon.probes.runs),
                 timeout=30, what="a scheduled run")
    finally:
        daemon.stop()


def test_probes_due_together_run_one_after_another(tmp_path: Path) -> None:
    """Every job fires at once at start: none may be skipped because of one of ours."""
    daemon = _daemon(tmp_path, scenario="faults: []\n")
    daemon.start()
    try:
        wait_for(lambda: len(daemon.probes.targets()) == 4, what="probe targets")
        idle = [t for t in daemon.probes.targets()
                if daemon.probes._busy_reason(t) is None]
        assert idle, "the simulated node should have an idle GPU"
        now = datetime.now(daemon.probes.scheduler.get_job("gemm").trigger.timezone)
        singles = [n for n in ("graph_replay", "pcie_bandwidth", "memory_bandwidth", "gemm")]
        for name in singles:
            daemon.probes.scheduler.modify_job(name, next_run_time=now)
        uuid = idle[0].uuid

        def done() -> bool:
            return all(daemon.probes.runs[(uuid, n, "pass")] for n in singles)

        wait_for(done, timeout=60, what="every probe to pass on an idle GPU")
        assert not any(k[0] == uuid and k[2] == "skipped" for k in daemon.probes.runs)
    finally:
        daemon.stop()


@pytest.mark.integration
def test_promtool_accepts_the_probe_families(client) -> None:
    promtool = require_tool("promtool")
    client.post("/probes/run", json={"probe": "graph_replay", "force": True}, headers=_auth())
    client.post("/probes/run", json={"probe": "p2p_bandwidth", "force": True}, headers=_auth())
    text = client.daemon.publisher.current.body(Format.TEXT, False)
    assert b"gpu_probe_latency_seconds" in text and b"gpu_probe_jitter_ratio" in text
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                       timeout=60)
    assert (r.returncode, r.stdout + r.stderr) == (0, b"")


def _probe_cmd(tmp_path: Path, scenario: str, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "s.yaml").write_text(scenario)
    return subprocess.run(
        [sys.executable, "-m", "exporter", "probe", "--collection.backend=sim",
         "--sim.gpus=4", "--sim.seed=3", f"--sim.scenario={tmp_path / 's.yaml'}", "--json",
         *args], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_probe_command_exit_codes(tmp_path: Path) -> None:
    r = _probe_cmd(tmp_path, "faults: []\n", "--force", "--probe", "pcie_bandwidth")
    assert r.returncode == 0, r.stderr
    assert {x["outcome"] for x in json.loads(r.stdout)["results"]} == {"pass"}
    r = _probe_cmd(tmp_path, SLOW_GPU2, "--force", "--probe", "pcie_bandwidth")
    assert r.returncode == 1
    fails = [x for x in json.loads(r.stdout)["results"] if x["outcome"] == "fail"]
    assert [x["gpu"] for x in fails] == [2]
    r = _probe_cmd(tmp_path, SLOW_GPU2, "--gpu", "1", "--probe", "gemm")
    assert r.returncode == 3 and json.loads(r.stdout)["skipped"][0]["gpu"] == 1
    r = _probe_cmd(tmp_path, "faults: []\n", "--probe", "nope")
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_a_skipped_run_does_not_hide_the_last_real_result(client) -> None:
    body = {"probe": "gemm", "gpu": 0, "force": True}
    assert client.post("/probes/run", json=body, headers=_auth()).json()["results"][0][
        "outcome"] == "pass"
    client.daemon.probes.runner.stop("released for repairs")
    r = client.post("/probes/run", json=body, headers=_auth()).json()["results"]
    assert r == [] or r[0]["outcome"] == "skipped"
    s = _series(client.get("/metrics").text)
    assert _value(s, "gpu_probe_success", gpu="0", probe="gemm") == 1.0
    client.daemon.probes.runner.restart()


def test_a_stopped_runner_starts_no_child(tmp_path: Path) -> None:
    from probes.runner import Runner, Target
    from probes.thresholds import GpuFacts, Thresholds

    runner = Runner(Thresholds.load(), runtime="sim", timeout=5)
    runner.stop("the daemon is stopping")
    r = runner.run("gemm", Target(0, "GPU-x", GpuFacts("NVIDIA H100 80GB HBM3")),
                   params={"sim": {"quantities": {}}})
    assert r.outcome.value == "skipped" and "stopping" in r.reason
    assert runner.children == set()


def test_a_child_killed_by_a_release_is_skipped_even_after_a_quick_resume() -> None:
    """The child the release killed is not an error of the GPU's, even when the resume comes
    before the runner looks at how the child ended; a shutdown's stop outlives a resume."""
    import threading

    from conftest import wait_for

    from probes.runner import Runner, Target
    from probes.thresholds import GpuFacts, Thresholds

    runner = Runner(Thresholds.load(), runtime="sim", timeout=30)
    target = Target(0, "GPU-x", GpuFacts("NVIDIA H100 80GB HBM3"))
    results = []
    t = threading.Thread(target=lambda: results.append(runner.run(
        "gemm", target, params={"sim": {"quantities": {}, "behaviour": "hang"}})))
    t.start()
    wait_for(lambda: runner.children, what="the hung child")
    runner.stop("released for repairs")
    runner.restart()
    t.join(10)
    assert results[0].outcome.value == "skipped", results[0].reason
    runner.stop("the daemon is stopping", final=True)
    runner.restart()  # a resume during shutdown (release timeout, SIGUSR2)
    assert runner.stopped == "the daemon is stopping"


def test_a_bad_thresholds_file_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "t.yaml"
    for text in ("probes: [unclosed\n", "- 1\n", "nonsense: 1\n"):
        bad.write_text(text)
        r = subprocess.run([sys.executable, "-m", "exporter", "check-config", "/dev/null",
                            f"--probes.thresholds-file={bad}"], capture_output=True, text=True,
                           cwd=REPO, timeout=60)
        assert r.returncode == 2 and "probes.thresholds_file" in r.stderr, r.stderr


def test_probe_command_exit_code_is_the_health_verdict(tmp_path: Path) -> None:
    """The admission check and the daemon judge alike: a row-remap failure fails the node
    although every probe passes; a pending remap only warns (exit 0, printed)."""
    failing = ("faults:\n  - {kind: row_remap_failure, gpu: 1}\n"
               "  - {kind: row_remap_pending, gpu: 3}\n")
    r = _probe_cmd(tmp_path, failing, "--force", "--probe", "pcie_bandwidth")
    out = json.loads(r.stdout)
    assert {x["outcome"] for x in out["results"]} == {"pass"}
    assert r.returncode == 1, r.stderr
    status = {g["gpu"]: (g["status"], [x["reason"] for x in g["reasons"]])
              for g in out["health"]["gpus"]}
    assert status[1] == ("fail", ["row_remap_failure"])
    assert status[3] == ("warn", ["row_remap_pending"])
    assert status[0] == status[2] == ("ok", [])
    r = _probe_cmd(tmp_path, failing, "--force", "--probe", "pcie_bandwidth", "--gpu", "3")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["health"]["status"] == "warn"
    r = subprocess.run(
        [sys.executable, "-m", "exporter", "probe", "--collection.backend=sim", "--sim.gpus=4",
         f"--sim.scenario={tmp_path / 's.yaml'}", "--force", "--probe", "pcie_bandwidth",
         "--gpu", "3"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0 and "row_remap_pending (warn)" in r.stdout, r.stdout
