"""sd_notify: exact datagrams on a real AF_UNIX socket, and when the watchdog is (not) fed.

The socket is a real datagram socket standing in for systemd's (a path in tmp_path, and one in
the abstract namespace). The watchdog policy runs on a fake clock: what matters is which
inputs were fresh, never how long a test slept. One test runs the real Sampler with a GPU stuck
in a driver call, to show a stuck GPU still counts as a healthy cycle.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for
from fakes import FakeBackend

from exporter.sampler import Sampler
from exporter.sdnotify import (
    CycleWatch,
    Notifier,
    Supervision,
    WatchdogFeeder,
    notify_message,
    socket_address,
    watchdog_interval,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Systemd:
    """The receiving end of NOTIFY_SOCKET: every datagram, in order."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock, self.env_value = sock, env_value
        self.sock.settimeout(0)

    def messages(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(4096))
            except BlockingIOError:
                return out

    def environ(self, **extra: str) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.env_value, **extra}


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[Systemd]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    yield Systemd(sock, str(path))
    sock.close()


@pytest.fixture
def abstract_systemd() -> Iterator[Systemd]:
    name = f"gpu-fleet-exporter-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    yield Systemd(sock, "@" + name)
    sock.close()


# --- the protocol --------------------------------------------------------------------------------
def test_socket_address_forms() -> None:
    assert socket_address("/run/systemd/notify") == b"/run/systemd/notify"
    assert socket_address("@/org/freedesktop/systemd1/notify/1") == \
        b"\0/org/freedesktop/systemd1/notify/1"
    assert socket_address(None) is None
    assert socket_address("") is None
    assert socket_address("@") is None
    assert socket_address("vsock:2:1234") is None  # a VM's socket: not reachable over AF_UNIX


def test_messages_are_exact_and_cannot_be_injected() -> None:
    assert notify_message("READY=1", "STATUS=8 GPUs") == b"READY=1\nSTATUS=8 GPUs\n"
    assert notify_message("STATUS=a\nREADY=1") == b"STATUS=a READY=1\n"


def test_each_call_sends_its_exact_datagram(systemd: Systemd) -> None:
    n = Notifier.from_environ(systemd.environ())
    assert n.enabled
    assert n.ready("8 GPU(s) through nvml; 8 up.")
    assert n.status("released for repairs")
    assert n.watchdog()
    assert n.stopping()
    assert systemd.messages() == [
        b"READY=1\nSTATUS=8 GPU(s) through nvml; 8 up.\n",
        b"STATUS=released for repairs\n",
        b"WATCHDOG=1\n",
        b"STOPPING=1\n",
    ]
    n.close()


def test_abstract_namespace_socket(abstract_systemd: Systemd) -> None:
    n = Notifier.from_environ(abstract_systemd.environ())
    assert n.ready()
    assert abstract_systemd.messages() == [b"READY=1\n"]
    n.close()


def test_no_notify_socket_is_a_silent_no_op(caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier.from_environ({})
    assert not n.enabled
    assert not n.ready("x") and not n.watchdog() and not n.stopping()
    s = Supervision.from_environ({"WATCHDOG_USEC": "1000000"})  # watchdog without a socket
    s.serving_tick()
    s.cycle_done(True, "status")
    s.stopping()
    assert not s.ready or not s.notifier.enabled
    assert s.feeder.feeds == 0
    assert caplog.records == []


def test_a_vanished_socket_is_logged_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert not n.watchdog()
    assert not n.watchdog()
    assert [r.message for r in caplog.records] == ["cannot notify systemd (said once)"]


def test_from_environ_removes_the_variables_so_children_cannot_inherit_them(
    systemd: Systemd,
) -> None:
    env = systemd.environ(WATCHDOG_USEC="30000000", WATCHDOG_PID=str(os.getpid()), PATH="/bin")
    s = Supervision.from_environ(env)
    assert env == {"PATH": "/bin"}
    assert s.notifier.enabled and s.feeder.interval == 30.0
    kept = systemd.environ()
    Supervision.from_environ(kept, unset=False)
    assert "NOTIFY_SOCKET" in kept


# --- whose watchdog -----------------------------------------------------------------------------
def test_watchdog_interval_from_the_environment() -> None:
    me = os.getpid()
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, me) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(me)}, me) == 30.0
    # Another process's watchdog (we are its child and inherited the environment): not ours.
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, me) is None
    assert watchdog_interval({}, me) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, me) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, me) is None
    assert watchdog_interval({"WATCHDOG_USEC": "5", "WATCHDOG_PID": "me"}, me) is None


def test_watchdog_pid_of_another_process_disables_feeding(systemd: Systemd) -> None:
    clock = Clock()
    env = systemd.environ(WATCHDOG_USEC="30000000", WATCHDOG_PID=str(os.getpid() + 1))
    s = Supervision.from_environ(env, clock=clock)
    assert s.feeder.interval is None
    for _ in range(10):
        s.serving_tick()
        s.cycle_done(True)
        clock.advance(15)
    assert b"WATCHDOG=1\n" not in systemd.messages()


# --- the policy, on a fake clock ------------------------------------------------------------------
def _feeder(systemd: Systemd, clock: Clock, interval: float = 30.0) -> WatchdogFeeder:
    return WatchdogFeeder(Notifier.from_environ(systemd.environ()), interval, clock)


def _pings(systemd: Systemd) -> int:
    return systemd.messages().count(b"WATCHDOG=1\n")


def test_fed_at_half_the_interval_while_both_inputs_are_fresh(systemd: Systemd) -> None:
    clock = Clock()
    f = _feeder(systemd, clock)
    f.serving_tick()
    assert _pings(systemd) == 0, "no cycle yet: nothing proves collection works"
    f.cycle_done(True)
    assert _pings(systemd) == 1
    # The serving loop ticks every 0.5 s and a cycle ends every 5 s for a minute:
    # one ping per 15 s (half of WatchdogSec=30), not one per tick.
    for step in range(120):
        clock.advance(0.5)
        f.serving_tick()
        if step % 10 == 9:
            f.cycle_done(True)
    assert _pings(systemd) == 4


def test_not_fed_when_the_cycle_stalls(systemd: Systemd) -> None:
    clock = Clock()
    f = _feeder(systemd, clock)
    f.serving_tick()
    f.cycle_done(True)
    systemd.messages()
    # The coordinator is wedged: no cycle_done at all, the event loop keeps ticking.
    for _ in range(200):
        clock.advance(0.5)
        f.serving_tick()
    assert f.fed_at is not None and f.fed_at - f.cycled_at <= 30.0
    assert _pings(systemd) == 2  # at +15 and +30 s, then silence: systemd restarts us
    assert not f.maybe_feed()


def test_unhealthy_cycles_do_not_count(systemd: Systemd) -> None:
    clock = Clock()
    f = _feeder(systemd, clock)
    f.serving_tick()
    f.cycle_done(True)
    systemd.messages()
    for _ in range(20):  # every cycle raised: the hook runs, no cycle completed
        clock.advance(5)
        f.serving_tick()
        f.cycle_done(False)
    assert clock.now - f.cycled_at == 100
    assert not f.maybe_feed()
    f.cycle_done(True)  # one completed cycle and feeding resumes
    assert _pings(systemd) == 2 + 1  # +15, +30 before the window closed, then the recovery


def test_not_fed_when_the_serving_loop_stalls(systemd: Systemd) -> None:
    clock = Clock()
    f = _feeder(systemd, clock)
    f.serving_tick()
    f.cycle_done(True)
    systemd.messages()
    # The event loop is wedged: cycles go on (each calls maybe_feed), the server does not tick.
    for _ in range(40):
        clock.advance(5)
        f.cycle_done(True)
    assert _pings(systemd) == 2  # +15 and +30 s, while the last tick was still fresh
    assert not f.maybe_feed()


def _ping_gaps(f: WatchdogFeeder, clock: Clock, cycle_every: float, seconds: float) -> list[float]:
    """Run the serving loop (0.5 s ticks) and cycles `cycle_every` apart; the gaps between
    pings, which systemd compares with WatchdogSec."""
    f.serving_tick()
    f.cycle_done(True)
    fed_at = [clock.now]
    next_cycle = clock.now + cycle_every
    for _ in range(int(seconds / 0.5)):
        clock.advance(0.5)
        f.serving_tick()
        if clock.now >= next_cycle:
            f.cycle_done(True)
            next_cycle += cycle_every
        if f.fed_at != fed_at[-1]:
            fed_at.append(f.fed_at)
    return [b - a for a, b in itertools.pairwise(fed_at)]


def test_a_watchdog_too_short_for_the_intervals_waits_longer_for_cycles(
    systemd: Systemd, caplog: pytest.LogCaptureFixture
) -> None:
    """WatchdogSec=10s while healthy cycles come 21 s apart (say fast_interval=15s plus a 6 s
    pass deadline). Judged by the watchdog interval alone, pings would stop for 11 s of each
    gap and systemd would kill a healthy daemon; with max_cycle_gap the cycle input stays
    fresh for 2 x 21 s, and the too-short WatchdogSec is logged once with the fix."""
    env = systemd.environ(WATCHDOG_USEC="10000000")
    clock = Clock()
    naive = WatchdogFeeder.from_environ(Notifier.from_environ(env), env, clock=clock)
    assert max(_ping_gaps(naive, clock, 21.0, 120)) > 10.0

    clock = Clock()
    f = WatchdogFeeder.from_environ(Notifier.from_environ(env), env, clock=clock,
                                    max_cycle_gap=21.0)
    assert f.cycle_window == 42.0
    [warning] = [r for r in caplog.records if "WatchdogSec" in r.message]
    assert warning.fix == "WatchdogSec=43s or more"
    assert max(_ping_gaps(f, clock, 21.0, 120)) <= 5.5

    caplog.clear()  # (the unread socket filled up meanwhile: "cannot notify", said once)
    env30 = env | {"WATCHDOG_USEC": "30000000"}  # the unit's 30 s, the default 11 s gap
    ok = WatchdogFeeder.from_environ(Notifier.from_environ(env30), env30, max_cycle_gap=11.0)
    assert ok.cycle_window == 30.0 and caplog.records == []


def test_a_stop_ends_feeding(systemd: Systemd) -> None:
    clock = Clock()
    f = _feeder(systemd, clock)
    f.serving_tick()
    f.cycle_done(True)
    f.stop()
    clock.advance(20)
    f.serving_tick()
    f.cycle_done(True)
    assert _pings(systemd) == 1


# --- Supervision: readiness once, status on change ------------------------------------------------
def test_ready_once_after_the_first_cycle_and_the_first_serving_tick(systemd: Systemd) -> None:
    clock = Clock()
    s = Supervision.from_environ(systemd.environ(WATCHDOG_USEC="30000000"), clock=clock)
    s.cycle_done(False, "0 GPU(s); 0 up.")  # the first cycle raised: not ready
    s.cycle_done(True, "8 GPU(s) through nvml; 8 up.")  # first cycle done, server not yet up
    assert systemd.messages() == []
    s.serving_tick()
    # READY=1 first: a ping before it would read as a service that already started.
    assert systemd.messages() == [b"READY=1\nSTATUS=8 GPU(s) through nvml; 8 up.\n",
                                  b"WATCHDOG=1\n"]
    for _ in range(3):
        clock.advance(5)
        s.serving_tick()
        s.cycle_done(True, "8 GPU(s) through nvml; 8 up.")
    assert systemd.messages() == [b"WATCHDOG=1\n"]  # +15 s; no second READY, no repeated status
    clock.advance(5)
    s.cycle_done(True, "8 GPU(s) through nvml; 7 up.")
    assert systemd.messages() == [b"STATUS=8 GPU(s) through nvml; 7 up.\n"]
    s.stopping()
    clock.advance(30)
    s.serving_tick()
    s.cycle_done(True, "8 GPU(s) through nvml; 7 up.")
    assert systemd.messages() == [b"STOPPING=1\nSTATUS=stopping\n"]


def test_ready_without_a_watchdog(systemd: Systemd) -> None:
    s = Supervision.from_environ(systemd.environ())
    s.serving_tick()
    s.cycle_done(True)
    assert systemd.messages() == [b"READY=1\n"]


# --- CycleWatch: what counts as a completed cycle ------------------------------------------------
class _View:
    def __init__(self, fresh_at: float) -> None:
        self.fresh_at = fresh_at


class _Sampler:
    def __init__(self) -> None:
        self.view: _View | None = None
        self.paused: str | None = None


class _Recorder(Supervision):
    def __init__(self) -> None:
        super().__init__(Notifier(None), WatchdogFeeder(Notifier(None), None))
        self.calls: list[tuple[bool, str | None]] = []

    def cycle_done(self, healthy: bool, status: str | None = None) -> None:
        self.calls.append((healthy, status))


def test_cycle_watch_counts_completed_cycles_and_a_paused_sampler() -> None:
    sampler, rec = _Sampler(), _Recorder()
    watch = CycleWatch(rec, sampler, lambda: "summary")
    watch()  # no view yet: the first cycle has not completed
    sampler.view = _View(float("-inf"))  # a pause before any cycle made a view
    watch()
    sampler.view = _View(10.0)
    watch()
    watch()  # the hook ran again but fresh_at did not move: the cycle raised
    sampler.paused = "released for repairs"
    watch()  # no cycle on purpose, the coordinator is alive
    assert rec.calls == [(False, "summary"), (False, "summary"), (True, "summary"),
                         (False, "summary"), (True, "summary")]


def test_a_stuck_gpu_still_counts_as_a_healthy_cycle() -> None:
    """The real Sampler, one GPU blocked inside a driver call: the coordinator abandons it at
    its deadline and completes cycles without it, so the watchdog keeps being fed."""
    fake = FakeBackend(gpus=3)
    sampler = Sampler([(fake, fake.devices())], fast_interval=0.01, slow_interval=60,
                      call_deadline=0.05)
    rec = _Recorder()
    sampler.after_cycle.append(CycleWatch(rec, sampler))
    gate = fake.block(1, "utilization")
    sampler.start()
    try:
        wait_for(lambda: sampler.view is not None
                 and sampler.view.errors.get(("fast", "1", "stuck"), 0) >= 3,
                 what="three cycles with GPU 1 stuck")
        view = sampler.view
        assert view is not None and not view.gpus[1].up and view.gpus[0].up
        assert not gate.is_set()
        assert rec.calls and all(healthy for healthy, _ in rec.calls)
    finally:
        gate.set()
        sampler.stop()


def test_a_wedged_coordinator_stops_the_watchdog(systemd: Systemd) -> None:
    """A hook that never returns wedges the coordinator: no more cycle_done, so once the
    window passes the serving loop's ticks alone do not feed the watchdog."""
    clock = Clock()
    notifier = Notifier.from_environ(systemd.environ())
    s = Supervision(notifier, WatchdogFeeder(notifier, 30.0, clock))
    fake = FakeBackend(gpus=1)
    sampler = Sampler([(fake, fake.devices())], fast_interval=0.01, slow_interval=60,
                      call_deadline=0.5)
    wedge, wedged = threading.Event(), threading.Event()
    cycles = []

    def maybe_wedge() -> None:
        cycles.append(1)
        if len(cycles) >= 3:
            wedged.set()
            wedge.wait()

    sampler.after_cycle += [s.cycle_hook(sampler), maybe_wedge]
    sampler.start()
    try:
        assert wedged.wait(10), "the coordinator never reached the wedge"
        assert s.feeder.cycled_at == clock.now  # cycles completed before the wedge
        for _ in range(120):
            clock.advance(0.5)
            s.serving_tick()
        assert clock.now - s.feeder.cycled_at == 60
        assert not s.feeder.maybe_feed()
        assert s.ready
    finally:
        wedge.set()
        sampler.stop()


def test_the_daemon_under_systemd_says_ready_pings_the_watchdog_and_stopping(tmp_path) -> None:
    """The real console script as systemd starts it: READY=1 after the first cycle, WATCHDOG=1
    while cycles and the serving loop run, STOPPING=1 on SIGTERM."""
    import signal as _signal
    import socket as _socket
    import subprocess as _subprocess
    import sys as _sys

    from conftest import REPO

    path = str(tmp_path / "notify.sock")
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    env = {**__import__("os").environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"}
    proc = _subprocess.Popen(
        [_sys.executable, "-m", "exporter", "serve", "--collection.backend=sim",
         "--web.listen-address=127.0.0.1:0", "--collection.fast-interval=0.2s",
         "--probes.enabled=false"], cwd=REPO, env=env,
        stdout=_subprocess.DEVNULL, stderr=_subprocess.DEVNULL)
    try:
        seen: list[bytes] = []
        while not any(m.startswith(b"WATCHDOG=1") for m in seen):
            seen.append(sock.recv(4096))
        assert seen[0].startswith(b"READY=1"), seen
        proc.send_signal(_signal.SIGTERM)
        while not any(b"STOPPING=1" in m for m in seen):
            seen.append(sock.recv(4096))
        # uvicorn re-raises the SIGTERM it handled once shut down: systemd counts a death by
        # SIGTERM as a clean stop.
        assert proc.wait(30) in (0, -_signal.SIGTERM)
    finally:
        proc.kill()
        sock.close()


def test_sighup_says_it_does_not_reload_and_the_daemon_keeps_serving(tmp_path) -> None:
    """SIGHUP's default action would kill the daemon; it logs one clear line instead."""
    import os as _os
    import signal as _signal
    import subprocess as _subprocess
    import sys as _sys

    import httpx
    from conftest import REPO, wait_for

    log = tmp_path / "daemon.log"
    port_file = tmp_path / "port"
    with log.open("wb") as out:
        proc = _subprocess.Popen(
            [_sys.executable, "-c",
             "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1',0)); "
             "open(sys.argv[1],'w').write(str(s.getsockname()[1])); s.close()",
             str(port_file)], cwd=REPO)
        proc.wait(30)
        port = int(port_file.read_text())
        env = {k: v for k, v in _os.environ.items() if k != "NOTIFY_SOCKET"}
        proc = _subprocess.Popen(
            [_sys.executable, "-m", "exporter", "serve", "--collection.backend=sim",
             f"--web.listen-address=127.0.0.1:{port}", "--probes.enabled=false"],
            cwd=REPO, env=env, stdout=out, stderr=_subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(url + "/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout=30, what="the daemon to be ready")
        proc.send_signal(_signal.SIGHUP)
        wait_for(lambda: b"SIGHUP ignored" in log.read_bytes(), timeout=10, what="the log line")
        assert proc.poll() is None and ready()
    finally:
        proc.terminate()
        proc.wait(30)
