"""Predicted completion time: the ranking of the ``adaptive`` mode.

For a task on node ``i``, seconds from the decision to the result at the controller:

    dispatch  = rtt_i / 2                      (+ rtt_i for a strong task: the lease round trip)
    transfer  = input MB * 8 / bandwidth_i     (0 on a node holding the data source)
    queue     = backlog_i / (min(cpus_i, slots_i) * speed_i) when no core of the node
                is free for the task or every executor slot of its agent is taken
                (``queue_wait``), else 0: a task with a core and a slot of its own
                starts at once
    execution = work / speed_i                 (work in reference-core seconds)
    return    = rtt_i / 2 + output MB * 8 / bandwidth_i
    finish_i  = the sum

and its cost in [0, 1], the mean of four shares: energy (``power_i * execution``,
doubled on an empty battery, plus ``transfer_j_i`` joules per MB of input moved and
output returned, where the node's path has a known transfer energy: the two ways a
run spends energy beyond the idle draw every node pays anyway) and WAN megabytes,
each over the largest among the nodes that pass the filters; the node's utilisation
after taking the task (spreads load); and the risk of losing the run (``1 - success * P(no partition
during the run)``, 1 out of contact). A live link's grade adds nothing: it sums the link's
round trips (in the finish already), disconnects (the partition rate) and losses (attempts
lost, in ``success``); the weighted-sum modes' grade risk on top charged a node graded
``degraded`` for being over 100 ms of round trip away as a quarter likely to be lost.

The rule (higher score wins, scores in [-1, 1]):

- with a deadline ``D`` (seconds left): a node is *safe* when ``finish_i *
  exp(SAFETY * error_i) <= D``, ``error_i`` the node's learned prediction error
  (``|log(actual / predicted)|``): the margin grows with how wrong the node's
  predictions have been. Safe nodes score ``1 - cost`` (cheapest first); others
  ``-finish / (finish + max(D, 1 s))`` (earliest first: the prediction itself is
  the best estimate of who finishes first; the scale only keeps the order exact
  when the deadline has already passed), always below every safe one, so when
  none is safe the earliest predicted finish wins;
- without a deadline: ``1 / (1 + v_i)`` with ``v_i = finish_i * (1 + COST_WEIGHT *
  cost_i)`` seconds: the earliest finish, traded against cost.

A node's score depends on that node alone (and on the shares' normalisers, fixed
per task shape), so adding or removing another candidate never reorders two others.

Two tunables (``SAFETY``, ``COST_WEIGHT``); everything else is measured or learned.
The split follows the pipeline's: ``timing`` is the static half (per task shape),
``score`` the dynamic half (queue and utilisation move with every placement).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from shared.placement._demand import TaskDemand
from shared.placement._scoring import TINY
from shared.placement._table import LINK_CODES, BoolArray, FloatArray, NodeTable
from shared.vocab import Level, LinkState

__all__ = [
    "COST_WEIGHT",
    "PREDICTION_TERMS",
    "SAFETY",
    "NodeFacts",
    "Standing",
    "Timing",
    "breakdown",
    "finish_of",
    "fixed",
    "lowers",
    "parts",
    "queue_wait",
    "rate",
    "score",
    "tame",
    "timing",
]

#: How many widths of a node's prediction error the deadline margin must cover. The
#: error is a mean absolute log error ``e``; for normal log errors ``sigma = 1.25 e``,
#: so 2 widths are 1.6 sigma: a safe node misses for prediction error alone about
#: one time in twenty (1 width would be one in five).
SAFETY = 2.0
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
# What a candidate of a task without a deadline shows.
_NO_MARGIN = tuple(n for n in PREDICTION_TERMS if n != "margin_s")

IntArray = npt.NDArray[np.intp]
Index = IntArray | slice
_EVERY = slice(None)
#: The first link code of a node out of contact (partitioned, failed): worse codes only.
_OUT_OF_CONTACT = LINK_CODES[LinkState.PARTITIONED]
# ``tame``: the backlogs' sum times this must stay finite (backlog / TINY, with room).
_BACKLOG_SCALE = 1e14
# ``lowers``: the largest need or work of an allocation that keeps a table tame.
_MOST = 1e100


@dataclass(slots=True)
class NodeFacts:
    """What the prediction reads of the nodes, whatever the task: derived from the
    table's columns once per table state (kept in the shape cache beside the shapes)."""

    rtt_s: FloatArray
    per_mb: FloatArray  # seconds per MB over the node's bandwidth (inf without any)
    inv_speed: FloatArray
    capacity: FloatArray  # min(cpus, slots) * speed: the node's drain rate
    inv_cpus: FloatArray
    energy_rate: FloatArray  # joules per reference-core second of work, battery weighed
    transfer_j: FloatArray  # joules per MB moved to or from the node (0: unknown)
    transfers: bool  # any node with a transfer energy
    survive: FloatArray  # success, 0 out of contact (partitioned, failed)
    widen: FloatArray  # exp(SAFETY * error)
    wan: BoolArray
    rate_per_s: FloatArray  # partitions per second
    partitions: bool  # any node with a partition rate
    bounded: bool  # every node tame enough for ``Timing.bounded`` (see there)

    @classmethod
    def of(cls, table: NodeTable) -> NodeFacts:
        bandwidth = table.bandwidth
        inv_speed = 1.0 / np.maximum(table.speed, TINY)
        battery = table.battery
        drain = np.where(np.isnan(battery), 1.0, 2.0 - np.clip(battery, 0.0, 100.0) / 100.0)
        rate = table.partition_rate / 3600.0
        capacity = np.maximum(np.minimum(table.cpus, table.slots) * table.speed, TINY)
        rtt_s = table.rtt_ms / 1000.0
        energy_rate = table.power * drain * inv_speed
        # a live link's grade adds no risk: its round trips are in the finish, its
        # disconnects in the partition rate, the attempts it lost in the success EWMA
        survive = np.clip(table.success, 0.0, 1.0) * (table.link < _OUT_OF_CONTACT)
        transfer_j = table.transfer_j.copy()
        # >= 0 fails on NaN too
        bounded = bool(
            np.all(rtt_s >= 0.0)
            and np.all(inv_speed >= 0.0)
            and np.all(energy_rate >= 0.0)
            and np.all((transfer_j >= 0.0) & (transfer_j < math.inf))
            and np.all(survive >= 0.0)
            and np.all((rate >= 0.0) & (rate < math.inf))
            and np.all(table.load >= 0.0)
            and np.all(capacity >= TINY)
        )
        return cls(
            rtt_s=rtt_s,
            per_mb=np.divide(8.0, bandwidth, out=np.full(len(table), np.inf), where=bandwidth > 0),
            inv_speed=inv_speed,
            capacity=capacity,
            inv_cpus=1.0 / np.maximum(table.cpus, TINY),
            energy_rate=energy_rate,
            transfer_j=transfer_j,
            transfers=bool(np.any(transfer_j > 0.0)),
            survive=survive,
            widen=np.exp(SAFETY * table.error),
            wan=table.wan.copy(),
            rate_per_s=rate,
            partitions=bool(np.any(rate > 0)),
            bounded=bounded,
        )

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, f).nbytes for f in _FACT_ARRAYS)


_FACT_ARRAYS = (
    "rtt_s", "per_mb", "inv_speed", "capacity", "inv_cpus", "energy_rate", "transfer_j",
    "survive", "widen", "wan", "rate_per_s",
)  # fmt: skip


@dataclass(slots=True)
class Timing:
    """The static half of the prediction, one entry per node of the table (rows
    the filters dropped included: the caller masks them): ``base_cost`` = the
    cost's static shares (energy, WAN, risk) over 4. Whole columns rather than
    the candidates' subset: arithmetic on a whole column costs less than
    gathering a subset. The fixed time (``fixed``) is static too but not kept:
    recomputing it is a few column operations per decision, and leaving it out
    halves what a cached shape holds, so twice as many shapes fit a cache's budget
    (a miss costs a whole ``timing``).

    ``bounded``: every score of a row past the filters lies in [-1, 1] (finite, so
    ``_select.top_rows`` ranks exactly) while the table is ``tame``, and allocating
    a task with ``lowers`` needs on a row can only lower its score. It holds when the
    node facts are (``NodeFacts.bounded``: round trips, energy rates, survival and
    load >= 0, transfer energies finite and >= 0, speeds not NaN, partition rates
    finite and >= 0, drain rates >= ``TINY``)
    and the task's work, input and output are finite and >= 0: then the fixed time
    is >= 0 (inf allowed), each cost share lies in [0, 1] on those rows, the cost in
    [0, 1], and the rule's scores in [-1, 1]; more queue wait and utilisation only
    lower them.
    """

    base_cost: FloatArray
    bounded: bool = False

    @property
    def nbytes(self) -> int:
        return self.base_cost.nbytes


def _moved(table: NodeTable, demand: TaskDemand, idx: Index) -> FloatArray | float:
    """Input MB each node must receive: 0 on a node holding the data source."""
    if demand.data_source is None or demand.data_size_mb <= 0:
        return demand.data_size_mb
    return np.where(table.source_mask(demand.data_source)[idx], 0.0, demand.data_size_mb)


def _parts(
    facts: NodeFacts, table: NodeTable, demand: TaskDemand, idx: Index
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """``(dispatch, transfer, execution, return)`` over ``idx``."""
    rtt_s, per_mb = facts.rtt_s[idx], facts.per_mb[idx]
    dispatch = rtt_s * (1.5 if demand.level is Level.STRONG else 0.5)
    moved = _moved(table, demand, idx)
    if isinstance(moved, np.ndarray):
        transfer = np.where(moved > 0, moved * per_mb, 0.0)
    else:  # the same input for every node: the same where, decided once
        transfer = moved * per_mb if moved > 0 else np.zeros(len(per_mb))
    execute = demand.work * facts.inv_speed[idx]
    back = rtt_s / 2.0
    if demand.output_mb > 0:
        back = back + demand.output_mb * per_mb
    return dispatch, transfer, execute, back


def parts(
    facts: NodeFacts, table: NodeTable, demand: TaskDemand
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """``(dispatch, transfer, execution, return)`` of every node: elementwise what
    ``breakdown`` shows of a few rows, for a caller explaining many decisions of one
    shape on one table version (they do not move with placements)."""
    return _parts(facts, table, demand, _EVERY)


def finish_of(dispatch: Any, transfer: Any, queue: Any, execute: Any, back: Any) -> Any:
    """The predicted finish from its parts, summed in the order the explanation lists
    them (columns or one row's floats alike: the same double arithmetic)."""
    return dispatch + transfer + queue + execute + back


def queue_wait(
    backlog: Any, capacity: Any, cpus: Any, cpu_free: Any, running: Any, slots: Any, cpu: float
) -> Any:
    """Seconds a task reserving ``cpu`` cores waits for them on a node (columns or one
    row's floats alike). A running task is taken to use at least one whole core,
    whatever fraction it reserved (a CPU-bound process does not stop at its 0.1), so
    the task gets cores of its own when both the unreserved cores (``cpu_free``) and
    the cores not taken by a running task (``cpus - running``) have room for
    ``max(cpu, 1)``, and it gets an executor slot of its own when the attempts placed
    there and unfinished (``running``: started or waiting in the agent's local queue)
    leave one of the agent's ``slots`` (``inf``: no limit but the cpus). With both it
    starts at once, whatever else runs there, and the backlog does not delay it.
    Otherwise the placed, unfinished work ahead of it drains through as many cores
    as run at once (``capacity`` = min(cores, slots) x speed): a fluid estimate of
    when enough of them free up."""
    need = max(cpu, 1.0)
    busy = (need > cpu_free) | (running + need > cpus) | (running + 1.0 > slots)
    return backlog / capacity * busy


def _share(values: FloatArray, mask: BoolArray) -> FloatArray:
    """``values`` over the largest of them among ``mask`` (0 when that is 0)."""
    top = float(np.where(mask, values, 0.0).max()) if len(values) else 0.0
    return values / top if top > 0 and math.isfinite(top) else np.zeros(len(values))


def fixed(facts: NodeFacts, table: NodeTable, demand: TaskDemand) -> FloatArray:
    """Dispatch + transfer + execution + return of every node: the part of the
    predicted finish that does not move with placements."""
    dispatch, transfer, execute, back = _parts(facts, table, demand, _EVERY)
    return dispatch + transfer + execute + back  # type: ignore[no-any-return]


def timing(
    facts: NodeFacts,
    table: NodeTable,
    demand: TaskDemand,
    mask: BoolArray,
    run: FloatArray | None = None,
) -> Timing:
    """The static half of the prediction for ``demand``; shares are of the largest
    among ``mask`` (the nodes past the filters). ``run``: ``fixed`` if the caller
    has it."""
    survive = facts.survive
    if facts.partitions:
        run = fixed(facts, table, demand) if run is None else run
        survive = survive * np.exp(-facts.rate_per_s * np.minimum(run, 1e9))
    crossing = _moved(table, demand, _EVERY) + demand.output_mb  # MB on the node's path
    if facts.transfers:  # execution's joules and the data path's
        energy = _share(demand.work * facts.energy_rate + crossing * facts.transfer_j, mask)
    else:  # work * energy_rate: its share of the largest does not depend on the work
        energy = _share(facts.energy_rate, mask) if demand.work > 0 else 0.0
    wan = 0.0
    if isinstance(crossing, np.ndarray) or crossing > 0:  # else every share is 0
        wan = _share(np.where(facts.wan, crossing, 0.0), mask)
    bounded = facts.bounded and all(
        0.0 <= x < math.inf for x in (demand.work, demand.data_size_mb, demand.output_mb)
    )
    return Timing((energy + wan + (1.0 - survive)) / 4.0, bounded)


def tame(table: NodeTable) -> bool:
    """Whether the dynamic columns keep the scores of a ``Timing.bounded`` shape in
    [-1, 1]: backlogs >= 0 and small enough that a queue wait stays finite
    (``backlog / TINY``, with room for ``lowers`` allocations), free cpus finite (so
    utilisation is never NaN). Three reductions: a NaN or inf anywhere fails them."""
    backlog = table.backlog
    return bool(
        backlog.min(initial=math.inf) >= 0.0  # (no node: nothing to bound)
        and math.isfinite(backlog.sum() * _BACKLOG_SCALE + table.cpu_free.sum())
    )


def lowers(cpu: float, memory_mb: float, disk_mb: float, work: float) -> bool:
    """Whether allocating a task with these needs and work on a node can only lower
    its score for every task shape and leave it no more room, and keeps a ``tame``
    table tame: each >= 0 and at most ``_MOST`` (free resources go down, running
    and backlog up, so the queue wait, the utilisation and the predicted finish
    only grow, and never overflow)."""
    return all(0.0 <= x <= _MOST for x in (cpu, memory_mb, disk_mb, work))


@dataclass(slots=True)
class Standing:
    """What ``score`` reads of some nodes, for one task shape, that does not move
    with placements: the fixed time (``fixed``), the static cost (``Timing``), and
    the load and node facts the queue wait, utilisation and margin read. Of every
    node (``of``), or of a few rows of that (``take``: the same values)."""

    run: FloatArray
    base_cost: FloatArray
    load: FloatArray
    capacity: FloatArray
    cpus: FloatArray
    slots: FloatArray
    inv_cpus: FloatArray
    widen: FloatArray

    @classmethod
    def of(
        cls,
        facts: NodeFacts,
        table: NodeTable,
        demand: TaskDemand,
        t: Timing,
        run: FloatArray | None = None,
    ) -> Standing:
        """Of every node (``run``: ``fixed`` if the caller has it)."""
        return cls(
            fixed(facts, table, demand) if run is None else run, t.base_cost, table.load,
            facts.capacity, table.cpus, table.slots, facts.inv_cpus, facts.widen,
        )  # fmt: skip

    @classmethod
    def take(
        cls,
        run: FloatArray,
        base_cost: FloatArray,
        facts: NodeFacts,
        table: NodeTable,
        rows: IntArray,
    ) -> Standing:
        """``of`` on ``rows``, given the shape's own ``run`` and ``base_cost`` there."""
        return cls(
            run, base_cost, table.load[rows], facts.capacity[rows], table.cpus[rows],
            table.slots[rows], facts.inv_cpus[rows], facts.widen[rows],
        )  # fmt: skip


def score(
    facts: NodeFacts, table: NodeTable, demand: TaskDemand, t: Timing
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``(score, queue, cost)`` of every node (the caller keeps the candidates).
    Each score depends on its own node only, never on the other candidates."""
    standing = Standing.of(facts, table, demand, t)
    return rate(demand, standing, table.backlog, table.cpu_free, table.running)


def rate(
    demand: TaskDemand,
    s: Standing,
    backlog: FloatArray,
    cpu_free: FloatArray,
    running: FloatArray,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``score`` of the nodes ``s`` holds, given their backlog, free cpus and
    running counts now (the same rows): element by element the same operations,
    so a subset of rows gets the bits the whole column has there."""
    queue = queue_wait(backlog, s.capacity, s.cpus, cpu_free, running, s.slots, demand.cpu)
    finish = s.run + queue
    taken = 1.0 + (demand.cpu - cpu_free) * s.inv_cpus
    cost = s.base_cost + np.minimum(np.maximum(s.load, taken), 1.0) / 4.0
    return _rule(finish, cost, s.widen, demand.deadline_s), queue, cost


def _rule(
    finish: FloatArray, cost: FloatArray, widen: FloatArray, deadline: float | None
) -> FloatArray:
    """The score of a predicted finish and cost (the module docstring's rule); the
    late score is not computed when every node is safe (a lead's best rows often)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if deadline is not None:
            safe = finish * widen <= deadline
            if safe.all():
                return 1.0 - cost  # type: ignore[no-any-return]
            # any positive scale keeps "earliest first"; the deadline (at least 1 s,
            # so that a deadline already passed still orders finishes to 1e-9 s)
            late = -finish / (finish + max(deadline, 1.0))
            return np.where(safe, 1.0 - cost, np.where(np.isfinite(late), late, -1.0))  # type: ignore[no-any-return]
        return 1.0 / (1.0 + finish * (1.0 + COST_WEIGHT * cost))  # type: ignore[no-any-return]


def breakdown(
    facts: NodeFacts,
    table: NodeTable,
    demand: TaskDemand,
    rows: IntArray,
    queue: FloatArray,
    cost: FloatArray,
) -> tuple[tuple[str, ...], list[tuple[float, ...]]]:
    """Names and values of a few candidates' prediction, for the explanation:
    ``PREDICTION_TERMS``, without ``margin_s`` when the task has no deadline."""
    dispatch, transfer, execute, back = _parts(facts, table, demand, rows)
    finish = finish_of(dispatch, transfer, queue, execute, back)
    columns = [dispatch, transfer, queue, execute, back, finish]
    names = PREDICTION_TERMS
    if demand.deadline_s is not None:
        columns.append(demand.deadline_s - finish * facts.widen[rows])
    else:
        names = _NO_MARGIN
    columns.append(cost)
    return names, list(zip(*(c.tolist() for c in columns), strict=True))
