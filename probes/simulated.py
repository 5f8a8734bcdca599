"""Probe results of the simulated node: what a healthy GPU of each model measures, changed by
the scenario's `probe` faults. The runner hands them to the child (`--runtime sim`), so the
simulated daemon exercises the real child process, deadlines and thresholds."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# Plausible healthy figures per model (bytes/s, FLOP/s, seconds), in base units.
_GRAPH = {"replay_mean_seconds": 2.1e-4, "replay_p99_seconds": 2.4e-4, "replay_cv_ratio": 0.012,
          "replay_h2d_bytes_per_second": 3.9e10, "replays_100_seconds": 0.022}
NOMINAL: list[tuple[str, dict[str, dict[str, float]]]] = [
    ("H200", {
        "graph_replay": _GRAPH,
        "pcie_bandwidth": {"h2d_bytes_per_second": 5.4e10, "d2h_bytes_per_second": 5.5e10},
        "memory_bandwidth": {"d2d_bytes_per_second": 4.3e12},
        "gemm": {"bf16_flop_per_second": 7.9e14, "fp16_flop_per_second": 7.8e14},
        "p2p_bandwidth": {"p2p_bytes_per_second": 3.7e11},
    }),
    ("H100", {
        "graph_replay": _GRAPH,
        "pcie_bandwidth": {"h2d_bytes_per_second": 5.3e10, "d2h_bytes_per_second": 5.4e10},
        "memory_bandwidth": {"d2d_bytes_per_second": 3.0e12},
        "gemm": {"bf16_flop_per_second": 7.9e14, "fp16_flop_per_second": 7.8e14},
        "p2p_bandwidth": {"p2p_bytes_per_second": 3.7e11},
    }),
    ("A100", {
        "graph_replay": {**_GRAPH, "replay_mean_seconds": 3.6e-4, "replay_p99_seconds": 4.0e-4,
                         "replays_100_seconds": 0.037},
        "pcie_bandwidth": {"h2d_bytes_per_second": 2.6e10, "d2h_bytes_per_second": 2.6e10},
        "memory_bandwidth": {"d2d_bytes_per_second": 1.7e12},
        "gemm": {"bf16_flop_per_second": 2.7e14, "fp16_flop_per_second": 2.7e14},
        "p2p_bandwidth": {"p2p_bytes_per_second": 2.3e11},
    }),
    ("MI300X", {
        "graph_replay": {**_GRAPH, "replay_mean_seconds": 2.6e-4},
        "pcie_bandwidth": {"h2d_bytes_per_second": 5.0e10, "d2h_bytes_per_second": 5.1e10},
        "memory_bandwidth": {"d2d_bytes_per_second": 4.1e12},
        "gemm": {"bf16_flop_per_second": 9.0e14, "fp16_flop_per_second": 9.0e14},
        "p2p_bandwidth": {"p2p_bytes_per_second": 5.0e10},
    }),
]


def sim_params(model: str, probe: str, overrides: Mapping[str, float | str]) -> dict[str, Any]:
    """`params` for the child: the model's healthy figures with the scenario's faults applied.

    A `behaviour` override (crash, hang, garbage, oom) and `corrupted` pass through to the
    child, so a scenario can also make the probe itself break or detect corruption."""
    nominal: dict[str, float] = {}
    for pattern, probes in NOMINAL:
        if re.search(pattern, model):
            nominal = dict(probes.get(probe, {}))
            break
    quantities = {**nominal, **{k: v for k, v in overrides.items()
                                if k not in ("behaviour", "corrupted")}}
    sim: dict[str, Any] = {"quantities": quantities, "start_seconds": 0.0,
                           "measure_seconds": 0.01}
    for key in ("behaviour", "corrupted"):
        if key in overrides:
            sim[key] = overrides[key]
    return {"sim": sim}
