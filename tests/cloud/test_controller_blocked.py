"""Blocked work waits for a reason to be looked at again (cloud.scheduling): a task
no node can take costs nothing per tick; it is placed in the very pass that frees
resources or brings a fitting node; it is looked at again after RECHECK_S anyway;
at most WAKE_BATCH are placed per pass; the infeasible counter counts tasks."""

from __future__ import annotations

from typing import Any

import pytest
from memory_bus import MemoryHarness

import cloud.scheduling
from cloud.backlog import FOLLOWERS, RECHECK_PER_S, RECHECK_S
from shared.crdt import AttemptStatus


def task(task_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": task_id, "command": ["true"], **fields}


def evaluated(h: MemoryHarness) -> int:
    """Placement decisions taken so far (one histogram sample each)."""
    for metric in h.controller.metrics.placement_seconds.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                return int(sample.value)
    return 0


def infeasible(h: MemoryHarness) -> int:
    for metric in h.controller.metrics.placements.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels["outcome"] == "infeasible":
                return int(sample.value)
    return 0


def test_a_task_blocked_on_resources_is_placed_in_the_pass_that_frees_them(
    h: MemoryHarness,
) -> None:
    n1 = h.node("n1", cpus=1.0)
    c = h.controller
    c.submit_task(task("a", resources={"cpu": 1}))
    n1.expect("place", lambda e: e.body.task_id == "a")
    c.submit_task(task("b", resources={"cpu": 1}))
    assert c.get_task("b")["node"] is None and c.get_task("b")["blocked_reason"]
    before = evaluated(h)
    for _ in range(10):
        h.tick(0.5)
        h.keep_alive("n1")
    assert evaluated(h) == before  # nothing changed: b was not looked at again
    assert infeasible(h) == 1
    dot = n1.start("a", 1)
    n1.finish("a", dot, AttemptStatus.SUCCEEDED)
    h.await_msg(n1, "ack", lambda e: e.body.up_to_seq == n1.seq)  # one ingest pass
    assert c.get_task("b")["node"] == "n1"
    n1.expect("place", lambda e: e.body.task_id == "b")


def test_a_task_no_node_fits_waits_for_a_node_change_or_the_recheck(h: MemoryHarness) -> None:
    h.node("n1")
    c = h.controller
    c.submit_task(task("g", placement={"labels": {"gpu": "yes"}}))
    before = evaluated(h)
    c.submit_task(task("other"))  # another submission does not re-place the backlog
    assert evaluated(h) == before + 1
    start = h.clock()
    while h.clock() < start + RECHECK_S - 0.5:
        h.tick(0.5)
        h.keep_alive("n1")
    assert evaluated(h) == before + 1
    h.tick(0.5)  # the recheck: looked at once more, still blocked, counted once
    assert evaluated(h) == before + 2
    assert infeasible(h) == 1
    gpu = h.node("n-gpu", labels={"gpu": "yes"})  # its hello wakes the blocked task
    gpu.expect("place", lambda e: e.body.task_id == "g")


def test_at_most_a_batch_is_placed_per_pass(
    h: MemoryHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cloud.scheduling, "WAKE_BATCH", 2)
    h.node("n1")
    c = h.controller
    for t in ("p1", "p2", "p3"):
        c.submit_task(task(t, priority=10 * int(t[1]), placement={"labels": {"gpu": "yes"}}))
    gpu = h.node("n-gpu", labels={"gpu": "yes"})
    gpu.expect("place", lambda e: e.body.task_id == "p3")  # best first
    gpu.expect("place", lambda e: e.body.task_id == "p2")
    assert c.get_task("p1")["node"] is None
    h.tick(0.5)
    gpu.expect("place", lambda e: e.body.task_id == "p1")


def test_rechecks_are_rate_bounded_however_large_the_backlog(h: MemoryHarness) -> None:
    """Past RECHECK_S, parked tasks are looked at again oldest first, RECHECK_PER_S a
    second at most (a budget banked up to one second): an idle controller's cost does
    not grow with the backlog; every one of them is still rechecked, in time."""
    h.node("n1")
    c = h.controller
    parked = int(3 * RECHECK_PER_S)
    for i in range(parked):  # each of its own kind (tasks of one kind: one is rechecked)
        c.submit_task(task(f"g{i}", placement={"labels": {"gpu": f"model-{i}"}}))
    before = evaluated(h)
    start = h.clock()
    while h.clock() < start + RECHECK_S - 1.0:  # a second's budget banks meanwhile
        h.tick(0.5)
        h.keep_alive("n1")
    assert evaluated(h) == before
    seen: list[int] = []
    while sum(seen) < parked:
        h.tick(0.5)
        h.keep_alive("n1")
        seen.append(evaluated(h) - before - sum(seen))
    assert seen[:2] == [0, RECHECK_PER_S]  # due at RECHECK_S: the banked second's worth
    assert max(seen[2:]) <= RECHECK_PER_S * 0.5  # then half a second's per 0.5 s tick
    assert infeasible(h) == parked  # tasks, not retries


def test_tasks_of_one_kind_cost_one_decision_and_go_in_placement_order(h: MemoryHarness) -> None:
    """Tasks the filters and exhaustion read alike queue behind one parked head: a
    change wakes the head only; each one placed wakes the next FOLLOWERS of its kind,
    best first (a later task of higher priority too)."""
    n1 = h.node("n1", cpus=1.0)
    c = h.controller
    c.submit_task(task("run", resources={"cpu": 1}))
    n1.expect("place", lambda e: e.body.task_id == "run")
    for i in range(40):
        c.submit_task(task(f"w{i:02d}", resources={"cpu": 1}))
    c.submit_task(task("urgent", resources={"cpu": 1}, priority=90))
    assert infeasible(h) == 41
    before = evaluated(h)
    h.node("n2", cpus=0.5)  # a node change: the kind's head is looked at, no other
    assert evaluated(h) == before + 1
    dot = n1.start("run", 1)
    n1.finish("run", dot, AttemptStatus.SUCCEEDED)
    h.await_msg(n1, "ack", lambda e: e.body.up_to_seq == n1.seq)
    assert c.get_task("urgent")["node"] == "n1"  # the head went first
    assert evaluated(h) <= before + 2 + FOLLOWERS  # the head, then the followers it woke
    assert all(c.get_task(f"w{i:02d}")["node"] is None for i in range(40))


def test_a_large_node_takes_a_whole_kind_in_one_pass(h: MemoryHarness) -> None:
    h.node("n1", cpus=1.0)
    c = h.controller
    for i in range(100):
        c.submit_task(task(f"w{i:02d}", resources={"cpu": 2}))
    # its hello: the kind's head is placed, then its followers in rounds of one pass
    big = h.node("big", cpus=256.0, memory_mb=100_000.0)
    assert sum(1 for i in range(100) if c.get_task(f"w{i:02d}")["node"] == "big") == 100
    big.expect("place", lambda e: e.body.task_id == "w99")


def test_a_cancelled_head_hands_its_kind_on(h: MemoryHarness) -> None:
    n1 = h.node("n1", cpus=1.0)
    c = h.controller
    c.submit_task(task("run", resources={"cpu": 1}))
    for name in ("a", "b", "c"):
        c.submit_task(task(name, resources={"cpu": 1}))
    c.cancel_task("a", "test")  # the head leaves: the next of its kind is looked at
    h.tick(0.5)
    dot = n1.start("run", 1)
    n1.finish("run", dot, AttemptStatus.SUCCEEDED)
    h.await_msg(n1, "place", lambda e: e.body.task_id == "b")


def test_tasks_of_a_kind_that_leave_strand_none_behind_them(h: MemoryHarness) -> None:
    """A placed task wakes the next of its kind; the head and the tasks queued behind
    it cancelled, the last of the kind is still placed when a slot frees."""
    n1 = h.node("n1", cpus=1.0)
    c = h.controller
    c.submit_task(task("run", resources={"cpu": 1}))
    for i in range(FOLLOWERS + 2):
        c.submit_task(task(f"w{i:02d}", resources={"cpu": 1}))
    n2 = h.node("n2", cpus=1.0)  # w00 is placed there and wakes the next FOLLOWERS
    n2.expect("place", lambda e: e.body.task_id == "w00")
    for i in range(1, FOLLOWERS + 1):
        c.cancel_task(f"w{i:02d}", "test")
    h.tick(0.5)
    dot = n1.start("run", 1)
    n1.finish("run", dot, AttemptStatus.SUCCEEDED)
    h.await_msg(n1, "place", lambda e: e.body.task_id == f"w{FOLLOWERS + 1:02d}")


def test_a_task_of_a_blocked_kind_is_parked_behind_its_head_without_a_decision(
    h: MemoryHarness,
) -> None:
    """The kind's head is parked (found blocked, nothing changed since): a new task of the
    kind takes its reason and queues, with no node table and no placement (a POST costs
    the same with any backlog); a task of another kind is still decided."""
    n1 = h.node("n1", cpus=1.0)
    c = h.controller
    c.submit_task(task("run", resources={"cpu": 1}))
    n1.expect("place", lambda e: e.body.task_id == "run")
    c.submit_task(task("head", resources={"cpu": 1}))
    before = evaluated(h)
    for i in range(20):
        c.submit_task(task(f"w{i:02d}", resources={"cpu": 1}))
    assert evaluated(h) == before  # no decision for any of them
    assert infeasible(h) == 21  # each counted, as found blocked
    reason = c.get_task("head")["blocked_reason"]
    assert reason and all(c.get_task(f"w{i:02d}")["blocked_reason"] == reason for i in range(20))
    c.submit_task(task("other", resources={"cpu": 0.5}))  # fits n1? no: n1 is full
    assert evaluated(h) == before + 1
    dot = n1.start("run", 1)
    n1.finish("run", dot, AttemptStatus.SUCCEEDED)
    h.await_msg(n1, "ack", lambda e: e.body.up_to_seq == n1.seq)
    assert c.get_task("head")["node"] == "n1"  # the head, still first of its kind
