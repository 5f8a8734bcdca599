"""The simulated node's layout: who each GPU is, what runs on it, which pods hold it.

Everything here is decided once, from the seed, so two runs with the same seed show the same
node: the same UUIDs, bus ids and serials, the same GPUs idle, the same pod allocation. Dashboards
and tests can then name a GPU by its index and know what to expect of it.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from enum import Enum

from .profiles import GpuProfile

# Bus ids of the eight GPUs of an HGX H100 board and of an MI300X platform, in index order.
_NVIDIA_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)
_AMD_BUSES = (0x05, 0x26, 0x46, 0x65, 0x85, 0xA5, 0xC5, 0xE5)
# vLLM's default share of device memory: weights plus a preallocated KV cache.
SERVING_MEMORY_FRACTION = 0.9


def seeded_unit(*key: object) -> float:
    """A uniform number in [0, 1) fixed by `key`: the same in every process and on every host.

    Python's hash() is salted per process, so it cannot give repeatable telemetry.
    """
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _hex(*key: object, length: int) -> str:
    return hashlib.blake2b(repr(key).encode(), digest_size=16).hexdigest()[:length]


def _uuid_body(*key: object) -> str:
    h = _hex(*key, length=32)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


class Role(str, Enum):
    SERVING = "serving"  # an LLM server: bursts of load, memory full of weights and KV cache
    IDLE = "idle"  # no process at all: what a probe's idle gate looks for


@dataclass(frozen=True)
class PodAllocation:
    namespace: str
    pod: str
    container: str
    mig_uuid: str = ""


@dataclass(frozen=True)
class MigInstance:
    uuid: str
    gpu_instance: int
    compute_instance: int
    profile: str
    memory_total_bytes: int


@dataclass(frozen=True)
class GpuLayout:
    index: int
    uuid: str
    serial: str
    pci_bus_id: str
    numa_node: int
    role: Role
    processes: int  # compute processes while no fault changes it
    memory_used_bytes: int  # steady memory in use (weights + KV cache) before small movement
    pods: tuple[PodAllocation, ...]
    mig: tuple[MigInstance, ...]


def plan_node(
    profile: GpuProfile, gpus: int, seed: int, mig_gpus: tuple[int, ...] = ()
) -> tuple[GpuLayout, ...]:
    """Lay out a node: one or two idle GPUs, one GPU time-sliced by two pods, one unallocated."""
    if mig_gpus and not profile.mig_profile:
        raise ValueError(f"the simulated {profile.key} has no MIG mode")
    if bad := [g for g in mig_gpus if not 0 <= g < gpus]:
        raise ValueError(f"mig_gpus {bad} out of range for a node of {gpus} GPUs")
    rng = random.Random(f"{seed}:layout")  # str seeds are hashed with SHA-512: repeatable
    candidates = [i for i in range(gpus) if i not in mig_gpus]
    n_idle = 0 if gpus < 2 else 1 if gpus < 4 else rng.choice((1, 2))
    idle = rng.sample(candidates, min(n_idle, len(candidates)))
    serving = [i for i in candidates if i not in idle]
    time_sliced = rng.choice(serving) if len(serving) >= 2 else None
    unallocated = idle[0] if idle else None

    counters = {"70b": 0, "8b": 0, "notebook": 0}

    def pod(kind: str, mig_uuid: str = "") -> PodAllocation:
        n = counters[kind]
        counters[kind] += 1
        if kind == "notebook":  # allocated, holding the GPU, running nothing: wasted money
            return PodAllocation("research", f"notebook-{n}", "jupyter", mig_uuid)
        return PodAllocation("llm-serving", f"vllm-llama3-{kind}-{n}", "vllm", mig_uuid)

    layouts = []
    for i in range(gpus):
        mig = _mig_instances(profile, seed, i) if i in mig_gpus else ()
        if mig:
            pods = tuple(pod("8b", m.uuid) for m in mig)
            memory = sum(m.memory_total_bytes for m in mig) * SERVING_MEMORY_FRACTION
        elif i == unallocated:
            pods = ()
        elif i in idle:
            pods = (pod("notebook"),)
        elif i == time_sliced:
            pods = (pod("8b"), pod("8b"))
        else:
            pods = (pod("70b"),)
        role = Role.IDLE if i in idle else Role.SERVING
        if not mig:
            serving = role is Role.SERVING
            memory = profile.memory_total_bytes * SERVING_MEMORY_FRACTION if serving else 0
        layouts.append(GpuLayout(
            index=i,
            uuid=_uuid(profile, seed, i),
            serial=_serial(profile, seed, i),
            pci_bus_id=_bus_id(profile, i),
            numa_node=0 if i < (gpus + 1) // 2 else 1,
            role=role,
            processes=0 if role is Role.IDLE else len(pods),
            memory_used_bytes=int(memory),
            pods=pods,
            mig=mig,
        ))
    return tuple(layouts)


def _uuid(profile: GpuProfile, seed: int, index: int) -> str:
    if profile.vendor == "amd":
        # amd-smi's UUIDs carry the device id (0x74a1 for MI300X) and a fixed middle.
        h = _hex(seed, "uuid", index, length=18)
        return f"{h[:4]}74a1-0000-1000-80{h[4:6]}-{h[6:18]}"
    return "GPU-" + _uuid_body(seed, "uuid", index)


def _serial(profile: GpuProfile, seed: int, index: int) -> str:
    if profile.vendor == "amd":
        return _hex(seed, "serial", index, length=16).upper()
    return "1654" + str(int(seeded_unit(seed, "serial", index) * 10**9)).zfill(9)


def _bus_id(profile: GpuProfile, index: int) -> str:
    buses = _AMD_BUSES if profile.vendor == "amd" else _NVIDIA_BUSES
    domain, bus = divmod(index, len(buses))
    if profile.vendor == "amd":
        return f"{domain:04x}:{buses[bus]:02x}:00.0"  # amdsmi's BDF form
    return f"{domain:08X}:{buses[bus]:02X}:00.0"  # NVML's busId form


def _mig_instances(profile: GpuProfile, seed: int, index: int) -> tuple[MigInstance, ...]:
    # Two half-GPU instances; on Hopper and Ampere 3g profiles get GPU instance ids 1 and 2.
    return tuple(
        MigInstance("MIG-" + _uuid_body(seed, "mig", index, gi), gi, 0, profile.mig_profile,
                    profile.mig_instance_bytes)
        for gi in (1, 2)
    )
