"""The scenario file format of the simulated node: validation messages and the query API."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from exporter.backends.sim import Scenario, ScenarioError, load_scenario
from exporter.backends.sim.scenario import parse_scenario
from exporter.config import ConfigError

SCENARIOS = Path(__file__).resolve().parents[1] / "exporter" / "backends" / "sim" / "scenarios"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "faults.yaml"
    path.write_text(text)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"scenario {path}: ")
    return message.removeprefix(f"scenario {path}: ")


# --- the shipped examples -----------------------------------------------------------------------
def test_healthy_example_has_no_faults() -> None:
    assert load_scenario(SCENARIOS / "healthy.yaml").faults == []


def test_demo_example_loads_and_fits_eight_gpus() -> None:
    demo = load_scenario(SCENARIOS / "faults-demo.yaml")
    demo.check_gpus(8)
    demo.check_links(18, "h100-sxm")
    kinds = {f.kind for f in demo.faults}
    assert {"lost", "probe", "clock_event", "xid"} <= kinds
    # The DESIGN.md demo: GPU 3 falls off the bus at 30 s, GPU 2's H2D is 20 GB/s,
    # GPU 5 throttles for HW thermal.
    (lost,) = demo.active(3, "lost", 30.0)
    assert lost.fell_off_bus and lost.at == 30.0
    assert demo.probe_values(2, "pcie_bandwidth", 0.0) == {"h2d_bytes_per_second": 20e9}
    (hot,) = demo.active(5, "clock_event", 61.0)
    assert hot.reason == "hw_thermal_slowdown"


# --- one-line errors ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("faults:\n  - {gpu: 1, kind: lsot}\n", "faults[0].kind: unknown fault kind 'lsot'"),
        ("faults:\n  - {gpu: 1}\n", "faults[0].kind: missing"),
        ("faults:\n  - {gpu: 0, kind: busy}\n  - {gpu: 3, kind: xid}\n",
         "faults[1].xid: required, missing"),
        ("faults:\n  - {gpu: 0, kind: busy}\n  - {gpu: 0, kind: busy}\n"
         "  - {gpu: 3, kind: xid, xid: abc}\n",
         "faults[2].xid: Input should be a valid integer (got 'abc')"),
        ("faults:\n  - {gpu: 0, kind: pcie_replays, count: -5}\n",
         "faults[0].count: Input should be greater than or equal to 1 (got -5)"),
        ("faults:\n  - {gpu: 0, kind: xid, xid: 79, xdi: 3}\n",
         "faults[0].xdi: unknown key; did you mean 'xid'?"),
        ("faults:\n  - {gpu: 0, kind: xid, xid: 79, duration: 5s}\n",
         "faults[0].duration: unknown key"),
        ("faults:\n  - {gpu: -1, kind: busy}\n", "faults[0].gpu: must be a GPU index"),
        ("faults:\n  - {gpu: [0, x], kind: busy}\n", "faults[0].gpu: must be a GPU index"),
        ("faults:\n  - {gpu: 0, kind: busy, duration: 5x}\n",
         "faults[0].duration: must be a duration such as 5s"),
        ("faults:\n  - {gpu: 0, kind: busy, duration: 0}\n",
         "faults[0].duration: Input should be greater than 0"),
        ("faults:\n  - {gpu: 0, kind: busy, at: -3}\n",
         "faults[0].at: Input should be greater than or equal to 0"),
        ("faults:\n  - {gpu: 0, kind: pcie_downtrain}\n",
         "faults[0]: needs generation, width or both"),
        ("faults:\n  - {gpu: 0, kind: clock_event, reason: hot}\n", "faults[0].reason: Input"),
        ("faults:\n  - {gpu: 0, kind: recovery_action, action: 7}\n",
         "faults[0].action: Input should be less than or equal to 4"),
        ("faults:\n  - {gpu: 0, kind: xid, xid: '79'}\n", "faults[0].xid: Input should be"),
        ("faults:\n  - 5\n", "faults[0]: Input should be a valid dictionary"),
        ("faults: {gpu: 1}\n", "faults: must be a list of faults"),
        ("fautls: []\n", "fautls: unknown key; did you mean 'faults'?"),
        ("faults:\n  - {gpu: 0, kind: xid, xid: 1}\n  - {gpu: 0}\n  - {gpu: 0, kind: x}\n",
         "(and 1 more problem(s))"),
    ],
)
def test_bad_scenario_is_one_line_naming_the_key(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error_of(write(tmp_path, text))


def test_not_yaml(tmp_path: Path) -> None:
    assert error_of(write(tmp_path, "faults: [a, b\n")).startswith("not valid YAML at line 2")


def test_not_a_mapping(tmp_path: Path) -> None:
    assert "must be a mapping with a 'faults' list, not list" in error_of(
        write(tmp_path, "- {gpu: 0, kind: busy}\n"))


def test_missing_file(tmp_path: Path) -> None:
    assert error_of(tmp_path / "nope.yaml") == "not found"


def test_empty_file_is_an_empty_scenario(tmp_path: Path) -> None:
    assert load_scenario(write(tmp_path, "# nothing yet\n")).faults == []


def test_scenario_error_is_a_configuration_error() -> None:
    # The command line prints a ConfigError's one line and exits 2: scenarios get that for free.
    assert issubclass(ScenarioError, ConfigError)


def test_gpu_out_of_range_names_the_fault(tmp_path: Path) -> None:
    scenario = load_scenario(write(
        tmp_path, "faults:\n  - {gpu: 0, kind: busy}\n  - {gpu: [1, 9], kind: busy}\n"))
    with pytest.raises(ScenarioError) as info:
        scenario.check_gpus(8)
    assert str(info.value) == (
        f"scenario {tmp_path / 'faults.yaml'}: faults[1].gpu: 9, but the simulated node has "
        "8 GPUs")
    scenario.check_gpus(10)


def test_nvlink_link_out_of_range() -> None:
    scenario = parse_scenario({"faults": [{"gpu": 0, "kind": "nvlink_down", "link": 12}]}, "s")
    with pytest.raises(ScenarioError, match=r"faults\[0\].link: 12, but the simulated a100-sxm "
                                            r"has 12 NVLink links \(0-11\)"):
        scenario.check_links(12, "a100-sxm")
    scenario.check_links(18, "h100-sxm")
    scenario.check_links(0, "mi300x")  # no NVLink: the fault has nothing to move


# --- values and the query API -------------------------------------------------------------------
def test_times_durations_and_numbers() -> None:
    scenario = parse_scenario({"faults": [
        {"gpu": 2, "kind": "probe", "at": "1m30s", "duration": "1h", "probe": "pcie_bandwidth",
         "values": {"h2d_bytes_per_second": "20e9"}},  # what PyYAML makes of 20e9
        {"gpu": 0, "kind": "busy", "at": 2.5},
    ]})
    probe, busy = scenario.faults
    assert (probe.at, probe.duration, probe.end) == (90.0, 3600.0, 3690.0)
    assert probe.values == {"h2d_bytes_per_second": 20e9}
    assert busy.at == 2.5 and busy.duration is None and math.isinf(busy.end)


def test_active_windows() -> None:
    scenario = parse_scenario({"faults": [
        {"gpu": 1, "kind": "lost", "at": 10, "duration": 20},
        {"gpu": [3, 4], "kind": "busy", "at": "5s"},
    ]})
    assert scenario.active(1, "lost", 9.99) == []
    assert len(scenario.active(1, "lost", 10.0)) == 1  # the start is inside the window
    assert len(scenario.active(1, "lost", 29.99)) == 1
    assert scenario.active(1, "lost", 30.0) == []  # the end is not
    assert scenario.active(0, "lost", 15.0) == []  # other GPUs are untouched
    for gpu in (3, 4):  # a list of GPUs: the fault hits each
        assert scenario.active(gpu, "busy", 4.0) == []
        assert len(scenario.active(gpu, "busy", 1e9)) == 1  # no duration: sticky


def test_instant_events_count_what_happened_so_far() -> None:
    scenario = parse_scenario({"faults": [
        {"gpu": 0, "kind": "pcie_replays", "at": 40, "count": 2},
        {"gpu": 0, "kind": "pcie_replays", "at": 20, "count": 5},
        {"gpu": 0, "kind": "xid", "at": 30, "xid": 79},
    ]})
    assert scenario.instant_events(0, "pcie_replays", 19.0) == []
    assert [f.count for f in scenario.instant_events(0, "pcie_replays", 20.0)] == [5]
    assert [f.count for f in scenario.instant_events(0, "pcie_replays", 1e6)] == [5, 2]
    assert [f.xid for f in scenario.instant_events(0, "xid", 30.0)] == [79]
    assert scenario.active(0, "xid", 30.0) == []  # instant faults have no window


def test_probe_values_merge_and_expire() -> None:
    scenario = parse_scenario({"faults": [
        {"gpu": 2, "kind": "probe", "probe": "pcie_bandwidth", "duration": 60,
         "values": {"h2d_bytes_per_second": 20e9, "d2h_bytes_per_second": 25e9}},
        {"gpu": 2, "kind": "probe", "at": 10, "duration": 10, "probe": "pcie_bandwidth",
         "values": {"h2d_bytes_per_second": 1e9}},
        {"gpu": 2, "kind": "probe", "probe": "gemm", "values": {"flop_per_second": 1e12}},
    ]})
    assert scenario.probe_values(2, "pcie_bandwidth", 15.0) == {
        "h2d_bytes_per_second": 1e9, "d2h_bytes_per_second": 25e9}
    assert scenario.probe_values(2, "pcie_bandwidth", 30.0)["h2d_bytes_per_second"] == 20e9
    assert scenario.probe_values(2, "pcie_bandwidth", 60.0) == {}
    assert scenario.probe_values(1, "pcie_bandwidth", 30.0) == {}
    assert scenario.probe_values(2, "gemm", 1e6) == {"flop_per_second": 1e12}


def test_an_empty_scenario() -> None:
    scenario = Scenario()
    assert scenario.active(0, "lost", 0.0) == []
    scenario.check_gpus(1)
