"""Attempts that must not coexist, and lease requests refused before the lease book
(shared.decisions)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shared.crdt import AttemptStatus as A
from shared.decisions import RunningAttempt, lease_refusal, running_conflicts
from shared.vocab import Level, TaskStatus


def att(writer: str, n: int, node: str, status: A = A.STARTED) -> RunningAttempt:
    return RunningAttempt(dot=(writer, n), node=node, status=status)


def test_two_running_attempts_on_different_nodes_conflict_unless_eventual() -> None:
    a, b = att("x", 1, "n1"), att("y", 1, "n2")
    assert running_conflicts(Level.STRONG, [a, b]) == [(a, b)]
    assert running_conflicts(None, [a, b]) == [(a, b)]
    assert running_conflicts(Level.EVENTUAL, [a, b]) == []


def test_same_node_ended_or_already_flagged_is_no_conflict() -> None:
    a, same, ended = att("x", 1, "n1"), att("x", 2, "n1"), att("y", 1, "n2", A.FAILED)
    assert running_conflicts(Level.CAUSAL, [a, same, ended]) == []
    b = att("y", 2, "n2")
    assert running_conflicts(Level.CAUSAL, [a, b], flagged={frozenset((a.dot, b.dot))}) == []


@given(st.lists(st.tuples(st.sampled_from(["n1", "n2", "n3"]), st.sampled_from(list(A)))))
def test_every_pair_reported_is_two_running_attempts_on_two_nodes(
    rows: list[tuple[str, A]],
) -> None:
    attempts = [att("w", i, node, status) for i, (node, status) in enumerate(rows)]
    for a, b in running_conflicts(Level.STRONG, attempts):
        assert a.node != b.node and a.status == b.status == A.STARTED


def test_lease_refusal_table() -> None:
    def refuse(**kw: Any) -> str | None:
        base: dict[str, Any] = {
            "known": True,
            "placed": True,
            "cancel_requested": False,
            "status": TaskStatus.RUNNING,
        }
        return lease_refusal(**{**base, **kw})

    assert refuse() is None
    assert refuse(known=False, placed=False, status=None) == "unknown_task"
    assert refuse(placed=False) == "unknown_task"
    assert refuse(cancel_requested=True, status=TaskStatus.CANCELLED) == "cancelled"
    assert refuse(status=TaskStatus.SUCCEEDED) == "terminal"
