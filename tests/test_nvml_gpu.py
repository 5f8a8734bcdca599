"""The NVML backend against a real NVIDIA GPU (marked `gpu`; skipped elsewhere with the reason)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, wait_for

from exporter.backends.nvml import NvmlBackend
from exporter.catalog import Tier
from exporter.devfiles import open_device_files
from exporter.sampler import Sampler

pytestmark = pytest.mark.gpu


def _skip_without_gpu() -> None:
    try:
        import pynvml
    except ImportError:
        pytest.skip("nvidia-ml-py not installed")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        pytest.skip(f"no NVIDIA GPU here: {e}")
    pynvml.nvmlShutdown()


@pytest.fixture
def nvml_sampler():
    _skip_without_gpu()
    backend = NvmlBackend()
    backend.start()
    sampler = Sampler([(backend, backend.devices())], fast_interval=60, slow_interval=60,
                      call_deadline=5)
    sampler.start(schedule=False)
    yield sampler, backend
    sampler.stop()
    backend.stop()


def _families(gpu) -> dict[str, list]:
    out: dict[str, list] = {}
    for s in gpu.samples:
        out.setdefault(s.family, []).append(s)
    return out


def test_a_full_cycle_reads_every_gpu_without_errors(nvml_sampler) -> None:
    sampler, _ = nvml_sampler
    view = sampler.run_cycle()
    assert view.gpus and all(g.up for g in view.gpus)
    assert view.errors == {}, view.errors
    for gpu in view.gpus:
        fams = _families(gpu)
        for family in ("gpu_info", "gpu_utilization_ratio", "gpu_memory_total_bytes",
                       "gpu_memory_used_bytes", "gpu_temperature_celsius", "gpu_power_watts",
                       "gpu_power_limit_watts", "gpu_energy_joules_total", "gpu_clock_hertz",
                       "gpu_clock_max_hertz", "gpu_clock_event_active",
                       "gpu_pcie_link_generation", "gpu_pcie_link_max_generation",
                       "gpu_ecc_errors_total", "gpu_persistence_mode_enabled"):
            assert family in fams, f"{family} missing on GPU {gpu.index}"
        info = dict(fams["gpu_info"][0].labels)
        assert info["vendor"] == "nvidia" and info["model"]
        assert info["cuda_version"].count(".") == 1


def test_uuids_match_nvidia_smi(nvml_sampler) -> None:
    if not shutil.which("nvidia-smi"):
        pytest.skip("nvidia-smi not on PATH")
    sampler, _ = nvml_sampler
    listed = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"],
                            capture_output=True, text=True, check=True).stdout
    theirs = {line.split(", ")[1].strip(): int(line.split(", ")[0]) for line in listed.splitlines()}
    ours = {g.uuid: g.index for g in sampler.run_cycle().gpus}
    assert ours == theirs


def test_gpm_ratios_between_consecutive_samples(nvml_sampler) -> None:
    sampler, _ = nvml_sampler
    sampler.run_cycle()
    time.sleep(0.3)  # GPM needs >= 100 ms between its two hardware samples
    view = sampler.run_cycle((Tier.FAST,))
    fams = _families(view.gpus[0])
    if "gpu_sm_active_ratio" not in fams:
        pytest.skip("GPM not supported on this GPU (pre-Hopper)")
    for family in ("gpu_sm_active_ratio", "gpu_dram_active_ratio", "gpu_pipe_active_ratio"):
        for s in fams[family]:
            assert 0.0 <= s.value <= 1.0


def test_counters_do_not_go_backwards(nvml_sampler) -> None:
    sampler, _ = nvml_sampler
    first = _families(sampler.run_cycle().gpus[0])
    second = _families(sampler.run_cycle((Tier.SLOW,)).gpus[0])
    before = first["gpu_energy_joules_total"][0].value
    assert second["gpu_energy_joules_total"][0].value >= before


def test_stop_closes_every_device_file() -> None:
    _skip_without_gpu()
    # CUDA may hold some already when another test of this run imported CuPy: NVML's are the
    # ones it adds.
    before = sorted(open_device_files())
    backend = NvmlBackend()
    backend.start()
    list(backend.devices())
    assert len(open_device_files()) > len(before), "NVML holds /dev/nvidia* while initialized"
    backend.stop()
    assert sorted(open_device_files()) == before


def test_daemon_release_and_resume_on_the_real_gpu(tmp_path: Path) -> None:
    _skip_without_gpu()
    import httpx

    token = "gpu-test-token-0123456789"
    (tmp_path / "token").write_text(token)
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "serve", "--collection.backend=nvml",
         "--web.listen-address=127.0.0.1:19472", f"--admin.token-file={tmp_path / 'token'}"],
        cwd=REPO)
    url = "http://127.0.0.1:19472"
    try:
        wait_for(lambda: _get(url + "/readyz") == 200, timeout=60, what="daemon ready")
        fds = lambda: [os.readlink(p) for p in Path(f"/proc/{proc.pid}/fd").iterdir()  # noqa: E731
                       if os.readlink(p).startswith("/dev/nvidia")]
        assert fds(), "daemon should hold NVML open while collecting"
        r = httpx.post(url + "/admin/release", headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["device_files_open"] == []
        assert fds() == []
        assert "gpu_exporter_released 1.0" in httpx.get(url + "/metrics").text
        r = httpx.post(url + "/admin/resume", headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 200
        wait_for(lambda: set(_gpu_up(httpx.get(url + "/metrics").text)) == {1.0}, timeout=30,
                 what="GPU back after resume")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


def _gpu_up(text: str) -> list[float]:
    return [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("gpu_up{")]


def _get(url: str) -> int:
    import httpx

    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0
