"""Per-GPU state of the NVML backend: the handle and what was learned about this GPU.

Only the GPU's own worker thread touches an NvmlGpu, so nothing here needs a lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ...catalog import Tier
from ..base import Sample, Unsupported
from .errors import LIBRARY_CODES, LOST_CODES, code_of, translate

T = TypeVar("T")
FUNCTION_NOT_FOUND = 13


@dataclass
class NvmlGpu:
    nvml: Any  # the pynvml module (or a fake of it)
    handle: Any
    index: int
    uuid: str
    driver_version: str
    cuda_version: str
    # Sub-items (a sensor, a link, a counter) this GPU answered "not supported" for.
    absent: set[str] = field(default_factory=set)
    # Per-field memory: e.g. which memory-info version works, which NVLink links exist.
    memo: dict[str, Any] = field(default_factory=dict)

    @property
    def driver_major(self) -> int:
        try:
            return int(self.driver_version.split(".", 1)[0])
        except ValueError:
            return 0

    def compat(self, names: tuple[str, ...], *args: Any) -> Any:
        """Call the newest of `names` this driver has; FunctionNotFound falls back, once."""
        key = "compat:" + names[0]
        for i in range(self.memo.get(key, 0), len(names)):
            try:
                return getattr(self.nvml, names[i])(*args)
            except self.nvml.NVMLError as e:
                if code_of(e) != FUNCTION_NOT_FOUND or i + 1 == len(names):
                    raise
                self.memo[key] = i + 1
        raise AssertionError("unreachable")

    def each(self, items: Iterable[tuple[str, Callable[[], T]]]) -> list[tuple[str, T]]:
        """Call each item, skipping the ones this GPU does not support (remembered by key).

        Raises Unsupported when none of the items is supported, so the whole field is then
        remembered as absent; a lost GPU or a broken library still raises at once.
        """
        out: list[tuple[str, T]] = []
        for key, call in items:
            if key in self.absent:
                continue
            try:
                out.append((key, call()))
            except self.nvml.NVMLError as e:
                code = code_of(e)
                if code in LOST_CODES or code in LIBRARY_CODES:
                    raise translate(e) from None
                if isinstance(translate(e), Unsupported):
                    self.absent.add(key)
                    continue
                raise
        if not out:
            raise Unsupported("no item of this field is supported on this GPU")
        return out


@dataclass(frozen=True)
class FieldSpec:
    """A field of the NVML backend: read(gpu) returns samples; NVML errors are translated."""

    name: str
    tier: Tier
    collector: str
    read: Callable[[NvmlGpu], Iterable[Sample]]
