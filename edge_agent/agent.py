"""The agent's core: one thread owns the state, the journal and every decision's inputs.

Network, API and signal handlers only *enqueue* (``self.inbox``); the core loop takes one item
at a time and runs timers between items. A single writer keeps the journal simple and makes the
ordering rule easy to hold: **journal first, then act** (apply to memory, start or stop a process,
publish). Every decision is taken by a ``shared`` policy (validation, backoff, lease arithmetic,
connectivity, queue order, admission, shedding); this module only gathers inputs and carries
decisions out.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import random
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from edge_agent import __version__
from edge_agent.config import AgentConfig
from edge_agent.executor import Executor, Launch, Outcome, prepare_state_dir
from edge_agent.journal import Journal, JournalError
from shared.autonomy import (
    QueuedTask,
    admit,
    autonomy_level,
    connectivity,
    may_start,
    order_queue,
    select_for_shedding,
)
from shared.clocks import HybridClock, Timestamp
from shared.consistency import AgentLease
from shared.crdt import (
    AttemptStatus,
    Dot,
    Replica,
    TaskRecord,
    max_attempts,
    new_record,
    place,
    set_status,
    start_attempt,
    visible_status,
)
from shared.errors import (
    ClockSkewError,
    LocalProtocolError,
    RemoteProtocolError,
    SpecConflictError,
    ValidationError,
)
from shared.model import RetryPolicy, backoff_delay, parse_task_spec
from shared.protocol import (
    PROTOCOL_VERSION,
    Ack,
    AgentLeases,
    Cancel,
    Capacity,
    Deltas,
    Digest,
    Envelope,
    GrantOutcome,
    Heartbeat,
    Hello,
    LeaseGrant,
    LevelChange,
    Ping,
    Place,
    Pong,
    Presence,
    Telemetry,
    decode_from,
    digest_parts,
    encode,
    topic,
)
from shared.vocab import Connectivity, Level, TaskStatus

__all__ = ["Agent"]

log = logging.getLogger("edge_agent")

_TICK_S = 0.1
_UP_BATCH_BYTES = 200_000


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _attempt_key(task_id: str, dot: Dot) -> str:
    """The agent's key for one attempt: ``task/node:counter``. A dot's counter is per task,
    so the dot alone would collide across tasks; ``/`` never occurs in a task id."""
    return f"{task_id}/{dot[0]}:{dot[1]}"


def _parse_dot(key: str) -> Dot:
    node, _, counter = key.rpartition("/")[2].rpartition(":")
    return node, int(counter)


@dataclass
class _ApiCall:
    method: str
    path: str
    body: bytes
    done: threading.Event = field(default_factory=threading.Event)
    result: tuple[int, object] = (500, {"error": "no reply"})


@dataclass
class _Running:
    task_id: str
    dot: Dot
    epoch: int
    level: str


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.node = cfg.node.id
        self.state_dir = cfg.state_dir
        prepare_state_dir(self.state_dir, cfg.executor.run_as)  # issue 11: private, umask 077
        self.journal = Journal(self.state_dir / "journal.sqlite")
        self.executor = Executor(self.state_dir / "runs", cfg.executor)
        self.clock = HybridClock(self.node)
        self.replica = Replica(self.node)
        self.rng = random.Random()
        self.inbox: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.running: dict[str, _Running] = {}  # by attempt string
        # Strong tasks' leases; the incarnation makes this process's request ids its own.
        self.leases = AgentLeases(
            uuid.uuid4().hex[:16],
            period_s=cfg.autonomy.period_s,
            margin_s=cfg.autonomy.lease_margin_s,
            rng=self.rng,
        )
        self.counters: Counter[str] = Counter()
        self.rtt_ms: deque[float] = deque(maxlen=64)
        self.started_mono = time.monotonic()
        self.last_ack: float | None = None
        self.last_ack_wall_ms: int | None = None
        self.connectivity = Connectivity.DISCONNECTED
        self.autonomy = autonomy_level(Connectivity.DISCONNECTED)
        self.link_up = False
        self.sent_seq = 0  # highest outbox seq published on this connection
        self.acked_seq = 0
        self.outbox_progress_at = 0.0  # link up, an ack advancing the outbox, or a resend
        self.pending_heartbeats: dict[str, float] = {}
        self.draining = False
        self.admission_stopped: str | None = None  # why (journal failure), or None
        self.transport: Any = None
        self.api: Any = None
        self.advert: Any = None
        self.sampler: Any = None
        self._timers: dict[str, float] = {}
        self._stop = threading.Event()

    # ---------------------------------------------------------------- time and journal
    def _stamp(self) -> Timestamp:
        return self.clock.now(_wall_ms())

    def _event(self, kind: str, task_id: str | None = None, **data: Any) -> None:
        """Append to the event log (inside the caller's transaction when there is one)."""
        self.journal.event(
            kind,
            task_id=task_id,
            data=data,
            now_ms=_wall_ms(),
            mono=time.monotonic(),
            hlc=self.clock.last.encode() if self.clock.last else None,
        )

    def _commit_delta(self, delta: TaskRecord, *, send: bool = True) -> TaskRecord:
        """Persist the merge of ``delta`` (and queue it for upstream) — call inside a
        transaction; memory is updated by :meth:`_apply_committed` after the commit."""
        current = self.replica.get(delta.task_id)
        merged = delta if current is None else current.merge(delta)
        placement = merged.placement
        self.journal.put_record(
            merged.task_id,
            merged.to_dict(),
            status=str(visible_status(merged)),
            epoch=placement.epoch if placement else None,
            node=placement.node if placement else None,
            level=placement.level if placement else None,
            now_ms=_wall_ms(),
        )
        if send:
            self.journal.add_outbox(merged.task_id, delta.to_dict(), now_ms=_wall_ms())
        last = self.clock.last
        if last is not None:
            self.journal.set_meta("hlc", last.encode())
        return merged

    def _change(self, *deltas: TaskRecord, send: bool = True) -> None:
        """Journal deltas, then apply them in memory (each applied before the next is made
        is the caller's job: mutators read the record they extend)."""
        for delta in deltas:
            self._commit_delta(delta, send=send)
            self.replica.apply(delta)

    def _txn(self) -> Any:
        return self.journal.transaction()

    # ---------------------------------------------------------------- public entry points
    def submit_api(self, method: str, path: str, body: bytes) -> tuple[int, object]:
        """Called on the API thread: hand the request to the core and wait for its answer."""
        call = _ApiCall(method, path, body)
        self.inbox.put(("api", call))
        if not call.done.wait(10.0):
            return 503, {"error": "agent busy"}
        return call.result

    def on_message(self, topic_name: str, payload: bytes) -> None:
        self.inbox.put(("msg", topic_name, payload))

    def on_link(self, up: bool) -> None:
        self.inbox.put(("link", up))

    def request_stop(self) -> None:
        self.inbox.put(("stop",))

    # ---------------------------------------------------------------- run
    def run(self) -> int:
        from edge_agent.api import LocalApi
        from edge_agent.telemetry import Sampler
        from edge_agent.transport import Transport

        self._recover()
        self.sampler = Sampler(self.state_dir)
        self.api = LocalApi(self.cfg, self.submit_api)  # Unix socket or TCP + token
        self.api.start()
        if self.cfg.discovery.enabled:
            self._advertise()
        self.transport = Transport(
            self.cfg.broker,
            client_id=f"continuum-agent-{self.node}",
            subscriptions=[topic(self.node, "down")],
            on_message=self.on_message,
            on_link=self.on_link,
            will=lambda: (
                topic(self.node, "presence"),
                self._envelope("presence", Presence(status="offline")),
            ),
            resolve=self._resolve_broker,
            rng=self.rng,
        )
        self.transport.start()
        self._write_ready()
        log.info(
            "agent running",
            extra={"fields": {"node": self.node, "api_port": self.api.port, "pid": os.getpid()}},
        )
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _write_ready(self) -> None:
        ready = {"pid": os.getpid(), "api_port": self.api.port, "node_id": self.node}
        path = self.state_dir / "agent.ready.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(ready), encoding="utf-8")
        os.replace(tmp, path)

    def _advertise(self) -> None:
        from edge_agent.discovery import Advertisement

        try:
            port = self.api.port or 0  # 0: the API is a Unix socket (issue 11)
            self.advert = Advertisement(
                self.node, self.cfg.node.tier, port, self.cfg.discovery.interfaces
            )
        except Exception as exc:  # zeroconf raises a zoo of OSError/NonUniqueName types
            log.warning("zeroconf advertisement failed", extra={"fields": {"error": str(exc)}})

    def _resolve_broker(self) -> tuple[str, int] | None:
        if self.cfg.broker.host:
            return self.cfg.broker.host, self.cfg.broker.port
        from edge_agent.discovery import browse_broker

        try:
            return browse_broker(self.cfg.discovery.interfaces, self.cfg.discovery.browse_timeout_s)
        except Exception as exc:
            log.warning("broker discovery failed", extra={"fields": {"error": str(exc)}})
            return None

    def _loop(self) -> None:
        drain_until: float | None = None
        while True:
            try:
                item = self.inbox.get(timeout=_TICK_S)
            except queue.Empty:
                item = None
            if item is not None:
                self._handle(item)
            if item is not None and item[0] == "stop" and drain_until is None:
                self.draining = True
                drain_until = time.monotonic() + self.cfg.executor.shutdown_grace_s
                self._safely(self._persist_event, "draining", None, running=len(self.running))
            self._safely(self._tick)
            if drain_until is not None:
                if not self.running:
                    return
                if time.monotonic() >= drain_until:
                    for attempt in list(self.running):
                        self.executor.stop(attempt, "agent_shutdown")
                    drain_until = time.monotonic() + self.cfg.executor.kill_grace_s + 2.0

    def _persist_event(self, kind: str, task_id: str | None, **data: Any) -> None:
        with self._txn():
            self._event(kind, task_id, **data)

    def _safely(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a step; a journal failure stops admission, any other error is a logged bug.
        Nothing from outside may take the core loop down."""
        try:
            return fn(*args, **kwargs)
        except JournalError as exc:
            if self.admission_stopped is None:
                log.error(
                    "journal write failed; admission stopped", extra={"fields": {"error": str(exc)}}
                )
            self.admission_stopped = str(exc)
            self.counters["journal_errors"] += 1
            self._reload_replica()
        except Exception:
            log.exception("internal error in %s", getattr(fn, "__name__", fn))
            self.counters["internal_errors"] += 1
        return None

    def _reload_replica(self) -> None:
        """After a failed transaction, memory holds merges the journal rolled back: rebuild
        the replica from what *is* committed, so nothing unjournaled is ever sent or shown."""
        try:
            replica = Replica(self.node)
            for data in self.journal.records():
                replica.apply(TaskRecord.from_dict(data))
        except Exception:  # reads failing too: keep memory, admission stays stopped
            log.exception("cannot reload the journal after a write failure")
            return
        self.replica = replica

    def _probe_journal(self) -> None:
        """While admission is stopped, try one small write now and then; resume when it works."""
        with self._txn():
            self._event("journal_recovered", None, after=self.admission_stopped)
        log.warning("journal writable again; admission resumed")
        self.admission_stopped = None

    def _handle(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "msg":
            self._safely(self._on_down, item[1], item[2])
        elif kind == "link":
            self._safely(self._on_link_change, item[1])
        elif kind == "api":
            call: _ApiCall = item[1]
            try:
                result = self._safely(self._on_api, call.method, call.path, call.body)
                call.result = result if result is not None else (500, {"error": "internal"})
            finally:
                call.done.set()

    # ---------------------------------------------------------------- envelopes
    def _new_envelope(self, type_: str, body: Any, *, seq: int | None = None) -> Envelope:
        """A fresh envelope from this node, stamped now on the HLC."""
        return Envelope(
            type=type_,
            id=uuid.uuid4().hex,
            sender=self.node,
            hlc=self._stamp().encode(),
            body=body,
            seq=seq,
        )

    def _envelope(self, type_: str, body: Any) -> bytes:
        """Encoded envelope for the transport to hold (the last will)."""
        return encode(self._new_envelope(type_, body))

    def _publish(
        self,
        kind: str,
        type_: str,
        body: Any,
        *,
        seq: int | None = None,
        qos: int = 1,
        retain: bool = False,
    ) -> str | None:
        """Publish now if connected; returns the envelope id (``None`` if not sent)."""
        if self.transport is None or not self.transport.connected:
            return None
        env = self._new_envelope(type_, body, seq=seq)
        try:
            payload = encode(env)
        except LocalProtocolError as exc:
            log.error("cannot encode %s", type_, extra={"fields": {"error": str(exc)}})
            self.counters["encode_errors"] += 1
            return None
        ok = self.transport.publish(topic(self.node, kind), payload, qos=qos, retain=retain)
        return env.id if ok else None

    # ---------------------------------------------------------------- link and sync
    def _on_link_change(self, up: bool) -> None:
        self.link_up = up
        with self._txn():
            self._event("link", None, up=up)
        if not up:
            return
        self.outbox_progress_at = time.monotonic()
        # On every (re)connect: announce, flush the outbox from its start, then anti-entropy.
        self._publish("presence", "presence", Presence(status="online"), retain=True)
        self._send_hello()
        self.sent_seq = 0
        self._flush()
        self._send_digest()
        self._heartbeat()

    def _send_hello(self) -> None:
        from edge_agent.telemetry import capacity

        cap = capacity(self.state_dir)
        self._publish(
            "hello",
            "hello",
            Hello(
                tier=self.cfg.node.tier,
                labels=dict(self.cfg.node.labels),
                agent_version=__version__,
                protocol_version=PROTOCOL_VERSION,
                capacity=Capacity(
                    cpus=cap["cpus"],
                    memory_mb=cap["memory_mb"],
                    disk_mb=cap["disk_mb"],
                    battery_pct=cap["battery_pct"],
                ),
                api_port=self.api.port if self.api else None,
            ),
        )

    def _flush(self) -> None:
        """Publish unsent outbox rows in batches (rows stay until acknowledged)."""
        while self.link_up:
            rows = self.journal.outbox_batch(self.sent_seq, self.cfg.autonomy.batch_max)
            if not rows:
                return
            batch: list[TaskRecord] = []
            size = 0
            last = self.sent_seq
            for seq, delta in rows:
                raw = len(json.dumps(delta))
                if batch and size + raw > _UP_BATCH_BYTES:
                    break
                batch.append(TaskRecord.from_dict(delta))
                size += raw
                last = seq
            if self._publish("up", "deltas", Deltas(records=tuple(batch)), seq=last) is None:
                return
            self.sent_seq = last

    def _send_digest(self) -> None:
        """Anti-entropy: the digest of every record, in parts under the message size bound
        (each covers a range of ids: the controller answers each with what we lack there)."""
        self._timers["antientropy"] = time.monotonic() + self.cfg.antientropy_s
        for part in digest_parts(self.replica.digest()):
            self._publish("up", "digest", part)

    def _heartbeat(self) -> None:
        env_id = self._publish("up", "heartbeat", Heartbeat())
        if env_id is not None:
            self.pending_heartbeats[env_id] = time.monotonic()
            if len(self.pending_heartbeats) > 32:
                self.pending_heartbeats.pop(next(iter(self.pending_heartbeats)))

    # ---------------------------------------------------------------- down messages
    def _reject(self, reason: str, detail: str) -> None:
        self.counters[f"rejected_{reason}"] += 1
        log.warning(
            "rejected message", extra={"fields": {"reason": reason, "detail": detail[:200]}}
        )

    def _on_down(self, topic_name: str, payload: bytes) -> None:
        try:
            env = decode_from(topic_name, payload)
        except RemoteProtocolError as exc:
            self._reject(exc.reason, str(exc))
            return
        try:
            self.clock.receive(Timestamp.decode(env.hlc), _wall_ms())
        except (ClockSkewError, ValueError) as exc:
            self._reject("clock_skew", str(exc))
            return
        body = env.body
        if isinstance(body, Ack):
            self._on_ack(body)
            return
        if isinstance(body, Ping):
            self._publish("up", "pong", Pong(ping_id=env.id))
            return
        if self.journal.seen(env.id):
            self.counters["duplicates"] += 1
            return
        handler = {
            Place: self._on_place,
            Cancel: self._on_cancel,
            LeaseGrant: self._on_lease_grant,
            LevelChange: self._on_level_change,
            Digest: self._on_digest,
            Deltas: self._on_deltas,
        }.get(type(body))
        if handler is None:
            self._reject("unexpected_type", env.type)
            return
        self.counters[f"received_{env.type}"] += 1
        handler(env, body)

    def _mark_seen(self, env: Envelope) -> None:
        self.journal.mark_seen(env.id, now_ms=_wall_ms())

    def _on_ack(self, body: Ack) -> None:
        now = time.monotonic()
        self.last_ack, self.last_ack_wall_ms = now, _wall_ms()
        if body.heartbeat_id is not None:
            sent = self.pending_heartbeats.pop(body.heartbeat_id, None)
            if sent is not None:
                self.rtt_ms.append((now - sent) * 1000.0)
        if body.up_to_seq is not None and body.up_to_seq > self.acked_seq:
            with self._txn():
                self.journal.ack(body.up_to_seq)
            self.acked_seq = body.up_to_seq
            self.outbox_progress_at = now
        self._update_connectivity()

    def _on_place(self, env: Envelope, body: Place) -> None:
        task_id, epoch = body.task_id, body.epoch
        rec = self.replica.get(task_id)
        if rec is not None and rec.placement is not None and rec.placement.epoch > epoch:
            with self._txn():
                self._mark_seen(env)
                self._event("stale_placement", task_id, epoch=epoch, current=rec.placement.epoch)
            return
        try:
            spec = parse_task_spec(body.spec).to_dict()
        except ValidationError as exc:
            self._invalid_spec(env, body, exc)
            return
        if spec["id"] != task_id:
            self._invalid_spec(
                env, body, ValidationError([], what=f"spec id {spec['id']!r} is not {task_id!r}")
            )
            return
        stamp = self._stamp()
        with self._txn():
            self._mark_seen(env)
            if rec is None or rec.spec is None:
                self._change(new_record(task_id, spec, writer=self.node, hlc=stamp), send=False)
            rec = self.replica.get(task_id)
            assert rec is not None
            if rec.placement is None or rec.placement.epoch < epoch:
                self._change(
                    place(
                        rec,
                        epoch=epoch,
                        node=self.node,
                        level=body.level,
                        lease_s=body.lease_s,
                        writer=self.node,
                        hlc=stamp,
                    ),
                    send=False,
                )
            for attempt, run in self.running.items():
                if run.task_id == task_id and run.epoch < epoch:
                    self.executor.stop(attempt, "superseded")
            if self._acted_on(rec, epoch):
                # A re-sent placement (the controller's reconcile after a partition, a
                # broker redelivery under a new message id): this epoch already has an
                # attempt here, queued, running or finished; running it again would be a
                # duplicate execution the level may forbid.
                self._event("duplicate_placement", task_id, epoch=epoch)
                return
            self._enqueue(
                task_id,
                epoch,
                body.level,
                spec,
                source="placed",
                lease_s=body.lease_s,
                inputs=body.inputs,
            )
            self._event("placed", task_id, epoch=epoch, level=body.level, lease_s=body.lease_s)

    def _acted_on(self, rec: TaskRecord, epoch: int) -> bool:
        """Whether this node already holds an attempt of ``epoch`` (in the record, the
        running set or the queue)."""
        if any(a.node == self.node and a.epoch == epoch for a in rec.attempts.values()):
            return True
        if any(r.task_id == rec.task_id and r.epoch == epoch for r in self.running.values()):
            return True
        return any(
            q["task_id"] == rec.task_id and q["epoch"] == epoch for q in self.journal.queued()
        )

    def _invalid_spec(self, env: Envelope, body: Place, exc: ValidationError) -> None:
        stamp = self._stamp()
        with self._txn():
            self._mark_seen(env)
            rec = self.replica.get(body.task_id) or TaskRecord(body.task_id)
            dot, started = start_attempt(
                rec,
                node=self.node,
                epoch=body.epoch,
                writer=self.node,
                hlc=stamp,
                status=AttemptStatus.PLACED,
            )
            self._change(started)
            rec = self.replica.get(body.task_id)
            assert rec is not None
            reason = ("invalid_spec: " + "; ".join(str(p) for p in exc.problems))[:1000]
            self._change(
                set_status(
                    rec,
                    dot,
                    AttemptStatus.FAILED,
                    writer=self.node,
                    hlc=self._stamp(),
                    reason=reason,
                )
            )
            self._event("invalid_spec", body.task_id, problems=[str(p) for p in exc.problems])
        self.counters["invalid_spec"] += 1

    def _on_cancel(self, env: Envelope, body: Cancel) -> None:
        """Stop this node's work on the task up to ``body.epoch``. A cancel revokes
        attempts; it does not cancel the task: the controller sends it both when a user
        cancels (the task-wide flag then travels as CRDT state, in the deltas that come
        with it) and when it re-places the task elsewhere under a newer epoch, where
        setting the flag here would cancel the new attempt and the task's dependents."""
        with self._txn():
            self._mark_seen(env)
            for row in self.journal.queued():
                if row["task_id"] == body.task_id and row["epoch"] <= body.epoch:
                    self.journal.remove_queued(body.task_id)
            self._event("cancel", body.task_id, epoch=body.epoch, reason=body.reason)
        for attempt, run in self.running.items():
            if run.task_id == body.task_id and run.epoch <= body.epoch:
                self.executor.stop(attempt, "cancelled")

    def _on_level_change(self, env: Envelope, body: LevelChange) -> None:
        with self._txn():
            self._mark_seen(env)
            for row in self.journal.queued():
                if row["task_id"] == body.task_id and row["epoch"] == body.epoch:
                    self.journal.put_queued({**row, "level": body.level})
            self._event(
                "level_change", body.task_id, epoch=body.epoch, level=body.level, reason=body.reason
            )
        for attempt, run in self.running.items():
            if run.task_id == body.task_id and run.epoch == body.epoch:
                run.level = body.level
                if body.level != Level.STRONG:
                    self.leases.drop(run.task_id)
                    self.executor.set_deadline(attempt, None)
                # an upgrade to strong runs on until a lease is granted and fences from then

    def _on_lease_grant(self, env: Envelope, body: LeaseGrant) -> None:
        """Apply a grant or refusal that answers one of this process's outstanding
        requests exactly (``AgentLeases.answer``); anything else is logged and ignored.
        A final refusal (fencing) drops the epoch's queued attempt: it can never start."""
        answer = self.leases.answer(body, time.monotonic())
        task_id, epoch = body.task_id, body.epoch
        with self._txn():
            self._mark_seen(env)
            if answer.outcome == GrantOutcome.GRANTED:
                self._event(
                    "lease_granted",
                    task_id,
                    epoch=epoch,
                    request_id=body.request_id,
                    duration_s=body.duration_s,
                    deadline=answer.deadline,
                    mono=time.monotonic(),
                )
                for attempt, run in self.running.items():
                    if run.task_id == task_id and run.epoch == epoch:
                        self.journal.set_process_deadline(attempt, answer.deadline)
            elif answer.outcome == GrantOutcome.IGNORED:
                self._event(
                    "lease_ignored",
                    task_id,
                    epoch=epoch,
                    request_id=body.request_id,
                    granted=body.granted,
                    why=answer.reason,
                )
            else:
                final = answer.outcome == GrantOutcome.REFUSED
                self._event(
                    "lease_refused",
                    task_id,
                    epoch=epoch,
                    request_id=body.request_id,
                    reason=answer.reason,
                    final=final,
                    retry_at=answer.retry_at,
                )
                if final:
                    self.journal.remove_queued(task_id, epoch=epoch)
        if answer.outcome != GrantOutcome.GRANTED:
            return
        for attempt, run in self.running.items():
            if run.task_id == task_id and run.epoch == epoch and run.level == Level.STRONG:
                self.executor.set_deadline(attempt, answer.deadline)

    def _on_digest(self, env: Envelope, body: Digest) -> None:
        """The cloud's digest: queue what it lacks in the range the digest covers (through
        the outbox: acked, durable)."""
        missing = [r for r in self.replica.missing_for(body.entries) if body.covers(r.task_id)]
        with self._txn():
            self._mark_seen(env)
            for rec in missing:
                self.journal.add_outbox(rec.task_id, rec.to_dict(), now_ms=_wall_ms())
        self._flush()

    def _on_deltas(self, env: Envelope, body: Deltas) -> None:
        stops: list[tuple[str, str]] = []
        with self._txn():
            self._mark_seen(env)
            for delta in body.records:
                try:
                    self._change(delta, send=False)
                except SpecConflictError as exc:
                    self._event("spec_conflict", delta.task_id, error=str(exc))
                    continue
                rec = self.replica.get(delta.task_id)
                assert rec is not None
                for attempt, run in self.running.items():
                    if run.task_id != rec.task_id:
                        continue
                    if rec.cancel_requested:
                        stops.append((attempt, "cancelled"))
                    elif (
                        rec.placement is not None
                        and rec.placement.epoch > run.epoch
                        and (rec.placement.node != self.node)
                    ):
                        stops.append((attempt, "superseded"))
                if rec.cancel_requested or (
                    rec.placement is not None and rec.placement.node != self.node
                ):
                    self.journal.remove_queued(rec.task_id)
        for attempt, reason in stops:
            self.executor.stop(attempt, reason)

    # ---------------------------------------------------------------- the local queue
    def _enqueue(
        self,
        task_id: str,
        epoch: int,
        level: str,
        spec: dict[str, Any],
        *,
        source: str,
        lease_s: float | None,
        inputs: dict[str, Any] | None = None,
        failures: int = 0,
        not_before_ms: int | None = None,
    ) -> None:
        now_ms = _wall_ms()
        deadline_ms = None
        if spec.get("deadline_s") is not None:
            deadline_ms = now_ms + int(spec["deadline_s"] * 1000)
        self.journal.put_queued(
            {
                "task_id": task_id,
                "epoch": epoch,
                "level": str(level),
                "priority": int(spec.get("priority", 50)),
                "deadline_ms": deadline_ms,
                "enqueued_ms": now_ms,
                "not_before_ms": not_before_ms if not_before_ms is not None else now_ms,
                "failures": failures,
                "source": source,
                "lease_s": lease_s,
                "inputs": json.dumps(inputs or {}),
            }
        )

    def _tick(self) -> None:
        now = time.monotonic()
        for outcome in self.executor.poll():
            self._safely(self._on_outcome, outcome)
        self._update_connectivity()
        if self.link_up:
            if self._due("heartbeat", self.cfg.heartbeat_s, now):
                self._heartbeat()
            if self._due("telemetry", self.cfg.autonomy.telemetry_s, now):
                self._safely(self._send_telemetry)
            if self.sent_seq < self._max_outbox_seq():
                self._flush()
            elif self.acked_seq >= self.sent_seq and now >= self._timers.get("antientropy", 0.0):
                self._send_digest()
            # Sent rows with no ack progress for a period (lost, or nobody was subscribed yet;
            # heartbeats may well be acked meanwhile): send them again from the last ack.
            if (
                self.acked_seq < self.sent_seq
                and now - self.outbox_progress_at > self.cfg.autonomy.period_s
            ):
                self.outbox_progress_at, self.sent_seq = now, self.acked_seq
        self._renew_leases(now)
        if self._due("shed", 2.0, now):
            self._safely(self._shed)
        if self.admission_stopped is not None and self._due("journal_probe", 5.0, now):
            self._safely(self._probe_journal)
        if not self.draining and self.admission_stopped is None:
            self._start_ready(now)
        if self._due("prune", 600.0, now):
            with self._txn():
                self.journal.prune_seen()
        retain = self.cfg.autonomy.retain_finished_s
        if retain > 0 and self._due("retain", min(600.0, max(1.0, retain / 2)), now):
            self._safely(self._forget_finished, retain)

    def _forget_finished(self, retain_s: float) -> None:
        """Retention: a device does not keep finished work forever. Records that ended
        (succeeded, failed, cancelled) more than ``retain_s`` ago and that the controller
        has acknowledged (no outbox row) leave the journal and the replica, so the journal
        and every digest stay bounded by the recent work. The controller keeps them; it
        only asks a node about tasks placed on it and active, or named in its digest."""
        terminal = [str(status) for status in TaskStatus if status.terminal]
        with self._txn():
            gone = self.journal.prune_records(terminal, _wall_ms() - int(retain_s * 1000))
            if gone:
                self._event("records_forgotten", None, count=len(gone))
        for task_id in gone:
            self.replica.forget(task_id)

    def _due(self, name: str, every: float, now: float) -> bool:
        if now >= self._timers.get(name, 0.0):
            self._timers[name] = now + every
            return True
        return False

    def _max_outbox_seq(self) -> int:
        row = self.journal.db.execute("SELECT MAX(seq) FROM outbox").fetchone()
        return int(row[0] or 0)

    def _update_connectivity(self) -> None:
        age = float("inf") if self.last_ack is None else time.monotonic() - self.last_ack
        conn = connectivity(age, self.cfg.autonomy.period_s)
        if conn != self.connectivity:
            level = autonomy_level(conn)
            with self._txn():
                self._event(
                    "connectivity",
                    None,
                    previous=str(self.connectivity),
                    now=str(conn),
                    ack_age_s=None if age == float("inf") else round(age, 3),
                )
                if level != self.autonomy:
                    self._event("autonomy", None, previous=str(self.autonomy), now=str(level))
            log.info("connectivity", extra={"fields": {"now": str(conn), "autonomy": str(level)}})
            self.connectivity, self.autonomy = conn, level

    def _queued_tasks(self) -> list[tuple[QueuedTask, dict[str, Any]]]:
        out = []
        for row in self.journal.queued():
            task = QueuedTask(
                task_id=row["task_id"],
                priority=row["priority"],
                deadline=None if row["deadline_ms"] is None else row["deadline_ms"] / 1000.0,
                enqueued=row["enqueued_ms"] / 1000.0,
            )
            out.append((task, row))
        return out

    def _start_ready(self, now: float) -> None:
        free = self.cfg.executor.max_concurrent - len(self.running)
        if free <= 0:
            return
        rows = self._queued_tasks()
        if not rows:
            return
        by_id = {t.task_id: row for t, row in rows}
        now_s = _wall_ms() / 1000.0
        metrics = self.sampler.sample(now) if self.sampler else None
        for task in order_queue([t for t, _ in rows], now_s):
            if free <= 0:
                break
            row = by_id[task.task_id]
            if row["not_before_ms"] > _wall_ms():
                continue
            rec = self.replica.get(row["task_id"])
            if rec is None or rec.spec is None:
                continue
            if any(r.task_id == row["task_id"] for r in self.running.values()):
                continue
            admission = admit(
                rec.spec["resources"],
                metrics,
                self._reserved(),
                running=len(self.running),
                max_concurrent=self.cfg.executor.max_concurrent,
                headroom_mb=self.cfg.executor.min_free_memory_mb,
            )
            if not admission:
                self.counters[f"not_admitted_{admission.reason}"] += 1
                continue
            deadline = None
            if row["level"] == Level.STRONG:
                lease = self.leases.for_start(row["task_id"], row["epoch"], row["lease_s"], now)
                self._request_lease(lease, now)
                if not may_start(Level.STRONG, lease, now, epoch=row["epoch"]):
                    continue
                deadline = lease.deadline
            self._safely(self._start, rec, row, deadline)
            free -= 1

    def _reserved(self) -> dict[str, float]:
        cpu = mem = 0.0
        for run in self.running.values():
            rec = self.replica.get(run.task_id)
            if rec is not None and rec.spec is not None:
                cpu += rec.spec["resources"]["cpu"]
                mem += rec.spec["resources"]["memory_mb"]
        return {"cpu": cpu, "memory_mb": mem}

    def _start(self, rec: TaskRecord, row: dict[str, Any], deadline: float | None) -> None:
        spec = rec.spec
        assert spec is not None
        target = None
        if spec["callable"] is not None:
            target = self.cfg.executor.callables.get(spec["callable"])
            if target is None:
                self._fail_unstartable(
                    rec, row, f"callable {spec['callable']!r} is not allow-listed"
                )
                return
        stamp = self._stamp()
        dot, delta = start_attempt(
            rec, node=self.node, epoch=row["epoch"], writer=self.node, hlc=stamp
        )
        attempt = _attempt_key(row["task_id"], dot)
        with self._txn():
            self._change(delta)
            self.journal.remove_queued(row["task_id"])
            self.journal.put_process(
                {
                    "attempt": attempt,
                    "task_id": row["task_id"],
                    "epoch": row["epoch"],
                    "level": row["level"],
                    "watchdog_pid": 0,
                    "pgid": None,
                    "started_ms": _wall_ms(),
                    "deadline": deadline,
                    "failures": row["failures"],
                    "source": row["source"],
                }
            )
            self._event(
                "started",
                row["task_id"],
                attempt=attempt,
                epoch=row["epoch"],
                level=row["level"],
                deadline=deadline,
            )
        running = self.executor.launch(
            Launch(
                task_id=row["task_id"],
                attempt=attempt,
                epoch=row["epoch"],
                argv=spec["command"],
                callable_target=target,
                args=spec["args"],
                env=spec["env"],
                inputs=json.loads(row.get("inputs") or "{}"),
                timeout_s=spec["timeout_s"],
                deadline=deadline,
                resources=spec["resources"],  # rlimits (issue 11)
            )
        )
        self.running[attempt] = _Running(row["task_id"], dot, row["epoch"], row["level"])
        with self._txn():
            self.journal.set_process_watchdog(attempt, running.watchdog_pid)

    def _fail_unstartable(self, rec: TaskRecord, row: dict[str, Any], reason: str) -> None:
        dot, delta = start_attempt(
            rec,
            node=self.node,
            epoch=row["epoch"],
            writer=self.node,
            hlc=self._stamp(),
            status=AttemptStatus.PLACED,
        )
        with self._txn():
            self._change(delta)
            rec2 = self.replica.get(rec.task_id)
            assert rec2 is not None
            self._change(
                set_status(
                    rec2,
                    dot,
                    AttemptStatus.FAILED,
                    writer=self.node,
                    hlc=self._stamp(),
                    reason=reason,
                )
            )
            self.journal.remove_queued(rec.task_id)
            self._event("unstartable", rec.task_id, reason=reason)

    def _on_outcome(self, outcome: Outcome) -> None:
        run = self.running.pop(outcome.attempt, None)
        proc_row = next(
            (p for p in self.journal.processes() if p["attempt"] == outcome.attempt), None
        )
        rec = self.replica.get(outcome.task_id)
        if rec is None:
            return
        dot = run.dot if run is not None else _parse_dot(outcome.attempt)
        status, reason = _status_of(outcome)
        failures = int(proc_row["failures"]) if proc_row else 0
        with self._txn():
            self._change(
                set_status(
                    rec,
                    dot,
                    status,
                    writer=self.node,
                    hlc=self._stamp(),
                    exit_code=outcome.exit_code,
                    result=outcome.result,
                    reason=reason,
                )
            )
            self.journal.remove_process(outcome.attempt)
            self._event(
                "finished",
                outcome.task_id,
                attempt=outcome.attempt,
                status=status.name.lower(),
                reason=outcome.reason,
                exit_code=outcome.exit_code,
                signal=outcome.signal,
                duration_s=round(outcome.duration_s, 4),
                deadline=outcome.deadline,
                fenced_at=outcome.fenced_at,
                stdout_tail=outcome.stdout_tail[-1024:],
                stderr_tail=outcome.stderr_tail[-1024:],
            )
            if status == AttemptStatus.FAILED and proc_row is not None:
                self._maybe_retry(outcome.task_id, proc_row, failures + 1, outcome.reason)
        if outcome.reason == "fenced":
            self.leases.drop(outcome.task_id)
        self.executor.cleanup(outcome.task_id, outcome.attempt)

    def _maybe_retry(self, task_id: str, proc_row: dict[str, Any], failures: int, why: str) -> None:
        """Re-queue a failed attempt with the task's backoff while its budget lasts. Fenced
        strong attempts are not retried here: the controller re-places them."""
        rec = self.replica.get(task_id)
        if (
            rec is None
            or rec.spec is None
            or rec.cancel_requested
            or why in ("fenced", "superseded")
        ):
            return
        if rec.placement is not None and rec.placement.epoch > proc_row["epoch"]:
            return
        if failures >= max_attempts(rec.spec):
            self._event("retries_exhausted", task_id, failures=failures)
            return
        retry = RetryPolicy(**rec.spec["retry"])
        delay = backoff_delay(retry, failures, self.rng)
        self._enqueue(
            task_id,
            proc_row["epoch"],
            proc_row["level"],
            rec.spec,
            source=proc_row.get("source") or "placed",
            lease_s=None,
            failures=failures,
            not_before_ms=_wall_ms() + int(delay * 1000),
        )
        self._event("retry_scheduled", task_id, failures=failures, delay_s=round(delay, 3))

    # ---------------------------------------------------------------- leases (strong tasks)
    def _request_lease(self, lease: AgentLease, now: float) -> None:
        """Send a lease request when one is due (``AgentLeases.due``). Not journaled: a
        lost one is sent again; the deadline counts from its send. Recorded as sent even
        if the publish fails: a grant for it then only starts the deadline earlier (safe)."""
        if not self.link_up:
            return
        request = self.leases.due(lease, now)
        if request is None:
            return
        self._publish("up", "lease_request", request)
        self.counters["lease_requests"] += 1

    def _renew_leases(self, now: float) -> None:
        for run in list(self.running.values()):
            if run.level == Level.STRONG:
                self._request_lease(self.leases.for_running(run.task_id, run.epoch), now)

    # ---------------------------------------------------------------- shedding
    def _shed(self) -> None:
        if self.sampler is None:
            return
        metrics = self.sampler.sample(time.monotonic())
        rows = self._queued_tasks()
        victims = select_for_shedding(
            [t for t, _ in rows],
            metrics,
            min_free_memory_mb=self.cfg.executor.min_free_memory_mb,
            max_cpu_percent=self.cfg.executor.max_cpu_percent,
        )
        by_id = {t.task_id: row for t, row in rows}
        for task in victims:
            rec = self.replica.get(task.task_id)
            if rec is None:
                continue
            self._fail_unstartable(rec, by_id[task.task_id], "shed")
            self.counters["shed"] += 1

    # ---------------------------------------------------------------- telemetry
    def _send_telemetry(self) -> None:
        sample = self.sampler.sample(time.monotonic())
        rtts = sorted(self.rtt_ms)
        body = Telemetry(
            cpu_pct=sample["cpu_pct"],
            memory_pct=sample["memory_pct"],
            memory_free_mb=sample["memory_free_mb"],
            disk_free_mb=sample["disk_free_mb"],
            load=(sample["load1"], sample["load5"], sample["load15"]),
            battery_pct=sample["battery_pct"],
            queue_len=len(self.journal.queued()),
            running=len(self.running),
            rtt_ms_p50=rtts[len(rtts) // 2] if rtts else None,
            reconnects=self.transport.reconnects if self.transport else 0,
            averages=sample["averages"],
        )
        self._publish("telemetry", "telemetry", body, qos=0)

    # ---------------------------------------------------------------- local API
    def _on_api(self, method: str, path: str, body: bytes) -> tuple[int, object]:
        from edge_agent.localapi import route

        return route(self, method, path, body)

    def status(self) -> dict[str, Any]:
        queued = sorted(self.journal.queued(), key=lambda r: r["enqueued_ms"])
        return {
            "node_id": self.node,
            "tier": self.cfg.node.tier,
            "pid": os.getpid(),
            "connectivity": str(self.connectivity),
            "autonomy": str(self.autonomy),
            "link_up": self.link_up,
            "draining": self.draining,
            "admission_stopped": self.admission_stopped,
            "queue": [
                {
                    "task_id": r["task_id"],
                    "priority": r["priority"],
                    "level": r["level"],
                    "failures": r["failures"],
                }
                for r in queued
            ],
            "running": [
                {"task_id": r.task_id, "attempt": a, "epoch": r.epoch, "level": r.level}
                for a, r in self.running.items()
            ],
            "outbox_depth": self.journal.outbox_depth(),
            "last_sync_ms": self.last_ack_wall_ms,
            "rtt_ms": sorted(self.rtt_ms)[len(self.rtt_ms) // 2] if self.rtt_ms else None,
            "reconnects": self.transport.reconnects if self.transport else 0,
            "counters": dict(self.counters),
        }

    def submit_local(self, data: object) -> tuple[int, object]:
        """A task submitted to the local API: validated by the shared model, run as causal or
        eventual (strong needs the controller), journaled and synced upstream later."""
        if isinstance(data, dict) and "id" not in data:
            data = {**data, "id": f"{self.node}-{uuid.uuid4().hex[:12]}"}
        try:
            spec_obj = parse_task_spec(data)
        except ValidationError as exc:
            return 400, exc.as_dict()
        level = spec_obj.consistency.clamp(Level.CAUSAL)
        if level == Level.STRONG:
            return 409, {
                "error": "strong_needs_controller",
                "message": "a strong task needs a lease from the controller",
            }
        spec = spec_obj.to_dict()
        if self.replica.get(spec["id"]) is not None:
            return 409, {"error": "exists", "id": spec["id"]}
        if self.admission_stopped is not None:
            return 503, {"error": "admission_stopped", "why": self.admission_stopped}
        stamp = self._stamp()
        with self._txn():
            self._change(new_record(spec["id"], spec, writer=self.node, hlc=stamp))
            rec = self.replica.get(spec["id"])
            assert rec is not None
            self._change(
                place(
                    rec,
                    epoch=0,
                    node=self.node,
                    level=str(level),
                    lease_s=None,
                    writer=self.node,
                    hlc=self._stamp(),
                )
            )
            self._enqueue(spec["id"], 0, str(level), spec, source="local", lease_s=None)
            self._event("submitted_locally", spec["id"], level=str(level))
        return 201, {"id": spec["id"], "level": str(level), "status": "pending"}

    # ---------------------------------------------------------------- restart
    def _recover(self) -> None:
        """Resume from the journal: records into memory, then sweep recorded processes:
        adopt live watchdogs, harvest finished ones, fail the rest (``agent_restart``)."""
        for data in self.journal.records():
            self.replica.apply(TaskRecord.from_dict(data))
        stored = self.journal.get_meta("hlc")
        if stored:
            with contextlib.suppress(ClockSkewError, ValueError):
                self.clock.receive(Timestamp.decode(stored), _wall_ms())
        row = self.journal.db.execute("SELECT MAX(seq) FROM outbox").fetchone()
        self.acked_seq = (
            0
            if row[0] is None
            else int(self.journal.db.execute("SELECT MIN(seq) - 1 FROM outbox").fetchone()[0])
        )
        known = set()
        for proc in self.journal.processes():
            known.add(proc["attempt"])
            adopted = None
            if proc["watchdog_pid"]:
                adopted = self.executor.adopt(
                    proc["task_id"], proc["attempt"], proc["watchdog_pid"]
                )
            if adopted is not None:
                self.running[proc["attempt"]] = _Running(
                    proc["task_id"], _parse_dot(proc["attempt"]), proc["epoch"], proc["level"]
                )
                if proc["level"] == Level.STRONG and proc.get("deadline"):
                    # The watchdog still fences at the recorded deadline; renew from now on.
                    self.leases.adopt(
                        proc["task_id"], proc["epoch"], proc["deadline"], time.monotonic()
                    )
                self._persist_event("adopted", proc["task_id"], attempt=proc["attempt"])
                continue
            self._fail_lost(proc["task_id"], proc["attempt"], proc)
        # Started attempts of ours with no process row (crash between journal and spawn).
        for rec in list(self.replica.records()):
            for dot, attempt in rec.attempts.items():
                if (
                    attempt.node == self.node
                    and attempt.status == AttemptStatus.STARTED
                    and _attempt_key(rec.task_id, dot) not in known
                ):
                    self._fail_lost(rec.task_id, _attempt_key(rec.task_id, dot), None)

    def _fail_lost(self, task_id: str, attempt: str, proc: dict[str, Any] | None) -> None:
        pgid = self.executor.orphan_pgid(task_id, attempt)
        killed = pgid is not None and self.executor.kill_group(pgid)
        rec = self.replica.get(task_id)
        if rec is None:
            return
        dot = _parse_dot(attempt)
        with self._txn():
            if dot in rec.attempts:
                self._change(
                    set_status(
                        rec,
                        dot,
                        AttemptStatus.FAILED,
                        writer=self.node,
                        hlc=self._stamp(),
                        reason="agent_restart",
                    )
                )
            if proc is not None:
                self.journal.remove_process(attempt)
            self._event("lost_on_restart", task_id, attempt=attempt, killed_survivors=killed)
            level = proc["level"] if proc else (rec.placement.level if rec.placement else "causal")
            if (
                proc is not None
                and rec.spec is not None
                and rec.spec.get("idempotent")
                and level != Level.STRONG
            ):
                self._maybe_retry(
                    task_id, proc, int(proc.get("failures") or 0) + 1, "agent_restart"
                )
        self.executor.cleanup(task_id, attempt)

    # ---------------------------------------------------------------- shutdown
    def _shutdown(self) -> None:
        for outcome in self.executor.poll():
            self._safely(self._on_outcome, outcome)
        if self.transport is not None:
            if self.link_up:
                self._safely(self._flush)
            last = (
                topic(self.node, "presence"),
                self._envelope("presence", Presence(status="offline")),
            )
            self.transport.stop(last)
        if self.advert is not None:
            self._safely(self.advert.close)
        if self.api is not None:
            self.api.stop()
        self._safely(self._persist_event, "stopped", None)
        self.journal.close()
        (self.state_dir / "agent.ready.json").unlink(missing_ok=True)


def _status_of(outcome: Outcome) -> tuple[AttemptStatus, str | None]:
    """Map a watchdog outcome onto the attempt lattice and a reason string."""
    if outcome.succeeded:
        return AttemptStatus.SUCCEEDED, None
    if outcome.reason == "cancelled":
        return AttemptStatus.CANCELLED, "cancelled"
    if outcome.reason == "exited":
        return AttemptStatus.FAILED, f"exit_code {outcome.exit_code}"
    if outcome.reason == "fenced":
        return AttemptStatus.FAILED, "lease_expired"
    if outcome.reason == "spawn_failed":
        return AttemptStatus.FAILED, ("spawn_failed: " + outcome.stderr_tail)[:1000]
    return AttemptStatus.FAILED, outcome.reason
