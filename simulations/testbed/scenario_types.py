"""The testbed scenario's types: the frozen dataclasses a scenario file is parsed
into (:mod:`.scenario` parses and validates) and the vocabulary of its fault ops."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CONTROLLER_OPS",
    "DIRECTIONS",
    "OPS",
    "RANDOM_OPS",
    "SHARES",
    "WORKLOAD_LEVELS",
    "AgentGroup",
    "Burst",
    "LocalGen",
    "RandomNemesis",
    "Scenario",
    "Step",
    "TaskMix",
    "Topology",
    "WorkflowGen",
    "Workload",
]

# op → {param: (type, required)}; every op except controller ones takes ``nodes``.
OPS: dict[str, dict[str, tuple[type | tuple[type, ...], bool]]] = {
    "partition": {"direction": (str, False)},
    "heal": {},
    "delay": {"ms": ((int, float), True), "jitter_ms": ((int, float), False)},
    "throttle": {"bytes_per_s": ((int, float), True)},
    "flap": {"down_s": ((int, float), True), "up_s": ((int, float), True)},
    "reset": {},
    "kill": {},
    "restart": {},
    "pause": {},
    "resume": {},
    "lossy": {
        "drop": ((int, float), False),
        "duplicate": ((int, float), False),
        "delay": ((int, float), False),
        "delay_ms": ((int, float), False),
        "direction": (str, False),
    },
    "controller-restart": {"hard": (bool, False)},
    "controller-cut": {"direction": (str, False)},
    "controller-heal": {},
}
CONTROLLER_OPS = frozenset({"controller-restart", "controller-cut", "controller-heal"})
DIRECTIONS = ("both", "up", "down")
WORKLOAD_LEVELS = ("strong", "causal", "eventual", "adaptive")
RANDOM_OPS = (
    "partition",
    "partition-up",
    "partition-down",
    "flap",
    "delay",
    "kill",
    "reset",
    "pause",
    "lossy",
)
#: Shares of PUBLISH packets (0..1) in a ``lossy`` step.
SHARES = ("drop", "duplicate", "delay")


@dataclass(frozen=True, slots=True)
class AgentGroup:
    """A template for agents; agents are dealt to groups in turn (or by ``count``)."""

    tier: str = "edge"
    labels: Mapping[str, str] = field(default_factory=dict)
    cpus: float = 2.0
    memory_mb: int = 1024
    count: int | None = None
    #: How fast the group's agents work: the ledger task stretches its ``sleep_ms`` by
    #: ``1 / speed`` on them (1.0: a server core; 0.25: a single-board device).
    speed: float = 1.0


@dataclass(frozen=True, slots=True)
class Topology:
    agents: int = 3
    groups: tuple[AgentGroup, ...] = (AgentGroup(),)


@dataclass(frozen=True, slots=True)
class TaskMix:
    level: str = "causal"
    weight: float = 1.0
    sleep_ms: tuple[int, int] = (100, 300)
    fail_rate: float = 0.0  # share of tasks whose command exits 1
    idempotent: bool = False
    priority: int = 50
    max_disconnect_s: float | None = None
    min: str | None = None  # adaptive bounds
    max: str | None = None
    max_attempts: int = 3
    name: str | None = None  # lets a burst draw from this mix only (``bursts.mix``)
    labels: Mapping[str, str] = field(default_factory=dict)  # placement.labels: pins work
    deadline_s: float | None = None  # the spec's deadline_s (counted from the submission)
    kind: str | None = None  # the task's name, what the controller learns a run time for
    max_latency_ms: float | None = None  # placement.max_latency_ms: a latency-bound task
    cpu: float = 0.1  # resources.cpu: the cores the controller reserves for the task


@dataclass(frozen=True, slots=True)
class Burst:
    at: float
    count: int
    level: str | None = None  # restrict the burst to mixes of this level
    mix: str | None = None  # or to the mix of this name (it may have weight 0)


@dataclass(frozen=True, slots=True)
class LocalGen:
    """``count`` tasks submitted to an agent's own local API (not the controller's), from
    ``at`` every ``every_s``: work a device accepts by itself, even while cut off."""

    at: float
    nodes: str | tuple[str, ...] = "agent-1"
    count: int = 1
    every_s: float = 0.0
    level: str = "causal"  # causal | eventual: what an agent accepts without the cloud
    sleep_ms: tuple[int, int] = (500, 1500)


@dataclass(frozen=True, slots=True)
class WorkflowGen:
    """``count`` workflows at ``at`` (then every ``every_s``): a layered DAG of
    ``depth`` layers of ``width`` tasks, each depending on every task of the layer above."""

    at: float = 0.0
    count: int = 1
    every_s: float = 0.0
    width: int = 2
    depth: int = 2
    level: str = "causal"
    sleep_ms: tuple[int, int] = (100, 200)


@dataclass(frozen=True, slots=True)
class Workload:
    rate_per_s: float = 1.0
    start_s: float = 0.0
    stop_s: float | None = None  # default: the scenario's duration
    mix: tuple[TaskMix, ...] = (TaskMix(),)
    bursts: tuple[Burst, ...] = ()
    workflows: tuple[WorkflowGen, ...] = ()
    local: tuple[LocalGen, ...] = ()


@dataclass(frozen=True, slots=True)
class Step:
    at: float
    op: str
    nodes: str | tuple[str, ...] = "all"
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RandomNemesis:
    """A seeded random fault schedule (Jepsen's nemesis generator): one fault at a
    time, on random nodes, each lasting 1..``max_fault_s`` and then healed."""

    start_s: float = 5.0
    stop_s: float | None = None
    interval_s: float = 5.0
    max_fault_s: float = 8.0
    ops: tuple[str, ...] = RANDOM_OPS
    lease_s: tuple[float, float] | None = None  # strong lease drawn from [lo, hi] per seed


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str = ""
    duration_s: float = 30.0
    seed: int = 0
    settle_s: float = 60.0  # max wait for quiescence after the final heal
    liveness_bound_s: float = 30.0  # every acknowledged task terminal this soon after it
    topology: Topology = Topology()
    workload: Workload = Workload()
    timeline: tuple[Step, ...] = ()
    nemesis: RandomNemesis | None = None
    controller: Mapping[str, Any] = field(default_factory=dict)  # merged into its config
    agent: Mapping[str, Any] = field(default_factory=dict)  # merged into every agent's config
    path: str | None = None
