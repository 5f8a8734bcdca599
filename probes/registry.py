"""The probes by name, what each measures, and their default parameters.

The parent process uses this table without importing CuPy; the child imports the module named
here (`module`) and calls its `measure(ctx)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Quantity:
    """How a measured quantity is exported: family and its probe-specific labels."""

    family: str
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ProbeSpec:
    name: str
    module: str
    pair: bool = False  # measures a GPU pair (peer bandwidth)
    in_process: bool = False  # no GPU work, no child: judged from telemetry and events
    memory_bytes: int = 512 * 2**20  # the most GPU memory the child may take
    params: dict[str, Any] = field(default_factory=dict)
    # Measured quantities that are exported, and as what. A probe may measure more (e.g.
    # graph_replay's `replays_100_seconds`): those are checked against thresholds only.
    quantities: dict[str, Quantity] = field(default_factory=dict)


def _q(family: str, **labels: str) -> Quantity:
    return Quantity(family, tuple(labels.items()))


BW = "gpu_probe_bandwidth_bytes_per_second"
PROBES: dict[str, ProbeSpec] = {
    spec.name: spec
    for spec in (
        ProbeSpec(
            "graph_replay", "probes.graph_replay", memory_bytes=64 * 2**20,
            params={"elements": 1 << 20, "fma_iterations": 512, "replays": 200},
            quantities={
                "replay_mean_seconds": _q("gpu_probe_latency_seconds", stat="mean"),
                "replay_p99_seconds": _q("gpu_probe_latency_seconds", stat="p99"),
                "replay_cv_ratio": _q("gpu_probe_jitter_ratio"),
                "replay_h2d_bytes_per_second": _q(BW, direction="h2d", peer_uuid=""),
            },
        ),
        ProbeSpec(
            "pcie_bandwidth", "probes.pcie_bandwidth", memory_bytes=256 * 2**20,
            params={"bytes": 64 * 2**20, "repeats": 10},
            quantities={
                "h2d_bytes_per_second": _q(BW, direction="h2d", peer_uuid=""),
                "d2h_bytes_per_second": _q(BW, direction="d2h", peer_uuid=""),
            },
        ),
        ProbeSpec(
            "memory_bandwidth", "probes.memory_bandwidth", memory_bytes=1024 * 2**20,
            params={"bytes": 256 * 2**20, "repeats": 10},
            quantities={"d2d_bytes_per_second": _q(BW, direction="d2d", peer_uuid="")},
        ),
        ProbeSpec(
            "gemm", "probes.gemm", memory_bytes=1024 * 2**20,
            params={"n": 8192, "repeats": 10},
            quantities={
                "bf16_flop_per_second": _q("gpu_probe_flop_per_second", dtype="bf16"),
                "fp16_flop_per_second": _q("gpu_probe_flop_per_second", dtype="fp16"),
            },
        ),
        ProbeSpec("ecc_xid_scan", "probes.ecc_xid_scan", in_process=True, memory_bytes=0,
                  params={"window_seconds": 10.0}),
        ProbeSpec(
            "p2p_bandwidth", "probes.p2p_bandwidth", pair=True, memory_bytes=512 * 2**20,
            params={"bytes": 256 * 2**20, "repeats": 10},
            quantities={"p2p_bytes_per_second": _q(BW, direction="p2p")},
        ),
    )
}
