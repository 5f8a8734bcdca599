"""The simulated node: deterministic telemetry, the catalog contract, and faults acting on reads.

Time is a fake clock moved by hand; a hung read is observed through events, never by sleeping.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from exporter.backends.base import Device, DeviceLost, Field, Sample, Unsupported
from exporter.backends.sim import ScenarioError, SimBackend
from exporter.backends.sim.node import Role
from exporter.backends.sim.profiles import GPM, NVLINK, PROFILES
from exporter.backends.sim.scenario import parse_scenario
from exporter.catalog import FAMILIES, Kind, Tier, family
from exporter.config import Settings, SimSettings

NVIDIA_UUID = re.compile(r"GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
AMD_UUID = re.compile(r"[0-9a-f]{4}74a1-0000-1000-80[0-9a-f]{2}-[0-9a-f]{12}")
WAIT = 5.0  # seconds a test waits for another thread before it fails (never slept)


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def sim(faults: list[dict[str, Any]] | None = None, **kwargs: Any) -> tuple[SimBackend, FakeClock]:
    clock = FakeClock()
    scenario = parse_scenario({"faults": faults}, "test.yaml") if faults else None
    return SimBackend(scenario=scenario, clock=clock, **kwargs), clock


def field_of(backend: SimBackend, name: str, gpu: int = 0) -> Field:
    device = backend.devices()[gpu]
    (f,) = [f for f in backend.fields(device) if f.name == name]
    return f


def read(backend: SimBackend, name: str, gpu: int = 0) -> list[Sample]:
    return list(field_of(backend, name, gpu).read(backend.devices()[gpu]))


def value(backend: SimBackend, name: str, family_name: str, gpu: int = 0, **labels: str) -> float:
    """The one value of a family in a field's read, with these labels."""
    want = set(labels.items())
    matches = [s.value for s in read(backend, name, gpu)
               if s.family == family_name and want <= set(s.labels)]
    assert len(matches) == 1, (family_name, labels, matches)
    return matches[0]


def read_all(backend: SimBackend, device: Device) -> dict[str, list[Sample] | str]:
    out: dict[str, list[Sample] | str] = {}
    for f in backend.fields(device):
        try:
            out[f.name] = list(f.read(device))
        except Unsupported:
            out[f.name] = "unsupported"
    return out


def families_of(backend: SimBackend) -> set[str]:
    return {s.family for d in backend.devices() for samples in read_all(backend, d).values()
            if isinstance(samples, list) for s in samples}


def gpus_with(backend: SimBackend, role: Role) -> list[int]:
    return [g.index for g in backend._gpus if g.layout.role is role]


# --- determinism ------------------------------------------------------------------------------
def run(seed: int, times: Sequence[float]) -> list[dict[str, list[Sample] | str]]:
    backend, clock = sim(seed=seed)
    out = []
    for t in times:
        clock.t = 1000.0 + t
        out += [read_all(backend, d) for d in backend.devices()]
    return out


def test_same_seed_same_read_times_same_values() -> None:
    times = [0.0, 4.9, 5.0, 30.0, 31.7, 600.0, 3600.0, 86400.0]
    assert run(7, times) == run(7, times)


def test_the_node_is_the_same_in_every_process() -> None:
    # Pinned: Python's salted hash() or an unseeded RNG anywhere would change this between runs.
    backend, _ = sim(seed=1)
    assert backend.devices()[0].uuid == "GPU-2d5dd6ef-9ec3-6c51-6fa3-7922b45ca732"


def test_another_seed_is_another_node() -> None:
    a, _ = sim(seed=1)
    b, _ = sim(seed=2)
    assert [d.uuid for d in a.devices()] != [d.uuid for d in b.devices()]
    assert read(a, "utilization") != read(b, "utilization") or read(a, "power") != read(b, "power")


def test_telemetry_moves_with_time() -> None:
    backend, clock = sim()
    serving = gpus_with(backend, Role.SERVING)[0]
    seen = set()
    for _ in range(60):
        clock.advance(5)
        seen.add(value(backend, "utilization", "gpu_utilization_ratio", serving))
    assert len(seen) > 10 and min(seen) >= 0.25 and max(seen) <= 1.0


# --- the node ---------------------------------------------------------------------------------
@pytest.mark.parametrize("model", sorted(PROFILES))
def test_uuids_are_unique_and_in_the_vendor_style(model: str) -> None:
    backend, _ = sim(model=model)
    uuids = [d.uuid for d in backend.devices()]
    assert len(set(uuids)) == 8 and [d.index for d in backend.devices()] == list(range(8))
    style = AMD_UUID if PROFILES[model].vendor == "amd" else NVIDIA_UUID
    assert all(style.fullmatch(u) for u in uuids), uuids


def test_pod_allocation() -> None:
    backend, _ = sim()
    pods = {d.index: [dict(s.labels) for s in read(backend, "pods", d.index)]
            for d in backend.devices()}
    assert sorted(len(p) for p in pods.values()).count(0) == 1  # one GPU unallocated
    assert sorted(len(p) for p in pods.values()).count(2) == 1  # one GPU time-sliced
    serving = [p for p in pods.values() if p and p[0]["namespace"] == "llm-serving"]
    assert len(serving) >= 5
    assert all(p["container"] == "vllm" and p["mig_uuid"] == "" for ps in serving for p in ps)
    assert any(re.fullmatch(r"vllm-llama3-70b-\d+", p["pod"]) for ps in serving for p in ps)
    # The unallocated GPU is an idle one: nothing runs there.
    (free,) = [i for i, p in pods.items() if not p]
    assert value(backend, "processes", "gpu_processes", free) == 0


def test_one_or_two_gpus_idle_and_the_rest_serving() -> None:
    for seed in range(1, 6):
        backend, _ = sim(seed=seed)
        idle = gpus_with(backend, Role.IDLE)
        assert 1 <= len(idle) <= 2
        for gpu in idle:
            assert value(backend, "utilization", "gpu_utilization_ratio", gpu) == 0
            assert value(backend, "clock_events_mask", "gpu_clock_event_active", gpu,
                         reason="gpu_idle") == 1
            assert value(backend, "pcie_link", "gpu_pcie_link_generation", gpu) == 1  # saving
        for gpu in gpus_with(backend, Role.SERVING):
            assert value(backend, "utilization", "gpu_utilization_ratio", gpu) >= 0.3
            assert value(backend, "pcie_link", "gpu_pcie_link_generation", gpu) == 5
            used = value(backend, "memory_info", "gpu_memory_used_bytes", gpu)
            assert used > 0.8 * value(backend, "memory_info", "gpu_memory_total_bytes", gpu)


def test_h100_values_in_base_units() -> None:
    backend, _ = sim()
    assert value(backend, "max_clocks", "gpu_clock_max_hertz", clock="sm") == 1980e6
    assert value(backend, "max_clocks", "gpu_clock_max_hertz", clock="memory") == 2619e6
    assert value(backend, "power_limits", "gpu_power_limit_watts", limit="enforced") == 700
    assert value(backend, "memory_info", "gpu_memory_total_bytes") == 81559 * 2**20
    assert value(backend, "pcie_max", "gpu_pcie_link_max_generation") == 5
    (info,) = read(backend, "identity")
    labels = dict(info.labels)
    assert labels["model"] == "NVIDIA H100 80GB HBM3" and labels["vendor"] == "nvidia"
    assert (labels["driver_version"], labels["cuda_version"], labels["rocm_version"]) == (
        "580.159.04", "13.0", "")
    assert re.fullmatch(r"00000000:[0-9A-F]{2}:00\.0", labels["pci_bus_id"])


# --- the catalog contract ---------------------------------------------------------------------
def backend_families() -> set[str]:
    """Per-GPU families a backend reads (identity, fast, slow), plus the simulated pods."""
    sampled = (Tier.IDENTITY, Tier.FAST, Tier.SLOW)
    return {f.name for f in FAMILIES if f.per_gpu and f.tier in sampled} | {"gpu_pod_info"}


def test_h100_produces_every_family_an_h100_has() -> None:
    backend, _ = sim()
    lacks = {"gpu_fan_speed_ratio", "gpu_retired_pages_total", "gpu_retired_pages_pending",
             "gpu_mig_info", "gpu_mig_memory_used_bytes", "gpu_mig_memory_total_bytes",
             "gpu_xgmi_data_bytes_total"}  # AMD's
    assert families_of(backend) == backend_families() - lacks


def test_mig_mode_adds_mig_families_and_mig_pods() -> None:
    backend, _ = sim(mig_gpus=(0,))
    assert {"gpu_mig_info", "gpu_mig_memory_used_bytes"} <= families_of(backend)
    mig = [dict(s.labels) for s in read(backend, "mig", 0)]
    assert [m["profile"] for m in mig] == ["3g.40gb", "3g.40gb"]
    assert {p["mig_uuid"] for p in map(dict, (s.labels for s in read(backend, "pods", 0)))} == {
        m["mig_uuid"] for m in mig}
    assert value(backend, "checklist", "gpu_mig_mode_enabled", 0) == 1
    assert value(backend, "checklist", "gpu_mig_mode_enabled", 7) == 0
    assert all(f.collector != "mig" for f in backend.fields(backend.devices()[7]))
    with pytest.raises(ValueError, match="no MIG mode"):
        SimBackend(model="mi300x", mig_gpus=(0,))


def test_mi300x_has_amd_families_and_no_nvlink_or_gpm() -> None:
    backend, _ = sim(model="mi300x")
    produced = families_of(backend)
    assert not produced & (NVLINK | GPM)
    assert {"gpu_retired_pages_total", "gpu_violation_seconds_total"} <= produced
    assert "gpu_row_remap_pending" not in produced
    for name in ("gpm", "nvlink_state", "nvlink_errors", "row_remap"):
        with pytest.raises(Unsupported):
            field_of(backend, name).read(backend.devices()[0])
    temps = {dict(s.labels)["sensor"] for s in read(backend, "temperature")}
    assert temps == {"edge", "hotspot", "hbm"}
    ecc = [dict(s.labels) for s in read(backend, "ecc")]
    assert {e["type"] for e in ecc} == {"corrected", "uncorrected", "deferred"}
    assert {"umc", "gfx", "mmhub"} <= {e["location"] for e in ecc}
    labels = dict(read(backend, "identity")[0].labels)
    assert (labels["vendor"], labels["rocm_version"], labels["cuda_version"]) == (
        "amd", "6.4.1", "")


def test_a100_has_no_gpm() -> None:
    backend, _ = sim(model="a100-sxm")
    with pytest.raises(Unsupported):
        read(backend, "gpm")
    assert value(backend, "max_clocks", "gpu_clock_max_hertz", clock="sm") == 1410e6
    assert len(read(backend, "nvlink_state")) == 12


@pytest.mark.parametrize("model", sorted(PROFILES))
def test_every_field_matches_the_catalog(model: str) -> None:
    mig = (0,) if PROFILES[model].mig_profile else ()
    backend, _ = sim(model=model, mig_gpus=mig, faults=[{"gpu": 0, "kind": "busy"}])
    for device in backend.devices():
        for f in backend.fields(device):
            assert f.tier in (Tier.IDENTITY, Tier.FAST, Tier.SLOW), f.name
            try:
                samples = list(f.read(device))
            except Unsupported:
                continue
            for s in samples:
                fam = family(s.family)
                assert fam.per_gpu, s.family
                assert fam.collector == f.collector, (f.name, s.family)
                # gpu_pod_info is DERIVED (the daemon joins the kubelet); the sim reads it fast.
                expected_tier = Tier.FAST if s.family == "gpu_pod_info" else fam.tier
                assert f.tier == expected_tier, (f.name, s.family)
                assert tuple(k for k, _ in s.labels) == fam.labels, (f.name, s.family)
                assert s.value == s.value and s.value >= 0, (f.name, s)  # no NaN, no negative


def test_fans_are_unsupported_on_sxm() -> None:
    backend, _ = sim()
    with pytest.raises(Unsupported):
        read(backend, "fans")


# --- counters ---------------------------------------------------------------------------------
def test_counters_are_monotonic_over_a_long_run() -> None:
    backend, clock = sim(gpus=3, faults=[
        {"gpu": 0, "kind": "clock_event", "reason": "sw_thermal_slowdown", "at": 600,
         "duration": "1h"},
        {"gpu": 1, "kind": "pcie_replays", "at": "2h", "count": 7},
        {"gpu": 2, "kind": "ecc_corrected", "at": "3h", "count": 3},
    ])
    last: dict[tuple[int, str, tuple[tuple[str, str], ...]], float] = {}
    steps = [0.5, 5, 30, 29.9, 61, 600, 1, 3600]
    for i in range(240):  # about a day and a half of irregular reads
        clock.advance(steps[i % len(steps)])
        for device in backend.devices():
            for samples in read_all(backend, device).values():
                for s in samples if isinstance(samples, list) else ():
                    if family(s.family).kind is not Kind.COUNTER:
                        continue
                    key = (device.index, s.family, s.labels)
                    assert s.value >= last.get(key, 0.0), key
                    last[key] = s.value
    assert last[(1, "gpu_pcie_replay_total", ())] >= 7


def test_energy_integrates_power() -> None:
    backend, clock = sim()
    serving = gpus_with(backend, Role.SERVING)[0]
    before = value(backend, "energy", "gpu_energy_joules_total", serving)
    clock.advance(600)
    gained = value(backend, "energy", "gpu_energy_joules_total", serving) - before
    assert 0.3 * 700 * 600 < gained < 700 * 600  # between a light load and the power limit


# --- faults acting on reads -------------------------------------------------------------------
def test_lost_window_raises_device_lost_then_recovers() -> None:
    backend, clock = sim([{"gpu": 1, "kind": "lost", "at": "10s", "duration": "20s"}])
    clock.advance(5)
    assert read(backend, "power", 1)
    clock.advance(10)  # t = 15
    for f in backend.fields(backend.devices()[1]):
        with pytest.raises(DeviceLost):
            f.read(backend.devices()[1])
    assert read(backend, "power", 0)  # one GPU's trouble never touches another
    clock.advance(16)  # t = 31
    assert read(backend, "power", 1)
    assert read(backend, "identity", 1)


def test_fell_off_bus_for_good_reports_xid_79_once() -> None:
    backend, clock = sim([{"gpu": 3, "kind": "lost", "at": 30, "fell_off_bus": True}],
                         wallclock=lambda: 1_700_000_000.0)
    clock.advance(29)
    assert backend.poll_events(0) == []
    clock.advance(2)  # t = 31
    events = backend.poll_events(0)
    assert [(e.kind, e.code) for e in events] == [("fell_off_bus", None), ("xid", 79)]
    assert {e.uuid for e in events} == {backend.devices()[3].uuid}
    assert all(e.timestamp == 1_700_000_000.0 - 1 for e in events)
    assert backend.poll_events(0) == []
    clock.advance(86400)
    with pytest.raises(DeviceLost, match="fallen off the bus"):
        read(backend, "power", 3)


def test_xid_is_delivered_once() -> None:
    backend, clock = sim([{"gpu": 3, "kind": "xid", "at": "30s", "xid": 79},
                          {"gpu": [1, 2], "kind": "xid", "at": "40s", "xid": 48}])
    clock.advance(35)
    (event,) = backend.poll_events(0)
    assert (event.kind, event.code, event.uuid) == ("xid", 79, backend.devices()[3].uuid)
    clock.advance(100)
    assert [(e.code, e.uuid) for e in backend.poll_events(0)] == [
        (48, backend.devices()[1].uuid), (48, backend.devices()[2].uuid)]
    assert backend.poll_events(0) == []
    assert read(backend, "power", 3)  # an Xid alone leaves the GPU readable


def test_poll_events_waits_on_an_event_that_stop_sets() -> None:
    backend, _ = sim([{"gpu": 0, "kind": "xid", "at": "1h", "xid": 31}])
    returned = threading.Event()
    result: list[Any] = []

    def poll() -> None:
        result.append(backend.poll_events(timeout=60))
        returned.set()

    threading.Thread(target=poll, daemon=True).start()
    assert not returned.wait(0.05)  # still waiting for an event an hour away
    backend.stop()
    assert returned.wait(WAIT)
    assert result == [[]]


def test_hang_blocks_until_released() -> None:
    backend, clock = sim([{"gpu": 4, "kind": "hang", "at": "5s", "duration": "20s"}])
    clock.advance(1)
    assert read(backend, "power", 4)  # before the window: no hang
    clock.advance(5)  # t = 6
    done = threading.Event()
    result: list[Any] = []

    def blocked_read() -> None:
        result.append(read(backend, "power", 4))
        done.set()

    worker = threading.Thread(target=blocked_read, daemon=True)
    worker.start()
    assert backend.wait_until_hung(4, timeout=WAIT)
    assert not done.is_set() and worker.is_alive()
    assert read(backend, "power", 3)  # other GPUs are read while GPU 4 is stuck
    assert backend.release_hang(4)
    assert done.wait(WAIT)
    assert result and result[0][0].family == "gpu_power_watts"
    assert not backend.release_hang(4)  # nothing left to release
    # A hang is one stuck call: later reads in the window return.
    again = threading.Thread(target=read, args=(backend, "power", 4), daemon=True)
    again.start()
    again.join(WAIT)
    assert not again.is_alive()


def test_stop_releases_a_hung_read() -> None:
    backend, _ = sim([{"gpu": 0, "kind": "hang"}])  # no duration: hung until released
    worker = threading.Thread(target=read, args=(backend, "identity", 0), daemon=True)
    worker.start()
    assert backend.wait_until_hung(0, timeout=WAIT)
    backend.stop()
    worker.join(WAIT)
    assert not worker.is_alive()


def test_clock_event_sets_the_reason_and_its_counter_grows() -> None:
    backend, clock = sim([{"gpu": 5, "kind": "clock_event", "reason": "hw_thermal_slowdown",
                           "at": "60s", "duration": "2m"}])
    gpu = 5

    def active(reason: str) -> float:
        return value(backend, "clock_events_mask", "gpu_clock_event_active", gpu, reason=reason)

    def seconds() -> float:
        return value(backend, "clock_event_counters", "gpu_clock_event_seconds_total", gpu,
                     reason="hw_thermal_slowdown")

    clock.advance(30)
    assert active("hw_thermal_slowdown") == 0 and seconds() == 0
    clock.advance(31)  # t = 61
    assert active("hw_thermal_slowdown") == 1
    assert active("hw_slowdown") == 1  # NVML sets the parent reason too
    at_start = seconds()
    clock.advance(59)  # t = 120
    assert seconds() - at_start == pytest.approx(59, abs=1)
    thermal = value(backend, "violations", "gpu_violation_seconds_total", gpu, policy="thermal")
    assert thermal == pytest.approx(60, abs=1)
    temp = value(backend, "temperature", "gpu_temperature_celsius", gpu, sensor="gpu")
    assert temp > value(backend, "temperature_thresholds", "gpu_temperature_threshold_celsius",
                        gpu, threshold="slowdown")
    if gpu in gpus_with(backend, Role.SERVING):
        assert value(backend, "clocks", "gpu_clock_hertz", gpu, clock="sm") <= 0.5 * 1980e6
    clock.advance(120)  # t = 240: the window is over
    assert active("hw_thermal_slowdown") == 0
    done = seconds()
    assert done == pytest.approx(120, abs=1)
    clock.advance(600)
    assert seconds() == done


def test_busy_makes_an_idle_gpu_look_used() -> None:
    backend, _ = sim()
    idle = gpus_with(backend, Role.IDLE)[0]
    busy, clock = sim([{"gpu": idle, "kind": "busy", "duration": "5m"}])
    assert value(busy, "utilization", "gpu_utilization_ratio", idle) >= 0.9
    assert value(busy, "processes", "gpu_processes", idle) == 1
    assert value(busy, "memory_info", "gpu_memory_used_bytes", idle) > 10 * 2**30
    assert value(busy, "clock_events_mask", "gpu_clock_event_active", idle, reason="gpu_idle") == 0
    clock.advance(301)
    assert value(busy, "processes", "gpu_processes", idle) == 0


def test_reliability_and_link_faults_move_their_metrics() -> None:
    backend, clock = sim([
        {"gpu": 0, "kind": "ecc_uncorrectable", "at": 40, "count": 2},
        {"gpu": 0, "kind": "ecc_corrected", "at": 40, "count": 5, "location": "sram"},
        {"gpu": 0, "kind": "row_remap_pending", "at": 40, "duration": "5m"},
        {"gpu": 0, "kind": "row_remap_failure", "at": 40},
        {"gpu": 0, "kind": "sram_threshold", "at": 40},
        {"gpu": 0, "kind": "recovery_action", "at": 40, "action": 1, "duration": "5m"},
        {"gpu": 0, "kind": "pcie_downtrain", "at": 40, "generation": 3, "width": 8},
        {"gpu": 0, "kind": "pcie_replays", "at": 40, "count": 500},
        {"gpu": 0, "kind": "nvlink_down", "at": 40, "link": 3, "duration": "10m"},
        {"gpu": 0, "kind": "nvlink_errors", "at": 40, "link": 3, "type": "crc_flit",
         "count": 100},
    ])

    def snapshot() -> dict[str, float]:
        return {
            "unc": value(backend, "ecc", "gpu_ecc_errors_total", type="uncorrected",
                         scope="volatile", location="dram"),
            "unc_total": value(backend, "ecc", "gpu_ecc_errors_total", type="uncorrected",
                               scope="aggregate", location="total"),
            "corr_sram": value(backend, "ecc", "gpu_ecc_errors_total", type="corrected",
                               scope="volatile", location="sram"),
            "rows": value(backend, "row_remap", "gpu_remapped_rows_total", cause="uncorrectable"),
            "pending": value(backend, "row_remap", "gpu_row_remap_pending"),
            "failure": value(backend, "row_remap", "gpu_row_remap_failure"),
            "none": value(backend, "row_remap_histogram", "gpu_row_remap_banks",
                          availability="none"),
            "sram": value(backend, "sram_ecc", "gpu_sram_ecc_threshold_exceeded"),
            "action": value(backend, "recovery_action", "gpu_recovery_action"),
            "width": value(backend, "pcie_link", "gpu_pcie_link_width_lanes"),
            "link3": value(backend, "nvlink_state", "gpu_nvlink_up", link="3"),
            "crc": value(backend, "nvlink_errors", "gpu_nvlink_errors_total", link="3",
                         type="crc_flit"),
        }

    replays = value(backend, "pcie_replay", "gpu_pcie_replay_total")
    assert snapshot() == {"unc": 0, "unc_total": 0, "corr_sram": 0, "rows": 0, "pending": 0,
                          "failure": 0, "none": 0, "sram": 0, "action": 0, "width": 16,
                          "link3": 1, "crc": 0}
    clock.advance(41)
    assert snapshot() == {"unc": 2, "unc_total": 2, "corr_sram": 5, "rows": 1, "pending": 1,
                          "failure": 1, "none": 1, "sram": 1, "action": 1, "width": 8,
                          "link3": 0, "crc": 100}
    assert value(backend, "pcie_replay", "gpu_pcie_replay_total") == replays + 500
    if 0 in gpus_with(backend, Role.SERVING):
        assert value(backend, "pcie_link", "gpu_pcie_link_generation") == 3
    clock.advance(600)  # windows over; counts stay, sticky states stay
    after = snapshot()
    assert (after["pending"], after["action"], after["link3"]) == (0, 0, 1)
    assert (after["rows"], after["failure"], after["unc"], after["crc"]) == (1, 1, 2, 100)


def test_probe_values_follow_the_clock() -> None:
    backend, clock = sim([{"gpu": 2, "kind": "probe", "probe": "pcie_bandwidth", "at": 10,
                           "duration": "1h", "values": {"h2d_bytes_per_second": 20e9}}])
    assert backend.probe_values(2, "pcie_bandwidth") == {}
    clock.advance(11)
    assert backend.probe_values(2, "pcie_bandwidth") == {"h2d_bytes_per_second": 20e9}
    assert backend.probe_values(1, "pcie_bandwidth") == {}


# --- construction -----------------------------------------------------------------------------
def test_from_settings_loads_and_checks_the_scenario(tmp_path: Path) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text("faults:\n  - {at: 30s, gpu: 3, kind: xid, xid: 79}\n")
    settings = Settings(sim=SimSettings(gpus=4, model="a100-sxm", seed=3, scenario=path))
    backend = SimBackend.from_settings(settings)
    assert len(backend.devices()) == 4 and backend.profile.key == "a100-sxm"
    assert backend.scenario.faults[0].xid == 79
    small = Settings(sim=SimSettings(gpus=2, scenario=path))
    with pytest.raises(ScenarioError, match=r"faults\[0\].gpu: 3, but the simulated node has 2"):
        SimBackend.from_settings(small)


def test_unknown_model() -> None:
    with pytest.raises(ValueError, match="unknown simulated GPU model 'v100'"):
        SimBackend(model="v100")
