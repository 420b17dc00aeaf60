"""Read what a run left behind: the processes' dumps, ledgers, the history.

The controller's and the agents' records come through their ``dump`` commands
(``cloud-controller dump``, ``edge-agent dump``: ``cloud/dump.py``,
``edge_agent/dump.py``), never through their tables: the judge's final collection
runs each process's command on its config, and the live monitors, which poll every
replica several times a second, call the same modules' readers in this process
(a process start per poll would load the machine the run measures). Both read
their stores read-only, so reading never disturbs a process that is still running.

Hashes are computed *here*, with :func:`shared.crdt.content_hash` over each
side's dumped record, rather than trusting a hash either process reports: the
judge applies one function to both replicas.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cloud.dump import read_store
from edge_agent.dump import read_journal
from shared.clocks import Timestamp
from shared.crdt import AttemptStatus, TaskRecord, content_hash, visible_status

from .processes import dump_command

__all__ = [
    "DumpError",
    "Hasher",
    "collect_state",
    "journal_records",
    "outbox_depth",
    "read_dump",
    "read_ledgers",
    "summarize",
    "summarize_all",
]

DUMP_TIMEOUT_S = 120.0


class DumpError(RuntimeError):
    """A process's ``dump`` command failed (its exit status and the end of its stderr)."""


def read_dump(config: Path, program: str) -> dict[str, Any]:
    """The document ``program dump --config config`` prints (``program``:
    ``edge-agent`` or ``cloud-controller``); :class:`DumpError` if it fails."""
    if not config.exists():
        raise FileNotFoundError(config)
    proc = subprocess.run(
        dump_command(program, config),
        capture_output=True,
        text=True,
        timeout=DUMP_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        raise DumpError(f"{program} dump exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return dict(json.loads(proc.stdout))


def journal_records(journal: Path) -> dict[str, dict[str, Any]]:
    """Task id → record dict held in an agent's journal (read in this process)."""
    return dict(read_journal(journal)["records"])


def outbox_depth(journal: Path) -> int:
    """Deltas an agent still has to get acknowledged."""
    return int(read_journal(journal)["outbox_depth"])


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


class Hasher:
    """Visible status and content hash of records, computed once per distinct record:
    the live monitors poll every replica several times a second, and a record rarely
    changes between two polls. Safe to share between threads (a race at worst computes
    one hash twice)."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self._memo: dict[str, tuple[str, str]] = {}
        self._max = max_entries

    def of(self, record: Mapping[str, Any]) -> tuple[str, str]:
        key = json.dumps(record, sort_keys=True, separators=(",", ":"))
        hit = self._memo.get(key)
        if hit is None:
            rec = TaskRecord.from_dict(dict(record))
            hit = (visible_status(rec).value, content_hash(rec))
            if len(self._memo) >= self._max:
                self._memo.clear()
            self._memo[key] = hit
        return hit

    def controller(self, db: Path) -> dict[str, tuple[str, str]]:
        """Task id → (visible status, hash) at the controller (its store read here)."""
        return {tid: self.of(rec) for tid, rec in read_store(db)["records"].items()}

    def hashes(self, records: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
        """Task id → hash of each record (an agent's)."""
        return {tid: self.of(rec)[1] for tid, rec in records.items()}


def agent_config(run_dir: Path, node: str) -> Path:
    return run_dir / "agents" / node / "agent.toml"


def controller_config(run_dir: Path) -> Path:
    return run_dir / "controller" / "controller.toml"


def collect_state(run_dir: Path, nodes: Iterable[str]) -> dict[str, Any]:
    """Ground truth of a quiescent run from the processes' dumps: ``controller`` (task
    id → summary, ``None`` if its dump failed), ``agents`` (node → task id → hash,
    ``None`` if its dump failed) and ``losses`` (confirmed-loss events: attempts marked
    ``lost`` in the controller's records, and its ``presumed_lost`` decisions, which a node's
    later report of the same attempt outranks in the record), plus any ``errors``."""
    errors: list[str] = []
    failures = (OSError, sqlite3.Error, ValueError, KeyError, DumpError, subprocess.SubprocessError)
    controller: dict[str, dict[str, Any]] | None
    presumed: list[dict[str, Any]] = []
    try:
        dumped = read_dump(controller_config(run_dir), "cloud-controller")
        controller = summarize_all(dumped["records"])
        presumed = [
            {
                "task_id": p["task_id"],
                "node": p["node_id"],
                "dot": p["attempt"],
                "wall": p["ts_ms"] / 1000.0,
            }
            for p in dumped.get("presumed_lost", ())
        ]
    except failures as exc:
        controller = None
        errors.append(f"controller: {type(exc).__name__}: {exc}")
    agents: dict[str, dict[str, str] | None] = {}
    for node in nodes:
        try:
            records = read_dump(agent_config(run_dir, node), "edge-agent")["records"]
            agents[node] = {
                tid: content_hash(TaskRecord.from_dict(r)) for tid, r in records.items()
            }
        except failures as exc:
            agents[node] = None
            errors.append(f"{node}: {type(exc).__name__}: {exc}")
    # a loss the record shows, and the controller's inference the node's own report outranked
    losses = [loss for s in (controller or {}).values() for loss in s["losses"]] + presumed
    return {"controller": controller, "agents": agents, "losses": losses, "errors": errors}
