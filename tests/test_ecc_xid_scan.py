"""ecc_xid_scan: fails on new uncorrectable ECC, a row-remap failure, SRAM over threshold, or a
new Xid whose action is a reset or worse within its window; an application Xid does not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from exporter.backends.base import sample
from exporter.config import load_settings
from exporter.probing import ProbeService
from exporter.sampler import GpuState, SamplerView


def _view(uncorrected: float = 0, remap_failure: int = 0) -> SamplerView:
    samples = (
        sample("gpu_info", 1, vendor="nvidia", model="NVIDIA H100 80GB HBM3", pci_bus_id="x",
               serial="", driver_version="", vbios_version="", cuda_version="", rocm_version=""),
        sample("gpu_ecc_errors_total", uncorrected, type="uncorrected", scope="aggregate",
               location="total"),
        sample("gpu_row_remap_failure", remap_failure),
    )
    return SamplerView(1, (GpuState("sim", 0, "GPU-0", True, None, samples),), {}, {}, {}, 0.0)


@pytest.mark.parametrize("change, xids, fails", [
    ({}, {}, None),
    ({"uncorrected": 2}, {}, "2 new uncorrectable ECC"),
    ({"remap_failure": 1}, {}, "row remapping failed"),
    ({}, {(79, "reboot_node"): 1}, "Xid 79 x1 (reboot_node)"),
    ({}, {(48, "reset_gpu"): 3}, "Xid 48 x3"),
    ({}, {(13, "restart_app"): 5}, None),  # an application error is the application's
])
def test_the_scan_judges_its_window(change, xids, fails) -> None:
    counts: dict = {"GPU-0": {}}
    service = ProbeService(load_settings().probes, "sim", xid_counts=lambda: counts)
    service.observe(_view())
    first = service.run("ecc_xid_scan")[0]
    assert first.outcome.value == "pass" and "window starts" in first.reason
    counts["GPU-0"] = xids
    service.observe(_view(**change))
    result = service.run("ecc_xid_scan")[0]
    if fails is None:
        assert result.outcome.value == "pass", result.reason
    else:
        assert result.outcome.value == "fail" and fails in result.reason


def test_the_admission_check_watches_its_window(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text("faults:\n  - {at: 2s, gpu: 1, kind: xid, xid: 79}\n"
                        "  - {at: 2s, gpu: 0, kind: ecc_uncorrectable, count: 1}\n")
    r = subprocess.run(
        [sys.executable, "-m", "exporter", "probe", "--collection.backend=sim", "--sim.gpus=3",
         f"--sim.scenario={scenario}", "--probe", "ecc_xid_scan", "--window", "4", "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 1, r.stderr
    by_gpu = {x["gpu"]: x for x in json.loads(r.stdout)["results"]}
    assert "uncorrectable ECC" in by_gpu[0]["reason"]
    assert "Xid 79" in by_gpu[1]["reason"]
    assert by_gpu[2]["outcome"] == "pass"
