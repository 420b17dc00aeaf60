"""``Store.put_tasks`` writes a task's row in place: every column of a stored row is
replaced by the new row's (as ``INSERT OR REPLACE`` would), and one row stays."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cloud.store import Store, TaskRow


def test_a_rewritten_row_replaces_every_column(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    first = TaskRow(
        task_id="t1",
        record={"id": "t1"},
        status="pending",
        node=None,
        epoch=0,
        level=None,
        workflow=None,
        priority=50,
        content_hash="a" * 64,
        submitted_ms=1,
        updated_ms=1,
    )
    store.put_tasks([first, replace(first, task_id="t2")])
    second = TaskRow(
        task_id="t1",
        record='{"id":"t1","x":1}',
        status="running",
        node="n1",
        epoch=2,
        level="strong",
        workflow="w",
        priority=7,
        content_hash="b" * 64,
        submitted_ms=2,
        updated_ms=3,
        explanation='{"why":1}',
        origin="n9",
        placed={1: "n0", 2: "n1"},
    )
    store.put_tasks([second])
    assert store.get_task("t1") == replace(
        second, record={"id": "t1", "x": 1}, explanation={"why": 1}
    )
    assert store.get_task("t2") == replace(first, task_id="t2")
    assert store.count_tasks_by("status") == [("pending", 1), ("running", 1)]
    store.close()
