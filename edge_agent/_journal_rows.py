"""The journal's rows as the agent reads them: typed, immutable (split from ``journal.py``,
which re-exports them)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

__all__ = [
    "PROCESS_FIELDS",
    "QUEUED_FIELDS",
    "OutboxRow",
    "ProcessRow",
    "QueuedRow",
    "as_stored",
    "fields_of",
]


class OutboxRow(NamedTuple):
    """An outbox row as the uplink sends it (``Journal.outbox_pending``)."""

    seq: int
    obj: object  # what add_outbox was given, or None
    delta: dict[str, Any] | None  # the row parsed, when obj is None
    size: int  # bytes of its JSON


@dataclass(frozen=True, slots=True, kw_only=True)
class QueuedRow:
    """Work waiting for a start or a retry (times in wall-clock milliseconds)."""

    task_id: str
    epoch: int
    level: str
    priority: int
    deadline_ms: int | None
    enqueued_ms: int
    not_before_ms: int
    failures: int
    source: str  # ``placed`` by the controller or ``local`` (the local API)
    lease_s: float | None
    inputs: dict[str, Any] = field(default_factory=dict)  # the dependencies' results

    def to_row(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies every field (a tenth of a submission's time).
        return {**fields_of(self, QUEUED_FIELDS), "inputs": json.dumps(self.inputs)}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> QueuedRow:
        return cls(**{**row, "inputs": json.loads(row.get("inputs") or "{}")})


QUEUED_FIELDS = tuple(f.name for f in fields(QueuedRow))  # ``inputs`` last


def fields_of(row: object, names: tuple[str, ...]) -> dict[str, Any]:
    """A row's fields by name (their values are plain: no copy needed)."""
    return {name: getattr(row, name) for name in names}


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessRow:
    """A running attempt. ``deadline``: its lease fence (``CLOCK_MONOTONIC`` seconds);
    ``task_deadline_ms``: the task's deadline as its queue row held it (wall-clock ms, ``None``
    for none, or in a row an earlier version wrote), which a retry keeps."""

    attempt: str
    task_id: str
    epoch: int
    level: str
    watchdog_pid: int
    pgid: int | None
    started_ms: int
    deadline: float | None
    failures: int
    source: str
    task_deadline_ms: int | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ProcessRow:
        return cls(**row)


PROCESS_FIELDS = tuple(f.name for f in fields(ProcessRow))


def as_stored(row: ProcessRow) -> ProcessRow:
    """``row`` as the ``processes`` table gives it back (``Journal.process`` answers from
    memory with this): its columns' affinities applied as SQLite applies them to the values
    bound (an int in the ``REAL`` column comes back a float, an integral float in an
    ``INTEGER`` one an int, a ``str`` subclass as plain text)."""
    return ProcessRow(
        attempt=_text(row.attempt),
        task_id=_text(row.task_id),
        epoch=_integer(row.epoch),
        level=_text(row.level),
        watchdog_pid=_integer(row.watchdog_pid),
        pgid=_integer(row.pgid),
        started_ms=_integer(row.started_ms),
        deadline=None if row.deadline is None else float(row.deadline),
        failures=_integer(row.failures),
        source=_text(row.source),
        task_deadline_ms=_integer(row.task_deadline_ms),
    )


def _text(value: Any) -> Any:
    return str.__str__(value) if isinstance(value, str) else value


def _integer(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value
