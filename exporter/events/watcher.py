"""Xid and bus events: from the kernel log (the source of truth) and the vendor's event API.

Every event goes through `count()`: one path for the kernel log, NVML events and the simulated
node. NVML events wake the kernel-log reader at once; they are counted themselves only while
the kernel log cannot be read (the driver writes every Xid to both, and counting both would
count twice). The simulated node has no kernel log, so its events are always counted.
`gpu_exporter_event_source_up` says which sources work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..backends.base import Backend, BackendEvent
from ..exposition import Row
from .kmsg import KmsgDevice, KmsgFollower, RecordSource
from .state import RECENT_MAX, EventState, StateStore, boot_id
from .xid_catalog import resolve_action
from .xid_parse import BusEvent, Unparsed, XidEvent, normalize_bus_id, parse_kmsg_record, parse_line

log = logging.getLogger(__name__)

SAVE_EVERY = 1.0  # seconds: a flood of records must not turn into a flood of fsyncs
GpuIds = Callable[[], dict[str, tuple[int, str]]]  # normalized bus id or uuid -> (index, uuid)


@dataclass(frozen=True)
class Occurrence:
    """One Xid or bus event as the health verdict sees it, resolved to its GPU."""

    uuid: str
    event: str  # "xid" or an event name such as "fell_off_bus"
    xid: int | None
    action: str
    pid: int | None
    process: str | None
    when: float  # unix time


class EventWatcher:
    def __init__(
        self,
        gpus: GpuIds,
        state_dir: Path | None,
        source: RecordSource | None = None,
        kmsg_enabled: bool = True,
        on_change: Callable[[], None] = lambda: None,
        wallclock: Callable[[], float] = time.time,
        current_boot: Callable[[], str] = boot_id,
    ) -> None:
        self.gpus, self.on_change, self.wallclock = gpus, on_change, wallclock
        self.store = StateStore(state_dir)
        self.state = self.store.load()
        boot = current_boot()
        cursor = self.state.seq
        if self.state.boot_id and self.state.boot_id != boot:
            cursor = -1  # a new boot: every record in the ring is new; counts carry on
            self.state.recent = []  # the reboot reset every GPU: old occurrences are settled
        self.state.boot_id = boot
        self._lock = threading.Lock()
        self._dirty = False
        # Xids counted from vendor events while the kernel log was down, by (uuid, xid): the
        # same Xids are in the log's backlog when it comes back, and are not counted again.
        self._covered: Counter[tuple[str, int]] = Counter()
        self._last_save = 0.0
        self.sources: dict[str, bool] = {}
        self.kmsg: KmsgFollower | None = None
        if kmsg_enabled:
            self.kmsg = KmsgFollower(source or KmsgDevice(), self._on_record, _parse_record,
                                     cursor, self._on_lost, self._on_kmsg_state,
                                     on_position=self._on_position, on_drained=self._save)
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self, backends: Iterable[Backend] = ()) -> None:
        if self.kmsg is not None:
            self.kmsg.start()  # a kernel log not wanted (simulated node) is not a source at all
        for backend in backends:
            self.add_backend(backend)

    def add_backend(self, backend: Backend) -> None:
        name = "sim_events" if backend.name == "sim" else f"{backend.name}_events"
        self.sources[name] = True
        thread = threading.Thread(target=self._poll, args=(backend, name), daemon=True,
                                  name=f"events-{backend.name}")
        self._threads.append(thread)
        thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self.kmsg is not None:
            self.kmsg.stop()
        for t in self._threads:
            t.join(2.0)
        self._save(force=True)

    # --- sources ---------------------------------------------------------------------------------
    def _poll(self, backend: Backend, name: str) -> None:
        while not self._stop.is_set():
            try:
                events = backend.poll_events(1.0)
            except Exception as e:  # a broken event API must not end the watcher
                self.sources[name] = False
                log.warning("event source failed", extra={"source": name, "error": str(e)})
                self._stop.wait(5.0)
                continue
            self.sources[name] = True
            for event in events:
                if self.kmsg is not None and self.kmsg.up:
                    self.kmsg.wake()  # the kernel log has it too: count it from there
                if backend.name == "sim" or self.kmsg is None or not self.kmsg.up:
                    self._count_backend_event(event)
                    if self.kmsg is not None and event.kind == "xid" and event.code is not None:
                        with self._lock:
                            self._covered[(event.uuid, event.code)] += 1

    def _on_kmsg_state(self, ok: bool, reason: str) -> None:
        self.sources["kmsg"] = ok
        if ok:
            with self._lock:
                self._covered.clear()  # said after the backlog was read: what it covered is done
            self._save(force=True)  # the cursor learned on opening: a restart resumes there
        if not ok:
            log.warning("kernel log not readable; counting vendor events instead",
                        extra={"reason": reason})
        self.on_change()

    def _on_position(self, seq: int) -> None:
        """A record from before our start, skipped; its number is the cursor to save."""
        with self._lock:
            self.state.seq = seq
            self._dirty = True

    def _on_lost(self, n: int) -> None:
        with self._lock:
            self.state.lost += n
            self._dirty = True

    def _on_record(self, seq: int, usec: int, message: str) -> None:
        event = parse_line(message)
        with self._lock:
            self.state.seq = seq
            self._dirty = True
            if isinstance(event, Unparsed):
                self.state.unparsed += 1
        if isinstance(event, XidEvent):
            if self._counted_already(event.bus_id, event.xid):
                return
            self.count(event.bus_id, event.xid, self.wallclock(), event.message,
                       event.pid, event.name)
        elif isinstance(event, BusEvent):
            self.count_event(event.bus_id, "fell_off_bus")
        self._save()

    def _counted_already(self, bus_id: str, xid: int) -> bool:
        """An Xid of the log's backlog after an outage that a vendor event already counted."""
        _, uuid = self._labels(self._ident(bus_id), self.gpus())
        with self._lock:
            if self._covered[(uuid, xid)] > 0:
                self._covered[(uuid, xid)] -= 1
                return True
        return False

    def _count_backend_event(self, event: BackendEvent) -> None:
        when = event.timestamp or self.wallclock()
        if event.kind == "xid" and event.code is not None:
            self.count(event.uuid, event.code, when, event.message, event.pid, event.process)
        else:
            self.count_event(event.uuid, event.kind, when)
        self._save()

    # --- counting --------------------------------------------------------------------------------
    @staticmethod
    def _ident(ident: str) -> str:
        """What an event names its GPU by: a uuid as is, a PCI address normalized."""
        if ident.startswith(("GPU-", "MIG-")):
            return ident
        try:
            return normalize_bus_id(ident)
        except ValueError:
            return ident

    def _labels(self, ident: str, ids: dict[str, tuple[int, str]]) -> tuple[str, str]:
        """(gpu, uuid) labels, resolved when rendering: an event read before the first
        collection cycle still lands on its GPU. An address no GPU has is still counted, under
        uuid "PCI:<bus id>" and an empty gpu, so it is seen rather than dropped."""
        if ident in ids:
            index, uuid = ids[ident]
            return str(index), uuid
        return "", ident if ident.startswith(("GPU-", "MIG-")) else f"PCI:{ident}"

    def count(self, ident: str, xid: int, when: float, message: str = "",
              pid: int | None = None, process: str | None = None) -> None:
        ident = self._ident(ident)
        action = resolve_action(xid, message)  # Xid 154 carries its action in the message
        with self._lock:
            key = f"{ident}|{xid}|{action}"
            self.state.counts[key] = self.state.counts.get(key, 0) + 1
            self.state.last_seen[f"{ident}|{xid}"] = when
            self._remember([ident, "xid", xid, action, pid, process, when])
            self._dirty = True
        log.warning("Xid", extra={"gpu": ident, "xid": xid, "action": action})
        self.on_change()

    def count_event(self, ident: str, event: str, when: float | None = None) -> None:
        ident = self._ident(ident)
        with self._lock:
            key = f"{ident}|{event}"
            self.state.events[key] = self.state.events.get(key, 0) + 1
            self._remember([ident, event, None, "", None, None,
                            self.wallclock() if when is None else when])
            self._dirty = True
        log.warning("GPU event", extra={"gpu": ident, "event": event})
        self.on_change()

    def _remember(self, occurrence: list) -> None:
        """Called with the lock held."""
        recent = self.state.recent
        recent.append(occurrence)
        if len(recent) > RECENT_MAX:
            del recent[: len(recent) - RECENT_MAX]

    def recent(self, since: float = 0.0) -> list[Occurrence]:
        """Occurrences of this boot at or after `since` (unix time), oldest first."""
        ids = self.gpus()
        with self._lock:
            recent = [list(o) for o in self.state.recent]
        out = []
        for ident, event, xid, action, pid, process, when in recent:
            if when >= since:
                _, uuid = self._labels(ident, ids)
                out.append(Occurrence(uuid, event, xid, action, pid, process, when))
        return out

    def settle(self, reason: str) -> None:
        """Forget the occurrences the verdict holds on to (counts stay): the operator says the
        repairs they asked for are done (resume after a release)."""
        with self._lock:
            n = len(self.state.recent)
            self.state.recent = []
            self._dirty = True
        log.info("event holds settled", extra={"occurrences": n, "by": reason})
        self._save(force=True)
        self.on_change()

    def _save(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if not self._dirty or (not force and now - self._last_save < SAVE_EVERY):
                return
            snapshot = EventState(**{k: (v.copy() if isinstance(v, dict | list) else v)
                                     for k, v in self.state.__dict__.items()})
            self._dirty, self._last_save = False, now
        self.store.save(snapshot)

    def xid_counts(self) -> dict[str, dict[tuple[int, str], float]]:
        """uuid -> (xid, action) -> count: what the ECC/Xid scan compares across its window."""
        ids = self.gpus()
        with self._lock:
            counts = dict(self.state.counts)
        out: dict[str, dict[tuple[int, str], float]] = {}
        for key, n in counts.items():
            ident, xid, action = key.split("|")
            _, uuid = self._labels(ident, ids)
            per_gpu = out.setdefault(uuid, {})
            per_gpu[(int(xid), action)] = per_gpu.get((int(xid), action), 0) + n
        return out

    # --- out -------------------------------------------------------------------------------------
    def rows(self, _view: object = None) -> list[Row]:
        with self._lock:
            counts = dict(self.state.counts)
            last = dict(self.state.last_seen)
            events = dict(self.state.events)
        ids = self.gpus()
        # One GPU may be named two ways (its uuid by vendor events, its PCI address by the
        # kernel log): one series each, the counts summed, the latest time kept.
        xids: dict[tuple[str, ...], float] = {}
        for key, n in counts.items():
            ident, xid, action = key.split("|")
            labels = (*self._labels(ident, ids), xid, action)
            xids[labels] = xids.get(labels, 0) + n
        seen: dict[tuple[str, ...], float] = {}
        for key, when in last.items():
            ident, xid = key.split("|")
            labels = (*self._labels(ident, ids), xid)
            seen[labels] = max(seen.get(labels, when), when)
        kinds: dict[tuple[str, ...], float] = {}
        for key, n in events.items():
            ident, event = key.split("|")
            labels = (*self._labels(ident, ids), event)
            kinds[labels] = kinds.get(labels, 0) + n
        rows = [Row("gpu_xid_errors_total", tuple(zip(("gpu", "uuid", "xid", "action"), k,
                                                      strict=True)), n)
                for k, n in sorted(xids.items())]
        rows += [Row("gpu_xid_last_timestamp_seconds", tuple(zip(("gpu", "uuid", "xid"), k,
                                                                 strict=True)), when)
                 for k, when in sorted(seen.items())]
        rows += [Row("gpu_events_total", tuple(zip(("gpu", "uuid", "event"), k, strict=True)),
                     n) for k, n in sorted(kinds.items())]
        for source, ok in sorted(self.sources.items()):
            rows.append(Row("gpu_exporter_event_source_up", (("source", source),),
                            1.0 if ok else 0.0))
        return rows


def _parse_record(raw: bytes) -> tuple[int, int, str] | None:
    record = parse_kmsg_record(raw)
    return None if record is None else (record.seq, record.usec, record.message)
