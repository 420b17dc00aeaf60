"""The simulated controller: the decisions of ``shared.decisions`` on simulated facts.

Every ``telemetry_s`` each node's heartbeat reaches the controller only while the
node's path to it is up; one ``shared.health.LinkMonitor`` per node grades its
link. Then, as ``cloud/reconcile.py`` does on its tick and with the same pure
functions:

- system health: ``assess_health`` over every node's link state and RTT p99;
- levels, per task, by cost: ``demand_level`` before placement,
  ``placement_level`` on the chosen node's facts (``level_facts``), then one
  ``AdaptiveLevel`` per adaptive task sampled with ``adapt_level`` while placed;
- re-placement: ``partition_move`` for work on unreachable nodes;
  ``fired_triggers`` + ``trigger_move`` (adaptive mode: failure rate, slowdown,
  link degraded, overload with its budget, the latency bound against the node's
  RTT p50, the cooldown, ``movable``); ``retry_move`` for an ended attempt its
  node does not retry (``shared.decisions.agent_retries``).

The simulator supplies only facts: what the controller has heard by ``now``
(a lease counts once its grant is sent, an attempt is started once its start
report arrived).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from shared.consistency import AdaptationPolicy, AdaptiveLevel, Lease, LeaseBook, LeasePolicy
from shared.crdt import AttemptStatus
from shared.decisions import (
    DOWN,
    AttemptFacts,
    LevelFacts,
    LinkSample,
    Movability,
    MoveDecision,
    NodeFacts,
    PartitionFacts,
    RetryFacts,
    Trigger,
    TriggerFacts,
    adapt_level,
    assess_health,
    demand_level,
    fired_triggers,
    link_degraded,
    movable,
    partition_move,
    placement_level,
    retry_move,
    trigger_move,
    update_failure_rate,
)
from shared.health import LinkMonitor, LinkPolicy, SystemHealth
from shared.placement import LINK_CODES
from shared.vocab import Level, LinkState, PlacementMode, TaskStatus
from simulations.sim.agent import REASONS
from simulations.sim.loop import Loop
from simulations.sim.metrics import Counters
from simulations.sim.network import Network
from simulations.sim.records import Attempt, Task, TaskState
from simulations.sim.scenario import SimScenario, TaskType
from simulations.sim.scheduling import Scheduler
from simulations.sim.topology import Topology
from simulations.sim.workload import Workload

__all__ = ["Controller"]

_OPEN = TaskState.OPEN
_STRONG = Level.STRONG


class Controller:
    """The controller's decisions in a run (see the module docstring)."""

    def __init__(
        self,
        sc: SimScenario,
        mode: PlacementMode,
        topo: Topology,
        net: Network,
        sched: Scheduler,
        workload: Workload,
        counters: Counters,
        loop: Loop,
    ) -> None:
        self.types: tuple[TaskType, ...] = sc.workload.types
        self.spec = spec = sc.controller
        self.horizon = sc.duration_s
        self.mode = mode
        self.adaptive = mode is PlacementMode.ADAPTIVE  # read per finished run
        self.topo = topo
        self.net = net
        self.sched = sched
        self.counters = counters
        self.loop = loop
        # the policies as cloud/controller.py builds them from its configuration
        self.lease_policy = LeasePolicy(
            duration_s=spec.lease_s,
            min_duration_s=min(LeasePolicy().min_duration_s, spec.lease_s),
            max_duration_s=max(LeasePolicy().max_duration_s, spec.lease_s),
            controller_margin_s=spec.lease_margin_s,
        )
        self.leases = LeaseBook(self.lease_policy)
        self.link_policy = LinkPolicy(
            heartbeat_interval_s=spec.telemetry_s,
            suspect_missed=spec.suspect_missed,
            confirm_after_s=spec.confirm_after_s,
            window_s=spec.link_window_s,
        )
        self.adaptation = AdaptationPolicy(dwell_s=spec.upgrade_dwell_s)
        self.system = SystemHealth.HEALTHY
        self.monitors = [
            LinkMonitor(nid, now=0.0, policy=self.link_policy) for nid in topo.node_ids
        ]
        G = topo.count
        self.link_state = [LinkState.HEALTHY] * G
        self.rtt_p50: list[float | None] = [None] * G
        self.outage_s = [0.0] * G  # mean length of the node's partitions seen
        self.failure = [0.0] * G  # failure-rate EWMA per node (the failure_rate trigger)
        self.durations: list[deque[float]] = [deque(maxlen=20) for _ in range(G)]
        self.pending_triggers: list[tuple[Trigger, ...]] = [()] * G
        # per node, last tick's NodeFacts and LinkSample (kept while their figures hold)
        self._node_facts: list[NodeFacts | None] = [None] * G
        self._samples: list[LinkSample | None] = [None] * G
        self._outcomes: set[int] = set()
        self.prate = [0.0] * G  # ``topo.prate`` as Python floats (read per placement)
        self._max_latency = [tt.max_latency_ms for tt in self.types]
        self.specs = [workload.spec(k) for k in range(len(self.types))]
        self._demand_levels: dict[int, Level] = {}
        #: attempts per node whose report has not reached the controller yet (as of the
        #: last tick; ``opened`` leaves out those reported before the next one)
        self.open_on: list[list[Attempt]] = [[] for _ in range(G)]
        #: when ``decide`` next reads ``open_on``; -inf until a tick ran (then all are kept)
        self.next_tick = -np.inf
        #: ended attempts waiting for ``retry_move`` to let their task be placed again
        self.retrying: list[Attempt] = []

    # -------------------------------------------------------------- levels
    def level_of(self, task: Task) -> Level:
        """The level placement filters by (``demand_level``: on a node nothing is
        known of yet)."""
        if task.lo is task.hi:
            return task.lo
        level = self._demand_levels.get(task.tt)
        if level is None:
            spec = self.specs[task.tt]
            level = self._demand_levels[task.tt] = demand_level(spec, policy=self.adaptation)
        return level

    def level_facts(
        self,
        task: Task,
        g: int,
        now: float,
        *,
        run_s: float | None = None,
        started_at: float | None = None,
    ) -> LevelFacts:
        """What the cost of each level reads of ``task`` on node ``g`` (as
        ``cloud/scheduling.py`` ``level_facts``, from the last tick's link
        statistics): the link (``None`` before any round trip), the round trip, the
        partition history and the predicted run (``run_s``, the placement's
        prediction, else the work left since the start was heard, over the node's
        speed, plus a round trip) against the deadline left."""
        rtt = self.rtt_p50[g]
        if run_s is None:
            work, speed = self.sched.inputs.work_and_speed(task, g)
            if started_at is not None:
                work = max(work - max(now - started_at, 0.0) * speed, 0.0)
            run_s = work / speed + (rtt or 0.0) / 1000.0
        deadline_left = self.types[task.tt].deadline_s - (now - task.t_arr)
        return LevelFacts(
            link=None
            if rtt is None and self.link_state[g] is LinkState.HEALTHY
            else self.link_state[g],
            run_s=run_s,
            slack_s=deadline_left - run_s,
            rtt_ms=rtt or 0.0,
            partition_rate_per_h=self.prate[g],
            outage_s=self.outage_s[g],
        )

    def placed(self, task: Task, g: int, now: float, run_s: float | None = None) -> None:
        """``task`` goes to node ``g``: its level there by cost (``placement_level``;
        ``run_s`` the placement's predicted finish when it has one), and (for an
        adaptive task) a fresh adaptive machine, as ``cloud/scheduling.py`` does.
        The machine is built at the first sample (``_adapt_levels``): it holds no
        time before one, and most tasks end before the next telemetry tick."""
        if task.lo is task.hi:
            return
        facts = self.level_facts(task, g, now, run_s=run_s)
        task.level = placement_level(self.specs[task.tt], facts, policy=self.adaptation)
        task.adaptive = None

    def _adapt_levels(self, now: float, live: list[tuple[int, Attempt]]) -> None:
        for g, at in live:
            task = at.task
            if task.lo is task.hi or at.epoch != task.epoch:
                continue
            machine = task.adaptive
            if machine is None:
                machine = task.adaptive = AdaptiveLevel(
                    task.id, lo=task.lo, hi=task.hi, initial=at.level, policy=self.adaptation
                )
            facts = self.level_facts(task, g, now, started_at=self._heard_start(at, now))
            change = adapt_level(machine, self.specs[task.tt], facts, now=now)
            if change is not None:
                task.level = change.new
                self.counters.level_changes += 1

    def opened(self, g: int, at: Attempt) -> None:
        """Attempt ``at`` on node ``g`` is placed (its report time known): kept for the
        ticks' decisions unless its report arrives by the next tick, which would drop
        it unread (``_live`` keeps only reports after its ``now``): most attempts end
        within one telemetry period, and every tick re-read them all before."""
        if at.report > self.next_tick:
            self.open_on[g].append(at)

    # ----------------------------------------------------------- telemetry
    def telemetry(self, _: object = None) -> None:
        """One heartbeat round: what got through to the monitors, then the
        controller's decisions on it (``decide``); then the next round."""
        now = self.loop.now
        net = self.net
        self.next_tick = now + self.spec.telemetry_s
        changed: list[tuple[int, LinkState, LinkState]] = []
        next_up, jitter = net.tl.next_up, net.jitter
        for g, mon in enumerate(self.monitors):
            path = net.ctrl[g]
            if path.down and next_up(path.down, now) > now:  # ``not net.is_up(path, now)``
                change = mon.poll(now)
            else:
                rtt = 2000.0 * path.lat
                if path.jit:
                    rtt += 1000.0 * path.jit * next(jitter)
                change = mon.rtt(rtt, now)
                self.sched.inputs.ping(g, rtt)
            if change is not None:
                changed.append((g, change.old, change.new))
        self.decide(now, changed)
        self.sched.kick()
        if self.next_tick <= self.horizon:
            self.loop.at(self.next_tick, self.telemetry)

    def health(self, now: float) -> SystemHealth:
        """Every node's link as its monitor grades it at ``now`` (kept for the tick's
        decisions and the placement tables), and the system health from them
        (``assess_health``, as ``cloud/registry.py`` computes it)."""
        topo = self.topo
        link_state, rtt_p50, outage_s = self.link_state, self.rtt_p50, self.outage_s
        samples = self._samples
        codes: list[int] = []
        rates: list[float] = []
        for g, mon in enumerate(self.monitors):
            state, p50, p99, outage, rate = mon.grade(now)
            link_state[g] = state
            rtt_p50[g] = p50
            outage_s[g] = outage
            sample = samples[g]
            if sample is None or sample.state is not state or sample.rtt_p99_ms != p99:
                samples[g] = LinkSample(state=state, rtt_p99_ms=p99)
            codes.append(LINK_CODES[state])
            rates.append(rate)
        topo.link[:] = codes
        topo.prate[:] = self.prate = rates
        return assess_health(samples).health  # type: ignore[arg-type]

    def decide(self, now: float, changed: list[tuple[int, LinkState, LinkState]]) -> None:
        """One controller tick on what the link monitors know at ``now`` (``changed``:
        the link transitions since the last tick): grade links and health, adapt
        levels, refresh the tables, re-place what may move."""
        topo = self.topo
        self.system = self.health(now)
        live = self._live(now)  # nothing below ends a task; a move only supersedes
        self._adapt_levels(now, live)
        load = 1.0 - np.array(topo.cpu_free) / topo.cpus
        self.sched.refresh(topo.link, load, np.array(topo.success), topo.prate)
        self._partition_moves(now, live)
        if self.adaptive:
            self._trigger_moves(now, changed, [(g, a) for g, a in live if not a.superseded])
        self._retry_moves(now)

    # ------------------------------------------------------------- facts
    def _live(self, now: float) -> list[tuple[int, Attempt]]:
        """Per node, the attempts the controller believes placed there: report not
        arrived, not superseded, task open (drops the reported ones as it goes)."""
        out: list[tuple[int, Attempt]] = []
        open_on = self.open_on
        for g, opened in enumerate(open_on):
            if opened:
                open_on[g] = kept = [a for a in opened if a.report > now]
                out.extend((g, a) for a in kept if not a.superseded and a.task.state is _OPEN)
        return out

    def lease_known(self, task: Task, now: float) -> Lease | None:
        """The task's lease as the controller knows it at ``now`` (the simulator
        books a lease when the attempt is placed, at its future request time)."""
        lease = self.leases.get(task.id)
        return None if lease is None or lease.granted_at > now else lease

    def _heard_start(self, at: Attempt, now: float) -> float | None:
        """When ``at`` started, if its start report has reached the controller by ``now``."""
        if not at.start < at.stop:
            return None
        path = self.net.ctrl[at.node]
        return at.start if self.net.tl.next_up(path.down, at.start) + path.lat <= now else None

    def _movability(self, at: Attempt, now: float) -> Movability:
        return Movability(
            level=at.level,
            epoch=at.epoch,
            started=self._heard_start(at, now) is not None,
            lease=self.lease_known(at.task, now),
            idempotent=self.types[at.task.tt].idempotent,
        )

    # --------------------------------------------------------- re-placement
    def _partition_moves(self, now: float, live: list[tuple[int, Attempt]]) -> None:
        """``partition_move`` for every task on a node out of reach."""
        by_node: dict[int, list[Attempt]] = {}
        for g, at in live:
            if self.link_state[g] in DOWN and at.epoch == at.task.epoch:
                by_node.setdefault(g, []).append(at)
        for g, attempts in by_node.items():
            out = self.monitors[g].out_of_contact_for(now)
            for at in attempts:
                task = at.task
                decision = partition_move(
                    PartitionFacts(
                        node_id=self.topo.node_ids[g],
                        link=self.link_state[g],
                        level=at.level,
                        lease=self.lease_known(task, now),
                        out_of_contact_s=out,
                        max_disconnect_s=self.types[task.tt].max_disconnect_s,
                    ),
                    now=now,
                )
                if decision.move:
                    self._move(at, decision, now)

    def _trigger_moves(
        self,
        now: float,
        changed: list[tuple[int, LinkState, LinkState]],
        placed: list[tuple[int, Attempt]],
    ) -> None:
        """``fired_triggers`` over the nodes, then ``trigger_move`` per task."""
        live: dict[int, list[Attempt]] = {}
        for g, at in placed:
            if at.epoch == at.task.epoch:
                live.setdefault(g, []).append(at)
        node_ids = self.topo.node_ids
        for g, old, new in changed:
            strong = sum(1 for a in live.get(g, ()) if a.task.level is _STRONG)
            trig = link_degraded(old, new, strong_tasks=strong, node_id=node_ids[g])
            if trig is not None:
                self.pending_triggers[g] = (*self.pending_triggers[g], trig)
        fired = fired_triggers(self._facts_of_nodes(live))
        self.pending_triggers = [
            () if self.link_state[g] not in DOWN else p for g, p in enumerate(self.pending_triggers)
        ]
        budget = dict(fired.overload_budget)
        max_latency = self._max_latency
        for g, attempts in live.items():
            node_id = node_ids[g]
            if self.link_state[g] in DOWN:
                continue
            rtt = self.rtt_p50[g]
            node_triggers = fired.triggers.get(node_id, ())
            bounded = any(max_latency[a.task.tt] is not None for a in attempts)
            if not node_triggers and (rtt is None or not bounded):
                continue  # nothing can fire here: spare building the facts
            for at in sorted(attempts, key=lambda a: a.task.id):
                task, movability = at.task, self._movability(at, now)
                if not movable(movability, now=now).move:
                    continue  # trigger_move moves nothing ``movable`` keeps (started ones)
                decision = trigger_move(
                    TriggerFacts(
                        node_id=node_id,
                        adaptive=True,
                        level=task.level,
                        node_triggers=node_triggers,
                        overload_budget=budget.get(node_id, 0),
                        rtt_ms=rtt,
                        max_latency_ms=max_latency[task.tt],
                        moved_at=task.moved_at,
                        movability=movability,
                    ),
                    now=now,
                )
                if decision.move and self._move(at, decision, now):
                    task.moved_at = now
                    budget[node_id] = budget.get(node_id, 0) - 1

    def _facts_of_nodes(self, live: dict[int, list[Attempt]]) -> list[NodeFacts]:
        """Every node's ``NodeFacts`` for this pass: last pass's again where its figures
        are the same (no outcome since, same reach, task count and pending triggers)."""
        facts, outcomes, pending = self._node_facts, self._outcomes, self.pending_triggers
        node_ids, link_state = self.topo.node_ids, self.link_state
        for g, known in enumerate(facts):
            eligible = link_state[g] not in DOWN
            active = len(live[g]) if g in live else 0
            if (
                known is None
                or g in outcomes
                or known.eligible is not eligible
                or known.active_tasks != active
                or known.pending is not pending[g]
            ):
                facts[g] = NodeFacts(
                    node_id=node_ids[g],
                    eligible=eligible,
                    active_tasks=active,
                    failure_ewma=self.failure[g],
                    durations=tuple(self.durations[g]),
                    pending=pending[g],
                )
        outcomes.clear()
        return facts  # type: ignore[return-value]

    def _move(self, at: Attempt, decision: MoveDecision, now: float) -> bool:
        """Supersede ``at`` and queue its task for a new placement (a new epoch), if a
        node outside the decision's exclusions would take it now; else it stays where
        it runs (``False``), as the controller leaves it when its placement finds none."""
        task = at.task
        if not self.sched.can_place(task, frozenset(decision.exclude), now):
            return False
        at.superseded, at.superseded_at, at.fence = True, now, decision.fence
        if at.level is _STRONG and self.lease_known(task, now) is None:
            # its request has not arrived: it will be refused as stale
            self.leases.release(task.id, at.epoch)
        task.replaced += 1
        self.counters.replaced += 1
        task.exclude = frozenset(decision.exclude)
        self.sched.enqueue(task, now)
        return True

    # -------------------------------------------------------------- retries
    def ended(self, at: Attempt) -> None:
        """The report of an attempt its node does not retry reached the controller."""
        if self._retry(at, self.loop.now) is None:
            self.retrying.append(at)

    def _retry_moves(self, now: float) -> None:
        waiting, self.retrying = self.retrying, []
        for at in waiting:
            if self._retry(at, now) is None:
                self.retrying.append(at)

    def _retry(self, at: Attempt, now: float) -> bool | None:
        """``retry_move`` for ``at``: placed again (``True``), never (``False``), or
        ask again next tick (``None``: node out of reach or a lease still live)."""
        task = at.task
        if task.state is not _OPEN or at.epoch != task.epoch:
            return False
        g = at.node
        decision = retry_move(
            RetryFacts(
                node_id=self.topo.node_ids[g],
                link=self.link_state[g],
                level=at.level,
                epoch=task.epoch,
                status=TaskStatus.PENDING,
                idempotent=self.types[task.tt].idempotent,
                attempts=(
                    AttemptFacts(
                        node=self.topo.node_ids[g],
                        epoch=at.epoch,
                        status=AttemptStatus.FAILED,
                        reason=REASONS[at.outcome],
                    ),
                ),
                lease=self.lease_known(task, now),
            ),
            now=now,
        )
        if decision.move:
            task.exclude = frozenset(decision.exclude)
            self.sched.requeue(task, now)
            return True
        lease = self.lease_known(task, now)
        if self.link_state[g] in DOWN or (lease is not None and lease.live(now)):
            return None  # may change: the node comes back, the lease runs out
        return False

    def outcome(self, g: int, ok: bool, ran_s: float) -> None:
        """What the controller records of a node from a reported outcome
        (``cloud/registry.py`` ``record_outcome``): failure EWMA, run durations
        (read only by the triggers of the adaptive mode)."""
        if not self.adaptive:
            return
        failure = self.failure
        failure[g] = update_failure_rate(failure[g], not ok)
        self._outcomes.add(g)
        if ok:
            self.durations[g].append(ran_s)
