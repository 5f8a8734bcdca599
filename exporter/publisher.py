"""Publisher: turns the sampler's view plus other sources into the current Exposition.

Runs on background threads (the sampler's coordinator after each cycle, an event or probe
thread after a change) and swaps one reference; the HTTP handlers only read that reference.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from .exposition import BlockCache, Exposition, Row, group_rows
from .sampler import GpuState, SamplerView

log = logging.getLogger(__name__)

# A contributor adds rows of its own families, given the latest sampler view (None before the
# first cycle). Contributors must be cheap and must not call a vendor library.
Contributor = Callable[[SamplerView | None], Iterable[Row]]


def gpu_rows(gpu: GpuState) -> Iterable[Row]:
    """The sampled series of one GPU, with gpu and uuid prepended to each sample's labels."""
    ident = (("gpu", str(gpu.index)), ("uuid", gpu.uuid))
    yield Row("gpu_up", ident, 1.0 if gpu.up else 0.0)
    for s in gpu.samples:
        if not s.family.startswith("_"):  # internal samples (e.g. per-process memory)
            yield Row(s.family, ident + s.labels, s.value)


class Publisher:
    def __init__(
        self,
        contributors: Iterable[Contributor] = (),
        warn_once: Callable[..., None] | None = None,
    ) -> None:
        self._contributors = list(contributors)
        self._warn_once = warn_once
        self._lock = threading.Lock()
        self._view: SamplerView | None = None
        self._generation = 0
        self.blocks = BlockCache()
        self.current = Exposition({}, 0, self.blocks)

    def add(self, contributor: Contributor) -> None:
        self._contributors.append(contributor)

    def publish(self, view: SamplerView | None) -> Exposition:
        """Render a new exposition from `view` (called after every sampler cycle)."""
        with self._lock:
            self._view = view
            return self._build()

    def refresh(self) -> Exposition:
        """Re-render with the last view, after a contributor's data changed."""
        with self._lock:
            return self._build()

    def _build(self) -> Exposition:
        rows: list[Row] = []
        if self._view is not None:
            for gpu in self._view.gpus:
                rows.extend(gpu_rows(gpu))
        for contribute in self._contributors:
            try:
                rows.extend(contribute(self._view))
            except Exception:  # one source's bug must not stop the exposition
                log.exception("metrics contributor %r failed", contribute)
        groups, problems = group_rows(rows)
        for problem in problems:
            if self._warn_once:
                self._warn_once(f"contract:{problem}", "series dropped", problem=problem)
        self._generation += 1
        previous = self.current
        exposition = Exposition(groups, self._generation, self.blocks)
        # Render now, in the background, the formats scrapers asked for last time.
        for fmt, compressed in previous.formats_used():
            exposition.body(fmt, compressed)
        self.current = exposition
        return exposition
