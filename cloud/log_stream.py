"""Live output of running attempts, asked of their nodes (``continuum logs`` on a running task).

:meth:`LiveLogs.fetch` sends the attempt's node a ``log_request`` (QoS 0: a request that
is not answered within ``timeout_s`` is simply asked again by the reader) and waits for the
``log_chunk`` that echoes its ``request_id``; ingest hands every ``log_chunk`` to
:meth:`LiveLogs.deliver`. What a node sends is untrusted: a chunk is taken only as the answer
to an outstanding request, from the node it was asked of, for the same task, attempt and
stream (the codec has bounded its size and offsets); anything else is dropped and counted
(``continuum_rejected_messages_total{reason="unasked_log_chunk"}``). At most
``max_pending`` requests are out at once, and none is sent to a node that is offline or
out of reach: the API then serves what the record holds.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from shared.decisions import DOWN
from shared.protocol import LogChunk, LogRequest

from .metrics import ControllerMetrics
from .registry import Registry
from .uow import UnitOfWork

__all__ = ["LiveLogs"]


@dataclass(frozen=True, slots=True)
class _Pending:
    node_id: str
    request: LogRequest
    answer: asyncio.Future[LogChunk]


class LiveLogs:
    def __init__(
        self,
        registry: Registry,
        uow: UnitOfWork,
        metrics: ControllerMetrics,
        *,
        timeout_s: float = 3.0,
        max_pending: int = 256,
    ) -> None:
        self.registry = registry
        self.uow = uow
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self._pending: dict[str, _Pending] = {}

    def reachable(self, node_id: str) -> bool:
        """Whether asking ``node_id`` can be answered: online and not out of reach."""
        entry = self.registry.get(node_id)
        return entry is not None and entry.presence == "online" and entry.link_state not in DOWN

    async def fetch(
        self, node_id: str, task_id: str, attempt: str, stream: str, offset: int
    ) -> LogChunk | None:
        """The node's answer, or ``None`` (not reachable, too many requests out, no answer
        within ``timeout_s``)."""
        if not self.reachable(node_id) or len(self._pending) >= self.max_pending:
            return None
        request = LogRequest(uuid.uuid4().hex[:16], task_id, attempt, stream, offset)
        answer: asyncio.Future[LogChunk] = asyncio.get_running_loop().create_future()
        self._pending[request.request_id] = _Pending(node_id, request, answer)
        try:
            # Between inputs nothing else is queued: this sends the request alone, now.
            self.uow.queue(node_id, "log_request", request, qos=0)
            self.uow.flush()
            return await asyncio.wait_for(answer, self.timeout_s)
        except TimeoutError:
            return None
        finally:
            self._pending.pop(request.request_id, None)

    def deliver(self, node_id: str, chunk: LogChunk) -> None:
        """A ``log_chunk`` from ``node_id`` (called by ingest for every one received)."""
        pending = self._pending.get(chunk.request_id)
        if (
            pending is None
            or pending.node_id != node_id
            or _names(chunk) != _names(pending.request)
            or pending.answer.done()
        ):
            self.metrics.rejected.labels(reason="unasked_log_chunk").inc()
            return
        pending.answer.set_result(chunk)


def _names(body: LogRequest | LogChunk) -> tuple[str, str, str]:
    return body.task_id, body.attempt, body.stream
