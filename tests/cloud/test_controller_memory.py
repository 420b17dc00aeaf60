"""Memory holds the recent work, the store all of it (``TaskTable.evict``/``admit``): a
finished task quiet for ``keep_finished_s`` leaves memory, reads as before through the
API, and comes back when a node or a new task names it; a digest naming it as stored is
answered without loading it. Scripted nodes on the in-memory bus."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cloud_harness import make_config
from memory_bus import MemoryHarness

from cloud.controller import EVICT_EVERY_S
from shared.crdt import record_digest
from shared.protocol import Digest

KEEP_S = 100.0


@pytest.fixture
def hk(tmp_path: Path) -> Iterator[MemoryHarness]:
    harness = MemoryHarness(tmp_path, make_config(tmp_path, controller={"keep_finished_s": KEEP_S}))
    try:
        yield harness
    finally:
        harness.close()


def finish(h: MemoryHarness, node_id: str, task_id: str, result: object) -> None:
    node = h.nodes[node_id]
    place = node.expect("place", lambda e: e.body.task_id == task_id)
    dot = node.start(task_id, place.body.epoch)
    node.finish(task_id, dot, result=result)
    h.await_msg(node, "ack", lambda e: e.body.up_to_seq == node.seq)


def quiet(h: MemoryHarness, seconds: float) -> None:
    """Time passes, the control loop runs, the node stays in contact."""
    step = EVICT_EVERY_S / 2
    for _ in range(int(seconds / step) + 1):
        h.tick(step)
        h.keep_alive("n1")


def test_a_finished_task_leaves_memory_and_comes_back_when_named(hk: MemoryHarness) -> None:
    h = hk
    n1 = h.node("n1", cpus=4)
    c = h.controller
    c.submit_task({"id": "done", "command": ["true"]})
    finish(h, "n1", "done", {"rows": 3})
    c.submit_task({"id": "busy", "command": ["true"]})
    n1.expect("place", lambda e: e.body.task_id == "busy")
    quiet(h, KEEP_S / 2)
    assert "done" in c.records  # not quiet long enough
    summary = record_digest(c.records["done"])  # as a node holding the whole record has it
    quiet(h, KEEP_S + EVICT_EVERY_S)
    assert "done" not in c.records and "done" not in c.tasks.meta
    assert "busy" in c.records  # unfinished work stays
    task = c.get_task("done")  # the API reads the store
    assert task["status"] == "succeeded" and task["attempts"][0]["result"] == {"rows": 3}

    # A digest naming it as stored: answered with the same summary, nothing loaded.
    for kind in ("digest", "deltas"):  # the controller's own, before this digest
        while n1.take(kind) is not None:
            pass
    n1.publish("up", Digest(entries={"done": summary}))
    answer = h.await_msg(n1, "digest")
    assert answer.body.entries.get("done") == summary
    assert "done" not in c.records
    assert not n1.received("deltas", lambda e: any(r.task_id == "done" for r in e.body.records))
    assert c.tasks.admitted == 0

    # A summary that differs (this node's own copy lacks the spec): the task comes back,
    # the node gets the record.
    n1.publish("up", Digest(entries={"done": record_digest(n1.records["done"])}))
    sent = h.await_msg(n1, "deltas", lambda e: any(r.task_id == "done" for r in e.body.records))
    assert next(r.attempts for r in sent.body.records if r.task_id == "done")
    assert "done" in c.records and c.tasks.admitted == 1

    # Gone again; a new task depending on it gets its result as input.
    quiet(h, KEEP_S + EVICT_EVERY_S)
    assert "done" not in c.records
    c.submit_task({"id": "next", "command": ["true"], "depends_on": ["done"]})
    h.tick()
    place = n1.expect("place", lambda e: e.body.task_id == "next")
    assert place.body.inputs == {"done": {"rows": 3}}
    dot = n1.start("next", place.body.epoch)
    n1.finish("next", dot)
    h.await_msg(n1, "ack", lambda e: e.body.up_to_seq == n1.seq)

    # A late report of its node (its record again): merged, not refused as unknown.
    quiet(h, KEEP_S + EVICT_EVERY_S)
    assert "done" not in c.records and "next" not in c.records
    n1.send_deltas([n1.records["done"]])
    h.await_msg(n1, "ack", lambda e: e.body.up_to_seq == n1.seq)
    assert "done" in c.records
    assert not h.events(kind="delta_refused")


def test_a_finished_task_stays_while_an_unfinished_one_depends_on_it(hk: MemoryHarness) -> None:
    h = hk
    n1 = h.node("n1", cpus=4)
    c = h.controller
    c.submit_workflow(
        {
            "id": "wf",
            "tasks": [
                {"id": "a", "command": ["true"]},
                {"id": "b", "command": ["true"], "depends_on": ["a"]},
            ],
        }
    )
    finish(h, "n1", "a", 1)
    n1.expect("place", lambda e: e.body.task_id == "b")
    quiet(h, 3 * KEEP_S)
    assert "a" in c.records  # b, unfinished, may be placed again and need its input
    dot = n1.start("b", 1)
    n1.finish("b", dot)
    h.await_msg(n1, "ack", lambda e: e.body.up_to_seq == n1.seq)
    quiet(h, KEEP_S + EVICT_EVERY_S)
    assert "a" not in c.records and "b" not in c.records


def test_a_restart_loads_the_unfinished_and_the_recent(tmp_path: Path) -> None:
    """The store's ``updated_ms`` decides at a restart (wall clock): with a retention of a
    millisecond, the finished task stays in the store only."""
    h = MemoryHarness(tmp_path, make_config(tmp_path, controller={"keep_finished_s": 0.001}))
    try:
        h.node("n1", cpus=4)
        h.controller.submit_task({"id": "done", "command": ["true"]})
        finish(h, "n1", "done", "ok")
        h.controller.submit_task({"id": "busy", "command": ["true"]})
        h.nodes["n1"].expect("place", lambda e: e.body.task_id == "busy")
        c = h.restart()
        assert "busy" in c.records and "done" not in c.records
        assert c.get_task("done")["status"] == "succeeded"
        assert c.cancel_task("done", "late")["status"] == "succeeded"  # named: back
        assert "done" in c.records
    finally:
        h.close()


def test_naming_tasks_it_may_not_read_brings_nothing_back(hk: MemoryHarness) -> None:
    """A node's digest or lease request can name any id: one it may not read (placed
    elsewhere) stays in the store, else a stolen device could fill the controller's memory
    with history."""
    h = hk
    h.node("n1", cpus=4)
    n2 = h.node("n2", cpus=4)
    h.controller.set_draining("n2", True)
    h.controller.submit_task({"id": "done", "command": ["true"]})
    finish(h, "n1", "done", 1)
    quiet(h, KEEP_S + EVICT_EVERY_S)
    assert "done" not in h.controller.records
    n2.publish("up", Digest(entries={"done": "n2:1|||000000000000"}))
    h.await_msg(n2, "digest")
    assert "done" not in h.controller.records and h.controller.tasks.admitted == 0
    assert not n2.received("deltas", lambda e: any(r.task_id == "done" for r in e.body.records))
    n2.request_lease("done", 1, request_id="i2-1")  # nor a lease request
    assert not h.await_msg(n2, "lease_grant").body.granted
    assert "done" not in h.controller.records and h.controller.tasks.admitted == 0


def test_a_restart_brings_back_what_unfinished_work_depends_on(tmp_path: Path) -> None:
    """``b`` waits for a node big enough; its dependency ``a`` finished long before the
    restart (by the store's clock) and is not loaded with the recent work, but comes back
    with its dependent: ``b`` is placed with ``a``'s result as input."""
    h = MemoryHarness(tmp_path, make_config(tmp_path, controller={"keep_finished_s": 0.001}))
    try:
        h.node("n1", cpus=2)
        h.controller.submit_workflow(
            {
                "id": "wf",
                "tasks": [
                    {"id": "a", "command": ["true"]},
                    {
                        "id": "b",
                        "command": ["true"],
                        "depends_on": ["a"],
                        "resources": {"cpu": 8},
                    },
                ],
            }
        )
        finish(h, "n1", "a", {"x": 1})
        h.tick()
        assert h.controller.get_task("b")["status"] == "pending"
        c = h.restart()
        assert "a" in c.records and "b" in c.records
        big = h.node("n2", cpus=16)
        h.tick()
        place = big.expect("place", lambda e: e.body.task_id == "b")
        assert place.body.inputs == {"a": {"x": 1}}
    finally:
        h.close()
