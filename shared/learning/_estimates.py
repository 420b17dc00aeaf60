"""Estimates learned from finished attempts, pings and transfers.

**Speed and work.** A run of a task of kind ``k`` on node ``n`` takes about
``work_k / speed_n`` seconds: work in *reference-core seconds* (the run time on one
core of speed 1), speed per core relative to that reference. Neither is observed
alone, so both are learned together in log space, where the model is linear:
``log d = log work_k - log speed_n + noise``. Each is an ``Estimate`` (mean and
variance of the log); a sample's surprise is shared between the two in
proportion to their variances (a scalar Kalman update), so a well-known kind
teaches a new node its speed, and a well-known node teaches a new kind its work.
Before each update both variances grow by ``DRIFT_VAR`` (the quantity may have
changed since): the gain never falls to zero, and in steady state the update is
an EWMA whose weight follows from the noise ratio (about 0.3 with the defaults),
so an estimate follows a node whose speed changes within a few runs.

**Priors.** A node's speed starts from what the nodes of its tier have shown
(an EWMA of their log speeds; ``TIER_SPEED`` before any run), spread
``TIER_SPREAD``, and its prediction error likewise from its tier's; a kind's
work from the spec's optional work hint (spread ``HINT_SPREAD``), else
``DEFAULT_WORK_S`` capped by the task's deadline (spread ``NO_HINT_SPREAD``, wide:
the first sample mostly overrides it).

**Links and error.** Round trip and bandwidth are EWMAs (weight ``EWMA_ALPHA``)
of pings and of transfers; a node's prediction error is the EWMA of
``|log(actual / predicted)|`` of whole attempts, from ``PRIOR_ERROR``. Placement
widens its deadline margin by it.

**Bounded.** Kinds are keyed by a spec's name (else its callable, else its command), and
names are often unique per task (``job-<id>``): the work estimates keep at most
``MAX_KINDS`` kinds, the most recently run (a kind seen once teaches little; one dropped
starts again from its prior at its next run). Without the bound the state, which the
controller persists, grew with every uniquely named task ever run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from shared.vocab import LinkState, Tier

__all__ = [
    "DEFAULT_WORK_S",
    "DRIFT_VAR",
    "EWMA_ALPHA",
    "HINT_SPREAD",
    "LINK_STATE_RISK",
    "MAX_KINDS",
    "NO_HINT_SPREAD",
    "OBSERVATION_VAR",
    "PRIOR_ERROR",
    "TIER_POWER_W",
    "TIER_SPEED",
    "TIER_SPREAD",
    "Estimate",
    "LearnerState",
    "ewma",
    "observe_finish",
    "observe_rtt",
    "observe_run",
    "observe_transfer",
    "task_kind",
    "work_key",
]

#: Per-core speed a node of each tier is assumed to have before its first run,
#: relative to a server core (1.0): single-board devices are several times slower.
TIER_SPEED: dict[Tier, float] = {
    Tier.DEVICE: 0.25,
    Tier.EDGE: 1.0,
    Tier.REGIONAL: 1.0,
    Tier.CLOUD: 1.0,
}
#: Marginal watts of one busy core by tier (what a run adds to the idle draw), used
#: for the energy cost when the caller does not know the node's own figure.
TIER_POWER_W: dict[Tier, float] = {
    Tier.DEVICE: 2.5,
    Tier.EDGE: 10.0,
    Tier.REGIONAL: 10.0,
    Tier.CLOUD: 12.0,
}
#: How far off (a factor) a tier's prior speed may be: one standard deviation in log space.
TIER_SPREAD = 2.0
#: How far off a spec's work hint may be.
HINT_SPREAD = 1.5
#: How far off the default work may be (wide: the first observation mostly replaces it).
NO_HINT_SPREAD = 10.0
#: Work of a task with no hint and no samples, in reference-core seconds.
DEFAULT_WORK_S = 1.0
#: Run-to-run variance of one task's log duration (a factor of 1.3 at one sigma).
OBSERVATION_VAR = math.log(1.3) ** 2
#: Variance added before each update: how much a speed or a work may drift between runs.
DRIFT_VAR = math.log(1.1) ** 2
#: Prediction error of a node with no finished attempt yet, ``|log(actual / predicted)|``:
#: a factor of 1.5 either way.
PRIOR_ERROR = math.log(1.5)
#: Work estimates kept (the most recently run kinds); over it, the oldest quarter goes at
#: once, so dropping costs O(1) a run on average.
MAX_KINDS = 4_096
#: Probability of trouble with the node's link during a run, from its current grade alone
#: (partition statistics add to it): what placement's risk and the level costs read.
LINK_STATE_RISK: dict[LinkState, float] = {
    LinkState.HEALTHY: 0.0,
    LinkState.DEGRADED: 0.25,
    LinkState.CRITICAL: 0.5,
    LinkState.PARTITIONED: 1.0,
    LinkState.FAILED: 1.0,
}
#: Weight of the newest sample in the plain EWMAs (round trip, bandwidth, error, success).
EWMA_ALPHA = 0.1


def ewma(old: float, sample: float, alpha: float = EWMA_ALPHA) -> float:
    """Exponentially weighted moving average: ``(1 - alpha) * old + alpha * sample``."""
    return (1.0 - alpha) * old + alpha * sample


class Estimate(NamedTuple):
    """A positive quantity learned in log space: ``log`` mean, ``var`` its variance,
    ``samples`` observations taken so far. Immutable; a named tuple rather than a frozen
    dataclass because every finished run builds two (``observe_run``), and a frozen
    dataclass's ``__init__`` costs about twice a tuple's construction."""

    log: float
    var: float
    samples: int = 0

    @classmethod
    def prior(cls, value: float, spread: float) -> Estimate:
        """``value`` believed within a factor ``spread`` (one standard deviation)."""
        return cls(math.log(max(value, 1e-9)), math.log(spread) ** 2)

    @property
    def value(self) -> float:
        return math.exp(self.log)

    def to_list(self) -> list[float]:
        return [self.log, self.var, self.samples]

    @classmethod
    def from_list(cls, data: Any) -> Estimate:
        log, var, samples = data
        return cls(float(log), float(var), int(samples))


@dataclass(slots=True)
class LearnerState:
    """Everything learned, keyed by node id or task kind; the shell keeps it (and may
    persist ``to_dict()``). Read it with the accessors, which fall back to the priors."""

    speed: dict[str, Estimate] = field(default_factory=dict)
    work: dict[str, Estimate] = field(default_factory=dict)
    error: dict[str, float] = field(default_factory=dict)
    rtt_ms: dict[str, float] = field(default_factory=dict)
    bandwidth_mbps: dict[str, float] = field(default_factory=dict)
    #: per tier: EWMA of its nodes' log speed, and of their prediction errors; what
    #: a node of that tier is assumed to be before its own first sample
    tier_speed: dict[str, float] = field(default_factory=dict)
    tier_error: dict[str, float] = field(default_factory=dict)

    def speed_of(self, node_id: str, tier: Tier | str) -> Estimate:
        """The node's per-core speed; before its first run, what its tier's nodes
        have shown so far (``TIER_SPEED`` before any), within ``TIER_SPREAD``."""
        found = self.speed.get(node_id)
        if found is not None:
            return found
        tier = tier if type(tier) is Tier else Tier(tier)
        pooled = self.tier_speed.get(tier._value_)  # ``tier.value``, without the descriptor
        log = pooled if pooled is not None else math.log(TIER_SPEED[tier])
        return Estimate(log, math.log(TIER_SPREAD) ** 2)

    def work_of(
        self, kind: str, hint_s: float | None = None, bound_s: float | None = None
    ) -> Estimate:
        """A kind's work in reference-core seconds. Before its first run: the spec's
        work hint; else ``DEFAULT_WORK_S``, but no more than ``bound_s``, a bound the
        submitter implies (its deadline: it expects the task to fit)."""
        found = self.work.get(kind)
        if found is not None:
            return found
        if hint_s is not None and hint_s > 0:
            return Estimate.prior(hint_s, HINT_SPREAD)
        bound = bound_s if bound_s is not None and bound_s > 0 else DEFAULT_WORK_S
        return Estimate.prior(min(DEFAULT_WORK_S, bound), NO_HINT_SPREAD)

    def error_of(self, node_id: str, tier: Tier | str | None = None) -> float:
        """The node's prediction error; before its first sample, its tier's (given
        ``tier``), else ``PRIOR_ERROR``."""
        found = self.error.get(node_id)
        if found is not None:
            return found
        return self.tier_error.get(_tier_key(tier), PRIOR_ERROR) if tier else PRIOR_ERROR

    def to_dict(self) -> dict[str, Any]:
        return {
            "speed": {k: e.to_list() for k, e in self.speed.items()},
            "work": {k: e.to_list() for k, e in self.work.items()},
            "error": dict(self.error),
            "rtt_ms": dict(self.rtt_ms),
            "bandwidth_mbps": dict(self.bandwidth_mbps),
            "tier_speed": dict(self.tier_speed),
            "tier_error": dict(self.tier_error),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LearnerState:
        """Inverse of ``to_dict``; raises ``ValueError`` on a malformed document."""
        try:
            return cls(
                speed={str(k): Estimate.from_list(v) for k, v in data["speed"].items()},
                work=_newest(
                    {str(k): Estimate.from_list(v) for k, v in data["work"].items()}, MAX_KINDS
                ),
                error={str(k): float(v) for k, v in data["error"].items()},
                rtt_ms={str(k): float(v) for k, v in data["rtt_ms"].items()},
                bandwidth_mbps={str(k): float(v) for k, v in data["bandwidth_mbps"].items()},
                tier_speed={str(k): float(v) for k, v in data.get("tier_speed", {}).items()},
                tier_error={str(k): float(v) for k, v in data.get("tier_error", {}).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"malformed learner state: {exc}") from exc


def task_kind(spec: Mapping[str, Any]) -> str:
    """What runs of one kind share: the spec's ``name``, else its callable, else its argv."""
    name = spec.get("name") or spec.get("callable")
    if name:
        return str(name)
    return " ".join(str(a) for a in spec.get("command") or ())


def work_key(spec: Mapping[str, Any]) -> tuple[str, float | None, float | None]:
    """How the learner knows a task's work: ``(kind, hint_s, bound_s)`` for
    ``LearnerState.work_of`` and ``observe_run`` (the spec's optional positive
    ``work_s`` hint; its ``deadline_s`` bounds the default)."""
    hint, deadline = spec.get("work_s"), spec.get("deadline_s")
    valid = isinstance(hint, int | float) and not isinstance(hint, bool) and hint > 0
    return (
        task_kind(spec),
        float(hint) if valid else None,
        None if deadline is None else float(deadline),
    )


def observe_run(
    state: LearnerState,
    *,
    node_id: str,
    tier: Tier | str,
    kind: str,
    seconds: float,
    hint_s: float | None = None,
    bound_s: float | None = None,
) -> None:
    """A run of ``kind`` on ``node_id`` executed for ``seconds`` (start to exit, no
    queueing or transfers): update the node's speed and the kind's work together
    (``hint_s``/``bound_s``: the kind's prior, as in ``LearnerState.work_of``)."""
    # (once per finished run, so spelled out: the estimates unpacked, built with
    # ``tuple.__new__`` and the tier's EWMA inlined; the same arithmetic in the same order)
    if not (seconds > 0 and _isfinite(seconds)):
        return
    key = tier._value_ if type(tier) is Tier else _tier_key(tier)
    speeds = state.speed
    s_log, s_var, s_n = speeds.get(node_id) or state.speed_of(node_id, tier)
    works = state.work
    # popped and put back: the dict's order is the kinds' recency (``MAX_KINDS``)
    w_log, w_var, w_n = works.pop(kind, None) or state.work_of(kind, hint_s, bound_s)
    var_s, var_w = s_var + DRIFT_VAR, w_var + DRIFT_VAR
    surprise = _log(seconds) - (w_log - s_log)
    total = var_s + var_w + OBSERVATION_VAR
    gain_s, gain_w = var_s / total, var_w / total
    speed_log = s_log - gain_s * surprise
    speeds[node_id] = _new(Estimate, (speed_log, var_s * (1 - gain_s), s_n + 1))
    works[kind] = _new(Estimate, (w_log + gain_w * surprise, var_w * (1 - gain_w), w_n + 1))
    if len(works) > MAX_KINDS:
        state.work = _newest(works, MAX_KINDS * 3 // 4)
    pools = state.tier_speed
    pooled = pools.get(key)
    # ``ewma(pooled, speed_log)``
    pools[key] = speed_log if pooled is None else _KEEP * pooled + EWMA_ALPHA * speed_log


_log, _isfinite = math.log, math.isfinite
_new = tuple.__new__
#: ``ewma``'s weight of the old value at the default alpha (``1.0 - EWMA_ALPHA``)
_KEEP = 1.0 - EWMA_ALPHA


def _newest(works: dict[str, Estimate], keep: int) -> dict[str, Estimate]:
    """The ``keep`` most recently run kinds of ``works`` (ordered by recency)."""
    return dict(list(works.items())[-keep:]) if len(works) > keep else works


def _tier_key(tier: Tier | str) -> str:
    """The tier's wire name, the key of the per-tier pools (a ``Tier`` as it is: this
    runs once per finished run, and ``Tier(...)`` costs more than the rest of the key)."""
    # ``_value_`` is what ``value`` returns, without the enum descriptor (also per run)
    return tier._value_ if type(tier) is Tier else Tier(tier)._value_


def observe_finish(
    state: LearnerState,
    node_id: str,
    predicted_s: float,
    actual_s: float,
    tier: Tier | str | None = None,
) -> None:
    """An attempt on ``node_id`` was predicted to finish in ``predicted_s`` and took
    ``actual_s`` (placement to result): update the node's prediction error (and its
    tier's, given ``tier``)."""
    if not (predicted_s > 0 and actual_s > 0):
        return
    sample = abs(math.log(actual_s / predicted_s))
    state.error[node_id] = ewma(state.error_of(node_id, tier), sample)
    if tier:
        key = _tier_key(tier)
        state.tier_error[key] = ewma(state.tier_error.get(key, PRIOR_ERROR), sample)


def observe_rtt(state: LearnerState, node_id: str, rtt_ms: float) -> None:
    """A measured round trip to ``node_id`` (the first sample is taken as it is)."""
    if not (rtt_ms >= 0 and math.isfinite(rtt_ms)):
        return
    old = state.rtt_ms.get(node_id)
    state.rtt_ms[node_id] = rtt_ms if old is None else ewma(old, rtt_ms)


def observe_transfer(state: LearnerState, node_id: str, megabytes: float, seconds: float) -> None:
    """``megabytes`` moved to or from ``node_id`` in ``seconds`` (latency excluded)."""
    if not (megabytes > 0 and seconds > 0):
        return
    sample = megabytes * 8.0 / seconds
    old = state.bandwidth_mbps.get(node_id)
    state.bandwidth_mbps[node_id] = sample if old is None else ewma(old, sample)
