"""Sampler isolation: a hung call, a lost GPU, unsupported fields, failing fields.

Timing is tested by order of events: a cycle completes while a fake call is still blocked on
an Event; durations are not asserted.
"""

from __future__ import annotations

import threading

import pytest
from conftest import wait_for
from fakes import FakeBackend

from exporter.catalog import Tier
from exporter.sampler import Sampler


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend(gpus=3)


@pytest.fixture
def sampler(fake: FakeBackend):
    s = Sampler([(fake, fake.devices())], fast_interval=60, slow_interval=60, call_deadline=0.2)
    s.start(schedule=False)
    yield s
    for gate in fake.gates.values():
        gate.set()
    s.stop()


def _up(view) -> dict[int, bool]:
    return {g.index: g.up for g in view.gpus}


def _families(view, index: int) -> set[str]:
    return {s.family for s in view.gpus[index].samples}


def test_first_cycle_reads_every_tier(sampler: Sampler) -> None:
    view = sampler.run_cycle((Tier.FAST,))  # a first pass is always full
    assert _up(view) == {0: True, 1: True, 2: True}
    assert {"gpu_info", "gpu_utilization_ratio", "gpu_energy_joules_total"} <= _families(view, 0)


def test_hung_call_marks_only_that_gpu_down_and_cycles_do_not_queue(
    sampler: Sampler, fake: FakeBackend
) -> None:
    sampler.run_cycle()
    gate = fake.block(1, "utilization")
    threads_before = threading.active_count()

    view = sampler.run_cycle((Tier.FAST,))
    assert not gate.is_set() and fake.entered[(1, "utilization")].is_set()
    assert _up(view) == {0: True, 1: False, 2: True}
    assert "deadline" in view.gpus[1].down_reason
    # No stale values: only the descriptive series survive for the down GPU.
    assert _families(view, 1) == {"gpu_info"}
    assert view.errors[("fast", "1", "deadline")] == 1

    # The next cycle completes while the call is still blocked, without dispatching GPU 1 again.
    reads_of_others = fake.reads[(0, "utilization")]
    view = sampler.run_cycle((Tier.FAST,))
    assert not gate.is_set()
    assert fake.reads[(0, "utilization")] == reads_of_others + 1
    assert fake.reads[(1, "utilization")] == 1 + 1  # first cycle + the blocked one, no more
    assert view.errors[("fast", "1", "stuck")] == 1
    assert threading.active_count() == threads_before, "a second worker was started"

    gate.set()
    del fake.gates[(1, "utilization")]
    wait_for(lambda: sampler.calls_in_flight() == 0, what="the blocked call to return")
    view = sampler.run_cycle((Tier.FAST,))
    assert _up(view) == {0: True, 1: True, 2: True}
    # Coming back re-reads every tier, so the slow values return at once.
    assert "gpu_energy_joules_total" in _families(view, 1)


def test_lost_gpu_goes_down_and_comes_back(sampler: Sampler, fake: FakeBackend) -> None:
    sampler.run_cycle()
    fake.lost.add(2)
    view = sampler.run_cycle((Tier.FAST,))
    assert _up(view) == {0: True, 1: True, 2: False}
    assert view.gpus[2].down_reason.startswith("lost")
    assert _families(view, 2) == {"gpu_info"}
    fake.lost.clear()
    view = sampler.run_cycle((Tier.FAST,))
    assert _up(view)[2] is True


def test_unsupported_field_is_remembered_not_retried(sampler: Sampler, fake: FakeBackend) -> None:
    fake.unsupported.add((0, "memory"))
    sampler.run_cycle()
    for _ in range(3):
        view = sampler.run_cycle((Tier.FAST,))
    assert fake.reads[(0, "memory")] == 1
    assert "gpu_memory_used_bytes" not in _families(view, 0)
    assert "gpu_memory_used_bytes" in _families(view, 1)
    assert view.gpus[0].up


def test_a_failing_field_drops_its_values_but_not_the_gpu(fake: FakeBackend) -> None:
    calls = {"n": 0}

    def broken(_dev):
        calls["n"] += 1
        raise RuntimeError("driver said something odd")

    fields = fake.fields
    fake.fields = lambda dev: [  # type: ignore[method-assign]
        f if f.name != "memory" or dev.index != 2 else type(f)(f.name, f.tier, f.collector, broken)
        for f in fields(dev)
    ]
    warned: list[str] = []
    s = Sampler([(fake, fake.devices())], fast_interval=60, slow_interval=60, call_deadline=1,
                warn_once=lambda key, *a, **k: warned.append(key))
    s.start(schedule=False)
    try:
        s.run_cycle()
        view = s.run_cycle((Tier.FAST,))
    finally:
        s.stop()
    assert view.gpus[2].up
    assert "gpu_memory_used_bytes" not in _families(view, 2)
    assert view.errors[("fast", "2", "RuntimeError")] == 2
    assert calls["n"] == 2  # an error is retried next cycle, unlike Unsupported
    assert len(warned) == 2 and len(set(warned)) == 1  # same key: logged once, counted twice


def test_disabled_collector_is_never_read(fake: FakeBackend) -> None:
    s = Sampler([(fake, fake.devices())], fast_interval=60, slow_interval=60, call_deadline=1,
                collector_enabled=lambda name: name != "memory")
    s.start(schedule=False)
    try:
        view = s.run_cycle()
    finally:
        s.stop()
    assert (0, "memory") not in fake.reads
    assert "gpu_memory_used_bytes" not in _families(view, 0)


def test_scheduler_runs_cycles_and_publishes(fake: FakeBackend) -> None:
    views = []
    published = threading.Event()

    def on_cycle(view):
        views.append(view)
        if len(views) >= 3:
            published.set()

    s = Sampler([(fake, fake.devices())], fast_interval=0.01, slow_interval=0.05,
                call_deadline=1, on_cycle=on_cycle)
    s.start()
    try:
        assert published.wait(10)
    finally:
        s.stop()
    assert [v.cycle for v in views[:3]] == [1, 2, 3]
    assert set(views[0].tier_completed_at) == {Tier.IDENTITY, Tier.FAST, Tier.SLOW}
