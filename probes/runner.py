"""Running one probe on one GPU (or pair) in a child process, with a deadline.

The child is pinned to its GPU by UUID (`CUDA_VISIBLE_DEVICES`; CUDA's device order need not
match NVML's) and gets a kernel cache directory of ours (`CUPY_CACHE_DIR`), writable under a
read-only root filesystem. It runs in its own process group: at the deadline the whole group
is killed. Whatever goes wrong in the child (crash, CUDA error, out of memory, garbage output,
timeout) is an `error` result, never an exception here. A `fail` is confirmed by an immediate
retry before it is reported; only one probe runs on a GPU at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .registry import PROBES, ProbeSpec
from .result import Measurement, Outcome, ProbeResult
from .thresholds import GpuFacts, Thresholds

STDERR_TAIL = 300  # characters of the child's stderr kept in an error's reason


@dataclass(frozen=True)
class Target:
    """The GPU a probe runs on, as the telemetry knows it."""

    index: int
    uuid: str
    facts: GpuFacts
    numa_node: int | None = None


class Busy(Exception):
    """A probe is already running on this GPU."""


class Runner:
    def __init__(
        self,
        thresholds: Thresholds,
        runtime: str = "cuda",
        timeout: float = 120.0,
        cache_dir: Path | None = None,
        python: str = sys.executable,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self.thresholds, self.runtime, self.timeout = thresholds, runtime, timeout
        self.cache_dir = cache_dir or Path(tempfile.gettempdir()) / "gpu-fleet-exporter-kernels"
        self.python, self.clock, self.wallclock = python, clock, wallclock
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        self.children: set[subprocess.Popen[bytes]] = set()  # running now, for shutdown
        self._killed: set[subprocess.Popen[bytes]] = set()  # by stop(): not the probe's fault
        self.stopped: str | None = None  # why no child may start (shutdown, release)
        self._final = False  # stopped for shutdown: restart() does not undo it

    # --- one GPU at a time -------------------------------------------------------------------
    def _claim(self, uuids: list[str]) -> None:
        with self._lock:
            if self._busy & set(uuids):
                raise Busy(f"a probe is already running on {', '.join(sorted(self._busy))}")
            self._busy |= set(uuids)

    def _release(self, uuids: list[str]) -> None:
        with self._lock:
            self._busy -= set(uuids)

    def busy(self, uuid: str) -> bool:
        with self._lock:
            return uuid in self._busy

    # --- running ---------------------------------------------------------------------------------
    def run(
        self,
        probe: str,
        target: Target,
        peer: Target | None = None,
        params: dict[str, Any] | None = None,
        peers: dict[str, list[float]] | None = None,
    ) -> ProbeResult:
        """Run, judge, and confirm a failure with one immediate retry. Raises Busy."""
        spec = PROBES[probe]
        uuids = [target.uuid] + ([peer.uuid] if peer else [])
        self._claim(uuids)
        try:
            result = self._attempt(spec, target, peer, params or {}, peers)
            if result.outcome is Outcome.FAIL:
                retry = self._attempt(spec, target, peer, params or {}, peers)
                retry.attempts = 2
                if retry.outcome is Outcome.SKIPPED:  # stopped before it could confirm
                    retry.reason = f"first run failed ({result.reason}); {retry.reason}"
                elif retry.outcome is not Outcome.FAIL:
                    retry.reason = (f"first run failed ({result.reason}); the retry did not "
                                    "confirm it") + (f"; {retry.reason}" if retry.reason else "")
                return retry
            return result
        finally:
            self._release(uuids)

    def _attempt(self, spec: ProbeSpec, target: Target, peer: Target | None,
                 params: dict[str, Any], peers: dict[str, list[float]] | None) -> ProbeResult:
        started_at, t0 = self.wallclock(), self.clock()
        result = ProbeResult(spec.name, target.index, target.uuid, Outcome.ERROR,
                             peer_uuid=peer.uuid if peer else None, started_at=started_at)
        try:
            measurement = self._child(spec, target, peer, params)
        except Stopped as e:
            result.outcome, result.reason = Outcome.SKIPPED, str(e)
        except ChildError as e:
            result.reason = str(e)
        else:
            result.measurement = measurement
            result.outcome, result.warn, result.checks, result.reason = self.thresholds.judge(
                spec.name, target.facts, measurement, peers)
        result.total_seconds = self.clock() - t0
        return result

    def _child(self, spec: ProbeSpec, target: Target, peer: Target | None,
               params: dict[str, Any]) -> Measurement:
        cmd = [self.python, "-m", "probes.child", spec.name, "--uuid", target.uuid,
               "--params", json.dumps(params), "--memory-bytes", str(spec.memory_bytes),
               "--runtime", self.runtime]
        if peer:
            cmd += ["--peer-uuid", peer.uuid]
        env = {**os.environ,
               "CUDA_VISIBLE_DEVICES": ",".join([target.uuid] + ([peer.uuid] if peer else [])),
               "CUPY_CACHE_DIR": str(self.cache_dir),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(_package_root()),
                                                           os.environ.get("PYTHONPATH")]))}
        if target.numa_node is not None:
            env["GPU_FLEET_EXPORTER_NUMA_NODE"] = str(target.numa_node)
        with self._lock:
            if self.stopped:
                raise Stopped(f"not started: {self.stopped}")
            try:
                _private_dir(self.cache_dir)
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env=env,
                                        start_new_session=True)
            except OSError as e:  # no kernel cache directory, no processes left, ...
                raise ChildError(f"cannot start the probe child: {e}") from None
            self.children.add(proc)
        try:
            out, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            raise ChildError(f"killed at its {self.timeout:g}s deadline") from None
        finally:
            with self._lock:
                self.children.discard(proc)
                killed_by_stop = proc in self._killed
                self._killed.discard(proc)
                why = self.stopped
        if killed_by_stop:  # shutdown or release, whatever the child was doing
            raise Stopped(f"stopped while running: {why or 'released, then resumed'}")
        if proc.returncode != 0:
            how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
                   else f"exited with {proc.returncode}")
            tail = err.decode(errors="replace").strip()[-STDERR_TAIL:]
            raise ChildError(f"probe child {how}" + (f": {tail}" if tail else ""))
        lines = out.decode(errors="replace").strip().splitlines()
        try:
            return Measurement.from_json(lines[-1] if lines else "")
        except (ValueError, TypeError) as e:
            raise ChildError(f"probe child printed no valid result ({e})") from None

    def stop(self, reason: str, final: bool = False) -> None:
        """No new child from now on, and kill the running ones (release; `final`: shutdown,
        which a later restart() does not undo)."""
        with self._lock:
            self.stopped = reason
            self._final = self._final or final
            children = list(self.children)
            self._killed.update(children)
        for proc in children:
            _kill_group(proc)

    def restart(self) -> None:
        with self._lock:
            if not self._final:
                self.stopped = None


class ChildError(Exception):
    pass


class Stopped(ChildError):
    """The runner is stopped (shutdown, release for repairs): no child was started."""


def _private_dir(path: Path) -> None:
    """The kernel cache holds code the child loads into the GPU: it must be ours alone, not a
    directory someone else created first in a shared /tmp."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise OSError(f"{path} is not a private directory of this user (owner {st.st_uid}, "
                      f"mode {st.st_mode & 0o777:o}); set probes.cache_dir")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _package_root() -> Path:
    return Path(__file__).resolve().parent.parent
