"""The CuPy probes on a real NVIDIA GPU, each through the real child entry as the runner starts
it (`python -m probes.child NAME --uuid UUID`, `CUDA_VISIBLE_DEVICES=UUID`, `CUPY_CACHE_DIR`).
Marked `gpu`; skipped elsewhere with the reason. Bounds come from the device itself where NVML
says (link generation and width, memory bus), else loose ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.gpu

# Per-lane PCIe payload rates in bytes/s after line coding, by generation.
LANE_BYTES = {1: 250e6, 2: 500e6, 3: 984.6e6, 4: 1969e6, 5: 3938e6, 6: 7877e6}


def _cuda_uuids() -> list[str]:
    """The UUIDs CUDA sees, in CUDA's order (no context is created)."""
    try:
        import cupy
    except ImportError as e:
        pytest.skip(f"CuPy not importable: {e}")
    from probes.cuda_runtime import device_uuid

    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError without a driver; ImportError of libcuda
        pytest.skip(f"no CUDA device visible: {e}")
    if count == 0:
        pytest.skip("no CUDA device visible")
    return [device_uuid(cupy, i) for i in range(count)]


@pytest.fixture(scope="module")
def uuids() -> list[str]:
    return _cuda_uuids()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cupy-cache")


def _child(probe: str, uuid: str, cache: Path, *extra: str,
           visible: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": visible or uuid, "CUPY_CACHE_DIR": str(cache),
           "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "probes.child", probe, "--uuid", uuid, *extra],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=180)


def _measure(probe: str, uuid: str, cache: Path, *extra: str, visible: str | None = None):
    from probes.result import Measurement

    r = _child(probe, uuid, cache, *extra, visible=visible)
    assert r.returncode == 0, f"{probe} child exited {r.returncode}: {r.stderr[-2000:]}"
    m = Measurement.from_json(r.stdout.strip().splitlines()[-1])
    assert m.skipped is None, f"{probe} skipped: {m.skipped}"
    from probes.registry import PROBES

    assert set(PROBES[probe].quantities) <= set(m.quantities), m.quantities
    assert all(v > 0 for v in m.quantities.values()), m.quantities
    assert m.start_seconds > 0 and m.measure_seconds > 0
    return m


def _nvml(uuid: str):
    """(pynvml, handle) for the GPU, or None where NVML is not there."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml, pynvml.nvmlDeviceGetHandleByUUID(uuid.encode())
    except Exception:
        return None


def test_graph_replay_verifies_and_meets_the_healthcheck(uuids: list[str], cache_dir: Path):
    m = _measure("graph_replay", uuids[0], cache_dir)
    q = m.quantities
    assert m.corrupted == 0, m.detail
    assert q["replays_100_seconds"] < 2.0  # the operators' pass criterion
    assert q["replay_cv_ratio"] < 0.05, f"cadence varies by {q['replay_cv_ratio']:.1%}"
    assert q["replay_mean_seconds"] <= q["replay_p99_seconds"] * 1.0001
    assert 1e-6 < q["replay_mean_seconds"] < 0.02


def test_pcie_bandwidth_within_the_link(uuids: list[str], cache_dir: Path):
    q = _measure("pcie_bandwidth", uuids[0], cache_dir).quantities
    nv = _nvml(uuids[0])
    gen = width = 0
    if nv:
        pynvml, h = nv
        try:
            gen = pynvml.nvmlDeviceGetMaxPcieLinkGeneration(h)
            width = pynvml.nvmlDeviceGetMaxPcieLinkWidth(h)
        except pynvml.NVMLError:
            pass
    for d in ("h2d_bytes_per_second", "d2h_bytes_per_second"):
        if gen >= 4 and width >= 16:
            assert q[d] >= 10e9, f"{d} {q[d]:.3g} on a Gen{gen} x{width} link"
        else:
            assert q[d] > 1e9, q
        if gen in LANE_BYTES and width:
            assert q[d] <= 1.05 * LANE_BYTES[gen] * width, f"{d} {q[d]:.3g} beats the link"


def test_memory_bandwidth_within_the_hbm(uuids: list[str], cache_dir: Path):
    d2d = _measure("memory_bandwidth", uuids[0], cache_dir).quantities["d2d_bytes_per_second"]
    nv = _nvml(uuids[0])
    peak = None
    if nv:
        pynvml, h = nv
        try:  # double data rate: two transfers per clock on each bit of the bus
            clock = pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_MEM) * 1e6
            peak = 2 * clock * pynvml.nvmlDeviceGetMemoryBusWidth(h) / 8
        except (pynvml.NVMLError, AttributeError):
            peak = None
    if peak:  # read + write counted: the total traffic can't beat the bus
        assert 0.3 * peak < d2d <= 1.05 * peak, f"{d2d:.3g} against a {peak:.3g} B/s bus"
    else:
        assert d2d > 1e11


def test_gemm_throughput_plausible(uuids: list[str], cache_dir: Path):
    import cupy

    m = _measure("gemm", uuids[0], cache_dir)
    assert m.corrupted == 0, m.detail
    major = cupy.cuda.runtime.getDeviceProperties(0)["major"]
    floor = 30e12 if major >= 8 else 1e12  # Ampere and later: tensor cores for bf16
    for name in ("bf16_flop_per_second", "fp16_flop_per_second"):
        assert floor < m.quantities[name] < 5e15, m.quantities


def test_wrong_uuid_is_refused_naming_both(uuids: list[str], cache_dir: Path):
    wrong = "GPU-00000000-1111-2222-3333-444444444444"
    r = _child("memory_bandwidth", wrong, cache_dir, visible=uuids[0])
    assert r.returncode != 0
    assert wrong in r.stderr and uuids[0].lower() in r.stderr.lower(), r.stderr[-2000:]


def test_a_child_past_its_memory_cap_is_an_error_and_leaves_nothing(uuids: list[str],
                                                                     cache_dir: Path):
    """A real out-of-memory in the child: the memory copy asked for 2 x 1 GiB under its 1 GiB
    cap. The runner reports an error naming it, and no child is left."""
    from probes.result import Outcome
    from probes.runner import Runner, Target
    from probes.thresholds import GpuFacts, Thresholds

    runner = Runner(Thresholds.load(), runtime="cuda", timeout=120, cache_dir=cache_dir)
    target = Target(0, uuids[0], GpuFacts("unknown", pcie_generation=None, pcie_width=None))
    r = runner.run("memory_bandwidth", target, params={"bytes": 1 << 30})
    assert r.outcome is Outcome.ERROR and "OutOfMemoryError" in r.reason, r.reason
    assert runner.children == set()  # reaped: nothing holds the GPU after the error


def test_p2p_bandwidth_or_skip_reason(uuids: list[str], cache_dir: Path):
    if len(uuids) < 2:
        pytest.skip("p2p_bandwidth needs two GPUs; one is visible")
    a, b = uuids[:2]
    r = _child("p2p_bandwidth", a, cache_dir, "--peer-uuid", b, visible=f"{a},{b}")
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads(r.stdout.strip().splitlines()[-1])
    if m["skipped"]:
        assert "canAccessPeer" in m["skipped"]
    else:
        assert m["quantities"]["p2p_bytes_per_second"] > 1e9, m
