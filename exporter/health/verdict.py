"""What the health verdict is: per GPU a status (ok, warn, fail) and the reasons behind it.

The one data structure the metrics (`gpu_health_status`, `gpu_health_reason`), `GET /health`,
the status page, `/readyz` (when gated) and the `probe` command's exit code all read, so an
admission check and an alert never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any


class Status(IntEnum):
    """Ordered: the worst reason decides a GPU's status. Values are `gpu_health_status`'s."""

    OK = 0
    WARN = 1
    FAIL = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Status:
        return cls[text.upper()]


@dataclass(frozen=True)
class Reason:
    """One active reason. `name` is the stable `reason` label (snake_case, bounded set);
    `detail` is for people (never a label); `since` is the unix time it began, if known."""

    name: str
    severity: Status
    detail: str
    since: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.name, "severity": self.severity.label, "detail": self.detail,
                "since": self.since}


@dataclass(frozen=True)
class GpuVerdict:
    gpu: int
    uuid: str
    reasons: tuple[Reason, ...] = ()
    model: str = ""

    @property
    def status(self) -> Status:
        return max((r.severity for r in self.reasons), default=Status.OK)

    def to_dict(self) -> dict[str, Any]:
        return {"gpu": self.gpu, "uuid": self.uuid, "model": self.model,
                "status": self.status.label, "reasons": [r.to_dict() for r in self.reasons]}


@dataclass(frozen=True)
class NodeVerdict:
    gpus: tuple[GpuVerdict, ...] = ()
    evaluated_at: float = 0.0  # unix time
    notes: tuple[str, ...] = field(default=())  # what the verdict could not judge, and why

    @property
    def status(self) -> Status:
        return max((g.status for g in self.gpus), default=Status.OK)

    def failing(self) -> list[GpuVerdict]:
        return [g for g in self.gpus if g.status is Status.FAIL]

    def gpu(self, index: int) -> GpuVerdict | None:
        return next((g for g in self.gpus if g.gpu == index), None)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status.label, "evaluated_at": self.evaluated_at,
                "gpus": [g.to_dict() for g in self.gpus], "notes": list(self.notes)}


def merge_reasons(reasons: Iterable[Reason]) -> tuple[Reason, ...]:
    """One reason per name (the most severe, then the earliest), worst first, then by name."""
    best: dict[str, Reason] = {}
    for r in reasons:
        old = best.get(r.name)
        if old is None or (r.severity, -(r.since or 0)) > (old.severity, -(old.since or 0)):
            best[r.name] = r
    return tuple(sorted(best.values(), key=lambda r: (-r.severity, r.name)))
