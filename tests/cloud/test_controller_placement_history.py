"""The controller's placement history (``TaskMeta.placed``: epoch → node) survives a
restart, so a node that was placed an older epoch, and never ran it, is still answered
with the task's final record (``shared.authz.may_read``) after the task moved away.

The soak's controller-restart finding: the old node kept a stale copy for good, since the
restarted controller rebuilt the history from the record alone (latest placement and the
attempts' nodes) and refused it as a stranger to the task.
"""

from __future__ import annotations

from pathlib import Path

from cloud_harness import Harness

from cloud.store import Store
from shared.crdt import AttemptStatus, TaskRecord, visible_status
from shared.protocol import Digest
from shared.vocab import TaskStatus

POOL = {"pool": "x"}


def _final(rec: TaskRecord, task_id: str) -> bool:
    return rec.task_id == task_id and visible_status(rec) == TaskStatus.SUCCEEDED


def test_a_node_re_placed_away_from_converges_after_a_controller_restart(h: Harness) -> None:
    n1 = h.node("n1", labels=POOL)
    n2 = h.node("n2", labels=POOL)
    c = h.controller
    c.set_draining("n2", True)  # lands on n1 first
    c.submit_task(
        {
            "id": "k",
            "command": ["true"],
            "consistency": {"level": "causal"},
            "placement": {"labels": POOL},
        }
    )
    n1.expect("place", lambda env: env.body.task_id == "k" and env.body.epoch == 1)
    c.set_draining("n2", False)
    c.set_draining("n1", True)  # n1 never started it: a drain moves it to n2
    h.pump_until(lambda: (h.tick(0.5), c.get_task("k")["node"] == "n2")[1])
    n2.expect("place", lambda env: env.body.task_id == "k" and env.body.epoch == 2)
    dot = n2.start("k", 2)
    n2.finish("k", dot, AttemptStatus.SUCCEEDED)
    h.pump_until(lambda: c.get_task("k")["status"] == "succeeded")

    c = h.restart(clock_start=50.0)  # same store, new process
    assert c.tasks.meta["k"].placed == {1: "n1", 2: "n2"}
    # n1 holds an old copy (the superseding placement, no attempts): its digest names it.
    n1.publish("up", Digest(entries={"k": "stale"}))
    h.await_msg(n1, "deltas", lambda env: any(_final(r, "k") for r in env.body.records))
    assert not h.events(kind="delta_refused")


def test_a_schema_1_store_gains_the_placement_history_column(tmp_path: Path) -> None:
    """An older file opens: ``tasks.placed`` is added, its rows read back with an empty
    history (``TaskTable.load`` then completes it from the record)."""
    path = tmp_path / "controller.db"
    store = Store(path)
    store.conn.execute("ALTER TABLE tasks DROP COLUMN placed")
    store.conn.execute(
        "INSERT INTO tasks (task_id, record, status, node, epoch, level, workflow, priority, "
        "content_hash, submitted_ms, updated_ms, explanation, origin) "
        "VALUES ('t', '{\"task_id\": \"t\"}', 'pending', NULL, 0, NULL, NULL, 50, 'h', 1, 1, "
        "NULL, NULL)"
    )
    store.close()
    store = Store(path)
    try:
        row = store.get_task("t")
        assert row is not None and row.placed == {}
        assert store.db["meta"].get("schema_version")["value"] == "2"
    finally:
        store.close()
