"""A run's history (Jepsen-style ops, appended to ``history.jsonl`` as they happen) and the
live state the progress display shows. Kept apart from :mod:`.runner` so the display and
the tests need neither processes nor brokers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["History", "LiveState", "NodeState"]


class History:
    """The run's history: ops appended to a list and, line by line, to a file
    (so a run that crashes still leaves what it saw)."""

    def __init__(self, path: Path) -> None:
        self.ops: list[dict[str, Any]] = []
        self.t0 = time.monotonic()
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.listeners: list[Callable[[dict[str, Any]], None]] = []

    def start_clock(self) -> None:
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def add(self, process: str, type_: str, f: str, value: Any) -> dict[str, Any]:
        op = {
            "process": process,
            "type": type_,
            "f": f,
            "value": value,
            "time": round(self.now(), 4),
            "wall": time.time(),
        }
        self.ops.append(op)
        self._fh.write(json.dumps(op, default=str) + "\n")
        self._fh.flush()
        for listener in self.listeners:
            listener(op)
        return op

    def close(self) -> None:
        self._fh.close()


@dataclass
class NodeState:
    """What the live display shows of one agent."""

    alive: bool = True
    link: str = "?"  # link state the controller reports
    outbox: int = 0


@dataclass
class LiveState:
    phase: str = "starting"
    elapsed: float = 0.0
    duration: float = 0.0
    submitted: int = 0
    planned: int = 0
    tasks: dict[str, int] = field(default_factory=dict)
    nodes: dict[str, NodeState] = field(default_factory=dict)
    faults: dict[str, dict[str, object]] = field(default_factory=dict)
    recent: list[str] = field(default_factory=list)
    notes: int = 0  # notes ever made (``recent`` keeps the last six)
