"""Read what a run left behind: agent journals, the controller's store, ledgers.

Hashes are computed *here*, with :func:`shared.crdt.content_hash` over each
side's stored record, rather than trusting a hash either process reports: the
judge applies one function to both replicas. Databases are opened read-only
(``mode=ro``) so reading never disturbs a process that is still running (WAL
allows concurrent readers).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from shared.clocks import Timestamp
from shared.crdt import AttemptStatus, TaskRecord, content_hash, visible_status

__all__ = [
    "controller_records",
    "journal_records",
    "read_ledgers",
    "summarize",
    "summarize_all",
]


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    if not db.exists():
        raise FileNotFoundError(db)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def journal_records(journal: Path) -> dict[str, dict[str, Any]]:
    """Task id → record dict, from an agent's ``journal.sqlite`` (table ``records``)."""
    return {tid: json.loads(rec) for tid, rec in _rows(journal, "SELECT task_id, record FROM records")}


def controller_records(db: Path) -> dict[str, dict[str, Any]]:
    """Task id → record dict, from the controller's store (table ``tasks``)."""
    return {tid: json.loads(rec) for tid, rec in _rows(db, "SELECT task_id, record FROM tasks")}


def summarize(record: dict[str, Any]) -> dict[str, Any]:
    """What the checker needs of one record: visible status, content hash, the
    placement in force, and the confirmed losses (attempts marked ``lost``, with
    the host-clock time of that decision from its HLC stamp)."""
    rec = TaskRecord.from_dict(record)
    losses = []
    for (node, counter), attempt in rec.attempts.items():
        if attempt.status == AttemptStatus.LOST:
            losses.append(
                {
                    "task_id": rec.task_id,
                    "node": node,
                    "dot": f"{node}:{counter}",
                    "wall": Timestamp.decode(attempt.hlc).wall_ms / 1000.0,
                }
            )
    placement = rec.placement
    return {
        "status": visible_status(rec).value,
        "hash": content_hash(rec),
        "node": None if placement is None else placement.node,
        "epoch": None if placement is None else placement.epoch,
        "level": None if placement is None else placement.level,
        "attempts": len(rec.attempts),
        "losses": losses,
    }


def summarize_all(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {tid: summarize(rec) for tid, rec in records.items()}


def read_ledgers(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every ledger line; a torn last line (a task killed mid-write) is skipped."""
    lines: list[dict[str, Any]] = []
    for path in paths:
        for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
    return lines
