"""Per-GPU state of the amdsmi backend: the handle, its partition, what it does not support.

Only the GPU's own worker thread touches an AmdGpu, so nothing here needs a lock. A handle is
one GPU as the scheduler sees it: a whole card, or one compute partition of an MI300 (CPX: eight
handles per card). Readings of the whole board (power, energy, board temperatures, PCIe, XGMI,
RAS) come from the card's first partition only, so partitions never multiply them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ...catalog import Tier
from ..base import Sample, Unsupported
from .errors import translate

T = TypeVar("T")


@dataclass
class AmdGpu:
    smi: Any  # the amdsmi module (or a fake of it)
    handle: Any  # ctypes.c_void_p: unhashable, so never a dict key
    index: int
    uuid: str
    bdf: str
    partition: int = 0  # compute partition on its card (kfd current_partition_id); 0 if none
    driver_version: str = ""
    rocm_version: str = ""
    absent: set[str] = field(default_factory=set)  # sub-items answered "not supported"
    memo: dict[str, Any] = field(default_factory=dict)  # e.g. previous accumulator readings

    @property
    def primary(self) -> bool:
        """The card's first partition: the one that reports whole-board values."""
        return self.partition == 0

    def call(self, name: str, *args: Any) -> Any:
        """amdsmi.<name>(handle, *args), its errors translated (Unsupported, LibraryFailure)."""
        try:
            return getattr(self.smi, name)(self.handle, *args)
        except self.smi.AmdSmiLibraryException as e:
            raise translate(e) from None
        except AttributeError:
            raise Unsupported(f"this amdsmi has no {name}") from None

    def each(self, items: Iterable[tuple[str, Callable[[], T]]]) -> list[tuple[str, T]]:
        """Call each item, skipping (and remembering) the ones this GPU does not support.
        Raises Unsupported when none is, so the whole field is remembered as absent."""
        out: list[tuple[str, T]] = []
        for key, fn in items:
            if key in self.absent:
                continue
            try:
                out.append((key, fn()))
            except Unsupported:
                self.absent.add(key)
        if not out:
            raise Unsupported("no item of this field is supported on this GPU")
        return out

    def optional(self, key: str, fn: Callable[[], T]) -> T | None:
        """One item that may be missing without the field being missing: None, remembered."""
        if key in self.absent:
            return None
        try:
            return fn()
        except Unsupported:
            self.absent.add(key)
            return None

    def whole_board(self) -> None:
        """Raise Unsupported on a secondary partition: its board readings are the first's."""
        if not self.primary:
            raise Unsupported("board-level reading: reported by the card's first partition")


@dataclass(frozen=True)
class FieldSpec:
    name: str
    tier: Tier
    collector: str
    read: Callable[[AmdGpu], Iterable[Sample]]
