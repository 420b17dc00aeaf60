"""The agent's local queue order: priority, then deadline, then waiting time, with aging.

A task's *effective* priority is its priority plus one point per ``aging_s`` it has waited
(whole steps, so tasks of one priority band still tie and fall through to the deadline and
the waiting time). Aging is uncapped, which is what makes the order starvation-free: a task
``Y`` enqueued after ``X`` can only be ordered before ``X`` while ``eff(Y) ≥ eff(X)``, i.e.
``wait(X) - wait(Y) < aging_s · (prio(Y) - prio(X) + 1)``; every task that arrives more than
``aging_s · (MAX_PRIORITY + 1)`` after ``X`` is ordered after it, so only finitely many tasks
can ever overtake ``X``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["QueuePolicy", "QueuedTask", "effective_priority", "order_queue"]


@dataclass(frozen=True, slots=True, kw_only=True)
class QueuedTask:
    """A task waiting in the local queue.

    ``priority``: 0 … 100, higher first (``shared.model`` default 50). ``deadline`` and
    ``enqueued`` are absolute times in seconds on the same clock as ``now`` (``deadline``
    ``None`` = none). ``cpu``/``memory_mb``: its request, for shedding and admission.
    """

    task_id: str
    priority: int = 50
    deadline: float | None = None
    enqueued: float = 0.0
    cpu: float = 0.0
    memory_mb: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class QueuePolicy:
    """``aging_s``: seconds of waiting worth one priority point (default 10 s: a priority-0
    task outranks a fresh priority-100 one after about 17 minutes)."""

    aging_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.aging_s > 0 or math.isinf(self.aging_s):
            raise ValueError("aging_s must be a positive finite number")


def effective_priority(task: QueuedTask, now: float, policy: QueuePolicy | None = None) -> int:
    """Priority plus whole aging steps waited (a task stamped in the future has waited 0)."""
    aging = (policy or QueuePolicy()).aging_s
    waited = max(0.0, now - task.enqueued)
    return task.priority + int(waited // aging)


def _key(task: QueuedTask, now: float, policy: QueuePolicy) -> tuple[float, float, float, str]:
    deadline = math.inf if task.deadline is None else task.deadline
    # The task id last: a total, reproducible order (the simulator replays decisions).
    return (-effective_priority(task, now, policy), deadline, task.enqueued, task.task_id)


def order_queue(
    tasks: Iterable[QueuedTask], now: float, policy: QueuePolicy | None = None
) -> list[QueuedTask]:
    """The queue in start order: highest effective priority, then earliest deadline (none
    last), then longest waiting, then task id."""
    pol = policy or QueuePolicy()
    return sorted(tasks, key=lambda t: _key(t, now, pol))
