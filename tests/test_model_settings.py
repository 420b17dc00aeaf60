"""``shared.model.read_settings``: TOML tables into frozen dataclasses, every problem listed."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import Problem
from shared.model import NOT_A_SETTING, read_settings, rule, setting


def _even(value: str) -> str | None:
    return None if len(value) % 2 == 0 else "must have an even length"


@dataclass(frozen=True, slots=True)
class Inner:
    port: int = setting(80, min=1, max=65535)
    ratio: float = setting(0.5, min=0, exclusive_min=True)
    mode: str = setting("a", choices=("a", "b"))
    word: str = setting("xx", check=_even, non_empty=True)
    on: bool = True
    tags: list[str] = field(default_factory=lambda: ["t"])
    labels: dict[str, str] = field(default_factory=dict)
    weights: Mapping[str, float] = field(default_factory=dict, metadata=rule(min=0))


@dataclass(frozen=True, slots=True)
class Outer:
    inner: Inner = field(default_factory=Inner)
    level: str = setting("info", choices=("debug", "info"))
    source: str = field(default="", metadata=NOT_A_SETTING)


def _read(data: object) -> tuple[Outer, list[Problem]]:
    problems: list[Problem] = []
    return read_settings(data, Outer, problems=problems), problems


def test_absent_keys_take_their_defaults() -> None:
    assert _read({}) == (Outer(), [])


def test_values_are_read_by_their_annotation() -> None:
    data = {
        "level": "debug",
        "inner": {
            "port": 8080,
            "ratio": 2,  # an integer for a float key becomes a float
            "mode": "b",
            "word": "abcd",
            "on": False,
            "tags": ["x", "y"],
            "labels": {"site": "a"},
            "weights": {"fit": 1, "load": 0.5},
        },
    }
    cfg, problems = _read(data)
    assert problems == []
    assert cfg.level == "debug"
    assert cfg.inner == Inner(
        8080, 2.0, "b", "abcd", False, ["x", "y"], {"site": "a"}, {"fit": 1.0, "load": 0.5}
    )
    assert isinstance(cfg.inner.ratio, float) and isinstance(cfg.inner.weights["fit"], float)


def test_every_problem_is_listed_with_its_path_and_keeps_the_default() -> None:
    data = {
        "level": "loud",
        "source": "not a key of the file",
        "bogus": 1,
        "inner": {
            "port": 70000,
            "ratio": 0,
            "mode": "c",
            "word": "abc",
            "on": "yes",
            "tags": ["ok", 3],
            "labels": {"k": 1},
            "weights": {"fit": -1, "load": "x"},
            "prot": 1,
        },
    }
    cfg, problems = _read(data)
    assert {p.path for p in problems} == {
        "level",
        "source",
        "bogus",
        "inner.port",
        "inner.ratio",
        "inner.mode",
        "inner.word",
        "inner.on",
        "inner.tags[1]",
        "inner.labels.k",
        "inner.weights.fit",
        "inner.weights.load",
        "inner.prot",
    }
    assert cfg == Outer()  # every key with a problem kept its default
    by_path = {p.path: p.message for p in problems}
    assert by_path["inner.port"] == "must be ≤ 65535 (got 70000)"
    assert by_path["inner.ratio"] == "must be > 0 (got 0)"
    assert by_path["inner.mode"] == "must be one of 'a', 'b' (got 'c')"
    assert by_path["inner.word"] == "must have an even length"
    assert by_path["inner.prot"] == "unknown field (did you mean 'port'?)"


def test_a_problem_in_a_section_leaves_its_other_keys_read() -> None:
    cfg, problems = _read({"inner": {"port": 8080, "prot": 1}})
    assert cfg.inner.port == 8080 and [p.path for p in problems] == ["inner.prot"]


def test_defaults_from_a_given_instance_and_from_the_parent_field() -> None:
    @dataclass(frozen=True, slots=True)
    class Two:
        a: Inner = field(default_factory=Inner)
        b: Inner = field(default_factory=lambda: Inner(port=9000, mode="b"))

    problems: list[Problem] = []
    two = read_settings({"b": {"word": "yy"}}, Two, problems=problems)
    assert (two.a, two.b, problems) == (Inner(), Inner(port=9000, mode="b", word="yy"), [])
    base = Outer(level="debug", source="file.toml")
    got = read_settings({"inner": {"on": False}}, Outer, problems=problems, default=base)
    assert got == Outer(inner=Inner(on=False), level="debug", source="file.toml")
    assert problems == []


def test_a_section_that_is_not_a_table() -> None:
    cfg, problems = _read({"inner": "x"})
    assert cfg == Outer()
    assert [(p.path, p.message) for p in problems] == [("inner", "must be a table, not a string")]


def test_empty_string_refused_where_asked() -> None:
    _, problems = _read({"inner": {"word": ""}})
    assert [(p.path, p.message) for p in problems] == [("inner.word", "must not be empty")]


def test_a_field_without_a_reader_is_a_mistake_in_the_code() -> None:
    @dataclass(frozen=True)
    class Odd:
        when: complex = 0j

    with pytest.raises(TypeError, match=r"Odd\.when"):
        read_settings({}, Odd, problems=[])


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True),
    st.text(max_size=5),
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["port", "mode", "tags", "x"]), inner, max_size=3)
    ),
    max_leaves=8,
)
_keys = [f.name for f in dataclasses.fields(Inner)] + ["zz"]


@given(
    st.dictionaries(
        st.sampled_from(["inner", "level", "other"]),
        st.one_of(_json, st.dictionaries(st.sampled_from(_keys), _json, max_size=6)),
        max_size=3,
    )
)
def test_any_input_gives_a_config_and_problems_never_an_exception(data: dict[str, object]) -> None:
    cfg, problems = _read(data)
    assert isinstance(cfg, Outer) and isinstance(cfg.inner, Inner)
    assert all(p.path.split(".")[0].split("[")[0] in data for p in problems)


@given(
    port=st.integers(1, 65535),
    ratio=st.floats(min_value=1e-6, max_value=1e9),
    mode=st.sampled_from(["a", "b"]),
    on=st.booleans(),
    tags=st.lists(st.text(min_size=1, max_size=10), max_size=5),
    weights=st.dictionaries(st.text(min_size=1, max_size=5), st.floats(0, 100), max_size=4),
)
def test_a_valid_config_round_trips(
    port: int, ratio: float, mode: str, on: bool, tags: list[str], weights: dict[str, float]
) -> None:
    inner = Inner(port=port, ratio=ratio, mode=mode, on=on, tags=tags, weights=weights)
    assert _read({"inner": dataclasses.asdict(inner)}) == (Outer(inner=inner), [])
