"""The shape cache is bounded in bytes, evicts the least recently used, and never
changes a decision."""

from __future__ import annotations

import random

from shared.placement import NodeTable, NodeView, ShapeCache, TaskDemand, place_batch
from shared.vocab import PlacementMode, Tier


def test_lru_keeps_within_its_byte_budget() -> None:
    cache: ShapeCache[str] = ShapeCache(100)
    cache.put("a", "A", 40)
    cache.put("b", "B", 40)
    assert cache.get("a") == "A"  # a is now the most recent
    cache.put("c", "C", 40)  # evicts b, the least recently used
    assert cache.get("b") is None and cache.get("a") == "A" and cache.get("c") == "C"
    assert cache.bytes == 80 <= cache.budget_bytes
    cache.put("huge", "H", 1000)  # larger than the budget: not kept, nothing evicted
    assert cache.get("huge") is None and len(cache) == 2
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0


def test_a_tiny_cache_gives_the_same_decisions_as_a_roomy_one() -> None:
    rng = random.Random(7)
    views = [
        NodeView(node_id=f"n{i}", tier=rng.choice(list(Tier)), cpus=4, rtt_ms=rng.uniform(1, 200))
        for i in range(50)
    ]
    work = [
        TaskDemand(task_id=f"t{i}", cpu=0.5, work_s=float(1 + i % 40), deadline_s=30.0)
        for i in range(200)
    ]
    for mode in (PlacementMode.ADAPTIVE, PlacementMode.HYBRID_DYNAMIC):
        tiny: ShapeCache[object] = ShapeCache(2_000)
        got = place_batch(NodeTable(views), work, mode=mode, cache=tiny)  # type: ignore[arg-type]
        assert got == place_batch(NodeTable(views), work, mode=mode)
        assert tiny.bytes <= 2_000 and tiny.misses > 40


def test_without_explanations_the_same_nodes_are_chosen() -> None:
    rng = random.Random(3)
    views = [
        NodeView(node_id=f"n{i}", tier=rng.choice(list(Tier)), cpus=rng.choice([1, 2]))
        for i in range(30)
    ]
    work = [TaskDemand(task_id=f"t{i}", cpu=0.5, work_s=0.2, deadline_s=1.0) for i in range(90)]
    for mode in (PlacementMode.ADAPTIVE, PlacementMode.HYBRID_DYNAMIC):
        full = place_batch(NodeTable(views), work, mode=mode)
        bare = place_batch(NodeTable(views), work, mode=mode, explain=False)
        assert [d.node_id for d in bare] == [d.node_id for d in full]
        assert all(d.explanation.candidates == () for d in bare)
        assert [d.explanation.exhausted for d in bare] == [d.explanation.exhausted for d in full]
