"""The consistency level of one task: at placement, and as its node's link changes.

Composes ``shared.consistency``: ``cost_target`` (the cheapest level on the task's
node now, by the expected cost of each level: deadline risk of waiting through an
outage against the harm of a duplicate run, docs/consistency.md) and
``AdaptiveLevel`` (the damped per-task machine). Levels adapt **per task**, each
on its own node; the system's health enters only through that node's link.

What the cost reads of the task comes from its spec (bounds, ``idempotent``,
``max_disconnect_s``); what it reads of the node and the run is one
:class:`LevelFacts`, which the caller (the controller, the simulator) fills from
what it measured and predicted. Every field has a default, so ``LevelFacts()`` is
"a node nothing is known of yet": graded ``AdaptationPolicy.prior_link``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.consistency import (
    AdaptationPolicy,
    AdaptiveLevel,
    LevelChanged,
    LevelTarget,
    cost_target,
    level_bounds,
)
from shared.vocab import Level, LinkState

__all__ = ["LevelFacts", "adapt_level", "demand_level", "level_target", "placement_level"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LevelFacts:
    """What the level's cost reads of one task on one node, now.

    ``link``: the node's link grade, ``None`` while no round trip has been measured
    (graded ``AdaptationPolicy.prior_link``, not unknown-as-emergency); a node
    nobody knows is ``FAILED``. ``run_s``: how long the attempt is exposed, its
    predicted run (placement: the chosen candidate's predicted finish; later: the
    kind's learned work over the node's speed). ``slack_s``: seconds to spare
    before its deadline (deadline left minus the predicted finish; ``None``: no
    deadline). ``rtt_ms``: the node's round trip. ``partition_rate_per_h`` and
    ``outage_s`` (mean outage length, 0 unknown): the node's link history.
    """

    link: LinkState | None = None
    run_s: float = 0.0
    slack_s: float | None = None
    rtt_ms: float = 0.0
    partition_rate_per_h: float = 0.0
    outage_s: float = 0.0


def level_target(
    spec: Mapping[str, Any], facts: LevelFacts, *, policy: AdaptationPolicy | None = None
) -> LevelTarget:
    """The cheapest level within the spec's bounds on a node described by ``facts``
    (``shared.consistency.cost_target``), with its reason."""
    lo, hi, _ = level_bounds(spec)
    return _target(spec, lo, hi, facts, policy)


def demand_level(spec: Mapping[str, Any], *, policy: AdaptationPolicy | None = None) -> Level:
    """The level placement filters by, before a node is chosen: the level on a
    node nothing is known of yet (``LevelFacts()``: the prior link, no deadline
    pressure), i.e. the task's ``max`` unless the configured prior forbids it.
    The chosen node's own facts are judged afterwards (``placement_level``)."""
    return level_target(spec, LevelFacts(), policy=policy).level


def placement_level(
    spec: Mapping[str, Any], facts: LevelFacts, *, policy: AdaptationPolicy | None = None
) -> Level:
    """The level a task is placed at on the chosen node (a fixed task's own level)."""
    return level_target(spec, facts, policy=policy).level


def adapt_level(
    machine: AdaptiveLevel, spec: Mapping[str, Any], facts: LevelFacts, *, now: float
) -> LevelChanged | None:
    """One sample of a task's adaptive level on its node (``facts``); the change it
    causes, if any. The machine keeps the damping state (and the policy whose
    ``prior_link`` grades a node without a round trip), so it is the only mutable
    input; ``spec`` gives what the cost reads of the task."""
    if machine.fixed:
        return None
    target = _target(spec, machine.lo, machine.hi, facts, machine.policy)
    return machine.observe(target, now)


def _target(
    spec: Mapping[str, Any],
    lo: Level,
    hi: Level,
    facts: LevelFacts,
    policy: AdaptationPolicy | None,
) -> LevelTarget:
    return cost_target(
        lo,
        hi,
        link=facts.link,
        idempotent=bool(spec.get("idempotent", False)),
        run_s=facts.run_s,
        partition_rate_per_h=facts.partition_rate_per_h,
        slack_s=facts.slack_s,
        rtt_ms=facts.rtt_ms,
        max_disconnect_s=float(spec.get("max_disconnect_s", 300.0)),
        outage_s=facts.outage_s,
        policy=policy,
    )
