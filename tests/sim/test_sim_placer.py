"""The simulator's batch path chooses exactly what ``shared.placement.place`` would."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.placement import (
    DEFAULT_WEIGHTS,
    PREDICTED_MODES,
    NodeTable,
    NodeView,
    TaskDemand,
    place,
    place_batch,
    prepare,
)
from shared.placement._predict import NodeFacts
from shared.vocab import Level, LinkState, PlacementMode, Tier
from simulations.sim.placer import ShapeCache, place_many
from simulations.sim.predicted import PredictedState, place_predicted
from simulations.sim.rows import Rows


def _views(rng: random.Random, n: int) -> list[NodeView]:
    views = []
    for i in range(n):
        tier = rng.choice(list(Tier))
        cpus = rng.choice([1.0, 2.0, 4.0, 8.0])
        views.append(
            NodeView(
                node_id=f"n{i:03d}",
                tier=tier,
                cpus=cpus,
                memory_mb=rng.choice([512.0, 2048.0, 8192.0]),
                load=round(rng.random(), 2),
                success_ewma=round(rng.uniform(0.5, 1.0), 2),
                rtt_ms=rng.uniform(1, 300),
                bandwidth_mbps=rng.choice([10.0, 100.0, 1000.0]),
                link_state=rng.choice(
                    [LinkState.HEALTHY] * 4 + [LinkState.DEGRADED, LinkState.CRITICAL]
                ),
                partition_rate_per_h=rng.choice([0.0, 0.0, 2.0]),
                battery_pct=rng.choice([None, None, 40.0]),
            )
        )
    return views


WEIGHTED = [m for m in PlacementMode if m not in PREDICTED_MODES]


@pytest.mark.parametrize("logged", [False, True])
@pytest.mark.parametrize("mode", WEIGHTED)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_place_many_matches_place_then_allocate(
    mode: PlacementMode, seed: int, logged: bool
) -> None:
    rng = random.Random(seed)
    views = _views(rng, 40)
    demand = TaskDemand(
        task_id="shape",
        cpu=rng.choice([0.5, 1.0]),
        memory_mb=256.0,
        max_latency_ms=rng.choice([None, 150.0]),
        data_size_mb=rng.choice([0.0, 5.0]),
        level=rng.choice(list(Level)),
    )
    ids = [f"t{k}" for k in range(60)]
    epochs = [1 + k % 3 for k in range(60)]

    expected_table = NodeTable(views)
    expected = []
    for tid, epoch in zip(ids, epochs, strict=True):
        d = TaskDemand(**{**_fields(demand), "task_id": tid})
        decision = place(expected_table, d, mode=mode, seed=seed, epoch=epoch)
        expected.append(decision.node_id)
        if decision.node_id is not None:
            expected_table.allocate(decision.node_id, d.cpu, d.memory_mb, d.disk_mb)

    table = NodeTable(views)
    cache = ShapeCache()
    log: list[int] | None = [] if logged else None
    mirror = Rows(table) if logged else None  # a logged state reads the table's shared Rows
    got: list[str | None] = []
    # in three calls, as the simulator does across ticks (state carried over)
    for lo, hi in ((0, 10), (10, 25), (25, 60)):
        state = cache.get("site", 0, table, demand, mode, log, mirror)
        rows = place_many(table, state, ids[lo:hi], epochs[lo:hi], seed=seed)
        got += [table.ids[r] for r in rows]
        got += [None] * (hi - lo - len(rows))  # the refused suffix
    assert got == expected
    assert cache.prepared == 1

    batch_table = NodeTable(views)
    demands = [TaskDemand(**{**_fields(demand), "task_id": t}) for t in ids]
    shared = place_batch(batch_table, demands, mode=mode, seed=seed, epochs=epochs)
    assert [d.node_id for d in shared] == expected


@pytest.mark.parametrize("logged", [False, True])
def test_free_resources_moved_outside_are_picked_up(logged: bool) -> None:
    """A release between two calls (another site freed a shared node) is seen:
    compared against the snapshot, or read from the caller's log."""
    views = [NodeView(node_id=f"n{i}", tier=Tier.EDGE, cpus=1.0) for i in range(3)]
    table = NodeTable(views)
    mirror = Rows(table)
    demand = TaskDemand(task_id="x", cpu=1.0, memory_mb=1.0)
    cache = ShapeCache()
    log: list[int] | None = [] if logged else None
    mode = PlacementMode.HYBRID_DYNAMIC
    state = cache.get(0, 0, table, demand, mode, log, mirror)
    rows = place_many(table, state, ["a", "b", "c", "d"], [1, 1, 1, 1])
    assert len(rows) == 3  # "d" finds no room
    table.release(rows[0], 1.0, 1.0)
    if log is not None:  # the caller logs the row and reads it back into the lists
        log.append(rows[0])
        mirror.reread(rows[0])
    state = cache.get(0, 0, table, demand, mode, log, mirror)
    assert place_many(table, state, ["d"], [1]) == [rows[0]]
    assert cache.prepared == 1


def _fields(d: TaskDemand) -> dict[str, object]:
    return {
        "cpu": d.cpu,
        "memory_mb": d.memory_mb,
        "max_latency_ms": d.max_latency_ms,
        "data_size_mb": d.data_size_mb,
        "level": d.level,
    }


def test_predicted_modes_are_refused() -> None:
    """The fast path reproduces only the weighted-sum ranking: a predicted mode
    must go through ``place_batch`` (the simulator's scheduler does)."""
    table = NodeTable([NodeView(node_id="n", tier=Tier.EDGE, cpus=1.0)])
    demand = TaskDemand(task_id="x", cpu=1.0, memory_mb=1.0)
    with pytest.raises(ValueError, match="place_batch"):
        ShapeCache().get(0, 0, table, demand, PlacementMode.ADAPTIVE)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.booleans())
def test_place_predicted_matches_place_batch(seed: int, nodes: int, explain: bool) -> None:
    """The adaptive batch path: same nodes as ``place_batch`` (one task after the
    other, per-task deadlines, some already passed), carried over three calls with
    backlog and resources moved outside between them (logged, as the simulator's
    scheduler logs them), and the same predicted finish as an explained decision."""
    rng = random.Random(seed)
    views = [
        dataclasses.replace(
            v,
            speed=rng.uniform(0.2, 2.0),
            backlog_s=rng.choice([0.0, 3.0]),
            slots=rng.choice([0, 0, 1, 2]),
        )
        for v in _views(rng, nodes)
    ]
    base = TaskDemand(
        task_id="shape",
        cpu=rng.choice([0.5, 1.0]),
        memory_mb=256.0,
        max_latency_ms=rng.choice([None, 250.0]),
        data_size_mb=rng.choice([0.0, 5.0]),
        level=rng.choice(list(Level)),
        work_s=rng.uniform(0.1, 5.0),
        output_mb=rng.choice([0.0, 0.5]),
    )
    n = 40
    ids = [f"t{k}" for k in range(n)]
    epochs = [1 + k % 3 for k in range(n)]
    deadlines = [rng.choice([None, -0.5, 0.0, 0.3, 1.0, 2.5, 10.0]) for _ in range(n)]
    demands = [
        dataclasses.replace(base, task_id=t, deadline_s=d)
        for t, d in zip(ids, deadlines, strict=True)
    ]
    mode = PlacementMode.ADAPTIVE
    outside = [(5, rng.randrange(nodes)), (15, rng.randrange(nodes))]  # (after task k, row)

    expected_table = NodeTable(views)
    expected: list[tuple[str | None, float | None]] = []
    for k, d in enumerate(demands):
        [dec] = place_batch(
            expected_table, [d], mode=mode, seed=seed, epochs=[epochs[k]], explain=explain
        )
        finish = (
            dec.explanation.candidates[0].terms["finish_s"] if explain and dec.node_id else None
        )
        expected.append((dec.node_id, finish))
        for after, row in outside:
            if after == k:
                expected_table.release(row, 0.5, 100.0, work_s=1.0)

    table = NodeTable(views)
    mirror = Rows(table)
    log: list[int] = []
    shape = prepare(table, base, mode, DEFAULT_WEIGHTS, NodeFacts.of(table))
    state = PredictedState(table, shape, NodeFacts.of(table), 0, log, mirror)
    got: list[tuple[str | None, float | None]] = []
    k = 0
    while k < n:
        hi = next((a + 1 for a, _ in outside if a >= k), n)
        placed = place_predicted(
            table, state, ids[k:hi], epochs[k:hi], deadlines[k:hi], seed=seed, explain=explain
        )
        got += [(table.ids[row], finish) for row, finish in placed]
        got += [(None, None)] * (hi - k - len(placed))  # the refused suffix
        for after, row in outside:
            if after == hi - 1:
                table.release(row, 0.5, 100.0, work_s=1.0)
                log.append(row)
                mirror.reread(row)
        k = hi
    assert got == expected


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_place_predicted_breaks_ties_as_place_batch(seed: int) -> None:
    """Identical nodes: several rows share the highest rank base (the tie key decides,
    and the bases alone cannot), and the same nodes as ``place_batch`` are chosen."""
    rng = random.Random(seed)
    views = [
        NodeView(node_id=f"n{i:02d}", tier=Tier.EDGE, cpus=4.0, memory_mb=4096.0) for i in range(12)
    ]
    base = TaskDemand(task_id="shape", cpu=1.0, memory_mb=256.0, work_s=1.0)
    n = 30
    ids = [f"t{k}" for k in range(n)]
    epochs = [1] * n
    deadlines = [rng.choice([None, 0.5, 5.0, 5.0]) for _ in range(n)]
    mode = PlacementMode.ADAPTIVE
    expected_table = NodeTable(views)
    expected = [
        place_batch(
            expected_table,
            [dataclasses.replace(base, task_id=t, deadline_s=d)],
            mode=mode,
            seed=seed,
            epochs=[1],
        )[0].node_id
        for t, d in zip(ids, deadlines, strict=True)
    ]
    table = NodeTable(views)
    shape = prepare(table, base, mode, DEFAULT_WEIGHTS, NodeFacts.of(table))
    state = PredictedState(table, shape, NodeFacts.of(table), 0, [], Rows(table))
    placed = place_predicted(table, state, ids, epochs, deadlines, seed=seed)
    got = [table.ids[row] for row, _ in placed] + [None] * (n - len(placed))
    assert got == expected
    assert len(set(got[:12])) > 1  # ties were broken by the key, not by row order


@pytest.mark.parametrize("mode", WEIGHTED)
def test_place_many_breaks_ties_as_place(mode: PlacementMode) -> None:
    """Identical nodes: several rows share the highest rank base, the tie key decides
    (``_first``'s other branch), and the nodes are ``place``'s."""
    tier = Tier.CLOUD if mode is PlacementMode.CLOUD_ONLY else Tier.EDGE  # one it allows
    views = [
        NodeView(node_id=f"n{i:02d}", tier=tier, cpus=4.0, memory_mb=4096.0) for i in range(12)
    ]
    demand = TaskDemand(task_id="shape", cpu=1.0, memory_mb=256.0)
    ids = [f"t{k}" for k in range(30)]
    expected_table = NodeTable(views)
    expected = []
    for tid in ids:
        decision = place(expected_table, dataclasses.replace(demand, task_id=tid), mode=mode)
        expected.append(decision.node_id)
        if decision.node_id is not None:
            expected_table.allocate(decision.node_id, demand.cpu, demand.memory_mb)
    table = NodeTable(views)
    state = ShapeCache().get("site", 0, table, demand, mode, [], Rows(table))
    rows = place_many(table, state, ids, [0] * len(ids))
    assert [table.ids[r] for r in rows] + [None] * (len(ids) - len(rows)) == expected
    assert len(set(expected[:12])) > 1  # the key, not the row order, broke the ties


def test_a_logged_shape_state_needs_the_table_s_shared_rows() -> None:
    """A logged row is ranked from the lists, not read back from the table: a private
    ``Rows`` would go stale as soon as another shape or the sync wrote the table."""
    table = NodeTable([NodeView(node_id="n", tier=Tier.EDGE, cpus=4.0, memory_mb=4096.0)])
    demand = TaskDemand(task_id="shape", cpu=1.0, memory_mb=256.0)
    with pytest.raises(ValueError, match="shared Rows"):
        ShapeCache().get(0, 0, table, demand, PlacementMode.HYBRID_DYNAMIC, [])


def test_rows_stay_equal_to_the_table() -> None:
    """``Rows`` holds the table's moving columns as the same Python floats: after its
    own allocations and sets, and after a row written outside is read back."""
    table = NodeTable(_views(random.Random(5), 6))
    mirror = Rows(table)

    def columns() -> list[list[float]]:
        return [
            table.cpu_free.tolist(),
            table.memory_free.tolist(),
            table.disk_free.tolist(),
            table.running.tolist(),
            table.backlog.tolist(),
        ]

    def lists() -> list[list[float]]:
        return [mirror.cpu, mirror.memory, mirror.disk, mirror.running, mirror.backlog]

    assert lists() == columns()
    got = mirror.allocate(2, 0.5, 64.0, 1.0, 2.5)
    assert got == (
        table.cpu_free.item(2),
        table.memory_free.item(2),
        table.running.item(2),
        table.backlog.item(2),
    )
    mirror.allocate(3, 0.25, 32.0, 0.0, 0.0)
    mirror.set(4, 0.75, 100.0, 3.0)
    mirror.set(1, 0.5, 50.0, 1.0, 1.5)
    mirror.set_running(5, 2.0)
    assert lists() == columns()
    table.release(2, 0.5, 64.0, 1.0, work_s=2.5)
    mirror.reread(2)
    assert lists() == columns()
