"""The agent's runtime: threads, the core loop, lifecycle and shutdown.

One thread (the core loop) owns the state, the journal and every decision's inputs. Network,
API and signal handlers only put a typed event on the inbox (``edge_agent/inbox.py``); the
loop takes one at a time and runs the timers between events. The parts it drives:

- ``core.py``: the shared state and journal-first changes;
- ``uplink.py``: what goes up, as the pure ``shared.protocol.UplinkSession`` decides;
- ``inbound.py``: the door for messages from the controller and their handlers;
- ``scheduler.py``: the local queue, starts, outcomes, retries, leases, shedding;
- ``recovery.py``: the restart sweep.

Every decision is taken by a ``shared`` policy; these modules only gather inputs and carry
decisions out. Time comes from one :class:`~edge_agent.clock.Clock`.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import random
from typing import TYPE_CHECKING, Any

from edge_agent.api import LocalApi
from edge_agent.clock import Clock, SystemClock
from edge_agent.config import AgentConfig, bind_address
from edge_agent.core import Core, Running
from edge_agent.deadline_plan import SAVE_S
from edge_agent.executor import Launch, Outcome
from edge_agent.inbound import Inbound
from edge_agent.inbox import (
    ApiCall,
    InboxEvent,
    LinkChanged,
    MessageArrived,
    StopRequested,
    TasksReported,
)
from edge_agent.recovery import recover
from edge_agent.scheduler import Ended, LocalScheduler
from edge_agent.telemetry import Sampler
from edge_agent.transport import Transport
from edge_agent.uplink import Uplink
from shared.autonomy import autonomy_level, connectivity
from shared.crdt import Replica
from shared.protocol import SessionTiming, UplinkSession, topic
from shared.vocab import Connectivity

if TYPE_CHECKING:  # prometheus_client is imported only where [metrics] bind is set
    from edge_agent.metrics import MetricsServer

__all__ = ["Agent"]

log = logging.getLogger("edge_agent")

_TICK_S = 0.1
_BURST = 64  # local submissions journaled in one transaction, at most


def _submits(call: ApiCall) -> bool:
    return call.method == "POST" and call.path == "/v1/tasks"


_API_WAIT_S = 10.0


def _log_unconfirmed(running: dict[str, Running]) -> None:
    """The agent exits with attempts whose stop it never saw confirmed: their process rows
    stay in the journal, so the next start re-attaches to them or settles them as lost."""
    log.warning(
        "stopping without the end of running attempts",
        extra={"fields": {"attempts": sorted(running)}},
    )


class Agent:
    def __init__(
        self, cfg: AgentConfig, *, clock: Clock | None = None, rng: random.Random | None = None
    ) -> None:
        self.cfg = cfg
        self.core = Core(cfg, clock or SystemClock(), rng or random.Random())
        timing = SessionTiming(
            period_s=cfg.autonomy.period_s,
            heartbeat_s=cfg.heartbeat_s,
            telemetry_s=cfg.autonomy.telemetry_s,
            antientropy_s=cfg.antientropy_s,
        )
        session = UplinkSession(timing, acked_seq=self.core.journal.outbox_acked_seq())
        self.uplink = Uplink(self.core, session)
        self.scheduler = LocalScheduler(self.core, self.uplink)
        self.inbound = Inbound(self.core, self.uplink, self.scheduler)
        # A SimpleQueue: its ``put`` is reentrant, and the signal handler puts on the same
        # (main) thread that may be inside ``get`` holding a ``queue.Queue``'s lock; a
        # SIGTERM landing there would hang the agent for ever instead of draining it.
        self.inbox: queue.SimpleQueue[InboxEvent] = queue.SimpleQueue()
        # An exit reported by the supervisor wakes the loop at once, not on the next tick.
        self.core.executor.link.notify = lambda: self.inbox.put(TasksReported())
        self.connectivity = Connectivity.DISCONNECTED
        self.autonomy = autonomy_level(Connectivity.DISCONNECTED)
        self.api: LocalApi | None = None
        self.metrics: MetricsServer | None = None
        self.metrics_port: int | None = None
        self.advert: Any = None
        self._timers: dict[str, float] = {}
        self._held: InboxEvent | None = None  # taken from the inbox after a burst, not yet handled

    # -- what the local API reads ----------------------------------------------------
    @property
    def replica(self) -> Replica:
        return self.core.replica

    def submit_local(self, data: object) -> tuple[int, object]:
        return self.scheduler.submit_local(data)

    def status(self) -> dict[str, Any]:
        core = self.core
        queued = sorted(core.journal.queued(), key=lambda r: r.enqueued_ms)
        transport = self.uplink.transport
        return {
            "node_id": core.node,
            "tier": self.cfg.node.tier,
            "pid": os.getpid(),
            "connectivity": str(self.connectivity),
            "autonomy": str(self.autonomy),
            "link_up": self.uplink.link_up,
            "draining": core.draining,
            "admission_stopped": core.admission_stopped,
            "queue": [
                {
                    "task_id": r.task_id,
                    "priority": r.priority,
                    "level": r.level,
                    "failures": r.failures,
                }
                for r in queued
            ],
            "running": [
                {"task_id": r.task_id, "attempt": a, "epoch": r.epoch, "level": r.level}
                for a, r in core.running.items()
            ],
            "outbox_depth": core.journal.outbox_depth(),
            "last_sync_ms": self.uplink.last_sync_ms,
            "rtt_ms": self.uplink.session.rtt_p50(),
            "reconnects": transport.reconnects if transport else 0,
            "counters": dict(core.counters),
        }

    # -- entry points (any thread) -----------------------------------------------------
    def submit_api(self, method: str, path: str, body: bytes) -> tuple[int, object]:
        """Called on the API thread: hand the request to the core and wait for its answer."""
        call = ApiCall(method, path, body)
        self.inbox.put(call)
        if not call.done.wait(_API_WAIT_S):
            return 503, {"error": "agent busy"}
        return call.result

    def on_message(self, topic_name: str, payload: bytes) -> None:
        self.inbox.put(MessageArrived(topic_name, payload))

    def on_link(self, up: bool) -> None:
        self.inbox.put(LinkChanged(up))

    def request_stop(self) -> None:
        self.inbox.put(StopRequested())

    # -- run -------------------------------------------------------------------------
    def prepare(self) -> None:
        """Before the first event: the restart sweep and the resource sampler. :meth:`run`
        calls it; a test that drives :meth:`handle` and :meth:`tick` itself does too."""
        recover(self.core, self.scheduler)
        sampler = Sampler(self.core.state_dir, tasks_root=lambda: self.core.executor.link.pid)
        self.uplink.sampler = self.scheduler.sampler = sampler

    def run(self) -> int:
        core = self.core
        self.prepare()
        self.api = LocalApi(self.cfg, self.submit_api)  # Unix socket or TCP + token
        self.api.start()
        self.uplink.api_port = self.api.port
        self._serve_metrics()
        if self.cfg.discovery.enabled:
            self._advertise()
        transport = Transport(
            self.cfg.broker,
            client_id=f"continuum-agent-{core.node}",
            subscriptions=[topic(core.node, "down")],
            on_message=self.on_message,
            on_link=self.on_link,
            will=self.uplink.offline_presence,
            resolve=self._resolve_broker,
            rng=core.rng,
        )
        self.uplink.transport = transport
        transport.start()
        self._write_ready()
        log.info(
            "agent running",
            extra={
                "fields": {
                    "node": core.node,
                    "api_port": self.api.port,
                    "metrics_port": self.metrics_port,
                    "pid": os.getpid(),
                }
            },
        )
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _write_ready(self) -> None:
        assert self.api is not None
        ready = {
            "pid": os.getpid(),
            "api_port": self.api.port,
            "metrics_port": self.metrics_port,
            "node_id": self.core.node,
        }
        path = self.core.state_dir / "agent.ready.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(ready), encoding="utf-8")
        os.replace(tmp, path)

    def _serve_metrics(self) -> None:
        """The Prometheus endpoint on ``[metrics] bind``, when set. One that cannot listen is
        logged and left out: the agent's work matters more than its metrics."""
        address = bind_address(self.cfg.metrics.bind)
        if address is None:
            return
        from edge_agent.metrics import MetricsServer  # ~0.6 MB an idle agent without it saves

        server = MetricsServer(address, self._status_snapshot)
        try:
            self.metrics_port = server.start()
        except OSError as exc:
            log.error(
                "metrics endpoint not started",
                extra={"fields": {"bind": self.cfg.metrics.bind, "error": str(exc)}},
            )
            return
        self.metrics = server

    def _status_snapshot(self) -> dict[str, Any] | None:
        """``status()`` taken on the core thread (called on a scrape's thread)."""
        code, body = self.submit_api("GET", "/v1/status", b"")
        return body if code == 200 and isinstance(body, dict) else None

    def _advertise(self) -> None:
        from edge_agent.discovery import Advertisement

        assert self.api is not None
        try:
            port = self.api.port or 0  # 0: the API is a Unix socket (issue 11)
            self.advert = Advertisement(
                self.core.node, self.cfg.node.tier, port, self.cfg.discovery.interfaces
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
        core = self.core
        drain_until: float | None = None
        stopped = False  # the attempts still running after the grace were told to stop
        ticked = core.clock.mono()
        while True:
            event, self._held = self._held, None
            try:
                event = event or self.inbox.get(timeout=_TICK_S)
            except queue.Empty:
                event = None
            if isinstance(event, ApiCall) and _submits(event):
                self._submit_burst(event)
            elif event is not None:
                self.handle(event)
            if isinstance(event, StopRequested) and drain_until is None:
                core.draining = True
                drain_until = core.clock.mono() + self.cfg.executor.shutdown_grace_s
                core.safely(core.persist_event, "draining", None, running=len(core.running))
            if not self.inbox.empty() and core.clock.mono() - ticked < _TICK_S:
                continue  # a burst: handle it first, then one tick (one journal pass) for all
            ticked = core.clock.mono()
            core.safely(self.tick)
            if drain_until is not None:
                if not core.running:
                    return
                if core.clock.mono() >= drain_until:
                    if stopped:  # a stop unconfirmed (say, a supervisor not answering) must
                        _log_unconfirmed(core.running)  # not hold the agent's exit for ever
                        return
                    for attempt in list(core.running):
                        core.executor.stop(attempt, "agent_shutdown")
                    stopped = True
                    drain_until = core.clock.mono() + self.cfg.executor.kill_grace_s + 2.0

    def handle(self, event: InboxEvent) -> None:
        """Handle one inbox event on the core thread."""
        core = self.core
        match event:
            case MessageArrived(topic=topic_name, payload=payload):
                core.safely(self.inbound.on_message, topic_name, payload)
                self._update_connectivity()
            case LinkChanged(up=up):
                core.safely(self.uplink.link_changed, up)
            case ApiCall():
                try:
                    result = core.safely(self._on_api, event.method, event.path, event.body)
                    event.result = result if result is not None else (500, {"error": "internal"})
                finally:
                    event.done.set()
            case StopRequested() | TasksReported():
                pass

    def _submit_burst(self, first: ApiCall) -> None:
        """Local submissions queued together share one transaction (one fsync) with the
        pass that journals what ended and starts what may start (``settle``): each is
        answered only once it has committed, or with an error if it did not."""
        calls = [first]
        while len(calls) < _BURST:
            try:
                event = self.inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(event, TasksReported):
                continue  # only a wake-up: this pass polls the outcomes anyway
            if not (isinstance(event, ApiCall) and _submits(event)):
                self._held = event  # handled next, in order
                break
            calls.append(event)
        answers: list[tuple[int, object]] = []
        then = self.core.safely(self._submit_all, calls, answers)
        for call, answer in itertools.zip_longest(calls, answers[: len(calls)]):
            call.result = answer if answer is not None else (500, {"error": "internal"})
            call.done.set()
        if then is not None:  # answered first: the clients' next requests overlap the launches
            self.core.safely(self.scheduler.carry_out, *then)

    def _submit_all(
        self, calls: list[ApiCall], answers: list[tuple[int, object]]
    ) -> tuple[list[Outcome], list[Ended], list[Launch]]:
        """Journal ``calls`` and a scheduling pass in one transaction; ``answers`` stays
        empty unless it committed. What the pass ended and starts is carried out after."""

        def submit() -> None:
            answers.extend(self._on_api(call.method, call.path, call.body) for call in calls)

        outcomes = self.core.executor.poll()
        try:
            ended, launches = self.scheduler.journal_pass(
                outcomes, start=self._starting(), first=submit
            )
        except BaseException:
            answers.clear()
            raise
        return outcomes, ended, launches

    def _on_api(self, method: str, path: str, body: bytes) -> tuple[int, object]:
        from edge_agent.localapi import route

        return route(self, method, path, body)

    # -- timers ----------------------------------------------------------------------
    def _due(self, name: str, every: float, now: float) -> bool:
        if now >= self._timers.get(name, 0.0):
            self._timers[name] = now + every
            return True
        return False

    def tick(self) -> None:
        """Between events: outcomes, connectivity, the uplink's cadences, leases, starts,
        and the slow housekeeping timers."""
        core, scheduler = self.core, self.scheduler
        # Outcomes and starts in one transaction: a slot is reused as soon as it is freed.
        core.safely(scheduler.settle, core.executor.poll(), start=self._starting())
        self._update_connectivity()
        core.safely(self.uplink.tick)
        scheduler.renew_leases()
        now = core.clock.mono()
        if self._due("shed", 2.0, now):
            core.safely(scheduler.shed)
        if core.admission_stopped is not None and self._due("journal_probe", 5.0, now):
            core.safely(self._probe_journal)
        if self._due("run_times", SAVE_S, now):
            core.safely(scheduler.deadlines.save)
        if self._due("prune", 600.0, now):
            with core.txn():
                core.journal.prune_seen()
        retain, keep = self.cfg.autonomy.retain_finished_s, self.cfg.autonomy.retain_finished_max
        every = min(60.0 if keep > 0 else 600.0, max(1.0, retain / 2) if retain > 0 else 600.0)
        if (retain > 0 or keep > 0) and self._due("retain", every, now):
            core.safely(scheduler.forget_finished, retain, keep)

    def _starting(self) -> bool:
        return not self.core.draining and self.core.admission_stopped is None

    def _probe_journal(self) -> None:
        """While admission is stopped, try one small write now and then; resume when it works."""
        core = self.core
        core.persist_event("journal_recovered", None, after=core.admission_stopped)
        log.warning("journal writable again; admission resumed")
        core.admission_stopped = None

    def _update_connectivity(self) -> None:
        age = self.uplink.session.ack_age(self.core.clock.mono())
        conn = connectivity(age, self.cfg.autonomy.period_s)
        if conn == self.connectivity:
            return
        level = autonomy_level(conn)
        with self.core.txn():
            self.core.event(
                "connectivity",
                None,
                previous=str(self.connectivity),
                now=str(conn),
                ack_age_s=None if age == float("inf") else round(age, 3),
            )
            if level != self.autonomy:
                self.core.event("autonomy", None, previous=str(self.autonomy), now=str(level))
        log.info("connectivity", extra={"fields": {"now": str(conn), "autonomy": str(level)}})
        self.connectivity, self.autonomy = conn, level

    # -- shutdown --------------------------------------------------------------------
    def _shutdown(self) -> None:
        core = self.core
        core.safely(self.scheduler.on_outcomes, core.executor.poll())
        core.executor.close()  # the supervisor exits once nothing runs (or outlives us)
        transport = self.uplink.transport
        if transport is not None:
            if self.uplink.link_up:
                core.safely(self.uplink.flush)
            transport.stop(self.uplink.offline_presence())
        if self.advert is not None:
            core.safely(self.advert.close)
        if self.api is not None:
            self.api.stop()
        if self.metrics is not None:
            self.metrics.stop()
        core.safely(self.scheduler.deadlines.save)
        core.safely(core.persist_event, "stopped", None)
        core.journal.close()
        (core.state_dir / "agent.ready.json").unlink(missing_ok=True)
        log.info("agent stopped", extra={"fields": {"node": core.node}})
