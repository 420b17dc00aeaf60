"""Feasibility filters: each a small named function ``(table, demand, mask) ->
(mask, {reason: count})`` over all nodes at once.

A node is counted under the first filter that drops it, with a reason from the
constant table ``REASONS``. Filtered nodes can *never* take the task as the node
is now (wrong tier, missing label, too small); *exhausted* nodes could, but lack
free resources at this moment. The two are kept apart (as Nomad's
``NodesFiltered`` / ``DimensionExhausted``) because they call for different
operator actions: fix the constraints, or add capacity.

Order (``FILTERS``): the cheapest one-column tests first, labels (dictionary
lookups, cached per table) and capacity later. Exhaustion (``first_exhausted``)
runs after them, in the pipeline's dynamic half, because it is the only test that
depends on free resources, which change with every placement; the filters depend
only on the task's shape and the node's state.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from shared.placement._demand import TaskDemand
from shared.placement._table import LINK_CODES, TIERS, BoolArray, NodeTable
from shared.vocab import Level, LinkState

__all__ = [
    "DIMENSIONS",
    "FILTERS",
    "REASONS",
    "Filter",
    "first_exhausted",
    "labels_match",
    "large_enough",
    "latency_bound",
    "link_for_strong",
    "link_up",
    "not_draining",
    "not_excluded",
    "tier_allowed",
]

#: Reason key -> what it means. Explanations count drops by these keys.
REASONS: dict[str, str] = {
    "draining": "node is draining",
    "tier": "tier not allowed by the task or by the placement mode",
    "link_down": "link partitioned or failed",
    "link_critical": "link critical and the task is strong",
    "latency": "round trip above the task's latency bound",
    "labels": "a required label is missing or differs",
    "too_small": "capacity below the demand in some dimension",
    "excluded": "re-placement moves the task away from this node",
}
#: Resource dimensions in the order exhaustion is reported (first short one wins).
DIMENSIONS: tuple[str, ...] = ("cpu", "memory", "disk")

Counts = dict[str, int]
Filter = Callable[[NodeTable, TaskDemand, BoolArray], tuple[BoolArray, Counts]]

_LINK_DOWN = LINK_CODES[LinkState.PARTITIONED]
_LINK_CRITICAL = LINK_CODES[LinkState.CRITICAL]


def _keep(mask: BoolArray, ok: BoolArray, reason: str) -> tuple[BoolArray, Counts]:
    dropped = int(np.count_nonzero(mask & ~ok))
    return mask & ok, ({reason: dropped} if dropped else {})


def not_draining(table: NodeTable, demand: TaskDemand, mask: BoolArray) -> tuple[BoolArray, Counts]:
    return _keep(mask, ~table.draining, "draining")


def tier_allowed(table: NodeTable, demand: TaskDemand, mask: BoolArray) -> tuple[BoolArray, Counts]:
    if demand.tiers.issuperset(TIERS):  # drops nothing
        return mask, {}
    return _keep(mask, table.tier_mask(demand.tiers), "tier")


def link_up(table: NodeTable, demand: TaskDemand, mask: BoolArray) -> tuple[BoolArray, Counts]:
    return _keep(mask, table.link < _LINK_DOWN, "link_down")


def link_for_strong(
    table: NodeTable, demand: TaskDemand, mask: BoolArray
) -> tuple[BoolArray, Counts]:
    """A strong task needs acknowledged state changes: not on a critical link, unless
    every remaining link is critical; then the ranking picks the least bad of them
    rather than the task waiting for a link to recover."""
    if demand.level is not Level.STRONG:
        return mask, {}
    ok = table.link < _LINK_CRITICAL
    if not np.any(mask & ok):
        return mask, {}
    return _keep(mask, ok, "link_critical")


def latency_bound(
    table: NodeTable, demand: TaskDemand, mask: BoolArray
) -> tuple[BoolArray, Counts]:
    if demand.max_latency_ms is None:
        return mask, {}
    return _keep(mask, table.rtt_ms <= demand.max_latency_ms, "latency")


def labels_match(table: NodeTable, demand: TaskDemand, mask: BoolArray) -> tuple[BoolArray, Counts]:
    if not demand.labels:
        return mask, {}
    ok = np.ones(len(table), dtype=np.bool_)
    for key, value in demand.labels:
        ok &= table.label_mask(key, value)
    return _keep(mask, ok, "labels")


def large_enough(table: NodeTable, demand: TaskDemand, mask: BoolArray) -> tuple[BoolArray, Counts]:
    return _keep(mask, table.size_mask(demand.cpu, demand.memory_mb, demand.disk_mb), "too_small")


def not_excluded(table: NodeTable, demand: TaskDemand, mask: BoolArray) -> tuple[BoolArray, Counts]:
    if not demand.exclude:
        return mask, {}
    ok = np.ones(len(table), dtype=np.bool_)
    for node_id in demand.exclude:
        i = table.index.get(node_id)
        if i is not None:
            ok[i] = False
    return _keep(mask, ok, "excluded")


#: The static filters, in pipeline order (see the module docstring for why).
FILTERS: tuple[Filter, ...] = (
    not_draining,
    tier_allowed,
    link_up,
    link_for_strong,
    latency_bound,
    not_excluded,
    labels_match,
    large_enough,
)


def first_exhausted(
    need: tuple[object, object, object],
    free: tuple[object, object, object],
) -> npt.NDArray[np.int8]:
    """Index into ``DIMENSIONS`` of the first dimension where need > free, or -1.

    Broadcasts: needs may be scalars or ``(u, 1)`` columns, frees ``(n,)`` rows or
    scalars, so one formula serves a single task, a batch and a one-node update.
    """
    n0, n1, n2 = need
    f0, f1, f2 = free
    return np.where(
        np.greater(n0, f0), 0, np.where(np.greater(n1, f1), 1, np.where(np.greater(n2, f2), 2, -1))
    ).astype(np.int8)
