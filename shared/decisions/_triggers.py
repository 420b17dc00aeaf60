"""Re-placement triggers of the adaptive mode (docs/placement.md), as pure functions.

Each returns a ``Trigger`` (named, with a readable reason, the measured value and
the threshold it crossed) or ``None``; the controller and the simulator evaluate
them on their own schedule and re-place under a new epoch. Thresholds are strict
("more than"), as in the seed: a failure-rate EWMA of exactly 0.1 (one failure
from a clean record) does not fire, two failures close together (0.19) do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shared.learning import ewma
from shared.vocab import Level, LinkState

__all__ = [
    "FAILURE_RATE_MAX",
    "OVERLOAD_HIGH",
    "OVERLOAD_LOW",
    "SLOWDOWN_FACTOR",
    "SLOWDOWN_MIN_SAMPLES",
    "SLOWDOWN_RECENT",
    "TRIGGERS",
    "Trigger",
    "failure_rate",
    "latency_violated",
    "link_degraded",
    "overload",
    "slowdown",
    "task_triggers",
    "update_failure_rate",
]

SLOWDOWN_FACTOR = 1.2
SLOWDOWN_MIN_SAMPLES = 6
SLOWDOWN_RECENT = 3
FAILURE_RATE_MAX = 0.1
OVERLOAD_HIGH = 1.2
OVERLOAD_LOW = 0.8

#: Trigger name -> what it means.
TRIGGERS: dict[str, str] = {
    "slowdown": "the last 3 runs averaged more than 1.2 x the earlier runs",
    "failure_rate": "failure-rate EWMA at the node above 0.1",
    "link_degraded": "the link of a node running strong tasks turned degraded or worse",
    "overload": "node runs more than 1.2 x the mean while another runs less than 0.8 x",
    "latency": "observed latency above the task's bound",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Trigger:
    """A fired re-placement trigger: ``name`` from ``TRIGGERS``, why, and the numbers."""

    name: str
    reason: str
    value: float
    threshold: float
    node_id: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "reason": self.reason,
            "value": self.value,
            "threshold": self.threshold,
            "node": self.node_id,
        }


def update_failure_rate(old: float, failed: bool) -> float:
    """Failure-rate EWMA of a task at a node: ``0.9 * old + 0.1 * (1 if failed else 0)``."""
    return ewma(old, 1.0 if failed else 0.0)


def slowdown(durations: Sequence[float], *, node_id: str | None = None) -> Trigger | None:
    """Run durations, oldest first: fires when there are at least 6 and the mean of the
    last 3 exceeds 1.2 x the mean of the ones before."""
    if len(durations) < SLOWDOWN_MIN_SAMPLES:
        return None
    recent = durations[-SLOWDOWN_RECENT:]
    earlier = durations[:-SLOWDOWN_RECENT]
    recent_mean = sum(recent) / len(recent)
    bound = SLOWDOWN_FACTOR * (sum(earlier) / len(earlier))
    if recent_mean <= bound:
        return None
    return Trigger(
        name="slowdown",
        reason=f"last {len(recent)} runs average {recent_mean:.3g} s > {bound:.3g} s "
        f"(1.2 x the {len(earlier)} earlier)",
        value=recent_mean,
        threshold=bound,
        node_id=node_id,
    )


def failure_rate(rate: float, *, node_id: str | None = None) -> Trigger | None:
    if rate <= FAILURE_RATE_MAX:
        return None
    return Trigger(
        name="failure_rate",
        reason=f"failure rate {rate:.3g} > {FAILURE_RATE_MAX}",
        value=rate,
        threshold=FAILURE_RATE_MAX,
        node_id=node_id,
    )


def link_degraded(
    previous: LinkState, current: LinkState, *, strong_tasks: int, node_id: str | None = None
) -> Trigger | None:
    """Fires on the transition into degraded (or worse) of a node running strong tasks."""
    bound = LinkState.DEGRADED.severity
    was, now = LinkState(previous).severity, LinkState(current).severity
    if strong_tasks <= 0 or not (was < bound <= now):
        return None
    return Trigger(
        name="link_degraded",
        reason=f"link {LinkState(previous).value} -> {LinkState(current).value} "
        f"with {strong_tasks} strong task(s)",
        value=float(now),
        threshold=float(bound),
        node_id=node_id,
    )


def overload(running: Mapping[str, float]) -> list[Trigger]:
    """Task counts of the nodes eligible to share work: one trigger per node above
    1.2 x the mean, provided some node sits below 0.8 x the mean."""
    if not running:
        return []
    mean = sum(running.values()) / len(running)
    if mean <= 0 or not any(n < OVERLOAD_LOW * mean for n in running.values()):
        return []
    high = OVERLOAD_HIGH * mean
    return [
        Trigger(
            name="overload",
            reason=f"{count:g} tasks > {high:.3g} (1.2 x mean {mean:.3g}) "
            f"while a node runs < {OVERLOAD_LOW * mean:.3g}",
            value=float(count),
            threshold=high,
            node_id=node_id,
        )
        for node_id, count in sorted(running.items())
        if count > high
    ]


def latency_violated(
    observed_ms: float, max_latency_ms: float | None, *, node_id: str | None = None
) -> Trigger | None:
    if max_latency_ms is None or not observed_ms > max_latency_ms:
        return None
    return Trigger(
        name="latency",
        reason=f"latency {observed_ms:.3g} ms > bound {max_latency_ms:g} ms",
        value=observed_ms,
        threshold=max_latency_ms,
        node_id=node_id,
    )


def task_triggers(
    *,
    node_id: str,
    durations: Sequence[float] = (),
    failure_ewma: float = 0.0,
    level: Level | str = Level.CAUSAL,
    previous_link: LinkState | str = LinkState.HEALTHY,
    link: LinkState | str = LinkState.HEALTHY,
    observed_latency_ms: float | None = None,
    max_latency_ms: float | None = None,
) -> list[Trigger]:
    """Every per-task trigger that fires for a task on ``node_id`` (overload is
    per cluster: call ``overload``). ``link_degraded`` applies to strong tasks."""
    fired = [
        slowdown(durations, node_id=node_id),
        failure_rate(failure_ewma, node_id=node_id),
        link_degraded(
            LinkState(previous_link),
            LinkState(link),
            strong_tasks=1 if Level(level) is Level.STRONG else 0,
            node_id=node_id,
        ),
        None
        if observed_latency_ms is None
        else latency_violated(observed_latency_ms, max_latency_ms, node_id=node_id),
    ]
    return [t for t in fired if t is not None]
