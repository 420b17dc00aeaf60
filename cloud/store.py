"""The controller's durable state: one SQLite file (WAL) through sqlite-utils.

Tables:

- ``nodes``: the registry (hello, capacity, labels, drain flag, last link state).
- ``tasks``: one row per task, the CRDT record as canonical JSON plus *derived*
  columns (status, node, epoch, level, workflow, priority, content hash) that
  are indexed for the API's filters. The record is the truth; the columns are
  recomputed from it on every write, never edited on their own. Beside it,
  ``placed``: the placement history (epoch → node, JSON), which the record does
  not keep (it holds the latest placement only) and ``shared.authz.may_read``
  needs to answer a node that was placed an older epoch (added by schema 2).
- ``workflows``: submitted workflow specs.
- ``leases``: leases granted to strong tasks. The deadline is stored as wall
  time *already including the margin*, so a restarted controller, which has
  lost its monotonic clock, can honour every lease it granted (see
  :meth:`Store.active_leases`).
- ``events``: append-only log of decisions, each with its reason.
- ``peers``: per node, the outbox sequence number acknowledged so far.
- ``meta``: the schema version, and the learned placement inputs (``learner``:
  node speeds, task work, prediction errors, round trips; small, rewritten whole).

Writes happen in caller-delimited transactions (:meth:`Store.transaction`), so
the ingest path merges a whole batch of messages in one commit, and an
acknowledgement is only ever sent after the commit that made it true.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from shared.vocab import TaskStatus

from .checkpoint import Checkpointer
from .rows import EventRow, LeaseRow, TaskRow, compact_json

__all__ = ["EventRow", "LeaseRow", "Store", "TaskRow"]

# Schema version; bump with a migration when a table changes shape.
# 2: ``tasks.placed`` (:meth:`Store._migrate` adds it to an older file).
SCHEMA_VERSION = 2


#: The statuses of a finished task (the ``status`` column).
_FINISHED = tuple(s.value for s in TaskStatus if s.terminal)
_TASK_COLUMNS = (
    "task_id, record, status, node, epoch, level, workflow, priority, content_hash, "
    "submitted_ms, updated_ms, explanation, origin, placed"
)
# Insert a task row, or update every column of the one stored in place: the same row
# as ``INSERT OR REPLACE``, which deletes and reinserts it (every index entry twice,
# ~2 us a row more at the controller's ingest, measured).
_PUT_TASK = (
    f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES ({', '.join('?' * 14)}) "
    "ON CONFLICT(task_id) DO UPDATE SET "
    + ", ".join(f"{col} = excluded.{col}" for col in _TASK_COLUMNS.split(", ")[1:])
)


class Store:
    """Thin typed layer over the SQLite file; every method is one statement or a
    small group, and the caller decides the transaction boundaries."""

    def __init__(self, path: Path | str, *, synchronous: str = "full") -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        self.db.enable_wal()
        conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        conn.execute("PRAGMA busy_timeout=5000")
        # Checkpoints off the committing thread (cloud/checkpoint.py): not in a POST's commit.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        self._checkpointer = Checkpointer(str(path), synchronous=synchronous)
        self._in_tx = False
        self._create_schema()

    def close(self) -> None:
        self._checkpointer.stop()
        self.conn.close()

    # -- schema ---------------------------------------------------------------

    def _create_schema(self) -> None:
        db = self.db
        db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
        db["nodes"].create(
            {
                "node_id": str,
                "tier": str,
                "labels": str,
                "capacity": str,
                "agent_version": str,
                "api_port": int,
                "draining": int,
                "link_state": str,
                "presence": str,
                "first_seen_ms": int,
                "last_seen_ms": int,
                "telemetry": str,
            },
            pk="node_id",
            if_not_exists=True,
        )
        db["tasks"].create(
            {
                "task_id": str,
                "record": str,
                "status": str,
                "node": str,
                "epoch": int,
                "level": str,
                "workflow": str,
                "priority": int,
                "content_hash": str,
                "submitted_ms": int,
                "updated_ms": int,
                "explanation": str,
                "origin": str,
                "placed": str,
            },
            pk="task_id",
            if_not_exists=True,
        )
        self._migrate()
        for cols in (["status"], ["node"], ["workflow"], ["level"], ["submitted_ms"]):
            db["tasks"].create_index(cols, if_not_exists=True)
        db["workflows"].create(
            {"workflow_id": str, "name": str, "spec": str, "submitted_ms": int},
            pk="workflow_id",
            if_not_exists=True,
        )
        db["leases"].create(
            {
                "task_id": str,
                "epoch": int,
                "node_id": str,
                "duration_s": float,
                "granted_ms": int,
                "deadline_ms": int,
            },
            pk="task_id",
            if_not_exists=True,
        )
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "ts_ms INTEGER NOT NULL, kind TEXT NOT NULL, task_id TEXT, node_id TEXT, "
            "epoch INTEGER, reason TEXT NOT NULL, data TEXT NOT NULL)"
        )
        db["events"].create_index(["task_id"], if_not_exists=True)
        db["events"].create_index(["kind"], if_not_exists=True)
        db["peers"].create({"node_id": str, "acked_seq": int}, pk="node_id", if_not_exists=True)
        db["meta"].upsert({"key": "schema_version", "value": str(SCHEMA_VERSION)}, pk="key")

    def _migrate(self) -> None:
        """Bring a file of an older schema up to date (adds what is missing; rows keep
        their values, a new column starts empty)."""
        if "placed" not in self.db["tasks"].columns_dict:  # schema 1
            self.db["tasks"].add_column("placed", str)

    # -- transactions ---------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic commit; nested use joins the outer transaction."""
        if self._in_tx:
            yield
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._in_tx = True
        try:
            yield
        except BaseException:
            self._in_tx = False
            self.conn.execute("ROLLBACK")
            raise
        self._in_tx = False
        self.conn.execute("COMMIT")

    # -- nodes ----------------------------------------------------------------

    def upsert_node(self, node_id: str, **fields: Any) -> None:
        row: dict[str, Any] = {"node_id": node_id}
        for key, value in fields.items():
            row[key] = compact_json(value) if key in ("labels", "capacity", "telemetry") else value
        with self.transaction():
            self.db["nodes"].upsert(row, pk="node_id")

    def delete_node(self, node_id: str) -> None:
        """Forget a node's registry row (its events and tasks' records stay)."""
        with self.transaction():
            self.conn.execute("DELETE FROM nodes WHERE node_id = ?", [node_id])

    def nodes(self) -> list[dict[str, Any]]:
        out = []
        for row in self.db["nodes"].rows_where(order_by="node_id"):
            for key in ("labels", "capacity", "telemetry"):
                row[key] = json.loads(row[key]) if row.get(key) else {}
            row["draining"] = bool(row.get("draining"))
            out.append(row)
        return out

    # -- tasks ----------------------------------------------------------------

    def put_tasks(self, rows: Sequence[TaskRow]) -> None:
        """Insert or replace task rows (one statement for the whole batch)."""
        if not rows:
            return
        with self.transaction():
            self.conn.executemany(_PUT_TASK, [r.as_db_values() for r in rows])

    def get_task(self, task_id: str) -> TaskRow | None:
        cur = self.conn.execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE task_id = ?", [task_id])
        row = cur.fetchone()
        return None if row is None else TaskRow.from_db_row(row)

    def held_tasks(self, finished_since_ms: int | None = None) -> Iterator[TaskRow]:
        """The tasks memory holds after a (re)start: every unfinished one, and the
        finished ones written since ``finished_since_ms`` (``None``: all of them)."""
        sql = f"SELECT {_TASK_COLUMNS} FROM tasks"
        args: list[Any] = []
        if finished_since_ms is not None:
            marks = ", ".join("?" for _ in _FINISHED)
            sql += f" WHERE status NOT IN ({marks}) OR updated_ms >= ?"
            args = [*_FINISHED, finished_since_ms]
        for row in self.conn.execute(sql + " ORDER BY submitted_ms", args):
            yield TaskRow.from_db_row(row)

    def digest_facts(self, task_ids: Iterable[str]) -> dict[str, tuple[str, frozenset[str]]]:
        """Per stored task of ``task_ids``: its content hash and the nodes that may read
        it (``shared.authz.readers`` from the columns: its origin, the node of every
        placement; an attempt runs only on the node placed at its epoch)."""
        ids = list(task_ids)
        out: dict[str, tuple[str, frozenset[str]]] = {}
        for i in range(0, len(ids), 500):  # SQLite's bound on parameters
            part = ids[i : i + 500]
            marks = ", ".join("?" * len(part))
            sql = (
                "SELECT task_id, content_hash, origin, node, placed FROM tasks"
                f" WHERE task_id IN ({marks})"
            )
            for task_id, content, origin, node, placed in self.conn.execute(sql, part):
                readers = set(json.loads(placed or "{}").values()) | {origin, node}
                out[task_id] = (content, frozenset(n for n in readers if n))
        return out

    def list_tasks(
        self,
        *,
        status: Sequence[str] = (),
        node: str | None = None,
        workflow: str | None = None,
        level: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[TaskRow]:
        """Filtered page ordered by task id; ``after`` is the last id of the previous page."""
        where: list[str] = []
        args: list[Any] = []
        if status:
            where.append(f"status IN ({', '.join('?' * len(status))})")
            args.extend(status)
        for col, value in (("node", node), ("workflow", workflow), ("level", level)):
            if value is not None:
                where.append(f"{col} = ?")
                args.append(value)
        if after is not None:
            where.append("task_id > ?")
            args.append(after)
        sql = f"SELECT {_TASK_COLUMNS} FROM tasks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY task_id LIMIT ?"
        args.append(limit)
        return [TaskRow.from_db_row(r) for r in self.conn.execute(sql, args)]

    def count_tasks_by(self, *columns: str) -> list[tuple[Any, ...]]:
        cols = ", ".join(columns)
        sql = f"SELECT {cols}, COUNT(*) FROM tasks GROUP BY {cols}"
        return [tuple(r) for r in self.conn.execute(sql)]

    # -- workflows ------------------------------------------------------------

    def put_workflow(
        self, workflow_id: str, name: str, spec: Mapping[str, Any], ts_ms: int
    ) -> None:
        with self.transaction():
            self.db["workflows"].upsert(
                {
                    "workflow_id": workflow_id,
                    "name": name,
                    "spec": compact_json(spec),
                    "submitted_ms": ts_ms,
                },
                pk="workflow_id",
            )

    def get_workflow(self, workflow_id: str) -> dict[str, Any] | None:
        rows = list(self.db["workflows"].rows_where("workflow_id = ?", [workflow_id]))
        if not rows:
            return None
        row = rows[0]
        row["spec"] = json.loads(row["spec"])
        return row

    def list_workflows(self, *, after: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        where, args = ("workflow_id > ?", [after]) if after else (None, [])
        rows = self.db["workflows"].rows_where(where, args, order_by="workflow_id", limit=limit)
        return [dict(r, spec=json.loads(r["spec"])) for r in rows]

    # -- leases ---------------------------------------------------------------

    def put_lease(self, lease: LeaseRow) -> None:
        with self.transaction():
            self.db["leases"].upsert(
                {
                    "task_id": lease.task_id,
                    "epoch": lease.epoch,
                    "node_id": lease.node_id,
                    "duration_s": lease.duration_s,
                    "granted_ms": lease.granted_ms,
                    "deadline_ms": lease.deadline_ms,
                },
                pk="task_id",
            )

    def delete_lease(self, task_id: str) -> None:
        with self.transaction():
            self.conn.execute("DELETE FROM leases WHERE task_id = ?", [task_id])

    def leases(self) -> list[LeaseRow]:
        return [LeaseRow(**row) for row in self.db["leases"].rows]

    # -- events ---------------------------------------------------------------

    def append_events(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Append events (keys: ts_ms, kind, reason, task_id, node_id, epoch, data)."""
        with self.transaction():
            self.conn.executemany(
                "INSERT INTO events (ts_ms, kind, task_id, node_id, epoch, reason, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        ev["ts_ms"],
                        ev["kind"],
                        ev.get("task_id"),
                        ev.get("node_id"),
                        ev.get("epoch"),
                        ev.get("reason", ""),
                        compact_json(data) if (data := ev.get("data")) else "{}",
                    )
                    for ev in events
                ],
            )

    def events(
        self,
        *,
        after: int = 0,
        limit: int = 100,
        task_id: str | None = None,
        node_id: str | None = None,
        kind: str | None = None,
    ) -> list[EventRow]:
        where = ["seq > ?"]
        args: list[Any] = [after]
        for col, value in (("task_id", task_id), ("node_id", node_id), ("kind", kind)):
            if value is not None:
                where.append(f"{col} = ?")
                args.append(value)
        sql = (
            "SELECT seq, ts_ms, kind, task_id, node_id, epoch, reason, data FROM events "
            f"WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"
        )
        args.append(limit)
        return [EventRow.from_db_row(r) for r in self.conn.execute(sql, args)]

    def count_events_by_kind(self) -> dict[str, int]:
        sql = "SELECT kind, COUNT(*) FROM events GROUP BY kind"
        return {k: n for k, n in self.conn.execute(sql)}

    # -- learned placement inputs --------------------------------------------

    def learner(self) -> dict[str, Any] | None:
        """The controller's learned state (``shared.learning.LearnerState.to_dict``),
        ``None`` if never stored. Raises ``ValueError`` on text that is not JSON."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'learner'").fetchone()
        if row is None:
            return None
        doc = json.loads(row["value"])
        if not isinstance(doc, dict):
            raise ValueError("stored learner state is not an object")
        return doc

    def put_learner(self, doc: Mapping[str, Any]) -> None:
        """Replace the learned state (one row in ``meta``: bounded by
        ``shared.learning.MAX_KINDS``, saved at most every ``LEARNER_SAVE_S``)."""
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES ('learner', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [compact_json(doc)],
        )

    # -- peers (outbox acknowledgements) -------------------------------------

    def acked_seqs(self) -> dict[str, int]:
        return {r["node_id"]: r["acked_seq"] for r in self.db["peers"].rows}

    def set_acked_seqs(self, acked: Mapping[str, int]) -> None:
        with self.transaction():
            self.conn.executemany(
                "INSERT OR REPLACE INTO peers (node_id, acked_seq) VALUES (?, ?)",
                list(acked.items()),
            )
