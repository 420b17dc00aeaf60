"""Score terms of the weighted-sum modes (every mode but ``adaptive``, which ranks
by predicted completion time, ``_predict``): named numpy columns over the
candidate nodes, each normalised to [0, 1] (penalties to [-1, 0]), combined by
configurable weights.

Every candidate carries every column (a term that does not apply, or that the mode
switches off, is 0), so explanations line up. The final score is the weighted mean
``sum(w_k * t_k) / sum(w_k)`` over the mode's terms: it stays in [-1, 1] whatever
the weights, which keeps the quantised tie-break rank of ``_select`` exact.

Only ``fit`` depends on free resources; the other terms depend on the task's shape
and the node's telemetry, so they are computed once per shape and reused while
resources move (the pipeline's static half, ``_pipeline.prepare``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from shared.learning import EWMA_ALPHA, LINK_STATE_RISK, ewma
from shared.placement._demand import TaskDemand
from shared.placement._table import LINK_CODES, TIERS, FloatArray, IntArray, NodeTable
from shared.vocab import Level, PlacementMode, Tier

__all__ = [
    "COMPUTE_FIT",
    "DYNAMIC_TERMS",
    "EWMA_ALPHA",
    "LATENCY_FIT",
    "LEVEL_LINK_FACTOR",
    "LINK_RISK_BY_CODE",
    "LINK_STATE_RISK",
    "MODE_TIERS",
    "TERMS",
    "TINY",
    "Weights",
    "ewma",
    "fit_term",
    "resolve_mode",
    "static_terms",
    "update_success",
]

#: Column order of every score breakdown.
TERMS: tuple[str, ...] = (
    "fit",
    "load",
    "success",
    "tier_fit",
    "preference",
    "data",
    "link",
    "energy",
)
#: Terms fed by measurements; ``hybrid_static`` switches them off.
DYNAMIC_TERMS: frozenset[str] = frozenset({"load", "success", "data", "link", "energy"})

#: Tiers each mode may use (intersected with the task's own ``tiers``).
MODE_TIERS: dict[PlacementMode, frozenset[Tier]] = {
    PlacementMode.CLOUD_ONLY: frozenset({Tier.CLOUD}),
    PlacementMode.EDGE_ONLY: frozenset({Tier.DEVICE, Tier.EDGE}),
    PlacementMode.HYBRID_STATIC: frozenset(Tier),
    PlacementMode.HYBRID_DYNAMIC: frozenset(Tier),
    PlacementMode.ADAPTIVE: frozenset(Tier),
}

# Tier factors of a data-aware placement score (docs/placement.md), one per tier of
# Continuum's. They are blended per task by
# its latency sensitivity and compute weight instead of added unnormalised.
COMPUTE_FIT: dict[Tier, float] = {
    Tier.DEVICE: 0.3,
    Tier.EDGE: 0.6,
    Tier.REGIONAL: 0.8,
    Tier.CLOUD: 1.0,
}
LATENCY_FIT: dict[Tier, float] = {
    Tier.DEVICE: 0.8,
    Tier.EDGE: 0.6,
    Tier.REGIONAL: 0.4,
    Tier.CLOUD: 0.2,
}
#: How much a partition during the run hurts, by consistency level: a strong task
#: stalls (its lease runs out), a causal one only delays, an eventual one is hedged.
LEVEL_LINK_FACTOR: dict[Level, float] = {Level.STRONG: 1.0, Level.CAUSAL: 0.5, Level.EVENTUAL: 0.0}
#: ``LINK_STATE_RISK`` indexed by the table's link code.
LINK_RISK_BY_CODE = np.array(
    [LINK_STATE_RISK[s] for s in sorted(LINK_CODES, key=LINK_CODES.get)]  # type: ignore[arg-type]
)
#: Guard for dividing by free resources (a zero-need dimension then gives 0).
TINY = 1e-12


@dataclass(frozen=True, slots=True, kw_only=True)
class Weights:
    """Weight of each term (non-negative). Defaults follow a classic executor
    selection (best fit 0.4, success 0.2, load 0.2; docs/placement.md) with the
    continuum terms added at comparable strength."""

    fit: float = 0.4
    load: float = 0.2
    success: float = 0.2
    tier_fit: float = 0.3
    preference: float = 0.5
    data: float = 0.4
    link: float = 0.5
    energy: float = 0.2

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"weight {f.name} must be finite and >= 0, got {value!r}")

    def normalised(self, mode: PlacementMode) -> dict[str, float]:
        """Term -> weight / (sum of the mode's weights); 0 for terms the mode drops."""
        active = {
            name: getattr(self, name)
            if mode is not PlacementMode.HYBRID_STATIC or name not in DYNAMIC_TERMS
            else 0.0
            for name in TERMS
        }
        total = sum(active.values()) or 1.0
        return {name: w / total for name, w in active.items()}


def resolve_mode(demand: TaskDemand, default: PlacementMode | str) -> PlacementMode:
    """The task's own mode wins; ``None`` in the spec means the controller default."""
    return demand.mode if demand.mode is not None else PlacementMode(default)


def update_success(old: float, succeeded: bool) -> float:
    """Success-rate EWMA after one run: ``0.9 * old + 0.1 * (1 if succeeded else 0)``."""
    return ewma(old, 1.0 if succeeded else 0.0)


def fit_term(
    need: tuple[object, object, object], count: object, free: tuple[object, ...]
) -> FloatArray:
    """Best fit: mean over the demanded dimensions of need / free (1 = fills the node).

    As the tightness ``1 / (1 + (free - need) / need)``, which is need / free.
    ``count`` is the number of dimensions with need > 0 (at least 1). Broadcasts like
    ``first_exhausted``; the operation order is fixed so every path gets the same bits.
    """
    n0, n1, n2 = need
    f0, f1, f2 = free
    return (  # type: ignore[no-any-return]
        np.divide(n0, np.maximum(f0, TINY))
        + np.divide(n1, np.maximum(f1, TINY))
        + np.divide(n2, np.maximum(f2, TINY))
    ) / count


def static_terms(
    table: NodeTable, demand: TaskDemand, mode: PlacementMode, rows: IntArray
) -> FloatArray:
    """All columns but ``fit`` (left 0) for the table rows ``rows``, shape
    ``(len(TERMS), len(rows))``."""
    n = len(rows)
    out = np.zeros((len(TERMS), n), dtype=np.float64)
    tier = table.tier[rows]
    dynamic = mode is not PlacementMode.HYBRID_STATIC
    if dynamic:
        out[1] = 1.0 - np.clip(table.load[rows], 0.0, 1.0)
        out[2] = np.clip(table.success[rows], 0.0, 1.0)
    ls, cw = demand.latency_sensitivity, demand.compute_weight
    if ls + cw > 0:
        per_tier = np.array(
            [(ls * LATENCY_FIT[t] + cw * COMPUTE_FIT[t]) / (ls + cw) for t in TIERS]
        )
        out[3] = per_tier[tier]
    if demand.preferred_tiers:
        order = demand.preferred_tiers
        per_tier = np.array(
            [(len(order) - order.index(t)) / len(order) if t in order else 0.0 for t in TIERS]
        )
        out[4] = per_tier[tier]
    if not dynamic:
        return out
    if demand.data_size_mb > 0:
        # seconds to move the input over the measured uplink, as a share of the run
        bandwidth = table.bandwidth[rows]
        transfer = np.divide(
            demand.data_size_mb * 8.0, bandwidth, out=np.full(n, np.inf), where=bandwidth > 0
        )
        share = np.where(
            np.isinf(transfer), 1.0, transfer / (transfer + max(demand.runtime_s, TINY))
        )
        if demand.data_source is not None:
            share = np.where(table.source_mask(demand.data_source)[rows], 0.0, share)
        out[5] = -share
    factor = LEVEL_LINK_FACTOR[demand.level]
    if factor > 0:
        # P(no partition during the run) = exp(-rate * runtime); the link's grade adds risk
        survive = np.exp(-table.partition_rate[rows] * (demand.runtime_s / 3600.0)) * (
            1.0 - LINK_RISK_BY_CODE[table.link[rows]]
        )
        out[6] = -factor * (1.0 - survive)
    battery = table.battery[rows]
    # a battery node always costs something; an empty one costs most
    out[7] = np.where(np.isnan(battery), 0.0, -(1.0 - 0.5 * np.clip(battery, 0.0, 100.0) / 100.0))
    return out
