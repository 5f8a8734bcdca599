"""The NVML backend replayed from real recordings (FakeNvml): values, absences, faults, recovery.

Every expected value is read from the fixture (what pynvml answered on the GPU), converted the
way the metric contract says (mW -> W, MHz -> Hz, ns -> s, % -> ratio). The fake replays the
n-th recorded answer to the n-th call of a key, so `_answer(..., nth=k)` is what call k + 1 gets.
Timing is tested by order of events: a blocked call is an Event the test sets.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pynvml
import pytest
from conftest import require_tool, wait_for
from nvml_codec import make_key
from nvml_fake import FIXTURE_DIR, FakeNvml

from exporter.backends import OpenedBackends, open_backends
from exporter.backends.base import BackendUnavailable, DeviceLost, Unsupported
from exporter.backends.nvml import NvmlBackend, identity
from exporter.backends.nvml import gpm as nvml_gpm
from exporter.backends.nvml.errors import LibraryFailure, translate
from exporter.catalog import Tier
from exporter.config import load_settings
from exporter.daemon import Daemon
from exporter.exposition import Format
from exporter.recovery import Recovery
from exporter.sampler import SAMPLED_TIERS, Sampler

H100 = FIXTURE_DIR / "h100_580.json"
H200X2 = FIXTURE_DIR / "h200x2_580.json"
# nvmlValue_t's member for each nvmlValueType_t (DOUBLE = 0 ... UNSIGNED_SHORT = 6).
UNION = dict(enumerate(("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")))
CLOCKS = {"graphics": pynvml.NVML_CLOCK_GRAPHICS, "sm": pynvml.NVML_CLOCK_SM,
          "memory": pynvml.NVML_CLOCK_MEM, "video": pynvml.NVML_CLOCK_VIDEO}
# nvml.h's clock-event reason bits, by the contract's `reason` label.
REASON_BITS = {"gpu_idle": 0x1, "applications_clocks_setting": 0x2, "sw_power_cap": 0x4,
               "hw_slowdown": 0x8, "sync_boost": 0x10, "sw_thermal_slowdown": 0x20,
               "hw_thermal_slowdown": 0x40, "hw_power_brake_slowdown": 0x80,
               "display_clock_setting": 0x100}
ECC_TYPES = {t: getattr(pynvml, f"NVML_MEMORY_ERROR_TYPE_{t.upper()}")
             for t in ("corrected", "uncorrected")}
ECC_SCOPES = {"volatile": pynvml.NVML_VOLATILE_ECC, "aggregate": pynvml.NVML_AGGREGATE_ECC}
ECC_LOCATIONS = {loc: getattr(pynvml, f"NVML_MEMORY_LOCATION_{loc.upper()}")
                 for loc in ("dram", "sram")}
NVLINK_ERRORS = {k: getattr(pynvml, f"NVML_NVLINK_ERROR_DL_{k.upper()}")
                 for k in ("replay", "recovery", "crc_flit", "crc_data")}
MEMORY_V2 = pynvml.nvmlMemory_v2
# Nanosecond counters read as field values: perf-policy ids 74-81, clock events (R580 ids).
POLICIES = {"power": 74, "thermal": 75, "sync_boost": 76, "board_limit": 77,
            "low_utilization": 78, "reliability": 79, "total_app_clocks": 80,
            "total_base_clocks": 81}
EVENT_FIELDS_R580 = {"sw_power_cap": 74, "sync_boost": 76, "sw_thermal_slowdown": 269,
                     "hw_thermal_slowdown": 270, "hw_power_brake_slowdown": 271}


def _dev(token: str) -> dict[str, str]:
    return {"__handle__": token}


def _key(fn: str, *args: Any) -> str:
    return make_key(fn, list(args))


def _outcome(data: dict, fn: str, *args: Any, nth: int = 0) -> dict[str, Any]:
    """What the fake answers to call nth + 1 of fn(*args) (the last answer repeats)."""
    outcomes = data["calls"][_key(fn, *args)]
    return outcomes[min(nth, len(outcomes) - 1)]


def _answer(data: dict, fn: str, *args: Any, nth: int = 0) -> Any:
    outcome = _outcome(data, fn, *args, nth=nth)
    assert "error" not in outcome, f"{fn}{args} was recorded failing: {outcome}"
    return outcome.get("return")


def _fields(data: dict, dev: str, ids: list[int]) -> dict[int, float]:
    """A recorded nvmlDeviceGetFieldValues batch, by field id (entries that succeeded)."""
    return {e["fieldId"]: e["value"][UNION[e["valueType"]]]
            for e in _answer(data, "nvmlDeviceGetFieldValues", _dev(dev), ids)
            if e["nvmlReturn"] == 0}


def _series(gpu) -> dict[tuple[str, frozenset], float]:
    return {(s.family, frozenset(s.labels)): s.value for s in gpu.samples}


def _value(gpu, family: str, **labels: object) -> float:
    wanted = frozenset((k, str(v)) for k, v in labels.items())
    return _series(gpu)[(family, wanted)]


def _families(gpu) -> set[str]:
    return {s.family for s in gpu.samples}


def _cycle(sampler: Sampler, tiers: tuple[Tier, ...] = SAMPLED_TIERS):
    """One cycle, the previous GPM sample aged past NVML's minimum interval (no sleeping)."""
    for w in sampler.workers:
        state = w.device.handle.memo.get("gpm")
        if state is not None:
            state.taken_at -= nvml_gpm.MIN_INTERVAL
    return sampler.run_cycle(tiers)


@contextlib.contextmanager
def running(fake: FakeNvml) -> Iterator[tuple[Sampler, NvmlBackend]]:
    backend = NvmlBackend(nvml=fake)
    backend.start()
    sampler = Sampler([(backend, backend.devices())], fast_interval=60, slow_interval=60,
                      call_deadline=5.0)
    sampler.start(schedule=False)
    try:
        yield sampler, backend
    finally:
        fake.release_all()
        wait_for(lambda: sampler.calls_in_flight() == 0, what="calls to return")
        sampler.stop()
        backend.stop()
    assert fake.live_resources() == [], "GPM sample buffers leaked"
    fake.assert_clean()  # no unrecorded call, no shutdown under a call in flight


@pytest.fixture(autouse=True)
def no_sysfs_numa(monkeypatch) -> list[str]:
    """The NUMA fallback reads this host's sysfs, not the recorded GPU's: answer 'none'."""
    asked: list[str] = []
    monkeypatch.setattr(identity, "_sysfs_numa_node", lambda bus_id: asked.append(bus_id))
    return asked


# --- 1. replay of the H100 recording ------------------------------------------------------
@pytest.fixture
def h100() -> Iterator[tuple[dict, FakeNvml, Sampler]]:
    data = json.loads(H100.read_text())
    fake = FakeNvml(data)
    with running(fake) as (sampler, _):
        yield data, fake, sampler


def _expected_h100(data: dict) -> dict[tuple[str, frozenset], float]:
    """Every series the first cycle must show, computed from the recorded answers."""
    out: dict[tuple[str, frozenset], float] = {}

    def want(family: str, value: float, **labels: object) -> None:
        out[(family, frozenset((k, str(v)) for k, v in labels.items()))] = float(value)

    def ask(fn: str, *args: Any) -> Any:
        return _answer(data, f"nvmlDeviceGet{fn}", _dev("dev0"), *args)

    util = ask("UtilizationRates")
    want("gpu_utilization_ratio", util["gpu"] / 100)
    want("gpu_memory_activity_ratio", util["memory"] / 100)
    mem = ask("MemoryInfo", MEMORY_V2)
    for part in ("total", "used", "free", "reserved"):
        want(f"gpu_memory_{part}_bytes", mem[part])
    want("gpu_temperature_celsius", ask("Temperature", pynvml.NVML_TEMPERATURE_GPU), sensor="gpu")
    hbm = _fields(data, "dev0", [pynvml.NVML_FI_DEV_MEMORY_TEMP])[pynvml.NVML_FI_DEV_MEMORY_TEMP]
    want("gpu_temperature_celsius", hbm, sensor="memory")
    want("gpu_power_watts", ask("PowerUsage") / 1000)
    want("gpu_power_limit_watts", ask("EnforcedPowerLimit") / 1000, limit="enforced")
    want("gpu_power_limit_watts", ask("PowerManagementDefaultLimit") / 1000, limit="default")
    want("gpu_energy_joules_total", ask("TotalEnergyConsumption") / 1000)
    for clock, const in CLOCKS.items():
        want("gpu_clock_hertz", ask("ClockInfo", const) * 1e6, clock=clock)
        want("gpu_clock_max_hertz", ask("MaxClockInfo", const) * 1e6, clock=clock)
    supported, active = ask("SupportedClocksEventReasons"), ask("CurrentClocksEventReasons")
    for reason, bit in REASON_BITS.items():
        if supported & bit:
            want("gpu_clock_event_active", bool(active & bit), reason=reason)
    ns = _fields(data, "dev0", sorted(set(EVENT_FIELDS_R580.values()) | set(POLICIES.values())))
    for reason, fid in EVENT_FIELDS_R580.items():
        want("gpu_clock_event_seconds_total", ns[fid] / 1e9, reason=reason)
    for policy, fid in POLICIES.items():
        want("gpu_violation_seconds_total", ns[fid] / 1e9, policy=policy)
    for family, fn in [("gpu_pcie_link_generation", "CurrPcieLinkGeneration"),
                       ("gpu_pcie_link_width_lanes", "CurrPcieLinkWidth"),
                       ("gpu_pcie_link_max_generation", "GpuMaxPcieLinkGeneration"),
                       ("gpu_pcie_link_max_width_lanes", "MaxPcieLinkWidth"),
                       ("gpu_pcie_replay_total", "PcieReplayCounter"),
                       ("gpu_persistence_mode_enabled", "PersistenceMode"),
                       ("gpu_compute_mode", "ComputeMode")]:
        want(family, ask(fn))
    want("gpu_ecc_mode_enabled", ask("EccMode")[0])
    want("gpu_mig_mode_enabled", ask("MigMode")[0])
    want("gpu_applications_clocks_locked", any(
        ask("ApplicationsClock", c) != ask("DefaultApplicationsClock", c)
        for c in (pynvml.NVML_CLOCK_GRAPHICS, pynvml.NVML_CLOCK_MEM)))
    for t, tc in ECC_TYPES.items():
        for s, sc in ECC_SCOPES.items():
            want("gpu_ecc_errors_total", ask("TotalEccErrors", tc, sc), type=t, scope=s,
                 location="total")
            for loc, lc in ECC_LOCATIONS.items():
                want("gpu_ecc_errors_total", ask("MemoryErrorCounter", tc, sc, lc), type=t,
                     scope=s, location=loc)
    sram = next(v for k, v in data["calls"].items()
                if k.startswith("nvmlDeviceGetSramEccErrorStatus|"))[0]["out"]["1"]
    want("gpu_sram_ecc_threshold_exceeded", sram["bThresholdExceeded"])
    corr, unc, pending, failure = ask("RemappedRows")
    want("gpu_remapped_rows_total", corr, cause="correctable")
    want("gpu_remapped_rows_total", unc, cause="uncorrectable")
    want("gpu_row_remap_pending", pending)
    want("gpu_row_remap_failure", failure)
    banks = ask("RowRemapperHistogram")
    for availability in ("max", "high", "partial", "low", "none"):
        want("gpu_row_remap_banks", banks[availability], availability=availability)
    action = pynvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION
    want("gpu_recovery_action", _fields(data, "dev0", [action])[action])
    return out


def test_h100_first_cycle_reports_what_the_gpu_answered(h100) -> None:
    data, _, sampler = h100
    view = _cycle(sampler)
    (gpu,) = view.gpus
    assert gpu.up and view.errors == {}
    assert gpu.uuid == _answer(data, "nvmlDeviceGetUUID", _dev("dev0"))
    info = dict(next(s for s in gpu.samples if s.family == "gpu_info").labels)
    cuda = data["meta"]["cuda_driver_version"]
    assert info == {
        "vendor": "nvidia", "model": _answer(data, "nvmlDeviceGetName", _dev("dev0")),
        "pci_bus_id": _answer(data, "nvmlDeviceGetPciInfo", _dev("dev0"))["busId"],
        "serial": _answer(data, "nvmlDeviceGetSerial", _dev("dev0")),
        "driver_version": data["meta"]["driver"],
        "vbios_version": _answer(data, "nvmlDeviceGetVbiosVersion", _dev("dev0")),
        "cuda_version": f"{cuda // 1000}.{cuda % 1000 // 10}", "rocm_version": "",
        "compute_partition": "", "memory_partition": ""}
    assert info["cuda_version"] == "13.0"  # nvidia-smi's form of 13000
    expected = _expected_h100(data)
    series = _series(gpu)
    assert {k: series.get(k, math.nan) for k in expected} == pytest.approx(expected)
    assert series[("gpu_clock_event_active", frozenset({("reason", "gpu_idle")}))] == 1.0
    assert any(v > 0 for (f, _), v in expected.items() if f == "gpu_violation_seconds_total")


def test_h100_unsupported_families_are_absent_and_not_asked_again(h100, no_sysfs_numa) -> None:
    data, fake, sampler = h100
    d0 = _dev("dev0")
    not_supported = [("NvLinkState", 0), ("NumaNodeId",), ("RetiredPages", 0),
                     ("RetiredPagesPendingStatus",)]  # what the recording says, and no fans:
    assert {_outcome(data, f"nvmlDeviceGet{fn}", d0, *rest).get("error")
            for fn, *rest in not_supported} == {pynvml.NVML_ERROR_NOT_SUPPORTED}
    assert _answer(data, "nvmlDeviceGetNumFans", d0) == 0
    absent = {"gpu_nvlink_up", "gpu_nvlink_errors_total", "gpu_fan_speed_ratio",
              "gpu_retired_pages_total", "gpu_retired_pages_pending", "gpu_numa_node"}
    asked_once = ["nvmlDeviceGetNvLinkState", "nvmlDeviceGetNumFans", "nvmlDeviceGetNumaNodeId",
                  "nvmlDeviceGetRetiredPages", "nvmlDeviceGetRetiredPagesPendingStatus"]
    views = [_cycle(sampler)]
    first = {fn: fake.calls.count(fn) for fn in asked_once}
    assert first["nvmlDeviceGetNvLinkState"] == pynvml.NVML_NVLINK_MAX_LINKS  # probed once
    assert no_sysfs_numa == [_answer(data, "nvmlDeviceGetPciInfo", d0)["busId"]]
    views += [_cycle(sampler), _cycle(sampler)]
    assert {fn: fake.calls.count(fn) for fn in asked_once} == first, "absent asked again"
    for nth, view in enumerate(views):
        gpu = view.gpus[0]
        assert gpu.up and view.errors == {}
        assert not absent & _families(gpu)
        assert all(math.isfinite(s.value) for s in gpu.samples)  # absent, never NaN
        assert _value(gpu, "gpu_energy_joules_total") == _answer(
            data, "nvmlDeviceGetTotalEnergyConsumption", d0, nth=nth) / 1000
        assert _value(gpu, "gpu_power_watts") == _answer(
            data, "nvmlDeviceGetPowerUsage", d0, nth=nth) / 1000

    # GPM: ratios between the samples of cycles 1 and 2 (the first answer to the request).
    assert "gpu_sm_active_ratio" not in _families(views[0].gpus[0])  # one sample: nothing yet
    ids = [getattr(pynvml, name) for name, _, _ in nvml_gpm.METRICS]
    request = _outcome(data, "nvmlGpmMetricsGet", {
        "__struct__": "c_nvmlGpmMetricsGet_t", "metricIds": ids, "samples": ["dev0", "dev0"],
        "version": pynvml.NVML_GPM_METRICS_GET_VERSION})
    metric = {m["metricId"]: m["value"] for m in request["out"]["0"]["metrics"]}
    gpu = views[1].gpus[0]
    for family, labels, mid in [
            ("gpu_sm_active_ratio", {}, pynvml.NVML_GPM_METRIC_SM_UTIL),
            ("gpu_sm_occupancy_ratio", {}, pynvml.NVML_GPM_METRIC_SM_OCCUPANCY),
            ("gpu_tensor_active_ratio", {}, pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL),
            ("gpu_dram_active_ratio", {}, pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL),
            ("gpu_pipe_active_ratio", {"pipe": "fp32"}, pynvml.NVML_GPM_METRIC_FP32_UTIL)]:
        ratio = _value(gpu, family, **labels)
        assert 0.0 <= ratio <= 1.0 and ratio == pytest.approx(metric[mid] / 100), family
    assert _value(gpu, "gpu_pcie_throughput_bytes_per_second", direction="tx") == \
        pytest.approx(metric[pynvml.NVML_GPM_METRIC_PCIE_TX_PER_SEC] * 1048576)


# --- 2. the exposition of the replayed node --------------------------------------------------
@pytest.mark.integration
def test_promtool_finds_nothing_in_the_replayed_h100_output() -> None:
    promtool = require_tool("promtool")
    fake = FakeNvml.from_fixture(H100)
    backend = NvmlBackend(nvml=fake)
    backend.start()
    # A test never follows the host's kernel log nor writes state under /var/lib.
    settings = load_settings(overrides={"events": {"kmsg": False, "state_dir": None}})
    daemon = Daemon(settings, OpenedBackends(sources=[(backend, list(backend.devices()))]))
    daemon.sampler.start(schedule=False)
    try:
        _cycle(daemon.sampler)
        _cycle(daemon.sampler)  # second cycle: GPM ratios exist
        text = daemon.publisher.current.body(Format.TEXT, False)
    finally:
        daemon.stop()
    fake.assert_clean()
    for family in (b"gpu_power_watts{", b"gpu_clock_event_active{", b"gpu_sm_active_ratio{"):
        assert family in text
    assert b"NaN" not in text
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                       timeout=60)
    assert (r.returncode, r.stdout + r.stderr) == (0, b"")


# --- 3. NVLink on 2x H200 -------------------------------------------------------------------
@pytest.fixture
def h200x2() -> Iterator[tuple[dict, FakeNvml, Sampler, NvmlBackend]]:
    data = json.loads(H200X2.read_text())  # recorded by the backend's own drive: strict replay
    fake = FakeNvml(data)
    with running(fake) as (sampler, backend):
        yield data, fake, sampler, backend


def test_h200x2_every_link_up_and_its_error_counters(h200x2) -> None:
    data, fake, sampler, _ = h200x2
    view = _cycle(sampler)
    assert len(view.gpus) == len(data["meta"]["gpus"]) == 2 and view.errors == {}
    for gpu, dev in zip(view.gpus, ("dev0", "dev1"), strict=True):
        assert gpu.up and gpu.uuid == _answer(data, "nvmlDeviceGetUUID", _dev(dev))
        state = {link: data["calls"].get(_key("nvmlDeviceGetNvLinkState", _dev(dev), link))
                 for link in range(pynvml.NVML_NVLINK_MAX_LINKS)}
        recorded_up = [link for link, outcomes in state.items()
                       if outcomes and outcomes[0].get("return") == pynvml.NVML_FEATURE_ENABLED]
        assert len(recorded_up) == 18  # NV18
        links = {dict(s.labels)["link"]: s.value for s in gpu.samples
                 if s.family == "gpu_nvlink_up"}
        assert links == {str(link): 1.0 for link in recorded_up}
        for link in recorded_up:
            for kind, const in NVLINK_ERRORS.items():
                assert _value(gpu, "gpu_nvlink_errors_total", link=link, type=kind) == \
                    _answer(data, "nvmlDeviceGetNvLinkErrorCounter", _dev(dev), link, const)
        assert sum(s.value for s in gpu.samples if s.family == "gpu_nvlink_errors_total") > 0
    probes = fake.calls.count("nvmlDeviceGetNvLinkState")
    _cycle(sampler, (Tier.SLOW,))
    assert fake.calls.count("nvmlDeviceGetNvLinkState") - probes == 2 * 18  # known links only


# --- 4. faults ----------------------------------------------------------------------------------
def test_lost_gpu_is_down_without_stale_values_and_comes_back_after_reinit(h200x2) -> None:
    data, fake, sampler, _ = h200x2
    uuids = [g.uuid for g in _cycle(sampler).gpus]
    fake.lose("dev1")
    power_calls = fake.calls.count("nvmlDeviceGetPowerUsage")
    view = _cycle(sampler, (Tier.FAST,))
    (ok, lost) = view.gpus
    assert not lost.up and "GpuIsLost" in lost.down_reason
    assert _families(lost) == {"gpu_info"}  # it still says what it is, nothing stale
    assert ok.up and fake.calls.count("nvmlDeviceGetPowerUsage") == power_calls + 1
    assert _value(ok, "gpu_power_watts") == \
        _answer(data, "nvmlDeviceGetPowerUsage", _dev("dev0"), nth=1) / 1000
    assert view.errors == {("fast", "1", "lost"): 1}
    assert sampler.sources[0].needs_reinit

    fake.restore("dev1")
    counts = (fake.init_count, fake.shutdown_count)
    Recovery(sampler, threading.Lock(), initial=0).after_cycle()
    assert (fake.init_count, fake.shutdown_count) == (counts[0] + 1, counts[1] + 1)
    assert not sampler.sources[0].needs_reinit
    back = _cycle(sampler)
    assert [(g.uuid, g.up) for g in back.gpus] == [(u, True) for u in uuids]
    assert "gpu_nvlink_up" in _families(back.gpus[1])


def test_gpu_still_lost_when_reinit_runs_comes_back_after_it_is_restored() -> None:
    # Recovery re-initializes right after the cycle that lost the GPU, usually while it is still
    # lost: devices() skips it and its worker is marked missing. Recovery must keep asking for
    # re-initializations (with backoff) while a GPU is missing, or a reset GPU never returns.
    fake = FakeNvml.from_fixture(H100)
    with running(fake) as (sampler, _):
        uuid = _cycle(sampler).gpus[0].uuid
        recovery = Recovery(sampler, threading.Lock(), initial=0)
        fake.lose("dev0")
        _cycle(sampler, (Tier.FAST,))
        recovery.after_cycle()  # the GPU still answers GpuIsLost: re-enumeration skips it
        fake.restore("dev0")  # reset done
        for _ in range(3):
            view = _cycle(sampler)
            recovery.after_cycle()
        assert [(g.uuid, g.up) for g in _cycle(sampler).gpus] == [(uuid, True)], view.gpus


def test_a_call_blocked_past_its_deadline_downs_only_its_gpu_and_blocks_no_reinit(
        h200x2) -> None:
    _, fake, sampler, _ = h200x2
    _cycle(sampler)
    sampler.call_deadline = 0.2
    gate = fake.block("nvmlDeviceGetPowerUsage", "dev0")
    view = _cycle(sampler, (Tier.FAST,))
    # Order of events: the cycle has completed and the call is still inside the library.
    assert fake.entered("nvmlDeviceGetPowerUsage").is_set() and not gate.is_set()
    assert fake.calls_in_flight() == 1 and sampler.calls_in_flight() == 1
    (stuck, ok) = view.gpus
    assert not stuck.up and "deadline" in stuck.down_reason
    assert _families(stuck) == {"gpu_info"}
    assert ok.up and "gpu_power_watts" in _families(ok)

    fake.lose("dev1")  # now a re-init is wanted, but a call is in flight
    view = _cycle(sampler, (Tier.FAST,))
    assert [g.up for g in view.gpus] == [False, False] and sampler.sources[0].needs_reinit
    recovery = Recovery(sampler, threading.Lock(), initial=0)
    shutdowns = fake.shutdown_count
    recovery.after_cycle()
    assert fake.shutdown_count == shutdowns, "NVML shut down under a call in flight"

    gate.set()
    wait_for(lambda: sampler.calls_in_flight() == 0, what="the blocked call to return")
    fake.restore("dev1")
    recovery.after_cycle()
    assert fake.shutdown_count == shutdowns + 1 and not sampler.sources[0].needs_reinit
    assert [g.up for g in _cycle(sampler).gpus] == [True, True]


def test_missing_library_then_discovery_picks_it_up(monkeypatch) -> None:
    data = json.loads(H100.read_text())
    fake = FakeNvml(data)
    fake.missing_library()
    with pytest.raises(BackendUnavailable, match="libnvidia-ml"):
        NvmlBackend(nvml=fake).start()
    monkeypatch.setattr(NvmlBackend, "from_settings", classmethod(lambda cls, _: cls(nvml=fake)))
    settings = load_settings(overrides={"collection": {"backend": "auto"},
                                        "events": {"kmsg": False, "state_dir": None}})
    daemon = Daemon(settings, open_backends(settings))
    assert "libnvidia-ml" in daemon.opened.failed["nvml"] and not daemon.sampler.sources
    daemon._next_discovery = 0
    daemon._discover()  # still missing
    assert "nvml" in daemon.opened.failed

    fake.library_present()
    daemon._next_discovery = 0
    daemon._discover()
    assert "nvml" not in daemon.opened.failed
    assert ("nvml", True) in [(s.name, s.up) for s in daemon.backend_statuses()]
    daemon.sampler.start(schedule=False)
    try:
        view = daemon.sampler.run_cycle()
    finally:
        daemon.stop()
    assert [(g.uuid, g.up) for g in view.gpus] == [
        (_answer(data, "nvmlDeviceGetUUID", _dev("dev0")), True)]
    fake.assert_clean()


def test_function_not_found_falls_back_to_the_older_call_once() -> None:
    data = json.loads(H100.read_text())
    # FakeNvml has no call to add an answer: this in-memory copy gets one for the pre-R535 name,
    # the recorded answer of its successor (the same reasons bitmask), and says it is synthesized.
    current = _key("nvmlDeviceGetCurrentClocksEventReasons", _dev("dev0"))
    older = _key("nvmlDeviceGetCurrentClocksThrottleReasons", _dev("dev0"))
    data["calls"][older] = data["calls"][current]
    data["meta"] |= {"synthesized": True, "synthesized_from": H100.name,
                     "edits": ["ThrottleReasons answers = recorded EventReasons answers"]}
    fake = FakeNvml(data)
    fake.function_not_found("nvmlDeviceGetCurrentClocksEventReasons")
    supported = _answer(data, "nvmlDeviceGetSupportedClocksEventReasons", _dev("dev0"))
    active = _answer(data, "nvmlDeviceGetCurrentClocksEventReasons", _dev("dev0"))
    expected = {r: float(bool(active & bit)) for r, bit in REASON_BITS.items() if supported & bit}
    with running(fake) as (sampler, _):
        for _ in range(2):
            gpu = _cycle(sampler).gpus[0]
            assert gpu.up and expected["gpu_idle"] == 1.0
            assert {dict(s.labels)["reason"]: s.value for s in gpu.samples
                    if s.family == "gpu_clock_event_active"} == expected
    assert fake.calls.count("nvmlDeviceGetCurrentClocksEventReasons") == 1  # learned once
    assert fake.calls.count("nvmlDeviceGetCurrentClocksThrottleReasons") == 2


def test_memory_v2_version_mismatch_falls_back_to_v1_without_reserved() -> None:
    data = json.loads(H100.read_text())
    fake = FakeNvml(data)
    # An older driver rejects the v2 struct (the first memory call is the v2 one).
    fake.fail("nvmlDeviceGetMemoryInfo", pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH, times=1)
    v1 = _answer(data, "nvmlDeviceGetMemoryInfo", _dev("dev0"), None)
    with running(fake) as (sampler, _):
        for _ in range(2):
            gpu = _cycle(sampler).gpus[0]
            assert gpu.up and "gpu_memory_reserved_bytes" not in _families(gpu)
            for part in ("total", "used", "free"):
                assert _value(gpu, f"gpu_memory_{part}_bytes") == v1[part]
    v2_key = _key("nvmlDeviceGetMemoryInfo", _dev("dev0"), MEMORY_V2)
    assert fake.calls.count("nvmlDeviceGetMemoryInfo") == 3  # v2 (refused), v1, v1
    assert fake._f_next.get(v2_key, 0) == 0  # v2 is not asked again


def test_uninitialized_on_every_call_is_a_library_failure_then_reinit(h200x2) -> None:
    _, fake, sampler, backend = h200x2
    _cycle(sampler)
    for fn in set(fake.calls) - {"nvmlInit", "nvmlShutdown"}:
        fake.fail(fn, pynvml.NVML_ERROR_UNINITIALIZED)
    view = _cycle(sampler, (Tier.FAST,))
    assert all(not g.up and "Uninitialized" in g.down_reason for g in view.gpus)
    assert all(_families(g) == {"gpu_info"} for g in view.gpus)
    assert sampler.sources[0].needs_reinit
    device = sampler.workers[0].device
    power = next(f for f in backend.fields(device) if f.name == "power")
    with pytest.raises(LibraryFailure):
        power.read(device)
    fake.clear_faults()
    Recovery(sampler, threading.Lock(), initial=0).after_cycle()
    assert [g.up for g in _cycle(sampler).gpus] == [True, True]


# --- 5. what each NVML error means -----------------------------------------------------------
MEANINGS = {Unsupported: ("NOT_SUPPORTED", "FUNCTION_NOT_FOUND", "ARGUMENT_VERSION_MISMATCH",
                          "INVALID_ARGUMENT"),
            DeviceLost: ("GPU_IS_LOST", "UNKNOWN", "RESET_REQUIRED"),
            LibraryFailure: ("UNINITIALIZED", "DRIVER_NOT_LOADED", "LIB_RM_VERSION_MISMATCH"),
            None: ("TIMEOUT", "NO_DATA")}


@pytest.mark.parametrize(("name", "meaning"),
                         [(n, m) for m, names in MEANINGS.items() for n in names])
def test_translate_classifies_nvml_codes(name: str, meaning: type | None) -> None:
    error = pynvml.NVMLError(getattr(pynvml, f"NVML_ERROR_{name}"))
    result = translate(error)
    if meaning is None:
        assert result is error  # transient: counted as a read error, the GPU stays up
    else:
        assert type(result) is meaning
        assert type(error).__name__ in str(result)
