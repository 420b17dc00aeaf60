"""The rows of the controller's store (cloud/store.py) and the compact JSON its text
columns hold: typed values the task table, the ingest and the queries pass around, kept
apart from the SQL that reads and writes them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

__all__ = ["EventRow", "LeaseRow", "TaskRow", "compact_json"]

_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


def compact_json(value: object) -> str:
    """Compact sorted-key JSON, as ``json.dumps`` with these options writes it, from one
    encoder (``json.dumps`` builds a new one at every call that passes options)."""
    return _ENCODER.encode(value)


@lru_cache(maxsize=4096)
def _placed_json(placed: tuple[tuple[int, str], ...]) -> str:
    """The ``placed`` column of a placement history (epoch -> node, as ``(epoch, node)``
    pairs): encoded at every row write, and most tasks share a few histories (one epoch
    on one of a fleet's nodes). Bounded; the values are the controller's own."""
    return compact_json({str(epoch): node for epoch, node in placed})


@dataclass(frozen=True, slots=True)
class TaskRow:
    """What the store keeps for one task: the record plus derived columns."""

    task_id: str
    # The record's dict; rows built for writing may carry its canonical JSON text
    # instead (already serialised for the content hash). Rows read back hold dicts.
    record: dict[str, Any] | str
    status: str
    node: str | None
    epoch: int
    level: str | None
    workflow: str | None
    priority: int
    content_hash: str
    submitted_ms: int
    updated_ms: int
    # Like ``record``: a dict, or its JSON text when the writer has it already.
    explanation: dict[str, Any] | str | None = None
    origin: str | None = None  # node that submitted it locally; None: the API
    # Every epoch's node (``TaskMeta.placed``); empty in rows of a schema-1 file.
    placed: Mapping[int, str] = field(default_factory=dict)

    def as_db_values(self) -> tuple[Any, ...]:
        """The row's column values, in ``_TASK_COLUMNS`` order."""
        return (
            self.task_id,
            self.record if isinstance(self.record, str) else compact_json(self.record),
            self.status,
            self.node,
            self.epoch,
            self.level,
            self.workflow,
            self.priority,
            self.content_hash,
            self.submitted_ms,
            self.updated_ms,
            (
                self.explanation
                if self.explanation is None or isinstance(self.explanation, str)
                else compact_json(self.explanation)
            ),
            self.origin,
            _placed_json(tuple(self.placed.items())),
        )

    @classmethod
    def from_db_row(cls, row: Mapping[str, Any]) -> TaskRow:
        explanation = row["explanation"]
        return cls(
            task_id=row["task_id"],
            record=json.loads(row["record"]),
            status=row["status"],
            node=row["node"],
            epoch=row["epoch"],
            level=row["level"],
            workflow=row["workflow"],
            priority=row["priority"],
            content_hash=row["content_hash"],
            submitted_ms=row["submitted_ms"],
            updated_ms=row["updated_ms"],
            explanation=None if explanation is None else json.loads(explanation),
            origin=row["origin"],
            placed={int(epoch): node for epoch, node in json.loads(row["placed"] or "{}").items()},
        )


@dataclass(frozen=True, slots=True)
class EventRow:
    seq: int
    ts_ms: int
    kind: str
    task_id: str | None
    node_id: str | None
    epoch: int | None
    reason: str
    data: dict[str, Any]

    @classmethod
    def from_db_row(cls, row: Mapping[str, Any]) -> EventRow:
        return cls(
            seq=row["seq"],
            ts_ms=row["ts_ms"],
            kind=row["kind"],
            task_id=row["task_id"],
            node_id=row["node_id"],
            epoch=row["epoch"],
            reason=row["reason"],
            data=json.loads(row["data"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts_ms": self.ts_ms,
            "kind": self.kind,
            "task_id": self.task_id,
            "node_id": self.node_id,
            "epoch": self.epoch,
            "reason": self.reason,
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class LeaseRow:
    task_id: str
    epoch: int
    node_id: str
    duration_s: float
    granted_ms: int
    # Wall-clock time after which the controller may treat the lease as expired:
    # grant + duration + margin, fixed at grant time.
    deadline_ms: int
