"""place_batch: the same decisions as place + allocate one task at a time."""

from __future__ import annotations

import math
import random
from unittest import mock

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.placement import NodeTable, NodeView, TaskDemand, _pipeline, place, place_batch
from shared.vocab import Level, LinkState, PlacementMode, Tier


def _views(rng: random.Random, n: int) -> list[NodeView]:
    return [
        NodeView(
            node_id=f"n{i}",
            tier=rng.choice(list(Tier)),
            labels={"zone": rng.choice("ab")},
            cpus=rng.choice([1, 2, 4]),
            memory_mb=rng.choice([512, 2048]),
            disk_mb=rng.choice([1000.0, float("inf")]),
            rtt_ms=rng.choice([5.0, 80.0, 250.0]),
            load=rng.choice([0.0, 0.5]),
            link_state=rng.choice([LinkState.HEALTHY] * 4 + [LinkState.CRITICAL]),
            battery_pct=rng.choice([None, None, 30.0]),
            partition_rate_per_h=rng.choice([0.0, 2.0]),
        )
        for i in range(n)
    ]


def _demands(rng: random.Random, n: int) -> list[TaskDemand]:
    return [
        TaskDemand(
            task_id=f"t{i}",
            cpu=rng.choice([0.25, 0.5, 1.0]),
            memory_mb=rng.choice([64, 256]),
            disk_mb=rng.choice([0.0, 100.0]),
            tiers=frozenset(rng.sample(list(Tier), 3)),
            labels=rng.choice([(), (("zone", "a"),)]),
            max_latency_ms=rng.choice([None, 100.0]),
            level=rng.choice(list(Level)),
            mode=rng.choice([None, PlacementMode.EDGE_ONLY]),
            work_s=rng.choice([None, 1.0, 30.0]),
            deadline_s=rng.choice([None, 2.0, 60.0]),
        )
        for i in range(n)
    ]


def _sequential(table: NodeTable, demands: list[TaskDemand], **kw: object) -> list[object]:
    out = []
    for k, d in enumerate(demands):
        decision = place(table, d, epoch=k % 3, **kw)  # type: ignore[arg-type]
        if decision.node_id is not None:
            table.allocate(decision.node_id, d.cpu, d.memory_mb, d.disk_mb, work_s=d.work)
        out.append(decision)
    return out


@settings(max_examples=20, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(1, 60),
    st.integers(1, 300),
    st.sampled_from([PlacementMode.HYBRID_DYNAMIC, PlacementMode.ADAPTIVE]),
)
def test_batch_equals_place_then_allocate(
    seed: int, nodes: int, tasks: int, mode: PlacementMode
) -> None:
    """Also where the batch reuses the decision of a task no node could take for
    the tasks after it that the filters and exhaustion read alike (many of the
    later tasks here: the nodes fill up)."""
    rng = random.Random(seed)
    views, demands = _views(rng, nodes), _demands(rng, tasks)
    kw = {"mode": mode, "seed": seed % 7}
    t1, t2 = NodeTable.from_views(views), NodeTable.from_views(views)
    expected = _sequential(t1, demands, **kw)
    got = place_batch(t2, demands, epochs=[k % 3 for k in range(tasks)], **kw)  # type: ignore[arg-type]
    assert got == expected
    assert t1.cpu_free.tolist() == t2.cpu_free.tolist()
    assert t1.running.tolist() == t2.running.tolist()
    assert t1.backlog.tolist() == t2.backlog.tolist()


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(1, 60),
    st.integers(1, 300),
    st.sampled_from([1, 6, 10]),
)
def test_leads_of_a_few_rows_give_the_decisions_of_every_row(
    seed: int, nodes: int, tasks: int, lead_rows: int
) -> None:
    """The adaptive mode's leads (``_pipeline._predicted``) cut to a few rows, so
    that most decisions are settled on them or fall back to every row: decisions
    and explanations are those of ``place`` on the table as it stands."""
    rng = random.Random(seed)
    views, demands = _views(rng, nodes), _demands(rng, tasks)
    kw = {"mode": PlacementMode.ADAPTIVE, "seed": seed % 7}
    t1, t2 = NodeTable.from_views(views), NodeTable.from_views(views)
    expected = _sequential(t1, demands, **kw)
    with mock.patch.object(_pipeline, "LEAD_ROWS", lead_rows):
        got = place_batch(t2, demands, epochs=[k % 3 for k in range(tasks)], **kw)  # type: ignore[arg-type]
    assert got == expected
    assert t1.backlog.tolist() == t2.backlog.tolist()


def test_leads_are_dropped_when_an_allocation_could_raise_a_score() -> None:
    """Negative work (a backlog going down) and a backlog that is not a number break
    what a lead relies on; the batch then scores every row, as ``place`` does."""
    rng = random.Random(5)
    views = _views(rng, 40)
    demands = [
        TaskDemand(task_id=f"t{i}", cpu=0.25, work_s=-30.0 if i % 7 == 3 else 5.0)
        for i in range(120)
    ]
    for poison in (None, math.nan):
        t1, t2 = NodeTable.from_views(views), NodeTable.from_views(views)
        if poison is not None:
            t1.backlog[3] = t2.backlog[3] = poison
        # a NaN score ranks as the exact path casts it, with numpy's warning
        with np.errstate(invalid="ignore"), mock.patch.object(_pipeline, "LEAD_ROWS", 6):
            expected = _sequential(t1, demands, mode=PlacementMode.ADAPTIVE)
            got = place_batch(
                t2, demands, mode=PlacementMode.ADAPTIVE, epochs=[k % 3 for k in range(120)]
            )
        assert repr(got) == repr(expected)  # NaN scores, equal but never ==


def test_a_node_owing_disk_is_short_of_it_even_for_tasks_needing_none() -> None:
    """A node whose free disk went below 0 (the controller allocated more than it had)
    is exhausted for every task, in a batch as one at a time."""
    views = [NodeView(node_id=f"n{i}", tier="edge", cpus=4, disk_mb=100.0) for i in range(3)]
    demands = [TaskDemand(task_id=f"t{i}", cpu=0.5) for i in range(4)]
    t1, t2 = NodeTable.from_views(views), NodeTable.from_views(views)
    for t in (t1, t2):
        t.allocate("n1", 0.0, 0.0, 150.0)
    expected = _sequential(t1, demands, mode=PlacementMode.ADAPTIVE)
    got = place_batch(t2, demands, mode=PlacementMode.ADAPTIVE, epochs=[k % 3 for k in range(4)])
    assert got == expected
    assert all(d.explanation.exhausted == {"disk": 1} for d in got)
    assert all(d.node_id != "n1" for d in got)


def test_a_batch_on_a_table_without_nodes_places_nothing() -> None:
    for mode in (PlacementMode.ADAPTIVE, PlacementMode.HYBRID_DYNAMIC):
        decisions = place_batch(NodeTable([]), [TaskDemand(task_id="t")] * 2, mode=mode)
        assert [d.node_id for d in decisions] == [None, None]
        assert decisions[0].explanation.evaluated == 0


def test_batch_fills_nodes_then_reports_exhaustion() -> None:
    table = NodeTable.from_views([NodeView(node_id="a", tier="edge", cpus=1, memory_mb=1024)])
    decisions = place_batch(table, [TaskDemand(task_id=f"t{i}", cpu=0.5) for i in range(3)])
    assert [d.node_id for d in decisions] == ["a", "a", None]
    assert decisions[2].explanation.exhausted == {"cpu": 1}
