"""Per-process attribution: a GPU process's PID -> the Kubernetes container it runs in.

NVML names the processes on a GPU by host PID. Their cgroup tells the pod UID and the container
ID (any cgroup version, systemd or cgroupfs driver, containerd, CRI-O or Docker):

    0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope
    11:memory:/kubepods/burstable/pod<uid>/<id>

The kubelet's pod-resources answer names pods and containers but carries neither UIDs nor
container IDs, so it cannot turn those into names by itself. What can, without any API access:
the kubelet's log directories, whose *names* (never their content) are the mapping:

    /var/log/pods/<namespace>_<pod>_<pod uid>/
    /var/log/containers/<pod>_<namespace>_<container>-<container id>.log

With them mounted read-only, a container ID resolves exactly. Without them (or for a container
the kubelet has not written yet), a process is attributed only when the pod-resources answer
leaves no doubt: its GPU is allocated to a single container on the node and every unnamed
process on the GPU is in one pod. Anything else stays unattributed (and is counted).

This needs the host's PID namespace (hostPID): in a container's own namespace the PIDs NVML
reports name other processes, or none. `host_pid_namespace` checks it.

The MPS server (`nvidia-cuda-mps-server`, whose 15-character comm is `nvidia-cuda-mps`) holds
memory on behalf of its clients: it is shared infrastructure, not a pod's, and is reported as
such (its clients appear as processes of their own).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from ..exposition import Row
from ..sampler import GpuState, SamplerView

PROC = Path("/proc")
LOG_ROOT = Path("/var/log")
MPS_COMM = "nvidia-cuda-mps"  # comm is cut to 15 characters; -server and -control share it

Triple = tuple[str, str, str]  # (namespace, pod, container)

_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32}"
# A pod's cgroup: `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid>.slice` (systemd, which
# writes the UID's dashes as underscores). Static pods have 32-hex UIDs.
_POD_SEGMENT = re.compile(rf"(?:.*-)?pod({_UID})(?:\.slice)?", re.IGNORECASE)
_CONTAINER_ID = re.compile(r"(?:^|[-/])([0-9a-f]{64})(?:\.scope)?$")
_CONTAINER_LOG = re.compile(r"([^_/]+)_([^_/]+)_([^_/]+)-([0-9a-f]{64})\.log")


@dataclass(frozen=True)
class ContainerRef:
    pod_uid: str  # with dashes
    container_id: str  # 64 hex digits, no runtime prefix


@dataclass(frozen=True)
class Owner:
    namespace: str
    pod: str
    container: str
    how: str  # "container id", "pod uid", "sole holder": how sure the answer is

    @property
    def triple(self) -> Triple:
        return (self.namespace, self.pod, self.container)


Kind = Literal["mps", "host", "gone"]


class GpuProcessLike(Protocol):
    pid: int
    used_bytes: float | None


@dataclass(frozen=True)
class GpuProcess:
    """A compute process on a GPU as NVML reports it (host PID; None: memory not reported)."""

    pid: int
    used_bytes: float | None


def parse_cgroup(text: str) -> ContainerRef | None:
    """The pod UID and container ID in a /proc/<pid>/cgroup, or None for a process outside
    any pod. Paths may be relative to the reader's cgroup namespace (`/../../kubepods-...`):
    the segments are searched, not anchored."""
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        segments = [s for s in path.split("/") if s and s != ".."]
        for i, segment in enumerate(segments):
            pod = _POD_SEGMENT.fullmatch(segment)
            if pod is None:
                continue
            for rest in segments[i + 1:]:
                if (cid := _CONTAINER_ID.search(rest)) is not None:
                    return ContainerRef(pod.group(1).replace("_", "-").lower(), cid.group(1))
            break  # the pod's own cgroup (no container below it): try the next line
    return None


def classify(pid: int, proc_root: Path = PROC) -> ContainerRef | Kind:
    """Where a process runs: a container, the MPS server, the host, or gone (exited)."""
    base = proc_root / str(pid)
    try:
        comm = (base / "comm").read_text().strip()
        cgroup = (base / "cgroup").read_text()
    except OSError:
        return "gone"
    if comm.startswith(MPS_COMM):
        return "mps"
    ref = parse_cgroup(cgroup)
    return ref if ref is not None else "host"


def host_pid_namespace(proc_root: Path = PROC) -> bool:
    """True in the host's PID namespace: only there is PID 2 the kernel's kthreadd (kernel
    threads are invisible from any other PID namespace)."""
    try:
        return (proc_root / "2" / "comm").read_text().strip() == "kthreadd"
    except OSError:
        return False


@dataclass(frozen=True)
class ContainerNames:
    """Container ID -> (namespace, pod, container) and pod UID -> (namespace, pod), from the
    names in the kubelet's log directories. Empty when they are not mounted."""

    containers: Mapping[str, Triple] = field(default_factory=dict)
    pods: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def scan(cls, log_root: Path = LOG_ROOT) -> ContainerNames:
        containers: dict[str, Triple] = {}
        pods: dict[str, tuple[str, str]] = {}
        for name in _listdir(log_root / "containers"):
            if (m := _CONTAINER_LOG.fullmatch(name)) is not None:
                pod, namespace, container, cid = m.groups()
                containers[cid] = (namespace, pod, container)
        for name in _listdir(log_root / "pods"):
            parts = name.split("_")  # namespace and pod names cannot hold "_"
            if len(parts) == 3 and re.fullmatch(_UID, parts[2], re.IGNORECASE):
                pods[parts[2].lower()] = (parts[0], parts[1])
        return cls(containers, pods)


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def resolve(ref: ContainerRef, names: ContainerNames, holders: Iterable[Triple] = ()
            ) -> Owner | None:
    """The container of `ref`, by its ID, else by its pod's UID and the pod-resources answer
    (`holders`: the containers allocated the process's GPU) when one container of that pod
    holds the GPU."""
    if (exact := names.containers.get(ref.container_id)) is not None:
        return Owner(*exact, how="container id")
    if (pod := names.pods.get(ref.pod_uid)) is not None:
        in_pod = sorted({h for h in holders if h[:2] == pod})
        if len(in_pod) == 1:
            return Owner(*in_pod[0], how="pod uid")
    return None


def pid_owner(pid: int, names: ContainerNames, holders: Iterable[Triple] = (),
              proc_root: Path = PROC) -> Owner | Kind | None:
    """One PID -> its container (Owner), "mps", "host", "gone", or None (a pod's process we
    cannot name)."""
    where = classify(pid, proc_root)
    if isinstance(where, str):
        return where
    return resolve(where, names, holders)


@dataclass
class Attribution:
    """Memory per container on one GPU, and what could not be attributed."""

    memory: dict[Triple, float] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)  # mps, host, gone, unresolved, ...


def attribute_gpu(processes: Iterable[GpuProcessLike], holders: set[Triple],
                  names: ContainerNames, proc_root: Path = PROC) -> Attribution:
    """Sum the memory of a GPU's processes per container (see the module's rules)."""
    out = Attribution()
    unnamed: list[tuple[ContainerRef, float]] = []
    for p in processes:
        if p.used_bytes is None:
            out.skipped["memory not reported"] += 1
            continue
        where = classify(p.pid, proc_root)
        if isinstance(where, str):
            out.skipped[where] += 1
            continue
        owner = resolve(where, names, holders)
        if owner is not None:
            out.memory[owner.triple] = out.memory.get(owner.triple, 0.0) + p.used_bytes
        elif where.pod_uid in names.pods:
            out.skipped["unresolved"] += 1  # a known pod that holds no single container here
        else:
            unnamed.append((where, p.used_bytes))
    # The sole holder: one container holds this GPU and every unnamed process is in one pod.
    if unnamed:
        uids = {ref.pod_uid for ref, _ in unnamed}
        if len(holders) == 1 and len(uids) == 1:
            (sole,) = holders
            out.memory[sole] = out.memory.get(sole, 0.0) + sum(b for _, b in unnamed)
        else:
            out.skipped["unresolved"] += len(unnamed)
    return out


def processes_attr(gpu: GpuState) -> Iterable[GpuProcessLike]:
    """The per-process samples of a GPU, if its backend provides them (`GpuState.processes`:
    not yet, see docs/kubernetes.md)."""
    return getattr(gpu, "processes", ()) or ()


def pod_memory_rows(view: SamplerView, holders: Mapping[str, set[Triple]],
                    names: ContainerNames, proc_root: Path = PROC,
                    processes_of: Callable[[GpuState], Iterable[GpuProcessLike]] = processes_attr,
                    skip: set[str] | frozenset[str] = frozenset(),
                    skipped: Counter[str] | None = None) -> list[Row]:
    """gpu_pod_memory_used_bytes{gpu,uuid,namespace,pod,container} for every GPU of `view`
    (but those in `skip`), from its per-process samples."""
    rows = []
    for gpu in view.gpus:
        if gpu.uuid in skip or not gpu.up:
            continue
        result = attribute_gpu(processes_of(gpu), holders.get(gpu.uuid, set()), names,
                               proc_root)
        if skipped is not None:
            skipped.update(result.skipped)
        for (ns, pod, container), used in sorted(result.memory.items()):
            rows.append(Row("gpu_pod_memory_used_bytes",
                            (("gpu", str(gpu.index)), ("uuid", gpu.uuid), ("namespace", ns),
                             ("pod", pod), ("container", container)), used))
    return rows
