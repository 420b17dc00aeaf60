"""Adaptive consistency level of one task (docs/consistency.md), as a small sample-driven machine.

The controller samples each adaptive task periodically with a *target* level computed
from its node's link state and the system health (``target_level``). The machine
moves the task's level toward the target with asymmetric damping:

- **downgrade at once after two consecutive bad samples** (target below the level),
  to the strongest level both samples allow — one bad sample alone is noise;
- **upgrade only after a dwell** (default 60 s) during which every sample was good
  (target above the level), to the weakest level those samples allow; a neutral or
  bad sample restarts the dwell, and each upgrade needs a fresh dwell;
- the level never leaves the task's ``[min, max]``; a fixed-level task never changes.

A health-driven level with no hysteresis and no minimum time in a state flaps with
every noisy sample; this damping prevents it. Every change is a ``LevelChanged`` with
its reason.

``cost_target`` computes the target by cost rather than by the health ladder: the
expected cost of each level on the task's node now, in deadline misses. With
``p`` the probability that the node's link is out during the run (its partition
rate over the run and the risk of its current grade):

- ``strong`` stalls through an outage (no lease renewal, no acknowledgement): a
  miss with probability ``p``; and it needs about two extra round trips (lease,
  acknowledgement), a sure miss when they do not fit in the slack;
- ``causal`` keeps running and only its result waits: half of that, ``p / 2``;
- ``eventual`` is re-placed at once (hedging): no waiting, but a duplicate run
  with probability ``p``, which costs nothing for an ``idempotent`` task and
  ``DUPLICATE_HARM`` misses for any other. ``causal`` is re-placed only once the
  node has been out of contact for ``max_disconnect_s``: a duplicate with
  probability ``p * exp(-max_disconnect_s / outage_s)`` (outages of mean length
  ``outage_s``, exponentially distributed; 0 when unknown), priced the same way;
  ``strong`` never runs twice.

The cheapest level within the bounds wins; ties go to the stronger level (a
healthy, steady link keeps the task at its ``max``). A node with no round-trip
sample yet is graded ``AdaptationPolicy.prior_link``, not unknown-as-emergency:
it has just talked to the controller.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.health import SystemHealth, clamp_level, default_level
from shared.learning import LINK_STATE_RISK
from shared.vocab import Level, LinkState

__all__ = [
    "DUPLICATE_HARM",
    "AdaptationPolicy",
    "AdaptiveLevel",
    "LevelChanged",
    "LevelTarget",
    "cost_target",
    "level_bounds",
    "level_costs",
    "target_level",
]

#: Harm of one duplicate run of a non-idempotent task, counted in deadline misses:
#: a double payment or a double actuation is worse than being late.
DUPLICATE_HARM = 10.0
#: Extra round trips a strong attempt waits for: the lease, the acknowledgement.
STRONG_ROUND_TRIPS = 2.0

#: A node's link state read on the system-health ladder: a link is graded like a
#: one-node system, and a partitioned or failed node is an emergency for its tasks.
_LINK_AS_HEALTH = {
    LinkState.HEALTHY: SystemHealth.HEALTHY,
    LinkState.DEGRADED: SystemHealth.DEGRADED,
    LinkState.CRITICAL: SystemHealth.CRITICAL,
    LinkState.PARTITIONED: SystemHealth.EMERGENCY,
    LinkState.FAILED: SystemHealth.EMERGENCY,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class AdaptationPolicy:
    """Damping of level changes: ``bad_samples`` to go down, ``dwell_s`` of good ones to go up."""

    bad_samples: int = 2
    dwell_s: float = 60.0
    prior_link: LinkState = LinkState.HEALTHY

    def __post_init__(self) -> None:
        object.__setattr__(self, "prior_link", LinkState(self.prior_link))
        if self.bad_samples < 1 or self.dwell_s < 0:
            raise ValueError("bad_samples must be ≥ 1 and dwell_s ≥ 0")


class LevelTarget:
    """The level the measurements call for, and why (becomes the change's reason).

    ``reason`` is a string, or a function that builds it: a target is computed per
    task and sample while its reason is read only when a level actually changes,
    so ``cost_target`` formats it on first read (then keeps it). Immutable;
    compares by level and reason."""

    __slots__ = ("_reason", "level")

    level: Level

    def __init__(self, *, level: Level, reason: str | Callable[[], str]) -> None:
        object.__setattr__(self, "level", level)
        object.__setattr__(self, "_reason", reason)

    @property
    def reason(self) -> str:
        reason = self._reason
        if not isinstance(reason, str):
            reason = reason()
            object.__setattr__(self, "_reason", reason)
        return reason

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"LevelTarget is immutable: cannot set {name}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LevelTarget):
            return NotImplemented
        return self.level is other.level and self.reason == other.reason

    def __hash__(self) -> int:
        return hash((self.level, self.reason))

    def __repr__(self) -> str:
        return f"LevelTarget(level={self.level!r}, reason={self.reason!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class LevelChanged:
    """An adaptive task's level moved from ``old`` to ``new`` at ``at``."""

    task_id: str
    old: Level
    new: Level
    at: float
    reason: str

    @property
    def downgrade(self) -> bool:
        return self.new.strength < self.old.strength


def target_level(lo: Level, hi: Level, *, link: LinkState, system: SystemHealth) -> LevelTarget:
    """The weaker of what the node's link and the whole system allow, within ``[lo, hi]``."""
    by_link = default_level(_LINK_AS_HEALTH[link], lo=lo, hi=hi)
    by_system = default_level(system, lo=lo, hi=hi)
    level = by_link if by_link.strength <= by_system.strength else by_system
    return LevelTarget(level=level, reason=f"link {link}, system {system}")


def level_costs(
    *,
    link: LinkState,
    idempotent: bool,
    run_s: float,
    partition_rate_per_h: float = 0.0,
    slack_s: float | None = None,
    rtt_ms: float = 0.0,
    max_disconnect_s: float = 300.0,
    outage_s: float = 0.0,
) -> dict[Level, float]:
    """Expected cost of running at each level on a node now, in deadline misses
    (see the module doc). ``run_s``: how long the attempt is exposed (its predicted
    run); ``slack_s``: time to spare before its deadline (``None``: no deadline);
    ``outage_s``: the node's mean outage length (0: unknown)."""
    costs = _costs(
        LinkState(link),
        idempotent,
        run_s,
        partition_rate_per_h,
        slack_s,
        rtt_ms,
        max_disconnect_s,
        outage_s,
    )
    return dict(zip(_BY_STRENGTH_DESC, costs, strict=True))


#: The levels strongest first: the order of ``_costs`` and of the search for the cheapest.
_BY_STRENGTH_DESC = (Level.STRONG, Level.CAUSAL, Level.EVENTUAL)
#: ``Level.strength`` as a plain lookup (the property costs a call per read).
_STRENGTH = {lv: lv.strength for lv in Level}
#: Wire name (or ``Level``: a ``StrEnum`` hashes as its value) -> ``Level``, without
#: the enum's constructor.
_LEVEL_NAMED: dict[str, Level] = {lv.value: lv for lv in Level}


def _costs(
    link: LinkState,
    idempotent: bool,
    run_s: float,
    partition_rate_per_h: float,
    slack_s: float | None,
    rtt_ms: float,
    max_disconnect_s: float,
    outage_s: float,
) -> tuple[float, float, float]:
    """``level_costs`` as ``(strong, causal, eventual)``, for a ``LinkState`` ``link``."""
    survive = math.exp(-max(partition_rate_per_h, 0.0) * max(run_s, 0.0) / 3600.0)
    p_out = 1.0 - survive * (1.0 - LINK_STATE_RISK[link])
    late = slack_s is not None and STRONG_ROUND_TRIPS * rtt_ms / 1000.0 > slack_s
    harm = 0.0 if idempotent else DUPLICATE_HARM
    outlasts = math.exp(-max_disconnect_s / outage_s) if outage_s > 0 else 0.0
    return 1.0 if late else p_out, p_out / 2.0 + p_out * outlasts * harm, p_out * harm


def cost_target(
    lo: Level,
    hi: Level,
    *,
    link: LinkState | None,
    idempotent: bool,
    run_s: float,
    partition_rate_per_h: float = 0.0,
    slack_s: float | None = None,
    rtt_ms: float = 0.0,
    max_disconnect_s: float = 300.0,
    outage_s: float = 0.0,
    policy: AdaptationPolicy | None = None,
) -> LevelTarget:
    """The cheapest level within ``[lo, hi]`` by ``level_costs`` (ties: the stronger).
    ``link`` ``None``: no round trip measured yet, graded ``policy.prior_link``.

    Runs once per adaptive task placed and per sample, so it skips what it can: no
    enum constructor for a value that already is one, no cost dict, and the reason
    is formatted only when read (``LevelTarget``)."""
    if link is None:
        graded = (policy or AdaptationPolicy()).prior_link
    else:
        graded = link if type(link) is LinkState else LinkState(link)
    costs = _costs(
        graded,
        idempotent,
        run_s,
        partition_rate_per_h,
        slack_s,
        rtt_ms,
        max_disconnect_s,
        outage_s,
    )
    weakest, strongest = _STRENGTH[lo], _STRENGTH[hi]
    if not idempotent and strongest > 0:
        # A duplicate of non-idempotent work is harm no deadline buys back: eventual is
        # never chosen while the bounds allow a stronger level, whatever the costs say.
        weakest = max(weakest, 1)
    # Strongest first, replaced only by a strictly cheaper level: ties go to the stronger.
    level, best = None, 0.0
    for lv, cost in zip(_BY_STRENGTH_DESC, costs, strict=True):
        if weakest <= _STRENGTH[lv] <= strongest and (level is None or cost < best):
            level, best = lv, cost
    if level is None:
        raise ValueError(f"no level within bounds: min {lo} > max {hi}")

    def reason() -> str:
        shown = ", ".join(
            f"{lv} {cost:.3g}"
            for lv, cost in zip(_BY_STRENGTH_DESC, costs, strict=True)
            if weakest <= _STRENGTH[lv] <= strongest
        )
        unsampled = "" if link is not None else " (no sample yet)"
        kind = "idempotent" if idempotent else "not idempotent"
        return f"cost {shown}: link {graded}{unsampled}, {kind}"

    return LevelTarget(level=level, reason=reason)


def level_bounds(spec: Mapping[str, Any]) -> tuple[Level, Level, bool]:
    """``(min, max, fixed)`` from a canonical spec dict's ``consistency`` (docs/task-spec.md).

    A fixed task (``level`` other than ``"adaptive"``, or ``min == max``) has
    ``min == max ==`` its level. Raises ``ValueError`` on an unknown level name or
    inverted bounds (canonical specs are validated upstream; this is a caller bug).
    """
    consistency = spec["consistency"]
    if consistency["level"] != "adaptive":
        level = _level(consistency["level"])
        return level, level, True
    lo, hi = _level(consistency["min"]), _level(consistency["max"])
    if _STRENGTH[lo] > _STRENGTH[hi]:
        raise ValueError(f"consistency bounds inverted: min {lo} > max {hi}")
    return lo, hi, lo is hi


def _level(name: Any) -> Level:
    """``Level(name)`` by lookup (read per placement of an adaptive task); raises the
    same ``ValueError`` on an unknown name."""
    found = _LEVEL_NAMED.get(name) if isinstance(name, str) else None
    return found if found is not None else Level(name)


class AdaptiveLevel:
    """The consistency level of one task under adaptation (see module doc).

    ``level`` starts at ``initial`` (default: the strongest allowed) clamped into
    the bounds. After a controller restart pass the stored level as ``initial``;
    the dwell simply starts over, which errs on the side of not upgrading.
    """

    def __init__(
        self,
        task_id: str,
        *,
        lo: Level,
        hi: Level,
        fixed: bool = False,
        initial: Level | None = None,
        policy: AdaptationPolicy | None = None,
    ) -> None:
        if lo.strength > hi.strength:
            raise ValueError(f"bounds inverted: min {lo} > max {hi}")
        self.task_id = task_id
        self.lo, self.hi = lo, hi
        self.fixed = fixed or lo is hi
        self.policy = policy or AdaptationPolicy()
        self.level = clamp_level(initial if initial is not None else hi, lo=lo, hi=hi)
        self._bad_run = 0
        self._bad_ceiling = Level.EVENTUAL
        self._good_since: float | None = None
        self._good_floor = Level.STRONG

    @classmethod
    def from_spec(
        cls,
        spec: Mapping[str, Any],
        *,
        initial: Level | None = None,
        policy: AdaptationPolicy | None = None,
    ) -> AdaptiveLevel:
        """Build from a canonical spec dict (``id`` and ``consistency`` are read)."""
        lo, hi, fixed = level_bounds(spec)
        return cls(spec["id"], lo=lo, hi=hi, fixed=fixed, initial=initial, policy=policy)

    def observe(self, target: LevelTarget, now: float) -> LevelChanged | None:
        """Take one sample; return the change it causes, if any."""
        if self.fixed:
            return None
        want = clamp_level(target.level, lo=self.lo, hi=self.hi)
        if want.strength < self.level.strength:
            self._reset_good()
            self._bad_ceiling = want if self._bad_run == 0 else _stronger(self._bad_ceiling, want)
            self._bad_run += 1
            if self._bad_run >= self.policy.bad_samples:
                reason = f"downgrade after {self._bad_run} bad samples: {target.reason}"
                return self._move(self._bad_ceiling, now, reason)
            return None
        self._bad_run = 0
        if want.strength == self.level.strength:
            self._reset_good()
            return None
        if self._good_since is None:
            self._good_since, self._good_floor = now, want
        else:
            self._good_floor = _weaker(self._good_floor, want)
        held = now - self._good_since
        if held >= self.policy.dwell_s:
            reason = f"upgrade after {held:g} s of good samples: {target.reason}"
            return self._move(self._good_floor, now, reason)
        return None

    def _reset_good(self) -> None:
        self._good_since = None
        self._good_floor = Level.STRONG

    def _move(self, new: Level, now: float, reason: str) -> LevelChanged:
        old, self.level = self.level, new
        self._bad_run = 0
        self._reset_good()
        return LevelChanged(task_id=self.task_id, old=old, new=new, at=now, reason=reason)


def _stronger(a: Level, b: Level) -> Level:
    return a if a.strength >= b.strength else b


def _weaker(a: Level, b: Level) -> Level:
    return a if a.strength <= b.strength else b
