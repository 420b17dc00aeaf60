"""``cloud-controller dump``: the controller's task records as one JSON document, read-only.

For tools that judge the controller from outside (the testbed's checker and its live
monitors) without knowing the store's tables: the store (``cloud/store.py``) stays this
package's business. The database is opened read-only (``mode=ro``; WAL lets a reader run
beside the controller's writer), so a dump works while the controller runs or after it
stopped, and never changes anything.

The document (``DUMP_VERSION`` 1)::

    {"version": 1, "kind": "controller", "node_id": "controller",
     "records": {task_id: TaskRecord.to_dict(), ...},  # every task the controller knows
     "presumed_lost": [{"task_id", "node_id", "epoch", "attempt", "ts_ms"}, ...]}

``presumed_lost``: the attempts the controller marked ``lost`` when it re-placed their
task off a node out of contact (its ``presumed_lost`` events, oldest first; ``attempt`` is
``null`` for a placement there of which no attempt was known: a start report lost). The record
may no longer show that mark (the node's own report, when it comes, outranks the
inference: success wins), and a judge of "re-run only after a confirmed loss" needs it.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from .config import ControllerConfig

__all__ = ["DUMP_VERSION", "dump", "read_presumed_lost", "read_store"]

DUMP_VERSION = 1


def read_store(path: Path) -> dict[str, Any]:
    """``records`` of the controller's store at ``path``, opened read-only. Raises
    ``FileNotFoundError`` when there is no store and ``sqlite3.Error`` when it cannot be
    read (locked past the timeout, not a store)."""
    rows = _query(path, "SELECT task_id, record FROM tasks")
    return {"records": {tid: json.loads(text) for tid, text in rows}}


def read_presumed_lost(path: Path) -> list[dict[str, Any]]:
    """The dump's ``presumed_lost`` (see the module doc), as :func:`read_store` reads. Only
    the dump asks for it: the testbed's live monitors poll ``read_store`` many times a
    second."""
    rows = _query(
        path,
        "SELECT task_id, node_id, epoch, data, ts_ms FROM events"
        " WHERE kind = 'presumed_lost' ORDER BY seq",
    )
    return [
        {
            "task_id": tid,
            "node_id": node,
            "epoch": epoch,
            "attempt": json.loads(data).get("attempt"),
            "ts_ms": ts_ms,
        }
        for tid, node, epoch, data, ts_ms in rows
    ]


def _query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    if not path.exists():
        raise FileNotFoundError(path)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def dump(cfg: ControllerConfig) -> dict[str, Any]:
    """The dump document of the controller configured by ``cfg`` (see the module doc)."""
    return {
        "version": DUMP_VERSION,
        "kind": "controller",
        "node_id": cfg.controller.node_id,
        **read_store(cfg.db_path),
        "presumed_lost": read_presumed_lost(cfg.db_path),
    }
