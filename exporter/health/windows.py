"""Time windows over one GPU's samples: what "sustained" and "increased within" mean.

The collection cycle feeds each tracker one observation at a time (monotonic seconds); the
verdict asks it a question about the recent past. Nothing here sleeps or reads a clock.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field


@dataclass
class DutyWindow:
    """How much of a window a condition held: from a cumulative seconds counter when the
    hardware keeps one (it sees between our samples), else from the sampled on/off state.

    Runs of identical observations are kept as their first and last point, so a GPU that is
    not throttling (the usual case) costs two points however long the window, and a question
    costs time in the number of changes, not of samples.
    """

    keep: float  # seconds of history kept: the longest window asked about
    points: deque[tuple[float, bool, float | None]] = field(default_factory=deque)

    def add(self, t: float, active: bool, counter: float | None) -> None:
        p = self.points
        if len(p) >= 2 and p[-2][1:] == p[-1][1:] == (active, counter):
            p[-1] = (t, active, counter)  # the run goes on: move its last point
        else:
            p.append((t, active, counter))
        while len(p) > 2 and p[1][0] <= t - self.keep:
            p.popleft()

    def fraction(self, now: float, window: float) -> float | None:
        """Share of [now - window, now] spent active; None while the history is shorter than
        most of the window (a GPU just seen must not be judged on one sample)."""
        pts = self.points
        if len(pts) < 2 or pts[-1][0] - pts[0][0] < 0.8 * window:
            return None
        start = max(now - window, pts[0][0])
        last_t, _, c1 = pts[-1]
        if last_t <= start:
            return None
        # The counter where the window starts: the last point at or before it (counters are
        # constant within a run; across one slow interval at most this counts a little early).
        c0 = next((c for t, _, c in reversed(pts) if t <= start), pts[0][2])
        if c0 is not None and c1 is not None and c1 >= c0:
            return min(1.0, (c1 - c0) / (last_t - start))
        on = sum(min(b[0], last_t) - max(a[0], start)
                 for a, b in itertools.pairwise(pts) if a[1] and b[0] > start)
        return on / (last_t - start)


@dataclass
class CounterWindow:
    """Increase of a counter within a window, tolerant of resets (a GPU reset zeroes volatile
    counters: the increase starts again from the new value)."""

    keep: float
    points: deque[tuple[float, float]] = field(default_factory=deque)

    def add(self, t: float, value: float) -> None:
        if self.points and value < self.points[-1][1]:
            self.points.clear()  # reset: history before it says nothing about now
        if len(self.points) >= 2 and self.points[-2][1] == self.points[-1][1] == value:
            # Unchanged since the point before: move the latest point, keep the list short.
            # The first point of a new value stays where it is: it says when the increase was.
            self.points[-1] = (t, value)
        else:
            self.points.append((t, value))
        while len(self.points) > 2 and self.points[1][0] <= t - self.keep:
            self.points.popleft()

    def increase(self, now: float, window: float) -> tuple[float, float | None]:
        """(increase within the window, time of the first increase in it)."""
        if not self.points:
            return 0.0, None
        start = now - window
        before = [v for t, v in self.points if t <= start]
        # The first observation is the baseline: an increase before we started is not seen.
        base = before[-1] if before else self.points[0][1]
        first, prev = None, base
        for t, v in self.points:
            if t <= start:
                continue
            if v > prev and first is None:
                first = t
            prev = v
        return self.points[-1][1] - base, first


@dataclass
class BusyRun:
    """Seconds a condition held while the GPU was busy: idle samples neither add nor break
    (a PCIe link slows down legitimately when idle); a busy sample without it starts over."""

    seconds: float = 0.0
    since: float | None = None
    _last: tuple[float, bool] | None = None  # (t, condition) of the last busy sample

    def add(self, t: float, busy: bool, condition: bool) -> None:
        if not busy:
            self._last = None  # the next busy sample starts a new interval, counting nothing
            return
        if not condition:
            self.seconds, self.since, self._last = 0.0, None, (t, False)
            return
        if self._last is not None and self._last[1]:
            self.seconds += t - self._last[0]
        if self.since is None:
            self.since = t
        self._last = (t, True)
