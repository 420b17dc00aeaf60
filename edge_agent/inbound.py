"""Messages from the controller: one door for untrusted bytes, then one handler per type.

The door (:meth:`Inbound.on_message`) drops and counts (``rejected_<reason>``) anything that
is not a valid message for *this* node's ``down`` topic: a broker that misroutes another
node's traffic, or its own retained presence, to this subscription must not cost more than
a counter and a log line. Nothing is ever waited for here, so nothing can stall the session.
Every handler journals first (the message id is marked seen in the same transaction as its
effects, so a redelivery after a crash is recognised), then acts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from edge_agent.core import Core
from edge_agent.logs_serve import LogServer
from edge_agent.scheduler import LocalScheduler
from edge_agent.uplink import Uplink
from shared.clocks import Timestamp
from shared.crdt import TaskRecord, new_record, place
from shared.errors import ClockSkewError, RemoteProtocolError, SpecConflictError, ValidationError
from shared.model import parse_task_spec
from shared.protocol import (
    Ack,
    Cancel,
    Deltas,
    Digest,
    Envelope,
    GrantOutcome,
    LeaseGrant,
    LevelChange,
    LogRequest,
    Ping,
    Place,
    Pong,
    TopicKind,
    decode_from,
    parse_topic,
)
from shared.vocab import Level

__all__ = ["Inbound"]

log = logging.getLogger("edge_agent")


class Inbound:
    def __init__(self, core: Core, uplink: Uplink, scheduler: LocalScheduler) -> None:
        self.core = core
        self.uplink = uplink
        self.scheduler = scheduler
        self.logs = LogServer(core, uplink)
        self._handlers: dict[type, Callable[[Envelope, Any], None]] = {
            Place: self._on_place,
            Cancel: self._on_cancel,
            LeaseGrant: self._on_lease_grant,
            LevelChange: self._on_level_change,
            Digest: self._on_digest,
            Deltas: self._on_deltas,
        }

    # -- the door ------------------------------------------------------------------
    def _reject(self, reason: str, detail: str) -> None:
        self.core.counters[f"rejected_{reason}"] += 1
        log.warning(
            "rejected message", extra={"fields": {"reason": reason, "detail": detail[:200]}}
        )

    def on_message(self, topic_name: str, payload: bytes) -> None:
        core = self.core
        try:
            node, kind = parse_topic(topic_name)
            if node != core.node or kind != TopicKind.DOWN:
                self._reject("not_our_topic", topic_name)
                return
            env = decode_from(topic_name, payload)
        except RemoteProtocolError as exc:
            self._reject(exc.reason, str(exc))
            return
        try:
            core.hlc.receive(Timestamp.decode(env.hlc), core.clock.wall_ms())
        except (ClockSkewError, ValueError) as exc:
            self._reject("clock_skew", str(exc))
            return
        body = env.body
        self.uplink.heard()  # the controller speaks: no heartbeat needed a while
        if isinstance(body, Ack):
            self.uplink.on_ack(body)
            return
        if isinstance(body, Ping):
            self.uplink.publish("up", "pong", Pong(ping_id=env.id))
            return
        if isinstance(body, LogRequest):  # answered, never journaled (a lost one is re-asked)
            self.logs.answer(body)
            return
        handler = self._handlers.get(type(body))
        if handler is None:
            self._reject("unexpected_type", env.type)
            return
        if core.journal.seen(env.id):
            core.counters["duplicates"] += 1
            return
        core.counters[f"received_{env.type}"] += 1
        handler(env, body)

    def _mark_seen(self, env: Envelope) -> None:
        self.core.journal.mark_seen(env.id, now_ms=self.core.clock.wall_ms())

    # -- placements ----------------------------------------------------------------
    def _on_place(self, env: Envelope, body: Place) -> None:
        core = self.core
        task_id, epoch = body.task_id, body.epoch
        rec = core.replica.get(task_id)
        if rec is not None and rec.placement is not None and rec.placement.epoch > epoch:
            with core.txn():
                self._mark_seen(env)
                core.event("stale_placement", task_id, epoch=epoch, current=rec.placement.epoch)
            return
        try:
            spec = parse_task_spec(body.spec).to_dict()
        except ValidationError as exc:
            self._invalid_spec(env, body, exc)
            return
        if spec["id"] != task_id:
            why = f"spec id {spec['id']!r} is not {task_id!r}"
            self._invalid_spec(env, body, ValidationError([], what=why))
            return
        stamp = core.stamp()
        with core.txn():
            self._mark_seen(env)
            if rec is None or rec.spec is None:
                core.change(new_record(task_id, spec, writer=core.node, hlc=stamp), send=False)
            rec = core.replica.get(task_id)
            assert rec is not None
            if rec.placement is None or rec.placement.epoch < epoch:
                delta = place(
                    rec,
                    epoch=epoch,
                    node=core.node,
                    level=body.level,
                    lease_s=body.lease_s,
                    writer=core.node,
                    hlc=stamp,
                )
                core.change(delta, send=False)
            for attempt, run in core.attempts_of(task_id):
                if run.epoch < epoch:
                    core.executor.stop(attempt, "superseded")
            if self._acted_on(rec, epoch):
                # A re-sent placement (the controller's reconcile after a partition, a
                # broker redelivery under a new message id): this epoch already has an
                # attempt here, queued, running or finished; running it again would be a
                # duplicate execution the level may forbid.
                core.event("duplicate_placement", task_id, epoch=epoch)
                return
            self.scheduler.enqueue(
                task_id,
                epoch,
                body.level,
                spec,
                source="placed",
                lease_s=body.lease_s,
                inputs=body.inputs,
                deadline_left_s=body.deadline_left_s,
            )
            core.event("placed", task_id, epoch=epoch, level=body.level, lease_s=body.lease_s)
        if body.level == Level.STRONG:
            self.scheduler.request_placed(task_id, epoch, body.lease_s)

    def _acted_on(self, rec: TaskRecord, epoch: int) -> bool:
        """Whether this node already holds an attempt of ``epoch`` (in the record, the
        running set or the queue)."""
        core = self.core
        if any(a.node == core.node and a.epoch == epoch for a in rec.attempts.values()):
            return True
        if any(run.epoch == epoch for _, run in core.attempts_of(rec.task_id)):
            return True
        return any(q.task_id == rec.task_id and q.epoch == epoch for q in core.journal.queued())

    def _invalid_spec(self, env: Envelope, body: Place, exc: ValidationError) -> None:
        core = self.core
        reason = ("invalid_spec: " + "; ".join(str(p) for p in exc.problems))[:1000]
        with core.txn():
            self._mark_seen(env)
            rec = core.replica.get(body.task_id) or TaskRecord(body.task_id)
            core.fail_unrun(rec, body.epoch, reason)
            core.event("invalid_spec", body.task_id, problems=[str(p) for p in exc.problems])
        core.counters["invalid_spec"] += 1

    def _on_cancel(self, env: Envelope, body: Cancel) -> None:
        """Stop this node's work on the task up to ``body.epoch``. A cancel revokes
        attempts; it does not cancel the task: the controller sends it both when a user
        cancels (the task-wide flag then travels as CRDT state, in the deltas that come
        with it) and when it re-places the task elsewhere under a newer epoch, where
        setting the flag here would cancel the new attempt and the task's dependents."""
        core = self.core
        with core.txn():
            self._mark_seen(env)
            core.journal.revoke_queued(body.task_id, body.epoch)
            core.event("cancel", body.task_id, epoch=body.epoch, reason=body.reason)
        for attempt, run in core.attempts_of(body.task_id):
            if run.epoch <= body.epoch:
                core.executor.stop(attempt, "cancelled")

    def _on_level_change(self, env: Envelope, body: LevelChange) -> None:
        core = self.core
        with core.txn():
            self._mark_seen(env)
            core.journal.set_queued_level(body.task_id, body.epoch, str(body.level))
            core.event(
                "level_change", body.task_id, epoch=body.epoch, level=body.level, reason=body.reason
            )
        for attempt, run in core.attempts_of(body.task_id):
            if run.epoch == body.epoch:
                run.level = body.level
                if body.level != Level.STRONG:
                    core.leases.drop(run.task_id)
                    core.executor.set_deadline(attempt, None)
                # an upgrade to strong runs on until a lease is granted and fences from then

    def _on_lease_grant(self, env: Envelope, body: LeaseGrant) -> None:
        """Apply a grant or refusal that answers one of this process's outstanding
        requests exactly (``AgentLeases.answer``); anything else is logged and ignored.
        A final refusal (fencing) drops the epoch's queued attempt: it can never start.
        A grant for an attempt still queued is journaled in the transaction that starts
        it (one fsync, not two: the start is durable before it is launched or reported)."""
        core = self.core
        now = core.clock.mono()
        answer = core.leases.answer(body, now)
        task_id, epoch = body.task_id, body.epoch
        mine = [(a, run) for a, run in core.attempts_of(task_id) if run.epoch == epoch]
        common = {"epoch": epoch, "request_id": body.request_id}
        core.counters[f"lease_answer_{answer.outcome}"] += 1

        def journal() -> None:
            self._mark_seen(env)
            if answer.outcome == GrantOutcome.GRANTED:
                core.event(
                    "lease_granted",
                    task_id,
                    **common,
                    duration_s=body.duration_s,
                    deadline=answer.deadline,
                    mono=now,
                )
                for attempt, _ in mine:
                    core.journal.set_process_deadline(attempt, answer.deadline)
            elif answer.outcome == GrantOutcome.IGNORED:
                core.event(
                    "lease_ignored", task_id, **common, granted=body.granted, why=answer.reason
                )
            else:
                final = answer.outcome == GrantOutcome.REFUSED
                core.event(
                    "lease_refused",
                    task_id,
                    **common,
                    reason=answer.reason,
                    final=final,
                    retry_at=answer.retry_at,
                )
                if final:
                    core.journal.remove_queued(task_id, epoch=epoch)

        if answer.outcome == GrantOutcome.GRANTED and not mine:
            start = not core.draining and core.admission_stopped is None
            self.scheduler.settle([], start=start, first=journal)
        else:
            with core.txn():
                journal()
        if answer.outcome == GrantOutcome.GRANTED:
            for attempt, run in mine:
                if run.level == Level.STRONG:
                    core.executor.set_deadline(attempt, answer.deadline)

    # -- anti-entropy --------------------------------------------------------------
    def _on_digest(self, env: Envelope, body: Digest) -> None:
        """The cloud's digest: queue what it lacks in the range the digest covers (through
        the outbox: acked, durable), among what our last digest named (it answers for
        those; a periodic digest leaves out records long unchanged)."""
        core = self.core
        named = core.replica.named
        missing = [
            r
            for r in core.replica.missing_for(body.entries)
            if body.covers(r.task_id) and (named is None or r.task_id in named)
        ]
        with core.txn():
            self._mark_seen(env)
            now_ms = core.clock.wall_ms()
            for rec in missing:
                core.journal.add_outbox(rec.task_id, rec.to_dict(), now_ms=now_ms, obj=rec)
        self.uplink.flush()

    def _on_deltas(self, env: Envelope, body: Deltas) -> None:
        core = self.core
        stops: list[tuple[str, str]] = []
        with core.txn():
            self._mark_seen(env)
            for delta in body.records:
                try:
                    core.change(delta, send=False)
                except SpecConflictError as exc:
                    core.event("spec_conflict", delta.task_id, error=str(exc))
                    continue
                rec = core.replica.get(delta.task_id)
                assert rec is not None
                moved = rec.placement is not None and rec.placement.node != core.node
                for attempt, run in core.attempts_of(rec.task_id):
                    if rec.cancel_requested:
                        stops.append((attempt, "cancelled"))
                    elif moved and rec.placement is not None and rec.placement.epoch > run.epoch:
                        stops.append((attempt, "superseded"))
                if rec.cancel_requested or moved:
                    core.journal.remove_queued(rec.task_id)
        for attempt, reason in stops:
            core.executor.stop(attempt, reason)
