"""systemd supervision without libsystemd: readiness, status lines and a watchdog that means it.

The sd_notify(3) protocol is one AF_UNIX datagram of `KEY=value` lines sent to the socket named
in `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace). Nothing here imports
anything outside the standard library, and every call is a no-op when the daemon does not run
under systemd (no `$NOTIFY_SOCKET`): the same code runs in a container, a test, or a terminal.

What the daemon tells systemd (docs/systemd.md):
- `READY=1` once, when the first collection cycle is done *and* the HTTP server is serving, so
  `systemctl start` returns when /metrics has real data and units ordered after us find it.
- `STATUS=` the one-line summary (`systemctl status` shows it), sent only when it changes.
- `WATCHDOG=1` only while BOTH the serving loop and the sampler's coordinator make progress.
  Either one wedged (a deadlocked event loop, a coordinator stuck in a hook) stops the feeding,
  and systemd restarts the daemon after `WatchdogSec=`. A GPU whose driver call hangs does not:
  the coordinator abandons that call at its deadline and completes the cycle without the GPU,
  and a completed cycle is what counts. Killing the daemon for one sick GPU would blind the
  node for every healthy one, and a thread inside an uninterruptible driver call may not even
  let the process die.
- `STOPPING=1` when shutting down, so the stop is not mistaken for a crash while it drains.

The daemon wires one `Supervision` (see its docstring): `serving_tick()` from the serving loop,
`cycle_hook(sampler, summary)` appended to `sampler.after_cycle`, `stopping()` at shutdown.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Protocol

log = logging.getLogger(__name__)

ENV_SOCKET = "NOTIFY_SOCKET"
ENV_WATCHDOG_USEC = "WATCHDOG_USEC"
ENV_WATCHDOG_PID = "WATCHDOG_PID"
SYSTEMD_ENV = (ENV_SOCKET, ENV_WATCHDOG_USEC, ENV_WATCHDOG_PID)


# --- pure functions ----------------------------------------------------------------------------
def socket_address(value: str | None) -> bytes | None:
    """The address to send to for a `$NOTIFY_SOCKET` value, or None for "not supervised".

    `/run/systemd/notify` is a file-system socket; `@name` is `name` in the abstract namespace,
    which the kernel spells with a leading NUL byte. Anything else (systemd 254+ can hand a VM
    `vsock:CID:PORT`) is not a socket this process can reach over AF_UNIX: None.
    """
    if not value:
        return None
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    if value.startswith("/"):
        return os.fsencode(value)
    return None


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds of the watchdog systemd armed for *this* process, or None when there is none.

    `$WATCHDOG_PID` names the process the watchdog is meant for. A child that inherited the
    environment (a probe child, a shell the daemon runs) must not feed its parent's watchdog,
    or a wedged daemon would be kept alive by its children: any other PID means "not ours".
    A malformed value disables the watchdog rather than guessing.
    """
    usec = environ.get(ENV_WATCHDOG_USEC, "")
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    owner = environ.get(ENV_WATCHDOG_PID)
    if owner:
        try:
            if int(owner) != pid:
                return None
        except ValueError:
            return None
    return value / 1_000_000


def notify_message(*assignments: str) -> bytes:
    """`KEY=value` assignments as one datagram, one per line.

    A newline inside a value would start a new assignment (a status text saying
    "x\\nREADY=1" would declare us ready): newlines inside values become spaces.
    """
    lines = [" ".join(a.splitlines()) for a in assignments]
    return ("\n".join(lines) + "\n").encode("utf-8", errors="replace")


# --- transport ---------------------------------------------------------------------------------
class Notifier:
    """Sends sd_notify datagrams; a no-op without an address. Never raises, never blocks.

    Sending is non-blocking (`MSG_DONTWAIT`): the watchdog is fed from the event loop, and a
    full notify queue in PID 1 must cost a missed ping, not a stalled server. A failed send is
    logged once and reported as False; systemd notices a missing READY or WATCHDOG by itself.
    """

    def __init__(self, address: bytes | None) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()  # the coordinator thread and the event loop both send
        self._warned = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        value = env.get(ENV_SOCKET)
        address = socket_address(value)
        if value and address is None:
            log.warning("NOTIFY_SOCKET is not an AF_UNIX socket; not notifying systemd",
                        extra={"notify_socket": value})
        return cls(address)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        if self.address is None:
            return False
        data = notify_message(*assignments)
        try:
            with self._lock:
                if self._sock is None:
                    # CLOEXEC: a probe child must not inherit a way to talk to PID 1 as us.
                    self._sock = socket.socket(socket.AF_UNIX,
                                               socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock = self._sock
            sock.sendto(data, socket.MSG_DONTWAIT, self.address)
        except OSError as e:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd (said once)",
                            extra={"error": f"{type(e).__name__}: {e}"})
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


# --- the watchdog policy -----------------------------------------------------------------------
class WatchdogFeeder:
    """Feeds systemd's watchdog only while the serving loop AND the collection make progress.

    Two inputs, each stamped with the clock: `serving_tick()` (the HTTP serving loop, every
    0.5 s) and `cycle_done(healthy)` (the coordinator, after every cycle). `maybe_feed()`
    sends WATCHDOG=1 when the last tick is within the watchdog interval, the last healthy cycle
    within `cycle_window` (default: the interval too), and the last ping is at least
    `interval / 2` old, the rate sd_watchdog_enabled(3) recommends. Both inputs call
    `maybe_feed()` themselves, so a stall of either one is noticed by the other. Worst case
    from a stall to systemd's kill: cycle_window + interval (2 x WatchdogSec by default).

    `healthy` means "the coordinator completed a cycle", which it does with a GPU down or stuck
    (the stuck call is abandoned at its deadline). It is False only when no cycle completed:
    the cycle raised, or the hook ran without a cycle. A paused sampler (released for repairs)
    still runs its hooks and counts as healthy: CycleWatch decides that.
    """

    def __init__(
        self,
        notifier: Notifier,
        interval: float | None,
        clock: Callable[[], float] = time.monotonic,
        cycle_window: float | None = None,
    ) -> None:
        self.notifier = notifier
        self.held = False  # Supervision holds the pings until READY=1 has gone out
        self.interval = interval if notifier.enabled else None
        self.cycle_window = cycle_window if cycle_window is not None else interval
        self.clock = clock
        self.served_at: float | None = None
        self.cycled_at: float | None = None  # the last healthy cycle
        self.fed_at: float | None = None
        self.feeds = 0
        self.stopped = False
        self._lock = threading.Lock()

    @classmethod
    def from_environ(
        cls,
        notifier: Notifier,
        environ: Mapping[str, str] | None = None,
        pid: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_cycle_gap: float | None = None,
    ) -> WatchdogFeeder:
        """`max_cycle_gap`: the longest a healthy coordinator may take between two completed
        cycles (fast_interval + the pass deadline). The cycle input stays fresh for at least
        twice that, so a WatchdogSec= set too short for the configured intervals costs
        detection time (logged once) instead of killing a healthy daemon every few minutes."""
        env = os.environ if environ is None else environ
        interval = watchdog_interval(env, os.getpid() if pid is None else pid)
        cycle_window = interval
        if interval is not None and max_cycle_gap is not None and interval < 2 * max_cycle_gap:
            cycle_window = 2 * max_cycle_gap
            log.warning("WatchdogSec is short for the collection intervals; waiting longer for "
                        "a completed cycle", extra={
                            "watchdog_seconds": interval, "max_cycle_gap_seconds": max_cycle_gap,
                            "fix": f"WatchdogSec={int(2 * max_cycle_gap) + 1}s or more"})
        return cls(notifier, interval, clock, cycle_window)

    @property
    def enabled(self) -> bool:
        return self.interval is not None and not self.stopped and not self.held

    def serving_tick(self) -> None:
        self.served_at = self.clock()
        self.maybe_feed()

    def cycle_done(self, healthy: bool) -> None:
        if healthy:
            self.cycled_at = self.clock()
        self.maybe_feed()

    def fresh(self, now: float) -> bool:
        """Both inputs were seen recently enough."""
        inf = float("inf")
        serving = self.interval if self.interval is not None else inf
        cycle = self.cycle_window if self.cycle_window is not None else inf
        return (self.served_at is not None and now - self.served_at <= serving
                and self.cycled_at is not None and now - self.cycled_at <= cycle)

    def maybe_feed(self) -> bool:
        """Send WATCHDOG=1 if both inputs are fresh and a ping is due; True when sent."""
        if not self.enabled:
            return False
        assert self.interval is not None
        with self._lock:  # both threads call this: one ping per half interval, not two
            now = self.clock()
            if not self.fresh(now):
                return False
            if self.fed_at is not None and now - self.fed_at < self.interval / 2:
                return False
            self.fed_at = now
            self.feeds += 1
        return self.notifier.watchdog()

    def stop(self) -> None:
        """No more pings: after STOPPING=1 systemd no longer watches, and a ping that races
        the shutdown must not look like a daemon that changed its mind."""
        self.stopped = True


# --- what the daemon wires ---------------------------------------------------------------------
class _ViewLike(Protocol):
    @property
    def fresh_at(self) -> float: ...


class _SamplerLike(Protocol):
    """What CycleWatch reads of exporter.sampler.Sampler (duck-typed: no import cycle)."""

    @property
    def view(self) -> _ViewLike | None: ...
    @property
    def paused(self) -> str | None: ...


class Supervision:
    """The daemon's one object for systemd: readiness once, status, watchdog, stopping.

    Wiring (exporter/daemon.py and server.py):
        self.systemd = Supervision.from_environ(max_cycle_gap=...)      # in serve()
        self.sampler.after_cycle.append(self.systemd.cycle_hook(self.sampler, self.summary))
        QuietServer(config, on_tick=self.systemd.serving_tick).run()    # each 0.5 s tick
        self.systemd.stopping()                                         # lifespan shutdown
    `Supervision.disabled()` is the no-op default for tests and the other commands.
    """

    def __init__(self, notifier: Notifier, feeder: WatchdogFeeder) -> None:
        self.notifier, self.feeder = notifier, feeder
        feeder.held = True  # READY=1 first: a ping before it would read as a started service
        self.ready = False
        self._status: str | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_environ(
        cls,
        environ: MutableMapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        unset: bool = True,
        max_cycle_gap: float | None = None,
    ) -> Supervision:
        """Read `$NOTIFY_SOCKET` and the watchdog variables, then (by default) remove them
        from the environment, like sd_notify's `unset_environment`: the probe child and any
        other process we start must not talk to systemd in our name. `max_cycle_gap`: see
        WatchdogFeeder.from_environ (fast_interval + PASS_DEADLINE_CALLS x call_deadline)."""
        env = os.environ if environ is None else environ
        notifier = Notifier.from_environ(env)
        feeder = WatchdogFeeder.from_environ(notifier, env, clock=clock,
                                             max_cycle_gap=max_cycle_gap)
        if unset:
            for key in SYSTEMD_ENV:
                env.pop(key, None)
        if notifier.enabled:
            log.info("supervised by systemd", extra={
                "watchdog_seconds": feeder.interval if feeder.interval is not None else "off"})
        return cls(notifier, feeder)

    @classmethod
    def disabled(cls) -> Supervision:
        notifier = Notifier(None)
        return cls(notifier, WatchdogFeeder(notifier, None))

    def serving_tick(self) -> None:
        """The serving loop is alive (call from QuietServer's loop, in the event loop)."""
        self.feeder.serving_tick()
        self._maybe_ready()

    def cycle_done(self, healthy: bool, status: str | None = None) -> None:
        """A collection cycle ended (call from the coordinator, after each cycle)."""
        self.feeder.cycle_done(healthy)
        if status is not None and status != self._status and self.ready:
            self._status = status
            self.notifier.status(status)
        elif status is not None and not self.ready:
            self._status = status  # sent with READY=1
        self._maybe_ready()

    def _maybe_ready(self) -> None:
        # Ready means both: the first cycle's data exists and the server answers for it. The
        # first cycle runs while uvicorn is still binding, so either can come first.
        with self._lock:
            if self.ready or self.feeder.served_at is None or self.feeder.cycled_at is None:
                return
            self.ready = True
        self.notifier.ready(self._status)
        self.feeder.held = False
        self.feeder.maybe_feed()

    def status(self, text: str) -> None:
        self._status = text
        self.notifier.status(text)

    def stopping(self, status: str = "stopping") -> None:
        self.feeder.stop()
        self.notifier.stopping(status)

    def cycle_hook(self, sampler: _SamplerLike,
                   status: Callable[[], str] | None = None) -> CycleWatch:
        return CycleWatch(self, sampler, status)


class CycleWatch:
    """A sampler after_cycle hook: tells Supervision whether the coordinator completed a cycle.

    The coordinator runs its hooks after every scheduled cycle, also when the cycle raised and
    also while the sampler is paused. A cycle completed when the view's `fresh_at` moved since
    the last call. While paused (released for repairs) no cycle runs on purpose, yet the
    coordinator is alive (it is running this hook): that counts as healthy, or a release longer
    than the watchdog would get the daemon killed in the middle of a GPU reset.
    """

    def __init__(self, supervision: Supervision, sampler: _SamplerLike,
                 status: Callable[[], str] | None = None) -> None:
        self.supervision, self.sampler, self.status = supervision, sampler, status
        self._last: float | None = None

    def __call__(self) -> None:
        view = self.sampler.view
        fresh_at = view.fresh_at if view is not None else None
        completed = fresh_at is not None and fresh_at != float("-inf") and fresh_at != self._last
        self._last = fresh_at
        healthy = completed or self.sampler.paused is not None
        self.supervision.cycle_done(healthy, self.status() if self.status else None)
