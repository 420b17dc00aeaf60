"""The controller's decisions as pure functions: the one copy the controller, the
testbed and the simulator all run.

Every function takes typed facts (frozen dataclasses or keyword arguments) and
``now`` where time matters (seconds on the caller's monotonic or virtual clock),
and returns a typed decision with a ``reason``. Nothing here reads a clock, keeps
state between calls or touches I/O; the caller gathers the facts from its own
state and acts on the answer.

Task readiness and workflows (``_workflow``)
    ``task_readiness(dep_statuses) -> ReadinessDecision`` (``READY``/``WAITING``/
    ``CANCEL``: dependent cancellation), ``placement_order(candidates)`` (priority,
    then age, then id) and ``workflow_status(task_statuses) -> WorkflowDecision``.

What may move, and when (``_movement``)
    ``movable(Movability, now=)``: may a policy move it without two attempts at once;
    ``fired_triggers([NodeFacts...]) -> FiredTriggers``: node-wide triggers of one
    pass, with the overload budget (``OVERLOAD_MOVES_PER_TICK``, only when busiest -
    idlest >= 2); ``trigger_move(TriggerFacts, now=)``: per task, with the latency
    trigger and the ``TRIGGER_COOLDOWN_S`` cooldown; ``partition_move(PartitionFacts,
    now=)``: the partition rule per level; ``retry_move(RetryFacts, now=)``: an ended
    attempt its node does not retry (``agent_retries``) is placed again;
    ``holder_stopped(lease, attempts)``: the holder's own report of the end frees its lease.
    Each returns a ``MoveDecision(move, reason, trigger, exclude, fence)``.

A node leaving on purpose (``_lifecycle``)
    ``drain_move(Movability, node_id=, now=)``: work of a draining or removed node moves
    by its level (idempotent eventual at once, strong without a live lease, causal and
    non-idempotent eventual before they start: non-idempotent work is never hedged).

Attempts and leases (``_attempts``)
    ``running_conflicts(level, [RunningAttempt...], flagged=)``: attempts running at once
    on different nodes where the level forbids it; ``lease_refusal(known=, placed=,
    cancel_requested=, status=)``: a request refused before the lease book is asked.

Re-sending a placement (``_resend``)
    ``place_resend_due(sent_at, resends, now, held=, in_flight_s=)``: a digest that shows
    a task's record but no attempt of its epoch brings the ``place`` again after
    ``PLACE_RESEND``'s backoff (at once after the node's reconnect); one that names no
    record of it, once the ``place`` cannot still be in flight (``place_in_flight_s``);
    ``place_not_taken(rec, node, taken)``: a record a node leaves out of its digests (it
    places the task there under an epoch the node never took up: its ``place`` was lost).

System health (``_health``)
    ``assess_health([LinkSample(state, rtt_p99_ms)...]) -> HealthReport`` (health,
    counts, p99, reason; ``detail()`` for the API).

Consistency level per task (``_levels``), by cost (``shared.consistency.cost_target``)
    ``LevelFacts(link, run_s, slack_s, rtt_ms, partition_rate_per_h, outage_s)``: the
    task's node and predicted run now (``link=None``: no round trip yet, the prior);
    ``demand_level(spec)`` (the level placement filters by: ``LevelFacts()``),
    ``placement_level(spec, facts)`` (the level on the chosen node),
    ``level_target(spec, facts)`` (the same with its reason) and
    ``adapt_level(machine, spec, facts, now=) -> LevelChanged | None`` (one damped
    sample of ``shared.consistency.AdaptiveLevel``).

Typical pass of a caller (the controller's ``cloud/reconcile.py`` does exactly this)::

    health = assess_health(LinkSample(state=..., rtt_p99_ms=...) for each node)
    fired = fired_triggers(NodeFacts(...) for each node)
    for each placed task on an in-reach node:
        d = trigger_move(TriggerFacts(..., node_triggers=fired.triggers.get(node, ()),
                                      movability=Movability(...)), now=now)
        if d.move: place again, excluding d.exclude, naming d.trigger
"""

from shared.decisions._attempts import RunningAttempt, lease_refusal, running_conflicts
from shared.decisions._health import AVAILABLE, HealthReport, LinkSample, assess_health
from shared.decisions._levels import (
    LevelFacts,
    adapt_level,
    demand_level,
    level_target,
    placement_level,
)
from shared.decisions._lifecycle import drain_move
from shared.decisions._movement import (
    DECLINED,
    DOWN,
    OVERLOAD_MOVES_PER_TICK,
    TRIGGER_COOLDOWN_S,
    AttemptFacts,
    FiredTriggers,
    Movability,
    MoveDecision,
    NodeFacts,
    PartitionFacts,
    RetryFacts,
    TriggerFacts,
    agent_retries,
    fired_triggers,
    holder_stopped,
    movable,
    partition_move,
    retry_move,
    trigger_move,
)
from shared.decisions._resend import (
    PLACE_IN_FLIGHT_MIN_S,
    PLACE_RESEND,
    place_in_flight_s,
    place_not_taken,
    place_resend_due,
)
from shared.decisions._triggers import (
    TRIGGERS,
    Trigger,
    failure_rate,
    latency_violated,
    link_degraded,
    overload,
    slowdown,
    task_triggers,
    update_failure_rate,
)
from shared.decisions._workflow import (
    Candidate,
    Readiness,
    ReadinessDecision,
    WorkflowDecision,
    placement_order,
    task_readiness,
    workflow_status,
)

__all__ = [
    "AVAILABLE",
    "DECLINED",
    "DOWN",
    "OVERLOAD_MOVES_PER_TICK",
    "PLACE_IN_FLIGHT_MIN_S",
    "PLACE_RESEND",
    "TRIGGERS",
    "TRIGGER_COOLDOWN_S",
    "AttemptFacts",
    "Candidate",
    "FiredTriggers",
    "HealthReport",
    "LevelFacts",
    "LinkSample",
    "Movability",
    "MoveDecision",
    "NodeFacts",
    "PartitionFacts",
    "Readiness",
    "ReadinessDecision",
    "RetryFacts",
    "RunningAttempt",
    "Trigger",
    "TriggerFacts",
    "WorkflowDecision",
    "adapt_level",
    "agent_retries",
    "assess_health",
    "demand_level",
    "drain_move",
    "failure_rate",
    "fired_triggers",
    "holder_stopped",
    "latency_violated",
    "lease_refusal",
    "level_target",
    "link_degraded",
    "movable",
    "overload",
    "partition_move",
    "place_in_flight_s",
    "place_not_taken",
    "place_resend_due",
    "placement_level",
    "placement_order",
    "retry_move",
    "running_conflicts",
    "slowdown",
    "task_readiness",
    "task_triggers",
    "trigger_move",
    "update_failure_rate",
    "workflow_status",
]
