"""Durations in configuration: seconds as a number, or Prometheus-style strings (`1m30s`)."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: Any) -> float:
    """Return seconds; raise ValueError with the accepted forms on anything else."""
    seconds = _parse(value)
    if not math.isfinite(seconds):
        raise ValueError("must be a finite duration")
    return seconds


def _parse(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 5s, 500ms, 1m30s or a number of seconds")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        parts = _PART.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    raise ValueError("must be a duration such as 5s, 500ms, 1m30s or a number of seconds")


Duration = Annotated[float, BeforeValidator(parse_duration)]
