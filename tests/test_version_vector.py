"""Version vectors: the order is a partial order, merge is its least upper bound,
compare agrees with dominates, and the digest round-trips."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.clocks import Ordering, VersionVector
from shared.errors import ValidationError

VVS = st.dictionaries(
    st.sampled_from(["a", "b", "c", "edge-1"]), st.integers(min_value=0, max_value=6)
).map(VersionVector)


def leq(a: VersionVector, b: VersionVector) -> bool:
    return b.dominates(a)


@given(VVS, VVS, VVS)
def test_partial_order(a: VersionVector, b: VersionVector, c: VersionVector) -> None:
    assert leq(a, a)
    if leq(a, b) and leq(b, a):
        assert a == b and hash(a) == hash(b)
    if leq(a, b) and leq(b, c):
        assert leq(a, c)


@given(VVS, VVS, VVS)
def test_merge_is_least_upper_bound(a: VersionVector, b: VersionVector, c: VersionVector) -> None:
    m = a.merge(b)
    assert leq(a, m) and leq(b, m)
    if leq(a, c) and leq(b, c):
        assert leq(m, c)
    assert m == b.merge(a)
    assert a.merge(b.merge(c)) == a.merge(b).merge(c)
    assert a.merge(a) == a


@given(VVS, VVS)
def test_compare_agrees_with_dominates(a: VersionVector, b: VersionVector) -> None:
    expected = {
        (True, True): Ordering.EQUAL,
        (True, False): Ordering.AFTER,
        (False, True): Ordering.BEFORE,
        (False, False): Ordering.CONCURRENT,
    }[(a.dominates(b), b.dominates(a))]
    assert a.compare(b) is expected


@given(VVS, st.sampled_from(["a", "z"]))
def test_increment(a: VersionVector, node: str) -> None:
    b = a.increment(node)
    assert b.get(node) == a.get(node) + 1
    assert a.compare(b) is Ordering.BEFORE


def test_missing_entry_is_zero() -> None:
    assert VersionVector({"a": 0}) == VersionVector()
    assert VersionVector({"a": 1}).compare(VersionVector({"b": 1})) is Ordering.CONCURRENT
    assert VersionVector().get("x") == 0


@given(VVS)
def test_round_trips(a: VersionVector) -> None:
    assert VersionVector.from_digest(a.digest()) == a
    assert VersionVector.from_dict(a.to_dict()) == a


@given(st.text(max_size=30) | st.integers() | st.none())
def test_from_digest_garbage_raises_validation_error(garbage: object) -> None:
    with contextlib.suppress(ValidationError):
        VersionVector.from_digest(garbage)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=8,
    )
)
def test_from_dict_garbage_raises_validation_error(garbage: object) -> None:
    with contextlib.suppress(ValidationError):
        VersionVector.from_dict(garbage)


def test_from_dict_lists_every_problem() -> None:
    with pytest.raises(ValidationError) as info:
        VersionVector.from_dict({"a/b": 1, "c": -1})
    assert len(info.value.problems) == 2
