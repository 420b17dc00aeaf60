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
    return {
        tid: json.loads(rec) for tid, rec in _rows(journal, "SELECT task_id, record FROM records")
    }


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


# -- a run directory -----------------------------------------------------------------

HISTORY = "history.jsonl"
COLLECTED = "collected.json"
REPORT = "report.json"


def ledger_dir(run_dir: Path) -> Path:
    return run_dir / "ledger"


def controller_db(run_dir: Path) -> Path:
    return run_dir / "controller" / "state" / "controller.db"


def agent_journal(run_dir: Path, node: str) -> Path:
    return run_dir / "agents" / node / "state" / "journal.sqlite"


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The history the runner wrote, one op per line (a torn last line is skipped)."""
    return read_ledgers([run_dir / HISTORY])


def outbox_depth(journal: Path) -> int:
    """Deltas an agent still has to get acknowledged (its ``outbox`` table)."""
    return int(_rows(journal, "SELECT COUNT(*) FROM outbox")[0][0])


def status_counts(db: Path) -> dict[str, int]:
    """Tasks by stored status at the controller (the live display's counts)."""
    rows = _rows(db, "SELECT status, COUNT(*) FROM tasks GROUP BY status")
    return {str(status): int(count) for status, count in rows}


def agent_hashes(journal: Path) -> dict[str, str]:
    """Task id → content hash of an agent's stored record."""
    return {
        tid: content_hash(TaskRecord.from_dict(rec))
        for tid, rec in journal_records(journal).items()
    }


class Hasher:
    """Visible status and content hash of stored records, computed once per distinct
    stored text: the live monitors poll every replica several times a second, and a
    record rarely changes between two polls. Safe to share between threads (a race
    at worst computes one hash twice)."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self._memo: dict[str, tuple[str, str]] = {}
        self._max = max_entries

    def of(self, text: str) -> tuple[str, str]:
        hit = self._memo.get(text)
        if hit is None:
            rec = TaskRecord.from_dict(json.loads(text))
            hit = (visible_status(rec).value, content_hash(rec))
            if len(self._memo) >= self._max:
                self._memo.clear()
            self._memo[text] = hit
        return hit

    def controller(self, db: Path) -> dict[str, tuple[str, str]]:
        """Task id → (visible status, hash) at the controller."""
        rows = _rows(db, "SELECT task_id, record FROM tasks")
        return {tid: self.of(text) for tid, text in rows}

    def agent(self, journal: Path) -> dict[str, str]:
        """Task id → hash in an agent's journal."""
        rows = _rows(journal, "SELECT task_id, record FROM records")
        return {tid: self.of(text)[1] for tid, text in rows}


def collect_state(run_dir: Path, nodes: Iterable[str]) -> dict[str, Any]:
    """Ground truth of a quiescent run from the databases it left behind:
    ``controller`` (task id → summary, ``None`` if unreadable), ``agents`` (node →
    task id → hash, ``None`` if unreadable) and ``losses`` (confirmed-loss events
    found in the controller's records), plus any read ``errors``."""
    errors: list[str] = []
    controller: dict[str, dict[str, Any]] | None
    try:
        controller = summarize_all(controller_records(controller_db(run_dir)))
    except (OSError, sqlite3.Error, ValueError, KeyError) as exc:
        controller = None
        errors.append(f"controller: {type(exc).__name__}: {exc}")
    agents: dict[str, dict[str, str] | None] = {}
    for node in nodes:
        try:
            agents[node] = agent_hashes(agent_journal(run_dir, node))
        except (OSError, sqlite3.Error, ValueError, KeyError) as exc:
            agents[node] = None
            errors.append(f"{node}: {type(exc).__name__}: {exc}")
    losses = [loss for s in (controller or {}).values() for loss in s["losses"]]
    return {"controller": controller, "agents": agents, "losses": losses, "errors": errors}
