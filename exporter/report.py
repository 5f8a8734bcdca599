"""One collection shown to a person (a rich table like nvidia-smi) or to a program (JSON)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table

from .backends.base import Sample
from .sampler import GpuState, SamplerView


def sample_value(samples: Iterable[Sample], family: str, **labels: str) -> float | None:
    want = set(labels.items())
    for s in samples:
        if s.family == family and want <= set(s.labels):
            return s.value
    return None


def fmt_value(value: float | None, scale: float = 1.0, spec: str = ".0f", unit: str = "") -> str:
    return "-" if value is None else f"{value / scale:{spec}}{unit}"


def to_json(view: SamplerView) -> dict[str, Any]:
    gpus = []
    for g in view.gpus:
        metrics: dict[str, list[dict[str, Any]]] = {}
        for s in g.samples:
            if not s.family.startswith("_"):  # internal samples are not metrics
                metrics.setdefault(s.family, []).append({"labels": dict(s.labels),
                                                         "value": s.value})
        gpus.append({"index": g.index, "uuid": g.uuid, "backend": g.backend, "up": g.up,
                     "down_reason": g.down_reason, "metrics": metrics})
    return {"gpus": gpus}


def gpu_model(g: GpuState, unknown: str = "?") -> str:
    for s in g.samples:
        if s.family == "gpu_info":
            return dict(s.labels).get("model", unknown)
    return unknown


def print_table(view: SamplerView, console: Console | None = None) -> None:
    table = Table(title="gpu-fleet-exporter snapshot", header_style="bold")
    for col in ("GPU", "Model", "Up", "Util", "Memory used / total", "Temp", "Power / limit",
                "SM clock", "Clock events", "ECC uncorr."):
        table.add_column(col, justify="left" if col in ("Model", "Clock events") else "right")
    for g in view.gpus:
        s = g.samples
        events = sorted(dict(x.labels)["reason"] for x in s
                        if x.family == "gpu_clock_event_active" and x.value)
        ecc = sample_value(s, "gpu_ecc_errors_total", type="uncorrected", scope="volatile",
                     location="total")
        table.add_row(
            str(g.index),
            gpu_model(g),
            "yes" if g.up else f"[red]no[/red] ({g.down_reason})",
            fmt_value(sample_value(s, "gpu_utilization_ratio"), 0.01, ".0f", " %"),
            f"{fmt_value(sample_value(s, 'gpu_memory_used_bytes'), 2**30, '.1f')} / "
            f"{fmt_value(sample_value(s, 'gpu_memory_total_bytes'), 2**30, '.1f', ' GiB')}",
            fmt_value(sample_value(s, "gpu_temperature_celsius", sensor="gpu"), unit=" °C"),
            f"{fmt_value(sample_value(s, 'gpu_power_watts'))} / "
            f"{fmt_value(sample_value(s, 'gpu_power_limit_watts', limit='enforced'), unit=' W')}",
            fmt_value(sample_value(s, "gpu_clock_hertz", clock="sm"), 1e6, ".0f", " MHz"),
            ", ".join(events) or "-",
            fmt_value(ecc),
        )
    (console or Console()).print(table)
