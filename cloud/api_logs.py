"""``GET /api/v1/tasks/{task_id}/logs``: the output of one attempt of a task.

A node sends the end of each attempt's stdout and stderr with the attempt's terminal
status (``shared.crdt.AttemptLog``, bounded by ``shared.crdt.MAX_LOG_TAIL`` per stream), so
the tail lives in the task's record: the controller serves it from the record it stores,
whether or not the node is still reachable. While an attempt runs, the controller asks its
node for the output so far (``cloud/log_stream.py``: ``log_request`` / ``log_chunk``); a node
that is offline or does not answer in time leaves ``available: false`` and a ``message``
saying so. An attempt whose node never reported its end (lost, or cancelled before it
started) has no log.

``offset`` (bytes of the stream the reader already has) makes the route a cursor:
the answer holds the stream from there (or from the oldest byte still kept, when that is
later: ``truncated``), and ``next_offset`` is where the next read starts. ``continuum logs
--follow`` reads the running attempt's output that way, then the rest of the uploaded tail.

Attempts are numbered from 1 in the order they started (``started_hlc``, else the stamp of
their last change); ``attempt`` defaults to the latest.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from shared.clocks import Timestamp
from shared.crdt import Attempt, AttemptStatus, Dot, TaskRecord, visible_status
from shared.errors import Problem, ValidationError
from shared.protocol import LOG_STREAMS, LogChunk, log_span

from .api_http import NotFound, json_response

__all__ = ["STREAMS", "LogHandlers", "numbered_attempts", "task_logs", "with_live"]

#: The streams an attempt's log holds.
STREAMS = LOG_STREAMS


class _TaskSource(Protocol):
    def get_task(self, task_id: str) -> dict[str, Any]: ...


class _LogSource(_TaskSource, Protocol):
    async def live_log(
        self, node_id: str, task_id: str, attempt: str, stream: str, offset: int
    ) -> LogChunk | None: ...


def numbered_attempts(rec: TaskRecord) -> list[tuple[Dot, Attempt]]:
    """The record's attempts in the order they started (attempt ``n`` is item ``n - 1``)."""

    def started(item: tuple[Dot, Attempt]) -> tuple[Timestamp, Dot]:
        dot, attempt = item
        return Timestamp.decode(attempt.started_hlc or attempt.hlc), dot

    return sorted(rec.attempts.items(), key=started)


def task_logs(
    service: _TaskSource,
    task_id: str,
    *,
    attempt: int | None,
    stream: str,
    offset: int | None = None,
) -> dict[str, Any]:
    """The answer of the logs route from the stored record (raises :class:`NotFound` for an
    unknown task or attempt number): the uploaded tail from ``offset``, or all of it."""
    rec = TaskRecord.from_dict(service.get_task(task_id)["record"])
    attempts = numbered_attempts(rec)
    if not attempts:
        raise NotFound("attempt", f"{task_id} has not started yet")
    number = len(attempts) if attempt is None else attempt
    if not 1 <= number <= len(attempts):
        raise NotFound("attempt", f"{task_id} #{number} (it has {len(attempts)})")
    dot, chosen = attempts[number - 1]
    asked = offset or 0
    tail = ("" if chosen.log is None else getattr(chosen.log, stream)).encode("utf-8")
    total = (
        len(tail) if chosen.log is None else max(len(tail), getattr(chosen.log, f"{stream}_bytes"))
    )
    span = log_span(tail, total, asked, len(tail))
    if chosen.log is None:
        span = span._replace(offset=asked, next_offset=asked)
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
        "live": False,
        "text": span.text,
        "bytes": total,
        "kept_bytes": span.next_offset - span.offset,
        "truncated": span.offset > asked,
        "offset": span.offset,
        "next_offset": span.next_offset,
        "message": _missing(chosen),
    }


def with_live(answer: dict[str, Any], chunk: LogChunk, asked: int) -> dict[str, Any]:
    """``answer`` (of a running attempt) with the output its node sent (``chunk``)."""
    return {
        **answer,
        "available": True,
        "live": True,
        "text": chunk.text,
        "bytes": chunk.total,
        "kept_bytes": chunk.next_offset - chunk.offset,
        "truncated": chunk.offset > asked,
        "offset": chunk.offset,
        "next_offset": max(chunk.next_offset, asked),
        "message": None,
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


def _count_param(request: web.Request, name: str, lo: int) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18 and int(raw) >= lo):
        raise ValidationError([Problem(name, f"must be an integer >= {lo}")], what="query")
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

    service: _LogSource

    async def task_logs(self, request: web.Request) -> web.Response:
        task_id, stream = request.match_info["task_id"], _stream_param(request)
        offset = _count_param(request, "offset", 0)
        answer = task_logs(
            self.service,
            task_id,
            attempt=_count_param(request, "attempt", 1),
            stream=stream,
            offset=offset,
        )
        if not answer["ended"]:
            chunk = await self.service.live_log(
                answer["node"], task_id, answer["dot"], stream, offset or 0
            )
            if chunk is not None and chunk.running:
                answer = with_live(answer, chunk, offset or 0)
        return json_response(answer)
