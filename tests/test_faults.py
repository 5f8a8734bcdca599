"""Fault injection against the whole daemon, served by its own HTTP server.

Each test injects one fault while the daemon runs and asserts what must stay true:
- `/metrics` keeps answering (200, within the scrape deadline below) during the fault;
- the GPUs the fault does not touch keep reporting: `gpu_up 1` and collection cycles that go on
  (`gpu_exporter_last_collection_timestamp_seconds` moves);
- once the daemon stops, nothing it started is left running: no thread of ours, no child
  process.
and then what the fault itself must do (a GPU down with its reason, a probe `error`, a counter).

The NVIDIA node is the 2x H200 NVML recording replayed by `nvml_fake.FakeNvml` (GPU 0 and 1), so
every fault reaches the real NVML backend code; the probe faults use the simulated node, whose
probe child is the real `python -m probes.child` process. Waiting is a poll with a deadline.
docs/faults.md lists every fault, what the daemon does, and the test here that shows it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import REPO, wait_for
from e2e_stack import free_port, serving, sim_node
from fakes import FakeBackend
from kubelet_stub import STUB_THREADS, serve_kubelet
from nvml_fake import FIXTURE_DIR, FakeNvml
from prometheus_client.parser import text_string_to_metric_families

from exporter.backends import OpenedBackends
from exporter.backends.nvml import NvmlBackend, identity
from exporter.config import load_settings
from exporter.daemon import Daemon

sys.path.insert(0, str(REPO / "bench"))
from soak import descendants

H200X2 = FIXTURE_DIR / "h200x2_580.json"
SCRAPE_DEADLINE = 2.0  # a scrape slower than this counts as not answering (Prometheus: 10 s)
TOKEN = "fault-test-token-0123456789abcdef"
# What the recording says GPU 0 and 1 are: kernel-log records name them by PCI address.
BUS = {0: "0000:00:06", 1: "0000:00:07"}  # as NVRM prints 00000000:00:06.0

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


# --- the invariants -------------------------------------------------------------------------------
def scrape(url: str) -> Series:
    r = httpx.get(url + "/metrics", timeout=SCRAPE_DEADLINE)
    assert r.status_code == 200, f"/metrics answered {r.status_code}: {r.text[:200]}"
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(r.text) for s in fam.samples}


def value(series: Series, name: str, **labels: str) -> float | None:
    want = set(labels.items())
    hits = [v for (n, ls), v in series.items() if n == name and want <= ls]
    return hits[0] if hits else None


def last_cycle(series: Series) -> float:
    t = value(series, "gpu_exporter_last_collection_timestamp_seconds", tier="fast")
    assert t is not None, "no collection timestamp"
    return t


@dataclass
class Node:
    url: str
    daemon: Daemon

    def scrape(self) -> Series:
        return scrape(self.url)

    def assert_serving(self, reporting: list[int]) -> Series:
        """/metrics answers, and every GPU in `reporting` is up in a cycle newer than now."""
        before = last_cycle(self.scrape())

        def newer() -> Series | None:
            s = self.scrape()
            return s if last_cycle(s) > before else None

        fresh = wait_for(newer, timeout=10, what="a new collection cycle")
        for gpu in reporting:
            assert value(fresh, "gpu_up", gpu=str(gpu)) == 1, f"GPU {gpu} stopped reporting"
            assert value(fresh, "gpu_temperature_celsius", gpu=str(gpu)) is not None
        return fresh

    def gpu_up(self, gpu: int) -> float | None:
        return value(self.scrape(), "gpu_up", gpu=str(gpu))


@contextlib.contextmanager
def nothing_left_running() -> Iterator[None]:
    """After the block, no thread started inside it is alive and no child process remains."""
    threads = set(threading.enumerate())
    children = set(descendants(os.getpid()))
    yield

    def leftovers() -> list[str]:
        extra = [t.name for t in threading.enumerate() if t not in threads and t.is_alive()
                 and not t.name.startswith(STUB_THREADS)]
        kids = [str(p) for p in set(descendants(os.getpid())) - children]
        return extra + kids

    try:
        wait_for(lambda: not leftovers(), timeout=10, what="the daemon's threads and children")
    except AssertionError:
        raise AssertionError(f"left running after stop: {leftovers()}") from None


def nvml_settings(tmp: Path, **sections: dict[str, Any]) -> Any:
    return load_settings(overrides={
        "collection": {"backend": "nvml", "fast_interval": 0.2, "slow_interval": 0.5,
                       "call_deadline": 0.3, "max_staleness": 5.0},
        "events": {"kmsg": False, "state_dir": str(tmp / "state")},
        "probes": {"enabled": False},
        **sections})


def nvml_daemon(fake: FakeNvml, settings: Any, opened: OpenedBackends | None = None) -> Daemon:
    if opened is None:
        backend = NvmlBackend(nvml=fake)
        backend.start()
        opened = OpenedBackends(sources=[(backend, list(backend.devices()))])
    daemon = Daemon(settings, opened)
    daemon.recovery.initial, daemon.recovery.maximum = 0.1, 0.4  # retries within a test
    return daemon


@contextlib.contextmanager
def nvml_node(tmp: Path, fake: FakeNvml | None = None, **sections: dict[str, Any]
              ) -> Iterator[tuple[Node, FakeNvml]]:
    fake = fake or FakeNvml.from_fixture(H200X2)
    with nothing_left_running():
        daemon = nvml_daemon(fake, nvml_settings(tmp, **sections))
        try:
            with serving(daemon) as url:
                yield Node(url, daemon), fake
        finally:
            fake.release_all()  # a call still blocked in the "library" returns
    fake.assert_clean()  # no shutdown under a call in flight, no unrecorded call


@pytest.fixture(autouse=True)
def no_sysfs_numa(monkeypatch) -> None:
    """The recorded GPUs are not this host's: the NUMA fallback must not read its sysfs."""
    monkeypatch.setattr(identity, "_sysfs_numa_node", lambda bus_id: None)


# --- NVML -----------------------------------------------------------------------------------------
def test_an_nvml_call_hanging_past_its_deadline(tmp_path: Path) -> None:
    with nvml_node(tmp_path) as (node, fake):
        node.assert_serving([0, 1])
        gate = fake.block("nvmlDeviceGetPowerUsage", "dev0")
        wait_for(lambda: node.gpu_up(0) == 0, what="GPU 0 down past its deadline")
        assert fake.entered("nvmlDeviceGetPowerUsage").is_set() and not gate.is_set()
        node.assert_serving([1])
        gate.set()
        wait_for(lambda: node.gpu_up(0) == 1, what="GPU 0 back once the call returned")
        node.assert_serving([0, 1])


def test_a_gpu_lost_and_back(tmp_path: Path) -> None:
    with nvml_node(tmp_path) as (node, fake):
        node.assert_serving([0, 1])
        inits = fake.init_count
        fake.lose("dev1")
        wait_for(lambda: node.gpu_up(1) == 0, what="GPU 1 down")
        s = node.assert_serving([0])
        assert value(s, "gpu_power_watts", gpu="1") is None  # nothing stale for the lost GPU
        fake.restore("dev1")
        wait_for(lambda: node.gpu_up(1) == 1, what="GPU 1 back after a re-init")
        assert fake.init_count > inits
        node.assert_serving([0, 1])


def test_nvml_reinit_failing_again_and_again(tmp_path: Path) -> None:
    """The NVIDIA library cannot be re-initialized for a while; the node's other library (here
    a second backend of two GPUs) keeps reporting, and retries back off."""
    fake = FakeNvml.from_fixture(H200X2)
    other = FakeBackend(gpus=2)
    other.name = "other"
    with nothing_left_running():
        backend = NvmlBackend(nvml=fake)
        backend.start()
        opened = OpenedBackends(sources=[(backend, list(backend.devices())),
                                         (other, other.devices())])
        daemon = nvml_daemon(fake, nvml_settings(tmp_path), opened)
        with serving(daemon) as url:
            node = Node(url, daemon)
            fake.fail("nvmlInit", 999)  # NVML_ERROR_UNKNOWN on every init from now
            fake.lose("dev0")  # what makes the daemon re-initialize
            wait_for(lambda: daemon.recovery.attempts >= 4, what="repeated failed re-inits")
            s = node.assert_serving([])
            assert value(s, "gpu_exporter_backend_up", backend="nvml") == 0
            assert value(s, "gpu_exporter_backend_up", backend="other") == 1
            assert [g.up for g in daemon.sampler.view.gpus] == [False, False, True, True]
            assert value(s, "gpu_up", uuid="GPU-fake-0") == value(s, "gpu_up",
                                                                  uuid="GPU-fake-1") == 1
            # Backoff: 0.1 s doubling to 0.4 s, so about 1.5 s per 4 attempts; without it the
            # coordinator would retry after every 0.2 s cycle.
            started, at = time.monotonic(), daemon.recovery.attempts
            wait_for(lambda: daemon.recovery.attempts >= at + 3, what="three more attempts")
            assert time.monotonic() - started >= 2 * 0.4
            fake.clear_faults()
            wait_for(lambda: all(g.up for g in daemon.sampler.view.gpus),
                     what="NVML back on the next retry")
            node.assert_serving([0, 1])
    fake.assert_clean()


def test_the_nvidia_library_absent_at_start_and_installed_later(tmp_path: Path,
                                                                 monkeypatch) -> None:
    fake = FakeNvml.from_fixture(H200X2)
    fake.missing_library()
    monkeypatch.setattr(NvmlBackend, "from_settings", classmethod(lambda cls, _: cls(nvml=fake)))
    monkeypatch.setattr("exporter.daemon.DISCOVERY_INTERVAL", 0.2)
    settings = nvml_settings(tmp_path, collection={
        "backend": "auto", "fast_interval": 0.2, "slow_interval": 0.5, "call_deadline": 0.3})
    with nothing_left_running():
        from exporter.backends import open_backends

        daemon = Daemon(settings, open_backends(settings))
        assert "libnvidia-ml" in daemon.opened.failed["nvml"]
        with serving(daemon) as url:
            node = Node(url, daemon)
            s = node.scrape()
            assert value(s, "gpu_exporter_backend_up", backend="nvml") == 0
            assert value(s, "gpu_up") is None
            fake.library_present()  # the driver package was installed
            wait_for(lambda: node.gpu_up(1) == 1, what="the GPUs once the library is there")
            s = node.assert_serving([0, 1])
            assert value(s, "gpu_exporter_backend_up", backend="nvml") == 1
    fake.assert_clean()


# --- the kernel log -------------------------------------------------------------------------------
def kmsg_record(seq: int, message: str) -> str:
    return f"3,{seq},{seq * 1000},-;{message}\n"


def xid(gpu: int, code: int) -> str:
    return f"NVRM: Xid (PCI:{BUS[gpu]}): {code}, pid=4242, name=python3, Graphics Exception"


def kmsg_settings(tmp: Path, log: Path) -> dict[str, Any]:
    return {"events": {"kmsg": True, "kmsg_path": str(log), "state_dir": str(tmp / "state")}}


def append_when_up(node: Node, log: Path, *records: str) -> None:
    """Append once the follower reads the log: a first start skips what is already there."""
    wait_for(lambda: value(node.scrape(), "gpu_exporter_event_source_up", source="kmsg") == 1,
             what="kmsg up")
    with log.open("a") as f:
        f.writelines(records)


def break_the_log(monkeypatch, method: str, code: int) -> threading.Event:
    """RecordFile.<method> raises OSError(code) while the returned event is set; the follower
    retries every 0.1 s instead of 5 s."""
    from exporter.events.kmsg import RecordFile

    monkeypatch.setattr("exporter.events.kmsg.REOPEN_MIN", 0.1)
    broken = threading.Event()
    real = getattr(RecordFile, method)

    def failing(self, *args, **kwargs):
        if broken.is_set():
            raise OSError(code, os.strerror(code))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(RecordFile, method, failing)
    return broken


@pytest.mark.parametrize("fault", ["open", "read"])
def test_an_unreadable_kernel_log_and_its_return(tmp_path: Path, monkeypatch, fault: str) -> None:
    """The log cannot be opened (EPERM: no CAP_SYSLOG) or a read fails (EIO) for a while:
    kmsg reads as down, the GPUs report, and the follower reopens the log by itself."""
    broken = break_the_log(monkeypatch, fault, errno.EPERM if fault == "open" else errno.EIO)
    broken.set()
    log = tmp_path / "kmsg"
    log.write_text("")
    with nvml_node(tmp_path, **kmsg_settings(tmp_path, log)) as (node, _):
        wait_for(lambda: value(node.scrape(), "gpu_exporter_event_source_up", source="kmsg")
                 == 0, what="kmsg down")
        node.assert_serving([0, 1])
        broken.clear()
        append_when_up(node, log, kmsg_record(7, xid(0, 13)))
        wait_for(lambda: value(node.scrape(), "gpu_xid_errors_total", gpu="0", xid="13") == 1,
                 what="an Xid from the log that came back")
        node.assert_serving([0, 1])


def test_xids_during_a_kernel_log_outage_are_counted_once(tmp_path: Path, monkeypatch) -> None:
    """While the log cannot be read, NVML's Xid events are counted; when it comes back, the
    same Xids in its backlog are not counted again, and new ones are."""
    import pynvml

    broken = break_the_log(monkeypatch, "read", errno.EIO)
    log = tmp_path / "kmsg"
    log.write_text("")
    with nvml_node(tmp_path, **kmsg_settings(tmp_path, log)) as (node, fake):
        append_when_up(node, log, kmsg_record(1, xid(1, 31)))  # read: the cursor is 1
        wait_for(lambda: value(node.scrape(), "gpu_xid_errors_total", xid="31"), what="Xid 31")
        broken.set()
        wait_for(lambda: value(node.scrape(), "gpu_exporter_event_source_up", source="kmsg")
                 == 0, what="kmsg down")
        fake.emit("dev0", pynvml.nvmlEventTypeXidCriticalError, 13)  # NVML has it at once,
        with log.open("a") as f:
            f.write(kmsg_record(2, xid(0, 13)))  # and the driver logs it
        wait_for(lambda: value(node.scrape(), "gpu_xid_errors_total", gpu="0", xid="13") == 1,
                 what="Xid 13 from NVML events")
        broken.clear()
        append_when_up(node, log, kmsg_record(3, xid(0, 13)))  # a new one after the outage
        wait_for(lambda: value(node.scrape(), "gpu_xid_errors_total", gpu="0", xid="13") == 2,
                 what="the new Xid")
        s = node.assert_serving([0, 1])
        assert value(s, "gpu_xid_errors_total", gpu="0", xid="13") == 2  # not 3


def test_a_kernel_log_that_wrapped_while_the_daemon_was_down(tmp_path: Path) -> None:
    log = tmp_path / "kmsg"
    log.write_text("")
    with nvml_node(tmp_path, **kmsg_settings(tmp_path, log)) as (node, _):
        append_when_up(node, log, kmsg_record(10, xid(1, 13)))
        wait_for(lambda: value(node.scrape(), "gpu_xid_errors_total", gpu="1", xid="13"),
                 what="the first Xid")
    # Restarted after the ring buffer overwrote records 11..99 meanwhile.
    log.write_text(kmsg_record(100, xid(1, 13)))
    with nvml_node(tmp_path, **kmsg_settings(tmp_path, log)) as (node, _):
        wait_for(lambda: value(node.scrape(), "gpu_xid_errors_total", gpu="1", xid="13") == 2,
                 what="the Xid after the wrap, counted on top")
        node.assert_serving([0, 1])
        assert node.daemon.events is not None and node.daemon.events.state.lost == 89


def test_a_million_line_kernel_log_flood(tmp_path: Path) -> None:
    """A driver spamming the kernel log: 1,000,000 records, one in a thousand an Xid on GPU 1.
    Scrapes answer throughout, every Xid is counted once, and memory stays bounded."""
    log = tmp_path / "kmsg"
    log.write_text("")
    lines, xids = 1_000_000, 1000
    with nvml_node(tmp_path, **kmsg_settings(tmp_path, log)) as (node, _):
        node.assert_serving([0, 1])
        rss_before = _rss_kib()
        noise = "nvidia-nvswitch: link training retry on port 7, attempt 3 of 5"
        with log.open("a") as f:
            f.writelines(kmsg_record(i, xid(1, 31) if i % (lines // xids) == 0 else noise)
                         for i in range(1, lines + 1))
        slowest = 0.0

        def counted() -> bool:
            nonlocal slowest
            t0 = time.monotonic()
            s = node.scrape()  # asserts 200 within SCRAPE_DEADLINE
            slowest = max(slowest, time.monotonic() - t0)
            return value(s, "gpu_xid_errors_total", gpu="1", xid="31") == xids

        wait_for(counted, timeout=120, what="every Xid of the flood counted")
        node.assert_serving([0, 1])
        assert node.daemon.events is not None and node.daemon.events.state.seq == lines
        growth = _rss_kib() - rss_before
        print(f"flood: slowest scrape {slowest * 1000:.0f} ms, RSS +{growth / 1024:.1f} MiB")
        assert growth < 64 * 1024, f"RSS grew {growth} KiB reading the flood"


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# --- the state directory --------------------------------------------------------------------------
@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC])
def test_a_state_directory_read_only_or_full(tmp_path: Path, monkeypatch, code: int) -> None:
    """Writes into the state directory fail as on a read-only or full filesystem (injected at
    os.write/os.open: chmod does not stop root, and CI may run as root)."""
    state = tmp_path / "state"
    state.mkdir()
    real_open, real_write = os.open, os.write
    state_fds: set[int] = set()

    def failing_open(path, flags, *args, **kw):
        if str(path).startswith(str(state)) and flags & (os.O_WRONLY | os.O_RDWR):
            if code == errno.EROFS:
                raise OSError(code, os.strerror(code), str(path))
            fd = real_open(path, flags, *args, **kw)
            state_fds.add(fd)
            return fd
        return real_open(path, flags, *args, **kw)

    def failing_write(fd, data):
        if fd in state_fds:
            raise OSError(code, os.strerror(code))
        return real_write(fd, data)

    monkeypatch.setattr(os, "open", failing_open)
    monkeypatch.setattr(os, "write", failing_write)
    log = tmp_path / "kmsg"
    log.write_text("")
    with nvml_node(tmp_path, **kmsg_settings(tmp_path, log)) as (node, _):
        append_when_up(node, log, kmsg_record(1, xid(0, 13)))
        wait_for(lambda: value(node.scrape(), "gpu_xid_errors_total", gpu="0", xid="13"),
                 what="the Xid, counted in memory")
        events = node.daemon.events
        assert events is not None
        events._save(force=True)
        assert events.store.error and os.strerror(code) in events.store.error
        node.assert_serving([0, 1])
    assert [p.name for p in state.iterdir()] == [], "a partial state file was left behind"


# --- the kubelet ----------------------------------------------------------------------------------
def test_the_kubelet_socket_disappears(tmp_path: Path) -> None:
    with serve_kubelet(tmp_path) as kubelet, nvml_node(tmp_path, kubernetes={
            "pod_resources_socket": kubelet.socket, "refresh_interval": 0.2,
            "call_timeout": 0.5, "keep_stale": 1.0}) as (node, _):
        uuid = next(dict(ls)["uuid"] for n, ls in node.scrape() if n == "gpu_up"
                    and ("gpu", "0") in ls)
        kubelet.pods = [("serving", "vllm-0", {"engine": [("nvidia.com/gpu", [uuid])]})]
        wait_for(lambda: value(node.scrape(), "gpu_pod_info", pod="vllm-0"),
                 what="the pod attributed")
        os.unlink(kubelet.socket)  # the kubelet restarts and its socket is gone for a while
        wait_for(lambda: value(node.scrape(), "gpu_exporter_kubelet_up") == 0,
                 what="kubelet_up 0")
        wait_for(lambda: value(node.scrape(), "gpu_pod_info", pod="vllm-0") is None,
                 what="the stale pod dropped after keep_stale")
        node.assert_serving([0, 1])


# --- probe children -------------------------------------------------------------------------------
@pytest.mark.parametrize("behaviour, reason", [
    ("crash", "killed by signal"),
    ("hang", "deadline"),
    ("oom", "out of memory"),
    ("garbage", "no valid result"),
])
def test_a_probe_child_that_breaks(tmp_path: Path, behaviour: str, reason: str) -> None:
    scenario = ("faults:\n  - {at: 0s, gpu: 1, kind: probe, probe: pcie_bandwidth, "
                f"behaviour: {behaviour}}}\n")
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    overrides = {"probes": {"runtime": "sim", "timeout": 2.0, "token_file": str(token),
                            "quiet_period": 0.0}}
    children = set(descendants(os.getpid()))
    with nothing_left_running(), sim_node(tmp_path, scenario, overrides, gpus=3) as (url, d):
        node = Node(url, d)
        answer: list[httpx.Response] = []
        trigger = threading.Thread(target=lambda: answer.append(httpx.post(
            url + "/probes/run", json={"probe": "pcie_bandwidth", "force": True},
            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)))
        trigger.start()
        if behaviour == "hang":  # scrape while the child hangs, and see it is ours to kill
            wait_for(lambda: _probe_children(children), what="the hung child")
            node.assert_serving([0, 1, 2])
        trigger.join(30)
        (r,) = answer
        assert r.status_code == 200, r.text
        results = {x["gpu"]: x for x in r.json()["results"]}
        assert results[1]["outcome"] == "error" and reason in results[1]["reason"]
        assert results[0]["outcome"] == results[2]["outcome"] == "pass"
        s = node.assert_serving([0, 1, 2])
        assert value(s, "gpu_probe_runs_total", gpu="1", probe="pcie_bandwidth",
                     outcome="error") == 1
        assert value(s, "gpu_probe_success", gpu="0", probe="pcie_bandwidth") == 1
        assert not _probe_children(children)


def _probe_children(before: set[int]) -> list[int]:
    found = []
    for pid in set(descendants(os.getpid())) - before:
        with contextlib.suppress(OSError):
            if b"probes.child" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


# --- signals, on the real console script ----------------------------------------------------------
@pytest.mark.parametrize("how", ["scheduled", "triggered over HTTP"])
def test_sigterm_during_a_probe_kills_the_child_and_exits_within_5s(tmp_path: Path,
                                                                     how: str) -> None:
    """The probe child hangs (its deadline is 5 minutes away); SIGHUP leaves it alone and the
    daemon serving; SIGTERM kills it and the daemon shuts down cleanly within 5 s, leaving
    nothing behind."""
    scenario = tmp_path / "hang.yaml"
    # On both GPUs: the simulated node may show a compute process on one, and the idle gate
    # skips that one on a scheduled run.
    scenario.write_text("faults:\n  - {at: 0s, gpu: [0, 1], kind: probe, probe: gemm, "
                        "behaviour: hang}\n")
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    port = free_port()
    cmd = [sys.executable, "-m", "exporter", "serve", f"--web.listen-address=127.0.0.1:{port}",
           "--collection.backend=sim", "--sim.gpus=2", f"--sim.scenario={scenario}",
           "--collection.fast-interval=0.5s", "--probes.timeout=300s", "--probes.jitter=0s",
           "--probes.quiet-period=0s", "--probes.max-utilization=1",
           "--probes.max-memory-used-bytes=1e15", f"--probes.token-file={token}"]
    if how == "scheduled":
        cmd.append("--probes.run-at-start=true")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url, proc), timeout=30, what="the daemon to serve")
        if how != "scheduled":
            threading.Thread(target=_post_quietly, args=(url,), daemon=True).start()
        (child,) = wait_for(lambda: _probe_children_of(proc.pid, "gemm"), timeout=30,
                            what="the hung probe child")
        proc.send_signal(signal.SIGHUP)
        scrape(url)  # still serving after SIGHUP
        assert proc.poll() is None and _probe_children_of(proc.pid) == [child]
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        code = proc.wait(timeout=10)
        took = time.monotonic() - t0
        err = proc.stderr.read().decode() if proc.stderr else ""
        # A clean shutdown, then uvicorn re-raises the signal so the exit status says SIGTERM
        # (systemd counts that as a clean stop; so does the kubelet).
        assert code in (0, -signal.SIGTERM) and "Application shutdown complete" in err, err[-2000:]
        assert took < 5, f"exit took {took:.1f}s"
        assert not Path(f"/proc/{child}").exists(), "the probe child outlived the daemon"
        assert "SIGHUP ignored" in err
        # The scheduler's job-by-job info lines are not in the operator's log; ours are.
        assert "logger=apscheduler" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in _probe_children_of(proc.pid):
            os.kill(pid, signal.SIGKILL)


def _ready(url: str, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise AssertionError(f"daemon exited with {proc.returncode}: {err[-2000:]}")
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url + "/readyz", timeout=1).status_code == 200
    return False


def _post_quietly(url: str) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the daemon goes away under this request
        httpx.post(url + "/probes/run", json={"probe": "gemm", "gpu": 0, "force": True},
                   headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)


def _probe_children_of(pid: int, probe: str = "") -> list[int]:
    """The probe children of a daemon (each in a session of its own), of one probe if named."""
    found = []
    for child in descendants(pid):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            if b"probes.child" in argv and (not probe or probe.encode() in argv):
                found.append(child)
    return found


def test_scenario_behaviour_round_trip(tmp_path: Path) -> None:
    """The scenario format carries a probe child's behaviour to the child's parameters."""
    from exporter.backends.sim import load_scenario

    path = tmp_path / "s.yaml"
    path.write_text("faults:\n  - {at: 0s, gpu: 0, kind: probe, probe: gemm, behaviour: oom}\n")
    assert load_scenario(path).probe_values(0, "gemm", 1.0) == {"behaviour": "oom"}
    path.write_text("faults:\n  - {at: 0s, gpu: 0, kind: probe, probe: gemm}\n")
    with pytest.raises(Exception, match=r"needs `values` or a `behaviour`"):
        load_scenario(path)
