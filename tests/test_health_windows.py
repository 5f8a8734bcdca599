"""The health verdict's building blocks, fed by hand: the time windows (what "sustained" and
"increased within" mean), the event rules on Occurrences, and how reasons merge. Times are
plain numbers: nothing here reads a clock."""

from __future__ import annotations

import pytest

from exporter.config import HealthSettings
from exporter.events.watcher import Occurrence
from exporter.health.events import contained_ecc, event_reasons
from exporter.health.verdict import GpuVerdict, Reason, Status, merge_reasons
from exporter.health.windows import BusyRun, CounterWindow, DutyWindow

H = HealthSettings()
NOW = 1_800_000_000.0


# --- DutyWindow ---------------------------------------------------------------------------------
def _duty(pattern: list[bool], step: float = 5.0, keep: float = 1800.0,
          counter: list[float] | None = None) -> DutyWindow:
    d = DutyWindow(keep)
    for i, active in enumerate(pattern):
        d.add(i * step, active, counter[i] if counter else None)
    return d


def test_duty_needs_most_of_the_window_before_it_judges() -> None:
    d = _duty([True] * 48)  # 235 s of history, all throttled
    assert d.fraction(235, 300) is None  # less than 80 % of the window seen
    d.add(240, True, None)
    assert d.fraction(240, 300) == 1.0


def test_duty_from_samples_is_the_share_of_time_active() -> None:
    d = _duty([i % 4 == 0 for i in range(61)])  # on for 5 s of every 20
    assert d.fraction(300, 300) == pytest.approx(0.25)


def test_duty_prefers_the_hardware_counter_between_samples() -> None:
    # The sampled bit is never caught on, but the counter says 150 of 300 s were throttled.
    d = _duty([False] * 61, counter=[i * 2.5 for i in range(61)])
    assert d.fraction(300, 300) == pytest.approx(0.5)


def test_duty_after_a_counter_reset_falls_back_to_samples() -> None:
    counter = [100.0 + i for i in range(31)] + [0.0] * 30
    d = _duty([True] * 30 + [False] * 31, counter=counter)
    assert d.fraction(300, 300) == pytest.approx(0.5)


def test_duty_keeps_only_its_longest_window() -> None:
    # Alternating states: every sample a change, so only pruning bounds the history.
    d = _duty([i % 2 == 0 for i in range(1000)], keep=300)
    assert d.points[0][0] >= (999 * 5) - 300 - 5 and len(d.points) <= 62
    assert d.fraction(999 * 5, 300) == pytest.approx(0.5, abs=0.02)


def test_duty_a_steady_run_costs_two_points_and_still_counts() -> None:
    d = _duty([True] * 1000, keep=300)
    assert len(d.points) == 2
    assert d.fraction(999 * 5, 300) == pytest.approx(1.0)
    # The run ends; each interval counts in the state sampled at its start.
    d.add(999 * 5 + 5, False, None)
    d.add(999 * 5 + 10, False, None)
    assert d.fraction(999 * 5 + 10, 300) == pytest.approx(295 / 300)


# --- CounterWindow ------------------------------------------------------------------------------
def _counter(values: list[float], step: float = 30.0, keep: float = 300.0) -> CounterWindow:
    c = CounterWindow(keep)
    for i, v in enumerate(values):
        c.add(i * step, v)
    return c


def test_counter_increase_within_the_window_and_when_it_began() -> None:
    c = _counter([4, 4, 4, 504, 504, 504])  # +500 at 90 s
    assert c.increase(150, 300) == (500, 90)


def test_counter_increase_leaves_the_window_once_it_is_older() -> None:
    c = _counter([4] * 4 + [504] * 10)  # +500 at 120 s, then unchanged
    assert c.increase(390, 300) == (500, 120)
    for t in range(420, 900, 30):
        c.add(t, 504)
    assert c.increase(870, 300) == (0, None)  # the increase is 750 s old
    assert len(c.points) <= 3, "an unchanged counter must not grow the history"


def test_counter_two_increases_count_within_the_window_only() -> None:
    values = [0] * 3 + [2] * 10 + [5] * 10  # +2 at 90 s, +3 at 390 s
    c = _counter(values, keep=3600)
    assert c.increase(22 * 30, 3600) == (5, 90)
    assert c.increase(22 * 30, 300) == (3, 390)


def test_counter_first_observation_is_the_baseline() -> None:
    c = _counter([7, 7, 9])
    assert c.increase(60, 3600) == (2, 60)  # errors before we started are not new


def test_counter_reset_starts_again_from_the_new_value() -> None:
    c = _counter([10, 10, 0, 0, 1])  # a GPU reset zeroed the volatile counter
    assert c.increase(120, 3600) == (1, 120)


# --- BusyRun ------------------------------------------------------------------------------------
def test_busy_run_counts_only_busy_time_and_idle_neither_adds_nor_breaks() -> None:
    b = BusyRun()
    for t in range(0, 30, 5):
        b.add(t, busy=True, condition=True)
    assert b.seconds == 25 and b.since == 0
    for t in range(30, 300, 5):
        b.add(t, busy=False, condition=True)  # idle: the link may slow down legitimately
    assert b.seconds == 25
    for t in range(300, 340, 5):
        b.add(t, busy=True, condition=True)
    assert b.seconds == 25 + 35 and b.since == 0
    b.add(340, busy=True, condition=False)  # busy at full link: starts over
    assert (b.seconds, b.since) == (0, None)


# --- event rules --------------------------------------------------------------------------------
def occ(xid: int | None, when: float, pid: int | None = None, event: str = "xid",
        action: str | None = None) -> Occurrence:
    from exporter.events.xid_catalog import lookup

    act = action if action is not None else (lookup(xid).action if xid else "")
    return Occurrence("GPU-a", event, xid, act, pid, f"p{pid}" if pid else None, when)


def names(reasons: list[Reason]) -> dict[str, str]:
    return {r.name: r.severity.label for r in merge_reasons(reasons)}


def test_fell_off_bus_event_and_xid_79_are_one_reason() -> None:
    got = event_reasons([occ(None, NOW - 5, event="fell_off_bus"), occ(79, NOW - 5)], NOW, H)
    assert names(got) == {"fell_off_bus": "fail"}


def test_held_actions_and_link_severity() -> None:
    got = event_reasons([occ(48, NOW - 10), occ(74, NOW - 10), occ(144, NOW - 10),
                         occ(9999, NOW - 10), occ(43, NOW - 10), occ(63, NOW - 10),
                         occ(13, NOW - 10, pid=1)], NOW, H)
    assert names(got) == {"xid_48": "fail", "xid_74": "fail", "xid_144": "warn",
                          "xid_9999": "warn"}


def test_hold_boundary() -> None:
    h = HealthSettings(xid_hold=600)
    assert names(event_reasons([occ(119, NOW - 600)], NOW, h)) == {"xid_119": "fail"}
    assert names(event_reasons([occ(119, NOW - 601)], NOW, h)) == {}


@pytest.mark.parametrize("pids, expected", [
    ([1, 2, 3], {"app_xid_recurring": "warn"}),
    ([1, 1, 1, 1], {}),
    ([None, None, None], {}),
    ([1, 2, None], {"app_xid_recurring": "warn"}),  # unnamed ones count as one process
    ([1, 2], {}),
])
def test_app_xid_recurrence_counts_distinct_processes(pids: list, expected: dict) -> None:
    got = event_reasons([occ(13, NOW - 60 * i, pid=p) for i, p in enumerate(pids)], NOW, H)
    assert names(got) == expected


def test_app_xid_window_is_its_own_not_the_holds() -> None:
    h = HealthSettings(xid_hold=300, app_xid_window=3600)
    app = [occ(31, NOW - 1200, pid=1), occ(31, NOW - 600, pid=2), occ(31, NOW, pid=3)]
    assert names(event_reasons(app, NOW, h)) == {"app_xid_recurring": "warn"}
    assert names(event_reasons(iter(app), NOW, h)) == {"app_xid_recurring": "warn"}


def test_contained_ecc_needs_94_and_no_uncontained_xid() -> None:
    assert contained_ecc([occ(94, NOW)], NOW - 10)
    assert not contained_ecc([occ(94, NOW), occ(95, NOW)], NOW - 10)
    assert not contained_ecc([occ(94, NOW), occ(48, NOW)], NOW - 10)
    assert not contained_ecc([occ(94, NOW - 20)], NOW - 10)  # outside the ECC window
    assert not contained_ecc([], NOW - 10)


# --- merging ------------------------------------------------------------------------------------
def test_merge_keeps_the_worst_then_earliest_and_sorts_worst_first() -> None:
    merged = merge_reasons([
        Reason("b", Status.WARN, "later warn", 20.0), Reason("b", Status.WARN, "early", 10.0),
        Reason("a", Status.WARN, "w", 5.0), Reason("a", Status.FAIL, "f", 30.0),
        Reason("c", Status.WARN, "c"),
    ])
    assert [(r.name, r.detail) for r in merged] == [("a", "f"), ("b", "early"), ("c", "c")]
    assert GpuVerdict(0, "GPU-a", merged).status is Status.FAIL
    assert GpuVerdict(0, "GPU-a", ()).status is Status.OK
