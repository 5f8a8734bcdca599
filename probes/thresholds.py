"""Judging a measurement: thresholds per GPU model and link, a warn band, and the node's peers.

The limits come from `thresholds.yaml` (packaged, overridable by a file of the same format).
`limits()` turns them into absolute numbers for one GPU, which the exporter also publishes as
`gpu_probe_threshold`, so a dashboard draws the very line a probe was judged against.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from exporter.safefiles import FileRefused, read_yaml

from .result import Check, Measurement, Outcome

HIGHER_IS_BETTER_SUFFIXES = ("_bytes_per_second", "_flop_per_second")


@dataclass(frozen=True)
class GpuFacts:
    """What thresholds depend on: the model and the links, as the telemetry reports them."""

    model: str
    pcie_generation: int | None = None  # the maximum (a link that trained lower fails)
    pcie_width: int | None = None
    nvlinks: int = 0


@dataclass(frozen=True)
class Limit:
    quantity: str
    bound: str  # "min" or "max"
    value: float
    warn_min: float | None = None


class Thresholds:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.warn_band = float(data.get("warn_band", 0.1))
        self.peer_tolerance = float(data.get("peer_tolerance", 0.15))

    @classmethod
    def load(cls, override: Path | None = None) -> Thresholds:
        text = resources.files("probes").joinpath("thresholds.yaml").read_text("utf-8")
        data = yaml.safe_load(text)
        if override is not None:
            # The operator's file: read as the daemon's config is (exporter/safefiles.py).
            extra = read_yaml(override, f"thresholds file {override}") or {}
            if not isinstance(extra, dict):
                raise FileRefused(f"thresholds file {override}: must be a mapping")
            data = _merge(data, extra)
        return cls(data)

    def _peak(self, model: str) -> dict[str, float]:
        for entry in self.data.get("models", []):
            if re.search(entry["match"], model):
                return {k: float(v) for k, v in entry.get("peak", {}).items()}
        return {}

    def _link_bytes_per_second(self, probe: str, gpu: GpuFacts) -> float | None:
        links = self.data.get("links", {})
        if probe == "p2p_bandwidth" and gpu.nvlinks:
            return gpu.nvlinks * float(links["nvlink_bytes_per_second"])
        lanes = links.get("pcie_lane_bytes_per_second", {})
        if gpu.pcie_generation in lanes and gpu.pcie_width:
            return float(lanes[gpu.pcie_generation]) * gpu.pcie_width
        return None

    def limits(self, probe: str, gpu: GpuFacts) -> list[Limit]:
        """The absolute limits in force for this probe on this GPU (unknown ones left out)."""
        out = []
        for quantity, rule in self.data.get("probes", {}).get(probe, {}).items():
            if "max" in rule:
                out.append(Limit(quantity, "max", float(rule["max"])))
                continue
            if "min" in rule:
                base = float(rule["min"])
            elif "min_fraction_of_link" in rule:
                link = self._link_bytes_per_second(probe, gpu)
                if link is None:
                    continue
                base = float(rule["min_fraction_of_link"]) * link
            elif "min_fraction_of_peak" in rule:
                peak = self._peak(gpu.model).get(quantity)
                if peak is None:
                    continue
                base = float(rule["min_fraction_of_peak"]) * peak
            else:
                continue
            out.append(Limit(quantity, "min", base, base * (1 + self.warn_band)))
        return out

    def judge(
        self,
        probe: str,
        gpu: GpuFacts,
        m: Measurement,
        peers: dict[str, list[float]] | None = None,
    ) -> tuple[Outcome, bool, list[Check], str]:
        """(outcome, warn, checks, reason) for a measurement of this GPU."""
        if m.skipped:
            return Outcome.SKIPPED, False, [], m.skipped
        values = dict(m.quantities)
        if m.corrupted is not None:
            values["corrupted"] = float(m.corrupted)
        checks, failed, warn = [], [], False
        for limit in self.limits(probe, gpu):
            value = values.get(limit.quantity)
            if value is None:
                continue
            ok = value >= limit.value if limit.bound == "min" else value <= limit.value
            checks.append(Check(limit.quantity, value, limit.bound, limit.value, ok))
            if not ok:
                failed.append(f"{limit.quantity} {value:.4g} {'<' if limit.bound == 'min' else '>'}"
                              f" {limit.bound} {limit.value:.4g}")
            elif limit.warn_min is not None and value < limit.warn_min:
                warn = True
        for quantity, others in (peers or {}).items():
            value = values.get(quantity)
            if value is None or len(others) < 2 or not quantity.endswith(
                    HIGHER_IS_BETTER_SUFFIXES):
                continue
            floor = statistics.median(others) * (1 - self.peer_tolerance)
            ok = value >= floor
            checks.append(Check(quantity, value, "peers", floor, ok))
            if not ok:
                failed.append(f"{quantity} {value:.4g} more than {self.peer_tolerance:.0%} below "
                              f"the median of {len(others)} peers")
        if failed:
            return Outcome.FAIL, warn, checks, "; ".join(failed)
        return Outcome.PASS, warn, checks, ""


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
