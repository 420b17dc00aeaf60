"""The controller's logic: registry, placement, consistency, leases, reconciliation.

:class:`Controller` is driven by three kinds of input, all on one thread (the
asyncio loop of ``cloud.server``): batches of MQTT messages (:meth:`ingest`),
the periodic tick (:meth:`tick`) and API calls. Each input is handled inside
one store transaction; messages to nodes are queued meanwhile and published
only after the commit (:meth:`flush`), so an acknowledgement or a placement is
never sent for state that a crash could still lose.

Every decision is a ``shared`` policy: placement (``shared.placement``), link
grading (``shared.health``), adaptive levels and re-placement rules and lease
arithmetic (``shared.consistency``), the task record lattice (``shared.crdt``).
This module wires them to the store and the wire; it decides nothing itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from typing import Any

from shared.clocks import HybridClock, Timestamp
from shared.consistency import (
    AdaptationPolicy,
    AdaptiveLevel,
    LeaseBook,
    LeasePolicy,
    level_bounds,
)
from shared.crdt import (
    Attempt,
    AttemptStatus,
    TaskRecord,
    canonical_bytes,
    content_hash,
    digest,
    merge,
    missing,
    new_record,
    place,
    request_cancel,
    set_status,
    visible_status,
)
from shared.decisions import (
    DOWN,
    Candidate,
    Movability,
    NodeFacts,
    PartitionFacts,
    Readiness,
    TriggerFacts,
    adapt_level,
    demand_level,
    fired_triggers,
    partition_move,
    placement_level,
    placement_order,
    task_readiness,
    trigger_move,
    workflow_status,
)
from shared.errors import (
    ClockSkewError,
    LocalProtocolError,
    Problem,
    RemoteProtocolError,
    SpecConflictError,
    ValidationError,
)
from shared.health import LinkPolicy, LinkStateChanged, SystemHealth
from shared.model import TaskSpec, WorkflowSpec, parse_task_spec, parse_workflow
from shared.placement import (
    Decision,
    NodeTable,
    NodeView,
    TaskDemand,
    Weights,
    link_degraded,
    place_batch,
)
from shared.placement import place as place_task
from shared.protocol import (
    MAX_MESSAGE_BYTES,
    Ack,
    Cancel,
    Deltas,
    Digest,
    Envelope,
    LeaseGrant,
    LevelChange,
    Ping,
    Place,
    decode_from,
    digest_parts,
    encode,
)
from shared.vocab import Level, LinkState, PlacementMode, TaskStatus, Tier

from .api import NotFound
from .config import ControllerConfig
from .metrics import ControllerMetrics
from .registry import NodeEntry, Registry
from .store import LeaseRow, Store, TaskRow

__all__ = ["Controller"]

log = logging.getLogger(__name__)

_ACTIVE = (TaskStatus.PENDING, TaskStatus.RUNNING)


@dataclass
class TaskMeta:
    """Controller-side facts about a task that are not part of the replicated record."""

    submitted_ms: int
    level: Level | None = None  # level in force (placement level, or adapted since)
    adaptive: AdaptiveLevel | None = None
    explanation: dict[str, Any] | None = None
    blocked_reason: str | None = None  # why it is not placed (reported once)
    moved_at: float = float("-inf")  # last re-placement by a trigger (cooldown)
    origin: str | None = None  # node a locally submitted task came from (None: the API)
    _explanation_text: tuple[dict[str, Any], str] | None = None

    def explanation_json(self) -> str | None:
        """The explanation as stored JSON, serialised once per decision (a task's
        row is rewritten on every status change, its explanation is not)."""
        if self.explanation is None:
            return None
        cached = self._explanation_text
        if cached is None or cached[0] is not self.explanation:
            text = json.dumps(self.explanation, separators=(",", ":"), sort_keys=True)
            cached = self._explanation_text = (self.explanation, text)
        return cached[1]

    flagged: set[frozenset[tuple[str, int]]] = field(default_factory=set)


@dataclass
class Outgoing:
    node_id: str
    env: Envelope
    qos: int = 1


class Controller:
    """See the module docstring. ``mono`` and ``wall_ms`` are injectable clocks."""

    def __init__(
        self,
        cfg: ControllerConfig,
        store: Store,
        metrics: ControllerMetrics,
        *,
        send: Callable[[str, bytes, int], None],
        mono: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.cfg = cfg
        self.node_id = cfg.controller.node_id
        self.store = store
        self.metrics = metrics
        self._send = send
        self.mono = mono
        self.wall_ms = wall_ms
        self.clock = HybridClock(self.node_id)
        self.registry = Registry(
            LinkPolicy(
                heartbeat_interval_s=cfg.health.heartbeat_interval_s,
                suspect_missed=cfg.health.suspect_missed,
                confirm_after_s=cfg.health.confirm_after_s,
                window_s=cfg.health.window_s,
            )
        )
        self.adaptation = AdaptationPolicy(dwell_s=cfg.consistency.upgrade_dwell_s)
        c = cfg.consistency
        self.lease_policy = LeasePolicy(
            duration_s=c.lease_s,
            min_duration_s=min(LeasePolicy().min_duration_s, c.lease_s),
            max_duration_s=max(c.max_lease_s, c.lease_s),
            controller_margin_s=c.lease_margin_s,
        )
        self.mode = PlacementMode(cfg.placement.mode)
        self.weights = Weights(**cfg.placement.weights)
        self.records: dict[str, TaskRecord] = {}
        self.meta: dict[str, TaskMeta] = {}
        self.leases = LeaseBook(self.lease_policy)
        self.acked: dict[str, int] = {}
        self.unplaced: set[str] = set()
        self.on_node: dict[str, set[str]] = defaultdict(set)  # node → active tasks placed there
        self._placed_on: dict[str, str] = {}  # active task → node (inverse of on_node)
        self._reserved_on: dict[str, str] = {}  # task → node whose ``reserved`` holds it
        self.dependents: dict[str, set[str]] = defaultdict(set)
        self.broker_connected = False
        self._connected_once = False
        self._out: list[Outgoing] = []
        self._events: list[dict[str, Any]] = []
        self._dirty: set[str] = set()
        self._dirty_nodes: set[str] = set()
        self._acked_dirty: set[str] = set()
        self._events_changed = asyncio.Event()
        # Envelope type -> handler; the types a node may send us (decode_from
        # has already checked the type against the topic).
        self._handlers: dict[str, Callable[..., None]] = {
            t: getattr(self, f"_on_{t}")
            for t in (
                "hello",
                "presence",
                "telemetry",
                "pong",
                "heartbeat",
                "deltas",
                "lease_request",
                "digest",
            )
        }
        self._received: dict[str, Any] = {}
        self._load()

    # ------------------------------------------------------------------ startup

    def _load(self) -> None:
        """Rebuild memory from the store at start: nodes, then the task state."""
        self.registry.restore(self.store.nodes(), self.mono())
        self._load_tasks()

    def _load_tasks(self) -> None:
        """Task state from the store: records, levels, indexes, leases, acks."""
        now = self.mono()
        self.records.clear()
        self.meta.clear()
        self.unplaced.clear()
        self.on_node.clear()
        self._placed_on.clear()
        self._reserved_on.clear()
        self.dependents.clear()
        for entry in self.registry.nodes.values():
            entry.reserved.clear()
        for row in self.store.all_tasks():
            rec = TaskRecord.from_dict(row.record)
            self.records[row.task_id] = rec
            meta = TaskMeta(
                submitted_ms=row.submitted_ms, explanation=row.explanation, origin=row.origin
            )
            meta.level = Level(row.level) if row.level else None
            if rec.spec is not None:
                self._register_spec(row.task_id, rec.spec, meta)
            self.meta[row.task_id] = meta
            self._index(row.task_id)
        # Our monotonic clock did not survive the restart: every stored lease is
        # honoured as if granted now (later than the truth, hence safe).
        self.leases = LeaseBook.restore(
            [
                {
                    "task_id": r.task_id,
                    "epoch": r.epoch,
                    "node": r.node_id,
                    "duration_s": r.duration_s,
                    "granted_wall_ms": r.granted_ms,
                }
                for r in self.store.leases()
            ],
            now=now,
            policy=self.lease_policy,
        )
        self.acked = self.store.acked_seqs()
        for task_id, rec in self.records.items():
            self._sync_reservation(task_id, rec)

    # ------------------------------------------------------------------ helpers

    def _hlc(self) -> Timestamp:
        return self.clock.now(self.wall_ms())

    def _event(
        self,
        kind: str,
        reason: str,
        *,
        task_id: str | None = None,
        node_id: str | None = None,
        epoch: int | None = None,
        **data: Any,
    ) -> None:
        self._events.append(
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

    def _envelope(self, type_: str, body: Any) -> Envelope:
        return Envelope(
            type=type_,
            id=uuid.uuid4().hex[:16],
            sender=self.node_id,
            hlc=self._hlc().encode(),
            body=body,
        )

    def _queue(self, node_id: str, type_: str, body: Any, *, qos: int = 1) -> None:
        self._out.append(Outgoing(node_id, self._envelope(type_, body), qos))

    def _apply(self, delta: TaskRecord) -> TaskRecord:
        """Join a delta into our copy (raises ``SpecConflictError``)."""
        old = self.records.get(delta.task_id)
        new = delta if old is None else merge(old, delta)
        if new is not old:
            self.records[delta.task_id] = new
            self._dirty.add(delta.task_id)
        return new

    def _index(self, task_id: str) -> None:
        """Keep ``unplaced`` and ``on_node`` in step with the record."""
        rec = self.records[task_id]
        status = visible_status(rec)
        old_node = self._placed_on.pop(task_id, None)
        if old_node is not None:
            self.on_node[old_node].discard(task_id)
        self.unplaced.discard(task_id)
        if status not in _ACTIVE or rec.spec is None:
            return
        if rec.placement is not None:
            self.on_node[rec.placement.node].add(task_id)
            self._placed_on[task_id] = rec.placement.node
        elif not rec.attempts and self.meta[task_id].origin is None:
            # Submitted here, never placed, no attempt: ours to place. A task
            # submitted locally on a node belongs to that node (DESIGN §7).
            self.unplaced.add(task_id)

    def _sync_reservation(self, task_id: str, rec: TaskRecord) -> None:
        """Resources of an active placed task count against its node (and only it)."""
        old = self._reserved_on.pop(task_id, None)
        if old is not None and (entry := self.registry.get(old)) is not None:
            entry.reserved.pop(task_id, None)
        if rec.placement is None or rec.spec is None or visible_status(rec) not in _ACTIVE:
            return
        entry = self.registry.ensure(rec.placement.node, self.mono(), self.wall_ms())
        res = rec.spec.get("resources") or {}
        entry.reserved[task_id] = (float(res.get("cpu", 0)), float(res.get("memory_mb", 0)))
        self._reserved_on[task_id] = rec.placement.node

    def _row(self, task_id: str) -> TaskRow:
        rec = self.records[task_id]
        meta = self.meta[task_id]
        spec = rec.spec or {}
        raw = canonical_bytes(rec)  # one serialisation for the stored text and the hash
        return TaskRow(
            task_id=task_id,
            record=raw.decode("ascii"),
            status=visible_status(rec).value,
            node=rec.placement.node if rec.placement else None,
            epoch=rec.placement.epoch if rec.placement else 0,
            level=meta.level.value if meta.level else None,
            workflow=spec.get("workflow"),
            priority=int(spec.get("priority", 50)),
            content_hash=hashlib.sha256(raw).hexdigest(),  # = shared.crdt.content_hash
            submitted_ms=meta.submitted_ms,
            updated_ms=self.wall_ms(),
            explanation=meta.explanation_json(),
            origin=meta.origin,
        )

    def _persist(self) -> None:
        """Write what this input changed (inside the caller's transaction)."""
        if self._dirty:
            self.store.put_tasks([self._row(t) for t in sorted(self._dirty)])
        for node_id in sorted(self._dirty_nodes):
            entry = self.registry.get(node_id)
            if entry is not None:
                self.store.upsert_node(node_id, **entry.to_row())
        if self._acked_dirty:
            self.store.set_acked_seqs({n: self.acked[n] for n in self._acked_dirty})
        if self._events:
            self.store.append_events(self._events)

    def _committed(self) -> None:
        self._dirty.clear()
        self._dirty_nodes.clear()
        self._acked_dirty.clear()
        if self._events:
            self._events.clear()
            self._events_changed.set()
            self._events_changed = asyncio.Event()

    def flush(self) -> None:
        """Publish what the committed input queued (call after the commit)."""
        out, self._out = self._out, []
        for item in out:
            try:
                payload = encode(item.env)
            except LocalProtocolError:
                log.exception("not sending %s to %s", item.env.type, item.node_id)
                continue
            try:
                self._send(item.node_id, payload, item.qos)
            except Exception:  # a full paho queue or a closed client: the state is safe
                log.exception("publish to %s failed", item.node_id)

    def _queue_records(self, node_id: str, records: Iterable[TaskRecord]) -> None:
        """Send full records as ``deltas`` messages, each under the message size bound."""
        budget = MAX_MESSAGE_BYTES // 2  # room for the envelope and JSON escaping
        batch: list[TaskRecord] = []
        size = 0
        for rec in records:
            n = len(json.dumps(rec.to_dict(), separators=(",", ":")))
            if batch and size + n > budget:
                self._queue(node_id, "deltas", Deltas(records=tuple(batch)))
                batch, size = [], 0
            batch.append(rec)
            size += n
        if batch:
            self._queue(node_id, "deltas", Deltas(records=tuple(batch)))

    def _commit(self, work: Callable[[], None]) -> None:
        """Run one input's work and persist it atomically, then publish what it
        queued. On failure the transaction rolls back, nothing is published (an
        acknowledgement or a placement is never sent for state that is not
        durable) and the task state in memory is reloaded from the store, so
        memory never runs ahead of it; the caller sees the exception (the
        server retries a failed batch message by message)."""
        try:
            with self.store.transaction():
                work()
                self._persist()
        except BaseException:
            self._recover()
            raise
        self._committed()
        self.flush()

    def _recover(self) -> None:
        """Memory = store again after a rolled-back input. Leases come back with
        restart deadlines (later than the truth: safe); link measurements, which
        are not transactional, are kept."""
        self._out.clear()
        self._events.clear()
        self._dirty.clear()
        self._dirty_nodes.clear()
        self._acked_dirty.clear()
        self._load_tasks()

    # ------------------------------------------------------------------ ingest

    def ingest(self, messages: Iterable[tuple[str, bytes]]) -> None:
        """Merge and persist one batch of MQTT messages in one transaction, then
        send the acknowledgements and replies it produced."""
        started = time.perf_counter()
        now = self.mono()

        def work() -> None:
            changed: dict[str, TaskRecord | None] = {}
            acked_nodes: set[str] = set()
            for topic, payload in messages:
                self._handle(topic, payload, now, changed, acked_nodes)
            for task_id, before in changed.items():
                self._after_change(task_id, before, now)
            self._schedule(now)
            for node_id in sorted(acked_nodes):
                self._queue(
                    node_id, "ack", Ack(up_to_seq=self.acked.get(node_id), heartbeat_id=None)
                )

        self._commit(work)
        self.metrics.merge_seconds.observe(time.perf_counter() - started)

    def _reject(self, reason: str, detail: str, topic: str) -> None:
        self.metrics.rejected.labels(reason=reason).inc()
        log.warning("rejected message on %s: %s (%s)", topic, detail, reason)

    def _handle(
        self,
        topic: str,
        payload: bytes,
        now: float,
        changed: dict[str, TaskRecord | None],
        acked_nodes: set[str],
    ) -> None:
        try:
            env = decode_from(topic, payload)
        except RemoteProtocolError as exc:
            self._reject(exc.reason, str(exc), topic)
            return
        # decode_from checked that the sender is the topic's node (every kind we
        # subscribe to is node-originated), so the topic need not be parsed again.
        node_id = env.sender
        wall = self.wall_ms()
        try:
            self.clock.receive(Timestamp.decode(env.hlc), wall)
        except ClockSkewError as exc:
            self._reject("clock_skew", str(exc), topic)
            return
        except ValueError as exc:
            self._reject("invalid", f"bad hlc: {exc}", topic)
            return
        handler = self._handlers.get(env.type)
        if handler is None:
            self._reject("unexpected_type", env.type, topic)
            return
        counter = self._received.get(env.type)
        if counter is None:
            counter = self._received[env.type] = self.metrics.messages.labels(type=env.type)
        counter.inc()
        entry = self.registry.ensure(node_id, now, wall)
        entry.last_seen_ms = wall
        change = entry.monitor.heard(now)
        if change is not None:
            self._link_changes([change], now)
        handler(entry, env, now, changed, acked_nodes)

    def _on_hello(self, entry: NodeEntry, env: Envelope, now: float, *_: Any) -> None:
        body = env.body
        known = entry.registered
        entry.registered = True
        entry.tier = str(body.tier)
        entry.labels = dict(body.labels)
        cap = body.capacity
        entry.capacity = {
            "cpus": cap.cpus,
            "memory_mb": cap.memory_mb,
            "disk_mb": cap.disk_mb,
            "battery_pct": cap.battery_pct,
        }
        entry.agent_version = body.agent_version
        entry.api_port = body.api_port
        entry.presence = "online"
        self._dirty_nodes.add(entry.node_id)
        if known:
            self._event("node_reconciled", "hello from a known node", node_id=entry.node_id)
        else:
            self._event("node_registered", "first hello", node_id=entry.node_id, tier=entry.tier)
        self._reconcile(entry.node_id)

    def _on_presence(self, entry: NodeEntry, env: Envelope, now: float, *_: Any) -> None:
        status = env.body.status
        if status == entry.presence:
            return
        entry.presence = status
        self._dirty_nodes.add(entry.node_id)
        if status == "offline":
            self._link_changes([entry.monitor.disconnected(now)], now)
        else:
            self._link_changes([entry.monitor.reconnected(now)], now)

    def _on_telemetry(self, entry: NodeEntry, env: Envelope, now: float, *_: Any) -> None:
        body = env.body
        entry.telemetry = asdict(body) if is_dataclass(body) else dict(vars(body))
        self._dirty_nodes.add(entry.node_id)

    def _on_pong(self, entry: NodeEntry, env: Envelope, now: float, *_: Any) -> None:
        self._link_changes([self.registry.pong(entry.node_id, env.body.ping_id, now)], now)

    def _on_heartbeat(self, entry: NodeEntry, env: Envelope, now: float, *_: Any) -> None:
        self._queue(
            entry.node_id, "ack", Ack(up_to_seq=self.acked.get(entry.node_id), heartbeat_id=env.id)
        )

    def _on_deltas(
        self,
        entry: NodeEntry,
        env: Envelope,
        now: float,
        changed: dict[str, TaskRecord | None],
        acked_nodes: set[str],
    ) -> None:
        for delta in env.body.records:
            self._merge_remote(entry.node_id, delta, changed)
        if env.seq is not None:
            self._advance_ack(entry.node_id, env.seq)
            acked_nodes.add(entry.node_id)

    def _merge_remote(
        self, node_id: str, delta: TaskRecord, changed: dict[str, TaskRecord | None]
    ) -> None:
        before = self.records.get(delta.task_id)
        if delta.spec is not None and (before is None or before.spec is None):
            # A task created on a node (local submission): its spec must be one
            # shared.model would have produced, or placement and the API would
            # trip over it later. The delta is rejected, not the whole message.
            why = _spec_problem(delta.spec)
            if why is not None:
                self._reject("invalid_spec", f"task {delta.task_id}: {why}", f"node {node_id}")
                self._event("delta_rejected", why, task_id=delta.task_id, node_id=node_id)
                return
        # A delta for a task we never saw, without its spec, is kept: the join is
        # order-free and the creation delta brings the spec.
        if delta.task_id not in self.meta:
            self.meta[delta.task_id] = TaskMeta(submitted_ms=self.wall_ms(), origin=node_id)
        try:
            after = self._apply(delta)
        except SpecConflictError as exc:
            self.metrics.conflicts.inc()
            self._event("conflict", f"spec conflict: {exc}", task_id=delta.task_id, node_id=node_id)
            return
        if after is not before and delta.task_id not in changed:
            changed[delta.task_id] = before

    def _advance_ack(self, node_id: str, seq: int) -> None:
        """Cumulative ack: everything up to ``seq`` is merged and (once this
        transaction commits) durable. Deltas are joins, so a redelivery below the
        mark is harmless; the mark never goes back."""
        if seq > self.acked.get(node_id, 0):
            self.acked[node_id] = seq
            self._acked_dirty.add(node_id)

    def _on_lease_request(self, entry: NodeEntry, env: Envelope, now: float, *_: Any) -> None:
        """Grant, renew or refuse (fencing by epoch: ``shared.consistency.LeaseBook``)."""
        req = env.body
        node_id = entry.node_id
        rec = self.records.get(req.task_id)
        if rec is None or rec.placement is None:
            decision_reason: str | None = "unknown_task"
        elif rec.cancel_requested or visible_status(rec).terminal:
            decision_reason = "cancelled" if rec.cancel_requested else "terminal"
        else:
            decision_reason = None
        if decision_reason is not None or rec is None or rec.placement is None:
            granted, reason, duration = False, decision_reason or "unknown_task", 0.0
        else:
            decision = self.leases.request(
                task_id=req.task_id,
                node=node_id,
                epoch=req.epoch,
                duration_s=req.duration_s,
                now=now,
                placed_epoch=rec.placement.epoch,
                placed_node=rec.placement.node,
                wall_ms=self.wall_ms(),
            )
            granted, reason, duration = decision.granted, decision.reason, decision.duration_s
            if decision.lease is not None:
                lease = decision.lease
                self.store.put_lease(
                    LeaseRow(
                        task_id=lease.task_id,
                        epoch=lease.epoch,
                        node_id=lease.node,
                        duration_s=lease.duration_s,
                        granted_ms=self.wall_ms(),
                        deadline_ms=self.wall_ms() + int((lease.replace_after - now) * 1000) + 1,
                    )
                )
        self.metrics.leases.labels(granted=str(granted).lower()).inc()
        self._event(
            "lease_grant" if granted else "lease_denied",
            reason,
            task_id=req.task_id,
            node_id=node_id,
            epoch=req.epoch,
            duration_s=duration,
        )
        self._queue(
            node_id,
            "lease_grant",
            LeaseGrant(
                task_id=req.task_id,
                epoch=req.epoch,
                duration_s=duration,
                granted=granted,
                reason=reason,
            ),
        )

    def _on_digest(self, entry: NodeEntry, env: Envelope, now: float, *_: Any) -> None:
        """Anti-entropy: send the node what its digest shows it lacks, then our
        digest of its tasks so it sends what we lack."""
        node_id = entry.node_id
        body: Digest = env.body
        entries: Mapping[str, str] = body.entries
        # A digest part speaks only for its range of ids (``Digest.covers``).
        relevant = {t: rec for t, rec in self._relevant(node_id, entries).items() if body.covers(t)}
        self._queue_records(node_id, missing(relevant, entries))
        for part in digest_parts(digest(relevant), after=body.after, upto=body.upto):
            self._queue(node_id, "digest", part)
        # A task placed here that the node holds no record of never got its
        # `place` (lost session, expired message): send it again.
        for task_id in sorted(t for t in self.on_node.get(node_id, ()) if body.covers(t)):
            rec = self.records[task_id]
            assert rec.placement is not None
            epoch = rec.placement.epoch
            if task_id not in entries and not any(a.epoch == epoch for a in rec.attempts.values()):
                self._send_place(task_id)

    # ------------------------------------------------------------------ reactions

    def _after_change(self, task_id: str, before: TaskRecord | None, now: float) -> None:
        rec = self.records[task_id]
        meta = self.meta[task_id]
        if before is None and meta.origin is not None:
            self._event(
                "task_adopted", "first seen from a node", task_id=task_id, node_id=meta.origin
            )
        if rec.spec is not None and (before is None or before.spec is None):
            self._register_spec(task_id, rec.spec, meta)
        old_status = visible_status(before) if before is not None else None
        new_status = visible_status(rec)
        if new_status != old_status:
            self._event(
                f"task_{new_status.value}",
                f"status {old_status} -> {new_status}",
                task_id=task_id,
                epoch=rec.placement.epoch if rec.placement else None,
            )
        self._record_outcomes(before, rec)
        self._check_conflict(task_id, rec, meta)
        self._index(task_id)
        self._sync_reservation(task_id, rec)
        if (
            new_status.terminal
            and rec.placement is not None
            and self.leases.release(task_id, rec.placement.epoch) is not None
        ):
            self.store.delete_lease(task_id)

    def _register_spec(self, task_id: str, spec: dict[str, Any], meta: TaskMeta) -> None:
        if not level_bounds(spec)[2]:
            meta.adaptive = AdaptiveLevel.from_spec(
                spec, initial=meta.level, policy=self.adaptation
            )
        for dep in spec.get("depends_on") or ():
            self.dependents[dep].add(task_id)

    def _record_outcomes(self, before: TaskRecord | None, rec: TaskRecord) -> None:
        """Per node: success and failure EWMAs and run durations (placement terms
        and the failure-rate and slowdown triggers)."""
        for dot, attempt in rec.attempts.items():
            old = before.attempts.get(dot) if before is not None else None
            if old is not None and old.status == attempt.status:
                continue
            if attempt.status in (AttemptStatus.SUCCEEDED, AttemptStatus.FAILED):
                entry = self.registry.get(attempt.node)
                if entry is None:
                    continue
                entry.record_outcome(
                    attempt.status == AttemptStatus.SUCCEEDED, duration_s=_run_seconds(attempt)
                )

    def _check_conflict(self, task_id: str, rec: TaskRecord, meta: TaskMeta) -> None:
        """Two attempts running at once on different nodes, for a task whose level
        forbids it, is a conflict: flagged once per pair (DESIGN §5)."""
        if meta.level is Level.EVENTUAL:
            return
        running = [(d, a) for d, a in rec.attempts.items() if a.status == AttemptStatus.STARTED]
        for i, (d1, a1) in enumerate(running):
            for d2, a2 in running[i + 1 :]:
                pair = frozenset((d1, d2))
                if a1.node == a2.node or pair in meta.flagged:
                    continue
                meta.flagged.add(pair)
                self.metrics.conflicts.inc()
                self._event(
                    "conflict",
                    f"two attempts running at once at level {meta.level}",
                    task_id=task_id,
                    attempts=[f"{d1[0]}:{d1[1]}", f"{d2[0]}:{d2[1]}"],
                    nodes=[a1.node, a2.node],
                )

    def _link_changes(self, changes: Iterable[LinkStateChanged | None], now: float) -> None:
        """Record link transitions (as the registry last reported them, so a
        transition noticed by a read-only ``stats`` call is still logged once)."""
        for change in changes:
            if change is None:
                continue
            entry = self.registry.get(change.node_id)
            old = change.old
            if entry is not None:
                old, entry.reported = entry.reported, change.new
            if old is change.new:
                continue
            self._dirty_nodes.add(change.node_id)
            self._event(
                "link_state",
                change.reason,
                node_id=change.node_id,
                old=old.value,
                new=change.new.value,
            )
            if entry is not None and (
                trigger := link_degraded(
                    old,
                    change.new,
                    strong_tasks=sum(
                        1
                        for t in self.on_node.get(change.node_id, ())
                        if self.meta[t].level is Level.STRONG
                    ),
                    node_id=change.node_id,
                )
            ):
                entry.triggers.append(trigger)
            if old in DOWN and change.new not in DOWN:
                self._event(
                    "node_reconnected", "heard again after a partition", node_id=change.node_id
                )
                self._reconcile(change.node_id)

    def _reconcile(self, node_id: str) -> None:
        """A node (re)appeared: re-send cancels (idempotent: a flag) and start
        anti-entropy. Placements are *not* re-sent blindly: the node may have run
        one whose report is still in its outbox, and a second ``place`` would run
        it again; :meth:`_on_digest` re-sends only those the node's digest shows
        it never received."""
        for task_id in sorted(self.on_node.get(node_id, ())):
            rec = self.records[task_id]
            assert rec.placement is not None
            if rec.cancel_requested:
                self._send_cancel(node_id, rec, "cancel requested")
        relevant = self._relevant(node_id, {})
        if relevant:
            for part in digest_parts(digest(relevant)):
                self._queue(node_id, "digest", part)

    def _send_cancel(self, node_id: str, rec: TaskRecord, reason: str) -> None:
        """A user's cancel reaches the node as state and as a command: the record
        carries the task-wide flag (the agent never raises it itself: a ``cancel``
        only revokes its attempts up to the epoch), the command stops them now."""
        assert rec.placement is not None
        self._queue_records(node_id, [rec])
        self._queue(
            node_id, "cancel", Cancel(task_id=rec.task_id, epoch=rec.placement.epoch, reason=reason)
        )

    def _relevant(self, node_id: str, remote: Mapping[str, str]) -> dict[str, TaskRecord]:
        """The records a node should hold: placed on it, or named in its digest."""
        names: set[str] = set(self.on_node.get(node_id, ()))
        names.update(remote)
        out: dict[str, TaskRecord] = {}
        for task_id in names:
            rec = self.records.get(task_id)
            if rec is not None:
                out[task_id] = rec
        return out

    # ------------------------------------------------------------------ placement

    def _node_views(self, now: float) -> list[NodeView]:
        views = []
        for entry in self.registry.nodes.values():
            if not entry.registered:
                continue
            stats = entry.monitor.stats(now)
            cpu_used = sum(c for c, _ in entry.reserved.values())
            mem_used = sum(m for _, m in entry.reserved.values())
            tel = entry.telemetry
            try:
                tier = Tier(entry.tier)
            except ValueError:
                continue
            views.append(
                NodeView(
                    node_id=entry.node_id,
                    tier=tier,
                    labels=entry.labels,
                    cpus=max(entry.cpus, 0.0),
                    memory_mb=max(entry.memory_mb, 0.0),
                    cpu_free=max(entry.cpus - cpu_used, 0.0),
                    memory_free_mb=max(entry.memory_mb - mem_used, 0.0),
                    running=len(entry.reserved),
                    load=min(max(float(tel.get("cpu_pct") or 0.0) / 100.0, 0.0), 1.0),
                    success_ewma=entry.success_ewma,
                    rtt_ms=stats.rtt_p50_ms or 0.0,
                    link_state=stats.state,
                    draining=entry.draining,
                    battery_pct=entry.capacity.get("battery_pct"),
                    partition_rate_per_h=stats.partition_rate_per_h,
                )
            )
        return views

    def _schedule(self, now: float) -> None:
        """Place every task that is ready: unplaced, and (in a workflow) whose
        dependencies all succeeded. Higher priority first, then older."""
        if not self.unplaced:
            return
        ready: list[Candidate] = []
        for task_id in list(self.unplaced):
            rec = self.records[task_id]
            spec = rec.spec
            assert spec is not None
            verdict = task_readiness(
                [
                    visible_status(self.records[d]) if d in self.records else None
                    for d in spec.get("depends_on") or ()
                ]
            )
            if verdict.readiness is Readiness.CANCEL:
                self._apply(request_cancel(rec, writer=self.node_id, hlc=self._hlc()))
                self._event("task_cancelled", verdict.reason, task_id=task_id)
                self._index(task_id)
            elif verdict.readiness is Readiness.READY:
                ready.append(
                    Candidate(
                        task_id=task_id,
                        priority=int(spec.get("priority", 50)),
                        submitted_ms=self.meta[task_id].submitted_ms,
                    )
                )
        if not ready:
            return
        order = placement_order(ready)
        health = self.registry.system_health(now).health
        demands = [self._demand(task_id, health) for task_id in order]
        table = NodeTable.from_views(self._node_views(now))
        started = time.perf_counter()
        decisions = place_batch(
            table,
            demands,
            mode=self.mode,
            weights=self.weights,
            seed=self.cfg.placement.seed,
            epochs=[self._next_epoch(task_id) for task_id in order],
        )
        each = (time.perf_counter() - started) / len(order)
        for task_id, demand, decision in zip(order, demands, decisions, strict=True):
            self.metrics.placement_seconds.observe(each)
            self._decided(task_id, now, demand, decision, trigger=None, health=health)

    def _next_epoch(self, task_id: str) -> int:
        placement = self.records[task_id].placement
        return (placement.epoch if placement else 0) + 1

    def _demand(
        self, task_id: str, health: SystemHealth, exclude: Iterable[str] = ()
    ) -> TaskDemand:
        """What placement reads of a task, at the level the system allows now
        (the node's own link is judged afterwards by the adaptive manager)."""
        spec = self.records[task_id].spec
        assert spec is not None
        return TaskDemand.from_spec(spec, level=demand_level(spec, system=health), exclude=exclude)

    def _place(
        self,
        task_id: str,
        now: float,
        table: NodeTable,
        *,
        trigger: str | None,
        exclude: Iterable[str] = (),
        health: SystemHealth | None = None,
    ) -> bool:
        """Place one task on ``table`` (allocated in place) and act on the decision."""
        if health is None:
            health = self.registry.system_health(now).health
        demand = self._demand(task_id, health, exclude)
        started = time.perf_counter()
        decision = place_task(
            table,
            demand,
            mode=self.mode,
            weights=self.weights,
            seed=self.cfg.placement.seed,
            epoch=self._next_epoch(task_id),
        )
        self.metrics.placement_seconds.observe(time.perf_counter() - started)
        if decision.node_id is not None:
            table.allocate(decision.node_id, demand.cpu, demand.memory_mb, demand.disk_mb)
        return self._decided(task_id, now, demand, decision, trigger=trigger, health=health)

    def _decided(
        self,
        task_id: str,
        now: float,
        demand: TaskDemand,
        decision: Decision,
        *,
        trigger: str | None,
        health: SystemHealth,
    ) -> bool:
        """Record a placement decision: a new epoch on the chosen node (the
        message is queued), or the reason nothing was feasible (logged once)."""
        rec = self.records[task_id]
        meta = self.meta[task_id]
        spec = rec.spec
        assert spec is not None
        fixed = level_bounds(spec)[2]
        level = demand.level
        epoch = self._next_epoch(task_id)
        explanation = decision.explanation.to_dict()
        if decision.node_id is None:
            self.metrics.placements.labels(outcome="infeasible").inc()
            reason = f"no feasible node: {explanation.get('filtered') or explanation}"
            if meta.blocked_reason != reason:
                meta.blocked_reason = reason
                meta.explanation = explanation
                self._dirty.add(task_id)
                self._event(
                    "placement_blocked",
                    reason,
                    task_id=task_id,
                    trigger=trigger,
                    explanation=explanation,
                )
            return False
        meta.blocked_reason = None
        node_id = decision.node_id
        if not fixed:
            entry = self.registry.get(node_id)
            link = entry.link_state if entry else LinkState.HEALTHY
            level = placement_level(spec, link=link, system=health)
            meta.adaptive = AdaptiveLevel.from_spec(spec, initial=level, policy=self.adaptation)
        lease_s = self.cfg.consistency.lease_s if level is Level.STRONG else None
        old_node = rec.placement.node if rec.placement else None
        self._apply(
            place(
                rec,
                epoch=epoch,
                node=node_id,
                level=level.value,
                lease_s=lease_s,
                writer=self.node_id,
                hlc=self._hlc(),
            )
        )
        meta.level = level
        meta.explanation = explanation
        self._dirty.add(task_id)
        self._index(task_id)
        self._sync_reservation(task_id, self.records[task_id])
        if trigger is None:
            self.metrics.placements.labels(outcome="placed").inc()
            self._event(
                "placed",
                f"best of {explanation.get('evaluated')} candidates",
                task_id=task_id,
                node_id=node_id,
                epoch=epoch,
                level=level.value,
                explanation=explanation,
            )
        else:
            self.metrics.replacements.labels(trigger=trigger.split(":")[0]).inc()
            self._event(
                "replaced",
                trigger,
                task_id=task_id,
                node_id=node_id,
                epoch=epoch,
                level=level.value,
                old_node=old_node,
                explanation=explanation,
            )
        self._send_place(task_id)
        return True

    def _send_place(self, task_id: str) -> None:
        rec = self.records[task_id]
        assert rec.placement is not None and rec.spec is not None
        self._queue(
            rec.placement.node,
            "place",
            Place(
                task_id=task_id,
                epoch=rec.placement.epoch,
                spec=rec.spec,
                level=(self.meta[task_id].level or Level(rec.placement.level)).value,
                lease_s=rec.placement.lease_s,
                inputs=self._inputs(rec.spec),
            ),
        )

    def _inputs(self, spec: dict[str, Any]) -> dict[str, Any]:
        """JSON results of the dependencies (their succeeded attempt's result)."""
        out: dict[str, Any] = {}
        for dep in spec.get("depends_on") or ():
            rec = self.records.get(dep)
            if rec is None:
                continue
            for attempt in rec.attempts.values():
                if attempt.status == AttemptStatus.SUCCEEDED:
                    out[dep] = attempt.result
                    break
        return out

    # ------------------------------------------------------------------ tick

    def tick(self) -> None:
        """Periodic work: pings, link grading, levels, re-placement, pending work.

        Nothing happens while the controller's own broker connection is down: it
        observes nothing then, and silence it caused must not read as every node
        partitioned (nor trigger re-placements)."""
        if not self.broker_connected:
            return
        now = self.mono()
        self._commit(lambda: self._tick(now))

    def set_broker_connected(self, connected: bool) -> None:
        """The MQTT shell reports our own broker connection. After an outage of
        ours, every link is measured afresh (``Registry.reset_links``): what the
        monitors hold spans a time we could not observe, and blaming the nodes
        for it would grade every link down and block strong work for a window."""
        was, self.broker_connected = self.broker_connected, connected
        if connected and not was and self._connected_once:
            now = self.mono()

            def work() -> None:
                self.registry.reset_links(now)
                self._event(
                    "controller_reconnected",
                    "links re-measured after the controller's own broker outage",
                )

            self._commit(work)
        self._connected_once = self._connected_once or connected

    def _tick(self, now: float) -> None:
        for node_id, ping_id in self.registry.due_pings(now):
            env = replace(self._envelope("ping", Ping()), id=ping_id)
            self._out.append(Outgoing(node_id, env, qos=0))
        self._link_changes(self.registry.expire_pings(now), now)
        self._link_changes(self.registry.poll(now), now)
        self._adapt_levels(now)
        self._replace_on_partition(now)
        self._replace_on_triggers(now)
        self._schedule(now)

    def _replace_on_triggers(self, now: float) -> None:
        """DESIGN §6 re-placement triggers, for tasks whose mode is ``adaptive``.

        Fired per node (``failure_rate``, ``slowdown``, ``overload``, and
        ``link_degraded`` when it happened to a node holding strong tasks) or per
        task (``latency``: the node's measured RTT above the task's bound). A task
        moves only while that is safe at every level: no live lease and no
        attempt of the current epoch started (a running causal or strong
        attempt is never duplicated by a policy decision; partitions are
        :meth:`_replace_on_partition`'s business). Each move is a new epoch,
        the old node is told to cancel, and a task moves at most once per
        ``TRIGGER_COOLDOWN_S``."""
        fired = fired_triggers(
            NodeFacts(
                node_id=node_id,
                eligible=self._shares_work(entry),
                active_tasks=len(self.on_node.get(node_id, ())),
                failure_ewma=entry.failure_ewma,
                durations=tuple(entry.durations),
                pending=tuple(entry.triggers),
            )
            for node_id, entry in self.registry.nodes.items()
        )
        for entry in self.registry.nodes.values():
            if self._shares_work(entry):
                entry.triggers.clear()  # consumed by this pass
        budget = dict(fired.overload_budget)
        table: NodeTable | None = None
        health: SystemHealth | None = None
        for node_id in sorted(self.on_node):
            entry = self.registry.get(node_id)
            if entry is None or entry.link_state in DOWN:
                continue
            rtt = entry.monitor.stats(now).rtt_p50_ms
            if node_id not in fired.triggers and (
                rtt is None or not any(self._latency_bound(t) for t in self.on_node[node_id])
            ):
                continue  # nothing can fire here: spare building the facts
            for task_id in sorted(self.on_node[node_id]):
                rec = self.records[task_id]
                meta = self.meta[task_id]
                assert rec.placement is not None and rec.spec is not None
                decision = trigger_move(
                    TriggerFacts(
                        node_id=node_id,
                        adaptive=self._task_mode(rec.spec) is PlacementMode.ADAPTIVE,
                        level=meta.level,
                        node_triggers=fired.triggers.get(node_id, ()),
                        overload_budget=budget.get(node_id, 0),
                        rtt_ms=rtt,
                        max_latency_ms=rec.spec["placement"].get("max_latency_ms"),
                        moved_at=meta.moved_at,
                        movability=self._movability(task_id),
                    ),
                    now=now,
                )
                if not decision.move:
                    continue
                if table is None or health is None:
                    table = NodeTable.from_views(self._node_views(now))
                    health = self.registry.system_health(now).health
                if self._place(
                    task_id,
                    now,
                    table,
                    trigger=decision.trigger,
                    exclude=decision.exclude,
                    health=health,
                ):
                    meta.moved_at = now
                    budget[node_id] = budget.get(node_id, 0) - 1
                    self._supersede(task_id, node_id)

    @staticmethod
    def _shares_work(entry: NodeEntry) -> bool:
        """A node whose triggers fire and whose load counts for overload."""
        return entry.registered and not entry.draining and entry.link_state not in DOWN

    def _movability(self, task_id: str) -> Movability:
        """The facts ``shared.decisions.movable`` reads of a placed task."""
        rec = self.records[task_id]
        assert rec.placement is not None
        epoch = rec.placement.epoch
        return Movability(
            level=Level(rec.placement.level),
            epoch=epoch,
            started=any(
                a.epoch == epoch and a.status >= AttemptStatus.STARTED
                for a in rec.attempts.values()
            ),
            lease=self.leases.get(task_id),
        )

    def _supersede(self, task_id: str, old_node: str) -> None:
        """Tell the old node its placement was superseded: the record itself (new
        epoch, elsewhere), on which the agent stops and dequeues its attempt. A
        ``cancel`` would cancel the *task* (a flag that only becomes true)."""
        self._queue_records(old_node, [self.records[task_id]])

    def _latency_bound(self, task_id: str) -> bool:
        spec = self.records[task_id].spec
        return spec is not None and spec["placement"].get("max_latency_ms") is not None

    def _task_mode(self, spec: Mapping[str, Any]) -> PlacementMode:
        mode = (spec.get("placement") or {}).get("mode")
        return PlacementMode(mode) if mode else self.mode

    def _adapt_levels(self, now: float) -> None:
        health = self.registry.system_health(now).health
        for node_id, tasks in self.on_node.items():
            entry = self.registry.get(node_id)
            link = entry.link_state if entry is not None else LinkState.FAILED
            for task_id in sorted(tasks):
                meta = self.meta[task_id]
                adaptive = meta.adaptive
                if adaptive is None:
                    continue
                change = adapt_level(adaptive, link=link, system=health, now=now)
                if change is None:
                    continue
                meta.level = change.new
                self._dirty.add(task_id)
                direction = "down" if change.downgrade else "up"
                self.metrics.level_changes.labels(direction=direction).inc()
                rec = self.records[task_id]
                epoch = rec.placement.epoch if rec.placement else 0
                self._event(
                    "level_change",
                    change.reason,
                    task_id=task_id,
                    node_id=node_id,
                    epoch=epoch,
                    **{"from": change.old.value, "to": change.new.value},
                )
                self._queue(
                    node_id,
                    "level_change",
                    LevelChange(
                        task_id=task_id, epoch=epoch, level=change.new.value, reason=change.reason
                    ),
                )

    def _replace_on_partition(self, now: float) -> None:
        """DESIGN §5: strong after its lease deadline plus the margin, causal after
        its ``max_disconnect_s``, eventual at once (hedged: the old attempt runs on)."""
        table: NodeTable | None = None
        health: SystemHealth | None = None
        for node_id, tasks in list(self.on_node.items()):
            entry = self.registry.get(node_id)
            if entry is None or entry.link_state not in DOWN or not tasks:
                continue
            out_for = entry.monitor.out_of_contact_for(now)
            for task_id in sorted(tasks):
                rec = self.records[task_id]
                assert rec.placement is not None and rec.spec is not None
                # The level the agent was told at placement: it cannot hear a
                # downgrade while partitioned.
                decision = partition_move(
                    PartitionFacts(
                        node_id=node_id,
                        link=entry.link_state,
                        level=Level(rec.placement.level),
                        lease=self.leases.get(task_id),
                        out_of_contact_s=out_for,
                        max_disconnect_s=float(rec.spec.get("max_disconnect_s", 300.0)),
                    ),
                    now=now,
                )
                if not decision.move:
                    continue
                if table is None or health is None:
                    table = NodeTable.from_views(self._node_views(now))
                    health = self.registry.system_health(now).health
                if not self._place(
                    task_id,
                    now,
                    table,
                    trigger=decision.trigger,
                    exclude=decision.exclude,
                    health=health,
                ):
                    continue
                if decision.fence:
                    self._fence_old(task_id, node_id)

    def _fence_old(self, task_id: str, node_id: str) -> None:
        """The old node's attempts are presumed lost (its own report, if it comes,
        outranks this inference) and it gets the superseding record (queued at the
        broker until it returns; anti-entropy on reconnect sends it as well)."""
        rec = self.records[task_id]
        for dot, attempt in rec.attempts.items():
            if attempt.node == node_id and not attempt.status.terminal:
                self._apply(
                    set_status(
                        rec,
                        dot,
                        AttemptStatus.LOST,
                        writer=self.node_id,
                        hlc=self._hlc(),
                        reason="node partitioned; re-placed",
                    )
                )
                rec = self.records[task_id]
        self._supersede(task_id, node_id)
        self._index(task_id)
        self._sync_reservation(task_id, self.records[task_id])

    # ------------------------------------------------------------------ API

    def _validated_task(self, data: dict[str, Any]) -> TaskSpec:
        data = dict(data)
        data.setdefault("id", f"t-{uuid.uuid4().hex[:12]}")
        return parse_task_spec(data)

    def _create(self, spec_dict: dict[str, Any], submitted_ms: int) -> tuple[str, bool]:
        task_id = spec_dict["id"]
        existing = self.records.get(task_id)
        if existing is not None and existing.spec is not None:
            if existing.spec != spec_dict:
                raise SpecConflictError(task_id, content_hash(existing), "submitted")
            return task_id, False
        delta = new_record(task_id, spec_dict, writer=self.node_id, hlc=self._hlc())
        self._apply(delta)
        meta = self.meta.setdefault(task_id, TaskMeta(submitted_ms=submitted_ms))
        self._register_spec(task_id, spec_dict, meta)
        self._index(task_id)
        self._event("submitted", "via API", task_id=task_id, workflow=spec_dict.get("workflow"))
        return task_id, True

    def submit_task(self, data: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        if "tasks" in data:
            raise ValidationError(
                [Problem("tasks", "a workflow: POST it to /api/v1/workflows")], what="task spec"
            )
        spec = self._validated_task(data)
        now = self.mono()
        created = False

        def work() -> None:
            nonlocal created
            _, created = self._create(spec.to_dict(), self.wall_ms())
            self._schedule(now)

        self._commit(work)
        return self.get_task(spec.id), created

    def submit_workflow(self, data: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        data = dict(data)
        data.setdefault("id", f"w-{uuid.uuid4().hex[:12]}")
        wf: WorkflowSpec = parse_workflow(data)
        now = self.mono()
        created_any = False

        def work() -> None:
            nonlocal created_any
            existing = self.store.get_workflow(wf.id)
            if existing is not None and existing["spec"] != wf.to_dict():
                raise SpecConflictError(wf.id, "stored", "submitted")
            ts = self.wall_ms()
            for task_id in wf.topological_order():
                _, created = self._create(wf.task(task_id).to_dict(), ts)
                created_any = created_any or created
            if existing is None:
                self.store.put_workflow(wf.id, wf.name, wf.to_dict(), ts)
                self._event("workflow_submitted", f"{len(wf.tasks)} tasks", workflow=wf.id)
            self._schedule(now)

        self._commit(work)
        return self.get_workflow(wf.id), created_any

    def _task_summary(self, row: TaskRow) -> dict[str, Any]:
        return {
            "task_id": row.task_id,
            "status": row.status,
            "node": row.node,
            "epoch": row.epoch,
            "level": row.level,
            "workflow": row.workflow,
            "priority": row.priority,
            "content_hash": row.content_hash,
            "submitted_ms": row.submitted_ms,
            "updated_ms": row.updated_ms,
        }

    def list_tasks(self, **filters: Any) -> dict[str, Any]:
        rows = self.store.list_tasks(**filters)
        limit = filters.get("limit", 100)
        return {
            "tasks": [self._task_summary(r) for r in rows],
            "next": rows[-1].task_id if len(rows) == limit else None,
        }

    def get_task(self, task_id: str) -> dict[str, Any]:
        row = self.store.get_task(task_id)
        if row is None:
            raise NotFound("task", task_id)
        rec = row.record
        spec = rec.get("spec") or {}
        history = [
            e.to_dict() for e in self.store.events(task_id=task_id, kind="level_change", limit=1000)
        ]
        consistency = spec.get("consistency") or {}
        lease = self.leases.get(task_id)
        now = self.mono()
        remaining = 0.0 if lease is None else max(0.0, lease.replace_after - now)
        return {
            **self._task_summary(row),
            "record": rec,
            "spec": spec,
            "attempts": _attempts_of(TaskRecord.from_dict(rec)),
            "version_vector": rec.get("context") or {},
            "cancel_requested": rec.get("cancel_requested", False),
            "explanation": row.explanation,
            "blocked_reason": self.meta[task_id].blocked_reason if task_id in self.meta else None,
            "lease": None
            if lease is None
            else {
                "epoch": lease.epoch,
                "node_id": lease.node,
                "duration_s": lease.duration_s,
                "live": lease.live(now),
                "replace_after_s": remaining,
                "deadline_ms": self.wall_ms() + int(remaining * 1000),
            },
            "consistency": {
                "mode": "adaptive" if consistency.get("level") == "adaptive" else "fixed",
                "min": consistency.get("min"),
                "max": consistency.get("max"),
                "level": row.level,
                "history": history,
            },
            "events": [e.to_dict() for e in self.store.events(task_id=task_id, limit=200)],
        }

    def cancel_task(self, task_id: str, reason: str) -> dict[str, Any]:
        if task_id not in self.records:
            raise NotFound("task", task_id)

        def work() -> None:
            rec = self.records[task_id]
            if not rec.cancel_requested:
                rec = self._apply(request_cancel(rec, writer=self.node_id, hlc=self._hlc()))
                self._event("cancel_requested", reason, task_id=task_id)
            if rec.placement is not None:
                self._send_cancel(rec.placement.node, rec, reason)
            self._index(task_id)
            self._sync_reservation(task_id, rec)

        self._commit(work)
        return self.get_task(task_id)

    def list_workflows(self, *, after: str | None, limit: int) -> dict[str, Any]:
        rows = self.store.list_workflows(after=after, limit=limit)
        return {
            "workflows": [
                {
                    "workflow_id": r["workflow_id"],
                    "name": r["name"],
                    "submitted_ms": r["submitted_ms"],
                    "tasks": len(r["spec"].get("tasks", [])),
                }
                for r in rows
            ],
            "next": rows[-1]["workflow_id"] if len(rows) == limit else None,
        }

    def get_workflow(self, workflow_id: str) -> dict[str, Any]:
        row = self.store.get_workflow(workflow_id)
        if row is None:
            raise NotFound("workflow", workflow_id)
        tasks = []
        for spec in row["spec"].get("tasks", []):
            task = self.store.get_task(spec["id"])
            if task is not None:
                tasks.append({**self._task_summary(task), "depends_on": spec.get("depends_on", [])})
        status = workflow_status(t["status"] for t in tasks).status.value
        return {
            "workflow_id": workflow_id,
            "name": row["name"],
            "status": status,
            "submitted_ms": row["submitted_ms"],
            "spec": row["spec"],
            "tasks": tasks,
        }

    def list_nodes(self) -> dict[str, Any]:
        now = self.mono()
        report = self.registry.system_health(now)
        return {
            "nodes": [e.to_dict(now) for _, e in sorted(self.registry.nodes.items())],
            "system_health": {"state": report.health.value, **report.detail()},
        }

    def get_node(self, node_id: str) -> dict[str, Any]:
        entry = self.registry.get(node_id)
        if entry is None:
            raise NotFound("node", node_id)
        return {**entry.to_dict(self.mono()), "tasks": sorted(self.on_node.get(node_id, ()))}

    def set_draining(self, node_id: str, draining: bool) -> dict[str, Any]:
        entry = self.registry.get(node_id)
        if entry is None:
            raise NotFound("node", node_id)

        def work() -> None:
            if entry.draining != draining:
                entry.draining = draining
                self._dirty_nodes.add(node_id)
                self._event("drain" if draining else "undrain", "operator", node_id=node_id)

        self._commit(work)
        return self.get_node(node_id)

    def list_events(self, **filters: Any) -> dict[str, Any]:
        events = self.store.events(**filters)
        return {
            "events": [e.to_dict() for e in events],
            "next": events[-1].seq if events else filters.get("after", 0),
        }

    async def wait_for_events(self, after: int, timeout_s: float, **filters: Any) -> None:
        """Return once an event past ``after`` matching ``filters`` exists, or after
        ``timeout_s``. The waiter is taken before the check, so a commit between
        the two still wakes us."""
        waiter = self._events_changed
        if self.store.events(after=after, limit=1, **filters):
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter.wait(), timeout_s)

    def is_ready(self) -> tuple[bool, dict[str, Any]]:
        return self.broker_connected, {"broker_connected": self.broker_connected}

    def metrics_text(self) -> bytes:
        return self.metrics.render(self._refresh_gauges)

    def _refresh_gauges(self, m: ControllerMetrics) -> None:
        now = self.mono()
        m.nodes.clear()
        counts: dict[str, int] = defaultdict(int)
        for entry in self.registry.nodes.values():
            counts[entry.monitor.stats(now).state.value] += 1
        for state in LinkState:
            m.nodes.labels(link_state=state.value).set(counts.get(state.value, 0))
        m.tasks.clear()
        for status, level, n in self.store.count_tasks_by("status", "level"):
            m.tasks.labels(status=status, level=level or "none").set(n)


def _spec_problem(spec: dict[str, Any]) -> str | None:
    """Why ``spec`` is not a canonical task spec (``None`` if it is)."""
    try:
        canonical = parse_task_spec(spec).to_dict()
    except ValidationError as exc:
        return "; ".join(str(p) for p in exc.problems)
    if canonical != spec:
        return "spec is not in canonical form (shared.model TaskSpec.to_dict)"
    return None


def _attempts_of(rec: TaskRecord) -> list[dict[str, Any]]:
    """Every attempt, oldest dot first, spelled out for people (the record's own
    form is compact: it omits what the dot implies)."""
    return [
        {
            "dot": f"{writer}:{counter}",
            "node": a.node,
            "epoch": a.epoch,
            "status": a.status.name.lower(),
            "exit_code": a.exit_code,
            "result": a.result,
            "reason": a.reason,
            "started_hlc": a.started_hlc,
            "hlc": a.hlc,
        }
        for (writer, counter), a in sorted(rec.attempts.items())
    ]


def _run_seconds(attempt: Attempt) -> float | None:
    """Wall duration of a finished attempt from its HLC stamps (``None`` if unknown)."""
    if attempt.started_hlc is None:
        return None
    try:
        start = Timestamp.decode(attempt.started_hlc).wall_ms
        end = Timestamp.decode(attempt.hlc).wall_ms
    except ValueError:
        return None
    return max(0.0, (end - start) / 1000.0)
