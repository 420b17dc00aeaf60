"""Placement throughput: 10,000 tasks onto 5,000 nodes (goal ≥ 20,000 placements/s and
≥ 10x the per-node Python reference loop, with the same answers).

Three paths place the same seeded workload on copies of the same table, each task
followed by the allocation of its node, as the controller does:

- ``place_batch`` (what the controller's scheduler calls): the measured figure;
- ``place`` one task at a time (the vectorised single-task path), for context;
- ``place_reference`` (``shared/placement/_reference.py``), a straightforward loop
  over nodes in Python: the baseline. It is too slow to run 10,000 tasks inside the
  bench's time budget, so it runs the first ``REFERENCE_TASKS`` tasks, and both
  other paths must give exactly its decisions (node, candidates, scores) there.

The workload mixes the constraint kinds the controller sees (tiers, labels, latency
bounds, levels, resources) over a fixed set of task shapes; node attributes are
random but seeded. Best of ``RUNS`` for the batch path (a shared machine is noisy).
"""

from __future__ import annotations

import random
import time

from _report import emit

from shared.placement import (
    NodeTable,
    NodeView,
    TaskDemand,
    Weights,
    place,
    place_batch,
    place_reference,
)
from shared.vocab import Level, LinkState, PlacementMode, Tier

NODES = 5_000
TASKS = 10_000
REFERENCE_TASKS = 200
RUNS = 3
SEED = 20_26
MODE = PlacementMode.ADAPTIVE


def nodes(rng: random.Random) -> list[NodeView]:
    tiers = [Tier.DEVICE, Tier.EDGE, Tier.EDGE, Tier.REGIONAL, Tier.CLOUD]
    links = [LinkState.HEALTHY] * 8 + [LinkState.DEGRADED, LinkState.CRITICAL]
    out = []
    for i in range(NODES):
        tier = rng.choice(tiers)
        cpus = {Tier.DEVICE: 2, Tier.EDGE: 4, Tier.REGIONAL: 16, Tier.CLOUD: 64}[tier]
        out.append(
            NodeView(
                node_id=f"n{i:05d}",
                tier=tier,
                labels={"zone": rng.choice("abcd"), "gpu": rng.choice(["yes", "no", "no"])},
                cpus=cpus,
                memory_mb=cpus * 2048,
                load=rng.random(),
                success_ewma=rng.uniform(0.8, 1.0),
                rtt_ms=rng.uniform(1, 250),
                bandwidth_mbps=rng.choice([10.0, 100.0, 1000.0]),
                link_state=rng.choice(links),
                battery_pct=rng.choice([None, None, None, rng.uniform(5, 100)]),
                partition_rate_per_h=rng.choice([0.0, 0.0, 0.5, 3.0]),
            )
        )
    return out


def demands(rng: random.Random) -> list[TaskDemand]:
    shapes = [
        {"cpu": 0.5, "memory_mb": 256},
        {"cpu": 1.0, "memory_mb": 512, "tiers": [Tier.EDGE, Tier.REGIONAL]},
        {"cpu": 0.25, "memory_mb": 64, "labels": (("zone", "a"),), "level": Level.EVENTUAL},
        {"cpu": 2.0, "memory_mb": 2048, "level": Level.STRONG, "max_latency_ms": 100.0},
        {"cpu": 4.0, "memory_mb": 8192, "tiers": [Tier.CLOUD], "data_size_mb": 500.0},
        {
            "cpu": 1.0,
            "memory_mb": 1024,
            "labels": (("gpu", "yes"),),
            "preferred_tiers": [Tier.EDGE],
        },
    ]
    return [TaskDemand(task_id=f"t{i:05d}", **rng.choice(shapes)) for i in range(TASKS)]  # type: ignore[arg-type]


def sequential(table: NodeTable, work: list[TaskDemand], fn, weights: Weights) -> list[object]:  # type: ignore[no-untyped-def]
    out = []
    for d in work:
        decision = fn(table, d, mode=MODE, weights=weights, seed=SEED)
        if decision.node_id is not None:
            table.allocate(decision.node_id, d.cpu, d.memory_mb, d.disk_mb)
        out.append(decision)
    return out


def main() -> None:
    rng = random.Random(SEED)
    views, work = nodes(rng), demands(rng)
    weights = Weights()

    best = 0.0
    batch: list[object] = []
    for _ in range(RUNS):
        table = NodeTable.from_views(views)
        started = time.perf_counter()
        batch = place_batch(table, work, mode=MODE, weights=weights, seed=SEED)  # type: ignore[assignment]
        best = max(best, TASKS / (time.perf_counter() - started))
    placed = sum(1 for d in batch if d.node_id is not None)  # type: ignore[attr-defined]

    table = NodeTable.from_views(views)
    started = time.perf_counter()
    single = sequential(table, work[:2_000], place, weights)
    single_rate = len(single) / (time.perf_counter() - started)

    table = NodeTable.from_views(views)
    started = time.perf_counter()
    reference = sequential(table, work[:REFERENCE_TASKS], place_reference, weights)
    reference_rate = REFERENCE_TASKS / (time.perf_counter() - started)

    same = batch[:REFERENCE_TASKS] == reference and single[:REFERENCE_TASKS] == reference
    same_single = batch[: len(single)] == single
    if not (same and same_single):
        raise SystemExit("placement paths disagree: the benchmark's figures would be meaningless")
    note = (
        f"{TASKS} tasks on {NODES} nodes, {placed} placed, best of {RUNS}; "
        f"same decisions as place() on {len(single)} and as the reference on {REFERENCE_TASKS}"
    )
    emit(
        "placement throughput (place_batch)",
        measured=best,
        unit="placements/s",
        goal=20_000,
        baseline=reference_rate,
        baseline_name="per-node Python loop (place_reference)",
        note=note,
    )
    emit(
        "placement speed-up over the per-node Python loop",
        measured=best / reference_rate,
        unit="x",
        goal=10,
        note="same run, same answers",
    )
    emit(
        "single-task vectorised place() (context)",
        measured=single_rate,
        unit="placements/s",
        baseline=reference_rate,
        baseline_name="per-node Python loop (place_reference)",
        note="one numpy pipeline per task: what place_batch avoids",
    )


if __name__ == "__main__":
    main()
