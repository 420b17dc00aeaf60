"""What may move, and when: re-placement by policy trigger, by partition, and retries.

Every function answers one task (or, for ``fired_triggers``, the whole set of
nodes) with a ``MoveDecision``: ``move`` and a ``reason`` that is logged either
way; when it moves, ``trigger`` names the move for events and metrics, ``exclude``
lists nodes the new placement must avoid and ``fence`` says the old node's
attempts are to be presumed lost. Every move is a new epoch. The rules:

- **Safety first** (``movable``): the caller's view lags the node's, so a task it
  has not heard start may be starting now. Policy moves only what a stale start
  cannot harm: ``eventual`` work that is ``idempotent`` (a second run is only
  wasted work), and ``strong`` without a lease ever granted for this epoch (the
  node cannot start without one, and its request for the old epoch is refused
  once a new one exists). ``causal`` never moves by policy, nor does
  non-idempotent ``eventual`` work (its level allows a hedge when the partition
  rule needs one; a policy move is an optimisation and may not run a side effect
  twice); a started attempt never does.
- **Policy triggers** (``fired_triggers`` then ``trigger_move``, adaptive mode only):
  failure rate, slowdown, link degraded (strong tasks only), overload, and the
  task's own latency bound against its node's RTT. A task moves at most once per
  ``TRIGGER_COOLDOWN_S``. Overload moves ``OVERLOAD_MOVES_PER_TICK`` task per busy
  node per pass, and only when the busiest minus the idlest is at least 2 (moving
  one task from 1 to 0 would only swap the imbalance).
- **Partition** (``partition_move``): ``shared.consistency.replacement_allowed`` on
  the level the node was told (strong after its lease, causal after
  ``max_disconnect_s`` out of contact, eventual at once, hedged).
- **Retry** (``retry_move``): an attempt of the current epoch that ended on a node
  still in contact, in a way its agent does not retry itself (fenced at its lease
  deadline, lost, or not retried after an agent restart), is placed again under a
  new epoch once no live lease forbids it (``holder_stopped``: the holder's own report
  of the end frees its lease at once); the task's retry budget is spent by the
  ended attempts (``shared.crdt.visible_status``), so this never loops forever.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from shared.consistency import Lease, replacement_allowed
from shared.crdt import AttemptStatus
from shared.decisions._triggers import Trigger, failure_rate, latency_violated, overload, slowdown
from shared.vocab import Level, LinkState, TaskStatus

__all__ = [
    "DECLINED",
    "DOWN",
    "OVERLOAD_MOVES_PER_TICK",
    "TRIGGER_COOLDOWN_S",
    "AttemptFacts",
    "FiredTriggers",
    "Movability",
    "MoveDecision",
    "NodeFacts",
    "PartitionFacts",
    "RetryFacts",
    "TriggerFacts",
    "agent_retries",
    "fired_triggers",
    "holder_stopped",
    "movable",
    "partition_move",
    "retry_move",
    "trigger_move",
]

#: A task moved by a re-placement trigger is not moved again by one for this long (s).
TRIGGER_COOLDOWN_S = 30.0
#: Tasks an overload trigger moves off one node per pass.
OVERLOAD_MOVES_PER_TICK = 1
#: Link states in which a node is out of reach (the partition rule applies).
DOWN = frozenset({LinkState.PARTITIONED, LinkState.FAILED})
#: Reasons an agent gives when it declines a task before running it: shed under pressure,
#: a callable it does not allow. It would decline again, so it never retries them; placing
#: the task again (elsewhere) decides.
DECLINED = frozenset({"shed", "callable_not_allowed"})

#: Reasons for which an agent does not retry a failed attempt itself (fenced at the
#: lease deadline, superseded by a newer epoch, declined).
_AGENT_GIVES_UP = frozenset({"lease_expired", "fenced", "superseded"}) | DECLINED


@dataclass(frozen=True, slots=True, kw_only=True)
class MoveDecision:
    """Move the task (to a new epoch) or not, and why."""

    move: bool
    reason: str
    trigger: str | None = None  # names the move: "<trigger name>: <why>"
    exclude: tuple[str, ...] = ()  # nodes the new placement must avoid
    fence: bool = False  # presume the old node's attempts lost
    later: bool = False  # staying: time or the link alone may change the answer

    @staticmethod
    def wait(reason: str) -> MoveDecision:
        """Not now, but ask again: no new report is needed for the answer to change."""
        return MoveDecision(move=False, reason=reason, later=True)

    @staticmethod
    def stay(reason: str) -> MoveDecision:
        return MoveDecision(move=False, reason=reason)


# -- safety -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Movability:
    """A placed task as the safety rule reads it."""

    level: Level  # the level in force on the placement (what the node was told)
    epoch: int  # the current placement's epoch
    started: bool  # an attempt of this epoch was reported started (or beyond)
    lease: Lease | None = None  # the task's latest lease, any epoch, live or not
    idempotent: bool = False  # the spec's ``idempotent``: a second run does no harm


def movable(facts: Movability, *, now: float) -> MoveDecision:
    """May a policy move this task without risking two attempts at once?"""
    if facts.started:
        return MoveDecision.stay("an attempt of this epoch started")
    if facts.level is Level.EVENTUAL:
        if not facts.idempotent:
            return MoveDecision.stay("eventual, not idempotent: a stale start would run it twice")
        return MoveDecision(move=True, reason="eventual: a stale start is a harmless hedge")
    if facts.level is Level.STRONG:
        lease = facts.lease
        if lease is None:
            return MoveDecision(move=True, reason="strong: no lease ever granted")
        if lease.epoch < facts.epoch and not lease.live(now):
            return MoveDecision(move=True, reason="strong: only an older epoch's expired lease")
        return MoveDecision.stay("strong: a lease was granted for this epoch or is live")
    return MoveDecision.stay("causal: moved only by the partition rule")


# -- policy triggers -----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeFacts:
    """A node as the triggers read it."""

    node_id: str
    eligible: bool  # registered, not draining and in reach: may fire and share work
    active_tasks: int  # active tasks placed on it
    failure_ewma: float = 0.0
    durations: Sequence[float] = ()  # recent run durations, oldest first
    pending: tuple[Trigger, ...] = ()  # triggers fired by events since the last pass


@dataclass(frozen=True, slots=True, kw_only=True)
class FiredTriggers:
    """Per node: the triggers that fired, and how many tasks overload may move."""

    triggers: Mapping[str, tuple[Trigger, ...]] = field(default_factory=dict)
    overload_budget: Mapping[str, int] = field(default_factory=dict)


def fired_triggers(nodes: Iterable[NodeFacts]) -> FiredTriggers:
    """The node-wide triggers of one pass over the eligible nodes (failure rate,
    slowdown, pending event triggers, then overload with its budget rule)."""
    fired: dict[str, list[Trigger]] = {}
    counts: dict[str, float] = {}
    for node in nodes:
        if not node.eligible:
            continue
        counts[node.node_id] = float(node.active_tasks)
        found = [
            t
            for t in (
                failure_rate(node.failure_ewma, node_id=node.node_id),
                slowdown(list(node.durations), node_id=node.node_id),
            )
            if t
        ]
        found.extend(node.pending)
        if found:
            fired[node.node_id] = found
    budget: dict[str, int] = {}
    least = min(counts.values(), default=0.0)
    for trig in overload(counts):
        assert trig.node_id is not None
        if trig.value - least < 2:
            continue  # moving one task would only swap the imbalance (1 vs 0)
        fired.setdefault(trig.node_id, []).append(trig)
        budget[trig.node_id] = OVERLOAD_MOVES_PER_TICK
    return FiredTriggers(
        triggers={node: tuple(found) for node, found in fired.items()}, overload_budget=budget
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class TriggerFacts:
    """One task on an in-reach node, for the policy triggers."""

    node_id: str
    adaptive: bool  # the task's placement mode is ``adaptive``
    level: Level | None  # the level in force now (``link_degraded`` moves strong work only)
    node_triggers: tuple[Trigger, ...] = ()  # ``FiredTriggers.triggers`` of its node
    overload_budget: int = 0  # what is left of its node's overload budget
    rtt_ms: float | None = None  # its node's RTT p50 (``None``: not measured)
    max_latency_ms: float | None = None  # the task's bound
    moved_at: float = float("-inf")  # when a trigger last moved it
    movability: Movability


def trigger_move(facts: TriggerFacts, *, now: float) -> MoveDecision:
    """Should a policy trigger move this task now? (see the module doc)"""
    if not facts.adaptive:
        return MoveDecision.stay("placement mode is not adaptive")
    triggers = [
        t for t in facts.node_triggers if t.name != "link_degraded" or facts.level is Level.STRONG
    ]
    if facts.rtt_ms is not None and (
        lat := latency_violated(facts.rtt_ms, facts.max_latency_ms, node_id=facts.node_id)
    ):
        triggers.insert(0, lat)  # the task's own trigger names the move
    if not triggers:
        return MoveDecision.stay("no trigger fired")
    if now - facts.moved_at < TRIGGER_COOLDOWN_S:
        return MoveDecision.stay(f"moved less than {TRIGGER_COOLDOWN_S:g} s ago")
    if [t.name for t in triggers] == ["overload"] and facts.overload_budget <= 0:
        return MoveDecision.stay("the node's overload budget for this pass is spent")
    safe = movable(facts.movability, now=now)
    if not safe.move:
        return safe
    first = triggers[0]
    return MoveDecision(
        move=True,
        reason=safe.reason,
        trigger=f"{first.name}: {first.reason}",
        exclude=(facts.node_id,),
    )


# -- partitions ----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PartitionFacts:
    """One task on a node, for the partition rule."""

    node_id: str
    link: LinkState  # the node's link now
    level: Level  # the level in force on the placement (a partitioned node hears no change)
    lease: Lease | None = None
    out_of_contact_s: float | None = None  # ``LinkMonitor.out_of_contact_for``
    max_disconnect_s: float = 300.0


def partition_move(facts: PartitionFacts, *, now: float) -> MoveDecision:
    """Re-place work from an unreachable node as far as the level's rule allows."""
    if facts.link not in DOWN:
        return MoveDecision.stay("node in reach")
    allowed = replacement_allowed(
        facts.level,
        now=now,
        lease=facts.lease,
        out_of_contact_s=facts.out_of_contact_s,
        max_disconnect_s=facts.max_disconnect_s,
    )
    if not allowed.allowed:
        return MoveDecision.stay(allowed.reason)
    return MoveDecision(
        move=True,
        reason=allowed.reason,
        trigger=f"{facts.link.value}: {facts.level.value} task on {facts.node_id}, "
        f"{allowed.reason}",
        exclude=(facts.node_id,),
        fence=facts.level is not Level.EVENTUAL,
    )


# -- retries -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptFacts:
    node: str
    epoch: int
    status: AttemptStatus
    reason: str | None = None


def agent_retries(attempt: AttemptFacts, *, level: Level, idempotent: bool) -> bool:
    """Does the node retry this ended attempt itself (same epoch, its own backoff)?

    It does for an ordinary failure; not for an attempt fenced at its lease deadline
    or superseded; after an agent restart only an idempotent task below ``strong``;
    never for an attempt the controller presumed lost or a cancelled one.
    """
    if attempt.status is not AttemptStatus.FAILED or attempt.reason in _AGENT_GIVES_UP:
        return False
    if attempt.reason == "agent_restart":
        return idempotent and level is not Level.STRONG
    return True


def holder_stopped(lease: Lease, attempts: Iterable[AttemptFacts]) -> bool:
    """Has the lease's holder itself reported every attempt of the leased epoch ended?

    Only the node writes ``failed`` or ``succeeded`` (the controller's inferences are
    ``lost`` and ``cancelled``), and it reports an end only once the process stopped;
    so its lease protects nothing any more and may be released before its deadline.
    A controller-inferred loss proves nothing: the holder may still run until the
    lease's deadline.
    """
    mine = [a for a in attempts if a.epoch == lease.epoch and a.node == lease.node]
    return bool(mine) and all(
        a.status in (AttemptStatus.FAILED, AttemptStatus.SUCCEEDED) for a in mine
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryFacts:
    """A placed task whose node is (still) counted in reach."""

    node_id: str  # the placed node
    link: LinkState
    level: Level  # the level in force on the placement
    epoch: int
    status: TaskStatus  # ``visible_status`` of the record (``pending``: budget left)
    idempotent: bool = False
    attempts: tuple[AttemptFacts, ...] = ()  # of the current epoch, oldest first
    lease: Lease | None = None


def retry_move(facts: RetryFacts, *, now: float) -> MoveDecision:
    """Place again (new epoch, any node) an attempt its node will not retry."""
    if facts.status is not TaskStatus.PENDING:
        return MoveDecision.stay(f"task {facts.status.value}")
    if facts.link in DOWN:
        return MoveDecision.wait("node out of reach: the partition rule decides")
    current = [a for a in facts.attempts if a.epoch == facts.epoch]
    if not current:
        return MoveDecision.stay("no attempt of this epoch yet")
    if any(not a.status.terminal for a in current):
        return MoveDecision.stay("an attempt of this epoch is live")
    last = current[-1]
    if last.status is AttemptStatus.CANCELLED:
        return MoveDecision.stay("the attempt was cancelled")
    if agent_retries(last, level=facts.level, idempotent=facts.idempotent):
        return MoveDecision.stay("the node retries it itself")
    lease = facts.lease
    if lease is not None and lease.live(now) and not holder_stopped(lease, current):
        return MoveDecision.wait("lease_live")
    status = last.status.name.lower()
    return MoveDecision(
        move=True,
        reason=f"{facts.level.value} attempt {status} ({last.reason}), not retried by its node",
        trigger=f"retry: {facts.level.value} attempt {status} on {facts.node_id} ({last.reason})",
        # a node that declined the task would decline it again
        exclude=(facts.node_id,) if last.reason in DECLINED else (),
    )
