"""FakeAmdSmi behaves as the amdsmi notes and the real 6.4.3 / 7.0.2 Python layer say.

Shapes and keys per version and profile, "N/A" and raw sentinels where promised, exceptions
and err_code, partitions, event readers (with the NO_DATA timeout and the 7.0 enum bug),
handle lifetime, the missing-library import, time, and each fault the fake can inject.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import inspect
import io
import threading
import types
from typing import Any

import pytest
from amdsmi_fake import BOARD_FUNCTIONS, FUNCTIONS, FakeAmdSmi, amdsmi_import_fails, import_failure
from conftest import wait_for

U32, U64 = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF


@contextlib.contextmanager
def session(fake: FakeAmdSmi) -> Any:
    fake.amdsmi_init()
    try:
        yield fake.amdsmi_get_processor_handles()
    finally:
        fake.amdsmi_shut_down()


def error(fake: FakeAmdSmi, fn: Any, *args: Any) -> Any:
    with pytest.raises(fake.AmdSmiException) as info:
        fn(*args)
    return info.value


# -- module surface --------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["6.4", "7.0"])
def test_module_surface_per_version(version: str) -> None:
    fake = FakeAmdSmi(version=version)
    assert isinstance(fake, types.ModuleType) and fake.__name__ == "amdsmi"
    assert fake.__version__ == {"6.4": "6.4.3", "7.0": "7.0.2"}[version]
    for name in FUNCTIONS:
        if name == "amdsmi_get_link_metrics" and version == "6.4":
            assert not hasattr(fake, name)  # added to the Python layer in 7.0
            continue
        assert callable(getattr(fake, name)), name
    assert str(inspect.signature(fake.amdsmi_init)) == "(flag=<AmdSmiInitFlags.INIT_AMD_GPUS: 2>)"
    power = inspect.signature(fake.amdsmi_get_power_info)
    assert list(power.parameters) == (["processor_handle", "sensor_ind"] if version == "6.4"
                                      else ["processor_handle"])
    assert list(inspect.signature(fake.amdsmi_get_temp_metric).parameters) == [
        "processor_handle", "sensor_type", "metric"]
    assert list(inspect.signature(fake.AmdSmiEventReader.read).parameters) == [
        "self", "timestamp", "num_elem"]
    with pytest.raises(AttributeError, match="does not model"):
        fake.amdsmi_get_gpu_vram_info  # noqa: B018
    wrapper = fake.amdsmi_wrapper
    assert wrapper.AMDSMI_STATUS_NOT_SUPPORTED == 2 and wrapper.AMDSMI_STATUS_NO_DATA == 40
    more_data = 57 if version == "6.4" else 39  # the value moved in 7.0
    assert more_data == wrapper.AMDSMI_STATUS_MORE_DATA
    assert hasattr(wrapper, "AMDSMI_STATUS_DIRECTORY_NOT_FOUND") == (version == "7.0")
    assert wrapper.amdsmi_processor_handle is ctypes.c_void_p
    assert fake.amdsmi_exception.AmdSmiLibraryException is fake.AmdSmiLibraryException


def test_enums() -> None:
    fake = FakeAmdSmi()
    assert int(fake.AmdSmiInitFlags.INIT_AMD_GPUS) == 2
    assert fake.AmdSmiClkType.GFX is fake.AmdSmiClkType.SYS  # GFX is an alias of SYS
    assert fake.AmdSmiClkType.GFX.name == "SYS" and fake.AmdSmiClkType.MEM == 4
    assert fake.AmdSmiTemperatureType.JUNCTION is fake.AmdSmiTemperatureType.HOTSPOT
    assert [fake.AmdSmiTemperatureType[f"HBM_{i}"] for i in range(4)] == [3, 4, 5, 6]
    metric = fake.AmdSmiTemperatureMetric
    assert (metric.CURRENT, metric.CRITICAL, metric.EMERGENCY) == (0, 5, 7)
    assert [m.name for m in fake.AmdSmiMemoryType] == ["VRAM", "VIS_VRAM", "GTT"]
    blocks = [b.name for b in fake.AmdSmiGpuBlock][1:-1]
    assert blocks == ["UMC", "SDMA", "GFX", "MMHUB", "ATHUB", "PCIE_BIF", "HDP", "XGMI_WAFL",
                      "DF", "SMN", "SEM", "MP0", "MP1", "FUSE", "MCA", "VCN", "JPEG", "IH",
                      "MPIO"]
    assert fake.AmdSmiGpuBlock.MPIO == 1 << 18 and fake.AmdSmiGpuBlock.RESERVED == 1 << 63
    assert [s.name for s in fake.AmdSmiMemoryPageStatus] == ["RESERVED", "PENDING",
                                                             "UNRESERVABLE"]
    assert fake.AmdSmiLinkType.AMDSMI_LINK_TYPE_XGMI == 2
    assert FakeAmdSmi(version="6.4").AmdSmiLinkType.AMDSMI_LINK_TYPE_XGMI == 1  # swapped in 7.0


def test_event_enum_versions_and_the_7_0_page_fault_bug() -> None:
    evt = FakeAmdSmi(version="7.0").AmdSmiEvtNotificationType
    assert evt.PAGE_FAULT_START == 8 and evt.PAGE_FAULT_END is evt.PAGE_FAULT_START
    assert 7 not in {e.value for e in evt}
    assert evt.GPU_PRE_RESET == 3 and evt.PROCESS_END == 13
    old = FakeAmdSmi(version="6.4").AmdSmiEvtNotificationType
    assert [e.name for e in old] == ["NONE", "VMFAULT", "THERMAL_THROTTLE", "GPU_PRE_RESET",
                                     "GPU_POST_RESET", "RING_HANG"]


# -- lifecycle and handles ------------------------------------------------------------------

def test_handles_are_unhashable_c_void_p_valid_only_while_initialized() -> None:
    fake = FakeAmdSmi(cards=2)
    assert error(fake, fake.amdsmi_get_processor_handles).err_code == 32  # NOT_INIT
    assert fake.amdsmi_get_lib_version()["major"] == 26  # needs no init
    fake.amdsmi_init()
    first = fake.amdsmi_get_processor_handles()
    again = fake.amdsmi_get_processor_handles()
    assert len(first) == 2 and all(type(h) is ctypes.c_void_p for h in first)
    with pytest.raises(TypeError, match="unhashable"):
        {first[0]: 1}
    assert first[0] != again[0] and first[0].value == again[0].value  # == is identity
    assert fake.amdsmi_get_gpu_device_bdf(again[0]) == fake.amdsmi_get_gpu_device_bdf(first[0])
    fake.amdsmi_shut_down()
    assert error(fake, fake.amdsmi_get_gpu_activity, first[0]).err_code == 32
    fake.amdsmi_init()
    fresh = fake.amdsmi_get_processor_handles()
    assert fresh[0].value != first[0].value
    stale = error(fake, fake.amdsmi_get_gpu_activity, first[0])
    assert type(stale) is fake.AmdSmiLibraryException and stale.err_code == 31  # NOT_FOUND
    assert error(fake, fake.amdsmi_get_gpu_activity, ctypes.c_void_p()).err_code == 1  # INVAL
    assert fake.amdsmi_get_gpu_activity(ctypes.c_void_p(fresh[1].value))  # address is enough
    fake.amdsmi_shut_down()
    fake.amdsmi_shut_down()  # without init: SUCCESS, as the C library
    fake.assert_clean()


def test_init_is_refcounted_and_checks_its_flag() -> None:
    fake = FakeAmdSmi()
    assert type(error(fake, fake.amdsmi_init, 2)) is fake.AmdSmiParameterException
    fake.amdsmi_init(fake.AmdSmiInitFlags.INIT_AMD_GPUS)
    fake.amdsmi_init()
    handles = fake.amdsmi_get_processor_handles()
    fake.amdsmi_shut_down()
    assert fake.amdsmi_get_gpu_activity(handles[0])  # one shut_down per init
    with pytest.raises(AssertionError, match="amdsmi_init without amdsmi_shut_down"):
        fake.assert_clean()
    fake.amdsmi_shut_down()
    fake.assert_clean()
    assert (fake.init_count, fake.shutdown_count) == (3, 2)  # the refused one counts
    fake.amdsmi_init(fake.AmdSmiInitFlags.INIT_AMD_CPUS)
    assert fake.amdsmi_get_processor_handles() == []
    fake.amdsmi_shut_down()
    empty = FakeAmdSmi(cards=0)
    with session(empty) as handles:
        assert handles == []


# -- identity and shapes per version and profile ---------------------------------------------

@pytest.mark.parametrize("version", ["6.4", "7.0"])
def test_identity(version: str) -> None:
    fake = FakeAmdSmi("mi300x", cards=2, version=version)
    with session(fake) as (h0, h1):
        assert fake.amdsmi_get_gpu_device_bdf(h1) == "0000:22:00.0"
        uuid = fake.amdsmi_get_gpu_device_uuid(h0)
        assert len(uuid) == 36 and uuid.count("-") == 4
        asic = fake.amdsmi_get_gpu_asic_info(h0)
        keys = ["market_name", "vendor_id", "vendor_name", "subvendor_id", "device_id",
                "rev_id", "asic_serial", "oam_id", "num_compute_units",
                "target_graphics_version"] + (["subsystem_id"] if version == "7.0" else [])
        assert list(asic) == keys
        assert asic["market_name"] == "AMD Instinct MI300X"
        assert (asic["vendor_id"], asic["device_id"], asic["rev_id"]) == ("0x1002", "0x74a1",
                                                                          "0x00")
        assert asic["target_graphics_version"] == "gfx942" and asic["num_compute_units"] == 304
        assert asic["asic_serial"].startswith("0x") and len(asic["asic_serial"]) == 18
        board = fake.amdsmi_get_gpu_board_info(h0)
        assert list(board) == ["model_number", "product_serial", "fru_id", "product_name",
                               "manufacturer_name"]
        assert not board["model_number"].endswith(" ")  # stripped
        assert list(fake.amdsmi_get_gpu_vbios_info(h0)) == ["name", "build_date",
                                                            "part_number", "version"]
        assert fake.amdsmi_get_gpu_driver_info(h0)["driver_name"] == "amdgpu"
        fw = fake.amdsmi_get_fw_info(h0)["fw_list"]
        assert all(isinstance(e["fw_name"], fake.AmdSmiFwBlock) for e in fw)
        versions = {e["fw_name"].name: e["fw_version"] for e in fw}
        assert versions["AMDSMI_FW_ID_PSP_SOSDRV"] == "00.36.1D.32"  # dotted hex
        assert versions["AMDSMI_FW_ID_PM"] == "00.85.101.00"  # dotted decimal
        kfd = fake.amdsmi_get_gpu_kfd_info(h1)
        assert list(kfd) == ["kfd_id", "node_id", "current_partition_id"]
        assert kfd["node_id"] == 3 and kfd["current_partition_id"] == 0
        enum_info = fake.amdsmi_get_gpu_enumeration_info(h1)
        assert list(enum_info) == ["drm_render", "drm_card", "hsa_id", "hip_id", "hip_uuid"]
        assert enum_info["drm_render"] == 129
        assert fake.amdsmi_get_gpu_compute_partition(h0) == "SPX"
        assert fake.amdsmi_get_gpu_memory_partition(h0) == "NPS1"
        lib = fake.amdsmi_get_lib_version()
        assert list(lib) == ["major", "minor", "release", "build"] and len(lib["build"]) == 1


def test_oam_id_na_differs_between_versions_on_a_pcie_card() -> None:
    """MI210 has no OAM slot: C gives UINT32_MAX; 6.4.3 only converts 0xFFFF."""
    for version, expected in (("7.0", "N/A"), ("6.4", U32)):
        fake = FakeAmdSmi("mi210", cards=1, version=version)
        with session(fake) as (h,):
            asic = fake.amdsmi_get_gpu_asic_info(h)
            assert asic["oam_id"] == expected
            assert asic["target_graphics_version"] == "gfx90a"
            assert fake.amdsmi_get_pcie_info(h)["pcie_static"]["slot_type"] == "CEM"
            assert type(error(fake, fake.amdsmi_get_xgmi_info, h)).__name__ == \
                "AmdSmiLibraryException"


@pytest.mark.parametrize("version", ["6.4", "7.0"])
def test_power_energy_clock_shapes(version: str) -> None:
    fake = FakeAmdSmi("mi300x", cards=1, version=version)
    with session(fake) as (h,):
        power = fake.amdsmi_get_power_info(h)
        keys = ["current_socket_power", "average_socket_power", "gfx_voltage", "soc_voltage",
                "mem_voltage", "power_limit"]
        assert list(power) == (["socket_power", *keys] if version == "7.0" else keys)
        assert isinstance(power["current_socket_power"], int)
        if version == "7.0":  # newer C fills UINT32/64_MAX; the Python only converts 0xFFFF
            assert power["socket_power"] == power["current_socket_power"]
            assert power["average_socket_power"] == U32 and power["gfx_voltage"] == U64
        else:  # the 6.x C library set 0xFFFF: "N/A"
            assert power["average_socket_power"] == "N/A" and power["gfx_voltage"] == "N/A"
            assert fake.amdsmi_get_power_info(h, 0) == power
        assert power["power_limit"] == 750 * 10**6  # µW (UNCONFIRMED unit)
        cap = fake.amdsmi_get_power_cap_info(h)
        assert list(cap) == ["power_cap", "default_power_cap", "dpm_cap", "min_power_cap",
                             "max_power_cap"]
        assert cap["power_cap"] == 750_000_000  # µW
        energy = fake.amdsmi_get_energy_count(h)
        assert list(energy) == ["energy_accumulator", "counter_resolution", "timestamp"]
        assert isinstance(energy["counter_resolution"], float)
        assert abs(energy["counter_resolution"] - 15.259) < 1e-5  # float32 of 15.259 µJ
        clock = fake.amdsmi_get_clock_info(h, fake.AmdSmiClkType.GFX)
        assert list(clock) == ["clk", "min_clk", "max_clk", "clk_locked", "clk_deep_sleep"]
        assert clock["min_clk"] <= clock["clk"] <= clock["max_clk"] == 2100
        assert type(clock["clk_locked"]) is bool
        assert type(clock["clk_deep_sleep"]) is (bool if version == "6.4" else int)
        assert fake.amdsmi_get_clock_info(h, fake.AmdSmiClkType.MEM)["clk_locked"] == "N/A"
        assert error(fake, fake.amdsmi_get_clock_info, h, fake.AmdSmiClkType.DCEF).err_code == 2
        vram = fake.amdsmi_get_gpu_vram_usage(h)
        assert vram["vram_total"] == 196592  # MB
        total = fake.amdsmi_get_gpu_memory_total(h, fake.AmdSmiMemoryType.VRAM)
        assert total == 196592 * 2**20  # bytes
        used = fake.amdsmi_get_gpu_memory_usage(h, fake.AmdSmiMemoryType.VRAM)
        assert used == vram["vram_used"] * 2**20
        activity = fake.amdsmi_get_gpu_activity(h)
        assert list(activity) == ["gfx_activity", "umc_activity", "mm_activity"]
        assert all(0 <= v <= 100 for v in activity.values())


@pytest.mark.parametrize(("profile", "version", "count"), [
    ("mi300x", "7.0", 79), ("mi300x", "6.4", 72), ("mi250x", "7.0", 79), ("mi210", "6.4", 72)])
def test_gpu_metrics_keys_and_na_per_profile(profile: str, version: str, count: int) -> None:
    fake = FakeAmdSmi(profile, cards=1, version=version)
    with session(fake) as (h,):
        m = fake.amdsmi_get_gpu_metrics_info(h)
    assert len(m) == count
    assert ("common_header.format_revision" in m) == (version == "7.0")
    assert ("xcp_stats.gfx_below_host_limit_ppt_acc" in m) == (version == "7.0")
    assert len(m["xcp_stats.gfx_busy_inst"]) == 8 and len(m["xcp_stats.gfx_busy_inst"][0]) == 8
    assert len(m["xcp_stats.jpeg_busy"][0]) == (40 if version == "7.0" else 32)
    assert len(m["xgmi_read_data_acc"]) == 8 and len(m["temperature_hbm"]) == 4
    assert type(m["throttle_status"]) is bool
    if profile == "mi300x":
        assert m["temperature_edge"] == "N/A" and isinstance(m["temperature_hotspot"], int)
        assert m["average_socket_power"] == "N/A" and isinstance(m["current_socket_power"], int)
        assert m["pcie_link_speed"] == 320  # 0.1 GT/s
        assert isinstance(m["pcie_replay_count_acc"], int)
        assert isinstance(m["ppt_residency_acc"], int) and m["num_partition"] == 1
        assert all(isinstance(v, int) for v in m["xcp_stats.gfx_busy_inst"][0])
        assert m["xcp_stats.gfx_busy_inst"][1] == ["N/A"] * 8
        assert m["xgmi_read_data_acc"][7] == "N/A" and isinstance(m["xgmi_read_data_acc"][0], int)
        # 6.4.3 validated these accumulators as activities: anything > 100 became "N/A"
        acc = m["xcp_stats.gfx_busy_acc"][0][0]
        assert acc == "N/A" if version == "6.4" else acc > 100
    else:
        assert isinstance(m["temperature_edge"], int) and isinstance(m["average_socket_power"], int)
        assert m["current_socket_power"] == "N/A" and m["pcie_replay_count_acc"] == "N/A"
        assert m["ppt_residency_acc"] == "N/A" and m["num_partition"] == "N/A"
        assert m["xcp_stats.gfx_busy_inst"] == [["N/A"] * 8] * 8
        assert all(isinstance(v, int) for v in m["temperature_hbm"])


def test_temperatures_per_profile() -> None:
    mi300 = FakeAmdSmi("mi300x", cards=1)
    t, mt = mi300.AmdSmiTemperatureType, mi300.AmdSmiTemperatureMetric
    with session(mi300) as (h,):
        assert error(mi300, mi300.amdsmi_get_temp_metric, h, t.EDGE, mt.CURRENT).err_code == 2
        hot = mi300.amdsmi_get_temp_metric(h, t.HOTSPOT, mt.CURRENT)
        assert 20 < hot < 110 and mi300.amdsmi_get_temp_metric(h, t.JUNCTION, mt.CURRENT) == hot
        assert mi300.amdsmi_get_temp_metric(h, t.HOTSPOT, mt.CRITICAL) > hot  # °C, not m°C
        assert mi300.amdsmi_get_temp_metric(h, t.VRAM, mt.CURRENT) < 100
        assert mi300.amdsmi_get_temp_metric(h, t.HBM_3, mt.CURRENT) < 100
        assert error(mi300, mi300.amdsmi_get_temp_metric, h, t.HOTSPOT, mt.MIN).err_code == 2
        param = error(mi300, mi300.amdsmi_get_temp_metric, h, 0, mt.CURRENT)
        assert type(param) is mi300.AmdSmiParameterException and param.err_code is None
    mi250 = FakeAmdSmi("mi250x", cards=1)
    t, mt = mi250.AmdSmiTemperatureType, mi250.AmdSmiTemperatureMetric
    with session(mi250) as (h,):
        edge = mi250.amdsmi_get_temp_metric(h, t.EDGE, mt.CURRENT)
        assert edge < mi250.amdsmi_get_temp_metric(h, t.JUNCTION, mt.CURRENT)
        assert mi250.amdsmi_get_temp_metric(h, t.EDGE, mt.EMERGENCY) == 105


def test_mi200_lacks_what_the_notes_say() -> None:
    fake = FakeAmdSmi("mi250x", cards=2)
    with session(fake) as (h, _):
        assert error(fake, fake.amdsmi_get_violation_status, h).err_code == 2
        assert error(fake, fake.amdsmi_get_gpu_compute_partition, h).err_code == 2
        assert error(fake, fake.amdsmi_get_link_metrics, h).err_code == 2
        metric = fake.amdsmi_get_pcie_info(h)["pcie_metric"]
        assert metric["pcie_replay_count"] == "N/A" and metric["pcie_bandwidth"] == "N/A"
        assert metric["pcie_speed"] == 16000  # MT/s
        assert fake.amdsmi_get_gpu_kfd_info(h)["current_partition_id"] == "N/A"
        power = fake.amdsmi_get_power_info(h)
        assert isinstance(power["average_socket_power"], int)
        assert power["current_socket_power"] == U32
        assert fake.amdsmi_get_xgmi_info(h)["xgmi_lanes"] == 16
        assert error(fake, fake.amdsmi_get_gpu_fan_speed, h, 0).err_code == 2
    with pytest.raises(ValueError, match="cannot be partitioned"):
        FakeAmdSmi("mi210", partition="CPX")


def test_mi300x_pcie_violation_xgmi() -> None:
    fake = FakeAmdSmi("mi300x", cards=2, version="7.0")
    with session(fake) as (h, _):
        pcie = fake.amdsmi_get_pcie_info(h)
        assert list(pcie) == ["pcie_static", "pcie_metric"]
        assert pcie["pcie_static"] == {"max_pcie_width": 16, "max_pcie_speed": 32000,
                                       "pcie_interface_version": 5, "slot_type": "OAM"}
        assert isinstance(pcie["pcie_metric"]["pcie_replay_count"], int)
        v = fake.amdsmi_get_violation_status(h)
        assert len(v) == 33 and v["per_ppt_pwr"] == 0 and v["active_ppt_pwr"] is False
        assert len(v["acc_gfx_clk_below_host_limit_pwr"]) == 8
        assert v["per_low_utilization"][1] == ["N/A"] * 8  # XCP 1 does not exist in SPX
        links = fake.amdsmi_get_link_metrics(h)
        assert links["num_links"] == 7 and len(links["links"]) == 8
        assert links["links"][1]["link_type"] == 2 and links["links"][0]["bdf"] == "0000:22:00.0"
        unused = links["links"][7]
        assert unused["bdf"] == "ffffffffffff:ff:1f.7" and unused["bit_rate"] == U32
        xgmi = fake.amdsmi_get_xgmi_info(h)
        assert list(xgmi) == ["xgmi_lanes", "xgmi_hive_id", "xgmi_node_id", "index"]
    old = FakeAmdSmi("mi300x", cards=1, version="6.4")
    with session(old) as (h,):
        v = old.amdsmi_get_violation_status(h)
        assert len(v) == 21 and "acc_low_utilization" not in v


# -- partitions ------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["6.4", "7.0"])
def test_cpx_gives_eight_handles_per_card(version: str) -> None:
    fake = FakeAmdSmi("mi300x", cards=2, partition="CPX", version=version)
    with session(fake) as handles:
        assert len(handles) == 16
        card0 = handles[:8]
        bdfs = [fake.amdsmi_get_gpu_device_bdf(h) for h in card0]
        assert bdfs == [f"0000:0c:00.{i}" for i in range(8)]
        assert fake.amdsmi_get_gpu_device_bdf(handles[8]) == "0000:22:00.0"
        parts = [fake.amdsmi_get_gpu_kfd_info(h)["current_partition_id"] for h in card0]
        assert parts == list(range(8))
        assert [fake.amdsmi_get_gpu_compute_partition(h) for h in card0] == ["CPX"] * 8
        uuids = {fake.amdsmi_get_gpu_device_uuid(h) for h in card0}
        assert len(uuids) == (8 if version == "7.0" else 1)  # per-partition UUIDs from 7.0
        renders = [fake.amdsmi_get_gpu_enumeration_info(h)["drm_render"] for h in handles]
        assert renders == list(range(128, 144))
        # whole-board readings: the same board value on every partition (must not be summed)
        powers = {fake.amdsmi_get_power_info(h)["current_socket_power"] for h in card0}
        energies = {fake.amdsmi_get_energy_count(h)["energy_accumulator"] for h in card0}
        t = fake.AmdSmiTemperatureType.HOTSPOT
        temps = {fake.amdsmi_get_temp_metric(h, t, fake.AmdSmiTemperatureMetric.CURRENT)
                 for h in card0}
        assert len(powers) == len(energies) == len(temps) == 1
        # per partition: its share of VRAM, its XCD in xcp_stats
        vram = [fake.amdsmi_get_gpu_vram_usage(h)["vram_total"] for h in card0]
        assert vram == [196592 // 8] * 8
        assert fake.amdsmi_get_gpu_asic_info(handles[3])["num_compute_units"] == 38
        m = fake.amdsmi_get_gpu_metrics_info(card0[5])
        assert m["num_partition"] == 8
        assert all(isinstance(row[0], int) and row[1:] == ["N/A"] * 7
                   for row in m["xcp_stats.gfx_busy_inst"])


def test_board_override_applies_to_every_partition() -> None:
    fake = FakeAmdSmi("mi300x", cards=2, partition="DPX")
    fake.set("amdsmi_get_power_info", "current_socket_power", 612, handle_index=1)
    fake.set("amdsmi_get_gpu_process_list", None, [], handle_index=0)
    with session(fake) as handles:
        assert [fake.amdsmi_get_power_info(h)["current_socket_power"] for h in handles][:2] == [
            612, 612]
        assert fake.amdsmi_get_power_info(handles[2])["current_socket_power"] != 612
    assert "amdsmi_get_power_info" in BOARD_FUNCTIONS
    assert "amdsmi_get_gpu_vram_usage" not in BOARD_FUNCTIONS
    with pytest.raises(ValueError, match="MI300A"):
        FakeAmdSmi("mi300x", partition="TPX")


# -- exceptions and fault injection ----------------------------------------------------------

@pytest.mark.parametrize("version", ["6.4", "7.0"])
def test_exceptions_look_like_the_real_ones(version: str) -> None:
    fake = FakeAmdSmi(version=version)
    fake.fail("amdsmi_get_gpu_activity", 2)
    with session(fake) as (h, _):
        e = error(fake, fake.amdsmi_get_gpu_activity, h)
        assert type(e) is fake.AmdSmiLibraryException and isinstance(e, fake.AmdSmiException)
        assert e.err_code == e.get_error_code() == 2 and e.args == (2,)
        assert str(e) == "Error code:\n\t2 | AMDSMI_STATUS_NOT_SUPPORTED - Feature not supported"
        assert e.get_error_info() == "AMDSMI_STATUS_NOT_SUPPORTED - Feature not supported"
        if version == "7.0":
            assert e.get_error_info(detailed=False) == "AMDSMI_STATUS_NOT_SUPPORTED"
        else:
            with pytest.raises(TypeError):
                e.get_error_info(detailed=False)
        fake.clear_faults()
        for code, cls in ((8, fake.AmdSmiTimeoutException), (9, fake.AmdSmiRetryException),
                          (10, fake.AmdSmiLibraryException), (30, fake.AmdSmiLibraryException),
                          (34, fake.AmdSmiLibraryException)):
            fake.fail("amdsmi_get_gpu_activity", code, times=1)
            e = error(fake, fake.amdsmi_get_gpu_activity, h)
            assert type(e) is cls and e.err_code == code
            assert isinstance(e, fake.AmdSmiLibraryException)
        assert "Permission Denied" in str(fake.AmdSmiLibraryException(10))
        assert "DRIVER_NOT_LOADED" in str(fake.AmdSmiLibraryException(34))
        unknown = str(fake.AmdSmiLibraryException(20))  # DIRECTORY_NOT_FOUND: 7.0 only
        assert ("UNKNOWN_ERROR" in unknown) == (version == "6.4")
        param = error(fake, fake.amdsmi_get_gpu_activity, 0)
        assert type(param) is fake.AmdSmiParameterException and param.err_code is None
        assert str(param) == ("Invalid parameter:\nActual type: <class 'int'>\n"
                              "Expected type: <class 'ctypes.c_void_p'>")


def test_fail_targets_a_handle_an_argument_and_counts() -> None:
    fake = FakeAmdSmi(cards=2)
    fake.fail("amdsmi_get_gpu_metrics_info", 30, handle_index=1, times=2)  # BUSY
    fake.fail("amdsmi_get_clock_info", 10, arg=fake.AmdSmiClkType.MEM)  # NO_PERM
    with session(fake) as (h0, h1):
        assert fake.amdsmi_get_gpu_metrics_info(h0)
        assert error(fake, fake.amdsmi_get_gpu_metrics_info, h1).err_code == 30
        assert error(fake, fake.amdsmi_get_gpu_metrics_info, h1).err_code == 30
        assert fake.amdsmi_get_gpu_metrics_info(h1)  # times=2 spent
        assert fake.amdsmi_get_clock_info(h0, fake.AmdSmiClkType.GFX)
        assert error(fake, fake.amdsmi_get_clock_info, h0, fake.AmdSmiClkType.MEM).err_code == 10
    fake.clear_faults()
    fake.fail("amdsmi_get_processor_handles", 34)  # DRIVER_NOT_LOADED
    fake.amdsmi_init()
    assert error(fake, fake.amdsmi_get_processor_handles).err_code == 34
    fake.amdsmi_shut_down()
    fake.fail("amdsmi_init", 18, times=1)
    assert error(fake, fake.amdsmi_init).err_code == 18
    fake.assert_clean()  # a failed init needs no shut_down


def test_na_and_sentinel_follow_the_real_conversion() -> None:
    fake = FakeAmdSmi("mi300x", cards=1, version="7.0")
    fake.na("amdsmi_get_gpu_metrics_info", "temperature_hotspot")
    fake.na("amdsmi_get_gpu_metrics_info", "xgmi_read_data_acc.2")
    fake.na("amdsmi_get_pcie_info", "pcie_metric.pcie_replay_count")
    fake.na("amdsmi_get_gpu_asic_info", "market_name")
    fake.na("amdsmi_get_power_info", "current_socket_power")  # only 0xFFFF converts in 7.0
    fake.sentinel("amdsmi_get_gpu_activity", "gfx_activity", width=32)  # u32 max stays raw
    fake.sentinel("amdsmi_get_gpu_activity", "umc_activity", width=16)
    fake.sentinel("amdsmi_get_gpu_kfd_info", "current_partition_id", width=32)
    with session(fake) as (h,):
        m = fake.amdsmi_get_gpu_metrics_info(h)
        assert m["temperature_hotspot"] == "N/A"
        assert m["xgmi_read_data_acc"][2] == "N/A" and isinstance(m["xgmi_read_data_acc"][1], int)
        pcie = fake.amdsmi_get_pcie_info(h)
        assert pcie["pcie_metric"]["pcie_replay_count"] == "N/A"
        assert fake.amdsmi_get_gpu_asic_info(h)["market_name"] == "N/A"
        assert fake.amdsmi_get_power_info(h)["current_socket_power"] == "N/A"
        activity = fake.amdsmi_get_gpu_activity(h)
        assert activity["gfx_activity"] == U32 and activity["umc_activity"] == "N/A"
        assert fake.amdsmi_get_gpu_kfd_info(h)["current_partition_id"] == "N/A"
    with pytest.raises(ValueError, match="never returns 'N/A'"):
        fake.na("amdsmi_get_energy_count", "energy_accumulator")
    with pytest.raises(ValueError, match="never returns 'N/A'"):
        fake.na("amdsmi_get_gpu_total_ecc_count", "correctable_count")
    with pytest.raises(ValueError, match="16-bit"):
        fake.sentinel("amdsmi_get_gpu_metrics_info", "temperature_mem", width=32)
    with pytest.raises(ValueError, match=r"no .*C field"):
        fake.sentinel("amdsmi_get_gpu_activity", "nonsense")


def test_set_ecc_bad_pages_processes() -> None:
    fake = FakeAmdSmi(cards=2)
    umc = fake.AmdSmiGpuBlock.UMC
    fake.set("amdsmi_get_gpu_ecc_count", "uncorrectable_count", 2, handle_index=1, arg=umc)
    fake.set("amdsmi_get_gpu_ecc_count", "correctable_count", 5, handle_index=1,
             arg=fake.AmdSmiGpuBlock.SDMA)
    fake.set("amdsmi_get_gpu_bad_page_info", None, [
        {"page_address": 0x7F000, "page_size": 4096,
         "status": fake.AmdSmiMemoryPageStatus.PENDING}], handle_index=1)
    fake.set("amdsmi_get_gpu_compute_partition", None, "DPX", handle_index=0)
    with session(fake) as (h0, h1):
        assert fake.amdsmi_get_gpu_total_ecc_count(h0) == {
            "correctable_count": 0, "uncorrectable_count": 0, "deferred_count": 0}
        assert fake.amdsmi_get_gpu_total_ecc_count(h1) == {
            "correctable_count": 5, "uncorrectable_count": 2, "deferred_count": 0}
        assert fake.amdsmi_get_gpu_ecc_count(h1, umc)["uncorrectable_count"] == 2
        assert fake.amdsmi_get_gpu_ecc_enabled(h0) & int(umc)
        assert fake.amdsmi_get_gpu_bad_page_info(h0) == []
        pages = fake.amdsmi_get_gpu_bad_page_info(h1)
        assert pages == [{"value": 0, "page_address": 0x7F000, "page_size": 4096, "status": 1}]
        assert type(pages[0]["status"]) is int  # raw: wrap with AmdSmiMemoryPageStatus
        assert fake.amdsmi_get_gpu_compute_partition(h0) == "DPX"
        procs = fake.amdsmi_get_gpu_process_list(h0)
        assert list(procs[0]) == ["name", "pid", "mem", "engine_usage", "memory_usage",
                                  "cu_occupancy"]
        assert fake.amdsmi_get_gpu_process_list(h1) == []


# -- time ------------------------------------------------------------------------------------

def test_accumulators_move_with_the_clock() -> None:
    fake = FakeAmdSmi("mi300x", cards=2)
    with session(fake) as (_, h):
        e0 = fake.amdsmi_get_energy_count(h)
        m0 = fake.amdsmi_get_gpu_metrics_info(h)
        power = fake.amdsmi_get_power_info(h)["current_socket_power"]
        fake.advance(10.0)
        e1 = fake.amdsmi_get_energy_count(h)
        joules = (e1["energy_accumulator"] - e0["energy_accumulator"]) * \
            e1["counter_resolution"] * 1e-6
        assert abs(joules - power * 10) < 1
        assert e1["timestamp"] - e0["timestamp"] == 10 * 10**9
        assert fake.amdsmi_get_energy_count(h) == e1  # deterministic at a given time
        fake.throttle(1, ppt=0.25)
        fake.now = 110.0
        m1 = fake.amdsmi_get_gpu_metrics_info(h)
        ticks = m1["accumulation_counter"] - m0["accumulation_counter"]
        pviol = (m1["ppt_residency_acc"] - m0["ppt_residency_acc"]) * 100 / ticks
        assert 20 < pviol < 25  # 25 % of the last 100 of 110 s
        assert m1["throttle_status"] is True
        assert m1["xgmi_read_data_acc"][0] > m0["xgmi_read_data_acc"][0]
        assert m1["pcie_replay_count_acc"] > m0["pcie_replay_count_acc"]
        v = fake.amdsmi_get_violation_status(h)
        assert v["per_ppt_pwr"] == 25 and v["active_ppt_pwr"] is True
        assert v["acc_ppt_pwr"] == m1["ppt_residency_acc"]
        assert fake.amdsmi_get_gpu_activity(h) == fake.amdsmi_get_gpu_activity(h)


def test_slow_calls_are_recorded_not_slept() -> None:
    fake = FakeAmdSmi(cards=2)
    with session(fake) as (h0, h1):
        fake.amdsmi_get_gpu_metrics_info(h1)
        fake.amdsmi_get_violation_status(h1)
        fake.amdsmi_get_gpu_pci_throughput(h0)
    assert ("amdsmi_get_violation_status", 1) in fake.calls
    assert fake.calls[0] == ("amdsmi_init", None)
    assert fake.call_count("amdsmi_get_gpu_pci_throughput") == 1
    assert fake.call_count("amdsmi_get_gpu_metrics_info", 0) == 0
    assert fake.simulated_seconds == pytest.approx(1.1)


# -- events ----------------------------------------------------------------------------------

def test_one_read_returns_every_readers_events() -> None:
    fake = FakeAmdSmi(cards=2, version="7.0")
    evt = fake.AmdSmiEvtNotificationType
    with session(fake) as (h0, h1):
        r0 = fake.AmdSmiEventReader(h0, [evt.GPU_PRE_RESET, evt.GPU_POST_RESET])
        r1 = fake.AmdSmiEventReader(h1, [evt.THERMAL_THROTTLE])
        assert fake.emit(1, "THERMAL_THROTTLE", "throttled now")
        assert fake.emit(0, "GPU_PRE_RESET", "job hang on ring gfx")
        assert not fake.emit(1, "GPU_PRE_RESET", "not subscribed")
        events = r0.read(100)
        assert [(e["event"], e["message"]) for e in events] == [
            ("THERMAL_THROTTLE", "throttled"), ("GPU_PRE_RESET", "job")]  # first token only
        assert isinstance(events[0]["processor_handle"], ctypes.c_void_p)
        assert events[0]["processor_handle"].value == h1.value
        fake.emit(0, "GPU_POST_RESET", "x" * 100)
        assert r1.read(100)[0]["message"] == "x" * 63
        r0.stop()
        r1.stop()
    fake.assert_clean()


def test_read_times_out_with_no_data_and_wakes_on_emit() -> None:
    fake = FakeAmdSmi(cards=1)
    evt = fake.AmdSmiEvtNotificationType
    with session(fake) as (h,), fake.AmdSmiEventReader(h, [evt.GPU_PRE_RESET]) as reader:
        e = error(fake, reader.read, 20)
        assert type(e) is fake.AmdSmiLibraryException and e.err_code == 40  # NO_DATA
        got: list[Any] = []
        thread = threading.Thread(target=lambda: got.extend(reader.read(10_000)))
        thread.start()
        wait_for(lambda: fake.calls_in_flight() == 1, what="the read to wait")
        fake.emit(0, "GPU_PRE_RESET", "RAS error")
        thread.join(5)
        assert [g["event"] for g in got] == ["GPU_PRE_RESET"]
    assert fake.open_readers() == 0
    fake.assert_clean()


def test_page_fault_events_under_the_7_0_enum_bug() -> None:
    fake = FakeAmdSmi(cards=1, version="7.0")
    evt = fake.AmdSmiEvtNotificationType
    with session(fake) as (h,):
        reader = fake.AmdSmiEventReader(h, list(evt))
        assert not fake.emit(0, "PAGE_FAULT_START", "start")  # bit 6 cannot be asked for
        assert fake.emit(0, "PAGE_FAULT_END", "end")
        assert [(e["event"], e["message"]) for e in reader.read(50)] == [
            ("PAGE_FAULT_START", "end")]
        reader.stop()


def test_6_4_events_carry_the_handle_as_an_int() -> None:
    fake = FakeAmdSmi(cards=1, version="6.4")
    evt = fake.AmdSmiEvtNotificationType
    with session(fake) as (h,):
        reader = fake.AmdSmiEventReader(h, [evt.RING_HANG])
        fake.emit(0, "RING_HANG", "gfx")
        (event,) = reader.read(50)
        assert event["event"] == "RING_HANG" and event["processor_handle"] == h.value
        with pytest.raises(ValueError, match="C events"):
            fake.emit(0, "PROCESS_START", "")
        reader.stop()


def test_reader_misuse_is_reported() -> None:
    fake = FakeAmdSmi(cards=1)
    evt = fake.AmdSmiEvtNotificationType
    fake.amdsmi_init()
    (h,) = fake.amdsmi_get_processor_handles()
    with pytest.raises(fake.AmdSmiParameterException):
        fake.AmdSmiEventReader(h, [3])
    fake.fail("amdsmi_init_gpu_event_notification", 2, times=1)
    assert error(fake, fake.AmdSmiEventReader, h, [evt.VMFAULT]).err_code == 2
    fake.AmdSmiEventReader(h, [evt.VMFAULT])
    with pytest.raises(AssertionError, match="never stopped"):
        fake.assert_clean()
    fake.amdsmi_shut_down()
    with pytest.raises(AssertionError, match=r"reader.*not stopped"):
        fake.assert_clean()


# -- hung calls ------------------------------------------------------------------------------

def test_block_holds_a_call_until_released() -> None:
    fake = FakeAmdSmi(cards=2)
    fake.amdsmi_init()
    h0, h1 = fake.amdsmi_get_processor_handles()
    gate = fake.block("amdsmi_get_gpu_metrics_info", handle_index=1)
    assert fake.amdsmi_get_gpu_metrics_info(h0)  # another handle is not held
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(fake.amdsmi_get_gpu_metrics_info(h1)))
    thread.start()
    assert fake.entered("amdsmi_get_gpu_metrics_info").wait(5)
    assert fake.calls_in_flight() == 1 and not result
    with pytest.raises(AssertionError, match="in flight"):
        fake.amdsmi_shut_down()
    gate.set()
    thread.join(5)
    assert result and not thread.is_alive()
    fake.amdsmi_shut_down()
    with pytest.raises(AssertionError, match="in flight"):
        fake.assert_clean()


# -- no ROCm -----------------------------------------------------------------------------------

def test_import_failure_prints_to_stdout_then_raises_key_error(monkeypatch: Any) -> None:
    monkeypatch.delenv("ROCM_PATH", raising=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(KeyError) as info:
        import_failure()
    assert info.value.args == ("libamd_smi.so",)
    assert out.getvalue() == (
        "/opt/rocm/lib/libamd_smi.so: cannot open shared object file: No such file or directory\n"
        "Unable to find libamd_smi.so library try installing amd-smi-lib from your package "
        "manager\n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(KeyError):
        FakeAmdSmi().missing_library()
    assert "Unable to find libamd_smi.so" in out.getvalue()


def test_a_real_import_fails_like_a_host_without_rocm(capsys: Any) -> None:
    with amdsmi_import_fails(), pytest.raises(KeyError, match=r"libamd_smi\.so"):
        importlib.import_module("amdsmi")
    captured = capsys.readouterr()
    assert "Unable to find libamd_smi.so" in captured.out and captured.err == ""
    fake = FakeAmdSmi()
    with fake.installed():
        assert importlib.import_module("amdsmi") is fake
