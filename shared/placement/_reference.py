"""The straightforward per-node Python loop: same filters, terms and selection as the
vectorised pipeline, written node by node with ``math``.

It exists as the benchmark's baseline and as the tests' oracle (the vectorised and
batch paths must choose the same nodes, with scores equal within 1e-9). It shares
only constants and the tie-break hash with them, never their numpy code.
"""

from __future__ import annotations

import math

from shared.placement._demand import TaskDemand
from shared.placement._explain import TOP_CANDIDATES, Candidate, Decision, Explanation
from shared.placement._filters import DIMENSIONS
from shared.placement._scoring import (
    COMPUTE_FIT,
    LATENCY_FIT,
    LEVEL_LINK_FACTOR,
    LINK_STATE_RISK,
    MODE_TIERS,
    TERMS,
    TINY,
    Weights,
    resolve_mode,
)
from shared.placement._select import SCALE, tie_seed
from shared.placement._table import LINK_CODES, TIERS, NodeTable
from shared.vocab import Level, LinkState, PlacementMode

__all__ = ["place_reference"]

_RISK = {LINK_CODES[s]: LINK_STATE_RISK[s] for s in LinkState}


def place_reference(
    table: NodeTable,
    demand: TaskDemand,
    *,
    mode: PlacementMode | str = PlacementMode.HYBRID_DYNAMIC,
    weights: Weights | None = None,
    seed: int = 0,
    epoch: int = 0,
) -> Decision:
    """``place``, one node at a time."""
    mode = resolve_mode(demand, mode)
    w = (weights or Weights()).normalised(mode)
    dynamic = mode is not PlacementMode.HYBRID_STATIC
    allowed = demand.tiers & MODE_TIERS[mode]
    tie = tie_seed(demand.task_id, epoch, seed)
    need = (demand.cpu, demand.memory_mb, demand.disk_mb)
    count = float(max(1, sum(1 for n in need if n > 0)))
    ls, cw = demand.latency_sensitivity, demand.compute_weight
    order = demand.preferred_tiers
    link_factor = LEVEL_LINK_FACTOR[demand.level]
    filtered: dict[str, int] = {}
    exhausted: dict[str, int] = {}
    scored: list[tuple[int, int, float, tuple[float, ...]]] = []
    # plain Python lists, so the loop below pays for Python arithmetic, not numpy scalars
    cols = (
        table.tier, table.link, table.draining, table.rtt_ms, table.cpus, table.memory,
        table.disk, table.cpu_free, table.memory_free, table.disk_free, table.load,
        table.success, table.bandwidth, table.partition_rate, table.battery, table.hash,
    )  # fmt: skip
    rows = zip(table.ids, *(c.tolist() for c in cols), strict=True)
    for i, row in enumerate(rows):
        node_id, tier_rank, link, draining, rtt, cpus, memory, disk = row[:8]
        cpu_free, memory_free, disk_free, load, success, bandwidth, rate, battery, h = row[8:]
        tier = TIERS[tier_rank]
        capacity = (cpus, memory, disk)
        free = (cpu_free, memory_free, disk_free)
        labels = table.labels_of(i)
        reason = None
        if draining:
            reason = "draining"
        elif tier not in allowed:
            reason = "tier"
        elif link >= LINK_CODES[LinkState.PARTITIONED]:
            reason = "link_down"
        elif demand.level is Level.STRONG and link >= LINK_CODES[LinkState.CRITICAL]:
            reason = "link_critical"
        elif demand.max_latency_ms is not None and not rtt <= demand.max_latency_ms:
            reason = "latency"
        elif node_id in demand.exclude:
            reason = "excluded"
        elif any(labels.get(k) != v for k, v in demand.labels):
            reason = "labels"
        elif any(c < n for c, n in zip(capacity, need, strict=True)):
            reason = "too_small"
        if reason is not None:
            filtered[reason] = filtered.get(reason, 0) + 1
            continue
        short = next((d for d, n, f in zip(DIMENSIONS, need, free, strict=True) if n > f), None)
        if short is not None:
            exhausted[short] = exhausted.get(short, 0) + 1
            continue

        fit = sum(n / max(f, TINY) for n, f in zip(need, free, strict=True)) / count
        load = 1.0 - min(max(load, 0.0), 1.0) if dynamic else 0.0
        success = min(max(success, 0.0), 1.0) if dynamic else 0.0
        tier_fit = (
            (ls * LATENCY_FIT[tier] + cw * COMPUTE_FIT[tier]) / (ls + cw) if ls + cw > 0 else 0.0
        )
        preference = (len(order) - order.index(tier)) / len(order) if tier in order else 0.0
        data = link_term = energy = 0.0
        if dynamic:
            if demand.data_size_mb > 0:
                source = demand.data_source
                if source is not None and (node_id == source or source in table.sources_of(i)):
                    data = 0.0
                elif bandwidth > 0:
                    transfer = demand.data_size_mb * 8.0 / bandwidth
                    data = -(transfer / (transfer + max(demand.runtime_s, TINY)))
                else:
                    data = -1.0
            if link_factor > 0:
                survive = math.exp(-rate * (demand.runtime_s / 3600.0)) * (1.0 - _RISK[link])
                link_term = -link_factor * (1.0 - survive)
            if not math.isnan(battery):
                energy = -(1.0 - 0.5 * min(max(battery, 0.0), 100.0) / 100.0)
        values = (fit, load, success, tier_fit, preference, data, link_term, energy)
        static = 0.0
        for name, value in zip(TERMS[1:], values[1:], strict=True):
            if w[name]:
                static += w[name] * value
        total = static + w["fit"] * fit
        key = h ^ tie
        rank = round(total * SCALE) * (1 << 32) + (0xFFFFFFFF - key)
        scored.append((rank, i, total, values))
    scored.sort(key=lambda r: (-r[0], r[1]))
    candidates = tuple(
        Candidate(table.ids[i], total, values) for _, i, total, values in scored[:TOP_CANDIDATES]
    )
    chosen = candidates[0].node_id if candidates else None
    explanation = Explanation(
        mode=mode,
        evaluated=len(table),
        filtered=filtered,
        exhausted=exhausted,
        candidates=candidates,
        chosen=chosen,
    )
    return Decision(chosen, explanation)
