"""TaskSpec validation: every problem named with its path; canonical dict round trip."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.clocks import Timestamp
from shared.crdt import new_record
from shared.errors import ValidationError
from shared.model import (
    MAX_ARG_LEN,
    MAX_ARGV_ITEMS,
    MAX_ENV_ENTRIES,
    MAX_LABELS,
    MAX_NAME_LEN,
    MAX_SPEC_BYTES,
    ConsistencySpec,
    TaskSpec,
    parse_task_spec,
)
from shared.protocol import MAX_MESSAGE_BYTES, Deltas, Envelope, Place, encode
from shared.vocab import Level, PlacementMode, Tier

CANONICAL_DEFAULTS: dict[str, Any] = {
    "id": "t-42",
    "name": "",
    "command": ["python3", "-c", "print(1)"],
    "callable": None,
    "args": {},
    "env": {},
    "resources": {"cpu": 0.1, "memory_mb": 64, "disk_mb": 0},
    "priority": 50,
    "timeout_s": 60.0,
    "deadline_s": None,
    "work_s": None,
    "retry": {
        "max_attempts": 3,
        "backoff_s": 1.0,
        "multiplier": 2.0,
        "backoff_max_s": 60.0,
        "jitter": 0.1,
    },
    "consistency": {"level": "causal", "min": "causal", "max": "causal"},
    "placement": {
        "tiers": ["device", "edge", "regional", "cloud"],
        "preferred_tiers": [],
        "labels": {},
        "max_latency_ms": None,
        "data_source": None,
        "data_size_mb": 0.0,
        "mode": None,
    },
    "max_disconnect_s": 300.0,
    "idempotent": False,
    "depends_on": [],
    "workflow": None,
}


def problems_of(data: object) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        parse_task_spec(data)
    return {p.path: p.message for p in info.value.problems}


def test_minimal_spec_fills_every_default_of_the_contract() -> None:
    spec = parse_task_spec({"id": "t-42", "command": ["python3", "-c", "print(1)"]})
    assert spec.to_dict() == CANONICAL_DEFAULTS
    assert parse_task_spec(spec.to_dict()) == spec


def test_callable_task_with_args() -> None:
    spec = parse_task_spec({"id": "t-1", "callable": "demo.sum", "args": {"xs": [1, 2]}})
    assert spec.command is None
    assert spec.to_dict()["callable"] == "demo.sum"
    assert spec.to_dict()["args"] == {"xs": [1, 2]}


def test_shell_string_is_refused_with_a_hint() -> None:
    problems = problems_of({"id": "t", "command": "python3 job.py | tee out"})
    assert "argv list" in problems["command"]
    assert "shell" in problems["command"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"id": "t"}, "exactly one of 'command'"),
        ({"id": "t", "command": ["a"], "callable": "f"}, "not both"),
        ({"id": "t", "command": ["a"], "callable": None, "args": {"x": 1}}, None),
    ],
)
def test_command_xor_callable(data: dict[str, Any], message: str | None) -> None:
    if message is None:
        assert "args" in problems_of(data)
    else:
        assert message in problems_of(data)[""]


def test_every_problem_is_listed_with_its_path() -> None:
    problems = problems_of(
        {
            "id": "bad id",
            "command": ["ok", 3],
            "priority": 101,
            "timeout_s": 0,
            "retry": {"backoff_s": -1, "max_attempts": 0, "jiter": 0.5},
            "resources": {"cpu": "2", "memory_mb": 1.5},
            "placement": {"tiers": ["edge", "moon"], "preferred_tiers": ["cloud"]},
            "env": {"CONTINUUM_TASK_ID": "x", "9x": "y", "OK": 3},
            "idempotent": "yes",
            "prioriti": 3,
        }
    )
    assert problems == {
        "id": problems["id"],
        "command[1]": "must be a string, not a number",
        "priority": "must be ≤ 100 (got 101)",
        "timeout_s": "must be > 0 (got 0)",
        "retry.backoff_s": "must be ≥ 0 (got -1)",
        "retry.max_attempts": "must be ≥ 1 (got 0)",
        "retry.jiter": "unknown field (did you mean 'jitter'?)",
        "resources.cpu": "must be a finite number, not a string",
        "resources.memory_mb": "must be an integer, not a number",
        "placement.tiers[1]": "must be one of 'device', 'edge', 'regional', 'cloud' (got 'moon')",
        "placement.preferred_tiers[0]": "'cloud' is not in tiers",
        "env.CONTINUUM_TASK_ID": problems["env.CONTINUUM_TASK_ID"],
        "env.9x": problems["env.9x"],
        "env.OK": "must be a string, not a number",
        "idempotent": "must be true or false, not a string",
        "prioriti": "unknown field (did you mean 'priority'?)",
    }
    assert "letters, digits" in problems["id"]
    assert "set by the agent" in problems["env.CONTINUUM_TASK_ID"]


def test_error_text_lists_paths() -> None:
    with pytest.raises(ValidationError) as info:
        parse_task_spec({"id": "t", "command": ["a"], "retry": {"backoff_s": -1}}, path="tasks[1]")
    assert "tasks[1].retry.backoff_s: must be ≥ 0" in str(info.value)
    assert info.value.as_dict()["problems"] == [
        {"path": "tasks[1].retry.backoff_s", "message": "must be ≥ 0 (got -1)"}
    ]


@pytest.mark.parametrize(
    ("extra", "path", "fragment"),
    [
        ({"name": "n" * (MAX_NAME_LEN + 1)}, "name", f"at most {MAX_NAME_LEN} characters"),
        ({"command": ["a"] * (MAX_ARGV_ITEMS + 1)}, "command", f"at most {MAX_ARGV_ITEMS} items"),
        ({"command": ["a" * (MAX_ARG_LEN + 1)]}, "command[0]", "at most"),
        ({"command": ["a\x00b"]}, "command[0]", "NUL"),
        ({"command": []}, "command", "must not be empty"),
        ({"env": {f"K{i}": "v" for i in range(MAX_ENV_ENTRIES + 1)}}, "env", "at most"),
        (
            {"placement": {"labels": {f"k{i}": "v" for i in range(MAX_LABELS + 1)}}},
            "placement.labels",
            "at most",
        ),
        ({"placement": {"labels": {"a b": "v"}}}, "placement.labels.a b", "label keys"),
        ({"placement": {"tiers": []}}, "placement.tiers", "at least one tier"),
        ({"placement": {"tiers": ["edge", "edge"]}}, "placement.tiers[1]", "duplicate"),
        ({"placement": {"mode": "smart"}}, "placement.mode", "must be one of"),
        ({"placement": {"max_latency_ms": 0}}, "placement.max_latency_ms", "> 0"),
        ({"max_disconnect_s": -5}, "max_disconnect_s", "> 0"),
        ({"deadline_s": float("nan")}, "deadline_s", "finite number"),
        ({"depends_on": ["t"]}, "depends_on", "itself"),
        ({"depends_on": ["a", "a"]}, "depends_on[1]", "duplicate"),
        ({"retry": {"backoff_s": 10, "backoff_max_s": 5}}, "retry.backoff_max_s", "≥ backoff_s"),
        ({"retry": {"jitter": 1.5}}, "retry.jitter", "≤ 1"),
        ({"retry": {"multiplier": 0.5}}, "retry.multiplier", "≥ 1"),
        ({"retry": 3}, "retry", "must be a table"),
        ({"consistency": "sometimes"}, "consistency.level", "must be one of"),
        (
            {"consistency": {"level": "adaptive", "min": "strong", "max": "causal"}},
            "consistency",
            "must not be stronger",
        ),
        ({"consistency": {"level": "strong", "max": "causal"}}, "consistency.max", "adaptive"),
        ({"consistency": {"min": "eventual", "mx": "strong"}}, "consistency.mx", "did you mean"),
        ({"args": {"x": 1}}, "args", "callable"),
        ({"workflow": "no way"}, "workflow", "letters"),
        ({"idempotent": 1}, "idempotent", "true or false"),
        ({"work_s": 0}, "work_s", "> 0"),
        ({"work_s": True}, "work_s", "number"),
    ],
)
def test_each_rule_names_field_and_problem(extra: dict[str, Any], path: str, fragment: str) -> None:
    data = {"id": "t", "command": ["run"], **extra}
    problems = problems_of(data)
    assert path in problems, problems
    assert fragment in problems[path]


def test_args_must_be_plain_bounded_json() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(40):
        node["x"] = {}
        node = node["x"]
    assert "nest" in problems_of({"id": "t", "callable": "f", "args": deep})["args"]
    big = {"blob": "x" * 70_000}
    assert "bytes" in problems_of({"id": "t", "callable": "f", "args": big})["args"]
    assert "JSON" in problems_of({"id": "t", "callable": "f", "args": {"x": float("inf")}})["args"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, ConsistencySpec.fixed(Level.CAUSAL)),
        ("strong", ConsistencySpec.fixed(Level.STRONG)),
        ("adaptive", ConsistencySpec.bounded(Level.EVENTUAL, Level.STRONG)),
        ({"min": "causal"}, ConsistencySpec.bounded(Level.CAUSAL, Level.STRONG)),
        ({"level": "eventual", "min": "eventual"}, ConsistencySpec.fixed(Level.EVENTUAL)),
    ],
)
def test_consistency_forms(given: object, expected: ConsistencySpec) -> None:
    data: dict[str, Any] = {"id": "t", "command": ["a"]}
    if given is not None:
        data["consistency"] = given
    spec = parse_task_spec(data)
    assert spec.consistency == expected
    assert spec.consistency.clamp(Level.STRONG) == expected.max
    assert spec.consistency.clamp(Level.EVENTUAL) == expected.min


def test_tiers_are_kept_in_rank_order_and_preferences_in_given_order() -> None:
    spec = parse_task_spec(
        {
            "id": "t",
            "command": ["a"],
            "placement": {"tiers": ["cloud", "edge"], "preferred_tiers": ["cloud", "edge"]},
        }
    )
    assert spec.placement.tiers == (Tier.EDGE, Tier.CLOUD)
    assert spec.placement.preferred_tiers == (Tier.CLOUD, Tier.EDGE)


def test_integral_floats_are_accepted_as_integers() -> None:
    assert parse_task_spec({"id": "t", "command": ["a"], "priority": 7.0}).priority == 7


# -- round trip ----------------------------------------------------------------

_ids = st.from_regex(r"[a-z][a-z0-9_-]{0,11}", fullmatch=True)
_text = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=20
)
_pos = st.floats(min_value=0.001, max_value=1e5, allow_nan=False)
_json_scalar = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | _text
_json = st.recursive(
    _json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def task_dicts(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {"id": draw(_ids)}
    if draw(st.booleans()):
        data["command"] = draw(st.lists(_text.filter(bool), min_size=1, max_size=4))
    else:
        data["callable"] = draw(st.from_regex(r"[a-z][a-z0-9_.]{0,10}", fullmatch=True))
        data["args"] = draw(st.dictionaries(_text, _json, max_size=3))
    optional: dict[str, st.SearchStrategy[Any]] = {
        "name": _text,
        "env": st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,8}", fullmatch=True), _text),
        "resources": st.fixed_dictionaries(
            {},
            optional={
                "cpu": st.floats(0, 64) | st.integers(0, 64),
                "memory_mb": st.integers(0, 10_000),
                "disk_mb": st.integers(0, 10_000),
            },
        ),
        "priority": st.integers(0, 100),
        "timeout_s": _pos,
        "deadline_s": _pos | st.none(),
        "work_s": _pos | st.none(),
        "retry": st.fixed_dictionaries(
            {},
            optional={
                "max_attempts": st.integers(1, 10),
                "backoff_s": st.floats(0, 10),
                "multiplier": st.floats(1, 5),
                "jitter": st.floats(0, 1),
            },
        ),
        "consistency": st.sampled_from([lv.value for lv in Level] + ["adaptive"])
        | st.sampled_from(
            [{"min": "eventual", "max": "causal"}, {"level": "adaptive", "min": "causal"}]
        ),
        "placement": st.fixed_dictionaries(
            {},
            optional={
                "tiers": st.lists(st.sampled_from(list(Tier)), min_size=4, max_size=4, unique=True),
                "preferred_tiers": st.lists(st.sampled_from(list(Tier)), max_size=2, unique=True),
                "labels": st.dictionaries(_ids, _text, max_size=3),
                "max_latency_ms": _pos | st.none(),
                "data_source": _ids | st.none(),
                "data_size_mb": st.floats(0, 1000),
                "mode": st.sampled_from(list(PlacementMode)) | st.none(),
            },
        ),
        "max_disconnect_s": _pos,
        "idempotent": st.booleans(),
        "depends_on": st.lists(_ids.map(lambda s: "d" + s), max_size=3, unique=True),
        "workflow": _ids | st.none(),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            data[key] = draw(strategy)
    return data


@settings(max_examples=150, deadline=None)
@given(task_dicts())
def test_round_trip_through_canonical_dict_and_json(data: dict[str, Any]) -> None:
    spec = parse_task_spec(data)
    canonical = spec.to_dict()
    assert set(canonical) == set(CANONICAL_DEFAULTS)
    assert parse_task_spec(canonical) == spec
    again = json.loads(json.dumps(canonical))
    assert parse_task_spec(again) == spec
    assert parse_task_spec(again).to_dict() == canonical


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=10), _json, max_size=8))
def test_garbage_raises_only_validation_error(data: dict[str, Any]) -> None:
    try:
        spec = parse_task_spec(data)
    except ValidationError as exc:
        assert exc.problems
        assert all(isinstance(p.message, str) and p.message for p in exc.problems)
    else:
        assert isinstance(spec, TaskSpec)


def _sized(n: int) -> dict[str, Any]:
    """A task whose spec is ``n`` bytes of compact JSON or a few more (args of 4,000)."""
    base = parse_task_spec({"id": "t-big", "command": ["true"]}).to_dict()
    room = n - len(json.dumps(base, separators=(",", ":")))
    words, tail = divmod(room, 4003)  # each ``"x..."`` plus its comma
    command = ["true", *(["x" * 4000] * words), *(["y" * max(tail - 3, 1)] if tail > 3 else [])]
    return {"id": "t-big", "command": command}


def test_a_spec_too_big_for_one_message_is_refused_at_submission() -> None:
    # before, the controller accepted it and could then never send its `place`; the agent's
    # own submission could never go up: refused here, with the reason and the way out
    within = parse_task_spec(_sized(MAX_SPEC_BYTES - 10))
    assert len(json.dumps(within.to_dict(), separators=(",", ":"))) <= MAX_SPEC_BYTES
    with pytest.raises(ValidationError, match="bytes as JSON, over 131,072") as info:
        parse_task_spec(_sized(MAX_SPEC_BYTES + 10))
    assert "a data source" in str(info.value)


def test_a_spec_at_the_bound_fits_a_place_and_a_deltas_message() -> None:
    spec = parse_task_spec(_sized(MAX_SPEC_BYTES - 10)).to_dict()
    ts = Timestamp(1_700_000_000_000, 0, "n1")
    record = new_record("t-big", spec, writer="n1", hlc=ts)
    for body in (
        Place(task_id="t-big", epoch=1, spec=spec, level=Level.CAUSAL),
        Deltas(records=(record,)),
    ):
        env = Envelope(type=body.TYPE, id="e1", sender="n1", hlc=ts.encode(), body=body, seq=1)
        assert len(encode(env)) <= MAX_MESSAGE_BYTES
