"""The node registry: what the controller knows of each node, and its link health.

One :class:`NodeEntry` per node, fed by hello, presence, telemetry, pongs,
the round trips nodes report and any message heard; link grading and failure detection are
``shared.health.LinkMonitor``'s (never re-implemented here). A node that comes
back keeps its entry, monitor and history: it is reconciled, not registered
from scratch.

Resource accounting for placement is the controller's own (capacity minus what
it has placed and not seen finish), so a burst of placements between two
telemetry reports cannot overfill a node.

What placement predicts with is learned here too: ``Registry.learner`` (a
``shared.learning.LearnerState``) takes every pong's round trip; finished attempts
are fed to it by ``cloud.reactions``; the controller persists it (``learned``
says it changed since the last write).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.decisions import (
    DOWN,
    HealthReport,
    LinkSample,
    Trigger,
    assess_health,
    update_failure_rate,
)
from shared.health import LinkMonitor, LinkPolicy, LinkStateChanged
from shared.learning import LearnerState, observe_rtt, work_key
from shared.placement import update_success
from shared.vocab import LinkState, Tier

__all__ = ["NodeEntry", "Registry", "work_key"]

# Sent pings kept until answered or declared lost.
_MAX_PENDING_PINGS = 10_000
# Run durations kept per node for the slowdown trigger.
_DURATIONS = 20


#: Tiers by wire name (``Tier(name)`` costs an enum lookup; read once per finished run).
_TIERS: dict[str, Tier] = {tier.value: tier for tier in Tier}


@dataclass
class NodeEntry:
    node_id: str
    monitor: LinkMonitor
    tier: str = "edge"
    labels: dict[str, str] = field(default_factory=dict)
    capacity: dict[str, Any] = field(default_factory=dict)
    agent_version: str = ""
    api_port: int | None = None
    draining: bool = False
    presence: str = "unknown"
    telemetry: dict[str, Any] = field(default_factory=dict)
    registered: bool = False  # a hello was received (else known only from the store)
    first_seen_ms: int = 0
    last_seen_ms: int = 0
    success_ewma: float = 1.0
    failure_ewma: float = 0.0
    durations: deque[float] = field(default_factory=lambda: deque(maxlen=_DURATIONS))
    # Link state as last logged by the controller (see Registry.poll).
    reported: LinkState = LinkState.HEALTHY
    # Re-placement triggers fired by events (link_degraded), consumed by the next tick.
    triggers: list[Trigger] = field(default_factory=list)
    last_ping: float = float("-inf")
    # Monotonic time of the last round trip of this link (our ping's or one it reported).
    last_rtt: float = float("-inf")
    # Monotonic time of the last message the node sent unasked (any but a pong).
    last_spoke: float = float("-inf")
    # Monotonic time of the last message the node itself sent (a broker's last will
    # is not one): the out-of-contact clock of the partition rule starts here.
    last_contact: float = float("-inf")
    # Controller-side accounting of work placed here and not yet terminal.
    reserved: dict[str, tuple[float, float]] = field(default_factory=dict)
    # Out of contact longer than ``Registry.departed_after_s``: gone for good, left out
    # of system health; any message from the node clears it (``Registry.contact``).
    departed: bool = False

    @property
    def link_state(self) -> LinkState:
        return self.monitor.state

    @property
    def tier_of(self) -> Tier | None:
        """The node's tier (``None`` for a name no tier has: such a node is never placed on)."""
        return _TIERS.get(self.tier)

    @property
    def cpus(self) -> float:
        return float(self.capacity.get("cpus") or 0.0)

    @property
    def memory_mb(self) -> float:
        return float(self.capacity.get("memory_mb") or 0.0)

    @property
    def slots(self) -> int:
        """Attempts the node's agent runs at once, as its hello advertised (validated:
        ``shared.protocol.Capacity``); 0 when it did not (an older agent): no limit
        but the cpus."""
        return int(self.capacity.get("slots") or 0)

    def record_outcome(self, succeeded: bool, *, duration_s: float | None = None) -> None:
        """Success- and failure-rate EWMAs (0.9 old / 0.1 new: a placement score term
        and the failure-rate trigger) and, for successes, the run duration (slowdown)."""
        self.success_ewma = update_success(self.success_ewma, succeeded)
        self.failure_ewma = update_failure_rate(self.failure_ewma, not succeeded)
        if succeeded and duration_s is not None:
            self.durations.append(duration_s)

    def to_row(self) -> dict[str, Any]:
        """Columns of the ``nodes`` table."""
        return {
            "tier": self.tier,
            "labels": self.labels,
            "capacity": self.capacity,
            "agent_version": self.agent_version,
            "api_port": self.api_port,
            "draining": int(self.draining),
            "link_state": self.link_state.value,
            "presence": self.presence,
            "first_seen_ms": self.first_seen_ms,
            "last_seen_ms": self.last_seen_ms,
            "telemetry": self.telemetry,
        }

    def to_dict(self, now: float) -> dict[str, Any]:
        stats = self.monitor.stats(now)
        cpu_used = sum(c for c, _ in self.reserved.values())
        mem_used = sum(m for _, m in self.reserved.values())
        return {
            "node_id": self.node_id,
            "tier": self.tier,
            "labels": self.labels,
            "capacity": self.capacity,
            "agent_version": self.agent_version,
            "api_port": self.api_port,
            "draining": self.draining,
            "departed": self.departed,
            "presence": self.presence,
            "registered": self.registered,
            "link_state": stats.state.value,
            "link_reason": stats.reason,
            "rtt_p50_ms": stats.rtt_p50_ms,
            "rtt_p99_ms": stats.rtt_p99_ms,
            "rtt_samples": stats.rtt_samples,
            "loss_rate": stats.loss_rate,
            "silent_for_s": stats.silent_for_s,
            "partition_lengths_s": list(stats.partition_lengths_s),
            "partition_rate_per_h": stats.partition_rate_per_h,
            "success_ewma": self.success_ewma,
            "failure_ewma": self.failure_ewma,
            "running": len(self.reserved),
            "cpu_reserved": cpu_used,
            "memory_reserved_mb": mem_used,
            "first_seen_ms": self.first_seen_ms,
            "last_seen_ms": self.last_seen_ms,
            "telemetry": self.telemetry,
        }


class Registry:
    def __init__(self, policy: LinkPolicy, *, departed_after_s: float = 86_400.0) -> None:
        self.policy = policy
        self.departed_after_s = departed_after_s
        self.nodes: dict[str, NodeEntry] = {}
        self._pending_pings: dict[str, tuple[str, float]] = {}
        self._ping_ids = itertools.count(1)
        # Bumped whenever what placement's filters read of the nodes may have changed
        # (a node joined or said hello, a link changed state, a drain): work blocked
        # on the nodes is looked at again only then (cloud.scheduling).
        self.generation = 0
        # What placement predicts with (speeds, work, errors, round trips), learned
        # online; ``learned`` is set when it changed in a way worth persisting.
        self.learner = LearnerState()
        self.learned = False

    def changed(self) -> None:
        """Something placement's filters read of some node changed."""
        self.generation += 1

    def get(self, node_id: str) -> NodeEntry | None:
        return self.nodes.get(node_id)

    def ensure(self, node_id: str, now: float, wall_ms: int) -> NodeEntry:
        entry = self.nodes.get(node_id)
        if entry is None:
            entry = NodeEntry(
                node_id=node_id,
                monitor=LinkMonitor(node_id, now=now, policy=self.policy),
                first_seen_ms=wall_ms,
                last_seen_ms=wall_ms,
                last_contact=now,
            )
            self.nodes[node_id] = entry
            self.changed()
        return entry

    def restore(self, rows: Iterable[Mapping[str, Any]], now: float, wall_ms: int) -> None:
        """Rebuild entries from the store after a restart. Each node counts as heard
        (and in contact) at ``now``: silence is measured from our restart, so a
        controller restart never makes every node look partitioned at once. A node
        last seen (wall clock) longer than ``departed_after_s`` ago is restored as
        departed, its link already failed: it does not come back as ``partitioned``."""
        for row in rows:
            entry = self.ensure(row["node_id"], now, row.get("first_seen_ms") or 0)
            entry.tier = row.get("tier") or "edge"
            entry.labels = dict(row.get("labels") or {})
            entry.capacity = dict(row.get("capacity") or {})
            entry.agent_version = row.get("agent_version") or ""
            entry.api_port = row.get("api_port")
            entry.draining = bool(row.get("draining"))
            entry.telemetry = dict(row.get("telemetry") or {})
            entry.last_seen_ms = row.get("last_seen_ms") or 0
            entry.registered = True
            silent_s = (wall_ms - entry.last_seen_ms) / 1000.0
            if silent_s >= self.departed_after_s:
                self._restore_departed(entry, silent_s, now)

    def _restore_departed(self, entry: NodeEntry, silent_s: float, now: float) -> None:
        """A departed node's link as it would be had we watched it all along."""
        entry.monitor = LinkMonitor(entry.node_id, now=now - silent_s, policy=self.policy)
        entry.monitor.poll(now)
        entry.reported = entry.monitor.state
        entry.last_contact = now - silent_s
        entry.departed = True

    def restore_learner(self, doc: Mapping[str, Any] | None) -> str | None:
        """Take the persisted learner state (``None``: nothing stored); a malformed
        document is dropped (learning starts over from the priors) and its error
        returned for the caller to log."""
        if doc is None:
            return None
        try:
            self.learner = LearnerState.from_dict(doc)
        except ValueError as exc:
            self.learner = LearnerState()
            return str(exc)
        return None

    def reset_links(self, now: float) -> None:
        """Fresh link monitors for every node, heard (and in contact) at ``now``, and
        no pending pings (their answers would measure our own outage, not the link)."""
        for entry in self.nodes.values():
            entry.monitor = LinkMonitor(entry.node_id, now=now, policy=self.policy)
            entry.reported = entry.monitor.state
            entry.last_ping = entry.last_rtt = float("-inf")
            entry.last_contact = now
        self._pending_pings.clear()
        self.changed()

    # -- pings ------------------------------------------------------------------

    def due_pings(self, now: float) -> list[tuple[str, str]]:
        """``(node_id, ping_id)`` for every reachable node whose ping is due: not pinged
        for ``heartbeat_interval_s``, and either silent that long (pongs aside) or without
        a round trip in the link window (``window_s``). A node that talks and reports its
        round trips (an agent's heartbeats and telemetry) needs no probe.

        Nodes suspected or confirmed down are not pinged: silence is already
        counted by the monitor, and a ping queued for them would come back as a
        meaningless round trip after the partition.
        """
        out = []
        for entry in self.nodes.values():
            if entry.link_state in (LinkState.PARTITIONED, LinkState.FAILED):
                continue
            interval = self.policy.heartbeat_interval_s
            if now - entry.last_ping < interval or (
                now - entry.last_spoke < interval and now - entry.last_rtt < self.policy.window_s
            ):
                continue
            if len(self._pending_pings) >= _MAX_PENDING_PINGS:
                break
            ping_id = f"p{next(self._ping_ids)}"
            entry.last_ping = now
            self._pending_pings[ping_id] = (entry.node_id, now)
            out.append((entry.node_id, ping_id))
        return out

    def pong(self, node_id: str, ping_id: str, now: float) -> LinkStateChanged | None:
        sent = self._pending_pings.get(ping_id)
        entry = self.nodes.get(node_id)
        if sent is None or sent[0] != node_id or entry is None:
            return None  # unknown, late (already counted lost) or forged
        del self._pending_pings[ping_id]
        if entry.monitor.out_of_contact_since(sent[1], now):
            # Sent before the node went silent, answered after it came back: the round
            # trip is the partition's length, and one such sample would grade the link
            # critical for the whole window. Proof of life only.
            return entry.monitor.heard(now)
        return self.round_trip(entry, (now - sent[1]) * 1000.0, now)

    def round_trip(self, entry: NodeEntry, rtt_ms: float, now: float) -> LinkStateChanged | None:
        """A round trip of ``entry``'s link: our ping's, or one the node measured on its
        own messages and reported (a heartbeat's ``rtt_ms``, telemetry's median)."""
        # Learned facts are not filters (speed, error, round trip average): they
        # never make parked work feasible, so ``changed`` is not bumped for them.
        observe_rtt(self.learner, entry.node_id, rtt_ms)
        entry.last_rtt = now
        return entry.monitor.rtt(rtt_ms, now)

    def expire_pings(self, now: float) -> list[LinkStateChanged]:
        """Pings unanswered after the suspicion timeout count as lost probes,
        unless the node is already suspected (then it is silence, not loss)."""
        timeout = self.policy.suspect_after_s
        changes = []
        for ping_id, (node_id, sent) in list(self._pending_pings.items()):
            if now - sent < timeout:
                continue
            del self._pending_pings[ping_id]
            entry = self.nodes.get(node_id)
            if entry is None or entry.link_state in (LinkState.PARTITIONED, LinkState.FAILED):
                continue
            change = entry.monitor.lost(now)
            if change is not None:
                changes.append(change)
        return changes

    # -- contact ------------------------------------------------------------------

    def contact(
        self, entry: NodeEntry, now: float, wall_ms: int, *, unasked: bool = True
    ) -> LinkStateChanged | None:
        """The node itself sent something: proof of life. ``unasked``: not a pong (a node
        that only answers our pings is still one we must ping)."""
        entry.last_contact = max(entry.last_contact, now)
        if unasked:
            entry.last_spoke = max(entry.last_spoke, now)
        entry.last_seen_ms = wall_ms
        entry.departed = False
        return entry.monitor.heard(now)

    def out_of_contact_for(self, entry: NodeEntry, now: float) -> float | None:
        """Seconds since the node's last real contact while its link is down (the
        monitor's reckoning, which may start later: at a reported disconnect),
        ``None`` while it is in reach."""
        monitor = entry.monitor.out_of_contact_for(now)
        if monitor is None:
            return None
        return max(monitor, now - entry.last_contact)

    # -- lifecycle ----------------------------------------------------------------

    def departures(self, now: float, wall_ms: int) -> list[tuple[NodeEntry, float]]:
        """Nodes that have just departed, with how long they were silent: out of reach
        and silent for ``departed_after_s``, by our monotonic clock or, across a
        restart of ours, by the wall clock of their last message (they stay known:
        their history, their tasks' records)."""
        out = []
        for entry in self.nodes.values():
            if entry.departed or entry.link_state not in DOWN:
                continue
            silent = max(now - entry.last_contact, (wall_ms - entry.last_seen_ms) / 1000.0)
            if silent >= self.departed_after_s:
                entry.departed = True
                out.append((entry, silent))
        return out

    def remove(self, node_id: str) -> None:
        """Forget a node (the operator removed it) with its pending pings."""
        if self.nodes.pop(node_id, None) is None:
            return
        self._pending_pings = {
            p: sent for p, sent in self._pending_pings.items() if sent[0] != node_id
        }
        self.changed()

    # -- system -------------------------------------------------------------------

    def poll(self, now: float) -> list[LinkStateChanged]:
        """Bring every monitor up to ``now``. A transition already absorbed by a
        read (``stats`` polls too) is reported against ``NodeEntry.reported``,
        so none goes unlogged."""
        out = []
        for e in self.nodes.values():
            change = e.monitor.poll(now)
            if change is None and e.monitor.state is not e.reported:
                change = LinkStateChanged(
                    node_id=e.node_id,
                    old=e.reported,
                    new=e.monitor.state,
                    at=now,
                    reason=e.monitor.stats(now).reason,
                )
            if change is not None:
                out.append(change)
        return out

    def system_health(self, now: float) -> HealthReport:
        """The continuum's health over every known node, departed ones left out
        (``shared.decisions`` decides)."""
        return assess_health(
            LinkSample(state=stats.state, rtt_p99_ms=stats.rtt_p99_ms, departed=e.departed)
            for e in self.nodes.values()
            for stats in (e.monitor.stats(now),)
        )
