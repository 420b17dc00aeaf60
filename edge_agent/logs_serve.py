"""The node's answer to ``log_request``: the live output of an attempt running here.

While output arrives, the task supervisor rewrites ``live.json`` in the attempt's run
directory (its current output tails and byte counts; the format: ``_livelog.py``) at most
once a second. A request names the attempt by its dot; only an attempt of this node that is
running now is read (the run directory comes from the executor, never from the request),
and the answer is at most the span the request asked for (``shared.protocol.log_span``). For
anything else the answer says ``running: false``: the controller then serves what the
attempt's end uploaded. Nothing is journaled: a lost request or answer is simply asked again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edge_agent import _safefs
from edge_agent.core import Core
from edge_agent.uplink import Uplink
from shared.protocol import LogChunk, LogRequest, log_span

__all__ = ["LogServer", "read_live"]

#: live.json (``_livelog.LIVE``) holds two tails of ``executor.output_tail_bytes``, escaped.
_MAX_LIVE_BYTES = 16 << 20


def read_live(run_dir: Path) -> dict[str, Any] | None:
    """The attempt's ``live.json`` (``None`` before its first output, or unreadable)."""
    try:
        run_fd = _safefs.open_dir(run_dir)
    except OSError:
        return None
    try:
        raw = _safefs.read_file_at(run_fd, "live.json", _MAX_LIVE_BYTES)
    finally:
        os.close(run_fd)
    try:
        data = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


class LogServer:
    def __init__(self, core: Core, uplink: Uplink) -> None:
        self.core = core
        self.uplink = uplink

    def answer(self, req: LogRequest) -> None:
        """Publish the ``log_chunk`` answering ``req`` (dropped while the link is down)."""
        self.core.counters["log_requests"] += 1
        self.uplink.publish("up", "log_chunk", self.chunk(req))

    def chunk(self, req: LogRequest) -> LogChunk:
        key = f"{req.task_id}/{req.attempt}"  # edge_agent.core.attempt_key
        node = req.attempt.rpartition(":")[0]
        running = self.core.running.get(key) if node == self.core.node else None
        live = None
        if running is not None:
            live = read_live(self.core.executor.run_dir(req.task_id, key)) or {}
        answer = LogChunk(req.request_id, req.task_id, req.attempt, req.stream, live is not None)
        if not live:
            return answer
        tail = str(live.get(req.stream) or "").encode("latin-1", "replace")
        counted = live.get(f"{req.stream}_bytes")
        total = max(counted if type(counted) is int else 0, len(tail))
        span = log_span(tail, total, req.offset, req.max_bytes)
        return LogChunk(
            req.request_id,
            req.task_id,
            req.attempt,
            req.stream,
            True,
            span.text,
            span.offset,
            span.next_offset,
            total,
        )
