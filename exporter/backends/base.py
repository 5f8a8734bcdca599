"""The backend protocol: enumerate GPUs, read one field of one GPU, report events.

A backend describes what it can read as `Field`s: small named readers, each in one tier and one
collector. The sampler, not the backend, owns scheduling, deadlines and the memory of which fields
a GPU does not support, so every backend gets the same isolation rules for free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..catalog import Tier

LabelPairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of one family, with the family's own labels (the GPU's are added later)."""

    family: str
    value: float
    labels: LabelPairs = ()


# Samples a backend hands to the daemon that are not metrics: names starting with "_" are never
# rendered. One compute process on the GPU: labels pid, value its memory in bytes (-1: the
# driver does not report it). Pod attribution sums them per container.
PROCESS_MEMORY = "_process_memory_bytes"


def sample(family: str, value: float, **labels: object) -> Sample:
    return Sample(family, float(value), tuple((k, str(v)) for k, v in labels.items()))


@dataclass(frozen=True)
class Device:
    """A GPU as the backend enumerated it. `handle` is the backend's own reference."""

    index: int
    uuid: str
    handle: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Field:
    """A named reader of related values, e.g. 'memory_info' or 'ecc_volatile'.

    `read` returns samples or raises one of the errors below. A field is the unit of the
    per-call deadline and of the "unsupported" memory.
    """

    name: str
    tier: Tier
    collector: str
    read: Callable[[Device], Iterable[Sample]]


@dataclass(frozen=True)
class BackendEvent:
    """Something the device reported asynchronously (Xid, fell off the bus, reset, ...)."""

    uuid: str
    kind: str  # "xid" or an event name
    code: int | None = None
    message: str = ""
    timestamp: float = 0.0
    pid: int | None = None  # the process the driver named, when it named one
    process: str | None = None


class Unsupported(Exception):
    """This GPU does not have this field (NVML NotSupported, FunctionNotFound, ...): remembered."""


class DeviceLost(Exception):
    """The GPU cannot be read at all any more (fell off the bus, lost, reset in progress)."""


class BackendUnavailable(Exception):
    """The vendor library cannot be initialized on this host; the message says why."""


class Backend(Protocol):
    name: str

    def start(self) -> None:
        """Initialize the vendor library. Raise BackendUnavailable with a reason."""

    def stop(self) -> None:
        """Release the library. Called only when no read is in flight."""

    def devices(self) -> Sequence[Device]:
        """Enumerate the GPUs (may raise DeviceLost/BackendUnavailable on a broken driver)."""

    def fields(self, device: Device) -> Sequence[Field]:
        """Everything this backend can try to read on this device, all tiers."""

    def poll_events(self, timeout: float) -> list[BackendEvent]:
        """Wait up to `timeout` seconds for events; return what arrived (may be empty)."""
