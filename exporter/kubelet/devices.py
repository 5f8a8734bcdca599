"""Device IDs of the kubelet's answer -> our GPUs (index, uuid, MIG instance).

A device plugin names its devices as it likes; the kubelet passes the names through. We handle
the spellings of the two plugins users run:

- NVIDIA (`nvidia.com/gpu`, `nvidia.com/gpu.shared`, `nvidia.com/mig-<profile>`, ...):
  `GPU-<uuid>` (deviceIDStrategy=uuid, the default), `MIG-<uuid>` (MIG strategies single and
  mixed), the plain NVML index `0`, `1`, ... (deviceIDStrategy=index) and `<gpu>:<slot>` for a
  MIG device under the index strategy. Time-slicing and MPS sharing advertise each GPU several
  times as `<id>::<replica>`; the suffix is dropped, so two pods on one GPU are two series of
  the same GPU. Drivers before R470 spelled MIG devices `MIG-GPU-<uuid>/<gi>/<ci>`.
- AMD (`amd.com/gpu` and the partition resources of its plugin): the PCI address of the GPU,
  `0000:c1:00.0`, matched to gpu_info's pci_bus_id in any case and domain width.

Anything else (another vendor's resource, an ID we cannot place) is returned as unknown.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..events.xid_parse import normalize_bus_id
from ..sampler import SamplerView

VENDOR_PREFIXES = ("nvidia.com/", "amd.com/")

_INDEX = re.compile(r"\d{1,4}")
_MIG_INDEX = re.compile(r"(\d{1,4}):(\d{1,4})")  # index strategy: <gpu index>:<MIG slot>
_LEGACY_MIG = re.compile(r"MIG-(GPU-[0-9a-f-]+)/\d+/\d+", re.IGNORECASE)


@dataclass(frozen=True, order=True)
class Allocation:
    """One device of one container, as the kubelet reported it."""

    namespace: str
    pod: str
    container: str
    resource: str
    device_id: str


@dataclass(frozen=True, order=True)
class Target:
    """The GPU (and MIG instance, "" for a whole GPU) a device ID stands for."""

    index: int
    uuid: str
    mig_uuid: str = ""


def strip_replica(device_id: str) -> str:
    """`GPU-abc::3` -> `GPU-abc`: a time-slicing or MPS replica is its GPU."""
    return device_id.split("::", 1)[0]


class GpuIndex:
    """Lookups from the spellings above to our GPUs, built from one sampler view.

    `known_migs` carries MIG instances seen in earlier views: a GPU that is down keeps only
    gpu_info, and its MIG devices must still resolve while it is down.
    """

    def __init__(self, view: SamplerView | None,
                 known_migs: Mapping[str, Target] | None = None) -> None:
        self.by_uuid: dict[str, Target] = {}
        self.nvidia_by_index: dict[int, Target] = {}
        self.by_bus: dict[str, Target] = {}
        self.by_mig: dict[str, Target] = dict(known_migs or {})
        for gpu in view.gpus if view is not None else ():
            whole = Target(gpu.index, gpu.uuid)
            self.by_uuid[gpu.uuid.lower()] = whole
            if gpu.uuid.upper().startswith("GPU-"):
                # The NVIDIA plugin's index is NVML's; an AMD GPU on the same node has its own
                # numbering, so only NVIDIA GPUs answer to it.
                self.nvidia_by_index[gpu.index] = whole
            for s in gpu.samples:
                if s.family == "gpu_info":
                    bus = dict(s.labels).get("pci_bus_id")
                    if bus:
                        with contextlib.suppress(ValueError):  # a malformed label: no lookup
                            self.by_bus[normalize_bus_id(bus)] = whole
                elif s.family == "gpu_mig_info":
                    mig = dict(s.labels).get("mig_uuid")
                    if mig:
                        self.by_mig[mig.lower()] = Target(gpu.index, gpu.uuid, mig)

    def resolve(self, resource: str, device_id: str) -> Target | None:
        """The GPU a device of `resource` stands for, or None when it is not ours to place."""
        if not resource.startswith(VENDOR_PREFIXES):
            return None
        ident = strip_replica(device_id.strip())
        if resource.startswith("amd.com/"):
            try:
                return self.by_bus.get(normalize_bus_id(ident))
            except ValueError:
                return self.by_uuid.get(ident.lower())
        upper = ident.upper()
        if upper.startswith("GPU-"):
            return self.by_uuid.get(ident.lower())
        if upper.startswith("MIG-"):
            if (hit := self.by_mig.get(ident.lower())) is not None:
                return hit
            legacy = _LEGACY_MIG.fullmatch(ident)
            if legacy and (parent := self.by_uuid.get(legacy.group(1).lower())) is not None:
                return Target(parent.index, parent.uuid, ident)
            return None
        if _INDEX.fullmatch(ident):
            return self.nvidia_by_index.get(int(ident))
        if (slot := _MIG_INDEX.fullmatch(ident)) is not None:
            # The index strategy names a MIG device by its parent's index and its slot, which
            # no sample of ours carries: the pod is placed on the parent GPU, mig_uuid empty.
            return self.nvidia_by_index.get(int(slot.group(1)))
        return None


@dataclass(frozen=True)
class Placement:
    """Where the allocations of one kubelet answer land on this node's GPUs."""

    series: tuple[tuple[Target, str, str, str], ...]  # (target, namespace, pod, container)
    unknown: tuple[Allocation, ...]  # vendor devices that matched no GPU of ours

    def uuids(self) -> set[str]:
        return {t.uuid for t, *_ in self.series}

    def holders(self) -> dict[str, set[tuple[str, str, str]]]:
        """GPU uuid -> the containers allocated the GPU or one of its MIG instances."""
        out: dict[str, set[tuple[str, str, str]]] = {}
        for target, ns, pod, container in self.series:
            out.setdefault(target.uuid, set()).add((ns, pod, container))
        return out


def place(allocations: Iterable[Allocation], index: GpuIndex) -> Placement:
    """Resolve every vendor device; one series per (GPU or MIG instance, container).

    A container holding two replicas of one time-sliced GPU is one series, not two.
    """
    series: dict[tuple[Target, str, str, str], None] = {}
    unknown: list[Allocation] = []
    for a in allocations:
        if not a.resource.startswith(VENDOR_PREFIXES):
            continue  # CPUs, RDMA NICs, hugepages' devices: not GPUs
        target = index.resolve(a.resource, a.device_id)
        if target is None:
            unknown.append(a)
            continue
        series[(target, a.namespace, a.pod, a.container)] = None
    return Placement(tuple(sorted(series)), tuple(unknown))
