"""When a task may be placed, when it must be cancelled, and what a workflow's status is.

A task in a workflow waits for its dependencies: it is **ready** once every one
succeeded, and it is **cancelled** (dependent cancellation) as soon as one of them
failed or was cancelled, because it could never run. Ready tasks are placed higher
priority first, then older first, then by id (a total order, so every caller places
the same backlog in the same order).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from shared.vocab import TaskStatus

__all__ = [
    "Candidate",
    "Readiness",
    "ReadinessDecision",
    "WorkflowDecision",
    "placement_order",
    "task_readiness",
    "workflow_status",
]

_DEAD = (TaskStatus.FAILED, TaskStatus.CANCELLED)


class Readiness(StrEnum):
    """What to do with an unplaced task now."""

    READY = "ready"  # place it
    WAITING = "waiting"  # a dependency has not succeeded yet (or is not known yet)
    CANCEL = "cancel"  # a dependency failed or was cancelled: it can never run


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadinessDecision:
    readiness: Readiness
    reason: str


def task_readiness(dependencies: Sequence[TaskStatus | None]) -> ReadinessDecision:
    """Decide from the visible status of each dependency (``None``: not known yet).

    A failed or cancelled dependency wins over a waiting one: the task can never
    run, so it is cancelled now rather than left pending.
    """
    if any(s in _DEAD for s in dependencies):
        return ReadinessDecision(
            readiness=Readiness.CANCEL, reason="a dependency failed or was cancelled"
        )
    if all(s is TaskStatus.SUCCEEDED for s in dependencies):
        return ReadinessDecision(
            readiness=Readiness.READY,
            reason="all dependencies succeeded" if dependencies else "no dependencies",
        )
    waiting = sum(1 for s in dependencies if s is not TaskStatus.SUCCEEDED)
    return ReadinessDecision(
        readiness=Readiness.WAITING, reason=f"{waiting} dependencies not succeeded yet"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """A ready task as the placement order reads it."""

    task_id: str
    priority: int
    submitted_ms: int


def placement_order(candidates: Iterable[Candidate]) -> list[str]:
    """Task ids in placement order: higher priority, then older, then smaller id."""
    ranked = sorted(candidates, key=lambda c: (-c.priority, c.submitted_ms, c.task_id))
    return [c.task_id for c in ranked]


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowDecision:
    status: TaskStatus
    reason: str


def workflow_status(statuses: Iterable[TaskStatus | str]) -> WorkflowDecision:
    """A workflow's status from its tasks' visible statuses.

    Succeeded when every task succeeded (an empty workflow too); failed when a task
    failed, else cancelled when one was cancelled; running when some work ran
    (a task running or succeeded); pending otherwise.
    """
    seen = {TaskStatus(s) for s in statuses}
    if seen <= {TaskStatus.SUCCEEDED}:
        return WorkflowDecision(status=TaskStatus.SUCCEEDED, reason="every task succeeded")
    if TaskStatus.FAILED in seen:
        return WorkflowDecision(status=TaskStatus.FAILED, reason="a task failed")
    if TaskStatus.CANCELLED in seen:
        return WorkflowDecision(status=TaskStatus.CANCELLED, reason="a task was cancelled")
    if seen & {TaskStatus.RUNNING, TaskStatus.SUCCEEDED}:
        return WorkflowDecision(status=TaskStatus.RUNNING, reason="some work has run")
    return WorkflowDecision(status=TaskStatus.PENDING, reason="no task has started")
