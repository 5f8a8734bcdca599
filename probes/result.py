"""What a probe run produces: the child's measurement and the runner's verdict on it.

The child prints one JSON document (a `Measurement`) on its standard output; the runner turns it
into a `ProbeResult` with an outcome. Quantities are named in base units
(`h2d_bytes_per_second`, `replay_p99_seconds`, `bf16_flop_per_second`): the thresholds file and
the sim scenario's `probe` faults use the same names.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class Outcome(str, Enum):
    PASS = "pass"
    FAIL = "fail"  # hardware below threshold (counts against health once a retry confirms it)
    ERROR = "error"  # the probe itself broke: crash, timeout, CUDA error, out of memory
    SKIPPED = "skipped"  # busy GPU, unsupported feature


@dataclass
class Measurement:
    """The child's answer. `quantities` are the measured figures; `corrupted` counts output
    elements that differ from the host's reference (silent data corruption)."""

    quantities: dict[str, float] = field(default_factory=dict)
    corrupted: int | None = None
    measure_seconds: float = 0.0
    start_seconds: float = 0.0  # CuPy import, context creation, first compilation
    skipped: str | None = None  # reason, when the probe could not run here (not an error)
    detail: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Measurement:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("measurement is not a JSON object")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown keys in measurement: {sorted(unknown)}")
        m = cls(**data)
        if not isinstance(m.quantities, dict) or not all(
            isinstance(k, str) and isinstance(v, int | float) for k, v in m.quantities.items()
        ):
            raise ValueError("quantities must map names to numbers")
        return m


@dataclass
class Check:
    """One threshold applied to one quantity."""

    quantity: str
    value: float
    bound: str  # "min", "max", "warn_min", "peers"
    limit: float
    ok: bool


@dataclass
class ProbeResult:
    probe: str
    gpu: int
    uuid: str
    outcome: Outcome
    reason: str = ""
    warn: bool = False  # inside the warn band: passes, but says so
    measurement: Measurement | None = None
    checks: list[Check] = field(default_factory=list)
    peer_uuid: str | None = None
    started_at: float = 0.0  # unix time
    total_seconds: float = 0.0  # wall time including the child's start
    attempts: int = 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outcome"] = self.outcome.value
        return d
