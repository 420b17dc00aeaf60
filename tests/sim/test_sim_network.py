"""``Timelines.next_up``: the one-link fast path agrees with the general loop."""

from __future__ import annotations

import random

from simulations.sim.network import Timelines


def test_one_link_next_up_matches_the_general_loop() -> None:
    """A single link is looked at once (its intervals are merged); the general loop,
    run here by adding a link that never goes down, gives the same time."""
    rng = random.Random(7)
    tl = Timelines(3)
    # overlapping and touching intervals, merged by ``set``
    intervals = []
    t = 0.0
    for _ in range(200):
        t += rng.expovariate(1.0)
        intervals.append((t, t + rng.choice([0.0, 0.5, rng.expovariate(0.5)])))
    intervals += [(a + 0.1, b + 0.2) for a, b in intervals[::7]]
    tl.set(0, intervals)
    tl.set(1, ())  # never down
    for _ in range(2000):
        at = rng.uniform(-1.0, t + 5.0)
        assert tl.next_up((0,), at) == tl.next_up((0, 1), at)
    for a, b in tl.intervals(0):
        assert tl.next_up((0,), a) == b
        assert tl.next_up((0,), b) == b
