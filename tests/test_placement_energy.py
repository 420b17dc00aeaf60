"""The adaptive cost's energy share prices what a run spends beyond the idle draw:
execution (marginal watts x time) and, where the node's path has a known transfer
energy, the joules of moving the task's input and output (``_predict.timing``)."""

from __future__ import annotations

import numpy as np
import pytest

from shared.placement import NodeTable, NodeView, TaskDemand, place
from shared.placement._predict import NodeFacts, timing
from shared.vocab import PlacementMode, Tier

ADAPTIVE = PlacementMode.ADAPTIVE


def _node(node_id: str, **kw: object) -> NodeView:
    base: dict[str, object] = {"tier": Tier.EDGE, "cpus": 4, "memory_mb": 4096}
    base.update(kw)
    return NodeView(node_id=node_id, **base)  # type: ignore[arg-type]


def _energy_share(table: NodeTable, demand: TaskDemand) -> np.ndarray:
    """The energy share alone: the static cost with the WAN and risk shares at 0
    (no WAN node, every node healthy and always successful)."""
    facts = NodeFacts.of(table)
    mask = np.ones(len(table), dtype=np.bool_)
    return 4.0 * timing(facts, table, demand, mask).base_cost


def test_a_path_that_costs_more_joules_per_mb_costs_more() -> None:
    # same node, same execution; moving 10 MB costs 3 J/MB on one path, 1 J/MB on the other
    table = NodeTable([_node("far", transfer_j_per_mb=3.0), _node("near", transfer_j_per_mb=1.0)])
    demand = TaskDemand(task_id="t", work_s=1.0, data_size_mb=10.0, deadline_s=100.0)
    far, near = _energy_share(table, demand)
    assert near < far == 1.0
    assert place(table, demand, mode=ADAPTIVE).node_id == "near"


def test_execution_and_transfer_joules_are_weighed_together() -> None:
    # "thrifty" runs on a core that adds 10 W, "close" on one that adds 11 W; its
    # path costs 0.1 J/MB against 1 J/MB: with 10 MB to move, 11 + 1 J beats 10 + 10 J
    table = NodeTable(
        [
            _node("thrifty", power_w=10.0, transfer_j_per_mb=1.0),
            _node("close", power_w=11.0, transfer_j_per_mb=0.1),
        ]
    )
    heavy = TaskDemand(task_id="t", work_s=1.0, data_size_mb=10.0, deadline_s=100.0)
    close, thrifty = _energy_share(table, heavy)  # rows sorted by id
    assert close == pytest.approx(12.0 / 20.0) and thrifty == 1.0
    assert place(table, heavy, mode=ADAPTIVE).node_id == "close"
    # without data to move, execution alone decides
    light = TaskDemand(task_id="t", work_s=1.0, deadline_s=100.0)
    assert place(table, light, mode=ADAPTIVE).node_id == "thrifty"


def test_unknown_transfer_energy_leaves_the_share_to_execution() -> None:
    # every node 0 J/MB (unknown): the share is power x time over the largest, as before
    table = NodeTable([_node("a", power_w=5.0), _node("b", power_w=20.0)])
    demand = TaskDemand(task_id="t", work_s=2.0, data_size_mb=50.0, output_mb=1.0)
    assert _energy_share(table, demand).tolist() == [0.25, 1.0]
    assert NodeFacts.of(table).transfers is False


def test_the_transfer_energy_survives_the_table_and_its_updates() -> None:
    view = _node("n", transfer_j_per_mb=1.44)
    table = NodeTable([view])
    assert table.view("n") == view
    assert NodeView(node_id="d", tier=Tier.DEVICE).transfer_j_per_mb == 0.0
    table.update("n", transfer_j_per_mb=1.84)
    assert table.view("n").transfer_j_per_mb == 1.84
