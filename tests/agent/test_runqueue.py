"""The journal's in-memory queue (edge_agent/runqueue.py): always the table's rows, always in
``order_queue``'s order, whatever the writes, the clock and the rollbacks."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.journal import Journal, JournalError, QueuedRow
from edge_agent.runqueue import RunQueue
from shared.autonomy import QueuedTask, order_queue

_IDS = [f"n1:t{i}" for i in range(8)]


def _row(task_id: str, *, priority: int, enqueued_ms: int, deadline_ms: int | None, epoch: int = 1):
    return QueuedRow(
        task_id=task_id,
        epoch=epoch,
        level="causal",
        priority=priority,
        deadline_ms=deadline_ms,
        enqueued_ms=enqueued_ms,
        not_before_ms=enqueued_ms,
        failures=0,
        source="local",
        lease_s=None,
    )


def _expected(rows: list[QueuedRow], now: float) -> list[str]:
    tasks = [
        QueuedTask(
            task_id=r.task_id,
            priority=r.priority,
            deadline=None if r.deadline_ms is None else r.deadline_ms / 1000.0,
            enqueued=r.enqueued_ms / 1000.0,
        )
        for r in rows
    ]
    return [t.task_id for t in order_queue(tasks, now)]


_put = st.tuples(
    st.just("put"),
    st.sampled_from(_IDS),
    st.integers(0, 3).map(lambda p: p * 10),  # few bands: ties and aging overtakes
    st.integers(0, 60_000),  # enqueued, ms
    st.none() | st.integers(0, 120_000),
    st.integers(1, 3),
)
_remove = st.tuples(st.just("remove"), st.sampled_from(_IDS), st.none() | st.integers(1, 3))
_look = st.tuples(st.just("look"), st.integers(-5_000, 200_000))  # now, ms (may go back)


_PREFILL = [
    _row(f"n1:p{i}", priority=(i % 4) * 10, enqueued_ms=i * 997 % 60_000, deadline_ms=None)
    for i in range(40)
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_put, _remove, _look), max_size=60), st.booleans())
def test_the_order_is_order_queues_at_every_instant(ops: list[tuple], prefill: bool) -> None:
    """With ``prefill`` a few additions between two looks are put in place one by one (the
    rest of the time the whole queue is sorted again)."""
    table: dict[str, QueuedRow] = {row.task_id: row for row in _PREFILL} if prefill else {}
    runq = RunQueue(table.values())
    for op in ops:
        if op[0] == "put":
            _, task_id, priority, enqueued, deadline, epoch = op
            row = _row(
                task_id, priority=priority, enqueued_ms=enqueued, deadline_ms=deadline, epoch=epoch
            )
            table[task_id] = row
            runq.put(row)
        elif op[0] == "remove":
            _, task_id, epoch = op
            if task_id in table and (epoch is None or table[task_id].epoch == epoch):
                del table[task_id]
            runq.remove(task_id, epoch=epoch)
        else:
            now = op[1] / 1000.0
            assert [r.task_id for r in runq.ordered(now)] == _expected(list(table.values()), now)
        assert sorted(r.task_id for r in runq.rows()) == sorted(table)
        assert len(runq) == len(table)


def test_rows_removed_while_iterating_are_skipped() -> None:
    runq = RunQueue(
        _row(t, priority=50, enqueued_ms=i, deadline_ms=None) for i, t in enumerate(_IDS)
    )
    seen = []
    for row in runq.ordered(1.0):
        seen.append(row.task_id)
        runq.remove(_IDS[(_IDS.index(row.task_id) + 1) % len(_IDS)])  # the next one
    assert seen == _IDS[::2]


def test_the_index_follows_the_table_through_commits_and_rollbacks(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    with journal.transaction():
        for i, task_id in enumerate(_IDS[:3]):
            journal.put_queued(_row(task_id, priority=50, enqueued_ms=i, deadline_ms=None))
    with pytest.raises(RuntimeError), journal.transaction():
        journal.remove_queued(_IDS[0])
        journal.put_queued(_row(_IDS[5], priority=90, enqueued_ms=9, deadline_ms=None))
        journal.set_queued_level(_IDS[1], 1, "eventual")
        raise RuntimeError("rolled back")
    assert journal.queued() == journal._read_queue()
    assert [r.task_id for r in journal.runq.ordered(1.0)] == _IDS[:3]
    journal.revoke_queued(_IDS[2], 0)  # an earlier epoch: stays
    journal.set_queued_level(_IDS[1], 1, "eventual")
    journal.remove_queued(_IDS[0], epoch=2)  # another epoch: stays
    assert journal.queued_count() == 3
    assert journal.runq.get(_IDS[1]).level == "eventual"  # type: ignore[union-attr]
    assert sorted(journal.queued(), key=lambda r: r.task_id) == journal._read_queue()
    journal.close()
    reopened = Journal(tmp_path / "j.sqlite")  # recovery: rebuilt from the table
    assert [r.task_id for r in reopened.runq.ordered(1.0)] == _IDS[:3]
    reopened.close()


def test_a_failed_commit_leaves_the_index_as_the_table(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    journal.put_queued(_row(_IDS[0], priority=50, enqueued_ms=0, deadline_ms=None))
    with pytest.raises(JournalError), journal.transaction():
        journal.put_queued(_row(_IDS[1], priority=50, enqueued_ms=1, deadline_ms=None))
        journal.db.execute("INSERT INTO no_such_table VALUES (1)")
    assert [r.task_id for r in journal.queued()] == [_IDS[0]]
    journal.close()


def test_tasks_crossing_an_aging_step_move_one_by_one() -> None:
    """Tasks enqueued a quarter second apart cross their aging steps one at a time: each look
    moves the one or two that crossed (two priority bands, so crossing changes places)."""
    rows = [
        _row(f"n1:s{i}", priority=50 + (i % 2), enqueued_ms=250 * i, deadline_ms=None)
        for i in range(64)
    ]
    runq = RunQueue(rows)
    for tick in range(300):
        now = 9.0 + tick * 0.1  # 9 s .. 39 s: every task crosses two or three steps
        assert [r.task_id for r in runq.ordered(now)] == _expected(rows, now)
