"""``json_problems``'s fast path (``shared.crdt._canonical._clean``) answers exactly as the
full walk: it may only say "no problem" where the walk finds none, and it says so for every
plain JSON value within the bounds (else it would only be slow)."""

from __future__ import annotations

import enum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.crdt._canonical import (
    MAX_INT,
    MAX_JSON_DEPTH,
    MAX_JSON_NODES,
    MAX_STRING_LEN,
    _clean,
    _walk,
    json_problems,
)


def _walked(value: object) -> list[Any]:
    """The full walk alone (json_problems before its fast path)."""
    problems: list[Any] = []
    _walk(value, "v", 0, problems, [MAX_JSON_NODES])
    return problems


class _Colour(enum.Enum):
    RED = 1


class _Int(enum.IntEnum):
    ONE = 1


class _Str(str):
    pass


_PLAIN = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-MAX_INT, MAX_INT)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=30,
)
_ODD = st.sampled_from(
    [
        float("nan"),
        float("inf"),
        MAX_INT + 1,
        -MAX_INT - 1,
        (1, 2),
        {1: "x"},
        {True: 1},
        {None: 1},
        b"x",
        _Colour.RED,
        _Int.ONE,
        _Str("s"),
        {1, 2},
        object(),
    ]
)
_ANY = st.recursive(
    _PLAIN | _ODD,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=30,
)


@settings(max_examples=200)
@given(_PLAIN)
def test_plain_json_is_clean(value: object) -> None:
    assert _clean(value)
    assert json_problems(value, "v") == []


@settings(max_examples=200)
@given(_ANY)
def test_clean_only_where_the_walk_finds_nothing(value: object) -> None:
    if _clean(value):
        assert _walked(value) == []
    assert json_problems(value, "v") == _walked(value)


def _nested(depth: int) -> object:
    value: object = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@pytest.mark.parametrize(
    "value",
    [
        _nested(MAX_JSON_DEPTH),
        _nested(MAX_JSON_DEPTH + 1),
        _nested(MAX_JSON_DEPTH + 5),
        list(range(MAX_JSON_NODES - 1)),
        list(range(MAX_JSON_NODES)),
        [{"a": [1]}] * (MAX_JSON_NODES // 3),
        "x" * MAX_STRING_LEN,
        "x" * (MAX_STRING_LEN + 1),
        {"a": ["x" * (MAX_STRING_LEN + 1)]},
        [MAX_INT, -MAX_INT],
        [MAX_INT + 1],
        [_Int.ONE, _Str("s")],
    ],
)
def test_bounds_answer_as_the_walk(value: object) -> None:
    assert json_problems(value, "v") == _walked(value)
    assert not _clean(value) or _walked(value) == []
