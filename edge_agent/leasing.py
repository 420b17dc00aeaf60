"""Strong tasks' lease requests, as the local scheduler (``edge_agent/scheduler.py``) sends
them: when one is due, at once for a just-placed task, renewals for running ones, and whether a
queued task's grant is expected soon (its slot is then kept for it). The decisions are
``shared.protocol.AgentLeases``'s; this only gathers their inputs and publishes."""

from __future__ import annotations

from edge_agent.core import Core
from edge_agent.uplink import Uplink
from shared.consistency import AgentLease
from shared.vocab import Level

__all__ = ["LeaseRequests"]


class LeaseRequests:
    """The lease half of :class:`~edge_agent.scheduler.LocalScheduler` (its base class)."""

    core: Core
    uplink: Uplink

    def request_lease(self, lease: AgentLease, now: float) -> None:
        """Send a lease request when one is due (``AgentLeases.due``). Not journaled: a
        lost one is sent again; the deadline counts from its send. Recorded as sent even
        if the publish fails: a grant for it then only starts the deadline earlier (safe)."""
        if not self.uplink.link_up:
            return
        request = self.core.leases.due(lease, now)
        if request is None:
            return
        self.uplink.publish("up", "lease_request", request)
        self.core.counters["lease_requests"] += 1

    def request_placed(self, task_id: str, epoch: int, lease_s: float | None) -> None:
        """Ask for a just-placed (and journaled) strong task's lease at once rather than in
        the next start pass, which may first have to start the supervisor (about 60 ms
        cold, on the first launch): the round trip overlaps that. Only while every queued
        task has a slot (no more leases than slots; the pass asks for the others)."""
        core = self.core
        if core.draining or core.admission_stopped is not None:
            return
        if len(core.running) + core.journal.queued_count() > core.cfg.executor.max_concurrent:
            return
        now = core.clock.mono()
        self.request_lease(core.leases.for_start(task_id, epoch, lease_s, now), now)

    def renew_leases(self) -> None:
        now = self.core.clock.mono()
        for run in list(self.core.running.values()):
            if run.level == Level.STRONG:
                self.request_lease(self.core.leases.for_running(run.task_id, run.epoch), now)

    def _grant_expected(self, task_id: str, now: float) -> bool:
        """Whether a strong task's lease request is likely answered soon: the controller
        acknowledged us within a period and no refusal's backoff is running. Its slot is then
        kept for it (a grant for a task that cannot start only lapses); otherwise the slot
        goes on to other work, as it must when cut off."""
        session = self.uplink.session
        connected = session.link_up and session.ack_age(now) < self.core.cfg.autonomy.period_s
        return connected and not self.core.leases.backing_off(task_id, now)
