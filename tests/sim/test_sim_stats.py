"""Mean and 95 % interval over seeds, and the ``--seeds`` syntax."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulations.sim.stats import parse_seeds, summarise


def test_interval_is_students_t() -> None:
    s = summarise([1.0, 2.0, 3.0, 4.0, 5.0])
    assert s.mean == 3.0 and s.n == 5
    # t(0.975, 4) = 2.776, sd = sqrt(2.5)
    assert s.half == pytest.approx(2.776 * math.sqrt(2.5 / 5), rel=1e-4)
    assert math.isnan(summarise([7.0]).half) and summarise([7.0]).mean == 7.0
    assert summarise([math.nan, 1.0, 3.0]).n == 2


@given(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=40))
def test_the_mean_lies_inside_its_interval(values: list[float]) -> None:
    s = summarise(values)
    assert s.low - 1e-6 <= s.mean <= s.high + 1e-6
    assert min(values) - 1e-6 <= s.mean <= max(values) + 1e-6


def test_seed_lists() -> None:
    assert parse_seeds("1-5") == [1, 2, 3, 4, 5]
    assert parse_seeds("1,4,9") == [1, 4, 9]
    assert parse_seeds("1-2,7") == [1, 2, 7]
    for bad in ("", "5-1", "x", "1-"):
        with pytest.raises(ValueError):
            parse_seeds(bad)
