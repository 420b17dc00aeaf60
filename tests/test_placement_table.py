"""NodeTable: columnar build, in-place updates, lookups."""

from __future__ import annotations

import math

import pytest

from shared.placement import NodeTable, NodeView, node_hash
from shared.vocab import LinkState, Tier


def _views() -> list[NodeView]:
    return [
        NodeView(node_id="b", tier=Tier.EDGE, cpus=2, memory_mb=512, labels={"zone": "x"}),
        NodeView(node_id="a", tier="cloud", cpus=8, memory_mb=4096, battery_pct=40.0),
        NodeView(node_id="c", tier=Tier.DEVICE, data_sources=frozenset({"cam-1"})),
    ]


def test_rows_sorted_by_id_whatever_the_input_order() -> None:
    t1 = NodeTable.from_views(_views())
    t2 = NodeTable.from_views(reversed(_views()))
    assert t1.ids == t2.ids == ["a", "b", "c"]
    assert t1.tier.tolist() == [Tier.CLOUD.rank, Tier.EDGE.rank, Tier.DEVICE.rank]
    assert t1.hash.tolist() == [node_hash(i) for i in "abc"]


def test_free_defaults_to_capacity_and_views_round_trip() -> None:
    t = NodeTable.from_views(_views())
    assert t.cpu_free.tolist() == [8.0, 2.0, 1.0]
    assert math.isinf(t.disk_free[0])
    assert math.isnan(t.battery[1]) and t.battery[0] == 40.0
    assert {v.node_id: v for v in t.views()} == {v.node_id: v for v in _views()}


def test_duplicate_ids_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        NodeTable.from_views([NodeView(node_id="a", tier="edge")] * 2)


def test_allocate_and_release_in_place() -> None:
    t = NodeTable.from_views(_views())
    t.allocate("b", 0.5, 100, 10)
    t.allocate(1, 0.5, 100)
    assert (t.cpu_free[1], t.memory_free[1], t.running[1]) == (1.0, 312.0, 2.0)
    t.release("b", 5.0, 1000)
    t.release("b", 0.0, 0)
    t.release("b", 0.0, 0)
    assert (t.cpu_free[1], t.memory_free[1], t.running[1]) == (2.0, 512.0, 0.0)


def test_allocate_returns_what_the_row_holds_after_it() -> None:
    """What a caller keeping per-row state reads instead of the columns (the
    simulator's adaptive path): free cpu and memory, running count, backlog."""
    t = NodeTable.from_views(_views())
    for work in (0.0, 1.5):
        got = t.allocate("a", 0.25, 64.0, work_s=work)
        assert got == (
            t.cpu_free.item(0),
            t.memory_free.item(0),
            t.running.item(0),
            t.backlog.item(0),
        )
        assert all(type(x) is float for x in got)
    assert got == (7.5, 3968.0, 2.0, 1.5)


def test_update_telemetry_columns() -> None:
    t = NodeTable.from_views(_views())
    t.update("a", load=0.7, link_state="degraded", battery_pct=None, draining=True)
    view = t.view("a")
    assert view.load == 0.7 and view.link_state is LinkState.DEGRADED
    assert view.battery_pct is None and view.draining
    with pytest.raises(ValueError, match="upsert"):
        t.update("a", tier="edge")


def test_upsert_and_remove_rebuild() -> None:
    t = NodeTable.from_views(_views())
    t2 = t.upsert(NodeView(node_id="aa", tier="regional", labels={"zone": "x"}))
    assert t2.ids == ["a", "aa", "b", "c"]
    assert t2.label_mask("zone", "x").tolist() == [False, True, True, False]
    t3 = t2.upsert(NodeView(node_id="b", tier="cloud"))
    assert t3.view("b").tier is Tier.CLOUD and len(t3) == 4
    assert t3.remove("aa").ids == ["a", "b", "c"]


def test_label_and_source_masks() -> None:
    t = NodeTable.from_views(_views())
    assert t.label_mask("zone", "x").tolist() == [False, True, False]
    assert t.label_mask("zone", "y").tolist() == [False, False, False]
    assert t.source_mask("cam-1").tolist() == [False, False, True]
    assert t.source_mask("a").tolist() == [True, False, False]


def test_tier_and_size_masks_are_cached_and_the_size_masks_bounded() -> None:
    t = NodeTable.from_views(_views())  # rows a (cloud, 8 cpus), b (edge, 2), c (device, 1)
    edge_or_device = frozenset({Tier.EDGE, Tier.DEVICE})
    assert t.tier_mask(edge_or_device).tolist() == [False, True, True]
    assert t.tier_mask(edge_or_device) is t.tier_mask(frozenset({Tier.DEVICE, Tier.EDGE}))
    assert t.size_mask(2.0, 512.0, 0.0).tolist() == [True, True, False]
    assert t.size_mask(2.0, 512.0, 0.0) is t.size_mask(2.0, 512.0, 0.0)
    for cpu in range(1000):
        t.size_mask(float(cpu), 0.0, 0.0)
    assert len(t._size_masks) <= 256
    assert t.size_mask(2.0, 512.0, 0.0).tolist() == [True, True, False]
