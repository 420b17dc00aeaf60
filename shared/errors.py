"""Typed errors shared by every layer.

Errors are typed by blame, as in h11: ``LocalProtocolError`` means *we* tried to
do something illegal, ``RemoteProtocolError`` means a peer sent something
illegal. Input from the network enters at one decode point, which re-raises
anything it finds as ``RemoteProtocolError``; shells catch that one type, count
it, log it and carry on.

``ValidationError`` collects *every* problem found in one piece of input, each
with the path of the field (``retry.backoff_s``, ``tasks[2].depends_on[0]``), so
a user fixes a spec in one round trip instead of one error at a time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ClockSkewError",
    "ContinuumError",
    "LocalProtocolError",
    "Problem",
    "ProtocolError",
    "RemoteProtocolError",
    "SpecConflictError",
    "ValidationError",
]


class ContinuumError(Exception):
    """Base class of every error Continuum raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an input: where (dotted path) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {self.message}"


class ValidationError(ContinuumError, ValueError):
    """Input failed validation; ``problems`` lists every problem found."""

    def __init__(self, problems: Iterable[Problem], *, what: str = "input") -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        self.what = what
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid {what} ({len(self.problems)} problem(s)):\n{lines}")

    def as_dict(self) -> dict[str, object]:
        """JSON-able form for API error bodies."""
        return {
            "error": "validation",
            "what": self.what,
            "problems": [{"path": p.path, "message": p.message} for p in self.problems],
        }


class ProtocolError(ContinuumError):
    """Base of protocol errors; ``reason`` is a short machine-readable tag used as
    a metric label (``too_large``, ``bad_json``, ``bad_version``, ``invalid``...)."""

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class LocalProtocolError(ProtocolError):
    """We tried to build or send something the protocol forbids (a bug on our side)."""


class RemoteProtocolError(ProtocolError):
    """A peer sent something the protocol forbids; reject it, count it, keep running."""


class ClockSkewError(ContinuumError):
    """A remote hybrid-logical-clock timestamp runs further ahead of our physical
    clock than the configured bound allows; accepting it would drag our clock."""

    def __init__(self, remote_ms: int, physical_ms: int, max_drift_ms: int) -> None:
        super().__init__(
            f"remote clock {remote_ms} ms is {remote_ms - physical_ms} ms ahead of local "
            f"{physical_ms} ms (bound {max_drift_ms} ms)"
        )
        self.remote_ms = remote_ms
        self.physical_ms = physical_ms
        self.max_drift_ms = max_drift_ms


class SpecConflictError(ContinuumError):
    """Two different immutable specs were seen under one task id."""

    def __init__(self, task_id: str, ours: str, theirs: str) -> None:
        super().__init__(
            f"task {task_id!r}: two different specs (hash {ours[:12]} vs {theirs[:12]})"
        )
        self.task_id = task_id
        self.ours = ours
        self.theirs = theirs
