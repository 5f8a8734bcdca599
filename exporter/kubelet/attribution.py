"""Pod attribution: which container each GPU is allocated to, refreshed off the scrape path.

A `PodAttribution` asks the kubelet (pod-resources `List` and `GetAllocatableResources`, each
with a deadline) on its own thread every `interval` and keeps the latest answer. Its `rows` is
a publisher contributor: it only joins that answer with the sampler's view (device IDs -> our
GPUs) and never waits on the kubelet. `allocated_uuids` feeds the probes' idle gate.

When the kubelet does not answer (no socket, a slow or failed call), `gpu_exporter_kubelet_up`
goes to 0 at once, the last good answer keeps serving for `keep_stale` seconds (a kubelet
restart must not make every pod vanish from dashboards), then it is dropped: an allocation that
old may be wrong. Such an outage logs one warning, however many refreshes fail; the recovery
logs one line too. Nothing here raises into its caller.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from ..exposition import Row
from ..sampler import GpuState, SamplerView
from . import DEFAULT_SOCKET
from .devices import Allocation, GpuIndex, Placement, Target, place
from .processes import (
    LOG_ROOT,
    PROC,
    ContainerNames,
    GpuProcessLike,
    Triple,
    host_pid_namespace,
    pod_memory_rows,
    processes_attr,
)

log = logging.getLogger(__name__)


def holders_in_view(view: SamplerView | None) -> dict[str, set[Triple]]:
    """GPU uuid -> containers, from gpu_pod_info samples a backend reports itself (the
    simulated node stands in for the kubelet that way)."""
    holders: dict[str, set[Triple]] = {}
    for gpu in view.gpus if view is not None else ():
        for s in gpu.samples:
            if s.family == "gpu_pod_info":
                labels = dict(s.labels)
                holders.setdefault(gpu.uuid, set()).add(
                    (labels.get("namespace", ""), labels.get("pod", ""),
                     labels.get("container", "")))
    return holders


class Lister(Protocol):
    """What the refresher needs of a client (PodResourcesClient, or a test's stand-in)."""

    def list(self) -> tuple[Allocation, ...]: ...
    def allocatable(self) -> tuple[object, ...] | None: ...
    def close(self) -> None: ...


class PodAttribution:
    def __init__(
        self,
        client: Lister | None = None,
        *,
        socket_path: str = DEFAULT_SOCKET,
        timeout: float = 2.0,
        interval: float = 10.0,
        keep_stale: float = 60.0,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        per_process: bool = False,
        proc_root: Path = PROC,
        log_root: Path = LOG_ROOT,
        processes_of: Callable[[GpuState], Iterable[GpuProcessLike]] = processes_attr,
    ) -> None:
        if client is None:
            from .client import PodResourcesClient  # grpc is imported only when used

            client = PodResourcesClient(socket_path, timeout)
        self.client = client
        self.socket_path = socket_path
        self.interval, self.keep_stale = interval, keep_stale
        self.on_change, self.clock = on_change, clock
        self.proc_root, self.log_root, self.processes_of = proc_root, log_root, processes_of
        self.per_process = per_process and host_pid_namespace(proc_root)
        if per_process and not self.per_process:
            log.warning("per-process pod attribution off: not in the host's PID namespace "
                        "(the pod needs hostPID: true); gpu_pod_info is unaffected",
                        extra={"proc": str(proc_root)})
        self._lock = threading.Lock()  # guards the state below
        self._refresh_lock = threading.Lock()  # one refresh at a time
        self._allocations: tuple[Allocation, ...] | None = None  # None: never answered
        self._allocatable: tuple[object, ...] | None = None
        self._good_at = float("-inf")
        self._up = False
        self._outage = False  # a warning was logged for the current outage
        self._dropped = False  # the current outage outlived keep_stale
        self._names = ContainerNames()
        self._view: SamplerView | None = None
        self._known_migs: dict[str, Target] = {}
        self._unknown: frozenset[Allocation] = frozenset()
        self.failures: Counter[str] = Counter()  # reason -> failed refreshes
        self.unattributed: Counter[str] = Counter()  # why a GPU process had no container
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kubelet-pod-resources",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)  # a call in flight ends by its own deadline
        try:
            self.client.close()
        except Exception:
            log.debug("closing the pod-resources client failed", exc_info=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh_now()
            self._stop.wait(self.interval)

    # --- refresh -----------------------------------------------------------------------------
    def refresh_now(self) -> bool:
        """Ask the kubelet once (on the caller's thread). True when it answered."""
        with self._refresh_lock:
            try:
                allocations = tuple(self.client.list())
                allocatable = self.client.allocatable()
                names = ContainerNames.scan(self.log_root) if self.per_process else None
            except Exception as e:  # whatever went wrong, the caller carries on
                self._failed(e)
                return False
            with self._lock:
                changed = allocations != self._allocations or not self._up
                recovered = self._outage
                self._allocations, self._allocatable = allocations, allocatable
                self._good_at = self.clock()
                self._up, self._outage, self._dropped = True, False, False
                self.last_error = None
                if names is not None:
                    self._names = names
            if recovered:
                log.info("kubelet pod-resources API answers again",
                         extra={"socket": self.socket_path})
            if changed:
                self._notify()
            return True

    def _failed(self, error: Exception) -> None:
        reason = getattr(error, "reason", None) or type(error).__name__
        with self._lock:
            was_up, first = self._up, not self._outage
            self._up, self._outage = False, True
            self.failures[reason] += 1
            self.last_error = str(error)
        if first:
            # One line per outage; the failed refreshes are counted in `failures`.
            log.warning("kubelet pod-resources API unavailable; the last answer serves for "
                        f"{self.keep_stale:g}s (said once per outage)",
                        extra={"socket": self.socket_path, "reason": reason,
                               "error": str(error)},
                        exc_info=not hasattr(error, "reason"))
        if was_up:
            self._notify()

    def _notify(self) -> None:
        try:
            self.on_change()
        except Exception:
            log.exception("pod attribution change callback failed")

    # --- state -------------------------------------------------------------------------------
    @property
    def up(self) -> bool:
        return self._up

    @property
    def allocation_known(self) -> bool:
        """False before the first answer and once an outage outlived keep_stale."""
        with self._lock:
            return self._current() is not None

    def _current(self) -> tuple[Allocation, ...] | None:
        """The answer in force (lock held): the last good one while fresh enough."""
        if self._allocations is None:
            return None
        if not self._up and self.clock() - self._good_at > self.keep_stale:
            if not self._dropped:
                self._dropped = True
                log.info("kubelet answer dropped: older than keep_stale",
                         extra={"keep_stale": self.keep_stale})
            return None
        return self._allocations

    @property
    def allocatable(self) -> tuple[object, ...] | None:
        """What the device plugins advertise (None: kubelet without GetAllocatableResources)."""
        return self._allocatable

    def placement(self, view: SamplerView | None = None) -> Placement:
        """The current answer placed on the GPUs of `view` (default: the last one rows saw)."""
        with self._lock:
            if view is None:
                view = self._view
            allocations = self._current() or ()
            index = GpuIndex(view, self._known_migs)
            present = {g.uuid for g in view.gpus} if view is not None else set()
            # Remember MIG instances of GPUs still enumerated (a down GPU loses gpu_mig_info).
            self._known_migs = {k: t for k, t in index.by_mig.items() if t.uuid in present}
        result = place(allocations, index)
        unknown = frozenset(result.unknown)
        with self._lock:
            news, self._unknown = unknown != self._unknown, unknown
        if news and unknown:
            log.debug("device IDs that match no GPU of this node are ignored",
                      extra={"count": len(unknown), "ids": ",".join(
                          sorted(f"{a.resource}={a.device_id}" for a in unknown)[:8])})
        return result

    def allocated(self, view: SamplerView | None = None) -> dict[str, set[Triple]]:
        """GPU uuid -> the containers it (or one of its MIG instances) is allocated to.

        GPUs whose own samples carry gpu_pod_info (the simulated node stands in for the
        kubelet that way) count as allocated to those pods.
        """
        view = view if view is not None else self._view
        holders = self.placement(view).holders()
        for uuid, containers in holders_in_view(view).items():
            holders.setdefault(uuid, set()).update(containers)
        return holders

    def allocated_uuids(self, view: SamplerView | None = None) -> set[str]:
        """UUIDs of the GPUs allocated to any pod (whole, shared or by a MIG instance)."""
        return set(self.allocated(view))

    # --- rows ----------------------------------------------------------------------------------
    def rows(self, view: SamplerView | None) -> list[Row]:
        """A publisher contributor: gpu_exporter_kubelet_up, gpu_pod_info and, with
        per-process attribution, gpu_pod_memory_used_bytes. Reads only prepared state."""
        with self._lock:
            self._view = view
            up = self._up
            names = self._names
        rows = [Row("gpu_exporter_kubelet_up", (), 1.0 if up else 0.0)]
        if view is None:
            return rows
        placement = self.placement(view)
        # The simulated node reports its own allocation as samples: never two sources.
        own_pods = {g.uuid for g in view.gpus
                    if any(s.family == "gpu_pod_info" for s in g.samples)}
        for target, ns, pod, container in placement.series:
            if target.uuid in own_pods:
                continue
            rows.append(Row("gpu_pod_info", (
                ("gpu", str(target.index)), ("uuid", target.uuid), ("mig_uuid", target.mig_uuid),
                ("namespace", ns), ("pod", pod), ("container", container)), 1.0))
        if self.per_process:
            own_memory = {g.uuid for g in view.gpus
                          if any(s.family == "gpu_pod_memory_used_bytes" for s in g.samples)}
            rows += pod_memory_rows(view, placement.holders(), names, self.proc_root,
                                    self.processes_of, skip=own_memory,
                                    skipped=self.unattributed)
        return rows
