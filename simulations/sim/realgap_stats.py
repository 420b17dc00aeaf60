"""Sim-to-real over repeated runs: pooled percentiles, their spread, and when a sample
is big enough to judge one.

One testbed run of ``partition-basic`` has three ``adaptive`` tasks: their "p50" is the
second of three latencies and their "p95" the largest, figures another run (another
seed, or the same seed on a busier machine) moves by a third. So the comparison pools
several runs per side (the testbed's runs and the simulator's runs of the same
scenarios and seeds) and says, per level and percentile:

- ``n`` on each side, the pooled percentile on each side and the gap
  ``|sim / testbed - 1|``;
- the range of the per-run percentiles over the repeats (each side);
- the testbed's distribution-free 95 % confidence interval of the percentile (two
  order statistics of the pooled sample; ``quantile_ranks``);
- ``judged``: whether both pooled samples are big enough for that interval to exist at
  all: 6 values for a median, 72 for a p95 (0.95^72 < 0.025: with fewer, nothing in the
  sample bounds the p95 from above at that confidence). A figure that is not judged
  is still reported, with its ``n``, never dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from simulations.testbed.metrics import percentile

__all__ = [
    "CONFIDENCE",
    "QUANTILES",
    "pooled_convergence",
    "pooled_latency",
    "quantile_ranks",
]

#: Confidence of the percentile intervals (two-sided).
CONFIDENCE = 0.95
#: The percentiles compared, by name.
QUANTILES = {"p50": 50.0, "p95": 95.0}

Latencies = Mapping[str, Sequence[float]]


def quantile_ranks(n: int, q: float, confidence: float = CONFIDENCE) -> tuple[int, int] | None:
    """1-based ranks ``(l, u)`` of the order statistics with ``X(l) ≤ ξ_q ≤ X(u)`` at
    ``confidence`` or more, whatever the distribution (each tail at most half of the
    rest; the count of values below ``ξ_q`` is binomial ``(n, q)``); ``None`` when
    ``n`` values cannot bound ``ξ_q`` on both sides at that confidence."""
    tail = (1.0 - confidence) / 2.0
    p = q / 100.0
    cdf, acc = [], 0.0
    for k in range(n + 1):
        acc += math.comb(n, k) * p**k * (1.0 - p) ** (n - k)
        cdf.append(acc)
    lows = [rank for rank in range(1, n + 1) if cdf[rank - 1] <= tail]
    highs = [rank for rank in range(1, n + 1) if 1.0 - cdf[rank - 1] <= tail]
    if not lows or not highs:
        return None
    return max(lows), min(highs)


def _interval(values: Sequence[float], q: float) -> tuple[float, float] | None:
    ranks = quantile_ranks(len(values), q)
    if ranks is None:
        return None
    ordered = sorted(values)
    return ordered[ranks[0] - 1], ordered[ranks[1] - 1]


def _spread(runs: Sequence[Sequence[float]], q: float) -> list[float] | None:
    """Lowest and highest per-run percentile over the runs that have values."""
    per_run = [p for r in runs if (p := percentile(r, q)) is not None]
    return [min(per_run), max(per_run)] if per_run else None


def _row(sim: Sequence[Sequence[float]], testbed: Sequence[Sequence[float]], q: float) -> dict:
    s_all = [x for r in sim for x in r]
    t_all = [x for r in testbed for x in r]
    s, t = percentile(s_all, q), percentile(t_all, q)
    ci = _interval(t_all, q)
    judged = ci is not None and quantile_ranks(len(s_all), q) is not None
    return {
        "n_sim": len(s_all),
        "n_testbed": len(t_all),
        "sim": s,
        "testbed": t,
        "gap": abs(s / t - 1.0) if s is not None and t else None,
        "sim_runs": _spread(sim, q),
        "testbed_runs": _spread(testbed, q),
        "testbed_ci": list(ci) if ci else None,
        "sim_in_testbed_ci": None if ci is None or s is None else ci[0] <= s <= ci[1],
        "judged": judged,
    }


def pooled_latency(
    sim_runs: Sequence[Latencies], testbed_runs: Sequence[Latencies]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per level and percentile name (``QUANTILES``), the pooled comparison of the
    runs' latencies (one mapping level → latencies per run, each side)."""
    levels = sorted({lvl for r in [*sim_runs, *testbed_runs] for lvl in r})
    return {
        level: {
            name: _row(
                [r.get(level, ()) for r in sim_runs], [r.get(level, ()) for r in testbed_runs], q
            )
            for name, q in QUANTILES.items()
        }
        for level in levels
    }


def pooled_convergence(
    sim_runs: Sequence[Sequence[float]], testbed_runs: Sequence[Sequence[float]]
) -> dict[str, dict[str, Any]]:
    """Convergence after a heal (one list of per-heal times per run, each side): the
    pooled median as a percentile row, and the worst heal of all runs (``max``, judged
    whenever both sides have a heal: it is the figure the testbed's verdict uses)."""
    s_all = [x for r in sim_runs for x in r]
    t_all = [x for r in testbed_runs for x in r]
    s, t = max(s_all, default=None), max(t_all, default=None)
    worst = {
        "n_sim": len(s_all),
        "n_testbed": len(t_all),
        "sim": s,
        "testbed": t,
        "gap": abs(s / t - 1.0) if s is not None and t else None,
        "sim_runs": _spread(sim_runs, 100.0),
        "testbed_runs": _spread(testbed_runs, 100.0),
        "testbed_ci": None,
        "sim_in_testbed_ci": None,
        "judged": bool(s_all and t_all),
    }
    return {"p50": _row(sim_runs, testbed_runs, 50.0), "max": worst}
