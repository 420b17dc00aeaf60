"""What an ended attempt means: its status on the attempt lattice and its reason, the output
tails it carries upstream, and the line the agent logs for it.

Split from ``scheduler.py``, which journals outcomes (``LocalScheduler.settle``); the
simulator's parity tests map outcomes the same way (``status_of``).
"""

from __future__ import annotations

import logging

from edge_agent.executor import Outcome
from shared.crdt import AttemptLog, AttemptStatus

__all__ = ["attempt_log", "log_outcome", "status_of"]

log = logging.getLogger("edge_agent")

#: How an ended attempt is logged: failures are what an operator looks for, except the
#: attempts this agent stopped on purpose (its own stop, a newer placement elsewhere).
_OUTCOME_LOG_LEVEL = {AttemptStatus.FAILED: logging.WARNING, AttemptStatus.CANCELLED: logging.INFO}
_STOPPED_ON_PURPOSE = frozenset({"agent_shutdown", "superseded"})


def log_outcome(
    outcome: Outcome, status: AttemptStatus, reason: str | None, epoch: int | None
) -> None:
    """One line per ended attempt, its facts as fields."""
    log.log(
        logging.INFO
        if reason in _STOPPED_ON_PURPOSE
        else _OUTCOME_LOG_LEVEL.get(status, logging.DEBUG),
        "task %s %s (%s)",
        outcome.task_id,
        status.name.lower(),
        reason or "exit_code 0",
        extra={
            "fields": {
                "task_id": outcome.task_id,
                "attempt": outcome.attempt,
                "epoch": epoch,
                "status": status.name.lower(),
                "reason": reason,
                "exit_code": outcome.exit_code,
                "signal": outcome.signal,
                "duration_s": round(outcome.duration_s, 3),
            }
        },
    )


def attempt_log(outcome: Outcome) -> AttemptLog:
    """The output tails sent with an attempt's end (``continuum logs``): the supervisor keeps
    the last ``executor.output_tail_bytes`` of each stream; ``shared.crdt.set_status`` cuts
    each to what one attempt of the task may carry on the wire (``log_limit``: at most
    ``MAX_LOG_TAIL``, less for a task with many attempts or a large spec)."""
    return AttemptLog(
        outcome.stdout_tail, outcome.stderr_tail, outcome.stdout_bytes, outcome.stderr_bytes
    )


def status_of(outcome: Outcome) -> tuple[AttemptStatus, str | None]:
    """Map a supervisor's outcome onto the attempt lattice and a reason string."""
    if outcome.succeeded:
        return AttemptStatus.SUCCEEDED, None
    if outcome.reason == "cancelled":
        return AttemptStatus.CANCELLED, "cancelled"
    if outcome.reason == "exited":
        return AttemptStatus.FAILED, f"exit_code {outcome.exit_code}"
    if outcome.reason == "fenced":
        return AttemptStatus.FAILED, "lease_expired"
    if outcome.reason == "spawn_failed":
        return AttemptStatus.FAILED, ("spawn_failed: " + outcome.stderr_tail)[:1000]
    return AttemptStatus.FAILED, outcome.reason
