"""Following the kernel log: /dev/kmsg records, a cursor that survives restarts, and wake-ups.

/dev/kmsg gives one record per read(): "priority,sequence,microseconds,flags;message". The
sequence numbers make the cursor: after a restart we skip what was already counted. Without a
saved cursor we start at the present (counting old Xids again would page someone for nothing).
A read that fails with EPIPE means the ring buffer overwrote records we had not read yet: they
are counted as lost and reading goes on from the oldest record still there.

The reader sleeps in select() on the log and on a wake-up pipe, so an NVML Xid event (which
arrives before the driver's log line is readable, or at the same time) makes it look at once.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

MAX_RECORD = 8192  # /dev/kmsg records are at most 1 KiB of text plus dictionary lines
# A log that cannot be opened or read (no CAP_SYSLOG, EIO) is tried again, less and less often.
REOPEN_MIN, REOPEN_MAX = 5.0, 300.0


class RecordSource(Protocol):
    """Where kernel-log records come from: /dev/kmsg, or a file of records (tests, replays)."""

    def open(self, at_end: bool) -> None: ...
    def read(self) -> bytes | None: ...  # one record; None when none is ready; raises EPIPE
    def wait(self, wake_fd: int, timeout: float) -> None: ...
    def close(self) -> None: ...


class KmsgDevice:
    """/dev/kmsg itself: non-blocking, one record per read."""

    def __init__(self, path: Path = Path("/dev/kmsg")) -> None:
        self.path = path
        self.fd: int | None = None

    def open(self, at_end: bool) -> None:
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        if not stat.S_ISCHR(os.fstat(fd).st_mode):
            # A FIFO or a directory here would make the reader spin on end-of-file or die
            # on its first read: say what is wrong instead.
            os.close(fd)
            raise OSError(errno.EINVAL, f"{self.path} is not a character device like /dev/kmsg")
        self.fd = fd
        if at_end:
            os.lseek(self.fd, 0, os.SEEK_END)

    def read(self) -> bytes | None:
        assert self.fd is not None
        try:
            return os.read(self.fd, MAX_RECORD)
        except BlockingIOError:
            return None

    def wait(self, wake_fd: int, timeout: float) -> None:
        assert self.fd is not None
        select.select([self.fd, wake_fd], [], [], timeout)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class RecordFile:
    """A file with one record per line, appended to by someone else. A regular file is always
    "readable", so at its end we wait on the wake-up pipe with a short timeout instead."""

    def __init__(self, path: Path, poll: float = 0.05) -> None:
        self.path, self.poll = path, poll
        self.file = None
        self.partial = b""

    def open(self, at_end: bool) -> None:
        self.partial = b""  # a half line from before a reopen is not the start of the next
        self.file = open(self.path, "rb")  # noqa: SIM115 (closed in close())
        if at_end:
            self.file.seek(0, os.SEEK_END)

    def read(self) -> bytes | None:
        assert self.file is not None
        line = self.file.readline()
        if not line:
            return None
        if not line.endswith(b"\n"):  # a writer is mid-line: wait for the rest
            self.partial += line
            return None
        line, self.partial = self.partial + line, b""
        return line.rstrip(b"\n")

    def wait(self, wake_fd: int, timeout: float) -> None:
        select.select([wake_fd], [], [], min(timeout, self.poll))

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class KmsgFollower:
    """A thread that hands every new record (seq, usec, message) to `on_record`."""

    def __init__(
        self,
        source: RecordSource,
        on_record: Callable[[int, int, str], None],
        parse: Callable[[bytes], tuple[int, int, str] | None],
        cursor: int | None,
        on_lost: Callable[[int], None] = lambda n: None,
        on_state: Callable[[bool, str], None] = lambda ok, why: None,
        on_position: Callable[[int], None] = lambda seq: None,
        on_drained: Callable[[], None] = lambda: None,
        timeout: float = 1.0,
    ) -> None:
        self.source, self.on_record, self.parse = source, on_record, parse
        self.cursor, self.on_lost, self.on_state = cursor, on_lost, on_state
        self.on_position, self.on_drained = on_position, on_drained
        self.timeout = timeout
        self.up = False
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self.thread = threading.Thread(target=self._run, name="kmsg", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def wake(self) -> None:
        """Look at the log now (an NVML event arrived)."""
        with contextlib.suppress(OSError):  # the pipe is full: a wake-up is already pending
            os.write(self._wake_w, b"x")

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.wake()
        if self.thread.is_alive():
            self.thread.join(timeout)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _run(self) -> None:
        # Without a cursor, start at the present: the records already there are read to learn
        # the latest sequence number (so it can be saved) but not counted: old news.
        retry = REOPEN_MIN
        said_down = False
        while not self._stop.is_set():
            try:
                self.source.open(at_end=False)
            except Exception as e:  # EPERM without CAP_SYSLOG, ...: try again later
                why = _why(e, trace=not said_down)
            else:
                try:
                    self._follow(catching_up=self.cursor is None)
                    return  # stopped
                except Exception as e:  # EIO, or a bug: reopen later, the thread never dies
                    why = f"read failed: {_why(e, trace=not said_down or self.up)}"
                    if self.up:  # it worked until now: a new outage, a quick first retry
                        said_down, retry = False, REOPEN_MIN
                finally:
                    with contextlib.suppress(Exception):
                        self.source.close()
            self.up = False
            if not said_down:  # once per outage, not once per retry
                said_down = True
                self.on_state(False, why)
            self._stop.wait(retry)
            retry = min(retry * 2, REOPEN_MAX)

    def _follow(self, catching_up: bool) -> None:
        while not self._stop.is_set():
            self._drain(catching_up)
            self.on_drained()  # once per wake-up (at least every `timeout`): persist
            if not self.up:  # said once the records already there are behind us
                self.up = True
                self.on_state(True, "")
            catching_up = False
            self.source.wait(self._wake_r, self.timeout)
            try:
                while os.read(self._wake_r, 64):
                    pass
            except (BlockingIOError, OSError):
                pass

    def _drain(self, catching_up: bool = False) -> None:
        while not self._stop.is_set():
            try:
                raw = self.source.read()
            except OSError as e:
                if e.errno == errno.EPIPE:
                    self.on_lost(1)  # overwritten before we read it; go on with the next
                    continue
                raise
            if raw is None:
                return
            parsed = self.parse(raw)
            if parsed is None:
                continue
            seq, usec, message = parsed
            if self.cursor is not None:
                if seq <= self.cursor:
                    continue  # counted before the restart
                if seq > self.cursor + 1:
                    self.on_lost(seq - self.cursor - 1)  # the ring wrapped past our cursor
            self.cursor = seq
            if catching_up:
                self.on_position(seq)
            else:
                self.on_record(seq, usec, message)


def _why(e: Exception, trace: bool) -> str:
    if isinstance(e, OSError):
        return f"{e.strerror or e}"
    if trace:  # a bug: its trace, once per outage
        log.exception("kernel-log follower failed; reopening the log later")
    return f"{type(e).__name__}: {e}"
