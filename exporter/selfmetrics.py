"""The exporter's own families: build, backends, collection cycles and their errors."""

from __future__ import annotations

import platform
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from . import __version__
from .exposition import Row
from .sampler import SamplerView


@dataclass(frozen=True)
class BackendStatus:
    name: str
    up: bool
    reason: str = ""


def exporter_rows(
    view: SamplerView | None, backends: Sequence[BackendStatus]
) -> Iterable[Row]:
    yield Row("gpu_exporter_build_info",
              (("version", __version__), ("python_version", platform.python_version())), 1.0)
    for b in backends:
        yield Row("gpu_exporter_backend_up", (("backend", b.name),), 1.0 if b.up else 0.0)
    if view is None:
        return
    for tier, seconds in sorted(view.tier_duration.items()):
        yield Row("gpu_exporter_collection_duration_seconds", (("tier", tier.value),), seconds)
    for tier, at in sorted(view.tier_completed_at.items()):
        yield Row("gpu_exporter_last_collection_timestamp_seconds", (("tier", tier.value),), at)
    for (tier, gpu, reason), count in sorted(view.errors.items()):
        yield Row("gpu_exporter_collection_errors_total",
                  (("tier", tier), ("gpu", gpu), ("reason", reason)), float(count))


def price_rows(view: SamplerView | None, hourly_dollars: float | None) -> Iterable[Row]:
    """gpu_hourly_price_dollars for every GPU, when a price is configured (any backend)."""
    if hourly_dollars is None or view is None:
        return
    for gpu in view.gpus:
        yield Row("gpu_hourly_price_dollars", (("gpu", str(gpu.index)), ("uuid", gpu.uuid)),
                  hourly_dollars)
