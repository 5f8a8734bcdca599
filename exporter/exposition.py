"""Exposition: the bytes /metrics serves, rendered in the background, once per change and format.

prometheus_client does the formatting (text 0.0.4 and OpenMetrics 1.0.0) from metric families we
build out of prepared rows; nothing here touches a vendor library. An `Exposition` is immutable
input plus a per-format cache: the first request for a format renders it (off the event loop),
every later request for the same snapshot gets the same bytes.

Rendering is done family by family, and a `BlockCache` keeps each family's last bytes: a fast
cycle changes a few hundred series (utilization, power, clocks), while most series (NVLink,
ECC, violation counters) change only with the slow tier, so most blocks are reused as they are.
"""

from __future__ import annotations

import gzip
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from prometheus_client import Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from .backends.base import LabelPairs
from .catalog import BY_NAME, FAMILIES, Kind

log = logging.getLogger(__name__)

GZIP_LEVEL = 5  # about 10x smaller for our text; level 9 costs more CPU for ~3 % less


class Format(str, Enum):
    TEXT = "text"
    OPENMETRICS = "openmetrics"

    @property
    def content_type(self) -> str:
        return OPENMETRICS_TYPE if self is Format.OPENMETRICS else CONTENT_TYPE_PLAIN_0_0_4


@dataclass(frozen=True, slots=True)
class Row:
    """One series: family name, all labels (gpu and uuid included), value."""

    family: str
    labels: LabelPairs
    value: float


Groups = dict[str, tuple[Row, ...]]


def group_rows(rows: Iterable[Row]) -> tuple[Groups, list[str]]:
    """Group rows by family, in catalog order. Returns (groups, problems).

    A row of an unknown family or with labels that differ from the catalog is dropped and
    reported: the contract is enforced here, where every sample passes.
    """
    grouped: dict[str, list[Row]] = {}
    problems: list[str] = []
    seen: set[tuple[str, LabelPairs]] = set()
    for row in rows:
        fam = BY_NAME.get(row.family)
        if fam is None:
            problems.append(f"unknown family {row.family}")
            continue
        names = tuple(k for k, _ in row.labels)
        if names != fam.all_labels:
            problems.append(
                f"{row.family}: labels {names} differ from the catalog's {fam.all_labels}"
            )
            continue
        key = (row.family, row.labels)
        if key in seen:
            problems.append(f"{row.family}{dict(row.labels)}: duplicate series")
            continue
        seen.add(key)
        grouped.setdefault(row.family, []).append(row)
    groups = {f.name: tuple(grouped[f.name]) for f in FAMILIES if f.name in grouped}
    return groups, problems


def to_metric(name: str, rows: Iterable[Row]) -> Metric:
    fam = BY_NAME[name]
    base = fam.name.removesuffix("_total") if fam.kind is Kind.COUNTER else fam.name
    metric = Metric(base, fam.help, fam.kind.value, fam.unit)
    sample_name = fam.name if fam.kind is not Kind.COUNTER else base + "_total"
    for row in rows:
        metric.add_sample(sample_name, dict(row.labels), row.value)
    return metric


def build_metrics(rows: Iterable[Row]) -> tuple[list[Metric], list[str]]:
    """Rows as prometheus_client metric families, in catalog order; and the problems."""
    groups, problems = group_rows(rows)
    return [to_metric(name, rows_of) for name, rows_of in groups.items()], problems


class _Families:
    """A prometheus_client collector that yields prepared families (it reads, never computes)."""

    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> list[Metric]:
        return self._metrics


_OM_EOF = b"# EOF\n"


class BlockCache:
    """The last rendered bytes of each family per format, reused while its rows are equal."""

    def __init__(self) -> None:
        self._blocks: dict[tuple[Format, str], tuple[tuple[Row, ...], bytes]] = {}
        self._lock = threading.Lock()
        self.rendered = 0  # blocks rendered, for tests and benchmarks

    def block(self, fmt: Format, name: str, rows: tuple[Row, ...]) -> bytes:
        with self._lock:
            hit = self._blocks.get((fmt, name))
        if hit is not None and hit[0] == rows:
            return hit[1]
        registry = _Families([to_metric(name, rows)])
        if fmt is Format.OPENMETRICS:
            data = generate_openmetrics(registry).removesuffix(_OM_EOF)  # type: ignore[arg-type]
        else:
            data = generate_latest(registry)  # type: ignore[arg-type]
        with self._lock:
            self._blocks[(fmt, name)] = (rows, data)
            self.rendered += 1
        return data


class Exposition:
    """The bytes of one snapshot, per format and encoding, each rendered at most once."""

    def __init__(self, groups: Groups, generation: int, blocks: BlockCache | None = None) -> None:
        self.generation = generation
        self._groups = groups
        self._blocks = blocks or BlockCache()
        self._cache: dict[tuple[Format, bool], bytes] = {}
        self._lock = threading.Lock()

    def cached(self, fmt: Format, compressed: bool) -> bytes | None:
        return self._cache.get((fmt, compressed))

    def body(self, fmt: Format, compressed: bool) -> bytes:
        key = (fmt, compressed)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                return hit
            if compressed:
                data = gzip.compress(self._plain(fmt), compresslevel=GZIP_LEVEL, mtime=0)
            else:
                data = self._plain(fmt)
            self._cache[key] = data
            return data

    def _plain(self, fmt: Format) -> bytes:
        plain = self._cache.get((fmt, False))
        if plain is None:
            parts = [self._blocks.block(fmt, name, rows) for name, rows in self._groups.items()]
            if fmt is Format.OPENMETRICS:
                parts.append(_OM_EOF)
            plain = b"".join(parts)
            self._cache[(fmt, False)] = plain
        return plain

    def formats_used(self) -> list[tuple[Format, bool]]:
        return list(self._cache)


def negotiate(accept: str | None) -> Format:
    """OpenMetrics when the client prefers it (by q-value, then by order), else text 0.0.4."""
    best: tuple[float, int, Format] | None = None
    for position, part in enumerate((accept or "").split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media == "application/openmetrics-text":
            fmt = Format.OPENMETRICS
        elif media in ("text/plain", "text/*", "*/*"):
            fmt = Format.TEXT
        else:
            continue
        if q <= 0:
            continue
        candidate = (q, -position, fmt)
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    return best[2] if best else Format.TEXT


def gzip_accepted(accept_encoding: str | None) -> bool:
    for part in (accept_encoding or "").split(","):
        coding, *params = (p.strip() for p in part.split(";"))
        if coding.lower() in ("gzip", "x-gzip"):
            return not any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000")
                           for p in params)
    return False
