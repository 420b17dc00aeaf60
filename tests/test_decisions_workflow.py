"""Task readiness, dependent cancellation, placement order and workflow status
(shared.decisions)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.decisions import (
    Candidate,
    Readiness,
    placement_order,
    task_readiness,
    workflow_status,
)
from shared.vocab import TaskStatus as S

statuses = st.sampled_from(list(S))


def test_no_dependencies_is_ready() -> None:
    d = task_readiness([])
    assert d.readiness is Readiness.READY and d.reason == "no dependencies"


def test_ready_only_when_every_dependency_succeeded() -> None:
    assert task_readiness([S.SUCCEEDED, S.SUCCEEDED]).readiness is Readiness.READY
    assert task_readiness([S.SUCCEEDED, S.RUNNING]).readiness is Readiness.WAITING
    assert task_readiness([S.SUCCEEDED, None]).readiness is Readiness.WAITING  # not seen yet


@given(st.lists(st.one_of(st.none(), statuses)), st.sampled_from([S.FAILED, S.CANCELLED]))
def test_a_dead_dependency_cancels_whatever_else(deps: list[S | None], dead: S) -> None:
    d = task_readiness([*deps, dead])
    assert d.readiness is Readiness.CANCEL and "failed or was cancelled" in d.reason


def test_placement_order_priority_then_age_then_id() -> None:
    order = placement_order(
        [
            Candidate(task_id="b", priority=50, submitted_ms=5),
            Candidate(task_id="a", priority=50, submitted_ms=5),
            Candidate(task_id="old", priority=50, submitted_ms=1),
            Candidate(task_id="urgent", priority=90, submitted_ms=9),
        ]
    )
    assert order == ["urgent", "old", "a", "b"]


@given(st.lists(st.tuples(st.integers(0, 100), st.integers(0, 10)), max_size=12, unique=True))
def test_placement_order_ignores_input_order(rows: list[tuple[int, int]]) -> None:
    cands = [
        Candidate(task_id=f"t{i}", priority=p, submitted_ms=m) for i, (p, m) in enumerate(rows)
    ]
    assert placement_order(cands) == placement_order(reversed(cands))


def test_workflow_status_table() -> None:
    def status(*s: str) -> S:
        return workflow_status(s).status

    assert status() is S.SUCCEEDED
    assert status("succeeded", "succeeded") is S.SUCCEEDED
    assert status("succeeded", "failed", "cancelled") is S.FAILED
    assert status("cancelled", "pending") is S.CANCELLED
    assert status("succeeded", "pending") is S.RUNNING
    assert status("running", "pending") is S.RUNNING
    assert status("pending", "pending") is S.PENDING


@given(st.lists(statuses, min_size=1))
def test_workflow_failure_dominates(tasks: list[S]) -> None:
    assert workflow_status([*tasks, S.FAILED]).status is S.FAILED
