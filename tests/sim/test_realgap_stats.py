"""Pooled sim-to-real comparison (simulations/sim/realgap_stats.py): the percentile
intervals' coverage, when a sample is too small to judge, and what pooling reports."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from simulations.sim.realgap_stats import (
    CONFIDENCE,
    pooled_convergence,
    pooled_latency,
    quantile_ranks,
)
from simulations.testbed.metrics import percentile


def _coverage(n: int, q: float, low: int, high: int) -> float:
    """P(X(low) ≤ ξ_q ≤ X(high)): between low and high - 1 values fall below ξ_q."""
    p = q / 100.0
    return sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(low, high))


@given(st.integers(min_value=1, max_value=300), st.sampled_from([50.0, 90.0, 95.0, 99.0]))
def test_the_interval_covers_the_percentile_at_the_confidence_or_does_not_exist(
    n: int, q: float
) -> None:
    ranks = quantile_ranks(n, q)
    if ranks is None:  # no order statistic bounds ξ_q on one side at that confidence
        p, tail = q / 100.0, (1 - CONFIDENCE) / 2
        assert (1 - p) ** n > tail or p**n > tail
        return
    low, high = ranks
    assert 1 <= low <= high <= n
    assert _coverage(n, q, low, high) >= CONFIDENCE - 1e-12


def test_a_median_needs_6_values_and_a_p95_72() -> None:
    assert quantile_ranks(5, 50) is None and quantile_ranks(6, 50) == (1, 6)
    assert quantile_ranks(71, 95) is None and quantile_ranks(72, 95) is not None


def test_pooling_reports_every_level_with_its_n_and_judges_only_big_samples() -> None:
    sim = [{"a": [1.0, 2.0, 3.0], "b": [float(x) for x in range(40)]}, {"a": [2.0]}]
    testbed = [{"a": [1.5, 2.5], "b": [float(x) + 1 for x in range(40)]}, {"a": [3.0, 3.5]}]
    rows = pooled_latency(sim, testbed)
    assert set(rows) == {"a", "b"}
    a, b = rows["a"]["p50"], rows["b"]["p50"]
    assert (a["n_sim"], a["n_testbed"], a["judged"]) == (4, 4, False)  # reported, not judged
    assert a["sim"] == percentile([1.0, 2.0, 3.0, 2.0], 50)
    assert a["testbed"] == percentile([1.5, 2.5, 3.0, 3.5], 50)
    assert a["sim_runs"] == [2.0, 2.0] and a["testbed_runs"] == [2.5, 3.5]
    assert a["gap"] == abs(a["sim"] / a["testbed"] - 1)
    assert (b["n_sim"], b["judged"]) == (40, True) and b["testbed_ci"] is not None
    assert b["sim_runs"] == [b["sim"], b["sim"]]  # one run has no "b": its range is the other's
    assert rows["b"]["p95"]["judged"] is False  # 40 values cannot bound a p95
    assert b["sim_in_testbed_ci"] is True


def test_convergence_pools_every_heal_and_judges_the_worst() -> None:
    conv = pooled_convergence([[0.25, 0.25], [0.25]], [[0.26], [0.3, 0.27]])
    assert conv["max"]["sim"] == 0.25 and conv["max"]["testbed"] == 0.3
    assert conv["max"]["judged"] and conv["max"]["testbed_runs"] == [0.26, 0.3]
    assert conv["p50"]["n_sim"] == 3 and not conv["p50"]["judged"]
