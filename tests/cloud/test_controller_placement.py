"""Placement through the controller: constraints, explanations, workflows.

Scripted nodes speak ``shared.protocol`` over the in-memory bus (see ``memory_bus``).
"""

from __future__ import annotations

from typing import Any

import pytest
from cloud_harness import Harness

from shared.crdt import AttemptStatus


def task(task_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": task_id, "command": ["true"], **fields}


def test_constraints_are_honoured_and_every_decision_explained(h: Harness) -> None:
    edge = h.node("n-edge", tier="edge", labels={"zone": "a"}, cpus=2)
    far = h.node("n-far", tier="edge", labels={"zone": "a"}, cpus=2)
    dev = h.node("n-dev", tier="device", labels={"zone": "b"}, cpus=1, memory_mb=512)
    cloud = h.node("n-cloud", tier="cloud", cpus=16, memory_mb=65536)
    # Round trips: every node answers the controller's ping at once, n-far 300 ms later.
    far.answer_pings = False
    h.tick()
    reg = h.controller.registry

    def samples(node_id: str) -> int:
        return reg.nodes[node_id].monitor.stats(h.clock()).rtt_samples

    h.pump_until(lambda: all(samples(n) == 1 for n in ("n-edge", "n-dev", "n-cloud")))
    ping = far.expect("ping")
    h.clock.advance(0.3)
    far.pong(ping)
    h.pump_until(lambda: samples("n-far") == 1)
    assert reg.nodes["n-far"].monitor.stats(h.clock()).rtt_p50_ms == pytest.approx(300.0)

    c = h.controller
    c.submit_task(task("t-cloud", placement={"tiers": ["cloud"]}))
    c.submit_task(task("t-zone-b", placement={"labels": {"zone": "b"}}))
    c.submit_task(task("t-big", resources={"cpu": 8, "memory_mb": 1024}))
    c.submit_task(
        task(
            "t-near", placement={"tiers": ["edge"], "labels": {"zone": "a"}, "max_latency_ms": 100}
        )
    )
    c.submit_task(task("t-huge", resources={"cpu": 64}))

    where = {t: c.get_task(t)["node"] for t in ("t-cloud", "t-zone-b", "t-big", "t-near")}
    assert where == {
        "t-cloud": "n-cloud",
        "t-zone-b": "n-dev",
        "t-big": "n-cloud",
        "t-near": "n-edge",
    }
    # The nodes were told, under epoch 1, with the spec.
    for node, task_id in (
        (cloud, "t-cloud"),
        (dev, "t-zone-b"),
        (cloud, "t-big"),
        (edge, "t-near"),
    ):
        env = node.expect("place", lambda e, t=task_id: e.body.task_id == t)
        assert env.body.epoch == 1 and env.body.spec["id"] == task_id

    near = c.get_task("t-near")["explanation"]
    assert near["chosen"] == "n-edge"
    assert near["filtered"]["latency"] == 1  # n-far
    assert near["filtered"]["tier"] == 2  # n-dev, n-cloud
    assert near["candidates"][0]["node"] == "n-edge"
    assert set(near["candidates"][0]["terms"]) >= {"fit", "load", "success", "link"}
    assert c.get_task("t-zone-b")["explanation"]["filtered"]["labels"] == 3
    assert c.get_task("t-big")["explanation"]["filtered"]["too_small"] == 3

    huge = c.get_task("t-huge")
    assert huge["node"] is None and huge["status"] == "pending"
    assert "no feasible node" in huge["blocked_reason"]
    assert h.events(task_id="t-huge", kind="placement_blocked")
    placed = h.events(task_id="t-near", kind="placed")
    assert placed and placed[0]["data"]["explanation"]["chosen"] == "n-edge"


def test_workflow_runs_in_dependency_order_with_outputs_passed_on(h: Harness) -> None:
    node = h.node("n1", cpus=8)
    h.controller.submit_workflow(
        {
            "id": "wf",
            "tasks": [
                task("a"),
                task("b"),
                task("c", depends_on=["a", "b"]),
                task("d", depends_on=["c"]),
            ],
        }
    )
    node.expect("place", lambda e: e.body.task_id == "a")
    node.expect("place", lambda e: e.body.task_id == "b")
    assert h.controller.get_task("c")["node"] is None

    dot_a = node.start("a", 1)
    node.finish("a", dot_a, result={"x": 1})
    h.await_msg(node, "ack", lambda e: e.body.up_to_seq == node.seq)
    assert h.controller.get_task("a")["status"] == "succeeded"
    assert h.controller.get_task("c")["node"] is None  # b not done yet
    assert not node.received("place", lambda e: e.body.task_id == "c")

    dot_b = node.start("b", 1)
    node.finish("b", dot_b, result=[2, 3])
    place_c = h.await_msg(node, "place", lambda e: e.body.task_id == "c")
    assert place_c.body.inputs == {"a": {"x": 1}, "b": [2, 3]}
    assert h.controller.get_task("d")["node"] is None

    dot_c = node.start("c", 1)
    node.finish("c", dot_c, result="done")
    place_d = h.await_msg(node, "place", lambda e: e.body.task_id == "d")
    assert place_d.body.inputs == {"c": "done"}
    order = [e["task_id"] for e in h.events(kind="placed")]
    assert order == ["a", "b", "c", "d"]
    wf = h.controller.get_workflow("wf")
    assert [t["task_id"] for t in wf["tasks"]] == ["a", "b", "c", "d"]


def test_a_task_whose_inputs_cannot_be_sent_is_cancelled_with_the_reason(h: Harness) -> None:
    """Five dependencies of 60 kB results each: the dependent's ``place`` (its inputs) would
    be over the 256 KiB message bound. It was placed and its ``place`` never sent: pending
    on its node for ever. Now it is cancelled, with the sizes, and so are its dependents;
    a dependent whose inputs fit still runs."""
    node = h.node("n1", cpus=16)
    parts = [f"m{i}" for i in range(5)]
    h.controller.submit_workflow(
        {
            "id": "wf-big",
            "tasks": [
                *(task(p) for p in parts),
                task("reduce", depends_on=parts),
                task("after", depends_on=["reduce"]),
                task("small", depends_on=parts[:2]),
            ],
        }
    )
    for p in parts:
        node.expect("place", lambda e, p=p: e.body.task_id == p)
        node.finish(p, node.start(p, 1), result="x" * 60_000)
    h.pump_until(lambda: h.controller.get_task("reduce")["status"] == "cancelled")
    (event,) = h.events(task_id="reduce", kind="task_cancelled")
    assert event["reason"].startswith("inputs_too_large") and "300" in event["reason"]
    assert not node.received("place", lambda e: e.body.task_id == "reduce")
    h.tick()  # the next pass cancels its dependent
    assert h.controller.get_task("after")["status"] == "cancelled"
    place_small = h.await_msg(node, "place", lambda e: e.body.task_id == "small")
    assert place_small.body.inputs == {p: "x" * 60_000 for p in parts[:2]}


def test_failed_dependency_cancels_dependents(h: Harness) -> None:
    node = h.node("n1", cpus=8)
    h.controller.submit_workflow(
        {
            "id": "wf2",
            "tasks": [task("p", retry={"max_attempts": 1}), task("q", depends_on=["p"])],
        }
    )
    node.expect("place", lambda e: e.body.task_id == "p")
    dot = node.start("p", 1)
    node.finish("p", dot, AttemptStatus.FAILED)
    h.pump_until(lambda: h.controller.get_task("q")["status"] == "cancelled")
    assert h.controller.get_workflow("wf2")["status"] == "failed"
