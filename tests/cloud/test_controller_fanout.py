"""Every node holding a record is sent each change it lacks when it happens
(``cloud/fanout.py``, ``shared.authz.lacking``), not at its next digest: the record
before each ``place``; the losses of a fenced move to the new holder; the new holder's
reports to the node a task left (a hedge's old node only from then on); a cancel to every
holder; and nothing back to the node that wrote the whole change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cloud_harness import Harness, NodeScript

from shared.crdt import AttemptStatus, TaskRecord
from shared.protocol import Envelope

POOL = {"labels": {"pool": "x"}}
STEP = 0.5


def _task(task_id: str, level: str) -> dict[str, Any]:
    return {"id": task_id, "command": ["true"], "consistency": {"level": level}, "placement": POOL}


def _carrying(task_id: str, pred: Callable[[TaskRecord], bool]) -> Callable[[Envelope], bool]:
    return lambda env: any(r.task_id == task_id and pred(r) for r in env.body.records)


def _on(h: Harness, task_id: str) -> tuple[str | None, int]:
    t = h.controller.get_task(task_id)
    return t["node"], t["epoch"]


def _placed_on_n1(h: Harness, task_id: str, level: str) -> tuple[NodeScript, NodeScript]:
    """``task_id`` placed on n1 (n2 draining meanwhile) and started there; n2 open again."""
    n1 = h.node("n1", labels={"pool": "x"})
    n2 = h.node("n2", labels={"pool": "x"})
    h.controller.set_draining("n2", True)
    h.controller.submit_task(_task(task_id, level))
    h.await_msg(n1, "deltas", _carrying(task_id, lambda r: r.placement is not None))
    n1.expect("place", lambda env: env.body.task_id == task_id)
    n1.start(task_id, 1)
    h.controller.set_draining("n2", False)
    return n1, n2


def _partition_n1_until_moved(h: Harness, n1: NodeScript, task_id: str) -> None:
    n1.answer_pings = False
    while _on(h, task_id) != ("n2", 2):
        assert h.clock() < 1100, "never moved"
        h.tick(STEP)
        h.keep_alive("n2")


def test_a_holders_own_report_is_not_sent_back(h: Harness) -> None:
    n1 = h.node("n1")
    h.controller.submit_task({"id": "t", "command": ["true"]})
    pre = h.await_msg(n1, "deltas", _carrying("t", lambda r: r.placement is not None))
    assert pre.body.records[0].spec is not None  # the whole record, spec included
    n1.expect("place", lambda env: env.body.task_id == "t")
    n1.finish("t", n1.start("t", 1))
    h.pump_until(lambda: h.controller.get_task("t")["status"] == "succeeded")
    h.keep_alive("n1")
    assert not n1.received("deltas")


def test_a_fenced_move_sends_the_new_holder_the_losses(h: Harness) -> None:
    n1, n2 = _placed_on_n1(h, "s", "strong")  # no lease asked: it moves at once, fenced
    _partition_n1_until_moved(h, n1, "s")
    lost = _carrying(
        "s", lambda r: any(a.status == AttemptStatus.LOST for a in r.attempts.values())
    )
    h.await_msg(n2, "deltas", lost)
    n2.expect("place", lambda env: env.body.task_id == "s" and env.body.epoch == 2)
    h.await_msg(n1, "deltas", _carrying("s", lambda r: r.placement.epoch == 2))
    # The inference has its event: the old node's own report, when it comes, outranks
    # it in the record (success wins), and the event log still says what was decided.
    (presumed,) = h.events(task_id="s", kind="presumed_lost")
    assert (presumed["node_id"], presumed["epoch"]) == ("n1", 1)
    assert presumed["data"]["attempt"].startswith("n1:")


def test_a_placement_never_reported_started_is_presumed_lost_when_moved(h: Harness) -> None:
    """The node may have run it (its start report lost, or not sent before the node went
    out of contact): moving the task off it presumes that run lost as well, and the event
    log says so (the testbed's checker takes it as the loss that allows a causal re-run)."""
    n1, _ = _placed_on_n1(h, "s", "eventual")  # running work: the node is pinged
    h.controller.set_draining("n2", True)
    h.controller.submit_task({**_task("u", "causal"), "max_disconnect_s": 30})
    n1.expect("place", lambda env: env.body.task_id == "u")
    h.controller.set_draining("n2", False)
    _partition_n1_until_moved(h, n1, "u")
    (presumed,) = h.events(task_id="u", kind="presumed_lost")
    assert (presumed["node_id"], presumed["epoch"]) == ("n1", 1)
    assert "attempt" not in presumed["data"]


def test_a_hedges_old_node_hears_nothing_at_the_move_then_the_new_holders_result(
    h: Harness,
) -> None:
    n1, n2 = _placed_on_n1(h, "e", "eventual")
    _partition_n1_until_moved(h, n1, "e")
    n2.expect("place", lambda env: env.body.task_id == "e" and env.body.epoch == 2)
    assert not n1.received("deltas", _carrying("e", lambda r: r.placement.epoch == 2))
    n2.finish("e", n2.start("e", 2))
    won = _carrying(
        "e", lambda r: any(a.status == AttemptStatus.SUCCEEDED for a in r.attempts.values())
    )
    h.await_msg(n1, "deltas", won)  # queued for n1 (delivered when it returns)
    assert not n2.received("deltas", won)  # n2 wrote it: nothing to learn


def test_a_cancel_reaches_every_holder(h: Harness) -> None:
    n1, n2 = _placed_on_n1(h, "c", "eventual")
    _partition_n1_until_moved(h, n1, "c")
    h.controller.cancel_task("c", "no longer needed")
    for node in (n1, n2):
        h.await_msg(node, "deltas", _carrying("c", lambda r: r.cancel_requested))
    n2.expect("cancel", lambda env: env.body.task_id == "c")
