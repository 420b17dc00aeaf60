"""Messages from nodes, one handler per type: the controller's door for peer bytes.

:meth:`Ingest.batch` decodes each message (``shared.protocol.decode_from``; bad
input is rejected, counted and logged, never raised), receives its HLC, counts the
node as heard and dispatches on the envelope type. Record deltas from a node are
merged in exactly one place, :meth:`Ingest.merge_remote`; lease grants and
refusals are sent from :meth:`Ingest._on_lease_request` only. After the batch,
each changed task gets its reactions, ready work is placed and every node whose
outbox advanced gets one cumulative ``ack``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, is_dataclass
from typing import Any

from shared.authz import (
    Reason,
    Refusal,
    RefusalEvents,
    accept_seq,
    authorize_delta,
    may_read,
)
from shared.clocks import HybridClock, Timestamp
from shared.crdt import (
    TaskRecord,
    digest,
    missing,
    record_digest,
    visible_status,
)
from shared.decisions import (
    lease_refusal,
    place_in_flight_s,
    place_resend_due,
)
from shared.errors import ClockSkewError, RemoteProtocolError, SpecConflictError, ValidationError
from shared.model import parse_task_spec
from shared.protocol import (
    Ack,
    Digest,
    Envelope,
    LeaseGrant,
    LogChunk,
    decode_from,
    digest_parts,
)

from .metrics import ControllerMetrics
from .reactions import Reactions
from .reconcile import Reconciler
from .registry import NodeEntry, Registry
from .scheduling import Scheduler
from .store import LeaseRow, Store
from .tasks import TaskMeta, TaskTable
from .uow import UnitOfWork

__all__ = ["Ingest"]

log = logging.getLogger(__name__)

#: Records changed by a batch: task id -> the record before its first change.
Changed = dict[str, TaskRecord | None]


class Ingest:
    def __init__(
        self,
        *,
        clock: HybridClock,
        registry: Registry,
        tasks: TaskTable,
        uow: UnitOfWork,
        store: Store,
        scheduler: Scheduler,
        reconciler: Reconciler,
        reactions: Reactions,
        metrics: ControllerMetrics,
        on_log_chunk: Callable[[str, LogChunk], None] = lambda node_id, chunk: None,
    ) -> None:
        self.clock = clock
        self.registry = registry
        self.tasks = tasks
        self.uow = uow
        self.store = store
        self.scheduler = scheduler
        self.reconciler = reconciler
        self.reactions = reactions
        self.metrics = metrics
        self.acked: dict[str, int] = {}  # node -> outbox sequence merged and durable
        # Envelope type -> handler: the types a node may send us (decode_from has
        # already checked the type against the topic).
        self._handlers: dict[str, Callable[[NodeEntry, Envelope, float, Changed], None]] = {
            "hello": self._on_hello,
            "presence": self._on_presence,
            "telemetry": self._on_telemetry,
            "pong": self._on_pong,
            "heartbeat": self._on_heartbeat,
            "deltas": self._on_deltas,
            "lease_request": self._on_lease_request,
            "digest": self._on_digest,
            # Live log answers go to whoever asked (cloud.log_stream.LiveLogs.deliver).
            "log_chunk": lambda entry, env, now, _: on_log_chunk(entry.node_id, env.body),
        }
        self._received: dict[str, Any] = {}
        self._received_now: dict[str, int] = {}  # messages of the batch in hand, by type
        self._acked_now: set[str] = set()
        # Nodes whose unasked contact this batch already counted (one batch shares one
        # ``now``: a second message says nothing new of the link).
        self._heard_now: set[str] = set()
        self._refusal_events = RefusalEvents()  # bounds the event rows refusals cause

    def batch(self, messages: Iterable[tuple[str, bytes]], now: float) -> None:
        """Handle one batch (inside the caller's unit of work)."""
        changed: Changed = {}
        self._acked_now = set()
        self._heard_now = set()
        received = self._received_now = {}
        try:
            for topic, payload in messages:
                self._handle(topic, payload, now, changed)
        finally:
            # Counted per type once a batch (a labelled counter costs a lock a call).
            for type_, count in received.items():
                self._counter(type_).inc(count)
        for task_id, before in changed.items():
            self.reactions.after_change(task_id, before)
        self.scheduler.schedule(now)
        for node_id in sorted(self._acked_now):
            self.uow.queue(
                node_id, "ack", Ack(up_to_seq=self.acked.get(node_id), heartbeat_id=None)
            )

    def reject(self, reason: str, detail: str, where: str) -> None:
        self.metrics.rejected.labels(reason=reason).inc()
        log.warning(
            "rejected message on %s: %s (%s)",
            where,
            detail,
            reason,
            extra={"fields": {"where": where, "reason": reason}},
        )

    def _handle(self, topic: str, payload: bytes, now: float, changed: Changed) -> None:
        try:
            env = decode_from(topic, payload)
        except RemoteProtocolError as exc:
            self.reject(exc.reason, str(exc), topic)
            return
        # decode_from checked that the sender is the topic's node (every kind we
        # subscribe to is node-originated), so the topic need not be parsed again.
        node_id = env.sender
        wall = self.uow.wall_ms()
        try:
            self.clock.receive(Timestamp.decode(env.hlc), wall)
        except ClockSkewError as exc:
            self.reject("clock_skew", str(exc), topic)
            return
        except ValueError as exc:
            self.reject("invalid", f"bad hlc: {exc}", topic)
            return
        handler = self._handlers.get(env.type)
        if handler is None:
            self.reject("unexpected_type", env.type, topic)
            return
        received = self._received_now
        received[env.type] = received.get(env.type, 0) + 1
        if env.type == "pong" and self.registry.get(node_id) is None:
            # The answer to a ping of a node we forgot (removed while the ping was out):
            # nothing to learn from it, and it must not bring the node back.
            return
        entry = self.registry.ensure(node_id, now, wall)
        if _broker_said(env):
            self._heard_now.discard(node_id)  # after its will, the next word counts again
        elif node_id not in self._heard_now:
            unasked = env.type != "pong"
            change = self.registry.contact(entry, now, wall, unasked=unasked)
            self.reconciler.link_changes([change], now)
            if unasked:
                self._heard_now.add(node_id)
        handler(entry, env, now, changed)

    def _counter(self, type_: str) -> Any:
        """The received-messages counter of ``type_`` (its labelled child, kept)."""
        counter = self._received.get(type_)
        if counter is None:
            counter = self._received[type_] = self.metrics.messages.labels(type=type_)
        return counter

    # -- node state -------------------------------------------------------------------

    def _on_hello(self, entry: NodeEntry, env: Envelope, now: float, _: Changed) -> None:
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
            "slots": cap.slots,
        }
        entry.agent_version = body.agent_version
        entry.api_port = body.api_port
        entry.presence = "online"
        self.uow.dirty_nodes.add(entry.node_id)
        self.registry.changed()
        if known:
            self.uow.event("node_reconciled", "hello from a known node", node_id=entry.node_id)
        else:
            self.uow.event("node_registered", "first hello", node_id=entry.node_id, tier=entry.tier)
        self.reconciler.reconcile(entry.node_id)

    def _on_presence(self, entry: NodeEntry, env: Envelope, now: float, _: Changed) -> None:
        status = env.body.status
        if status == entry.presence:
            return
        entry.presence = status
        self.uow.dirty_nodes.add(entry.node_id)
        if status == "offline":
            self.reconciler.link_changes([entry.monitor.disconnected(now)], now)
        else:
            self.reconciler.link_changes([entry.monitor.reconnected(now)], now)

    def _on_telemetry(self, entry: NodeEntry, env: Envelope, now: float, _: Changed) -> None:
        body = env.body
        entry.telemetry = asdict(body) if is_dataclass(body) else dict(vars(body))
        self.uow.dirty_nodes.add(entry.node_id)
        self._reported_rtt(entry, body.rtt_ms_p50, now)

    def _reported_rtt(self, entry: NodeEntry, rtt_ms: float | None, now: float) -> None:
        """A round trip the node measured on its own messages (acks piggybacked on its
        batches and heartbeats): an idle node is not pinged, so this grades its link."""
        if rtt_ms is not None:
            self.reconciler.link_changes([self.registry.round_trip(entry, rtt_ms, now)], now)

    def _on_pong(self, entry: NodeEntry, env: Envelope, now: float, _: Changed) -> None:
        change = self.registry.pong(entry.node_id, env.body.ping_id, now)
        self.reconciler.link_changes([change], now)

    def _on_heartbeat(self, entry: NodeEntry, env: Envelope, now: float, _: Changed) -> None:
        self._reported_rtt(entry, env.body.rtt_ms, now)
        self.uow.queue(
            entry.node_id, "ack", Ack(up_to_seq=self.acked.get(entry.node_id), heartbeat_id=env.id)
        )

    # -- records ------------------------------------------------------------------------

    def _on_deltas(self, entry: NodeEntry, env: Envelope, now: float, changed: Changed) -> None:
        node_id = entry.node_id
        refused: list[tuple[str, Refusal]] = []
        originated: dict[str, int] = {}
        for delta in env.body.records:
            self.merge_remote(node_id, delta, changed, refused, originated)
        if env.seq is not None:
            mark, jump = accept_seq(self.acked.get(node_id, 0), env.seq)
            if jump is not None:
                refused.append(("", jump))
            self._advance_ack(node_id, mark)
            self._acked_now.add(node_id)
        if refused:
            self._report_refusals(node_id, refused)

    def _report_refusals(self, node_id: str, refused: list[tuple[str, Refusal]]) -> None:
        """What one message of ``node_id`` was refused: each part counted per reason;
        one event per reason with the node as actor, at most one per node and reason
        every 10 s (``RefusalEvents``: the next one says how many were held back)."""
        by_reason: dict[Reason, list[tuple[str, Refusal]]] = {}
        for task_id, refusal in refused:
            by_reason.setdefault(refusal.reason, []).append((task_id, refusal))
        for reason, items in sorted(by_reason.items()):
            self.metrics.refused.labels(reason=reason.value).inc(len(items))
            held = self._refusal_events.admit(node_id, reason, len(items), self.uow.wall_ms())
            if held is None:
                continue
            task_id, first = items[0]
            log.warning(
                "refused from %s: %s x%d (%s)",
                node_id,
                reason,
                len(items),
                first.detail,
                extra={"fields": {"node_id": node_id, "reason": reason.value, "count": len(items)}},
            )
            self.uow.event(
                "delta_refused",
                reason.value,
                task_id=task_id or None,
                node_id=node_id,
                actor=node_id,
                count=len(items),
                held_back=held,
                detail=first.detail,
                tasks=sorted({t for t, _ in items if t})[:20],
            )

    def merge_remote(
        self,
        node_id: str,
        delta: TaskRecord,
        changed: Changed,
        refused: list[tuple[str, Refusal]],
        originated: dict[str, int],
    ) -> None:
        """Merge one record delta a node sent (the only place remote deltas join
        the table): only the part ``shared.authz.authorize_delta`` lets the node
        write is merged, the rest is added to ``refused``; a bad delta is rejected
        alone, not its whole message. ``originated`` caches, per message, the
        node's active tasks it created (its quota)."""
        before = self.tasks.admit_for(node_id, delta.task_id)
        meta = self.tasks.meta.get(delta.task_id)
        if before is None and node_id not in originated:
            originated[node_id] = len(self.tasks.originated.get(node_id, ()))
        verdict = authorize_delta(
            node_id,
            before,
            delta,
            origin=meta.origin if meta is not None else None,
            originated=originated.get(node_id, 0),
            placed=meta.placed if meta is not None else {},
        )
        if verdict.refusals:
            refused.extend((delta.task_id, r) for r in verdict.refusals)
        if verdict.accepted is None:
            return
        delta = verdict.accepted
        if delta.spec is not None and (before is None or before.spec is None):
            # A task created on a node (local submission): its spec must be one
            # shared.model would have produced, or placement and the API would
            # trip over it later.
            why = _spec_problem(delta.spec)
            if why is not None:
                self.reject("invalid_spec", f"task {delta.task_id}: {why}", f"node {node_id}")
                self.uow.event("delta_rejected", why, task_id=delta.task_id, node_id=node_id)
                return
        # A record we never saw is the node's own local submission (authorised above).
        if meta is None:
            self.tasks.meta[delta.task_id] = TaskMeta(
                submitted_ms=self.uow.wall_ms(), origin=node_id
            )
            originated[node_id] = originated.get(node_id, 0) + 1
        try:
            after = self.tasks.apply(delta)
        except SpecConflictError as exc:
            self.metrics.conflicts.inc()
            self.uow.event(
                "conflict", f"spec conflict: {exc}", task_id=delta.task_id, node_id=node_id
            )
            return
        if after is not before and delta.task_id not in changed:
            changed[delta.task_id] = before

    def _advance_ack(self, node_id: str, seq: int) -> None:
        """Cumulative ack: everything up to ``seq`` is merged and (once this
        transaction commits) durable. Deltas are joins, so a redelivery below the
        mark is harmless; the mark never goes back."""
        if seq > self.acked.get(node_id, 0):
            self.acked[node_id] = seq
            self.uow.dirty_acks.add(node_id)

    def _on_lease_request(self, entry: NodeEntry, env: Envelope, now: float, _: Changed) -> None:
        """Grant, renew or refuse (fencing by epoch: ``shared.consistency.LeaseBook``);
        every answer echoes the request's ``request_id``."""
        req = env.body
        node_id = entry.node_id
        rec = self.tasks.admit_for(node_id, req.task_id)
        refusal = lease_refusal(
            known=rec is not None,
            placed=rec is not None and rec.placement is not None,
            cancel_requested=rec is not None and rec.cancel_requested,
            status=visible_status(rec) if rec is not None else None,
        )
        if refusal is not None or rec is None or rec.placement is None:
            granted, reason, duration = False, refusal or "unknown_task", 0.0
        else:
            decision = self.tasks.leases.request(
                task_id=req.task_id,
                node=node_id,
                epoch=req.epoch,
                duration_s=req.duration_s,
                now=now,
                placed_epoch=rec.placement.epoch,
                placed_node=rec.placement.node,
                wall_ms=self.uow.wall_ms(),
            )
            granted, reason, duration = decision.granted, decision.reason, decision.duration_s
            if decision.lease is not None:
                lease = decision.lease
                wall = self.uow.wall_ms()
                self.store.put_lease(
                    LeaseRow(
                        task_id=lease.task_id,
                        epoch=lease.epoch,
                        node_id=lease.node,
                        duration_s=lease.duration_s,
                        granted_ms=wall,
                        deadline_ms=wall + int((lease.replace_after - now) * 1000) + 1,
                    )
                )
        self.metrics.leases.labels(granted=str(granted).lower()).inc()
        self.uow.event(
            "lease_grant" if granted else "lease_denied",
            reason,
            task_id=req.task_id,
            node_id=node_id,
            epoch=req.epoch,
            duration_s=duration,
        )
        self.uow.queue(
            node_id,
            "lease_grant",
            LeaseGrant(
                task_id=req.task_id,
                epoch=req.epoch,
                duration_s=duration,
                granted=granted,
                reason=reason,
                request_id=req.request_id,  # the agent credits a grant to this request only
            ),
        )

    def _on_digest(self, entry: NodeEntry, env: Envelope, now: float, _: Changed) -> None:
        """Anti-entropy: send the node what its digest shows it lacks, then our
        digest of its tasks so it sends what we lack."""
        node_id = entry.node_id
        body: Digest = env.body
        entries: Mapping[str, str] = body.entries
        same = self.tasks.same_as_stored(node_id, entries)
        # A digest part speaks only for its range of ids (``Digest.covers``); a node
        # is answered only for its own tasks (``shared.authz.may_read``).
        relevant = {
            t: rec
            for t, rec in self.tasks.relevant(node_id, set(entries) - same).items()
            if body.covers(t)
            and may_read(node_id, rec, self.tasks.meta[t].origin, self.tasks.meta[t].placed)
        }
        unreadable = sum(
            1 for t in entries if body.covers(t) and t not in relevant and t not in same
        )
        if unreadable:
            self.metrics.refused.labels(reason=Reason.UNREADABLE.value).inc(unreadable)
        self.uow.queue_records(node_id, missing(relevant, entries))
        ours = digest(relevant)
        ours.update((t, entries[t]) for t in same if body.covers(t))
        for part in digest_parts(ours, after=body.after, upto=body.upto):
            self.uow.queue(node_id, "digest", part)
        # A task placed here with no attempt of its epoch, of which the node holds no
        # record or exactly ours, may have lost its `place`: sent again when
        # ``shared.decisions.place_resend_due`` says (its module says why and when; the
        # node recognises an epoch it queued or ran). A copy that differs holds an attempt
        # we lack; a placement the node wrote itself (epoch 0 of its own task) had no
        # `place` to lose. ``missing`` above sent the record if the node lacks it.
        in_flight_s = place_in_flight_s(entry.monitor.stats(now).rtt_p99_ms)
        for task_id in sorted(t for t in self.tasks.active_on(node_id) if body.covers(t)):
            rec = self.tasks.records[task_id]
            meta = self.tasks.meta[task_id]
            assert rec.placement is not None
            epoch = rec.placement.epoch
            theirs = entries.get(task_id)
            if (
                not (epoch == 0 and meta.origin == node_id)
                and theirs in (None, record_digest(rec))
                and not any(a.epoch == epoch for a in rec.attempts.values())
                and place_resend_due(
                    meta.place_sent_at,
                    meta.place_resends,
                    now,
                    held=theirs is not None,
                    in_flight_s=in_flight_s,
                )
            ):
                meta.place_resends += 1
                self.scheduler.send_place(task_id, now, record=False)


def _broker_said(env: Envelope) -> bool:
    """An ``offline`` presence is the broker's last will as often as the node's own
    goodbye: never proof of life, and never a restart of the out-of-contact clock
    (a frozen node's will arrives while it is still frozen)."""
    return env.type == "presence" and env.body.status == "offline"


def _spec_problem(spec: dict[str, Any]) -> str | None:
    """Why ``spec`` is not a canonical task spec (``None`` if it is)."""
    try:
        canonical = parse_task_spec(spec).to_dict()
    except ValidationError as exc:
        return "; ".join(str(p) for p in exc.problems)
    if canonical != spec:
        return "spec is not in canonical form (shared.model TaskSpec.to_dict)"
    return None
