"""The NVML record/replay machinery itself, without a GPU.

A hand-written stand-in for the real library (nvml_standin: pynvml's own struct classes and
exceptions) is recorded through RecordingNvml, saved, and replayed through FakeNvml: what a
backend reads must be the same both times. Then each fault the fake can inject, the misuse it
must catch, and the fixtures recorded on real GPUs.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import math
import threading
from pathlib import Path
from typing import Any

import pynvml as N
import pytest
from nvml_fake import FIXTURE_DIR, FakeNvml
from nvml_recording import RecordingNvml, is_mutating
from nvml_standin import StandInNvml

GPM_IDS = [N.NVML_GPM_METRIC_SM_UTIL, N.NVML_GPM_METRIC_DMMA_TENSOR_UTIL,
           N.NVML_GPM_METRIC_PCIE_TX_PER_SEC]


def _error(fn: Any, *args: Any) -> tuple[str, int]:
    with pytest.raises(N.NVMLError) as info:
        fn(*args)
    return type(info.value).__name__, info.value.value


def _gpm(nvml: Any, h: Any) -> list[Any]:
    assert nvml.nvmlGpmQueryDeviceSupport(h).isSupportedDevice == 1
    first, second = nvml.nvmlGpmSampleAlloc(), nvml.nvmlGpmSampleAlloc()
    assert nvml.nvmlGpmSampleGet(h, first) is first
    nvml.nvmlGpmSampleGet(h, second)
    request = nvml.c_nvmlGpmMetricsGet_t()
    request.version, request.numMetrics = nvml.NVML_GPM_METRICS_GET_VERSION, len(GPM_IDS)
    request.sample1, request.sample2 = first, second
    for i, metric in enumerate(GPM_IDS):
        request.metrics[i].metricId = metric
    assert nvml.nvmlGpmMetricsGet(request) is request
    nvml.nvmlGpmSampleFree(first)
    nvml.nvmlGpmSampleFree(second)
    return [(m.metricId, m.nvmlReturn, "nan" if math.isnan(m.value) else m.value,
             m.metricInfo.unit, m.metricInfo.shortName) for m in request.metrics[:len(GPM_IDS)]]


def session(nvml: Any) -> dict[Any, Any]:
    """What a backend would read, reduced to plain values that can be compared."""
    seen: dict[Any, Any] = {}
    nvml.nvmlInit()
    seen["driver"] = nvml.nvmlSystemGetDriverVersion()
    for i in range(nvml.nvmlDeviceGetCount()):
        h = nvml.nvmlDeviceGetHandleByIndex(i)
        m = nvml.nvmlDeviceGetMemoryInfo(h, version=nvml.nvmlMemory_v2)
        fields = nvml.nvmlDeviceGetFieldValues(
            h, [nvml.NVML_FI_DEV_MEMORY_TEMP, nvml.NVML_FI_DEV_PERF_POLICY_POWER, 297])
        mig = nvml.nvmlDeviceIsMigDeviceHandle(h)
        hist = nvml.nvmlDeviceGetRowRemapperHistogram(h)
        pci = nvml.nvmlDeviceGetPciInfo(h)
        sram = nvml.c_nvmlEccSramErrorStatus_v1_t()
        nvml.nvmlDeviceGetSramEccErrorStatus(h, ctypes.byref(sram))
        rows = nvml.c_nvmlRemappedRowsInfo_v2_t()
        nvml.nvmlDeviceGetRemappedRows_v2(h, ctypes.byref(rows))
        seen[i] = {
            "name": nvml.nvmlDeviceGetName(h),
            "uuid": nvml.nvmlDeviceGetUUID(h),
            "memory": (type(m), m.version, m.total, m.reserved, m.free, m.used),
            "legacy": nvml.nvmlDeviceGetMemoryInfo(h).used,
            "v2_trap": _error(nvml.nvmlDeviceGetMemoryInfo, h, 2),
            "fields": [(type(v), v.fieldId, v.nvmlReturn, v.valueType, v.value.uiVal,
                        v.value.ullVal, v.timestamp) for v in fields],
            "energy": [nvml.nvmlDeviceGetTotalEnergyConsumption(h) for _ in range(2)],
            "fan": _error(nvml.nvmlDeviceGetFanSpeed, h),
            "mig": (type(mig), mig.value),
            "procs": [(p.pid, p.usedGpuMemory)
                      for p in nvml.nvmlDeviceGetComputeRunningProcesses(h)],
            "hist": (type(hist), hist.max, hist.none),
            "pci": (type(pci), pci.busId, pci.busIdLegacy, pci.device),
            "sram": (sram.version, sram.aggregateCor, sram.bThresholdExceeded),
            "rows": (rows.corrActiveRemaps, rows.bPending, rows.bfailureOccurred),
            "temp": nvml.nvmlDeviceGetTemperatureV(h, nvml.NVML_TEMPERATURE_GPU),
            "temp_max": _error(nvml.nvmlDeviceGetTemperatureV, h, nvml.NVML_TEMPERATURE_GPU_MAX),
            "gpm": _gpm(nvml, h),
        }
    nvml.nvmlShutdown()
    return seen


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[Any, Any]]:
    recorder = RecordingNvml(StandInNvml())
    expected = session(recorder)
    return recorder.save(tmp_path_factory.mktemp("nvml") / "standin.json"), expected


@pytest.fixture
def fake(recorded: tuple[Path, dict[Any, Any]]) -> FakeNvml:
    nvml = FakeNvml.from_fixture(recorded[0])
    nvml.nvmlInit()
    return nvml


def test_replay_reads_what_was_recorded(recorded: tuple[Path, dict[Any, Any]]) -> None:
    path, expected = recorded
    nvml = FakeNvml.from_fixture(path)
    assert session(nvml) == expected
    assert expected[0]["memory"][0] is N.c_nvmlMemory_v2_t  # real pynvml types, both times
    assert expected[1]["mig"] == (ctypes.c_uint, 0)
    assert expected[0]["fields"][1][5] == 2**40 + 7
    assert expected[0]["gpm"][2][2:4] == ("nan", b"MiB/s")  # NaN survives the JSON file
    assert expected[0]["gpm"][1][3] is None  # a success with no metricInfo stays visible
    nvml.assert_clean()
    assert nvml.live_resources() == []


def test_fixture_file_keys_and_outcomes(recorded: tuple[Path, dict[Any, Any]]) -> None:
    data = json.loads(recorded[0].read_text())
    calls = data["calls"]
    mem = f'nvmlDeviceGetMemoryInfo|[{{"__handle__":"dev1"}},{N.nvmlMemory_v2}]'
    assert calls[mem][0]["return"]["reserved"] == 503_316_480
    energy = calls['nvmlDeviceGetTotalEnergyConsumption|[{"__handle__":"dev0"}]']
    assert [o["return"] for o in energy] == [1_000_700, 1_001_400]  # every outcome, in order
    assert data["counts"]['nvmlDeviceGetTotalEnergyConsumption|[{"__handle__":"dev0"}]'] == 2
    fan = calls['nvmlDeviceGetFanSpeed|[{"__handle__":"dev0"}]'][0]
    assert fan == {"error": 3, "name": "NVMLError_NotSupported"}
    gpm = [k for k in calls if k.startswith("nvmlGpmMetricsGet|")]
    assert len(gpm) == 2 and '"samples":["dev0","dev0"]' in gpm[0]
    sample_get = calls['nvmlGpmSampleGet|[{"__handle__":"dev0"},{"__handle__":"gpm"}]']
    assert sample_get[0]["return"] == {"__arg__": 1}
    sram = next(k for k in calls if k.startswith("nvmlDeviceGetSramEccErrorStatus|"))
    assert calls[sram][0]["out"]["1"]["bThresholdExceeded"] == 1
    assert data["meta"]["synthesized"] is False and data["meta"]["pynvml_version"]


def test_recorder_looks_like_pynvml() -> None:
    stand_in = StandInNvml()
    rec = RecordingNvml(stand_in)
    assert rec.nvmlMemory_v2 == N.nvmlMemory_v2
    assert rec.c_nvmlGpmMetricsGet_t is N.c_nvmlGpmMetricsGet_t
    assert rec.NVMLError_NotSupported is N.NVMLError_NotSupported
    assert rec.nvmlExceptionClass is N.nvmlExceptionClass  # a pure helper: not wrapped
    rec.nvmlInit()
    h = rec.nvmlDeviceGetHandleByIndex(0)
    assert rec.nvmlDeviceGetMemoryInfo(h, N.nvmlMemory_v2).total == 85_899_345_920
    rec.nvmlDeviceGetMemoryInfo(h, version=N.nvmlMemory_v2)  # same key, however it is passed
    keys = [k for k in rec.fixture()["calls"] if k.startswith("nvmlDeviceGetMemoryInfo")]
    assert len(keys) == 1 and rec.fixture()["counts"][keys[0]] == 2
    with pytest.raises(AssertionError, match="nvmlDeviceSetPersistenceMode"):
        rec.nvmlDeviceSetPersistenceMode(h, 1)
    assert stand_in.set_calls == 0


def test_own_names_do_not_hide_pynvml_names() -> None:
    ours = {n for cls in (FakeNvml, RecordingNvml) for n in vars(cls) if not n.startswith("_")}
    ours |= {"meta", "calls", "violations", "init_count", "shutdown_count"}
    assert not {n for n in ours if hasattr(N, n)}


def test_answers_caused_by_init_state_are_kept_apart() -> None:
    rec = RecordingNvml(StandInNvml())
    rec.nvmlDeviceGetCount()  # before init: the fake answers Uninitialized by itself
    rec.nvmlInit()
    old = rec.nvmlDeviceGetHandleByIndex(0)
    rec.nvmlShutdown()
    rec.nvmlInit()
    rec.nvmlDeviceGetName(old)  # stale: this stand-in answers anyway, the fake's model would not
    rec.nvmlDeviceGetName(rec.nvmlDeviceGetHandleByIndex(0))
    fixture = rec.fixture()
    name_key = 'nvmlDeviceGetName|[{"__handle__":"dev0"}]'
    assert fixture["counts"][name_key] == 1  # only the answer the fake replays
    assert fixture["modelled"][name_key] == [
        {"return": "NVIDIA H100 80GB HBM3", "predicted": N.NVML_ERROR_INVALID_ARGUMENT}]
    assert "nvmlDeviceGetCount|[]" in fixture["modelled"]
    assert "2 answered by init/shutdown state (2 not as the fake's model" in rec.summary()


@pytest.mark.parametrize(("name", "mutating"), [
    *((n, True) for n in ("nvmlDeviceSetPersistenceMode", "nvmlDeviceClearFieldValues",
                          "nvmlDeviceResetGpuLockedClocks", "nvmlDeviceRegisterEvents",
                          "nvmlGpmSetStreamingEnabled", "nvmlDeviceReadWritePRM_v1",
                          "nvmlDeviceCreateGpuInstance",
                          "nvmlDeviceFreezeNvLinkUtilizationCounter")),
    *((n, False) for n in ("nvmlDeviceGetAutoBoostedClocksEnabled", "nvmlEventSetCreate",
                           "nvmlGpmQueryIfStreamingEnabled", "nvmlEventSetWait_v2",
                           "nvmlSystemGetTopologyGpuSet", "nvmlGpmSampleAlloc")),
])
def test_mutating_names(name: str, mutating: bool) -> None:
    assert is_mutating(name) is mutating


@pytest.mark.parametrize("code", [1, 2, 3, 12, 13, 15, 999])
def test_nvmlerror_code_maps_to_its_subclass(code: int) -> None:
    error = N.NVMLError(code)
    assert type(error) is N.nvmlExceptionClass(code) and error.value == code


def test_handles_are_real_pointers_that_compare_by_token(fake: FakeNvml) -> None:
    h0, h0_again, h1 = (fake.nvmlDeviceGetHandleByIndex(i) for i in (0, 0, 1))
    assert h0 == h0_again and h0 != h1 and len({h0, h0_again, h1}) == 2
    assert isinstance(h0, N.c_nvmlDevice_t) and "dev0" in repr(h0)
    assert fake.nvmlDeviceGetName(h0) == "NVIDIA H100 80GB HBM3"


def test_nth_outcome_then_the_last_again(fake: FakeNvml) -> None:
    h = fake.nvmlDeviceGetHandleByIndex(0)
    got = [fake.nvmlDeviceGetTotalEnergyConsumption(h) for _ in range(4)]
    assert got == [1_000_700, 1_001_400, 1_001_400, 1_001_400]


def test_unrecorded_call_is_a_test_failure(recorded: tuple[Path, dict[Any, Any]]) -> None:
    fake = FakeNvml.from_fixture(recorded[0])
    fake.nvmlInit()
    h = fake.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(AssertionError, match=r"nvmlDeviceGetPowerUsage.*dev0"):
        fake.nvmlDeviceGetPowerUsage(h)
    with pytest.raises(AssertionError, match="would change GPU state"):
        fake.nvmlDeviceSetPersistenceMode(h, 1)
    assert len(fake.violations) == 2  # kept even if a backend swallowed the exceptions
    exploring = FakeNvml.from_fixture(recorded[0], default_not_supported=True)
    exploring.nvmlInit()
    h = exploring.nvmlDeviceGetHandleByIndex(0)
    assert _error(exploring.nvmlDeviceGetPowerUsage, h) == ("NVMLError_NotSupported", 3)


def test_lose_and_restore(fake: FakeNvml) -> None:
    h0, h1 = fake.nvmlDeviceGetHandleByIndex(0), fake.nvmlDeviceGetHandleByIndex(1)
    fake.lose("dev0")
    assert _error(fake.nvmlDeviceGetName, h0) == ("NVMLError_GpuIsLost", 15)
    assert _error(fake.nvmlDeviceGetHandleByIndex, 0)[0] == "NVMLError_GpuIsLost"
    assert fake.nvmlDeviceGetName(h1) == "NVIDIA H100 80GB HBM3"  # the other GPU still reads
    fake.restore("dev0")
    assert fake.nvmlDeviceGetName(h0) == "NVIDIA H100 80GB HBM3"


def test_block_until_released_and_no_shutdown_in_flight(fake: FakeNvml) -> None:
    h0, h1 = fake.nvmlDeviceGetHandleByIndex(0), fake.nvmlDeviceGetHandleByIndex(1)
    gate = fake.block("nvmlDeviceGetName", "dev0")
    result: list[str] = []
    worker = threading.Thread(target=lambda: result.append(fake.nvmlDeviceGetName(h0)),
                              daemon=True)
    worker.start()
    try:
        assert fake.entered("nvmlDeviceGetName").wait(10)
        assert fake.calls_in_flight() == 1
        assert fake.nvmlDeviceGetName(h1) == "NVIDIA H100 80GB HBM3"  # other GPU: not blocked
        with pytest.raises(AssertionError, match="in flight"):
            fake.nvmlShutdown()
        assert worker.is_alive() and result == []  # order of events, not durations
    finally:
        gate.set()
    worker.join(10)
    assert result == ["NVIDIA H100 80GB HBM3"] and fake.calls_in_flight() == 0
    fake.nvmlShutdown()
    assert fake.violations == ["nvmlShutdown while 1 other NVML call(s) in flight"]


def test_missing_library_then_present(recorded: tuple[Path, dict[Any, Any]]) -> None:
    fake = FakeNvml.from_fixture(recorded[0])
    fake.missing_library()
    assert _error(fake.nvmlInit) == ("NVMLError_LibraryNotFound", 12)
    assert _error(fake.nvmlDeviceGetCount)[0] == "NVMLError_Uninitialized"
    fake.library_present()
    fake.nvmlInit()
    assert fake.nvmlDeviceGetCount() == 2 and fake.init_count == 2


def test_function_not_found_and_fail_n_times(fake: FakeNvml) -> None:
    h0, h1 = fake.nvmlDeviceGetHandleByIndex(0), fake.nvmlDeviceGetHandleByIndex(1)
    fake.function_not_found("nvmlDeviceGetMemoryInfo")
    assert _error(fake.nvmlDeviceGetMemoryInfo, h0, N.nvmlMemory_v2)[1] == 13
    fake.fail("nvmlDeviceGetName", N.NVML_ERROR_UNKNOWN, times=2)
    assert [_error(fake.nvmlDeviceGetName, h1)[1] for _ in range(2)] == [999, 999]
    assert fake.nvmlDeviceGetName(h1) == "NVIDIA H100 80GB HBM3"
    fake.fail("nvmlDeviceGetUUID", N.NVML_ERROR_RESET_REQUIRED, gpu_token="dev1")
    for _ in range(3):
        assert _error(fake.nvmlDeviceGetUUID, h1)[0] == "NVMLError_ResetRequired"
    assert fake.nvmlDeviceGetUUID(h0).startswith("GPU-00000000")
    fake.clear_faults()
    assert fake.nvmlDeviceGetUUID(h1).startswith("GPU-00000001")


def test_init_shutdown_refcount_and_stale_handles(recorded: tuple[Path, dict[Any, Any]]) -> None:
    fake = FakeNvml.from_fixture(recorded[0])
    assert _error(fake.nvmlShutdown) == ("NVMLError_Uninitialized", 1)
    fake.nvmlInit()
    fake.nvmlInit()
    old = fake.nvmlDeviceGetHandleByIndex(0)
    fake.nvmlShutdown()
    assert fake.nvmlDeviceGetName(old)  # still initialized: the library counts inits
    fake.nvmlShutdown()
    assert _error(fake.nvmlDeviceGetName, old)[0] == "NVMLError_Uninitialized"
    fake.nvmlInit()
    assert _error(fake.nvmlDeviceGetName, old) == ("NVMLError_InvalidArgument", 2)
    new = fake.nvmlDeviceGetHandleByIndex(0)
    assert new == old and new is not old  # same device, a fresh handle
    assert fake.nvmlDeviceGetName(new) == "NVIDIA H100 80GB HBM3"
    assert (fake.init_count, fake.shutdown_count) == (3, 3)


def test_gpm_samples_misuse_is_caught(fake: FakeNvml) -> None:
    h = fake.nvmlDeviceGetHandleByIndex(0)
    sample = fake.nvmlGpmSampleAlloc()
    fake.nvmlGpmSampleGet(h, sample)
    assert len(fake.live_resources()) == 1  # a leak, if the test ended here
    fake.nvmlGpmSampleFree(sample)
    with pytest.raises(AssertionError, match="freed"):
        fake.nvmlGpmSampleGet(h, sample)
    old = fake.nvmlGpmSampleAlloc()
    fake.nvmlShutdown()
    fake.nvmlInit()
    fresh_h = fake.nvmlDeviceGetHandleByIndex(0)
    assert _error(fake.nvmlGpmSampleGet, fresh_h, old)[0] == "NVMLError_InvalidArgument"
    fake.nvmlGpmSampleFree(old)  # freeing a buffer from before the re-init is allowed
    assert fake.live_resources() == []


def _record_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "nvml_record_script", FIXTURE_DIR / "record.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_builtin_recording_drive_replays_cleanly(tmp_path: Path) -> None:
    record = _record_module()
    recorder = RecordingNvml(StandInNvml())
    record.builtin_drive(recorder, cycles=2, sleep=lambda seconds: None)
    summary = recorder.summary()
    assert "calls recorded" in summary and "NVMLError_NotSupported(3)=" in summary
    fake = FakeNvml.from_fixture(recorder.save(tmp_path / "drive.json"))
    record.builtin_drive(fake, cycles=3, sleep=lambda seconds: None)  # one cycle more
    fake.assert_clean()
    assert fake.live_resources() == [] and fake.calls_in_flight() == 0


def _real_fixtures() -> list[Path]:
    return sorted(FIXTURE_DIR.glob("*.json"))


@pytest.mark.parametrize("path", _real_fixtures(), ids=lambda p: p.name)
def test_recorded_fixtures_replay_cleanly(path: Path) -> None:
    """Every fixture kept in the repo replays its own recording drive with no misuse."""
    fake = FakeNvml.from_fixture(path)
    meta = fake.meta
    assert meta["driver"] and meta["gpus"] and "synthesized" in meta
    if meta["synthesized"]:  # README: a synthesized fixture says where it came from and how
        assert meta.get("synthesized_from") and meta.get("edits")
    if meta.get("drive", "").startswith("built-in"):
        _record_module().builtin_drive(fake, cycles=3, sleep=lambda seconds: None)
        fake.assert_clean()
        assert fake.live_resources() == []


def test_h100_answers_behave_like_the_library() -> None:
    fake = FakeNvml.from_fixture(FIXTURE_DIR / "h100_580.json")
    fake.nvmlInit()
    h = fake.nvmlDeviceGetHandleByIndex(0)
    v2 = fake.nvmlDeviceGetMemoryInfo(h, version=fake.nvmlMemory_v2)
    assert isinstance(v2, N.c_nvmlMemory_v2_t) and v2.free + v2.used + v2.reserved == v2.total
    assert fake.nvmlDeviceGetMemoryInfo(h).used == v2.reserved + v2.used  # v1 counts reserved
    is_mig = fake.nvmlDeviceIsMigDeviceHandle(h)
    assert is_mig.value == 0 and is_mig != 0  # a c_uint, with the real trap
    temp, *power = fake.nvmlDeviceGetFieldValues(
        h, [82, (185, 0), (185, 2), (186, 0), (186, 2)])
    assert temp.valueType == N.NVML_VALUE_TYPE_UNSIGNED_INT and 0 < temp.value.uiVal < 100
    assert [p.nvmlReturn for p in power] == [0, 0, 0, N.NVML_ERROR_NOT_SUPPORTED]
    first, second = (fake.nvmlDeviceGetTotalEnergyConsumption(h) for _ in range(2))
    assert 0 < first <= second  # a counter: recorded twice, in order
    assert _error(fake.nvmlDeviceGetFanSpeed_v2, h, 0) == ("NVMLError_InvalidArgument", 2)
    assert fake.nvmlDeviceGetPciInfo(h).busId == "00000000:00:06.0"  # auto-decoded str
