"""Xid and bus events: the kernel-log follower with its persisted cursor, and the counting path.

The kernel log here is a file of kmsg records the test appends to; waiting is a poll with a
deadline on the counters, never a sleep.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from conftest import wait_for
from fakes import FakeBackend

from exporter.backends.base import BackendEvent
from exporter.events.kmsg import RecordFile
from exporter.events.watcher import EventWatcher

BUS = "00000000:3b:00.0"
GPUS = {BUS: (0, "GPU-aaaa"), "GPU-aaaa": (0, "GPU-aaaa")}
XID79 = ("NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, "
         "GPU has fallen off the bus.")
XID13 = "NVRM: Xid (PCI:0000:3b:00): 13, pid=4242, name=python3, Graphics Exception: ESR 0x5"


def record(seq: int, message: str) -> str:
    return f"3,{seq},{seq * 1000},-;{message}\n"


class Log:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text("")

    def write(self, *records: str) -> None:
        with self.path.open("a") as f:
            f.writelines(records)


@pytest.fixture
def kmsg(tmp_path: Path) -> Log:
    return Log(tmp_path / "kmsg")


def _watcher(kmsg: Log, state: Path | None, **kw) -> EventWatcher:
    w = EventWatcher(lambda: GPUS, state, RecordFile(kmsg.path), current_boot=lambda: "boot-1",
                     **kw)
    w.start()
    wait_for(lambda: w.sources.get("kmsg") is not None, what="the follower to open the log")
    return w


def _xids(w: EventWatcher) -> dict[tuple[str, ...], float]:
    return {tuple(v for _, v in r.labels): r.value for r in w.rows()
            if r.family == "gpu_xid_errors_total"}


def test_live_records_are_counted_with_their_catalog_action(kmsg: Log, tmp_path: Path) -> None:
    w = _watcher(kmsg, tmp_path / "state")
    try:
        kmsg.write(record(100, XID79), record(101, "usb 1-1: new device"), record(102, XID13))
        wait_for(lambda: len(_xids(w)) == 2, what="two Xids counted")
        counts = _xids(w)
        assert counts[("0", "GPU-aaaa", "79", "reboot_node")] == 1
        assert counts[("0", "GPU-aaaa", "13", "restart_app")] == 1
        assert w.state.seq == 102
    finally:
        w.stop()


def test_a_restart_resumes_without_losing_or_recounting(kmsg: Log, tmp_path: Path) -> None:
    state = tmp_path / "state"
    w = _watcher(kmsg, state)
    kmsg.write(record(100, XID13))
    wait_for(lambda: _xids(w), what="the first Xid")
    w.stop()
    kmsg.write(record(101, XID13))  # written while the daemon was down
    w = _watcher(kmsg, state)
    try:
        wait_for(lambda: w.state.seq == 101, what="the follower to catch up")
        assert _xids(w)[("0", "GPU-aaaa", "13", "restart_app")] == 2  # 100 once, 101 once
        kmsg.write(record(102, XID13))
        wait_for(lambda: _xids(w)[("0", "GPU-aaaa", "13", "restart_app")] == 3,
                 what="a live record after the restart")
        assert w.state.lost == 0
    finally:
        w.stop()


def test_without_state_it_starts_at_the_present(kmsg: Log) -> None:
    kmsg.write(record(1, XID13))  # old news
    w = _watcher(kmsg, None)
    try:
        kmsg.write(record(2, XID79))
        wait_for(lambda: _xids(w), what="the new Xid")
        assert list(_xids(w)) == [("0", "GPU-aaaa", "79", "reboot_node")]
    finally:
        w.stop()


def test_a_wrapped_ring_is_counted_as_lost_not_fatal(kmsg: Log, tmp_path: Path) -> None:
    state = tmp_path / "state"
    w = _watcher(kmsg, state)
    kmsg.write(record(100, XID13))
    wait_for(lambda: _xids(w), what="the first Xid")
    w.stop()
    kmsg.path.write_text(record(150, XID13))  # 101..149 were overwritten meanwhile
    w = _watcher(kmsg, state)
    try:
        wait_for(lambda: w.state.seq == 150, what="the follower to read on")
        assert w.state.lost == 49
        assert _xids(w)[("0", "GPU-aaaa", "13", "restart_app")] == 2
    finally:
        w.stop()


class EpipeOnce(RecordFile):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.raised = False

    def read(self):
        if not self.raised and self.path.stat().st_size:
            self.raised = True
            raise OSError(errno.EPIPE, os.strerror(errno.EPIPE))
        return super().read()


def test_epipe_from_the_ring_is_counted_and_reading_goes_on(kmsg: Log) -> None:
    w = EventWatcher(lambda: GPUS, None, EpipeOnce(kmsg.path), current_boot=lambda: "b")
    w.start()
    try:
        wait_for(lambda: w.sources.get("kmsg") is not None, what="the follower to open the log")
        kmsg.write(record(5, XID13))
        wait_for(lambda: _xids(w), what="the Xid after EPIPE")
        assert w.state.lost == 1
    finally:
        w.stop()


def test_an_unreadable_log_falls_back_to_vendor_events(tmp_path: Path) -> None:
    backend = FakeBackend(gpus=1)
    delivered = []

    def poll(timeout: float) -> list[BackendEvent]:
        if delivered:
            return []
        delivered.append(1)
        return [BackendEvent("GPU-aaaa", "xid", 48, "DBE")]

    backend.poll_events = poll  # type: ignore[method-assign]
    w = EventWatcher(lambda: GPUS, None, RecordFile(tmp_path / "missing"),
                     current_boot=lambda: "b")
    w.start([backend])
    try:
        wait_for(lambda: _xids(w), what="the vendor event to be counted")
        assert _xids(w) == {("0", "GPU-aaaa", "48", "reset_gpu"): 1}
        up = {r.labels[0][1]: r.value for r in w.rows()
              if r.family == "gpu_exporter_event_source_up"}
        assert up == {"kmsg": 0.0, "fake_events": 1.0}
    finally:
        w.stop()


def test_an_address_no_gpu_has_is_still_counted(kmsg: Log) -> None:
    w = _watcher(kmsg, None)
    try:
        kmsg.write(record(7, "NVRM: Xid (PCI:0000:99:00): 31, pid=1, name=x, MMU Fault"))
        wait_for(lambda: _xids(w), what="the Xid of an unknown GPU")
        assert list(_xids(w)) == [("", "PCI:00000000:99:00.0", "31", "restart_app")]
    finally:
        w.stop()


def test_malformed_and_binary_records_never_stop_the_reader(kmsg: Log) -> None:
    w = _watcher(kmsg, None)
    try:
        with kmsg.path.open("ab") as f:
            f.write(b"\xff\xfe garbage\n3,8,1,-;NVRM: Xid (PCI:0000:3b:00): \n"
                    b"3,9,1,-;NVRM: Xid trunc\n")
        kmsg.write(record(10, XID13))
        wait_for(lambda: _xids(w), what="the good record after the bad ones")
        assert w.state.unparsed >= 1
    finally:
        w.stop()


def test_an_unwritable_state_dir_keeps_counting_in_memory(kmsg: Log, tmp_path: Path) -> None:
    state = tmp_path / "not-a-directory"
    state.write_text("")  # unwritable as a directory, for root too
    w = _watcher(kmsg, state)
    try:
        kmsg.write(record(1, XID13))
        wait_for(lambda: _xids(w), what="the Xid")
        w._save(force=True)  # the follower may be saving too: either one reports the error
        wait_for(lambda: w.store.error, what="the write error")
    finally:
        w.stop()


def test_a_new_boot_reads_the_whole_ring_and_keeps_the_counts(kmsg: Log, tmp_path: Path) -> None:
    state = tmp_path / "state"
    w = _watcher(kmsg, state)
    kmsg.write(record(500, XID13))
    wait_for(lambda: _xids(w), what="the first Xid")
    w.stop()
    kmsg.path.write_text(record(0, XID13) + record(1, XID79))  # after a reboot
    w = EventWatcher(lambda: GPUS, state, RecordFile(kmsg.path), current_boot=lambda: "boot-2")
    w.start()
    try:
        wait_for(lambda: w.state.seq == 1, what="the new boot's records")
        counts = _xids(w)
        assert counts[("0", "GPU-aaaa", "13", "restart_app")] == 2
        assert counts[("0", "GPU-aaaa", "79", "reboot_node")] == 1
    finally:
        w.stop()


def test_a_first_start_saves_where_the_log_was(kmsg: Log, tmp_path: Path) -> None:
    """Without state the daemon starts at the present, but remembers where that was: an Xid
    logged while it is down is counted after a restart."""
    kmsg.write(record(40, XID13), record(41, XID13))  # before the first start: old news
    state = tmp_path / "state"
    w = _watcher(kmsg, state)
    assert _xids(w) == {} and w.state.seq == 41
    w.stop()
    kmsg.write(record(42, XID79))  # while the daemon is down
    w = _watcher(kmsg, state)
    try:
        wait_for(lambda: _xids(w), what="the Xid logged while down")
        assert _xids(w) == {("0", "GPU-aaaa", "79", "reboot_node"): 1}
    finally:
        w.stop()


def test_one_gpu_named_two_ways_is_one_series_with_the_counts_summed(kmsg: Log) -> None:
    """A vendor event names the GPU by uuid, the kernel log by PCI address: one series each
    for the same labels would be a duplicate the renderer drops (a counter going back)."""
    w = _watcher(kmsg, None)
    try:
        w.count("GPU-aaaa", 13, 1000.0)  # from NVML events while the log was down
        kmsg.write(record(1, XID13))  # later, from the log
        wait_for(lambda: _xids(w).get(("0", "GPU-aaaa", "13", "restart_app")) == 2,
                 what="both counted into one series")
        assert len(_xids(w)) == 1
        assert w.xid_counts() == {"GPU-aaaa": {(13, "restart_app"): 2}}
    finally:
        w.stop()


@pytest.mark.parametrize("content", ["[]", "1", '{"seq": "x"}', '{"counts": {"a|1|b": "x"}}',
                                     '{"recent": [[1, 2]]}'])
def test_an_event_state_of_the_wrong_shape_starts_at_the_present(tmp_path: Path,
                                                                 content: str) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "kmsg-state.json").write_text(content)
    from exporter.events.state import EventState, StateStore

    assert StateStore(state).load() == EventState()
