"""The amdsmi backend over a faithful fake of the library (no AMD hardware: docs/amd.md).

What the fake reproduces and where each fact comes from: tests/fixtures/amdsmi/README.md.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
from pathlib import Path

import pytest
from amdsmi_fake import FakeAmdSmi, import_failure
from conftest import require_tool, wait_for

from exporter.backends import OpenedBackends
from exporter.backends.amdsmi import AmdSmiBackend, loader
from exporter.backends.base import BackendUnavailable
from exporter.catalog import AMD_SOURCES, BY_NAME
from exporter.exposition import group_rows
from exporter.publisher import gpu_rows
from exporter.sampler import Sampler

BOARD = {"gpu_temperature_celsius", "gpu_power_watts", "gpu_energy_joules_total",
         "gpu_power_limit_watts", "gpu_temperature_threshold_celsius", "gpu_pcie_link_generation",
         "gpu_pcie_link_width_lanes", "gpu_pcie_replay_total", "gpu_violation_seconds_total",
         "gpu_xgmi_data_bytes_total", "gpu_ecc_errors_total", "gpu_ecc_mode_enabled",
         "gpu_retired_pages_total", "gpu_retired_pages_pending"}


def _node(fake: FakeAmdSmi) -> tuple[AmdSmiBackend, Sampler]:
    backend = AmdSmiBackend(amdsmi=fake)
    backend.start()
    sampler = Sampler([(backend, list(backend.devices()))], fast_interval=5, slow_interval=30,
                      call_deadline=2)
    sampler.start(schedule=False)
    return backend, sampler


@contextlib.contextmanager
def node(fake: FakeAmdSmi):  # type: ignore[no-untyped-def]
    backend, sampler = _node(fake)
    try:
        yield backend, sampler
    finally:
        sampler.stop()
        backend.stop()


def _values(gpu, family: str) -> dict[tuple, float]:  # type: ignore[no-untyped-def]
    return {s.labels: s.value for s in gpu.samples if s.family == family}


def _one(gpu, family: str, **labels: str) -> float:  # type: ignore[no-untyped-def]
    want = set(labels.items())
    (value,) = [s.value for s in gpu.samples if s.family == family and want <= set(s.labels)]
    return value


# --- import ---------------------------------------------------------------------------------
def test_a_host_without_rocm_is_one_reason_and_a_clean_stdout(monkeypatch, capsys) -> None:
    def failing_import(name: str):  # type: ignore[no-untyped-def]
        assert name == "amdsmi"
        import_failure()

    monkeypatch.setattr(loader.importlib, "import_module", failing_import)
    with pytest.raises(BackendUnavailable) as e:
        loader.import_amdsmi()
    assert capsys.readouterr().out == ""  # what the library printed is in the reason instead
    assert "libamd_smi.so" in str(e.value) and "\n" not in str(e.value)


def test_rocm_installed_package_is_preferred(tmp_path: Path) -> None:
    (tmp_path / "share" / "amd_smi" / "amdsmi").mkdir(parents=True)
    assert loader.rocm_python_dir({"ROCM_PATH": str(tmp_path)}) == tmp_path / "share" / "amd_smi"
    assert loader.rocm_python_dir({"ROCM_PATH": str(tmp_path / "nope")}) in (
        None, loader.DEFAULT_ROCM / "share" / "amd_smi")


def test_init_failure_says_why() -> None:
    fake = FakeAmdSmi("mi300x")
    fake.fail("amdsmi_init", 34)
    with pytest.raises(BackendUnavailable, match="amdgpu kernel driver is not loaded"):
        AmdSmiBackend(amdsmi=fake).start()


# --- readings in base units -------------------------------------------------------------------
@pytest.mark.parametrize("version", ["6.4", "7.0"])
def test_mi300x_first_cycle_in_base_units(version: str) -> None:
    fake = FakeAmdSmi("mi300x", cards=2, version=version)
    with node(fake) as (_, sampler):
        view = sampler.run_cycle()
        assert len(view.gpus) == 2 and all(g.up for g in view.gpus) and view.errors == {}
        gpu = view.gpus[0]
        handle = fake.amdsmi_get_processor_handles()[0]
        info = dict(next(s for s in gpu.samples if s.family == "gpu_info").labels)
        assert info["vendor"] == "amd" and info["model"].startswith("AMD Instinct MI300X")
        assert info["pci_bus_id"] == fake.amdsmi_get_gpu_device_bdf(handle)
        assert (info["compute_partition"], info["memory_partition"]) == ("SPX", "NPS1")
        vram = fake.AmdSmiMemoryType.VRAM
        assert _one(gpu, "gpu_memory_total_bytes") == fake.amdsmi_get_gpu_memory_total(handle,
                                                                                          vram)
        metrics = fake.amdsmi_get_gpu_metrics_info(handle)
        assert _one(gpu, "gpu_power_watts") == metrics["current_socket_power"]  # W, MI300
        assert _one(gpu, "gpu_temperature_celsius", sensor="hotspot") == \
            metrics["temperature_hotspot"]
        assert not _values(gpu, "gpu_temperature_celsius").keys() & {(("sensor", "edge"),)}
        energy = fake.amdsmi_get_energy_count(handle)
        joules = energy["energy_accumulator"] * energy["counter_resolution"] * 1e-6
        assert _one(gpu, "gpu_energy_joules_total") == pytest.approx(joules, rel=1e-3)
        cap = fake.amdsmi_get_power_cap_info(handle)["power_cap"]
        assert _one(gpu, "gpu_power_limit_watts", limit="enforced") == pytest.approx(cap * 1e-6)
        speed = fake.amdsmi_get_pcie_info(handle)["pcie_metric"]["pcie_speed"]
        assert _one(gpu, "gpu_pcie_link_generation") == {16000: 4, 32000: 5}[speed]
        gfx = fake.amdsmi_get_gpu_activity(handle)["gfx_activity"]
        assert _one(gpu, "gpu_utilization_ratio") == pytest.approx(gfx / 100)
        clk = fake.amdsmi_get_clock_info(handle, fake.AmdSmiClkType.GFX)["clk"]
        assert _one(gpu, "gpu_clock_hertz", clock="graphics") == clk * 1e6
        assert _one(gpu, "gpu_ecc_errors_total", type="deferred", location="total") == 0
        assert {dict(k)["location"] for k in _values(gpu, "gpu_ecc_errors_total")} >= {
            "total", "umc"}
        # Everything the backend emits is in the catalog with the catalog's labels.
        rows = [r for g in view.gpus for r in gpu_rows(g)]
        assert group_rows(rows)[1] == []
        # Slow calls never made: they would stall a cycle.
        assert fake.call_count("amdsmi_get_gpu_pci_throughput") == 0
        assert fake.call_count("amdsmi_get_violation_status") == 0


def test_mi250x_reports_average_power_and_edge_and_lacks_mi300_families() -> None:
    fake = FakeAmdSmi("mi250x", cards=1)
    with node(fake) as (_, sampler):
        gpu = sampler.run_cycle().gpus[0]
        handle = fake.amdsmi_get_processor_handles()[0]
        metrics = fake.amdsmi_get_gpu_metrics_info(handle)
        assert _one(gpu, "gpu_power_watts") == metrics["average_socket_power"]
        assert _one(gpu, "gpu_temperature_celsius", sensor="edge") == metrics["temperature_edge"]
        families = {s.family for s in gpu.samples}
        assert "gpu_violation_seconds_total" not in families  # no residency accumulators
        info = dict(next(s for s in gpu.samples if s.family == "gpu_info").labels)
        assert info["compute_partition"] == ""  # not partitionable: NOT_SUPPORTED


def test_violation_seconds_follow_the_residency_share() -> None:
    fake = FakeAmdSmi("mi300x", cards=1)
    with node(fake) as (_, sampler):
        sampler.run_cycle()
        fake.throttle(0, ppt=0.25)
        first = _one(sampler.run_cycle().gpus[0], "gpu_violation_seconds_total", policy="power")
        # The backend integrates the share over its own (monotonic) time between readings.
        clock = iter([1000.0, 1060.0, 1120.0])
        import exporter.backends.amdsmi.slow as slow

        real = slow.time.monotonic
        slow.time.monotonic = lambda: next(clock)  # type: ignore[assignment]
        try:
            for _ in range(3):
                fake.advance(60)
                sampler.run_cycle()
        finally:
            slow.time.monotonic = real  # type: ignore[assignment]
        last = _one(sampler.view.gpus[0], "gpu_violation_seconds_total", policy="power")
        assert last - first == pytest.approx(0.25 * 120, rel=0.05)
        assert _one(sampler.view.gpus[0], "gpu_violation_seconds_total", policy="thermal") == 0


# --- partitions ---------------------------------------------------------------------------------
def test_cpx_partitions_are_gpus_and_board_values_are_counted_once() -> None:
    fake = FakeAmdSmi("mi300x", cards=2, partition="CPX")
    with node(fake) as (_, sampler):
        view = sampler.run_cycle()
        assert len(view.gpus) == 16 and len({g.uuid for g in view.gpus}) == 16
        primaries = [g for g in view.gpus if "gpu_power_watts" in {s.family for s in g.samples}]
        assert len(primaries) == 2  # one per card
        for g in view.gpus:
            families = {s.family for s in g.samples}
            if g not in primaries:
                assert not families & BOARD, (g.index, families & BOARD)
            assert {"gpu_utilization_ratio", "gpu_memory_total_bytes"} <= families
            info = dict(next(s for s in g.samples if s.family == "gpu_info").labels)
            assert info["compute_partition"] == "CPX"
        handles = fake.amdsmi_get_processor_handles()
        for g in primaries:  # each card's power, once
            metrics = fake.amdsmi_get_gpu_metrics_info(handles[g.index])
            assert _one(g, "gpu_power_watts") == metrics["current_socket_power"]
        assert [g.index for g in primaries] == [0, 8]


def test_partitions_sharing_a_uuid_before_rocm_7_stay_distinct() -> None:
    fake = FakeAmdSmi("mi300x", cards=1, partition="CPX", version="6.4")
    with node(fake) as (_, sampler):
        uuids = [g.uuid for g in sampler.run_cycle().gpus]
        assert len(uuids) == 8 and len(set(uuids)) == 8


# --- absent values ----------------------------------------------------------------------------
def test_na_and_sentinels_produce_no_series() -> None:
    fake = FakeAmdSmi("mi300x", cards=2, version="7.0")
    fake.na("amdsmi_get_gpu_activity", "umc_activity", handle_index=1)
    fake.sentinel("amdsmi_get_gpu_metrics_info", "temperature_hotspot", width=16)
    fake.sentinel("amdsmi_get_power_cap_info", "default_power_cap", width=32)
    with node(fake) as (_, sampler):
        view = sampler.run_cycle()
        g0, g1 = view.gpus
        assert "gpu_memory_activity_ratio" in {s.family for s in g0.samples}
        assert "gpu_memory_activity_ratio" not in {s.family for s in g1.samples}
        for g in view.gpus:
            assert (("sensor", "hotspot"),) not in _values(g, "gpu_temperature_celsius")
            assert (("limit", "default"),) not in _values(g, "gpu_power_limit_watts")
            assert all(s.value < 0xFFFF for s in g.samples
                       if not s.family.startswith("_")  # per-process memory: bytes
                       and s.family not in ("gpu_energy_joules_total", "gpu_xgmi_data_bytes_total",
                                           "gpu_memory_total_bytes", "gpu_memory_used_bytes",
                                           "gpu_memory_free_bytes", "gpu_clock_hertz",
                                           "gpu_clock_max_hertz"))


def test_not_supported_is_remembered_and_not_asked_again() -> None:
    fake = FakeAmdSmi("mi300x", cards=1)
    fake.fail("amdsmi_get_gpu_process_list", 10)  # NO_PERM: non-root seeing other users
    with node(fake) as (_, sampler):
        sampler.run_cycle()
        asked = fake.call_count("amdsmi_get_gpu_process_list")
        gpu = sampler.run_cycle().gpus[0]
        assert gpu.up and "gpu_processes" not in {s.family for s in gpu.samples}
        assert fake.call_count("amdsmi_get_gpu_process_list") == asked == 1


def test_a_driver_gone_marks_the_gpus_down() -> None:
    fake = FakeAmdSmi("mi300x", cards=2)
    with node(fake) as (_, sampler):
        sampler.run_cycle()
        fake.fail("amdsmi_get_gpu_activity", 34)
        view = sampler.run_cycle()
        assert not any(g.up for g in view.gpus)
        assert all(s.needs_reinit for s in sampler.sources)


def test_a_hung_call_blocks_only_its_gpu() -> None:
    fake = FakeAmdSmi("mi300x", cards=2)
    backend = AmdSmiBackend(amdsmi=fake)
    backend.start()
    sampler = Sampler([(backend, list(backend.devices()))], fast_interval=5, slow_interval=30,
                      call_deadline=0.3)
    sampler.start(schedule=False)
    try:
        sampler.run_cycle()
        gate = fake.block("amdsmi_get_gpu_activity", handle_index=1)
        view = sampler.run_cycle()
        assert [g.up for g in view.gpus] == [True, False]
        gate.set()
    finally:
        fake.release_all()
        sampler.stop()
        backend.stop()


# --- events and the verdict -----------------------------------------------------------------
def test_events_are_counted_and_a_reset_warns_the_verdict() -> None:
    import httpx  # noqa: F401  (the daemon's app needs it through TestClient)
    from fastapi.testclient import TestClient

    from exporter.config import load_settings
    from exporter.daemon import Daemon

    fake = FakeAmdSmi("mi300x", cards=2)
    backend = AmdSmiBackend(amdsmi=fake)
    backend.start()
    settings = load_settings(overrides={
        "collection": {"fast_interval": 0.05, "slow_interval": 0.2, "call_deadline": 1},
        "probes": {"enabled": False}, "events": {"state_dir": None}})
    daemon = Daemon(settings, OpenedBackends(sources=[(backend, list(backend.devices()))]))
    with TestClient(daemon.app()) as client:
        wait_for(lambda: client.get("/health").status_code == 200, what="first verdict")
        assert fake.emit(1, "GPU_PRE_RESET", "job hang")
        assert fake.emit(0, "THERMAL_THROTTLE", "x")

        def reasons() -> dict[int, list[str]]:
            return {g["gpu"]: [r["reason"] for r in g["reasons"]]
                    for g in client.get("/health").json()["gpus"]}

        wait_for(lambda: reasons().get(1) == ["gpu_reset"], what="the reset in the verdict")
        assert reasons()[0] == []  # a throttle event is counted, not a reason by itself
        text = client.get("/metrics").text
        assert 'event="gpu_pre_reset"' in text and 'event="thermal_throttle"' in text
        assert 'gpu_exporter_event_source_up{source="amdsmi_events"} 1.0' in text
    assert fake.open_readers() == 0


# --- the catalog's AMD column and the exposition --------------------------------------------
def test_the_catalog_amd_column_is_what_the_backend_emits() -> None:
    emitted: set[str] = set()
    for profile in ("mi300x", "mi250x", "mi210"):
        with node(FakeAmdSmi(profile, cards=1)) as (_, sampler):
            emitted |= {s.family for g in sampler.run_cycle().gpus for s in g.samples
                        if not s.family.startswith("_")}  # internal samples are not metrics
    assert emitted - set(AMD_SOURCES) == set(), "emitted without an AMD source in the catalog"
    # Events arrive through the reader; the NUMA node comes from sysfs (the fake's bus ids have
    # no sysfs entry here; test_numa_node_of_a_partition_is_its_card covers that path).
    listed = {f for f in AMD_SOURCES if BY_NAME[f].tier.value != "event"} - {"gpu_numa_node"}
    assert listed - emitted == set(), "an AMD source in the catalog that nothing emits"


@pytest.mark.integration
def test_amd_node_exposition_passes_promtool() -> None:
    promtool = require_tool("promtool")
    from exporter.publisher import Publisher

    with node(FakeAmdSmi("mi300x", cards=2, partition="DPX")) as (_, sampler):
        view = sampler.run_cycle()
        exposition = Publisher().publish(view)
        from exporter.exposition import negotiate

        body = exposition.body(negotiate("text/plain"), False)
    r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                       timeout=60)
    assert (r.returncode, r.stdout + r.stderr) == (0, b"")
    assert b'vendor="amd"' in body and b'compute_partition="DPX"' in body
    assert io.BytesIO(body).read().count(b"gpu_power_watts{") == 2  # once per card


def test_numa_node_of_a_partition_is_its_card(tmp_path: Path) -> None:
    from exporter.backends.sysfs import numa_node_of, sysfs_address

    (tmp_path / "0000:c1:00.0").mkdir()
    (tmp_path / "0000:c1:00.0" / "numa_node").write_text("1\n")
    assert sysfs_address("0000:c1:00.3") == "0000:c1:00.0"  # amdsmi: partition 3 of the card
    assert sysfs_address("00000000:C1:00.0") == "0000:c1:00.0"  # NVML's 8-digit domain
    assert numa_node_of("0000:c1:00.5", tmp_path) == 1
    assert numa_node_of("0000:c2:00.0", tmp_path) is None


def test_auto_serves_both_vendors_on_one_node(monkeypatch) -> None:
    """`auto` opens every vendor library that initializes: an H100 (recorded NVML) and two
    MI300X (the amdsmi fake) on one node, one set of families, `vendor` telling them apart."""
    from nvml_fake import FakeNvml

    from exporter.backends import open_backends
    from exporter.backends.nvml import NvmlBackend
    from exporter.config import load_settings
    from exporter.publisher import Publisher

    nvml = FakeNvml.from_fixture(Path(__file__).parent / "fixtures" / "nvml" / "h100_580.json")
    amd = FakeAmdSmi("mi300x", cards=2)
    monkeypatch.setattr(NvmlBackend, "from_settings", classmethod(lambda cls, s: cls(nvml)))
    monkeypatch.setattr(AmdSmiBackend, "from_settings", classmethod(lambda cls, s: cls(amd)))
    opened = open_backends(load_settings(overrides={"collection": {"backend": "auto"}}))
    assert [b.name for b, _ in opened.sources] == ["nvml", "amdsmi"] and opened.failed == {}
    sampler = Sampler(opened.sources, fast_interval=5, slow_interval=30, call_deadline=2)
    sampler.start(schedule=False)
    try:
        view = sampler.run_cycle()
        exposition = Publisher().publish(view)
        vendors = sorted(dict(s.labels)["vendor"] for g in view.gpus for s in g.samples
                         if s.family == "gpu_info")
        assert vendors == ["amd", "amd", "nvidia"]
        assert len({g.uuid for g in view.gpus}) == 3 and all(g.up for g in view.gpus)
        from exporter.exposition import negotiate

        body = exposition.body(negotiate("text/plain"), False).decode()
        power = [line for line in body.splitlines() if line.startswith("gpu_power_watts{")]
        assert len(power) == 3  # one family, both vendors
    finally:
        sampler.stop()
        for backend, _ in opened.sources:
            backend.stop()
    amd.assert_clean()


def test_stop_waits_for_an_event_read_in_flight() -> None:
    """The library is never shut down under a read: stop() waits for the read to return."""
    import threading

    fake = FakeAmdSmi("mi300x", cards=1)
    backend = AmdSmiBackend(amdsmi=fake)
    backend.start()
    backend.devices()
    gate = fake.block("amdsmi_get_gpu_event_notification")
    reader = threading.Thread(target=backend.poll_events, args=(0.5,))
    reader.start()
    wait_for(lambda: fake.entered("amdsmi_get_gpu_event_notification").is_set(),
             what="a read in flight")
    stopper = threading.Thread(target=backend.stop)
    stopper.start()
    stopper.join(0.3)
    assert stopper.is_alive()  # still waiting: the read holds the library
    gate.set()
    reader.join(5)
    stopper.join(5)
    assert not stopper.is_alive() and fake.open_readers() == 0
    fake.assert_clean()
