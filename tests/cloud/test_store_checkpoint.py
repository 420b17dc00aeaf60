"""The store's WAL is checkpointed by a thread of its own (cloud/checkpoint.py), never by a
commit: a POST's commit no longer pays, every 80th or so, for copying the log back."""

from __future__ import annotations

import time
from pathlib import Path

from cloud.store import Store


def _wait(pred: object, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not reached"
        time.sleep(0.05)


def _write(store: Store, n: int) -> None:
    for i in range(n):
        with store.transaction():
            store.append_events([{"ts_ms": i, "kind": "k", "reason": "x" * 500, "data": "{}"}])


def test_commits_never_checkpoint_the_thread_does_and_nothing_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    store = Store(path)
    try:
        assert store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        size = path.stat().st_size
        _write(store, 300)  # 150 KB of events into the log
        _wait(lambda: path.stat().st_size > size + 100_000)  # copied into the file
        _write(store, 10)
    finally:
        store.close()
    reopened = Store(path)
    try:
        assert len(reopened.events(limit=1000)) == 310
    finally:
        reopened.close()
