"""``GET /api/v1/tasks/{task_id}/logs``: the output tail of one attempt of a task.

A node sends the end of each attempt's stdout and stderr with the attempt's terminal
status (``shared.crdt.AttemptLog``, bounded by ``shared.crdt.MAX_LOG_TAIL`` per stream), so
the tail lives in the task's record: the controller serves it from the record it stores,
whether or not the node is still reachable. An attempt that has not ended has no tail yet
(``available: false`` and a ``message`` saying so); neither has one whose node never reported
its end (lost, or cancelled before it started).

Attempts are numbered from 1 in the order they started (``started_hlc``, else the stamp of
their last change); ``attempt`` defaults to the latest.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from shared.clocks import Timestamp
from shared.crdt import Attempt, AttemptStatus, Dot, TaskRecord, visible_status
from shared.errors import Problem, ValidationError

from .api_http import NotFound, json_response

__all__ = ["STREAMS", "LogHandlers", "numbered_attempts", "task_logs"]

#: The streams an attempt's log holds.
STREAMS = ("stdout", "stderr")


class _TaskSource(Protocol):
    def get_task(self, task_id: str) -> dict[str, Any]: ...


def numbered_attempts(rec: TaskRecord) -> list[tuple[Dot, Attempt]]:
    """The record's attempts in the order they started (attempt ``n`` is item ``n - 1``)."""

    def started(item: tuple[Dot, Attempt]) -> tuple[Timestamp, Dot]:
        dot, attempt = item
        return Timestamp.decode(attempt.started_hlc or attempt.hlc), dot

    return sorted(rec.attempts.items(), key=started)


def task_logs(
    service: _TaskSource, task_id: str, *, attempt: int | None, stream: str
) -> dict[str, Any]:
    """The answer of the logs route (raises :class:`NotFound` for an unknown task or
    attempt number)."""
    rec = TaskRecord.from_dict(service.get_task(task_id)["record"])
    attempts = numbered_attempts(rec)
    if not attempts:
        raise NotFound("attempt", f"{task_id} has not started yet")
    number = len(attempts) if attempt is None else attempt
    if not 1 <= number <= len(attempts):
        raise NotFound("attempt", f"{task_id} #{number} (it has {len(attempts)})")
    dot, chosen = attempts[number - 1]
    text = "" if chosen.log is None else getattr(chosen.log, stream)
    kept = len(text.encode("utf-8"))
    total = kept if chosen.log is None else max(kept, getattr(chosen.log, f"{stream}_bytes"))
    return {
        "task_id": task_id,
        "task_status": visible_status(rec).value,
        "attempt": number,
        "attempts": len(attempts),
        "dot": f"{dot[0]}:{dot[1]}",
        "node": chosen.node,
        "status": chosen.status.name.lower(),
        "ended": chosen.status.terminal,
        "stream": stream,
        "available": chosen.log is not None,
        "text": text,
        "bytes": total,
        "kept_bytes": kept,
        "truncated": total > kept,
        "message": _missing(chosen),
    }


def _missing(attempt: Attempt) -> str | None:
    """Why an attempt has no log (``None`` when it has one)."""
    if attempt.log is not None:
        return None
    if not attempt.status.terminal:
        return f"running on {attempt.node}; its log is available when it ends"
    if attempt.status == AttemptStatus.LOST:
        return f"attempt lost: {attempt.node} never reported its end, so no log was uploaded"
    return f"{attempt.node} uploaded no log for this attempt ({attempt.reason or 'no output'})"


def _attempt_param(request: web.Request) -> int | None:
    raw = request.query.get("attempt")
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9 and int(raw) >= 1):
        raise ValidationError([Problem("attempt", "must be an integer >= 1")], what="query")
    return int(raw)


def _stream_param(request: web.Request) -> str:
    stream = request.query.get("stream", "stdout")
    if stream not in STREAMS:
        raise ValidationError(
            [Problem("stream", f"{stream[:40]!r} is not one of {', '.join(STREAMS)}")],
            what="query",
        )
    return stream


class LogHandlers:
    """The route's handler, mixed into ``cloud.api.Handlers`` (which sets ``service``)."""

    service: _TaskSource

    async def task_logs(self, request: web.Request) -> web.Response:
        return json_response(
            task_logs(
                self.service,
                request.match_info["task_id"],
                attempt=_attempt_param(request),
                stream=_stream_param(request),
            )
        )
