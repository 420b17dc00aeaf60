"""Journal: atomic transactions, outbox sequence never goes back, ack is cumulative."""

from __future__ import annotations

import enum
import sqlite3
from dataclasses import astuple
from pathlib import Path

import pytest

from edge_agent.journal import Journal, JournalError, ProcessRow


def test_outbox_seq_monotone_after_emptying(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    with j.transaction():
        a = j.add_outbox("t1", {"x": 1}, now_ms=1)
        b = j.add_outbox("t1", {"x": 2}, now_ms=2)
    assert b > a
    with j.transaction():
        assert j.ack(b) == 2
    with j.transaction():
        c = j.add_outbox("t2", {"x": 3}, now_ms=3)
    assert c > b
    assert j.outbox_batch(0, 10) == [(c, {"x": 3})]


def test_cumulative_ack_deletes_only_covered_rows(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    with j.transaction():
        seqs = [j.add_outbox("t", {"i": i}, now_ms=i) for i in range(5)]
    with j.transaction():
        j.ack(seqs[2])
    assert [s for s, _ in j.outbox_batch(0, 10)] == seqs[3:]
    assert j.outbox_depth() == 2


def test_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    with pytest.raises(RuntimeError), j.transaction():
        j.add_outbox("t", {}, now_ms=1)
        j.mark_seen("m1", now_ms=1)
        raise RuntimeError("crash between writes")
    assert j.outbox_depth() == 0 and not j.seen("m1")


def test_sqlite_failure_becomes_journal_error(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    with pytest.raises(JournalError), j.transaction():
        j.db.execute("INSERT INTO nonexistent VALUES (1)")


def test_wal_mode_and_concurrent_reader(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    with j.transaction():
        j.event("hello", task_id=None, data={"a": 1}, now_ms=1, mono=0.5, hlc=None)
    reader = sqlite3.connect(path)
    assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert reader.execute("SELECT kind FROM events").fetchall() == [("hello",)]


def test_seen_prune_keeps_recent(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    with j.transaction():
        for i in range(10):
            j.mark_seen(f"m{i}", now_ms=i)
        j.prune_seen()
    assert j.seen("m9")


def test_meta_at_commit_is_written_once_with_the_latest_value(tmp_path: Path) -> None:
    """``set_meta_at_commit`` (the agent's HLC, issue 14): however many changes a transaction
    makes, the row is written once, at commit, with the value of then; a rolled-back
    transaction writes nothing; outside a transaction it is written at once."""
    j = Journal(tmp_path / "j.sqlite")
    values = iter(["1", "2", "3"])
    calls: list[str] = []

    def value() -> str:
        calls.append(next(values))
        return calls[-1]

    with j.transaction():
        for _ in range(5):
            j.set_meta_at_commit("hlc", value)
        assert j.get_meta("hlc") is None and calls == []  # nothing before the commit
    assert j.get_meta("hlc") == "1" and calls == ["1"]
    with pytest.raises(RuntimeError), j.transaction():
        j.set_meta_at_commit("hlc", value)
        raise RuntimeError("rolled back")
    assert j.get_meta("hlc") == "1" and calls == ["1"]
    with j.transaction():
        pass  # nothing pending is left from the rolled-back one
    assert calls == ["1"]
    j.set_meta_at_commit("hlc", value)
    assert j.get_meta("hlc") == "2"


def _process(attempt: str, **changes: object) -> ProcessRow:
    row = {
        "attempt": attempt,
        "task_id": "t",
        "epoch": 2,
        "level": "eventual",
        "watchdog_pid": 7,
        "pgid": None,
        "started_ms": 1000,
        "deadline": None,
        "failures": 0,
        "source": "local",
        "task_deadline_ms": None,
    }
    return ProcessRow(**{**row, **changes})  # type: ignore[arg-type]


class _Level(enum.StrEnum):
    STRONG = "strong"


def test_process_rows_from_memory_are_the_rows_the_table_holds(tmp_path: Path) -> None:
    """``process`` answers from memory for rows this journal wrote (issue 14): exactly what
    reading the table gives, its column types included, after every kind of write; a
    rolled-back write is not answered."""
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    rows = [
        _process("t/a:1"),
        _process("t/a:2", deadline=5, level=_Level.STRONG, started_ms=2000.0, pgid=9),
        _process("t/a:3", deadline=7.25, task_deadline_ms=3000, failures=2, source="placed"),
    ]
    with j.transaction():
        for row in rows:
            j.put_process(row)
    with j.transaction():
        j.set_process_deadline("t/a:3", 9.5)
        j.remove_process("t/a:1")
    with pytest.raises(RuntimeError), j.transaction():
        j.put_process(_process("t/a:4"))
        j.remove_process("t/a:2")
        raise RuntimeError("rolled back")
    fresh = Journal(path)  # reads the table
    for attempt in ("t/a:1", "t/a:2", "t/a:3", "t/a:4"):
        mine, stored = j.process(attempt), fresh.process(attempt)
        assert mine == stored
        assert mine is None or [type(v) for v in astuple(mine)] == [
            type(v) for v in astuple(stored)
        ]
    assert j.process("t/a:2") is not None and type(j.process("t/a:2").deadline) is float
