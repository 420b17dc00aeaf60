"""The placement pipeline, assembled in one place: feasibility filters -> score
terms over all feasible nodes at once -> selection with ties spread.

A decision is split in two halves (``Shape``): the *static* half depends only on
the task's shape and the nodes' state (filters before exhaustion, every term but
``fit``); the *dynamic* half (exhaustion and ``fit``) depends on free resources,
which move with every placement. ``place`` runs both for one task;
``place_batch`` computes the static half once per distinct shape and keeps the
dynamic half current as it places (see ``_batch``).

Modes (DESIGN §6): ``cloud_only`` and ``edge_only`` restrict tiers; the
``hybrid_static`` mode scores only the task's declared preferences (tier fit,
preference order, best fit), no measured terms; ``hybrid_dynamic`` and
``adaptive`` use every term; ``adaptive`` additionally arms the re-placement
triggers (``_triggers``), which the caller evaluates.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from shared.placement._demand import TaskDemand
from shared.placement._explain import TOP_CANDIDATES, Candidate, Decision, Explanation
from shared.placement._filters import FILTERS, Counts, dimension_counts, first_exhausted
from shared.placement._scoring import (
    MODE_TIERS,
    TERMS,
    Weights,
    fit_term,
    resolve_mode,
    static_terms,
)
from shared.placement._select import order_by_rank, quantise, ranks, tie_seed
from shared.placement._table import BoolArray, FloatArray, NodeTable
from shared.vocab import PlacementMode

__all__ = ["DEFAULT_MODE", "DEFAULT_WEIGHTS", "Shape", "explain", "place", "prepare"]

DEFAULT_MODE = PlacementMode.HYBRID_DYNAMIC
DEFAULT_WEIGHTS = Weights()


@dataclass(slots=True)
class Shape:
    """The static half of placing one task shape on one table.

    ``mask``: nodes past every static filter; ``filtered``: drops by reason;
    ``terms``: every column (``fit`` row left 0); ``static``: the weighted sum of
    the non-``fit`` terms; ``need``/``count``/``wfit``: what the dynamic half needs.
    """

    demand: TaskDemand
    mode: PlacementMode
    mask: BoolArray
    filtered: Counts
    terms: FloatArray
    static: FloatArray
    need: tuple[float, float, float]
    count: float
    wfit: float


def prepare(table: NodeTable, demand: TaskDemand, mode: PlacementMode, weights: Weights) -> Shape:
    """Run the static filters and terms for ``demand`` under an already resolved mode."""
    allowed = MODE_TIERS[mode]
    effective = demand if demand.tiers <= allowed else replace(demand, tiers=demand.tiers & allowed)
    mask = np.ones(len(table), dtype=np.bool_)
    filtered: Counts = {}
    for stage in FILTERS:
        mask, dropped = stage(table, effective, mask)
        filtered.update(dropped)
    terms = static_terms(table, effective, mode)
    w = weights.normalised(mode)
    static = np.zeros(len(table), dtype=np.float64)
    for row, name in enumerate(TERMS):
        if name != "fit" and w[name]:
            static += w[name] * terms[row]
    need = (demand.cpu, demand.memory_mb, demand.disk_mb)
    count = float(max(1, sum(1 for n in need if n > 0)))
    return Shape(effective, mode, mask, filtered, terms, static, need, count, w["fit"])


def explain(
    table: NodeTable,
    shape: Shape,
    top: npt.NDArray[np.intp],
    fit: FloatArray,
    total: FloatArray,
    exhausted: Counts,
) -> Decision:
    """Build the decision from the ranked rows ``top`` (best first) and their
    ``fit``/``total`` values."""
    values = shape.terms[:, top]
    values[0] = fit
    ids = table.ids
    candidates = tuple(
        Candidate(ids[i], s, tuple(v))
        for i, s, v in zip(top.tolist(), total.tolist(), values.T.tolist(), strict=True)
    )
    chosen = candidates[0].node_id if candidates else None
    explanation = Explanation(
        mode=shape.mode,
        evaluated=len(table),
        filtered=shape.filtered,
        exhausted=exhausted,
        candidates=candidates,
        chosen=chosen,
    )
    return Decision(chosen, explanation)


def place(
    table: NodeTable,
    demand: TaskDemand,
    *,
    mode: PlacementMode | str = DEFAULT_MODE,
    weights: Weights = DEFAULT_WEIGHTS,
    seed: int = 0,
    epoch: int = 0,
) -> Decision:
    """Place one task. ``mode`` is the controller's default; the task's own
    ``placement.mode`` wins. Ties are broken by ``tie_seed(task_id, epoch, seed)``.
    Does not touch the table: the caller ``allocate`` s on the chosen node."""
    shape = prepare(table, demand, resolve_mode(demand, mode), weights)
    free = (table.cpu_free, table.memory_free, table.disk_free)
    dims = first_exhausted(shape.need, free)
    feasible = shape.mask & (dims < 0)
    fit = fit_term(shape.need, shape.count, free)
    total = shape.static + shape.wfit * fit
    rows = np.flatnonzero(feasible)
    rank = ranks(quantise(total[rows]), table.hash[rows], tie_seed(demand.task_id, epoch, seed))
    top = rows[order_by_rank(rows, rank, TOP_CANDIDATES)]
    return explain(table, shape, top, fit[top], total[top], dimension_counts(dims, shape.mask))
