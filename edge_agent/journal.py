"""The agent's durable journal: SQLite in WAL mode (the standard library's ``sqlite3``: no
wrapper, which on an agent would also pull numpy in and cost ~10 MB of idle memory).

Every state change is committed here *before* the agent acts on it or sends it (see
``edge_agent/core.py``), so a ``kill -9`` at any instant loses nothing: the restarted agent
re-reads its records, re-sends its outbox and sweeps the attempts it had started. Each
transaction is one fsync (``synchronous=FULL``), so callers group what they can: every start
of a scheduling pass, every outcome of a poll (``edge_agent/scheduler.py``). An outbox *ack*
costs none of its own: deleting acknowledged rows only saves re-sending them, so the delete
rides in the next transaction, or is committed unsynced before the outbox is read (a power cut
may undo it; the controller then gets those deltas again and merges them idempotently). One thread
(the agent's core loop) writes; other processes (the testbed, ``sqlite3`` on a device) may
read concurrently thanks to WAL.

Tables (private to the agent: other processes read them through ``edge-agent dump``,
edge_agent/dump.py; columns only ever get added):

- ``records(task_id PK, record, status, epoch, node, level, updated_ms)`` — the CRDT record of
  every task this agent has seen (``record`` is ``TaskRecord.to_dict()`` as JSON).
- ``outbox(seq PK AUTOINCREMENT, task_id, delta, created_ms)`` — deltas not yet acknowledged;
  a row is deleted only by a cumulative ack covering its ``seq``. AUTOINCREMENT: sequence numbers
  never go back, even after the table empties.
- ``seen(msg_id PK, at_ms)`` — ids of processed ``down`` messages (deduplication).
- ``events(id PK AUTOINCREMENT, at_ms, mono, hlc, kind, task_id, data)`` — append-only log.
- ``queue(task_id PK, epoch, level, priority, deadline_ms, enqueued_ms, not_before_ms,
  failures, source, lease_s, inputs)`` — work waiting for a start (or for a retry); also
  held in memory, in start order, as ``Journal.runq`` (``edge_agent/runqueue.py``), which
  every write here keeps and a rollback rebuilds.
- ``processes(attempt PK, task_id, epoch, level, watchdog_pid, pgid, started_ms, deadline,
  failures, source, task_deadline_ms)`` — attempts running now (``deadline``: lease fence,
  ``CLOCK_MONOTONIC`` seconds; ``task_deadline_ms``: the queue row's ``deadline_ms``, so a
  retry keeps the task's deadline); swept on restart. ``Journal.process`` answers from memory
  for the rows this process wrote (as the table gives them back), reading the table otherwise.

A column added after a release is also in ``_ADDED`` (``_add_columns``): a journal written by
an earlier version gets it when it is opened, ``NULL`` in the rows it already holds.
- ``meta(key PK, value)`` — small agent state (last HLC, counters).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from edge_agent._journal_rows import (
    PROCESS_FIELDS,
    QUEUED_FIELDS,
    OutboxRow,
    ProcessRow,
    QueuedRow,
    as_stored,
    fields_of,
)
from edge_agent.runqueue import RunQueue

__all__ = ["Journal", "JournalError", "OutboxRow", "ProcessRow", "QueuedRow", "row_json"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    task_id TEXT PRIMARY KEY, record TEXT NOT NULL, status TEXT NOT NULL,
    epoch INTEGER, node TEXT, level TEXT, updated_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL,
    delta TEXT NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS seen (msg_id TEXT PRIMARY KEY, at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, mono REAL NOT NULL,
    hlc TEXT, kind TEXT NOT NULL, task_id TEXT, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_task ON events(task_id);
CREATE TABLE IF NOT EXISTS queue (
    task_id TEXT PRIMARY KEY, epoch INTEGER NOT NULL, level TEXT NOT NULL,
    priority INTEGER NOT NULL, deadline_ms INTEGER, enqueued_ms INTEGER NOT NULL,
    not_before_ms INTEGER NOT NULL, failures INTEGER NOT NULL, source TEXT NOT NULL,
    lease_s REAL, inputs TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS processes (
    attempt TEXT PRIMARY KEY, task_id TEXT NOT NULL, epoch INTEGER NOT NULL,
    level TEXT NOT NULL, watchdog_pid INTEGER NOT NULL, pgid INTEGER,
    started_ms INTEGER NOT NULL, deadline REAL, failures INTEGER NOT NULL DEFAULT 0,
    source TEXT NOT NULL DEFAULT 'placed', task_deadline_ms INTEGER);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

#: Columns added since a release (table, column, declaration): ``_add_columns``.
_ADDED = (("processes", "task_deadline_ms", "INTEGER"),)

_SEEN_KEEP = 20_000
_OUTBOX_OBJS = 10_000  # outbox objects kept in memory at most (Journal.outbox_pending)
#: ``Journal._replace``'s statements by table and columns (a handful: every caller writes one
#: fixed set of columns).
_REPLACE_SQL: dict[tuple[str, ...], str] = {}
#: A row's JSON, by one encoder each (``json.dumps`` with options builds one per call).
row_json = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode
_event_json = json.JSONEncoder(separators=(",", ":")).encode


class JournalError(RuntimeError):
    """A write failed (disk full, I/O error). Nothing committed before it is lost; the agent
    stops admitting work until writes succeed again."""


class Journal:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a power cut must not undo an ack
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(_SCHEMA)
        self._add_columns()
        self._depth = 0
        self._acked = 0  # an outbox ack not yet deleted (see ack())
        self._at_commit: dict[str, Callable[[], str]] = {}  # set_meta_at_commit
        # add_outbox's objects by seq (committed; and those of the open transaction): the
        # uplink sends them without parsing the rows back (outbox_pending).
        self._outbox_objs: dict[int, tuple[object, int]] = {}
        self._outbox_new: dict[int, tuple[object, int]] = {}
        # The outbox's highest seq as committed, and the highest seq acknowledged: what
        # outbox_last_seq answers from memory (no read, no pending delete per tick).
        self._max_seq = int(self.db.execute("SELECT MAX(seq) FROM outbox").fetchone()[0] or 0)
        self._new_max_seq = 0  # of the open transaction
        self._acked_max = 0
        # The queue table in memory, for the scheduler's passes: every write below goes to
        # the table first, then here; a rollback rebuilds it from the table.
        self.runq = RunQueue(self._read_queue())
        # The process rows this process wrote, as the table holds them (``process`` answers
        # from here: an attempt's end read its row back with a query, issue 14). Dropped on a
        # rollback and wherever a row changes in place; a miss reads the table.
        self._procs: dict[str, ProcessRow] = {}

    def close(self) -> None:
        self.db.close()

    def _add_columns(self) -> None:
        """Bring a journal an earlier version wrote up to this schema: the columns it lacks
        (``CREATE TABLE IF NOT EXISTS`` leaves an existing table as it is)."""
        for table, column, decl in _ADDED:
            have = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    def _rows(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        cur = self.db.execute(sql, params or [])
        names = [col[0] for col in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    @contextmanager
    def transaction(self) -> Iterator[Journal]:
        """All writes inside commit together or not at all; failures become JournalError."""
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        self._depth = 1
        try:
            self.db.execute("BEGIN IMMEDIATE")
            changes = self.db.total_changes
            try:
                yield self
            except BaseException:
                self.db.execute("ROLLBACK")
                self._reload_queue()
                self._procs.clear()
                raise
            if self.db.total_changes != changes:  # synced anyway: the pending ack rides along
                self._delete_acked()
            for key, value in self._at_commit.items():
                self.set_meta(key, value())
            self.db.execute("COMMIT")
            self._keep_outbox_objs()
        except sqlite3.Error as exc:
            if self.db.in_transaction:
                self.db.rollback()
                self._reload_queue()
            self._procs.clear()
            raise JournalError(f"journal write failed: {exc}") from exc
        finally:
            self._depth = 0
            self._at_commit.clear()
            self._outbox_new.clear()  # kept above once committed; rolled back otherwise
            self._new_max_seq = 0

    def set_meta_at_commit(self, key: str, value: Callable[[], str]) -> None:
        """Write ``meta[key] = value()`` once, as the last write of the current transaction
        (``value`` is called then): a value many changes of one transaction update, such
        as the last HLC, costs one row write per commit, not one per change. Outside a
        transaction it is written at once."""
        if self._depth:
            self._at_commit[key] = value
        else:
            self.set_meta(key, value())

    def _reload_queue(self) -> None:
        """After a rollback: the index holds what the table holds again. A table that cannot
        be read leaves it as it was (the agent has stopped admitting work by then, and a
        queued row whose record was rolled back is skipped: it has no record)."""
        try:
            rows = self._read_queue()
        except sqlite3.Error:
            return
        self.runq.reset(rows)

    def _replace(self, table: str, row: dict[str, Any]) -> None:
        key = (table, *row)
        sql = _REPLACE_SQL.get(key)
        if sql is None:  # made once per table and columns (a few rows a task use it)
            marks = ", ".join("?" for _ in row)
            sql = f"INSERT OR REPLACE INTO {table} ({', '.join(row)}) VALUES ({marks})"
            _REPLACE_SQL[key] = sql
        self.db.execute(sql, list(row.values()))

    # records -------------------------------------------------------------------------
    def put_record(
        self,
        task_id: str,
        record: dict[str, Any] | str,
        *,
        status: str,
        epoch: int | None,
        node: str | None,
        level: str | None,
        now_ms: int,
    ) -> None:
        text = record if isinstance(record, str) else row_json(record)
        self.db.execute(
            "INSERT OR REPLACE INTO records (task_id, record, status, epoch, node, level,"
            " updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [task_id, text, status, epoch, node, level, now_ms],
        )

    def records(self) -> Iterator[dict[str, Any]]:
        for (record,) in self.db.execute("SELECT record FROM records"):
            yield json.loads(record)

    def prune_records(
        self, statuses: list[str], older_than_ms: int, keep_newest: int = 0
    ) -> list[str]:
        """Delete the records in one of ``statuses`` that nothing here still needs (no
        unacknowledged outbox row: the controller has them; no queued entry, no process)
        and that are unchanged since ``older_than_ms`` or, when ``keep_newest`` > 0,
        older than the ``keep_newest`` most recently changed of them. Returns the ids."""
        marks = ", ".join("?" for _ in statuses)
        by_age = "" if keep_newest > 0 else f" AND updated_ms < {int(older_than_ms)}"
        rows = self.db.execute(
            f"SELECT task_id, updated_ms FROM records WHERE status IN ({marks}){by_age}"
            " AND task_id NOT IN (SELECT task_id FROM outbox)"
            " AND task_id NOT IN (SELECT task_id FROM queue)"
            " AND task_id NOT IN (SELECT task_id FROM processes)"
            " ORDER BY updated_ms DESC, task_id DESC",
            statuses,
        ).fetchall()
        ids = [
            task_id
            for i, (task_id, updated_ms) in enumerate(rows)
            if updated_ms < older_than_ms or 0 < keep_newest <= i
        ]
        self.db.executemany("DELETE FROM records WHERE task_id = ?", [[t] for t in ids])
        return ids

    # outbox --------------------------------------------------------------------------
    def add_outbox(
        self, task_id: str, delta: dict[str, Any] | str, *, now_ms: int, obj: object = None
    ) -> int:
        """Append ``delta`` (its dict, or that dict's :data:`row_json`; ``obj``: what it is
        the dict of, if the caller has it; the uplink then sends that rather than parsing the
        row back). Returns its ``seq``."""
        text = delta if isinstance(delta, str) else row_json(delta)
        cur = self.db.execute(
            "INSERT INTO outbox (task_id, delta, created_ms) VALUES (?, ?, ?)",
            [task_id, text, now_ms],
        )
        seq = int(cur.lastrowid or 0)
        self._new_max_seq = max(self._new_max_seq, seq)
        if obj is not None and len(self._outbox_objs) + len(self._outbox_new) < _OUTBOX_OBJS:
            self._outbox_new[seq] = (obj, len(text))
        if not self._depth:  # committed already (autocommit)
            self._keep_outbox_objs()
        return seq

    def _keep_outbox_objs(self) -> None:
        """What add_outbox noted in the transaction that just committed."""
        self._outbox_objs.update(self._outbox_new)
        self._outbox_new.clear()
        self._max_seq = max(self._max_seq, self._new_max_seq)
        self._new_max_seq = 0

    def outbox_pending(self, after_seq: int, limit: int) -> list[OutboxRow]:
        """:meth:`outbox_batch` with, for each row, the object ``add_outbox`` was given
        (``obj``; ``None`` for rows written by an earlier process, or beyond the bound kept:
        ``delta`` is then the row parsed) and the size of its JSON."""
        self._delete_acked()
        rows = self.db.execute(
            "SELECT seq, delta FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", [after_seq, limit]
        ).fetchall()
        out = []
        for seq, text in rows:
            kept = self._outbox_objs.get(seq)
            if kept is not None:
                out.append(OutboxRow(int(seq), kept[0], None, kept[1]))
            else:
                out.append(OutboxRow(int(seq), None, json.loads(text), len(text)))
        return out

    def outbox_batch(self, after_seq: int, limit: int) -> list[tuple[int, dict[str, Any]]]:
        self._delete_acked()
        rows = self.db.execute(
            "SELECT seq, delta FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", [after_seq, limit]
        ).fetchall()
        return [(int(seq), json.loads(delta)) for seq, delta in rows]

    def ack(self, up_to_seq: int) -> int:
        """Drop rows covered by a cumulative ack; returns how many went. The delete itself
        waits for the next transaction or outbox read (no fsync of its own)."""
        if up_to_seq <= self._acked:
            return 0
        gone = self.db.execute(
            "SELECT COUNT(*) FROM outbox WHERE seq > ? AND seq <= ?", [self._acked, up_to_seq]
        ).fetchone()[0]
        self._acked = up_to_seq
        self._acked_max = max(self._acked_max, up_to_seq)
        objs = self._outbox_objs  # in seq order: the acknowledged ones are its first
        while objs and (first := next(iter(objs))) <= up_to_seq:
            del objs[first]
        return int(gone)

    def _delete_acked(self) -> None:
        """Carry out the pending ack: inside the current transaction, or outside any as one
        unsynced commit (before a read of the outbox)."""
        if not self._acked:
            return
        if self._depth:
            self.db.execute("DELETE FROM outbox WHERE seq <= ?", [self._acked])
        else:
            self.db.execute("PRAGMA synchronous=NORMAL")
            try:
                self.db.execute("DELETE FROM outbox WHERE seq <= ?", [self._acked])
            finally:
                self.db.execute("PRAGMA synchronous=FULL")
        self._acked = 0

    def outbox_depth(self) -> int:
        self._delete_acked()
        return int(self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def outbox_last_seq(self) -> int:
        """The highest ``seq`` in the outbox (0 when empty), from memory: rows are only
        added (``add_outbox``) and deleted a prefix at a time by acks, so it is the highest
        committed seq unless an ack covered it (the uplink asks on every tick: it was a
        query, and an unsynced commit of the pending delete, each time)."""
        return self._max_seq if self._max_seq > self._acked_max else 0

    def outbox_acked_seq(self) -> int:
        """What the controller has acknowledged, as far as the outbox shows: every row
        below the oldest one left (0 when empty: sequence numbers never go back)."""
        self._delete_acked()
        first = self.db.execute("SELECT MIN(seq) FROM outbox").fetchone()[0]
        return 0 if first is None else int(first) - 1

    # deduplication -------------------------------------------------------------------
    def seen(self, msg_id: str) -> bool:
        return (
            self.db.execute("SELECT 1 FROM seen WHERE msg_id = ?", [msg_id]).fetchone() is not None
        )

    def mark_seen(self, msg_id: str, *, now_ms: int) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO seen (msg_id, at_ms) VALUES (?, ?)", [msg_id, now_ms]
        )

    def prune_seen(self) -> None:
        self.db.execute(
            "DELETE FROM seen WHERE msg_id IN (SELECT msg_id FROM seen ORDER BY at_ms DESC "
            "LIMIT -1 OFFSET ?)",
            [_SEEN_KEEP],
        )

    # events --------------------------------------------------------------------------
    def event(
        self,
        kind: str,
        *,
        task_id: str | None,
        data: dict[str, Any],
        now_ms: int,
        mono: float,
        hlc: str | None,
    ) -> None:
        self.db.execute(
            "INSERT INTO events (at_ms, mono, hlc, kind, task_id, data) VALUES (?, ?, ?, ?, ?, ?)",
            [now_ms, mono, hlc, kind, task_id, _event_json(data)],
        )

    # queue ---------------------------------------------------------------------------
    # Each write goes to the table, then (once the statement succeeded) to ``runq``.
    def put_queued(self, row: QueuedRow) -> None:
        self._replace("queue", row.to_row())
        self.runq.put(row)

    def remove_queued(self, task_id: str, *, epoch: int | None = None) -> None:
        """Drop the task's queued entry (only if it is for ``epoch``, when given)."""
        if epoch is None:
            self.db.execute("DELETE FROM queue WHERE task_id = ?", [task_id])
        else:
            self.db.execute("DELETE FROM queue WHERE task_id = ? AND epoch = ?", [task_id, epoch])
        self.runq.remove(task_id, epoch=epoch)

    def revoke_queued(self, task_id: str, up_to_epoch: int) -> None:
        """Drop the task's queued entry if it is for ``up_to_epoch`` or an earlier one."""
        self.db.execute(
            "DELETE FROM queue WHERE task_id = ? AND epoch <= ?", [task_id, up_to_epoch]
        )
        self.runq.remove(task_id, up_to=up_to_epoch)

    def set_queued_level(self, task_id: str, epoch: int, level: str) -> None:
        self.db.execute(
            "UPDATE queue SET level = ? WHERE task_id = ? AND epoch = ?", [level, task_id, epoch]
        )
        row = self.runq.get(task_id)
        if row is not None and row.epoch == epoch:
            self.runq.put(replace(row, level=level))

    def has_queued(self) -> bool:
        """Whether anything waits in the queue (from memory)."""
        return bool(len(self.runq))

    def queued_count(self) -> int:
        """How many rows wait in the queue (from memory)."""
        return len(self.runq)

    def queued(self) -> list[QueuedRow]:
        """Every queued row (from memory: ``runq``)."""
        return self.runq.rows()

    def _read_queue(self) -> list[QueuedRow]:
        """Every row of the queue table, decoding ``inputs`` only where a row has some."""
        cur = self.db.execute(f"SELECT {', '.join(QUEUED_FIELDS)} FROM queue")
        return [
            QueuedRow(
                **dict(zip(QUEUED_FIELDS[:-1], row[:-1], strict=True)),
                inputs=json.loads(row[-1]) if row[-1] and row[-1] != "{}" else {},
            )
            for row in cur.fetchall()
        ]

    # processes -----------------------------------------------------------------------
    def put_process(self, row: ProcessRow) -> None:
        self._procs.pop(row.attempt, None)
        self._replace("processes", fields_of(row, PROCESS_FIELDS))
        self._procs[row.attempt] = as_stored(row)

    def set_process_deadline(self, attempt: str, deadline: float | None) -> None:
        self._procs.pop(attempt, None)
        self.db.execute("UPDATE processes SET deadline = ? WHERE attempt = ?", [deadline, attempt])

    def remove_process(self, attempt: str) -> None:
        self._procs.pop(attempt, None)
        self.db.execute("DELETE FROM processes WHERE attempt = ?", [attempt])

    def processes(self) -> list[ProcessRow]:
        return [ProcessRow.from_row(row) for row in self._rows("SELECT * FROM processes")]

    def process(self, attempt: str) -> ProcessRow | None:
        kept = self._procs.get(attempt)
        if kept is not None:
            return kept
        rows = self._rows("SELECT * FROM processes WHERE attempt = ?", [attempt])
        return ProcessRow.from_row(rows[0]) if rows else None

    # meta ----------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [key, value])
