"""Outage timelines: down intervals per link, drawn up front, and the questions asked of them.

A link's (or a node's) timeline is a sorted list of disjoint *down intervals*, drawn
once per run (``alternating``: an alternating renewal process, exponential up times
with mean MTBF and down times with mean MTTR, as PureEdgeSim and EdgeCloudSim model
failures; ``poisson_intervals``: correlated outages), merged (``merge_intervals``) and
kept per link id (``Timelines``). ``simulations.sim.network`` builds them and asks
when a path is next up, since when it is down, and when it first goes down.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["Timelines", "alternating", "merge_intervals", "poisson_intervals"]


def alternating(
    rng: np.random.Generator, mtbf_s: float, mttr_s: float, horizon: float
) -> list[tuple[float, float]]:
    """Down intervals of an up/down process starting up at 0, until ``horizon``."""
    if mtbf_s <= 0:
        return []
    out: list[tuple[float, float]] = []
    t = 0.0
    # draw in blocks: expected cycles = horizon / (mtbf + mttr)
    block = max(4, int(2 * horizon / (mtbf_s + mttr_s)) + 4)
    while t < horizon:
        ups = rng.exponential(mtbf_s, block)
        downs = rng.exponential(mttr_s, block)
        for up, down in zip(ups.tolist(), downs.tolist(), strict=True):
            start = t + up
            if start >= horizon:
                return out
            t = start + down
            out.append((start, t))
    return out


def poisson_intervals(
    rng: np.random.Generator, rate_per_s: float, mean_s: float, horizon: float
) -> list[tuple[float, float]]:
    """Poisson-started intervals of exponential length (correlated outages)."""
    if rate_per_s <= 0:
        return []
    n = int(rng.poisson(rate_per_s * horizon))
    starts = np.sort(rng.uniform(0.0, horizon, n))
    lengths = rng.exponential(mean_s, n)
    return [(float(a), float(a + d)) for a, d in zip(starts, lengths, strict=True)]


def merge_intervals(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Union of intervals, sorted and disjoint."""
    out: list[tuple[float, float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


class Timelines:
    """Down intervals per link id (``None`` for a link that never goes down)."""

    def __init__(self, count: int) -> None:
        self.starts: list[list[float] | None] = [None] * count
        self.ends: list[list[float] | None] = [None] * count

    def set(self, link: int, intervals: Iterable[tuple[float, float]]) -> None:
        merged = merge_intervals(intervals)
        if merged:
            self.starts[link] = [a for a, _ in merged]
            self.ends[link] = [b for _, b in merged]
        else:
            self.starts[link] = self.ends[link] = None

    def intervals(self, link: int) -> list[tuple[float, float]]:
        starts, ends = self.starts[link], self.ends[link]
        return [] if starts is None or ends is None else list(zip(starts, ends, strict=True))

    def down_count(self, below: int | None = None) -> int:
        """Outage intervals of the links with ids below ``below`` (default all)."""
        return sum(len(s) for s in self.starts[:below] if s)

    def next_up(self, path: Sequence[int], t: float) -> float:
        """Earliest time ``>= t`` at which every link of ``path`` is up."""
        starts, ends = self.starts, self.ends
        if len(path) == 1:
            # one link: one look suffices (its intervals are merged, so the next one
            # starts after this one ends)
            link = path[0]
            st = starts[link]
            if st is not None:
                i = bisect_right(st, t) - 1
                if i >= 0:
                    end = ends[link][i]  # type: ignore[index]
                    if t < end:
                        return end
            return t
        moved = True
        while moved:
            moved = False
            for link in path:
                st = starts[link]
                if st is None:
                    continue
                i = bisect_right(st, t) - 1
                if i >= 0:
                    end = ends[link][i]  # type: ignore[index]
                    if t < end:
                        t = end
                        moved = True
        return t

    def down_since(self, path: Sequence[int], t: float) -> float | None:
        """If ``path`` is down at ``t``: since when (the earliest start among the
        intervals holding it down at ``t``); else ``None``."""
        since: float | None = None
        for link in path:
            st = self.starts[link]
            if st is None:
                continue
            i = bisect_right(st, t) - 1
            if i >= 0 and t < self.ends[link][i]:  # type: ignore[index]
                since = st[i] if since is None else min(since, st[i])
        return since

    def first_down(self, path: Sequence[int], t0: float, t1: float) -> float | None:
        """Start of the first outage of any link of ``path`` beginning in ``[t0, t1)``."""
        first: float | None = None
        for link in path:
            st = self.starts[link]
            if st is None:
                continue
            i = bisect_right(st, t0 - 1e-12)
            if i < len(st) and st[i] < t1 and (first is None or st[i] < first):
                first = st[i]
        return first
