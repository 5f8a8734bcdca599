"""End to end: injected faults become alerts at the receiver they are routed to.

The daemon runs on the simulated node with a fault scenario; real Prometheus scrapes it (and a
vLLM-format stub) every second with target labels cluster, pool and node, and evaluates a
time-scaled copy of alerts/gpu.rules.yml (every duration divided by 60, ranges at least 6 s:
`for: 10m` fires after 10 s; tests/e2e_stack.py `scale_rules`); real Alertmanager runs the
example configuration with its receivers pointed at a webhook receiver here. A healthy node,
busy under the SW power cap, produces no alert at all.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import REPO, require_tool, wait_for
from e2e_stack import (
    Alertmanager,
    Prometheus,
    VllmStub,
    WebhookReceiver,
    alertmanager_config,
    scale_rules,
    sim_daemon,
)

pytestmark = pytest.mark.integration

TARGET = {"cluster": "e2e", "pool": "h100-sxm", "node": "sim-node-1"}
# The daemon's own windows, scaled like the rules (docs/health.md's defaults / 60).
HEALTH = {"throttle_window": 5.0, "throttle_fail_window": 30.0, "pcie_downtrain_window": 2.0,
          "pcie_replay_window": 6.0, "app_xid_window": 60.0}
FAULTS = """faults:
  - {kind: xid, gpu: 0, xid: 48, at: 2s}
  - {kind: row_remap_failure, gpu: 1, at: 1s}
  - {kind: lost, gpu: 2, at: 2s, fell_off_bus: true}
  - {kind: clock_event, gpu: 3, reason: hw_thermal_slowdown, at: 0s}
  - {kind: pcie_replays, gpu: 3, count: 3000, at: 3s}
  - {kind: pcie_replays, gpu: 3, count: 3000, at: 6s}
  - {kind: pcie_replays, gpu: 3, count: 3000, at: 9s}
  - {kind: pcie_replays, gpu: 3, count: 3000, at: 12s}
  - {kind: recovery_action, gpu: 4, action: 1, at: 1s}
  - {kind: nvlink_down, gpu: 4, link: 2, at: 3s}
  - {kind: ecc_uncorrectable, gpu: 5, count: 2, at: 15s}
  - {kind: sram_threshold, gpu: 5, at: 1s}
  - {kind: row_remap_pending, gpu: 5, at: 1s}
"""
# The ECC fault comes after Prometheus' first scrape: increase() needs a sample before it.
# alert -> (GPU it must name, severity); the receiver is the one the example routes it to.
EXPECTED = {
    "GpuXidCritical": ("0", "page"),
    "GpuRowRemapFailure": ("1", "page"),
    "GpuFellOffBus": ("2", "page"),
    "GpuHwThrottling": ("3", "ticket"),
    "GpuPcieReplayRateHigh": ("3", "ticket"),
    "GpuRecoveryActionRequested": ("4", "page"),
    "GpuNvlinkDown": ("4", "ticket"),
    "GpuEccUncorrectableErrors": ("5", "ticket"),
    "GpuSramEccThresholdExceeded": ("5", "ticket"),
    "GpuRowRemapPending": ("5", "ticket"),
    # The serving pod (the vLLM stub): slow first tokens, a full KV cache, preemptions.
    "VllmTtftP99AboveSlo": (None, "page"),
    "VllmKvCacheNearFull": (None, "ticket"),
    "VllmPreemptionsRising": (None, "ticket"),
}
HEALTHY = """faults:
  - {kind: busy, gpu: [0, 1, 2, 3, 4, 5], at: 0s}
"""


def _stack(tmp_path: Path, scenario: str, seconds_to_watch: float, expect: dict | None,
           stub: VllmStub):
    prometheus = require_tool("prometheus")
    alertmanager = require_tool("prometheus-alertmanager")
    rules = tmp_path / "gpu.rules.yml"
    rules.write_text(scale_rules((REPO / "alerts" / "gpu.rules.yml").read_text()))
    receiver = WebhookReceiver()
    am = prom = None
    try:
        am = Alertmanager(alertmanager, tmp_path, alertmanager_config(
            REPO / "alerts" / "alertmanager.example.yml", receiver.url))
        with sim_daemon(tmp_path, scenario, {"health": HEALTH, "probes": {"enabled": False}},
                        gpus=6) as exporter:
            prom = Prometheus(prometheus, tmp_path, {
                "gpu-fleet-exporter": (exporter, TARGET),
                "vllm": (stub.url, {**TARGET, "namespace": "serving", "pod": "vllm-0"}),
            }, [rules], alertmanager=am.url)
            if expect is None:
                # The observation window itself: long enough for every scaled `for:` (at most
                # 30 min -> 30 s) to have fired; it ends early if an alert arrives.
                deadline = time.monotonic() + seconds_to_watch
                wait_for(lambda: time.monotonic() > deadline or receiver.alerts(),
                         timeout=seconds_to_watch + 5, what="the watch window")
                return receiver.alerts(), prom
            try:
                wait_for(lambda: set(expect) <= {name for _, name, _ in receiver.alerts()},
                         timeout=seconds_to_watch, what=f"alerts {sorted(expect)}")
            except AssertionError as e:
                got = sorted({n for _, n, _ in receiver.alerts()})
                raise AssertionError(f"{e}; missing {sorted(set(expect) - set(got))}, "
                                     f"got {got}") from None
            return receiver.alerts(), prom
    finally:
        if prom is not None:
            prom.stop()
        if am is not None:
            am.stop()
        receiver.close()
        stub.close()


def test_injected_faults_reach_their_receivers(tmp_path: Path) -> None:
    stub = VllmStub(kv_cache=0.99, preemptions_per_second=2, ttft_seconds=4.0)
    received, _ = _stack(tmp_path, FAULTS, 90, EXPECTED, stub)
    for alert, (gpu, severity) in EXPECTED.items():
        hits = [(route, labels) for route, name, labels in received if name == alert]
        assert hits, alert
        labels = hits[0][1]
        assert labels.get("gpu") == gpu and labels["severity"] == severity, (alert, labels)
        assert labels["cluster"] == TARGET["cluster"]
        routes = {route for route, _ in hits}
        assert severity in routes, f"{alert} ({severity}) went to receivers {routes}"


def test_a_healthy_busy_node_raises_no_alert(tmp_path: Path) -> None:
    received, _ = _stack(tmp_path, HEALTHY, 40, None, VllmStub())
    assert received == [], [(r, n, dict(lbl)) for r, n, lbl in received]
