"""The task record lattice (docs/crdt.md): merge is a join (commutative, associative,
idempotent), statuses only move up, every mutator adds exactly one event, the
dict form round-trips with stable canonical bytes, and untrusted input fails
with one ValidationError naming every field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from crdt_world import PROGRAMS, TASKS, run_program, spec_of
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.clocks import Timestamp
from shared.crdt import (
    AttemptStatus,
    TaskRecord,
    canonical_bytes,
    content_hash,
    merge,
    new_record,
    place,
    request_cancel,
    set_status,
    start_attempt,
    visible_status,
)
from shared.errors import SpecConflictError, ValidationError
from shared.vocab import TaskStatus

Program = list[tuple[str, int, int, int, int]]


def _pool(program: Program) -> list[TaskRecord]:
    """Deltas and replica states of one task, from a random run."""
    world = run_program(program, 3)
    return [rec for rec in world.deltas + world.snapshots if rec.task_id == TASKS[0]]


def _three(program: Program, data: st.DataObject) -> tuple[TaskRecord, TaskRecord, TaskRecord]:
    pool = _pool(program) or [TaskRecord(TASKS[0])]
    pick = st.sampled_from(pool)
    return data.draw(pick), data.draw(pick), data.draw(pick)


@settings(max_examples=100, deadline=None)
@given(PROGRAMS, st.data())
def test_merge_is_a_join(program: Program, data: st.DataObject) -> None:
    a, b, c = _three(program, data)
    ab = merge(a, b)
    assert ab == merge(b, a) and content_hash(ab) == content_hash(merge(b, a))
    assert merge(ab, c) == merge(a, merge(b, c))
    assert merge(a, a) is a
    assert merge(ab, a) == ab and merge(ab, b) == ab  # an upper bound of both
    assert merge(a, TaskRecord(a.task_id)) is a  # bottom is the identity


@settings(max_examples=100, deadline=None)
@given(PROGRAMS, st.data())
def test_status_never_moves_down(program: Program, data: st.DataObject) -> None:
    a, b, _ = _three(program, data)
    joined = merge(a, b)
    for side in (a, b):
        for dot, attempt in side.attempts.items():
            assert joined.attempts[dot].status >= attempt.status
        if side.placement is not None:
            assert joined.placement is not None and joined.placement.epoch >= side.placement.epoch
        assert joined.cancel_requested >= side.cancel_requested
        assert joined.context.dominates(side.context)
        assert side.spec is None or joined.spec == side.spec


@settings(max_examples=100, deadline=None)
@given(PROGRAMS, st.data())
def test_dict_round_trip_and_canonical_bytes_are_stable(
    program: Program, data: st.DataObject
) -> None:
    rec, _, _ = _three(program, data)
    wire = json.loads(json.dumps(rec.to_dict()))
    back = TaskRecord.from_dict(wire)
    assert back == rec
    assert canonical_bytes(back) == canonical_bytes(rec)
    assert content_hash(back) == content_hash(rec)
    again = TaskRecord.from_dict(json.loads(canonical_bytes(rec)))
    assert canonical_bytes(again) == canonical_bytes(rec)


def _t(n: int, node: str = "cloud") -> Timestamp:
    return Timestamp(5_000 + n, 0, node)


def _created() -> TaskRecord:
    return new_record("t1", spec_of("t1"), writer="cloud", hlc=_t(0))


def test_each_mutator_adds_exactly_one_event_of_its_writer() -> None:
    rec = _created()
    assert not rec.context and not rec.dots  # the spec names no event
    delta = place(rec, epoch=1, node="n1", level="strong", lease_s=30, writer="cloud", hlc=_t(1))
    assert delta.context.to_dict() == {"cloud": 1} and not delta.dots and delta.spec is None
    rec = merge(rec, delta)
    dot, delta = start_attempt(rec, node="n1", epoch=1, writer="n1", hlc=_t(2, "n1"))
    assert dot == ("n1", 1) and delta.context.to_dict() == {"n1": 1}
    rec = merge(rec, delta)
    delta = set_status(rec, dot, AttemptStatus.FAILED, writer="cloud", hlc=_t(3))
    assert not delta.context and delta.dots == frozenset({("cloud", 2)})
    rec = merge(rec, delta)
    delta = request_cancel(rec, writer="n1", hlc=_t(4, "n1"))
    assert delta.dots == frozenset({("n1", 2)}) and delta.cancel_requested
    rec = merge(rec, delta)
    assert rec.context.to_dict() == {"cloud": 2, "n1": 2} and not rec.dots


def test_visible_status_is_derived() -> None:
    rec = _created()
    assert visible_status(rec) == TaskStatus.PENDING
    dot, delta = start_attempt(rec, node="n1", epoch=1, writer="n1", hlc=_t(1, "n1"))
    rec = merge(rec, delta)
    assert visible_status(rec) == TaskStatus.RUNNING
    rec = merge(rec, set_status(rec, dot, AttemptStatus.FAILED, writer="n1", hlc=_t(2, "n1")))
    assert visible_status(rec) == TaskStatus.PENDING  # budget 2: one retry left
    dot2, delta = start_attempt(rec, node="n2", epoch=2, writer="n2", hlc=_t(3, "n2"))
    rec = merge(rec, delta)
    lost = merge(rec, set_status(rec, dot2, AttemptStatus.LOST, writer="cloud", hlc=_t(4)))
    assert visible_status(lost) == TaskStatus.FAILED  # failed + lost spend the budget of 2
    cancelled = merge(rec, request_cancel(rec, writer="cloud", hlc=_t(5)))
    assert visible_status(cancelled) == TaskStatus.CANCELLED
    won = set_status(rec, dot2, AttemptStatus.SUCCEEDED, writer="n2", hlc=_t(6, "n2"), result=1)
    assert visible_status(merge(cancelled, won)) == TaskStatus.SUCCEEDED  # success beats cancel
    assert visible_status(merge(lost, won)) == TaskStatus.SUCCEEDED  # a report beats inference


def test_outcome_travels_with_the_winning_status() -> None:
    rec = _created()
    dot, delta = start_attempt(rec, node="n1", epoch=1, writer="n1", hlc=_t(1, "n1"))
    rec = merge(rec, delta)
    lost = set_status(rec, dot, AttemptStatus.LOST, writer="cloud", hlc=_t(9), reason="silent")
    done = set_status(
        rec, dot, AttemptStatus.SUCCEEDED, writer="n1", hlc=_t(2, "n1"), exit_code=0, result=[1]
    )
    attempt = merge(merge(rec, lost), done).attempts[dot]
    assert (attempt.status, attempt.exit_code, attempt.result, attempt.reason) == (
        AttemptStatus.SUCCEEDED,
        0,
        [1],
        None,
    )
    assert attempt.started_hlc == _t(1, "n1").encode() and attempt.ended_hlc == _t(2, "n1").encode()


def test_placement_register_keeps_the_highest_epoch() -> None:
    rec = _created()
    p2 = place(rec, epoch=2, node="n2", level="causal", lease_s=None, writer="cloud", hlc=_t(1))
    p1 = place(rec, epoch=1, node="n1", level="strong", lease_s=5, writer="cloud", hlc=_t(2))
    assert merge(merge(rec, p1), p2).placement == merge(merge(rec, p2), p1).placement
    assert merge(p1, p2).placement is not None and merge(p1, p2).placement.node == "n2"  # type: ignore[union-attr]


def test_two_specs_under_one_id_conflict() -> None:
    other = new_record("t1", {"id": "t1", "command": ["rm", "-rf"]}, writer="n1", hlc=_t(0, "n1"))
    with pytest.raises(SpecConflictError) as info:
        merge(_created(), other)
    assert "t1" in str(info.value)
    with pytest.raises(ValueError):
        merge(_created(), TaskRecord("t2"))


def test_mutators_refuse_bad_input() -> None:
    rec = _created()
    with pytest.raises(ValueError):
        new_record("bad id", {"id": "bad id"}, writer="cloud", hlc=_t(0))
    with pytest.raises(ValueError):
        new_record("t1", {"id": "t2"}, writer="cloud", hlc=_t(0))
    with pytest.raises(ValueError):
        new_record("t1", {"id": "t1"}, writer="no/slash", hlc=_t(0))
    with pytest.raises(ValueError):
        start_attempt(rec, node="n1", epoch=1, writer="n1", hlc=_t(1), status=AttemptStatus.FAILED)
    with pytest.raises(KeyError):
        set_status(rec, ("n1", 9), AttemptStatus.FAILED, writer="n1", hlc=_t(1))
    dot, delta = start_attempt(rec, node="n1", epoch=1, writer="n1", hlc=_t(1, "n1"))
    rec = merge(rec, delta)
    with pytest.raises(ValidationError) as info:
        set_status(
            rec,
            dot,
            AttemptStatus.FAILED,
            writer="n1",
            hlc=_t(2, "n1"),
            result=float("nan"),
            reason="x" * 2000,
            exit_code="1",  # type: ignore[arg-type]
        )
    paths = {p.path for p in info.value.problems}
    assert paths == {"result", "reason", "exit_code"}


def _problems(data: Any) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        TaskRecord.from_dict(data)
    return {p.path: p.message for p in info.value.problems}


def test_from_dict_names_every_field_and_problem() -> None:
    problems = _problems(
        {
            "id": "bad id",
            "context": {"n1": -1},
            "dots": ["n1:0", 5],
            "spec": {"id": "other"},
            "placement": {"epoch": -1, "node": "a/b", "level": "x", "lease_s": -1, "hlc": "zz"},
            "attempts": {
                "nokey": {},
                "n1:1": {"epoch": 0, "status": "done", "hlc": "1.0.n1", "exit_code": 1.5},
            },
            "cancel": "yes",
        }
    )
    expected = {
        "id": "task id",
        "context.n1": "integer >= 0",
        "dots[0]": "<writer node id>:<counter >= 1>",
        "dots[1]": "<writer node id>:<counter >= 1>",
        "spec.id": "must equal",
        "placement.epoch": "between 0",
        "placement.node": "node id",
        "placement.level": "must be one of",
        "placement.lease_s": "finite number >= 0",
        "placement.hlc": "HLC",
        "attempts.nokey": "key must be",
        "attempts.n1:1.status": "must be one of",
        "attempts.n1:1.exit_code": "integer",
        "cancel": "boolean",
    }
    for path, fragment in expected.items():
        assert path in problems, (path, problems)
        assert fragment in problems[path], (path, problems[path])


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    ["id", "context", "dots", "spec", "placement", "attempts", "cancel"]
                )
                | st.text(max_size=6),
                inner,
                max_size=5,
            )
        ),
        max_leaves=20,
    )
)
def test_from_dict_on_junk_raises_only_validation_error(data: object) -> None:
    try:
        rec = TaskRecord.from_dict(data)
    except ValidationError:
        return
    assert TaskRecord.from_dict(json.loads(canonical_bytes(rec))) == rec
