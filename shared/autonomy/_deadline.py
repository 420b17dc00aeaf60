"""Deadline-feasible admission to an agent's local queue: EDF with Moore-Hodgson's rule.

An agent that takes submissions on its own (a device's failover, docs/agent.md "Local API")
should take a task only if it can still finish it by its deadline, given what it already
holds, and refuse it at once otherwise, so that the submitter tries elsewhere while there is
time. First come, first admitted fails under overload: long runs take the cores and the
short, urgent tasks behind them find none, although the urgent work alone would fit; a queue
that takes everything in order fails worse, its hopeless entries running first.

``plan_edf`` plans the queue as the agent will run it, earliest deadline first, each task on
the core that frees first (non-preemptive list scheduling over ``free_at``, when each core
is free for queued work), and keeps it feasible:

1. a task that would miss its deadline even on the first free core with nothing ahead of it
   is refused (no choice of the others saves it);
2. then, in EDF order, Moore-Hodgson's rule for the fewest late jobs: when a task would
   finish after its deadline, the longest task planned so far (the most recently offered
   among equals: a promise already given is kept before a new one) is refused, until the
   rest meet theirs. On one core this refuses the fewest tasks (Moore 1968); on several it
   is the same greedy rule. Refusing a task never delays another (removing a task from a
   list schedule only moves the cores' free times earlier), so what is kept meets every
   deadline of the plan.

A refused task that was queued before is handed back to its submitter, which tries the next
agent, then the controller. Only queued tasks are ever refused: none has started, so none
runs twice. The plan is only as good as ``run_s``, the caller's expected run time; a task
that overruns it delays the plan, and the next call refuses what became hopeless.

Pure and clock-free: ``now``, ``free_at`` and deadlines are seconds on the caller's clock.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DeadlineJob", "EdfPlan", "edf_finish", "plan_edf"]


@dataclass(frozen=True, slots=True)
class DeadlineJob:
    """A task for the plan: ``deadline`` (absolute, the caller's clock) by which its run must
    end, ``run_s`` its expected run on one core. ``key`` names it to the caller."""

    key: str
    deadline: float
    run_s: float


@dataclass(frozen=True, slots=True)
class EdfPlan:
    """``kept``: the tasks to hold, in the order to start them (EDF), each with its planned
    ``starts``; ``refused``: the tasks to refuse or hand back (the hopeless first)."""

    kept: tuple[DeadlineJob, ...]
    starts: tuple[float, ...]
    refused: tuple[DeadlineJob, ...]

    def admits(self, key: str) -> bool:
        """Whether the task named ``key`` is kept."""
        return any(job.key == key for job in self.kept)


def _schedule(cores: list[float], jobs: Sequence[DeadlineJob]) -> tuple[list[float], list[float]]:
    """Starts of ``jobs`` in order, each on the core that frees first, and the cores after."""
    heap = list(cores)
    heapq.heapify(heap)
    starts = []
    for job in jobs:
        start = heapq.heappop(heap)
        starts.append(start)
        heapq.heappush(heap, start + job.run_s)
    return starts, heap


def plan_edf(
    free_at: Sequence[float],
    queued: Sequence[DeadlineJob],
    now: float,
    new: DeadlineJob | None = None,
) -> EdfPlan:
    """The queue's plan with ``new`` offered (see the module docstring). ``free_at``: when each
    core is next free for queued work (one entry per core; a time before ``now`` counts as
    ``now``; none: every task is refused); ``queued``: the tasks held, not started, in the
    order they were admitted. Deadline ties run in that order, ``new`` last."""
    offered = [*queued, *(() if new is None else (new,))]
    cores = [max(now, t) for t in free_at]
    if not cores:
        return EdfPlan((), (), tuple(offered))
    first = min(cores)
    refused = [job for job in offered if first + job.run_s > job.deadline]
    rank = {id(job): i for i, job in enumerate(offered)}
    candidates = sorted(
        (job for job in offered if first + job.run_s <= job.deadline),
        key=lambda job: (job.deadline, rank[id(job)]),
    )
    kept: list[DeadlineJob] = []
    state = list(cores)
    heapq.heapify(state)
    for job in candidates:
        kept.append(job)
        start = heapq.heappop(state)
        heapq.heappush(state, start + job.run_s)
        while start + job.run_s > job.deadline:
            drop = max(kept, key=lambda j: (j.run_s, rank[id(j)]))
            kept.remove(drop)
            refused.append(drop)
            starts, state = _schedule(cores, kept)
            if drop is job:
                break
            start = starts[-1]  # ``job`` is still the last one kept
    starts, _ = _schedule(cores, kept)
    return EdfPlan(tuple(kept), tuple(starts), tuple(refused))


def edf_finish(
    free_at: Sequence[float], jobs: Sequence[DeadlineJob], now: float, key: str
) -> float:
    """When the task named ``key`` would finish were all of ``jobs`` planned, none refused:
    EDF order (deadline ties in the given order), each on the core that frees first, as in
    ``plan_edf``. What a refusal reports: a task refused by rule 1 finishes late even
    first; one refused by rule 2 may finish in time itself while others behind it would
    not. ``inf`` with no core; ``KeyError`` when no job is named ``key``."""
    cores = [max(now, t) for t in free_at]
    ordered = sorted(jobs, key=lambda job: job.deadline)  # stable: ties keep their order
    if not cores:
        if any(job.key == key for job in ordered):
            return math.inf
        raise KeyError(key)
    starts, _ = _schedule(cores, ordered)
    for job, start in zip(ordered, starts, strict=True):
        if job.key == key:
            return start + job.run_s
    raise KeyError(key)
