"""The unit of work of one controller input: what it changed, logged and must send.

Every input (a batch of messages, a tick, an API call) runs inside one store
transaction (:meth:`UnitOfWork.commit`). Meanwhile it marks what it changed
(``dirty_tasks``, ``dirty_nodes``, ``dirty_acks``), appends decision events and
queues messages to nodes; the caller's ``persist`` writes the marked state inside
the transaction. Only after the commit are the queued messages published
(:meth:`flush`), so an acknowledgement or a placement is never sent for state a
crash could still lose. On failure nothing is published and the caller's
``recover`` brings memory back to the store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from shared.clocks import HybridClock, Timestamp
from shared.crdt import TaskRecord
from shared.errors import LocalProtocolError
from shared.protocol import MAX_MESSAGE_BYTES, Body, Deltas, Envelope, encode

from .store import Store

__all__ = ["Outgoing", "UnitOfWork"]

log = logging.getLogger(__name__)


@dataclass
class Outgoing:
    node_id: str
    env: Envelope
    qos: int = 1


class UnitOfWork:
    """Dirty marks, events and the outgoing queue of the input in progress."""

    def __init__(
        self,
        store: Store,
        *,
        node_id: str,
        clock: HybridClock,
        wall_ms: Callable[[], int],
        send: Callable[[str, bytes, int], None],
    ) -> None:
        self.store = store
        self.node_id = node_id
        self.clock = clock
        self.wall_ms = wall_ms
        self._send = send
        self.out: list[Outgoing] = []
        self.events: list[dict[str, Any]] = []
        self.dirty_tasks: set[str] = set()
        self.dirty_nodes: set[str] = set()
        self.dirty_acks: set[str] = set()
        self.events_changed = asyncio.Event()

    # -- stamps and messages ------------------------------------------------------

    def hlc(self) -> Timestamp:
        return self.clock.now(self.wall_ms())

    def event(
        self,
        kind: str,
        reason: str,
        *,
        task_id: str | None = None,
        node_id: str | None = None,
        epoch: int | None = None,
        **data: Any,
    ) -> None:
        """Log a decision and its reason (stored with this input's commit)."""
        self.events.append(
            {
                "ts_ms": self.wall_ms(),
                "kind": kind,
                "reason": reason,
                "task_id": task_id,
                "node_id": node_id,
                "epoch": epoch,
                "data": data,
            }
        )

    def envelope(self, type_: str, body: Body, *, id_: str | None = None) -> Envelope:
        return Envelope(
            type=type_,
            id=id_ or uuid.uuid4().hex[:16],
            sender=self.node_id,
            hlc=self.hlc().encode(),
            body=body,
        )

    def queue(self, node_id: str, type_: str, body: Body, *, qos: int = 1) -> None:
        """Send ``body`` to ``node_id`` once this input commits."""
        self.out.append(Outgoing(node_id, self.envelope(type_, body), qos))

    def queue_ping(self, node_id: str, ping: Body, ping_id: str) -> None:
        """A ping goes at QoS 0 under the id the registry waits for."""
        self.out.append(Outgoing(node_id, replace(self.envelope("ping", ping), id=ping_id), 0))

    def queue_records(self, node_id: str, records: Iterable[TaskRecord]) -> None:
        """Send full records as ``deltas`` messages, each under the message size bound."""
        budget = MAX_MESSAGE_BYTES // 2  # room for the envelope and JSON escaping
        batch: list[TaskRecord] = []
        size = 0
        for rec in records:
            n = len(json.dumps(rec.to_dict(), separators=(",", ":")))
            if batch and size + n > budget:
                self.queue(node_id, "deltas", Deltas(records=tuple(batch)))
                batch, size = [], 0
            batch.append(rec)
            size += n
        if batch:
            self.queue(node_id, "deltas", Deltas(records=tuple(batch)))

    # -- commit -------------------------------------------------------------------

    def commit(
        self,
        work: Callable[[], None],
        *,
        persist: Callable[[], None],
        recover: Callable[[], None],
    ) -> None:
        """Run one input's ``work`` and ``persist`` it atomically, then publish what it
        queued. On failure the transaction rolls back, nothing is published, the
        marks are dropped and ``recover`` reloads memory from the store (memory
        never runs ahead of it); the exception propagates (the server retries a
        failed batch message by message)."""
        try:
            with self.store.transaction():
                work()
                persist()
                if self.events:
                    self.store.append_events(self.events)
        except BaseException:
            self._discard()
            recover()
            raise
        self._committed()
        self.flush()

    def _discard(self) -> None:
        self.out.clear()
        self.events.clear()
        self.dirty_tasks.clear()
        self.dirty_nodes.clear()
        self.dirty_acks.clear()

    def _committed(self) -> None:
        self.dirty_tasks.clear()
        self.dirty_nodes.clear()
        self.dirty_acks.clear()
        if self.events:
            self.events.clear()
            self.events_changed.set()
            self.events_changed = asyncio.Event()

    def flush(self) -> None:
        """Publish what the committed input queued."""
        out, self.out = self.out, []
        for item in out:
            try:
                payload = encode(item.env)
            except LocalProtocolError:
                log.exception(
                    "not sending %s to %s",
                    item.env.type,
                    item.node_id,
                    extra={"fields": {"node_id": item.node_id, "type": item.env.type}},
                )
                continue
            try:
                self._send(item.node_id, payload, item.qos)
            except Exception:  # a full paho queue or a closed client: the state is safe
                log.exception(
                    "publish to %s failed",
                    item.node_id,
                    extra={"fields": {"node_id": item.node_id}},
                )
