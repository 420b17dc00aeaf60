"""What the controller and the agents have stored, read while a run goes on through
their dump readers (``cloud/dump.py``, ``edge_agent/dump.py``; read-only): the live
convergence monitors, the settle phase's quiescence and the progress display's counts.
The judge reads the same through the processes' ``dump`` commands after the run (see
:mod:`.collect`); both hash records with one :class:`.collect.Hasher`."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edge_agent.dump import read_journal

from . import collect
from .checker import TERMINAL

__all__ = ["POLL_S", "Observer", "acknowledged"]

#: How often the live monitors look (an Observer's controller snapshot lives half that).
POLL_S = 0.25


def acknowledged(ops: Iterable[Mapping[str, Any]]) -> set[str]:
    """Task ids of the submissions the client saw acknowledged (``ok``)."""
    subs: dict[int, list[str]] = {}
    ok: set[int] = set()
    for op in ops:
        if op["f"] != "submit":
            continue
        req = int(op["value"]["request"])
        if op["type"] == "invoke":
            subs[req] = [t["task_id"] for t in op["value"]["tasks"]]
        elif op["type"] == "ok":
            ok.add(req)
    return {t for r in ok for t in subs.get(r, ())}


class Observer:
    """Read-only views of one run directory; one controller snapshot serves every
    caller within ``max_age_s``."""

    def __init__(self, out: Path, node_ids: Sequence[str], *, max_age_s: float) -> None:
        self.out = out
        self.node_ids = list(node_ids)
        self.max_age_s = max_age_s
        self._hasher = collect.Hasher()
        self._snapshot: tuple[float, dict[str, tuple[str, str]] | None] = (0.0, None)

    def controller_hashes(self) -> dict[str, tuple[str, str]] | None:
        """task id → (visible status, content hash) at the controller (``None``: unreadable)."""
        now = time.monotonic()
        taken, snapshot = self._snapshot
        if snapshot is not None and now - taken < self.max_age_s:
            return snapshot
        try:
            snapshot = self._hasher.controller(collect.controller_db(self.out))
        except (OSError, sqlite3.Error):
            return None
        self._snapshot = (now, snapshot)
        return snapshot

    def node_converged(self, node: str, ctl: Mapping[str, tuple[str, str]]) -> bool:
        """The agent's outbox is empty and each record it holds equals the controller's."""
        try:
            dumped = read_journal(collect.agent_journal(self.out, node))
        except (OSError, sqlite3.Error):
            return False
        if dumped["outbox_depth"] > 0:
            return False
        hashes = self._hasher.hashes(dumped["records"])
        return all(tid in ctl and ctl[tid][1] == h for tid, h in hashes.items())

    def status_counts(self) -> dict[str, int] | None:
        """Tasks by visible status at the controller (``None``: unreadable)."""
        ctl = self.controller_hashes()
        return None if ctl is None else dict(Counter(status for status, _ in ctl.values()))

    def quiescent(self, acked: set[str]) -> tuple[bool, str, set[str] | None]:
        """(quiescent?, why not, the ``acked`` tasks not terminal: ``None`` when the
        controller's store could not be read)."""
        ctl = self.controller_hashes()
        if ctl is None:
            return False, "controller store unreadable", None
        open_ = {t for t in acked if ctl.get(t, ("?",))[0] not in TERMINAL}
        if open_:
            return False, f"{len(open_)} tasks not terminal", open_
        behind = [n for n in self.node_ids if not self.node_converged(n, ctl)]
        if behind:
            return False, f"not converged: {', '.join(behind)}", open_
        return True, "quiescent", open_
