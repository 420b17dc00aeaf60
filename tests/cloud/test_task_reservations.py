"""A placed task's resources are held on its node while it is active (``TaskTable``):
kept as its attempt starts, held again if the node's entry lost them, released once
the task is over."""

from __future__ import annotations

from cloud_harness import Harness


def test_a_reservation_stands_while_active_and_ends_with_the_task(h: Harness) -> None:
    node = h.node("n-1", cpus=4)
    c = h.controller
    c.submit_task({"id": "t", "command": ["true"], "resources": {"cpu": 1.5, "memory_mb": 64}})
    assert c.get_task("t")["node"] == "n-1"
    entry = c.registry.nodes["n-1"]
    assert entry.reserved == {"t": (1.5, 64.0)}
    tasks = c.tasks
    freed = tasks.freed
    node.expect("place", lambda e: e.body.task_id == "t")
    dot = node.start("t", 1)
    h.pump_until(lambda: c.get_task("t")["status"] == "running")
    assert entry.reserved == {"t": (1.5, 64.0)} and tasks.freed == freed
    # Forgotten by the node's entry (as after a restore): held again at the next change.
    del entry.reserved["t"]
    tasks.reindex("t")
    assert entry.reserved == {"t": (1.5, 64.0)} and tasks.freed == freed
    node.finish("t", dot)
    h.pump_until(lambda: c.get_task("t")["status"] == "succeeded")
    assert entry.reserved == {} and tasks.freed == freed + 1
