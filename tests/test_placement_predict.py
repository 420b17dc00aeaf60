"""The adaptive mode ranks by predicted completion time (``shared.placement._predict``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.placement import NodeTable, NodeView, TaskDemand, place, place_batch
from shared.placement._predict import NodeFacts, fixed, timing
from shared.placement._predict import score as predict_score
from shared.vocab import Level, LinkState, PlacementMode, Tier

ADAPTIVE = PlacementMode.ADAPTIVE


def _node(node_id: str, **kw: object) -> NodeView:
    base: dict[str, object] = {"tier": Tier.EDGE, "cpus": 4, "memory_mb": 4096}
    base.update(kw)
    return NodeView(node_id=node_id, **base)  # type: ignore[arg-type]


def _prediction(table: NodeTable, demand: TaskDemand) -> dict[str, dict[str, float]]:
    decision = place(table, demand, mode=ADAPTIVE)
    return {c.node_id: c.terms for c in decision.explanation.candidates}


def test_a_node_twice_as_fast_is_predicted_twice_as_fast() -> None:
    table = NodeTable([_node("slow", speed=1.0), _node("fast", speed=2.0)])
    parts = _prediction(table, TaskDemand(task_id="t", work_s=3.0))
    assert parts["slow"]["exec_s"] == pytest.approx(3.0)
    assert parts["fast"]["exec_s"] == pytest.approx(1.5)
    assert place(table, TaskDemand(task_id="t", work_s=3.0), mode=ADAPTIVE).node_id == "fast"


def test_a_backlog_delays_the_prediction_when_no_core_is_free_for_the_task() -> None:
    # "crowded" runs 4 tasks on its 4 cores, each reserving 0.1: a running task uses a
    # whole core whatever it reserved, so the new one waits for the backlog to drain
    # through the 4 cores; "spare" has a core no task runs on: the task starts at
    # once, whatever else is placed there
    table = NodeTable(
        [
            _node("idle"),
            _node("crowded", backlog_s=8.0, cpu_free=3.6, running=4),
            _node("spare", backlog_s=8.0, cpu_free=3.7, running=3),
        ]
    )
    demand = TaskDemand(task_id="t", work_s=1.0)
    facts = NodeFacts.of(table)
    everyone = np.ones(len(table), dtype=bool)
    _, queue, _ = predict_score(facts, table, demand, timing(facts, table, demand, everyone))
    idle, crowded, spare = (table.index[n] for n in ("idle", "crowded", "spare"))
    assert queue[idle] == 0.0 and queue[spare] == 0.0
    assert queue[crowded] == pytest.approx(8.0 / 4)  # backlog over its cores
    finish = fixed(facts, table, demand) + queue
    assert finish[crowded] == pytest.approx(finish[idle] + 2.0)
    # the explanation shows the same parts, and the crowded node loses
    parts = _prediction(table, demand)
    assert parts["crowded"]["queue_s"] == pytest.approx(2.0) and parts["spare"]["queue_s"] == 0.0
    assert place(table, demand, mode=ADAPTIVE).node_id != "crowded"


def _queue(table: NodeTable, demand: TaskDemand) -> dict[str, float]:
    facts = NodeFacts.of(table)
    everyone = np.ones(len(table), dtype=bool)
    _, queue, _ = predict_score(facts, table, demand, timing(facts, table, demand, everyone))
    return dict(zip(table.ids, queue.tolist(), strict=True))


def test_a_node_whose_agent_slots_are_taken_queues_a_new_task_even_with_free_cores() -> None:
    # the three nodes have 3.9 cores free and 1 task placed; "one_slot"'s agent runs one
    # attempt at once, so the new task waits in its local queue for the backlog to
    # drain through that one slot; "older" advertises no slots (an agent that predates
    # them): as before, cores only
    common = {"cpus": 4, "speed": 1.0, "cpu_free": 3.9, "running": 1, "backlog_s": 3.0}
    table = NodeTable(
        [_node("one_slot", slots=1, **common), _node("two_slots", slots=2, **common),
         _node("older", **common)]
    )  # fmt: skip
    demand = TaskDemand(task_id="t", work_s=1.0)
    queue = _queue(table, demand)
    assert queue["one_slot"] == pytest.approx(3.0 / 1)  # the backlog over its one slot
    assert queue["two_slots"] == 0.0 and queue["older"] == 0.0
    assert _prediction(table, demand)["one_slot"]["queue_s"] == pytest.approx(3.0)
    assert place(table, demand, mode=ADAPTIVE).node_id != "one_slot"


def test_placed_unstarted_tasks_count_against_the_slots_and_drain_through_them() -> None:
    # 8 cores, tasks of 0.1 cpu, an agent running 4 at once (the default): the cores
    # would start 8 at once, but each task placed counts against a slot whether it has
    # started or waits in the agent's queue, so the 5th waits for the 4 ahead of it,
    # which drain through the 4 slots, not the 8 cores
    table = NodeTable([_node("n", cpus=8, speed=1.0, slots=4)])
    demand = TaskDemand(task_id="t", cpu=0.1, work_s=1.0)
    for _ in range(4):
        assert _queue(table, demand)["n"] == 0.0
        table.allocate("n", 0.1, 10.0, work_s=1.0)
    assert _queue(table, demand)["n"] == pytest.approx(4.0 / 4)
    # without the slots (an older agent): as before, cores only
    older = NodeTable([_node("n", cpus=8, speed=1.0, running=4, cpu_free=7.6, backlog_s=4.0)])
    assert _queue(older, demand)["n"] == 0.0


def test_placing_adds_to_the_backlog_the_next_decision_sees() -> None:
    table = NodeTable([_node("a", cpus=1), _node("b", cpus=1)])
    first, second = place_batch(
        table, [TaskDemand(task_id=f"t{i}", work_s=2.0) for i in range(2)], mode=ADAPTIVE
    )
    assert {first.node_id, second.node_id} == {"a", "b"}
    assert sorted(table.backlog.tolist()) == [2.0, 2.0]
    table.release(first.node_id, 0.1, 64.0, work_s=2.0)  # type: ignore[arg-type]
    assert sorted(table.backlog.tolist()) == [0.0, 2.0]


def test_a_deadline_excludes_a_slow_node_even_a_cheaper_one() -> None:
    # the device is cheap (little power, no load) but cannot make the deadline
    table = NodeTable(
        [_node("device", tier=Tier.DEVICE, cpus=1, speed=0.25), _node("edge", load=0.9)]
    )
    demand = TaskDemand(task_id="t", work_s=1.0, deadline_s=3.0)
    parts = _prediction(table, demand)
    assert parts["device"]["margin_s"] < 0 < parts["edge"]["margin_s"]
    assert place(table, demand, mode=ADAPTIVE).node_id == "edge"


def test_among_safe_nodes_the_cheapest_wins() -> None:
    # both make a loose deadline; the loaded node costs more (utilisation)
    table = NodeTable([_node("loaded", load=0.95), _node("quiet", load=0.05)])
    demand = TaskDemand(task_id="t", work_s=1.0, deadline_s=100.0)
    assert place(table, demand, mode=ADAPTIVE).node_id == "quiet"


def test_a_live_link_s_grade_is_not_counted_as_risk_on_top_of_its_round_trips() -> None:
    # "far" is graded degraded for its round trip alone (p99 over 100 ms), which its
    # predicted finish already holds; the grade adds no risk of losing the run, so its
    # cost is "near"'s; partitions (the rate) and lost attempts (success) do add it
    nodes = [
        _node("near", rtt_ms=100.0),
        _node("far", rtt_ms=100.0, link_state=LinkState.DEGRADED),
        _node("cut", rtt_ms=100.0, link_state=LinkState.PARTITIONED),
        _node("flaky", rtt_ms=100.0, partition_rate_per_h=60.0),
        _node("failing", rtt_ms=100.0, success_ewma=0.5),
    ]
    table = NodeTable(nodes)
    demand = TaskDemand(task_id="t", work_s=60.0, deadline_s=100.0)
    facts = NodeFacts.of(table)
    everyone = np.ones(len(table), dtype=bool)
    _, _, cost = predict_score(facts, table, demand, timing(facts, table, demand, everyone))
    by = dict(zip(table.ids, cost.tolist(), strict=True))
    assert by["far"] == by["near"]
    assert by["cut"] == pytest.approx(by["near"] + 0.25)  # certain loss: a whole share
    assert by["near"] < by["flaky"] < by["cut"] and by["near"] < by["failing"] < by["cut"]


def test_when_no_node_can_make_it_the_earliest_finish_wins() -> None:
    table = NodeTable([_node("slow", speed=0.5), _node("fast", speed=1.0, load=1.0)])
    demand = TaskDemand(task_id="t", work_s=10.0, deadline_s=1.0)
    assert place(table, demand, mode=ADAPTIVE).node_id == "fast"


def test_the_margin_grows_with_the_node_s_prediction_error() -> None:
    # same finish (1 s) on both: only the node whose predictions were good is safe
    table = NodeTable([_node("erratic", error=math.log(3.0)), _node("steady", error=0.05)])
    demand = TaskDemand(task_id="t", work_s=1.0, deadline_s=1.5)
    parts = _prediction(table, demand)
    assert parts["erratic"]["margin_s"] < 0 < parts["steady"]["margin_s"]


def test_round_trips_transfers_and_the_lease_are_counted() -> None:
    table = NodeTable([_node("n", rtt_ms=100.0, bandwidth_mbps=80.0)])
    demand = TaskDemand(task_id="t", work_s=1.0, data_size_mb=10.0, output_mb=1.0)
    parts = _prediction(table, demand)["n"]
    assert parts["dispatch_s"] == pytest.approx(0.05)
    assert parts["transfer_s"] == pytest.approx(1.0)  # 10 MB * 8 / 80 Mbit/s
    assert parts["return_s"] == pytest.approx(0.05 + 0.1)
    strong = _prediction(table, TaskDemand(task_id="t", work_s=1.0, level=Level.STRONG))["n"]
    assert strong["dispatch_s"] == pytest.approx(0.15)  # plus the lease round trip


def test_without_a_deadline_the_explanation_has_no_margin() -> None:
    table = NodeTable([_node("n")])
    assert "margin_s" not in _prediction(table, TaskDemand(task_id="t"))["n"]


def test_strong_work_goes_to_the_least_bad_node_when_every_link_is_critical() -> None:
    critical = [
        _node("worse", link_state=LinkState.CRITICAL, partition_rate_per_h=5.0),
        _node("better", link_state=LinkState.CRITICAL),
    ]
    demand = TaskDemand(task_id="t", level=Level.STRONG)
    for mode in (ADAPTIVE, PlacementMode.HYBRID_DYNAMIC):
        assert place(NodeTable(critical), demand, mode=mode).node_id == "better"
    # while a healthy link exists, critical ones stay excluded
    mixed = NodeTable([*critical, _node("healthy", load=1.0, speed=0.1)])
    decision = place(mixed, demand, mode=ADAPTIVE)
    assert decision.node_id == "healthy"
    assert decision.explanation.filtered == {"link_critical": 2}


def test_defaults_keep_callers_that_supply_nothing_new_working() -> None:
    view = NodeView(node_id="d", tier=Tier.DEVICE)
    assert view.speed == 0.25 and view.backlog_s == 0.0 and view.wan is False
    assert NodeView(node_id="c", tier=Tier.CLOUD).wan is True
    table = NodeTable([view])
    assert table.view("d") == view
    assert view.slots == 0 and table.slots[0] == math.inf  # no limit but the cpus
    limited = NodeView(node_id="s", tier=Tier.EDGE, slots=3)
    assert NodeTable([limited]).view("s") == limited
    assert place(table, TaskDemand(task_id="t"), mode=ADAPTIVE).node_id == "d"


@settings(max_examples=60, deadline=None)
@given(
    st.floats(0.01, 100.0),
    st.one_of(st.none(), st.floats(0.1, 100.0)),
    st.floats(0.1, 8.0),
    st.floats(0.0, 50.0),
    st.floats(0.0, 50.0),
)
def test_more_backlog_or_less_speed_never_makes_a_node_more_attractive(
    work: float, deadline: float | None, speed: float, backlog: float, extra: float
) -> None:
    demand = TaskDemand(task_id="t", work_s=work, deadline_s=deadline)

    def score(**kw: object) -> float:
        table = NodeTable([_node("n", **kw)])
        return place(table, demand, mode=ADAPTIVE).explanation.candidates[0].score

    base = score(speed=speed, backlog_s=backlog)
    assert score(speed=speed, backlog_s=backlog + extra) <= base + 1e-12
    assert score(speed=speed / 2, backlog_s=backlog) <= base + 1e-12


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(st.none(), st.floats(0.1, 100.0)),
    st.integers(0, 8),
    st.integers(1, 8),
    st.integers(0, 8),
    st.floats(0.0, 50.0),
)
def test_fewer_slots_never_make_a_node_more_attractive(
    deadline: float | None, running: int, slots: int, more: int, backlog: float
) -> None:
    demand = TaskDemand(task_id="t", cpu=0.1, work_s=1.0, deadline_s=deadline)

    def score(**kw: object) -> float:
        view = _node("n", running=running, cpu_free=4 - 0.1 * running, backlog_s=backlog, **kw)
        return place(NodeTable([view]), demand, mode=ADAPTIVE).explanation.candidates[0].score

    assert score(slots=slots) <= score(slots=slots + more) + 1e-12
    assert score(slots=slots) <= score() + 1e-12  # no slots advertised: no limit


def test_a_deadline_already_passed_still_gets_the_earliest_finish() -> None:
    table = NodeTable([_node(f"slow{i}", speed=0.5) for i in range(20)] + [_node("fast")])
    for left in (-5.0, 0.0, 1e-9):
        demand = TaskDemand(task_id="t", work_s=1.0, deadline_s=left)
        assert place(table, demand, mode=ADAPTIVE).node_id == "fast"
