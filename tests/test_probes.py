"""Probe runner, thresholds and idle gate, with the child as a real process (sim runtime).

The child is the same `python -m probes.child` the daemon starts; `--runtime sim` makes it
print the figures it is given, or crash, hang, print garbage, or run out of memory.
"""

from __future__ import annotations

import threading
from collections import deque

import pytest
from conftest import wait_for

from probes.gate import Activity, GateSettings, busy_reason
from probes.result import Measurement, Outcome
from probes.runner import Busy, Runner, Target
from probes.thresholds import GpuFacts, Thresholds

H100 = GpuFacts("NVIDIA H100 80GB HBM3", pcie_generation=5, pcie_width=16)
GPU0 = Target(0, "GPU-test-0", H100)
GOOD_PCIE = {"h2d_bytes_per_second": 53e9, "d2h_bytes_per_second": 54e9}


@pytest.fixture
def runner() -> Runner:
    return Runner(Thresholds.load(), runtime="sim", timeout=5)


def _sim(**sim) -> dict:
    return {"sim": {"quantities": GOOD_PCIE, **sim}}


def test_a_healthy_run_passes_with_its_figures(runner: Runner) -> None:
    r = runner.run("pcie_bandwidth", GPU0, params=_sim())
    assert r.outcome is Outcome.PASS and r.attempts == 1
    assert r.measurement.quantities == GOOD_PCIE
    assert {c.quantity for c in r.checks} == set(GOOD_PCIE)
    assert r.total_seconds > 0


@pytest.mark.parametrize("behaviour, reason", [
    ("crash", "killed by signal"),
    ("garbage", "no valid result"),
    ("oom", "out of memory"),
])
def test_a_broken_child_is_an_error_not_a_crash(runner: Runner, behaviour: str,
                                                reason: str) -> None:
    r = runner.run("pcie_bandwidth", GPU0, params=_sim(behaviour=behaviour))
    assert r.outcome is Outcome.ERROR and reason in r.reason
    assert r.measurement is None and not runner.busy(GPU0.uuid)


def test_a_hung_child_is_killed_at_its_deadline() -> None:
    runner = Runner(Thresholds.load(), runtime="sim", timeout=0.5)
    r = runner.run("pcie_bandwidth", GPU0, params=_sim(behaviour="hang"))
    assert r.outcome is Outcome.ERROR and "deadline" in r.reason
    assert runner.children == set()  # nothing left running


def test_a_failure_is_confirmed_by_a_retry(runner: Runner) -> None:
    slow = {"h2d_bytes_per_second": 20e9, "d2h_bytes_per_second": 54e9}
    r = runner.run("pcie_bandwidth", GPU0, params={"sim": {"quantities": slow}})
    assert r.outcome is Outcome.FAIL and r.attempts == 2
    assert "h2d_bytes_per_second" in r.reason


def test_a_failure_the_retry_does_not_confirm_is_not_reported(monkeypatch, runner) -> None:
    answers = iter([Measurement(quantities={**GOOD_PCIE, "h2d_bytes_per_second": 1e9}),
                    Measurement(quantities=GOOD_PCIE)])
    monkeypatch.setattr(runner, "_child", lambda *a: next(answers))
    r = runner.run("pcie_bandwidth", GPU0)
    assert r.outcome is Outcome.PASS and r.attempts == 2
    assert "did not confirm" in r.reason


def test_silent_data_corruption_fails(runner: Runner) -> None:
    q = {"replay_mean_seconds": 2e-4, "replay_p99_seconds": 3e-4, "replay_cv_ratio": 0.01,
         "replays_100_seconds": 0.02}
    r = runner.run("graph_replay", GPU0, params={"sim": {"quantities": q, "corrupted": 3}})
    assert r.outcome is Outcome.FAIL and "corrupted" in r.reason


def test_one_probe_per_gpu_at_a_time() -> None:
    runner = Runner(Thresholds.load(), runtime="sim", timeout=2)
    results = []
    hung = threading.Thread(target=lambda: results.append(
        runner.run("pcie_bandwidth", GPU0, params=_sim(behaviour="hang"))))
    hung.start()
    wait_for(lambda: runner.busy(GPU0.uuid), what="the first probe to start")
    with pytest.raises(Busy):
        runner.run("gemm", GPU0, params=_sim())
    other = Target(1, "GPU-test-1", H100)
    assert runner.run("pcie_bandwidth", other, params=_sim()).outcome is Outcome.PASS
    hung.join()
    assert results[0].outcome is Outcome.ERROR


def test_thresholds_follow_the_link_the_model_and_the_peers() -> None:
    t = Thresholds.load()
    pcie = {lim.quantity: lim for lim in t.limits("pcie_bandwidth", H100)}
    gen5x16 = 3.938e9 * 16
    assert pcie["h2d_bytes_per_second"].value == pytest.approx(0.70 * gen5x16)
    gen4 = GpuFacts("NVIDIA A100-SXM4-80GB", pcie_generation=4, pcie_width=16)
    assert {lim.quantity: lim for lim in t.limits("pcie_bandwidth", gen4)}[
        "h2d_bytes_per_second"].value == pytest.approx(0.70 * 1.969e9 * 16)
    gemm = {lim.quantity: lim.value for lim in t.limits("gemm", H100)}
    assert gemm["bf16_flop_per_second"] == pytest.approx(0.5 * 9.89e14)
    assert t.limits("memory_bandwidth", GpuFacts("Unknown GPU")) == []  # no peak known
    # Warn band: passes, but says so.
    warn = t.judge("pcie_bandwidth", H100, Measurement(
        quantities={**GOOD_PCIE, "h2d_bytes_per_second": 0.72 * gen5x16}))
    assert warn[0] is Outcome.PASS and warn[1] is True
    # Peers: 20 % under the median of same-model peers fails even above the absolute limit.
    fine = {"d2d_bytes_per_second": 3.0e12}
    slow = {"d2d_bytes_per_second": 2.3e12}
    peers = {"d2d_bytes_per_second": [3.0e12, 3.05e12, 2.95e12]}
    assert t.judge("memory_bandwidth", H100, Measurement(quantities=fine), peers)[0] \
        is Outcome.PASS
    outcome, _, checks, reason = t.judge("memory_bandwidth", H100,
                                         Measurement(quantities=slow), peers)
    assert outcome is Outcome.FAIL and "peers" in reason
    assert any(c.bound == "peers" and not c.ok for c in checks)


def test_threshold_overrides_from_a_file(tmp_path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("probes:\n  pcie_bandwidth:\n    h2d_bytes_per_second:\n      min: 1.0e9\n")
    t = Thresholds.load(path)
    limits = {lim.quantity: lim for lim in t.limits("pcie_bandwidth", H100)}
    assert limits["h2d_bytes_per_second"].value == 1.0e9
    assert limits["d2h_bytes_per_second"].value == pytest.approx(0.70 * 3.938e9 * 16)


def _activity(processes=0, memory=0.0, utils=()) -> Activity:
    return Activity(processes, memory, deque(utils))


@pytest.mark.parametrize("activity, fragment", [
    (None, "no telemetry"),
    (_activity(processes=2, utils=[(0, 0.0), (200, 0.0)]), "2 compute process"),
    (_activity(memory=40 * 2**30, utils=[(0, 0.0), (200, 0.0)]), "GiB of memory in use"),
    (_activity(utils=[(0, 0.0), (100, 0.3), (200, 0.0)]), "utilization reached 30%"),
    (_activity(utils=[(150, 0.0), (200, 0.0)]), "quiet for 50 s"),
    (_activity(utils=[]), "no utilization sample"),
])
def test_the_idle_gate_says_why_a_gpu_is_busy(activity, fragment: str) -> None:
    reason = busy_reason(activity, GateSettings(quiet_seconds=120), now=200)
    assert reason is not None and fragment in reason


def test_an_idle_gpu_passes_the_gate() -> None:
    activity = _activity(memory=500 * 2**20, utils=[(70, 0.0), (130, 0.01), (200, 0.0)])
    assert busy_reason(activity, GateSettings(quiet_seconds=120), now=200) is None


def test_the_nvlink_bar_counts_every_link_the_gpu_has() -> None:
    """16 of 18 links down must not lower the peer-bandwidth threshold to two links' worth."""
    from exporter.backends.base import sample
    from exporter.probing import gpu_facts
    from exporter.sampler import GpuState

    links = [sample("gpu_nvlink_up", 1 if i < 2 else 0, link=i) for i in range(18)]
    facts, _ = gpu_facts(GpuState("nvml", 0, "GPU-0", True, None, tuple(links)))
    assert facts.nvlinks == 18
    limit = {lim.quantity: lim.value
             for lim in Thresholds.load().limits("p2p_bandwidth", facts)}
    assert limit["p2p_bytes_per_second"] == pytest.approx(0.60 * 18 * 2.5e10)


def test_a_kernel_cache_dir_others_can_write_is_refused(tmp_path) -> None:
    shared = tmp_path / "kernels"
    shared.mkdir()
    shared.chmod(0o777)
    runner = Runner(Thresholds.load(), runtime="sim", timeout=5, cache_dir=shared)
    r = runner.run("pcie_bandwidth", GPU0, params=_sim())
    assert r.outcome is Outcome.ERROR and "not a private directory" in r.reason
