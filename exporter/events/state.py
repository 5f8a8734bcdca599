"""The kernel-log cursor and event counts, persisted so a restart neither loses nor recounts.

One small JSON file in the state directory, written atomically (temporary file, fsync, rename).
The kernel's boot id is stored with the cursor: after a reboot the sequence numbers start
again, so the old cursor means nothing, while the counts carry on (counters never go back).
A state directory that cannot be written is reported once; the daemon goes on in memory.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..safefiles import read_text

log = logging.getLogger(__name__)

STATE_FILE = "kmsg-state.json"
RECENT_MAX = 1000  # occurrences kept for the verdict: a flood must not grow the file forever
STATE_MAX_BYTES = 16 << 20  # RECENT_MAX occurrences take about 100 KiB
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id(path: Path = BOOT_ID) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


@dataclass
class EventState:
    boot_id: str = ""
    seq: int | None = None  # last kernel-log sequence number processed (this boot)
    # Keyed by what the record named its GPU by (a uuid or a normalized PCI address).
    counts: dict[str, float] = field(default_factory=dict)  # "ident|xid|action" -> n
    last_seen: dict[str, float] = field(default_factory=dict)  # "ident|xid" -> unix time
    events: dict[str, float] = field(default_factory=dict)  # "ident|event" -> n
    lost: int = 0  # records overwritten before we read them (ring buffer wrapped)
    unparsed: int = 0
    # The latest occurrences of this boot, for the health verdict's windows and holds:
    # [ident, event ("xid" or an event name), xid or null, action, pid or null, process name
    # or null, unix time]. Bounded (RECENT_MAX); a new boot starts the list again.
    recent: list[list] = field(default_factory=list)


class StateStore:
    def __init__(self, directory: Path | None) -> None:
        self.path = directory / STATE_FILE if directory else None
        self.error: str | None = None

    def load(self) -> EventState:
        if self.path is None or not self.path.exists():
            return EventState()
        try:
            # FileRefused (a ValueError) for a FIFO, a directory or a runaway size here.
            data = json.loads(read_text(self.path, f"event state {self.path}", STATE_MAX_BYTES))
            return _checked(data)
        except (OSError, ValueError, TypeError, RecursionError) as e:
            log.warning("event state unreadable; starting at the present",
                        extra={"path": str(self.path), "error": str(e)})
            return EventState()

    def save(self, state: EventState) -> bool:
        if self.path is None:
            return False
        data = json.dumps(state.__dict__, sort_keys=True).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".kmsg-state.")
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as e:
            if self.error is None:
                log.warning("cannot write the event state; counting in memory only "
                            "(a restart will start at the present)",
                            extra={"path": str(self.path), "error": str(e)})
            self.error = str(e)
            with_tmp = locals().get("tmp")
            if with_tmp and os.path.exists(with_tmp):
                os.unlink(with_tmp)
            return False
        self.error = None
        return True


_NUMBER = (int, float)


def _checked(data: object) -> EventState:
    """The state from its JSON, each field of the type it must have (ValueError otherwise): a
    file edited by hand or damaged must not crash the start or the follower later."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    state = EventState(**{k: v for k, v in data.items() if k in EventState.__dataclass_fields__})
    ok = (isinstance(state.boot_id, str)
          and (state.seq is None or type(state.seq) is int)
          and all(isinstance(d, dict) and all(isinstance(k, str) and isinstance(v, _NUMBER)
                                              for k, v in d.items())
                  for d in (state.counts, state.last_seen, state.events))
          and isinstance(state.lost, int) and isinstance(state.unparsed, int)
          and isinstance(state.recent, list)
          and all(isinstance(o, list) and len(o) == 7 for o in state.recent))
    if not ok:
        raise ValueError("a field has the wrong type")
    return state
