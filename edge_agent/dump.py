"""``edge-agent dump``: what this agent holds, as one JSON document, read-only.

For tools that judge the agent from outside (the testbed's checker and its live
convergence monitors) without knowing the journal's tables: the journal
(``edge_agent/journal.py``) stays this package's business. The journal is opened
read-only (``mode=ro``; WAL lets a reader run beside the agent's writer), so a dump
works while the agent runs, after it stopped, or after a ``kill -9``, and never
changes anything.

The document (``DUMP_VERSION`` 1)::

    {"version": 1, "kind": "edge-agent", "node_id": "edge-1",
     "records": {task_id: TaskRecord.to_dict(), ...},  # every task record held here
     "outbox_depth": 0}                               # deltas not yet acknowledged
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from edge_agent.config import AgentConfig

__all__ = ["DUMP_VERSION", "JOURNAL", "dump", "read_journal"]

DUMP_VERSION = 1
#: The journal's file name in ``node.state_dir`` (``edge_agent/core.py`` opens it there).
JOURNAL = "journal.sqlite"


def read_journal(path: Path) -> dict[str, Any]:
    """``records`` and ``outbox_depth`` of the journal at ``path``, opened read-only.
    Raises ``FileNotFoundError`` when there is no journal and ``sqlite3.Error`` when it
    cannot be read (locked past the timeout, not a journal)."""
    if not path.exists():
        raise FileNotFoundError(path)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        rows = conn.execute("SELECT task_id, record FROM records").fetchall()
        (depth,) = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()
    finally:
        conn.close()
    return {"records": {tid: json.loads(text) for tid, text in rows}, "outbox_depth": int(depth)}


def dump(cfg: AgentConfig) -> dict[str, Any]:
    """The dump document of the agent configured by ``cfg`` (see the module doc)."""
    return {
        "version": DUMP_VERSION,
        "kind": "edge-agent",
        "node_id": cfg.node.id,
        **read_journal(cfg.state_dir / JOURNAL),
    }
