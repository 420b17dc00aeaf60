"""The uplink's I/O: carries out what the pure session (``shared.protocol.UplinkSession``)
decides: announce, outbox batches, digests, heartbeats, telemetry, and the recovery of a
silent session (resubscribe, reconnect). Everything published goes through
:meth:`Uplink.publish`, stamped on the node's HLC. Telemetry is sampled when the session
says so and sent only when it changed enough or is due (``edge_agent.telemetry``).
"""

from __future__ import annotations

import itertools
import logging
import math
import secrets
from typing import Any

from edge_agent import __version__
from edge_agent.core import Core
from edge_agent.telemetry import Sampler, capacity, rounded, worth_reporting
from edge_agent.transport import Transport
from shared.autonomy import ContactClock
from shared.crdt import TaskRecord
from shared.decisions import place_not_taken
from shared.errors import LocalProtocolError
from shared.protocol import (
    PROTOCOL_VERSION,
    Ack,
    Capacity,
    Deltas,
    Envelope,
    Heartbeat,
    Hello,
    Presence,
    Telemetry,
    UplinkCommand,
    UplinkSession,
    digest_parts,
    encode,
    topic,
)

__all__ = ["Uplink"]

log = logging.getLogger("edge_agent")

#: Bytes of deltas in one ``up`` batch (tests/test_protocol.py checks it fits a message).
_UP_BATCH_BYTES = 200_000

#: Seconds between two contact probes (``Uplink.probe``).
_PROBE_EVERY_S = 1.0


class Uplink:
    def __init__(self, core: Core, session: UplinkSession) -> None:
        self.core = core
        self.session = session
        self.transport: Transport | None = None
        self.sampler: Sampler | None = None
        self.api_port: int | None = None
        self.last_sync_ms: int | None = None  # wall clock of the last ack, for status
        # Message ids: unique per process (a fresh random prefix) and short on the wire.
        self._ids = map(f"{secrets.token_hex(6)}.{{:x}}".format, itertools.count(1))
        self._passed_over: set[int] = set()  # outbox rows ``flush`` could not send
        # The telemetry last sent on this connection, and when (monotonic).
        self._telemetry: tuple[dict[str, Any], float] | None = None
        # When the controller last certainly heard us (``shared.autonomy.ContactClock``:
        # the causal start gate, ``LocalScheduler.start_ready``). A fresh process counts
        # from its start: the time it was down before is not known here.
        self.contact = ContactClock(core.clock.mono())
        self._probed_at = -math.inf

    @property
    def link_up(self) -> bool:
        return self.session.link_up

    # -- envelopes -----------------------------------------------------------------
    def new_envelope(self, type_: str, body: Any, *, seq: int | None = None) -> Envelope:
        """A fresh envelope from this node, stamped now on the HLC."""
        return Envelope(
            type=type_,
            id=next(self._ids),
            sender=self.core.node,
            hlc=self.core.stamp().encode(),
            body=body,
            seq=seq,
        )

    def offline_presence(self) -> tuple[str, bytes]:
        """The retained ``offline`` presence: the last will, and the last word on shutdown."""
        env = self.new_envelope("presence", Presence(status="offline"))
        return topic(self.core.node, "presence"), encode(env)

    def publish(
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
        env = self.new_envelope(type_, body, seq=seq)
        payload = self._encode(env)
        if payload is None:
            return None
        ok = self.transport.publish(topic(self.core.node, kind), payload, qos=qos, retain=retain)
        return env.id if ok else None

    def _encode(self, env: Envelope) -> bytes | None:
        """``encode(env)``; ``None``, logged and counted, when it refuses the message (one
        the controller would refuse: it can never be sent as it is)."""
        try:
            return encode(env)
        except LocalProtocolError as exc:
            log.error("cannot encode %s", env.type, extra={"fields": {"error": str(exc)}})
            self.core.counters["encode_errors"] += 1
            return None

    # -- inputs --------------------------------------------------------------------
    def link_changed(self, up: bool) -> None:
        self.core.persist_event("link", None, up=up)
        self._telemetry = None  # a new connection starts with a full report
        self.run(self.session.link_changed(up, self.core.clock.mono()))

    def heard(self) -> None:
        """A valid message from the controller arrived (any type): no heartbeat is needed
        for a while. It is no contact for the causal start gate: the controller keeps
        talking to a node it cannot hear (``out_of_contact_s``)."""
        self.session.heard(self.core.clock.mono())

    def out_of_contact_s(self, now: float) -> float:
        """Seconds since the controller last certainly heard us: since the first send of
        the latest heartbeat or outbox batch it acknowledged, on the monotonic clock (which
        also runs while the process is frozen, e.g. by SIGSTOP)."""
        return self.contact.out_of_contact_s(now)

    def probe(self, now: float) -> None:
        """Ask for contact now (a heartbeat, which the controller acknowledges), at most once
        a second: the start gate holds work for lack of it while the link is up (a quiet
        node's last acknowledged message may be old)."""
        if self.link_up and now - self._probed_at >= _PROBE_EVERY_S:
            self._probed_at = now
            self.heartbeat()

    def on_ack(self, body: Ack) -> None:
        self.last_sync_ms = self.core.clock.wall_ms()
        if body.heartbeat_id is not None:
            self.contact.answered(("heartbeat", body.heartbeat_id))
        if body.up_to_seq is not None:
            self.contact.answered(("batch", body.up_to_seq))
        up_to = self.session.ack(body, self.core.clock.mono())
        if up_to is not None:
            with self.core.txn():
                self.core.journal.ack(up_to)

    def tick(self) -> None:
        now = self.core.clock.mono()
        self.run(self.session.tick(now, self.core.journal.outbox_last_seq()))

    def run(self, commands: list[UplinkCommand]) -> None:
        for command in commands:
            self.core.safely(self._do, command)

    def _do(self, command: UplinkCommand) -> None:
        if command == UplinkCommand.ANNOUNCE:
            self.publish("presence", "presence", Presence(status="online"), retain=True)
            self.send_hello()
        elif command == UplinkCommand.FLUSH:
            self.flush()
        elif command == UplinkCommand.DIGEST:
            self.send_digest(self.core.replica.full_digest())
        elif command == UplinkCommand.DIGEST_RECENT:
            self.send_digest(self.core.replica.periodic_digest())
        elif command == UplinkCommand.HEARTBEAT:
            self.heartbeat()
        elif command == UplinkCommand.TELEMETRY:
            self.send_telemetry()
        else:
            self._recover(command)

    def _recover(self, command: UplinkCommand) -> None:
        """A silent session (connected, no ack for a period): resubscribe first, then
        reconnect (the session decides which, and when)."""
        self.core.counters[f"silent_{command}"] += 1
        self.core.persist_event("silent_session", None, action=str(command))
        log.warning("uplink silent", extra={"fields": {"action": str(command)}})
        if self.transport is None:
            return
        if command == UplinkCommand.RESUBSCRIBE:
            self.transport.resubscribe()
        else:
            self.transport.reconnect()

    # -- what goes up --------------------------------------------------------------
    def send_hello(self) -> None:
        cfg = self.core.cfg
        cap = capacity(self.core.state_dir)
        self.publish(
            "hello",
            "hello",
            Hello(
                tier=cfg.node.tier,
                labels=dict(cfg.node.labels),
                agent_version=__version__,
                protocol_version=PROTOCOL_VERSION,
                capacity=Capacity(
                    cpus=cap["cpus"],
                    memory_mb=cap["memory_mb"],
                    disk_mb=cap["disk_mb"],
                    battery_pct=cap["battery_pct"],
                    slots=cfg.executor.max_concurrent,
                ),
                api_port=self.api_port,
            ),
        )

    def flush(self) -> None:
        """Publish unsent outbox rows in batches (rows stay until acknowledged).

        Each delta is validated once, by ``encode`` (which refuses a message the controller
        would refuse): the deltas this process journaled are sent as the objects it made
        (``Journal.outbox_pending``), not parsed back from their rows first; only rows an
        earlier process wrote are parsed here. A batch ``encode`` refuses goes again one row
        at a time, and a row refused alone is passed over (``_pass_over``): one delta that
        can never be sent must not hold back every later one."""
        batch_max = limit = self.core.cfg.autonomy.batch_max
        while self.link_up and self.transport is not None and self.transport.connected:
            rows = self.core.journal.outbox_pending(self.session.sent_seq, limit)
            if not rows:
                return
            batch: dict[str, TaskRecord] = {}  # a task's deltas in the batch, joined: one each
            size = taken = 0
            last = self.session.sent_seq
            for seq, obj, delta, raw in rows:
                if batch and size + raw > _UP_BATCH_BYTES:
                    break
                rec = obj if isinstance(obj, TaskRecord) else TaskRecord.from_dict(delta)
                ahead = batch.get(rec.task_id)
                batch[rec.task_id] = rec if ahead is None else ahead.merge(rec)
                size += raw
                taken += 1
                last = seq
            env = self.new_envelope("deltas", Deltas(records=tuple(batch.values())), seq=last)
            payload = self._encode(env)
            now = self.core.clock.mono()
            if payload is None:
                if taken > 1:
                    limit = 1  # find the row: the others go one by one until it is passed
                else:
                    self._pass_over(last, next(iter(batch)), now)
                    limit = batch_max
                continue
            if not self.transport.publish(topic(self.core.node, "up"), payload, qos=1):
                return
            self.contact.sent(("batch", last), now)
            self.session.flushed(last, now)

    def _pass_over(self, seq: int, task_id: str, now: float) -> None:
        """Outbox row ``seq`` (a delta of ``task_id``) cannot be sent: ``encode`` refused it
        alone (logged there). Flushing goes on after it; the row stays in the outbox until
        the acknowledgement of a later one covers it, and is passed over again if it comes
        up again meanwhile (a reconnection resends from the last acknowledged row). The
        task's record stays whole here; the controller lacks this change of it."""
        if seq not in self._passed_over:
            self._passed_over.add(seq)
            self.core.counters["deltas_passed_over"] += 1
            self.core.persist_event("delta_passed_over", task_id, seq=seq)
        self.session.flushed(seq, now)

    def send_digest(self, entries: dict[str, str]) -> None:
        """Anti-entropy: a digest (every record after a (re)connect, those that may differ
        periodically: ``shared.crdt.Replica``), in parts under the message size bound (each
        covers a range of ids: the controller answers each with what we lack there). A
        record placing a task here under an epoch we never took up came without its
        ``place``: left out, so the controller sends the ``place`` again
        (``shared.decisions.place_not_taken``)."""
        core = self.core
        taken: dict[str, set[int]] = {}
        for row in core.journal.queued():
            taken.setdefault(row.task_id, set()).add(row.epoch)
        for run in core.running.values():
            taken.setdefault(run.task_id, set()).add(run.epoch)
        lost = [
            task_id
            for task_id in entries
            if (rec := core.replica.get(task_id)) is not None
            and place_not_taken(rec, core.node, taken.get(task_id, ()))
        ]
        if lost:
            left_out = set(lost)
            entries = {t: d for t, d in entries.items() if t not in left_out}
        for part in digest_parts(entries):
            self.publish("up", "digest", part)

    def heartbeat(self) -> None:
        rtt = self.session.last_rtt()
        body = Heartbeat(rtt_ms=None if rtt is None else round(rtt, 1))
        env_id = self.publish("up", "heartbeat", body)
        if env_id is not None:
            now = self.core.clock.mono()
            self.contact.sent(("heartbeat", env_id), now)
            self.session.heartbeat_sent(env_id, now)

    def send_telemetry(self) -> None:
        """Sample now; send only what ``worth_reporting`` says is news (or due)."""
        if self.sampler is None:
            return
        now = self.core.clock.mono()
        sample = self.sampler.sample(now)
        report = rounded(
            {
                "cpu_pct": sample["cpu_pct"],
                "memory_pct": sample["memory_pct"],
                "memory_free_mb": sample["memory_free_mb"],
                "disk_free_mb": sample["disk_free_mb"],
                "load": (sample["load1"], sample["load5"], sample["load15"]),
                "battery_pct": sample["battery_pct"],
                "queue_len": len(self.core.journal.queued()),
                "running": len(self.core.running),
                "rtt_ms_p50": self.session.rtt_p50(),
                "reconnects": self.transport.reconnects if self.transport else 0,
                "averages": sample["averages"],
                "outbox": self.core.journal.outbox_depth(),  # rides along; not news alone
            }
        )
        last, sent_at = self._telemetry or (None, now)
        if not worth_reporting(last, report, now - sent_at):
            return
        if self.publish("telemetry", "telemetry", Telemetry(**report), qos=0) is not None:
            self._telemetry = (report, now)
