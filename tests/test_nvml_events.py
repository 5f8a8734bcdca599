"""NVML events: registered on every GPU, read by the events thread, never freed or shut down
while that thread is inside nvmlEventSetWait, and counted only when the kernel log is down."""

from __future__ import annotations

import threading
from pathlib import Path

import pynvml
from conftest import wait_for
from nvml_fake import FIXTURE_DIR, FakeNvml

from exporter.backends.nvml import NvmlBackend
from exporter.events.kmsg import RecordFile
from exporter.events.watcher import EventWatcher

H200 = FIXTURE_DIR / "h200x2_580.json"


def _backend() -> tuple[FakeNvml, NvmlBackend, list]:
    fake = FakeNvml.from_fixture(H200)
    backend = NvmlBackend(nvml=fake)
    backend.start()
    return fake, backend, list(backend.devices())


def test_an_xid_event_names_its_gpu_and_code() -> None:
    fake, backend, devices = _backend()
    try:
        assert backend.poll_events(0.05) == []  # nothing happened: a timeout, not an error
        fake.emit("dev1", pynvml.nvmlEventTypeXidCriticalError, 79)
        events = backend.poll_events(1.0)
        assert [(e.uuid, e.kind, e.code) for e in events] == [(devices[1].uuid, "xid", 79)]
        fake.emit("dev0", pynvml.nvmlEventTypeDoubleBitEccError)
        assert [e.kind for e in backend.poll_events(1.0)] == ["ecc_double_bit"]
    finally:
        backend.stop()
    assert fake.violations == []


def test_stop_waits_for_the_events_thread_to_leave_nvml() -> None:
    fake, backend, _ = _backend()
    inside = threading.Event()
    original = fake.nvmlEventSetWait_v2

    def wait(*args):
        inside.set()
        return original(*args)

    fake.nvmlEventSetWait_v2 = wait  # type: ignore[method-assign]
    poller = threading.Thread(target=lambda: backend.poll_events(0.5))
    poller.start()
    wait_for(inside.is_set, what="the events thread to be inside nvmlEventSetWait")
    backend.stop()  # must wait for it: shutting NVML down under it is what the fake refuses
    poller.join(5)
    assert fake.violations == [] and fake.shutdown_count == 1
    assert backend.poll_events(0.01) == []  # after stop: nothing to wait on, no NVML call


def test_nvml_events_are_counted_only_while_the_kernel_log_is_down(tmp_path: Path) -> None:
    fake, backend, devices = _backend()
    ids = {d.uuid: (d.index, d.uuid) for d in devices}
    log_file = tmp_path / "kmsg"
    log_file.write_text("")
    up = EventWatcher(lambda: ids, None, RecordFile(log_file), current_boot=lambda: "b")
    up.start([backend])
    try:
        wait_for(lambda: up.sources.get("kmsg") is not None, what="the log to open")
        fake.emit("dev0", pynvml.nvmlEventTypeXidCriticalError, 48)
        wait_for(lambda: not fake._f_queue, what="the event to be read")
        assert not [r for r in up.rows() if r.family == "gpu_xid_errors_total"]
    finally:
        up.stop()
    down = EventWatcher(lambda: ids, None, RecordFile(tmp_path / "missing"),
                        current_boot=lambda: "b")
    down.start([backend])
    try:
        fake.emit("dev0", pynvml.nvmlEventTypeXidCriticalError, 48)
        wait_for(lambda: [r for r in down.rows() if r.family == "gpu_xid_errors_total"],
                 what="the NVML event counted")
        (row,) = [r for r in down.rows() if r.family == "gpu_xid_errors_total"]
        assert dict(row.labels) == {"gpu": "0", "uuid": devices[0].uuid, "xid": "48",
                                    "action": "reset_gpu"}
    finally:
        down.stop()
        backend.stop()
    assert fake.violations == []


def test_stop_is_not_starved_by_a_busy_events_thread() -> None:
    """The watcher polls in a loop; found on an H100: stop() waited ~60 s for the lock."""
    fake, backend, _ = _backend()
    running = threading.Event()
    halt = threading.Event()

    def loop() -> None:
        while not halt.is_set():
            running.set()
            backend.poll_events(0.05)

    poller = threading.Thread(target=loop, daemon=True)
    poller.start()
    wait_for(running.is_set, what="the events loop")
    stopper = threading.Thread(target=backend.stop)
    stopper.start()
    wait_for(lambda: not stopper.is_alive(), timeout=5, what="stop() to get through")
    halt.set()
    poller.join(5)
    assert fake.violations == [] and fake.shutdown_count == 1
