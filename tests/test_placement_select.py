"""``top_rows`` (ranks only the rows near the best scores) chooses exactly what
``exact_top_rows`` (a packed rank for every row) chooses, on scores with many
ties, near-ties within a quantum, and the odd non-finite or out-of-range value."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.placement._select import exact_top_rows, lead_rows, top_rows

_SPECIAL = [
    0.0, 1.0, -1.0, 0.5, 0.5 + 4e-10, 0.5 - 6e-10, 1e-9, 2.5e-9, -2.0, -2.0 + 1e-9, 2.0,
    float("nan"), float("inf"), float("-inf"),
]  # fmt: skip

_scores = st.one_of(
    st.sampled_from(_SPECIAL),
    st.floats(-1.0, 1.0, allow_nan=False),
    st.floats(-3.0, 3.0, allow_nan=False),
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(_scores, st.booleans(), st.integers(0, 7)), min_size=0, max_size=40),
    st.integers(0, 2**32 - 1),
    st.sampled_from([1, 2, 5, 50]),
    st.booleans(),
)
def test_top_rows_equals_the_exact_ranking(
    rows: list[tuple[float, bool, int]], tie: int, limit: int, finite_only: bool
) -> None:
    total = np.array([s for s, _, _ in rows], dtype=np.float64)
    if finite_only:
        total = np.clip(np.nan_to_num(total), -1.0, 1.0)
    ok = np.array([o for _, o, _ in rows], dtype=np.bool_)
    # few distinct hashes: equal ranks, where the lower row must win
    hashes = np.array([h * 0x9E3779B1 % 2**32 for _, _, h in rows], dtype=np.uint32)
    with np.errstate(invalid="ignore", over="ignore"):
        expected = exact_top_rows(total, ok, hashes, tie, limit)
        got = top_rows(total, ok, hashes, tie, limit)
    assert got.tolist() == expected.tolist()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-1.0, 1.0, allow_nan=False), st.booleans(), st.integers(0, 7)),
        min_size=1,
        max_size=40,
    ),
    st.integers(0, 40),
    st.integers(0, 2**32 - 1),
    st.sampled_from([1, 2, 5]),
    st.sampled_from([0.0, 1e-9, 3e-9, 1e-3]),
)
def test_a_settled_lead_ranks_as_every_row_would(
    rows: list[tuple[float, bool, int]], size: int, tie: int, limit: int, gap: float
) -> None:
    """``lead_rows`` over the best rows by score (the lead), with every other row
    scoring at most ``beyond``: when it answers, it is ``top_rows`` over every row
    (rows near the edge of the lead, within a few quanta, included)."""
    total = np.array([s for s, _, _ in rows], dtype=np.float64)
    ok = np.array([o for _, o, _ in rows], dtype=np.bool_)
    hashes = np.array([h * 0x9E3779B1 % 2**32 for _, _, h in rows], dtype=np.uint32)
    order = np.argsort(-np.where(ok, total, -np.inf), kind="stable")
    lead = np.sort(order[:size])
    rest = order[size:]
    rest_ok = rest[ok[rest]]
    # the rows left out score at most beyond; beyond a little above their best
    beyond = float(total[rest_ok].max()) + gap if len(rest_ok) else -np.inf
    got = lead_rows(total[lead], ok[lead], hashes[lead], tie, limit, beyond)
    expected = top_rows(total, ok, hashes, tie, limit)
    if len(rest_ok) == 0:
        assert got is not None
    if got is not None:
        assert lead[got].tolist() == expected.tolist()
