"""Predicted completion time: the ranking of the ``adaptive`` mode.

For a task on node ``i``, seconds from the decision to the result at the controller:

    dispatch  = rtt_i / 2                      (+ rtt_i for a strong task: the lease round trip)
    transfer  = input MB * 8 / bandwidth_i     (0 on a node holding the data source)
    queue     = backlog_i / (cpus_i * speed_i) (placed, unfinished work shares the node's cores)
    execution = work / speed_i                 (work in reference-core seconds)
    return    = rtt_i / 2 + output MB * 8 / bandwidth_i
    finish_i  = the sum

and its cost in [0, 1], the mean of four shares: energy (``power_i * execution``,
doubled on an empty battery) and WAN megabytes, each over the largest among the
nodes that pass the filters; the node's utilisation after taking the task
(spreads load); and the risk of losing the run (``1 - success * P(no partition
during the run) * (1 - link risk)``).

The rule (higher score wins, scores in [-1, 1]):

- with a deadline ``D`` (seconds left): a node is *safe* when ``finish_i *
  exp(SAFETY * error_i) <= D``, ``error_i`` the node's learned prediction error
  (``|log(actual / predicted)|``): the margin grows with how wrong the node's
  predictions have been. Safe nodes score ``1 - cost`` (cheapest first); others
  ``-finish / (finish + D)`` (earliest first), always below every safe one, so
  when none is safe the earliest predicted finish wins;
- without a deadline: ``min(v) / v_i`` with ``v_i = finish_i * (1 + COST_WEIGHT *
  cost_i)``: the earliest finish, traded against cost.

Two tunables (``SAFETY``, ``COST_WEIGHT``); everything else is measured or learned.
The split follows the pipeline's: ``timing`` is the static half (per task shape),
``score`` the dynamic half (queue and utilisation move with every placement).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shared.placement._demand import TaskDemand
from shared.placement._scoring import LINK_RISK_BY_CODE, TINY
from shared.placement._table import FloatArray, NodeTable
from shared.vocab import Level

__all__ = [
    "COST_WEIGHT",
    "PREDICTION_TERMS",
    "SAFETY",
    "Timing",
    "breakdown",
    "score",
    "timing",
]

#: How many widths of a node's prediction error the deadline margin must cover.
SAFETY = 1.0
#: Without a deadline: a cost of 1 (the worst candidate on every count) is worth
#: this much relative delay (1.0: finishing twice as late).
COST_WEIGHT = 1.0
#: What a candidate of the adaptive mode shows in its explanation, in order.
PREDICTION_TERMS: tuple[str, ...] = (
    "dispatch_s",
    "transfer_s",
    "queue_s",
    "exec_s",
    "return_s",
    "finish_s",
    "margin_s",
    "cost",
)

IntArray = npt.NDArray[np.intp]


@dataclass(slots=True)
class Timing:
    """The static half of the prediction over a shape's candidate rows: ``fixed`` =
    dispatch + transfer + execution + return, ``capacity`` = cpus * speed,
    ``base_cost`` = the cost's static shares (energy, WAN, risk) over 4, ``limit``
    = deadline / exp(SAFETY * error) (empty without a deadline)."""

    fixed: FloatArray
    capacity: FloatArray
    base_cost: FloatArray
    limit: FloatArray

    @property
    def nbytes(self) -> int:
        return self.fixed.nbytes + self.capacity.nbytes + self.base_cost.nbytes + self.limit.nbytes


Index = IntArray | slice


def _parts(table: NodeTable, demand: TaskDemand, rows: Index) -> tuple[FloatArray, ...]:
    """``(dispatch, transfer, execution, return, input MB moved)`` over ``rows``."""
    rtt_s = table.rtt_ms[rows] / 1000.0
    bandwidth = table.bandwidth[rows]
    n = len(rtt_s)
    dispatch = rtt_s * (1.5 if demand.level is Level.STRONG else 0.5)
    moved = np.full(n, demand.data_size_mb)
    if demand.data_source is not None and demand.data_size_mb > 0:
        moved = np.where(table.source_mask(demand.data_source)[rows], 0.0, moved)
    per_mb = np.divide(8.0, bandwidth, out=np.full(n, np.inf), where=bandwidth > 0)
    transfer = np.where(moved > 0, moved * per_mb, 0.0)
    execute = demand.work / np.maximum(table.speed[rows], TINY)
    back = rtt_s / 2.0 + (demand.output_mb * per_mb if demand.output_mb > 0 else 0.0)
    return dispatch, transfer, execute, back, moved


def _share(values: FloatArray) -> FloatArray:
    top = float(values.max()) if len(values) else 0.0
    return values / top if top > 0 and math.isfinite(top) else np.zeros(len(values))


def timing(table: NodeTable, demand: TaskDemand, rows: IntArray) -> Timing:
    """The static half of the prediction for ``demand`` on ``rows`` (computed over
    whole columns, which is cheaper than gathering each first, then gathered)."""
    every = slice(None)
    dispatch, transfer, execute, back, moved = _parts(table, demand, every)
    fixed = dispatch + transfer + execute + back
    battery = table.battery
    drain = np.where(np.isnan(battery), 1.0, 2.0 - np.clip(battery, 0.0, 100.0) / 100.0)
    survive = np.exp(-table.partition_rate * np.minimum(fixed, 1e9) / 3600.0) * (
        1.0 - LINK_RISK_BY_CODE[table.link]
    )
    risk = 1.0 - np.clip(table.success, 0.0, 1.0) * survive
    energy = (table.power * execute * drain)[rows]
    wan = np.where(table.wan, moved + demand.output_mb, 0.0)[rows]
    deadline = demand.deadline_s
    limit = np.empty(0) if deadline is None else (deadline / np.exp(SAFETY * table.error))[rows]
    return Timing(
        fixed=fixed[rows],
        capacity=np.maximum(table.cpus * table.speed, TINY)[rows],
        base_cost=(_share(energy) + _share(wan) + risk[rows]) / 4.0,
        limit=limit,
    )


def score(
    table: NodeTable, demand: TaskDemand, t: Timing, pos: Index, rows: IntArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """``(score, finish, queue, cost)`` of the feasible candidates: ``pos`` indexes
    the shape's arrays, ``rows`` the same candidates in the table."""
    queue = table.backlog[rows] / t.capacity[pos]
    finish = t.fixed[pos] + queue
    cpus = np.maximum(table.cpus[rows], TINY)
    util = np.clip(
        np.maximum(table.load[rows], (cpus - table.cpu_free[rows] + demand.cpu) / cpus), 0.0, 1.0
    )
    cost = t.base_cost[pos] + util / 4.0
    deadline = demand.deadline_s
    if deadline is not None:
        late = -finish / (finish + max(deadline, TINY))
        value = np.where(
            finish <= t.limit[pos], 1.0 - cost, np.where(np.isfinite(late), late, -1.0)
        )
    else:
        v = np.maximum(finish * (1.0 + COST_WEIGHT * cost), TINY)
        value = np.where(np.isfinite(v), float(v.min()) / v, 0.0)
    return value, finish, queue, cost


def breakdown(
    table: NodeTable,
    demand: TaskDemand,
    rows: IntArray,
    queue: FloatArray,
    cost: FloatArray,
) -> tuple[tuple[str, ...], list[tuple[float, ...]]]:
    """Names and values of a few candidates' prediction, for the explanation:
    ``PREDICTION_TERMS``, without ``margin_s`` when the task has no deadline."""
    dispatch, transfer, execute, back, _ = _parts(table, demand, rows)
    finish = dispatch + transfer + queue + execute + back
    columns = [dispatch, transfer, queue, execute, back, finish]
    names = PREDICTION_TERMS
    if demand.deadline_s is not None:
        columns.append(demand.deadline_s - finish * np.exp(SAFETY * table.error[rows]))
    else:
        names = tuple(n for n in names if n != "margin_s")
    columns.append(cost)
    return names, [tuple(v) for v in np.column_stack(columns).astype(float).tolist()]
