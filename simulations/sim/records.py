"""The simulator's named records: tasks, attempts, workflows, node rows and results.

Plain slotted dataclasses, mutated in place by the facades (``workload``,
``agent``, ``controller``, ``scheduling``); one run allocates one ``Task`` per
arrival and one ``Attempt`` per execution, so they stay small and flat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final

from shared.consistency import AdaptiveLevel
from shared.vocab import Level, TaskStatus, Tier
from simulations.sim.scenario import NodeClass

__all__ = ["Attempt", "Flow", "NodeRow", "Outcome", "Result", "Task", "TaskState"]

INF = math.inf


class TaskState(IntEnum):
    """Where a task ended: ``OPEN`` until one of the three terminal states."""

    OPEN = 0
    SUCCEEDED = 1
    FAILED = 2
    LOST = 3


class Outcome:
    """How an attempt ended (strings, as ``simulations.sim.ledger`` reads them)."""

    OK: Final = "ok"
    FAIL: Final = "fail"
    LOST: Final = "lost"
    FENCED: Final = "fenced"
    REFUSED: Final = "refused"


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One node of the continuum: ``site`` is -1 above the edge, ``region`` -1 in
    the cloud, ``device`` the device index for a computing device (else -1)."""

    node_id: str
    tier: Tier
    site: int
    region: int
    cls: NodeClass
    device: int = -1


@dataclass(slots=True)
class Flow:
    """One workflow instance: ``depth`` layers of ``width`` tasks, each layer
    depending on every task of the one before. ``statuses``: every submitted task's
    visible status as the workflow knows it (``None`` until it ended); ``layer_ids``
    the tasks of the current layer; ``done`` once its status is final."""

    dev: int
    tt: int
    width: int
    depth: int
    t0: float
    layer: int = 0
    layer_ids: list[str] = field(default_factory=list)
    statuses: dict[str, TaskStatus | None] = field(default_factory=dict)
    done: bool = False


@dataclass(slots=True, eq=False)
class Task:
    """One submitted task and what the controller knows of it.

    ``attempts`` counts the attempts charged to the retry budget; ``epoch`` the
    controller's placements; ``entered`` when it (re)joined a placement queue;
    ``best``/``report`` the earliest result at the device and when the
    controller learnt of it; ``result_at`` its index in the latency list."""

    id: str
    dev: int
    site: int
    tt: int
    t_arr: float
    mi: float
    in_bits: float
    out_bits: float
    fail_u: float
    lo: Level
    hi: Level
    level: Level = Level.CAUSAL
    epoch: int = 0
    attempts: int = 0
    replaced: int = 0
    executions: int = 0
    exclude: frozenset[str] = frozenset()
    entered: float = 0.0
    t_ctrl: float = INF
    state: TaskState = TaskState.OPEN
    best: float = INF
    report: float = INF
    result_at: int = -1
    flow: Flow | None = None
    moved_at: float = -INF
    adaptive: AdaptiveLevel | None = None


@dataclass(slots=True, eq=False)
class Attempt:
    """One execution of a task on one node, with its precomputed timeline:
    placement received ``t_recv``, lease requested/granted ``t_req``/``t_grant``,
    ``start`` → ``end`` of execution, ``stop`` where it really stopped (crash,
    fence), ``report`` at the controller, ``t_done`` result at the device."""

    task: Task
    node: int
    epoch: int
    level: Level
    t_place: float
    superseded: bool = False
    superseded_at: float = INF
    local: bool = False
    retry: int = 0
    work: float = 0.0  # reference-core seconds on the node's backlog while it runs
    predicted: float = 0.0  # predicted seconds from placement to result (adaptive mode)
    t_grant: float = -1.0
    t_req: float = -1.0
    t_recv: float = 0.0
    start: float = 0.0
    end: float = 0.0
    stop: float = 0.0
    report: float = 0.0
    t_done: float = 0.0
    outcome: str = Outcome.OK
    start_rep: float = INF  # tracing only
    cancel_at: float = INF  # tracing only
    fence: bool = False  # tracing only: superseded by a move that fenced it


@dataclass(slots=True)
class Result:
    """What one run measured. ``metrics`` is flat (CSV-ready); ``latencies`` are the
    succeeded tasks' latencies in seconds (for plots and the sim-to-real gap)."""

    scenario: str
    policy: str
    seed: int
    metrics: dict[str, float]
    latencies: list[float] = field(default_factory=list, repr=False)
    params: dict[str, Any] = field(default_factory=dict)
    trace: list[dict[str, Any]] = field(default_factory=list, repr=False)
