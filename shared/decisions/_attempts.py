"""Attempts that must not coexist, and lease requests answered before the lease book.

``running_conflicts``: two attempts of a task running at once on different nodes is
a conflict unless its level is ``eventual`` (hedging); each pair is reported once.
``lease_refusal``: a lease request for a task the controller does not know, has not
placed, or that is cancelled or over is refused before the lease book (fencing by
epoch: ``shared.consistency.LeaseBook``) is asked.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass

from shared.crdt import AttemptStatus
from shared.vocab import Level, TaskStatus

__all__ = ["RunningAttempt", "lease_refusal", "running_conflicts"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningAttempt:
    dot: tuple[str, int]
    node: str
    status: AttemptStatus


def running_conflicts(
    level: Level | None,
    attempts: Iterable[RunningAttempt],
    *,
    flagged: Set[frozenset[tuple[str, int]]] = frozenset(),
) -> list[tuple[RunningAttempt, RunningAttempt]]:
    """Pairs of attempts started and not ended on different nodes, not yet in
    ``flagged``, for a task whose level forbids it (``None``: not known, forbids)."""
    if level is Level.EVENTUAL:
        return []
    running = [a for a in attempts if a.status == AttemptStatus.STARTED]
    return [
        (a, b)
        for i, a in enumerate(running)
        for b in running[i + 1 :]
        if a.node != b.node and frozenset((a.dot, b.dot)) not in flagged
    ]


def lease_refusal(
    *, known: bool, placed: bool, cancel_requested: bool, status: TaskStatus | None
) -> str | None:
    """Why a lease request is refused before the lease book is asked (``None``: ask it)."""
    if not known or not placed:
        return "unknown_task"
    if cancel_requested:
        return "cancelled"
    if status is not None and status.terminal:
        return "terminal"
    return None
