"""The store's WAL copied back into its database file by a thread of its own.

SQLite checkpoints on its own inside the commit that takes the write-ahead log past
1,000 pages: that commit copies the log's pages into the database file and fsyncs it
before it returns. A POST writes about 12 pages (the task row, its five indexes, the
event and its two), so every 80th or so paid for a checkpoint on the event loop, which
is what set the POST p99 (``benchmarks/bench_backlog.py``), and the more so while
running tasks finished and refills added commits.

So the store's connection never checkpoints (``wal_autocheckpoint=0``) and this thread,
with a connection of its own, runs a ``PASSIVE`` checkpoint every ``EVERY_S`` seconds:
it copies what the log holds without waiting on, or blocking, the writer, and the
writer starts the log again from its beginning at its first commit after a complete
one. Durability is unchanged: a commit is durable once its log frames are synced, as
before (``synchronous`` is the store's, for this connection's syncs too). Should a
checkpoint fail (a full disk), the next one is tried ``EVERY_S`` later; the log grows
meanwhile and nothing is lost.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

__all__ = ["EVERY_S", "Checkpointer"]

#: Seconds between two checkpoints: the log holds about this long's writes.
EVERY_S = 1.0
log = logging.getLogger("cloud.checkpoint")


class Checkpointer:
    """Checkpoints the WAL of the database at ``path`` every :data:`EVERY_S` until
    :meth:`stop` (which runs a last one)."""

    def __init__(self, path: str, *, synchronous: str) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(EVERY_S):
            self._checkpoint()
        self._checkpoint()
        self._conn.close()

    def _checkpoint(self) -> None:
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("WAL checkpoint failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
