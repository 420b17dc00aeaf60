"""The simulated continuum: devices, nodes, links and the controller, in virtual time.

Only time, the network and execution are simulated. Every decision is the
production code's, from ``shared``:

- **placement**: one ``shared.placement.NodeTable`` per site (its edge nodes and
  computing devices, its region's regional nodes, the cloud), scored by the
  Nomad-style pipeline (``prepare`` + the batch path of ``sim.placer``, or
  ``shared.placement.place_batch``); the policy's ``PlacementMode`` decides tiers
  and terms;
- **consistency**: fixed levels or ``shared.consistency.AdaptiveLevel`` machines
  fed with ``target_level`` from ``shared.health`` (link monitors per node and
  site, ``system_health``); leases from ``LeaseBook``/``LeasePolicy``;
  re-placement of work on an unreachable node only when
  ``replacement_allowed`` says so (hedging for eventual, ``max_disconnect_s``
  for causal, lease expiry for strong);
- **failure detection**: one ``shared.health.LinkMonitor`` per node, fed by
  heartbeats every ``telemetry_s`` that arrive only while the node's path to the
  controller is up;
- **autonomy**: a device that computes and whose uplink is down takes its own
  task when ``shared.autonomy`` says it is autonomous enough, the task's level
  allows it (``may_start``) and it has room (``admit``);
- **re-placement triggers** (mode ``adaptive``): ``link_degraded`` for strong
  work not yet started.

An attempt's timeline (placement message, lease round trip, input transfer,
execution, result) is computed when it is placed, from the link timelines
(``network.Timelines``), so a task costs about one scheduled event (its end).
Arrivals are drawn up front (numpy) and pumped by the controller's placement
tick, which batches decisions every ``placement_interval_s`` (0: one decision
per arrival, exact timing, for small runs).

Outcomes: a task *succeeded* when a result reached its device by the end of the
run; *failed* when its retry budget is spent (execution failure, fencing) or no
node could take it for ``max_queue_s``; *lost* when its last attempt died with
its node (crash) and no retry was left; otherwise it is *in flight*.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from shared.autonomy import AutonomyLevel, admit, autonomy_level, connectivity, may_start
from shared.consistency import (
    AdaptiveLevel,
    LeaseBook,
    LeasePolicy,
    replacement_allowed,
    target_level,
)
from shared.health import (
    LinkMonitor,
    LinkPolicy,
    SystemHealth,
    clamp_level,
    percentile,
    system_health,
)
from shared.placement import (
    LINK_CODES,
    NodeTable,
    NodeView,
    TaskDemand,
    latency_violated,
    link_degraded,
    place_batch,
    update_success,
)
from shared.vocab import Level, LinkState, PlacementMode, Tier
from simulations.sim.ledger import LedgerReplay, replay
from simulations.sim.loop import Loop, make_loop
from simulations.sim.network import Timelines, alternating, poisson_intervals
from simulations.sim.placer import ShapeCache, place_many
from simulations.sim.scenario import LinkClass, NodeClass, Policy, SimScenario, TaskType

__all__ = ["Result", "Simulation", "simulate"]

_PARTITIONED = LINK_CODES[LinkState.PARTITIONED]
_LINK_BY_CODE = {code: state for state, code in LINK_CODES.items()}
#: Bytes of one control message (placement, lease, report) on the wire.
CONTROL_BYTES = 512
#: Most tasks handed to the placer at once (a queue is drained in such batches).
_BATCH = 256
#: A placement queue: (site, task type, level, excluded nodes).
_QueueKey = tuple[int, int, Level, frozenset[str]]
_INF = math.inf


@dataclass(slots=True)
class Result:
    """What one run measured. ``metrics`` is flat (CSV-ready); ``latencies`` are the
    succeeded tasks' latencies in seconds (for plots and the sim-to-real gap)."""

    scenario: str
    policy: str
    seed: int
    metrics: dict[str, float]
    latencies: list[float] = field(default_factory=list, repr=False)
    params: dict[str, Any] = field(default_factory=dict)


class _Task:
    __slots__ = (
        "attempts",
        "best",
        "dev",
        "entered",
        "epoch",
        "exclude",
        "executions",
        "fail_u",
        "flow",
        "hi",
        "id",
        "in_bits",
        "level",
        "lo",
        "mi",
        "out_bits",
        "replaced",
        "report",
        "result_at",
        "site",
        "state",
        "t_arr",
        "t_ctrl",
        "tt",
    )

    def __init__(self, tid: int, dev: int, site: int, tt: int, t_arr: float) -> None:
        self.id = f"t{tid}"
        self.dev, self.site, self.tt, self.t_arr = dev, site, tt, t_arr
        self.epoch = 0
        self.attempts = 0  # attempts that count against the retry budget
        self.replaced = 0
        self.executions = 0
        self.exclude: frozenset[str] = frozenset()
        self.entered = t_arr
        self.t_ctrl = _INF  # first reached the controller
        self.state = 0  # 0 open, 1 succeeded, 2 failed, 3 lost
        self.best = _INF  # earliest result time at the device
        self.report = _INF  # when the controller learnt of that result
        self.result_at = -1  # index in the latency list once succeeded
        self.flow: _Flow | None = None
        self.level = Level.CAUSAL
        self.lo = self.hi = Level.CAUSAL


class _Attempt:
    __slots__ = (
        "cancel_at",
        "end",
        "epoch",
        "level",
        "local",
        "node",
        "outcome",
        "report",
        "start",
        "start_rep",
        "stop",
        "superseded",
        "superseded_at",
        "t_done",
        "t_grant",
        "t_place",
        "t_recv",
        "t_req",
        "task",
    )

    def __init__(self, task: _Task, node: int, epoch: int, level: Level, t_place: float) -> None:
        self.task, self.node, self.epoch, self.level, self.t_place = (
            task,
            node,
            epoch,
            level,
            t_place,
        )
        self.superseded = False
        self.superseded_at = _INF
        self.local = False
        self.t_grant = self.t_req = -1.0
        self.t_recv = self.start = self.end = self.stop = self.report = self.t_done = 0.0
        self.outcome = "ok"
        self.start_rep = self.cancel_at = _INF  # tracing only


class _Flow:
    """One workflow instance: layers of ``width`` tasks, each layer after the last."""

    __slots__ = ("depth", "dev", "failed", "layer", "left", "t0", "tt", "width")

    def __init__(self, dev: int, tt: int, width: int, depth: int, t0: float) -> None:
        self.dev, self.tt, self.width, self.depth, self.t0 = dev, tt, width, depth, t0
        self.layer = 0
        self.left = width
        self.failed = False


class _Path:
    """A precomputed path: link ids, latency sum, jitter mean, bottleneck, J/bit, WAN?
    ``down`` lists the links of the path that ever go down (the only ones worth
    checking; every link until the outages are drawn)."""

    __slots__ = ("bw", "down", "j_per_bit", "jit", "lat", "links", "wan")

    def __init__(self, links: tuple[int, ...], net: _Net) -> None:
        self.links = self.down = links
        self.lat = sum(net.lat[x] for x in links)
        self.jit = sum(net.jit[x] for x in links)
        self.bw = min((net.bw[x] for x in links), default=_INF)
        self.j_per_bit = sum(net.nj[x] for x in links) * 1e-9
        self.wan = any(net.wan[x] for x in links)


@dataclass(slots=True)
class _Net:
    lat: list[float]
    jit: list[float]
    bw: list[float]
    nj: list[float]
    wan: list[bool]


class Simulation:
    """One run of one scenario under one policy (see the module docstring)."""

    def __init__(
        self,
        scenario: SimScenario,
        policy: Policy,
        *,
        seed: int | None = None,
        loop: str = "heap",
        placer: str = "cached",
        progress: Callable[[float, float], None] | None = None,
    ) -> None:
        self.sc = scenario
        self.policy = policy
        self.mode = policy.mode
        self.seed = scenario.seed if seed is None else seed
        self.loop: Loop = make_loop(loop)
        if placer not in ("cached", "shared"):
            raise ValueError("placer must be 'cached' (sim.placer) or 'shared' (place_batch)")
        self.placer = placer
        self.progress = progress
        #: when set (lists), first successes ``(type, submitted, execution end)`` and
        #: every attempt's ``(node, end, report at controller)`` are recorded
        self.trace: list[tuple[int, float, float]] | None = None
        self.attempt_log: list[_Attempt] | None = None
        self.ctl = scenario.controller
        self.lease_policy = LeasePolicy(
            duration_s=self.ctl.lease_s,
            min_duration_s=min(3.0, self.ctl.lease_s),
            max_duration_s=max(300.0, self.ctl.lease_s),
        )
        self.leases = LeaseBook(self.lease_policy)
        self.link_policy = LinkPolicy(heartbeat_interval_s=self.ctl.telemetry_s)
        self.jrng = random.Random(f"{self.seed}:jitter")
        self._exp_rng = np.random.default_rng([self.seed, 44])
        self._exp_block: list[float] = []
        self._exp_i = 0
        self._bounds_cache: dict[int, tuple[Level, Level]] = {}
        self.cache = ShapeCache()
        self._build_topology()
        self._build_failures()
        self._mark_fallible()
        self._build_workload()
        self._init_metrics()

    # ------------------------------------------------------------------ build
    def _build_topology(self) -> None:
        _sc, top = self.sc, self.sc.topology
        S, R, D = top.sites, top.regions, top.device.count
        rng = np.random.default_rng([self.seed, 11])
        self.S, self.R, self.D = S, R, D
        self.dev_site = [d % S for d in range(D)]
        computing = rng.random(D) < top.device.compute_share
        # node table rows: (id, tier, site, region, class, device)
        nodes: list[tuple[str, Tier, int, int, NodeClass, int]] = []
        for s in range(S):
            for k in range(top.edge.count):
                nodes.append((f"edge-{s}-{k}", Tier.EDGE, s, s % R, top.edge, -1))
        for r in range(R):
            for k in range(top.regional.count):
                nodes.append((f"reg-{r}-{k}", Tier.REGIONAL, -1, r, top.regional, -1))
        for k in range(top.cloud.count):
            nodes.append((f"cloud-{k}", Tier.CLOUD, -1, -1, top.cloud, -1))
        self.dev_node = [-1] * D
        for d in np.flatnonzero(computing).tolist():
            self.dev_node[d] = len(nodes)
            s = self.dev_site[d]
            nodes.append((f"dev-{d}", Tier.DEVICE, s, s % R, top.device, d))
        self.nodes = nodes
        G = len(nodes)
        self.G = G
        self.node_ids = [n[0] for n in nodes]
        self.node_tier = [n[1] for n in nodes]
        self.node_cls = [n[4] for n in nodes]
        self.cpus = np.array([n[4].cpus for n in nodes], dtype=np.float64)
        self.mem = np.array([n[4].memory_mb for n in nodes], dtype=np.float64)
        self.mips = [n[4].mips for n in nodes]
        self.start_s = [n[4].start_s for n in nodes]
        self.cpu_free = self.cpus.copy()
        self.mem_free = self.mem.copy()
        self.running = np.zeros(G)
        self.success = [1.0] * G  # success-rate EWMA per node
        self.link = np.zeros(G, dtype=np.int8)
        self.prate = np.zeros(G)
        self.busy = [0.0] * G  # core-seconds of execution (LEAF dynamic energy)
        self.open_on: list[list[_Attempt]] = [[] for _ in range(G)]

        # links: access d | metro s | wan r | lan | node g (crashes) | node g's own uplink
        L = D + S + R + 1 + 2 * G
        self.L_METRO, self.L_WAN, self.L_LAN, self.L_NODE = D, D + S, D + S + R, D + S + R + 1
        self.L_UP = self.L_NODE + G
        lat, jit, bw, nj, wan = [0.0] * L, [0.0] * L, [_INF] * L, [0.0] * L, [False] * L
        lk = self.sc.links

        def fill(first: int, count: int, lc: LinkClass, is_wan: bool) -> None:
            base = lc.latency_ms * rng.uniform(1 - lc.spread, 1 + lc.spread, count) / 1000.0
            for i in range(count):
                lat[first + i] = float(base[i])
                jit[first + i] = lc.jitter_ms / 1000.0
                bw[first + i] = lc.bandwidth_mbps * 1e6
                nj[first + i] = lc.nj_per_bit
                wan[first + i] = is_wan

        fill(0, D, lk.access, False)
        fill(self.L_METRO, S, lk.metro, False)
        fill(self.L_WAN, R, lk.wan, True)
        fill(self.L_LAN, 1, lk.lan, False)
        self.net = _Net(lat, jit, bw, nj, wan)
        net = self.net

        def P(*links: int) -> _Path:
            return _Path(tuple(links), net)

        self.dev_ctrl = [
            P(d, self.L_METRO + self.dev_site[d], self.L_WAN + self.dev_site[d] % R, self.L_LAN)
            for d in range(D)
        ]
        self.ctrl_path: list[_Path] = []
        for g, (_, tier, s, r, _, d) in enumerate(nodes):
            own = (self.L_NODE + g, self.L_UP + g)
            if tier is Tier.EDGE:
                self.ctrl_path.append(P(self.L_METRO + s, self.L_WAN + r, self.L_LAN, *own))
            elif tier is Tier.REGIONAL:
                self.ctrl_path.append(P(self.L_WAN + r, self.L_LAN, *own))
            elif tier is Tier.CLOUD:
                self.ctrl_path.append(P(self.L_LAN, *own))
            else:
                self.ctrl_path.append(P(d, self.L_METRO + s, self.L_WAN + r, self.L_LAN, *own))
        self.site_ctrl = [P(self.L_METRO + s, self.L_WAN + s % R, self.L_LAN) for s in range(S)]

        # per-site placement tables and the site part of each device→node path
        self.tables: list[NodeTable] = []
        self.gidx: list[np.ndarray] = []
        self.site_part: list[list[_Path]] = []  # [site][row] path after the device's access link
        self.version = [0] * S
        self.logs: list[list[int]] = [[] for _ in range(S)]  # rows moved, per table version
        # releases (unblock waiting shapes): counters per site, per region, cloud
        self.freed = [0] * (S + R + 1)
        self.stuck: dict[_QueueKey, tuple[int, int, int, int]] = {}
        self.queues: dict[_QueueKey, deque[_Task]] = {}
        self.active: dict[_QueueKey, None] = {}  # non-empty queues, in insertion order
        self.freed_counter = [
            n[2] if n[1] in (Tier.EDGE, Tier.DEVICE) else S + n[3] if n[1] is Tier.REGIONAL else -1
            for n in nodes
        ]
        for s in range(S):
            r = s % R
            members = [
                g
                for g, n in enumerate(nodes)
                if (n[2] == s) or (n[1] is Tier.REGIONAL and n[3] == r) or n[1] is Tier.CLOUD
            ]
            parts: dict[int, _Path] = {}
            for g in members:
                tier, own = nodes[g][1], (self.L_NODE + g, self.L_UP + g)
                if tier is Tier.EDGE:
                    parts[g] = P(*own)
                elif tier is Tier.REGIONAL:
                    parts[g] = P(self.L_METRO + s, *own)
                elif tier is Tier.CLOUD:
                    parts[g] = P(self.L_METRO + s, self.L_WAN + r, self.L_LAN, *own)
                else:
                    parts[g] = P(nodes[g][5], *own)
            access = lk.access.latency_ms / 1000.0
            views = []
            for g in members:
                part, cls = parts[g], nodes[g][4]
                views.append(
                    NodeView(
                        node_id=nodes[g][0],
                        tier=nodes[g][1],
                        labels={"site": str(s)} if nodes[g][2] == s else {},
                        cpus=cls.cpus,
                        memory_mb=cls.memory_mb,
                        rtt_ms=2000.0 * (part.lat + access),
                        bandwidth_mbps=min(part.bw, lk.access.bandwidth_mbps * 1e6) / 1e6,
                        battery_pct=100.0 if cls.battery else None,
                    )
                )
            table = NodeTable(views)
            gidx = np.array([self.node_ids.index(i) for i in table.ids], dtype=np.intp)
            self.tables.append(table)
            self.gidx.append(gidx)
            self.site_part.append([parts[int(g)] for g in gidx])

    def _build_failures(self) -> None:
        sc = self.sc
        horizon = sc.duration_s
        rng = np.random.default_rng([self.seed, 22])
        L = len(self.net.lat)
        tl = Timelines(L)
        lk = sc.links
        extra: dict[int, list[tuple[float, float]]] = {}
        for r, (a, b) in (
            (r, iv)
            for r in range(self.R)
            for iv in poisson_intervals(
                rng, sc.failures.region_outage_per_h / 3600.0, sc.failures.region_outage_s, horizon
            )
        ):
            extra.setdefault(self.L_WAN + r, []).append((a, b))
            for s in range(r, self.S, self.R):
                extra.setdefault(self.L_METRO + s, []).append((a, b))

        def draw(first: int, count: int, lc: LinkClass) -> None:
            for i in range(count):
                ivs = alternating(rng, lc.mtbf_s, lc.mttr_s, horizon) + extra.get(first + i, [])
                if ivs:
                    tl.set(first + i, ivs)

        draw(0, self.D, lk.access)
        draw(self.L_METRO, self.S, lk.metro)
        draw(self.L_WAN, self.R, lk.wan)
        draw(self.L_LAN, 1, lk.lan)
        for g, n in enumerate(self.nodes):
            ivs = alternating(rng, n[4].mtbf_s, n[4].mttr_s, horizon)
            if ivs:
                tl.set(self.L_NODE + g, ivs)
        self.tl = tl

    def _mark_fallible(self) -> None:
        """Keep in each path only the links that ever go down (for ``next_up``)."""
        self._fallible = [st is not None for st in self.tl.starts]
        f = self._fallible
        paths = [*self.dev_ctrl, *self.ctrl_path, *self.site_ctrl]
        paths += [p for parts in self.site_part for p in parts]
        for path in paths:
            path.down = tuple(x for x in path.links if f[x])

    def _build_workload(self) -> None:
        sc, wl = self.sc, self.sc.workload
        rng = np.random.default_rng([self.seed, 33])
        start = wl.start_s
        stop = min(sc.duration_s, wl.stop_s if wl.stop_s is not None else sc.duration_s)
        span = max(0.0, stop - start)
        D = self.D
        if wl.arrival == "poisson":
            counts = rng.poisson(wl.rate_per_device * span, D)
            devs = np.repeat(np.arange(D), counts)
            times = rng.uniform(start, stop, int(counts.sum()))
        else:
            on_rate = wl.rate_per_device * wl.burst_factor
            off_rate = max(
                0.0,
                (wl.rate_per_device * (wl.burst_on_s + wl.burst_off_s) - on_rate * wl.burst_on_s)
                / wl.burst_off_s,
            )
            tt: list[np.ndarray] = []
            dd: list[np.ndarray] = []
            for d in range(D):
                t, on = start, bool(rng.random() < wl.burst_on_s / (wl.burst_on_s + wl.burst_off_s))
                while t < stop:
                    length = rng.exponential(wl.burst_on_s if on else wl.burst_off_s)
                    end = min(stop, t + length)
                    rate = on_rate if on else off_rate
                    n = int(rng.poisson(rate * (end - t)))
                    if n:
                        tt.append(rng.uniform(t, end, n))
                        dd.append(np.full(n, d))
                    t, on = end, not on
            times = np.concatenate(tt) if tt else np.zeros(0)
            devs = np.concatenate(dd) if dd else np.zeros(0, dtype=np.int64)
        order = np.argsort(times, kind="stable")
        self.arr_t = times[order]
        self.arr_dev = devs[order].astype(np.int64)
        n = len(self.arr_t)
        types = wl.types
        w = np.array([t.weight for t in types], dtype=np.float64)
        self.arr_type = rng.choice(len(types), n, p=w / w.sum())
        lo_mi = np.array([t.compute_mi[0] for t in types])
        hi_mi = np.array([t.compute_mi[1] for t in types])
        u = rng.random((4, n))
        k = self.arr_type
        self.arr_mi = lo_mi[k] + (hi_mi - lo_mi)[k] * u[0]
        lo_in = np.array([t.input_kb[0] for t in types])
        hi_in = np.array([t.input_kb[1] for t in types])
        self.arr_in = (lo_in[k] + (hi_in - lo_in)[k] * u[1]) * 8192.0
        lo_out = np.array([t.output_kb[0] for t in types])
        hi_out = np.array([t.output_kb[1] for t in types])
        self.arr_out = (lo_out[k] + (hi_out - lo_out)[k] * u[2]) * 8192.0
        self.arr_fail = u[3]
        self.cursor = 0
        # workflows: instance start times and devices, drawn up front as well
        flows: list[tuple[float, int, int]] = []
        for i, wf in enumerate(wl.workflows):
            m = int(rng.poisson(wf.rate_per_s * span))
            for t0, d in zip(
                np.sort(rng.uniform(start, stop, m)).tolist(),
                rng.integers(0, D, m).tolist(),
                strict=True,
            ):
                flows.append((t0, i, d))
        flows.sort()
        self.flow_starts = flows
        names = [t.name for t in types]
        self.flow_type = [names.index(wf.type) if wf.type else 0 for wf in wl.workflows]
        # per type: placement demand template and runtime estimate
        ref_mips = self.sc.topology.edge.mips
        self.type_runtime = [(sum(t.compute_mi) / 2) / ref_mips for t in types]
        self.demands: dict[tuple[int, Level, frozenset[str]], TaskDemand] = {}

    def _init_metrics(self) -> None:
        self.generated = 0
        self.failed = 0
        self.lost = 0
        self.unplaceable = 0
        self.fenced = 0
        self.refused = 0
        self.duplicates = 0
        self.replaced = 0
        self.local_runs = 0
        self.cancelled = 0
        self.level_changes = 0
        self.wan_bytes = 0.0
        self.link_j = 0.0
        self.placed_tier = dict.fromkeys(Tier, 0)
        self.lat: list[float] = []  # latency of succeeded tasks (s)
        self.done_at: list[float] = []
        self.deadline: list[float] = []
        self.open_tasks = 0
        self.pending: list[_Task] = []
        self.buckets: dict[int, list[_Task]] = {}
        self._kicked = False
        self._exact = self.ctl.placement_interval_s <= 0
        self._k_done = -1
        self.flows_done: list[float] = []
        self.system = SystemHealth.HEALTHY
        self.rtt_samples: list[float] = []
        now = 0.0
        self.monitors = [
            LinkMonitor(nid, now=now, policy=self.link_policy) for nid in self.node_ids
        ]
        self.site_mon = [
            LinkMonitor(f"site-{s}", now=now, policy=self.link_policy) for s in range(self.S)
        ]
        self.site_levels: dict[tuple[int, Level, Level], AdaptiveLevel] = {}

    # -------------------------------------------------------------- helpers
    def _exp(self) -> float:
        """A standard exponential draw (pre-drawn in blocks: much cheaper per call)."""
        i = self._exp_i
        if i >= len(self._exp_block):
            self._exp_block = self._exp_rng.standard_exponential(1 << 16).tolist()
            i = 0
        self._exp_i = i + 1
        return self._exp_block[i]  # type: ignore[no-any-return]

    def _deliver(self, path: _Path, t: float, bits: float = 0.0) -> float:
        """Arrival time of a message of ``bits`` sent at ``t`` (held while a link is
        down); the bits are counted on the path's links (energy, WAN bytes)."""
        t0 = self.tl.next_up(path.down, t) if path.down else t
        if bits:
            self.link_j += bits * path.j_per_bit
            if path.wan:
                self.wan_bytes += bits / 8.0
            t0 += bits / path.bw
        return t0 + path.lat + (path.jit * self._exp() if path.jit > 0 else 0.0)

    def _bounds(self, k: int) -> tuple[Level, Level]:
        bounds = self._bounds_cache.get(k)
        if bounds is None:
            bounds = self._bounds_cache[k] = self._bounds_of(self.sc.workload.types[k])
        return bounds

    def _bounds_of(self, tt: TaskType) -> tuple[Level, Level]:
        c = self.policy.consistency
        if c == "declared":
            if tt.level == "adaptive":
                return Level(tt.min), Level(tt.max)
            return Level(tt.level), Level(tt.level)
        if c == "adaptive":
            return Level(tt.min), Level(tt.max)
        return Level(c), Level(c)

    def _site_level(self, site: int, lo: Level, hi: Level) -> Level:
        if lo is hi:
            return lo
        machine = self.site_levels.get((site, lo, hi))
        if machine is None:
            target = target_level(lo, hi, link=self.site_mon[site].state, system=self.system).level
            machine = AdaptiveLevel(f"site-{site}", lo=lo, hi=hi, initial=target)
            self.site_levels[(site, lo, hi)] = machine
        return machine.level

    def _demand(self, task: _Task) -> TaskDemand:
        key = (task.tt, task.level, task.exclude)
        demand = self.demands.get(key)
        if demand is None:
            tt = self.sc.workload.types[task.tt]
            demand = TaskDemand(
                task_id="sim",
                cpu=tt.cpu,
                memory_mb=tt.memory_mb,
                preferred_tiers=tuple(Tier(t) for t in tt.preferred_tiers),
                max_latency_ms=tt.max_latency_ms,
                data_size_mb=(sum(tt.input_kb) / 2) / 1024.0,
                runtime_s=self.type_runtime[task.tt],
                level=task.level,
                exclude=task.exclude,
            )
            self.demands[key] = demand
        return demand

    # ------------------------------------------------------------ workload
    def _new_task(
        self, dev: int, tt: int, t: float, mi: float, ib: float, ob: float, u: float
    ) -> _Task:
        task = _Task(self.generated, dev, self.dev_site[dev], tt, t)
        self.generated += 1
        self.open_tasks += 1
        task.mi, task.in_bits, task.out_bits, task.fail_u = mi, ib, ob, u
        task.lo, task.hi = self._bounds(tt)
        return task

    def _arrive(self, task: _Task) -> None:
        """A task appears at its device at ``task.t_arr``: run it locally when the
        device is cut off and autonomy allows, else send it to the controller."""
        t = task.t_arr
        path = self.dev_ctrl[task.dev]
        since = self.tl.down_since(path.down, t)
        g = self.dev_node[task.dev]
        if since is not None and g >= 0:
            autonomy = autonomy_level(connectivity(t - since, self.ctl.ack_period_s))
            # local submissions run as causal or eventual (DESIGN §7)
            level = clamp_level(Level.CAUSAL, lo=task.lo, hi=task.hi)
            if (
                autonomy.rank >= AutonomyLevel.HIGHLY_AUTONOMOUS.rank
                and level is not Level.STRONG
                and may_start(level, None, t)
                and self._admit_local(g, task)
            ):
                task.level = level
                self._run_local(task, g, t)
                return
        t_c = self._deliver(path, t, CONTROL_BYTES * 8)
        task.entered = task.t_ctrl = t_c
        self._to_controller(task, t_c)

    def _admit_local(self, g: int, task: _Task) -> bool:
        tt = self.sc.workload.types[task.tt]
        cpus = float(self.cpus[g])
        held = cpus - float(self.cpu_free[g])
        decision = admit(
            {"cpu": tt.cpu, "memory_mb": tt.memory_mb},
            {"cpus": cpus, "memory_free_mb": float(self.mem_free[g])},
            {"cpu": held},
            running=int(self.running[g]),
        )
        return bool(decision) and tt.cpu <= float(self.cpu_free[g])

    def _to_controller(self, task: _Task, t_c: float) -> None:
        dt = self.ctl.placement_interval_s
        if dt <= 0:
            self.loop.at(t_c, self._controller_receive, task)
        else:
            k = max(math.ceil(t_c / dt - 1e-9), self._k_done + 1)
            self.buckets.setdefault(k, []).append(task)

    def _controller_receive(self, task: _Task) -> None:
        self.pending.append(task)
        self._place_pending(self.loop.now)

    def _kick(self) -> None:
        """Exact mode (no tick): retry waiting work once something changed."""
        if (
            self.ctl.placement_interval_s <= 0
            and not self._kicked
            and (self.pending or self.active)
        ):
            self._kicked = True
            self.loop.at(self.loop.now, self._kicked_place)

    def _kicked_place(self, _: Any) -> None:
        self._kicked = False
        self._place_pending(self.loop.now)

    def _pump(self, now: float) -> None:
        """Arrivals up to ``now`` (drawn up front), in order."""
        end = int(np.searchsorted(self.arr_t, now, side="right"))
        i = self.cursor
        if end <= i:
            return
        ts = self.arr_t[i:end].tolist()
        ds = self.arr_dev[i:end].tolist()
        ks = self.arr_type[i:end].tolist()
        mis = self.arr_mi[i:end].tolist()
        ins = self.arr_in[i:end].tolist()
        outs = self.arr_out[i:end].tolist()
        us = self.arr_fail[i:end].tolist()
        self.cursor = end
        for t, d, k, mi, ib, ob, u in zip(ts, ds, ks, mis, ins, outs, us, strict=True):
            self._arrive(self._new_task(d, k, t, mi, ib, ob, u))

    def _arrival_event(self, index: int) -> None:
        """Exact mode (no batching tick): one event per arrival."""
        self._pump(self.arr_t[index])

    def _flow_start(self, item: tuple[float, int, int]) -> None:
        t0, i, dev = item
        wf = self.sc.workload.workflows[i]
        flow = _Flow(dev, self.flow_type[i], wf.width, wf.depth, t0)
        self._flow_layer(flow, t0)

    def _flow_layer(self, flow: _Flow, t: float) -> None:
        tt = self.sc.workload.types[flow.tt]
        r = self.jrng
        flow.left = flow.width
        for _ in range(flow.width):
            task = self._new_task(
                flow.dev,
                flow.tt,
                t,
                r.uniform(*tt.compute_mi),
                r.uniform(*tt.input_kb) * 8192.0,
                r.uniform(*tt.output_kb) * 8192.0,
                r.random(),
            )
            task.flow = flow
            self._arrive(task)

    def _flow_step(self, task: _Task) -> None:
        flow = task.flow
        if flow is None or flow.failed:
            return
        if task.state != 1:
            flow.failed = True
            return
        flow.left -= 1
        if flow.left == 0:
            flow.layer += 1
            if flow.layer >= flow.depth:
                self.flows_done.append(self.loop.now - flow.t0)
            else:
                self._flow_layer(flow, self.loop.now)

    # ------------------------------------------------------------ placement
    def _tick(self, k: int) -> None:
        now = self.loop.now
        dt = self.ctl.placement_interval_s
        self._pump(now)
        arrived = self.buckets.pop(k, None)
        self._k_done = k
        if arrived:
            self.pending.extend(arrived)
        if self.pending or self.active:
            self._place_pending(now)
        if (k + 1) * dt <= self.sc.duration_s + 1e-9:
            self.loop.at((k + 1) * dt, self._tick, k + 1)
        if self.progress is not None and k % 1000 == 0:
            self.progress(now, self.sc.duration_s)

    def _place_pending(self, now: float) -> None:
        """Move new work into per-(site, shape) FIFO queues, then place from every
        queue that can make progress; a queue that found no room stays untouched
        until something is freed at its site or telemetry changes the table. Work
        waiting longer than ``max_queue_s`` fails (no node could take it)."""
        inbox, self.pending = self.pending, []
        queues, active = self.queues, self.active
        for task in inbox:
            if task.state != 0:
                continue
            if task.epoch == 0:
                task.level = self._site_level(task.site, task.lo, task.hi)
            key = (task.site, task.tt, task.level, task.exclude)
            q = queues.get(key)
            if q is None:
                q = queues[key] = deque()
            q.append(task)
            active[key] = None
        max_q = self.ctl.max_queue_s
        synced: set[int] = set()
        for key in list(active):
            q = queues[key]
            site = key[0]
            freed = self.freed
            mark = (freed[site], freed[self.S + site % self.R], freed[-1], self.version[site])
            if self.stuck.get(key) != mark:
                if site not in synced:
                    self._sync(site)
                    synced.add(site)
                if not self._place_queue(site, q, now):
                    self.stuck[key] = mark
            while q and (q[0].state != 0 or now - q[0].entered > max_q):
                task = q.popleft()
                if task.state == 0:
                    self.unplaceable += 1
                    self._finish(task, 2)
            if not q:
                del active[key]
                del queues[key]

    def _sync(self, site: int) -> None:
        """Bring the site's table up to the global free resources (releases, and
        other sites' use of shared rows), logging the rows that moved."""
        gidx, table = self.gidx[site], self.tables[site]
        cpu, mem = self.cpu_free[gidx], self.mem_free[gidx]
        moved = np.flatnonzero((table.cpu_free != cpu) | (table.memory_free != mem))
        if len(moved):
            table.cpu_free[:] = cpu
            table.memory_free[:] = mem
            table.running[:] = self.running[gidx]
            self.logs[site].extend(moved.tolist())

    def _place_queue(self, site: int, q: deque[_Task], now: float) -> bool:
        """Place from the head of one queue (one task shape) until it is empty
        (``True``) or no node has room (``False``; the rest stays queued in order)."""
        table, gidx = self.tables[site], self.gidx[site]
        size = 8  # grows while everything fits: a full site costs little per tick
        while q:
            batch: list[_Task] = []
            while q and len(batch) < size:
                task = q.popleft()
                if task.state == 0:
                    batch.append(task)
            if not batch:
                return True
            demand = self._demand(batch[0])
            epochs = [t.epoch + 1 for t in batch]
            rows: list[int]
            if self.placer == "cached":
                state = self.cache.get(
                    site, self.version[site], table, demand, self.mode, self.logs[site]
                )
                rows = place_many(table, state, [t.id for t in batch], epochs, seed=self.seed)
            else:
                demands = [
                    TaskDemand(
                        task_id=t.id,
                        cpu=demand.cpu,
                        memory_mb=demand.memory_mb,
                        preferred_tiers=demand.preferred_tiers,
                        max_latency_ms=demand.max_latency_ms,
                        data_size_mb=demand.data_size_mb,
                        runtime_s=demand.runtime_s,
                        level=demand.level,
                        exclude=demand.exclude,
                    )
                    for t in batch
                ]
                decisions = place_batch(
                    table, demands, mode=self.mode, seed=self.seed, epochs=epochs
                )
                rows = []
                for dec in decisions:  # one shape: after the first refusal, all are refused
                    if dec.node_id is None:
                        break
                    rows.append(table.index[dec.node_id])
            for task, row in zip(batch, rows, strict=False):
                g = int(gidx[row])
                self.cpu_free[g] -= demand.cpu
                self.mem_free[g] -= demand.memory_mb
                self.running[g] += 1
                self._start_attempt(task, g, row, now)
            if len(rows) < len(batch):
                q.extendleft(reversed(batch[len(rows) :]))
                return False
            size = min(2 * size, _BATCH)
        return True

    def _start_attempt(self, task: _Task, g: int, row: int, now: float) -> None:
        """Compute the attempt's timeline from the link timelines and schedule its end."""
        tt = self.sc.workload.types[task.tt]
        task.epoch += 1
        level = task.level
        at = _Attempt(task, g, task.epoch, level, now)
        self.placed_tier[self.node_tier[g]] += 1
        ctrl = self.ctrl_path[g]
        ctrl_bits = CONTROL_BYTES * 8
        at.t_recv = t_recv = self._deliver(ctrl, now, ctrl_bits)
        ready = t_recv
        if level is Level.STRONG:
            at.t_req = t_req = self._deliver(ctrl, t_recv, ctrl_bits)
            decision = self.leases.request(
                task_id=task.id,
                node=self.node_ids[g],
                epoch=task.epoch,
                duration_s=self.lease_policy.duration_s,
                now=t_req,
                placed_epoch=task.epoch,
                placed_node=self.node_ids[g],
            )
            ready = at.t_grant = self._deliver(ctrl, t_req, ctrl_bits)
            if not decision.granted:  # the attempt may not start (DESIGN §5)
                at.stop, at.outcome = ready, "refused"
                at.report = self._deliver(ctrl, ready, ctrl_bits)
                self.open_on[g].append(at)
                self.loop.at(at.stop, self._attempt_end, at)
                return
        # input data from the device to the node
        d_node = self.dev_node[task.dev]
        if g == d_node:
            t_in = t_recv
            data_path = None
        else:
            data_path = self.site_part[task.site][row]
            t_in = self._deliver_data(task.dev, data_path, t_recv, task.in_bits)
        at.start = start = max(ready, t_in)
        at.end = end = start + self.start_s[g] + task.mi / self.mips[g]
        stop, outcome = end, "ok"
        crash = self.tl.first_down((self.L_NODE + g,), t_recv, end)
        if crash is not None:
            stop, outcome = crash, "lost"
        if level is Level.STRONG:
            fence = self._fence_time(ctrl, t_recv, at.t_grant, stop)
            if fence is not None and fence < stop:
                stop, outcome = fence, "fenced"
        if outcome == "ok" and task.fail_u < tt.fail_rate:
            outcome = "fail"
        at.stop, at.outcome = stop, outcome
        self._finalise_timeline(at, task, g, data_path)
        self.open_on[g].append(at)
        self.loop.at(stop, self._attempt_end, at)

    def _deliver_data(self, dev: int, part: _Path, t: float, bits: float) -> float:
        """``_deliver`` over device ``dev``'s access link followed by ``part``
        (the node side of the path), without building the joined path."""
        net = self.net
        if self._fallible[dev]:
            t = self.tl.next_up((dev, *part.down), t)
        elif part.down:
            t = self.tl.next_up(part.down, t)
        self.link_j += bits * (net.nj[dev] * 1e-9 + part.j_per_bit)
        if part.wan:
            self.wan_bytes += bits / 8.0
        jit = net.jit[dev] + part.jit
        bw = net.bw[dev] if net.bw[dev] < part.bw else part.bw
        lat = net.lat[dev] + part.lat
        return t + bits / bw + lat + (jit * self._exp() if jit > 0 else 0.0)

    def _fence_time(self, ctrl: _Path, t_recv: float, t_grant: float, stop: float) -> float | None:
        """Where an outage of the control path outlasts the lease: the agent's deadline
        (``LeasePolicy.agent_deadline`` from the last renewal sent before the outage)."""
        links = tuple(x for x in ctrl.down if not self.L_NODE <= x < self.L_UP)
        a = self.tl.first_down(links, t_grant, stop)
        if a is None:
            return None
        back = self.tl.next_up(links, a)
        period = self.lease_policy.duration_s * self.lease_policy.renew_fraction
        last_send = t_recv + math.floor((a - t_recv) / period) * period
        deadline = self.lease_policy.agent_deadline(last_send, self.lease_policy.duration_s)
        return deadline if deadline < back else None

    def _finalise_timeline(
        self, at: _Attempt, task: _Task, g: int, data_path: _Path | None
    ) -> None:
        ctrl = self.ctrl_path[g]
        at.report = self._deliver(ctrl, at.stop, CONTROL_BYTES * 8)
        if at.outcome != "ok":
            return
        if data_path is None:
            at.t_done = at.stop
        else:
            at.t_done = self._deliver_data(task.dev, data_path, at.stop, task.out_bits)
        if at.level is Level.STRONG:
            # state changes count once the controller acknowledged them
            ack_at_device = self._deliver(self.dev_ctrl[task.dev], at.report, CONTROL_BYTES * 8)
            at.t_done = max(at.t_done, ack_at_device)

    def _run_local(self, task: _Task, g: int, t: float) -> None:
        """Autonomy: the device runs its own task while cut off (no controller round trips)."""
        tt = self.sc.workload.types[task.tt]
        self.cpu_free[g] -= tt.cpu
        self.mem_free[g] -= tt.memory_mb
        self.running[g] += 1
        self.local_runs += 1
        task.epoch += 1
        at = _Attempt(task, g, task.epoch, task.level, t)
        at.local = True
        at.t_recv = at.start = t
        at.end = t + self.start_s[g] + task.mi / self.mips[g]
        stop, outcome = at.end, "ok"
        crash = self.tl.first_down((self.L_NODE + g,), t, at.end)
        if crash is not None:
            stop, outcome = crash, "lost"
        elif task.fail_u < tt.fail_rate:
            outcome = "fail"
        at.stop, at.outcome = stop, outcome
        self._finalise_timeline(at, task, g, None)
        self.placed_tier[Tier.DEVICE] += 1
        self.open_on[g].append(at)
        self.loop.at(stop, self._attempt_end, at)

    # ----------------------------------------------------------- outcomes
    def _attempt_end(self, at: _Attempt) -> None:
        task, g = at.task, at.node
        # re-placed before its lease request arrived: refused as a stale epoch, so
        # it never ran (fencing token = epoch)
        stale = at.level is Level.STRONG and at.superseded and at.t_req >= at.superseded_at
        if stale or at.outcome == "refused":
            at.outcome, at.start = "refused", at.stop
        if self.attempt_log is not None:
            self.attempt_log.append(at)
            path = self.ctrl_path[g]
            at.start_rep = self.tl.next_up(path.down, at.start) + path.lat
        tt = self.sc.workload.types[task.tt]
        self.cpu_free[g] += tt.cpu
        self.mem_free[g] += tt.memory_mb
        self.running[g] -= 1
        self.freed[self.freed_counter[g]] += 1
        if self._exact:
            self._kick()
        if at.level is Level.STRONG:
            self.leases.release(task.id, at.epoch)  # on its terminal report
        if at.outcome == "refused":
            self.refused += 1
            if stale:
                return
        ran = max(0.0, at.stop - at.start)
        if task.state == 1 and task.best < _INF:
            # the controller cancels the others once a success is reported
            cancel_at = self._deliver(self.ctrl_path[g], task.report)
            if cancel_at < at.stop:
                at.cancel_at = cancel_at
                ran = max(0.0, cancel_at - at.start)
                self.busy[g] += ran * tt.cpu
                self.cancelled += 1
                return
        self.busy[g] += ran * tt.cpu
        self.success[g] = update_success(self.success[g], at.outcome == "ok")
        if at.outcome == "ok":
            task.executions += 1
            if task.executions > 1:
                self.duplicates += 1
            if at.t_done < task.best:
                task.best = at.t_done
                task.report = at.report
                if task.state == 0:
                    if self.trace is not None:
                        self.trace.append((task.tt, task.t_arr, at.stop))
                    task.state = 1
                    self.open_tasks -= 1
                    task.result_at = len(self.lat)
                    self.lat.append(at.t_done - task.t_arr)
                    self.done_at.append(at.t_done)
                    self.deadline.append(tt.deadline_s)
                    if task.flow is not None:
                        self.loop.at(at.t_done, self._flow_step, task)
                else:
                    self.lat[task.result_at] = at.t_done - task.t_arr
                    self.done_at[task.result_at] = at.t_done
            return
        if at.superseded or task.state != 0:
            return
        if at.outcome == "fenced":
            self.fenced += 1
        task.attempts += 1
        if task.attempts >= tt.max_attempts:
            self._finish(task, 3 if at.outcome == "lost" else 2)
            return
        backoff = self.ctl.retry_backoff_s * (2 ** (task.attempts - 1))
        task.exclude = frozenset({self.node_ids[g]})
        self.loop.at(at.report + backoff, self._resubmit, task)

    def _resubmit(self, task: _Task) -> None:
        if task.state != 0:
            return
        task.entered = self.loop.now
        if self.ctl.placement_interval_s <= 0:
            self._controller_receive(task)
        else:
            self.pending.append(task)

    def _finish(self, task: _Task, state: int) -> None:
        if task.state != 0:
            return
        task.state = state
        self.open_tasks -= 1
        if state == 2:
            self.failed += 1
        else:
            self.lost += 1
        if task.flow is not None:
            task.flow.failed = True

    # ------------------------------------------------------------ telemetry
    def _telemetry(self, _: Any) -> None:
        now = self.loop.now
        tl = self.tl
        samples: list[float] = []
        changed_nodes: list[tuple[int, LinkState, LinkState]] = []
        for g in range(self.G):
            mon = self.monitors[g]
            path = self.ctrl_path[g]
            if tl.next_up(path.down, now) > now:
                change = mon.poll(now)
            else:
                rtt = (
                    2000.0 * path.lat + 1000.0 * path.jit * self._exp()
                    if path.jit
                    else 2000.0 * path.lat
                )
                samples.append(rtt)
                change = mon.rtt(rtt, now)
            if change is not None:
                self.link[g] = LINK_CODES[change.new]
                changed_nodes.append((g, change.old, change.new))
            self.prate[g] = mon.partition_rate_per_h(now)
        for s in range(self.S):
            path = self.site_ctrl[s]
            mon = self.site_mon[s]
            if tl.next_up(path.down, now) > now:
                mon.poll(now)
            else:
                mon.rtt(2000.0 * path.lat, now)
        available = int(np.count_nonzero(self.link < _PARTITIONED))
        samples.sort()
        self.system = system_health(
            available, self.G, percentile(samples, 0.99) if samples else None
        )
        for (s, lo, hi), machine in self.site_levels.items():
            target = target_level(lo, hi, link=self.site_mon[s].state, system=self.system)
            if machine.observe(target, now) is not None:
                self.level_changes += 1
        load = 1.0 - self.cpu_free / self.cpus
        success = np.array(self.success)
        for s, (table, gidx) in enumerate(zip(self.tables, self.gidx, strict=True)):
            table.link[:] = self.link[gidx]
            table.load[:] = np.round(load[gidx], 2)
            table.success[:] = np.round(success[gidx], 3)
            table.partition_rate[:] = np.round(self.prate[gidx], 1)
            self.version[s] += 1
            self.logs[s] = []
        self._hedge(now, changed_nodes)
        self._kick()
        if now + self.ctl.telemetry_s <= self.sc.duration_s:
            self.loop.at(now + self.ctl.telemetry_s, self._telemetry)

    def _hedge(self, now: float, changed: list[tuple[int, LinkState, LinkState]]) -> None:
        """Re-place work on unreachable nodes as far as ``replacement_allowed`` lets it.
        In adaptive mode two triggers (``shared.placement``) also move work that has
        not started: strong work off a link that turns degraded (``link_degraded``),
        and any work whose latency bound has passed (``latency_violated``), again
        only where ``replacement_allowed`` agrees."""
        adaptive = self.mode is PlacementMode.ADAPTIVE
        triggered: set[int] = set()
        if adaptive:
            for g, old, new in changed:
                strong = [
                    a
                    for a in self.open_on[g]
                    if a.level is Level.STRONG and a.start > now and not a.superseded
                ]
                if link_degraded(old, new, strong_tasks=len(strong)) is not None:
                    triggered.add(g)
        for g in range(self.G):
            opened = self.open_on[g]
            if not opened:
                continue
            live = [a for a in opened if a.report > now and not a.superseded and a.task.state == 0]
            self.open_on[g] = [a for a in opened if a.report > now]
            if not live:
                continue
            down = self.link[g] >= _PARTITIONED
            if not down and not adaptive:
                continue
            out = self.monitors[g].out_of_contact_for(now) if down else None
            for at in live:
                task = at.task
                if task.state != 0 or at.epoch != task.epoch:
                    continue
                tt = self.sc.workload.types[task.tt]
                if not down:
                    if at.start <= now:
                        continue  # started: only unstarted work is moved
                    strong = g in triggered and at.level is Level.STRONG
                    bound = tt.max_latency_ms
                    late = (
                        bound is not None
                        and latency_violated(1000.0 * (now - task.t_arr), bound) is not None
                    )
                    if not (strong or late):
                        continue
                lease = self.leases.get(task.id)
                if lease is not None and (lease.granted_at > now or lease.epoch != at.epoch):
                    lease = None
                decision = replacement_allowed(
                    at.level,
                    now=now,
                    lease=lease,
                    out_of_contact_s=out if down else None,
                    max_disconnect_s=tt.max_disconnect_s,
                )
                if not decision.allowed:
                    continue
                at.superseded, at.superseded_at = True, now
                if lease is None and at.level is Level.STRONG:
                    # its request has not arrived: it will be refused as stale
                    self.leases.release(task.id, at.epoch)
                task.replaced += 1
                self.replaced += 1
                task.exclude = frozenset({self.node_ids[g]})
                if task.lo is not task.hi:
                    task.level = self._site_level(task.site, task.lo, task.hi)
                task.entered = now
                self.pending.append(task)

    def ledger(self) -> LedgerReplay:
        """Replay the traced attempts through ``shared.crdt`` (needs ``attempt_log``
        set before ``run``; small runs only, see ``simulations.sim.ledger``)."""
        views, specs = self.traced()
        return replay(views, specs, self.sc.duration_s)

    def traced(self) -> tuple[list[Any], dict[str, dict[str, Any]]]:
        """The traced attempts as ``ledger.replay`` reads them, and the task specs."""
        if self.attempt_log is None:
            raise RuntimeError("set sim.attempt_log = [] before run() to trace attempts")
        specs: dict[str, dict[str, Any]] = {}
        views = []
        for at in self.attempt_log:
            task = at.task
            tt = self.sc.workload.types[task.tt]
            specs[task.id] = {
                "id": task.id,
                "consistency": {"level": tt.level, "min": tt.min, "max": tt.max},
                "retry": {"max_attempts": tt.max_attempts},
            }
            views.append(
                SimpleNamespace(
                    task_id=task.id,
                    node_id=self.node_ids[at.node],
                    epoch=at.epoch,
                    level=at.level,
                    local=at.local,
                    t_place=at.t_place,
                    t_recv=at.t_recv,
                    start=at.start,
                    start_rep=at.start_rep,
                    stop=at.stop,
                    report=at.report,
                    outcome=at.outcome,
                    cancel_at=at.cancel_at,
                )
            )
        return views, specs

    # ------------------------------------------------------------ injection
    def inject(
        self,
        *,
        arrivals: list[tuple[float, int, int, float, float, float, float]] | None = None,
        flows: list[tuple[float, int, int]] | None = None,
        uplink_down: dict[str, list[tuple[float, float]]] | None = None,
        crashes: dict[str, list[tuple[float, float]]] | None = None,
    ) -> None:
        """Replace the drawn workload with explicit arrivals ``(t, device, type,
        MI, input bits, output bits, failure draw)`` and workflow starts ``(t,
        workflow index, device)``, and add outages of one node's own uplink or of
        the node itself (a timeline from a testbed scenario). Call before ``run``."""
        if arrivals is not None:
            arrivals = sorted(arrivals)
            cols = list(zip(*arrivals, strict=True)) if arrivals else [()] * 7
            self.arr_t = np.array(cols[0], dtype=np.float64)
            self.arr_dev = np.array(cols[1], dtype=np.int64)
            self.arr_type = np.array(cols[2], dtype=np.int64)
            self.arr_mi, self.arr_in, self.arr_out, self.arr_fail = (
                np.array(c, dtype=np.float64) for c in cols[3:]
            )
        if flows is not None:
            self.flow_starts = sorted(flows)
        index = {nid: g for g, nid in enumerate(self.node_ids)}
        for base, table in ((self.L_UP, uplink_down or {}), (self.L_NODE, crashes or {})):
            for node_id, intervals in table.items():
                link = base + index[node_id]
                self.tl.set(link, self.tl.intervals(link) + list(intervals))
        self._mark_fallible()

    # ------------------------------------------------------------------ run
    def run(self) -> Result:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        loop = self.loop
        dt = self.ctl.placement_interval_s
        if dt > 0:
            loop.at(0.0, self._tick, 0)
        else:
            for i in range(len(self.arr_t)):
                loop.at(float(self.arr_t[i]), self._arrival_event, i)
        for item in self.flow_starts:
            loop.at(item[0], self._flow_start, item)
        loop.at(0.0, self._telemetry)
        loop.run(self.sc.duration_s)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        return self._result(wall, cpu)

    def _result(self, wall: float, cpu: float) -> Result:
        T = self.sc.duration_s
        lat = np.array(self.lat)
        done = np.array(self.done_at)
        dl = np.array(self.deadline)
        ok = done <= T + 1e-9
        succeeded = int(ok.sum())
        late = int((lat[ok] > dl[ok]).sum())
        in_flight = self.open_tasks + int((~ok).sum())
        misses = late + self.failed + self.lost
        decided = self.generated - in_flight
        ok_lat = lat[ok]
        energy_nodes = 0.0
        for g, n in enumerate(self.nodes):
            cls = n[4]
            energy_nodes += cls.idle_w * T + (cls.max_w - cls.idle_w) * self.busy[g] / cls.cpus
        # devices that do not compute still idle on power
        plain = self.D - sum(1 for g in self.dev_node if g >= 0)
        energy_nodes += plain * self.sc.topology.device.idle_w * T
        events = self.loop.events + self.generated
        metrics: dict[str, float] = {
            "generated": self.generated,
            "succeeded": succeeded,
            "failed": self.failed,
            "lost": self.lost,
            "in_flight": in_flight,
            "deadline_miss_rate": misses / decided if decided else 0.0,
            "late": late,
            "latency_mean_s": float(ok_lat.mean()) if succeeded else math.nan,
            "latency_p50_s": float(np.percentile(ok_lat, 50)) if succeeded else math.nan,
            "latency_p95_s": float(np.percentile(ok_lat, 95)) if succeeded else math.nan,
            "wan_mb": self.wan_bytes / 1e6,
            "duplicates": self.duplicates,
            "replaced": self.replaced,
            "fenced": self.fenced,
            "lease_refused": self.refused,
            "cancelled": self.cancelled,
            "unplaceable": self.unplaceable,
            "local_runs": self.local_runs,
            "level_changes": self.level_changes,
            "energy_kj": (energy_nodes + self.link_j) / 1e3,
            "energy_links_kj": self.link_j / 1e3,
            "placed_device": self.placed_tier[Tier.DEVICE],
            "placed_edge": self.placed_tier[Tier.EDGE],
            "placed_regional": self.placed_tier[Tier.REGIONAL],
            "placed_cloud": self.placed_tier[Tier.CLOUD],
            "workflows_done": len(self.flows_done),
            "workflow_mean_s": float(np.mean(self.flows_done)) if self.flows_done else math.nan,
            "outage_intervals": self.tl.down_count(),
            "events": events,
            "wall_s": wall,
            "cpu_s": cpu,
            "events_per_s": events / wall if wall > 0 else math.nan,
            "shapes_prepared": self.cache.prepared,
        }
        return Result(
            scenario=self.sc.name,
            policy=self.policy.name,
            seed=self.seed,
            metrics=metrics,
            latencies=ok_lat.tolist(),
        )


def simulate(
    scenario: SimScenario,
    policy: Policy,
    *,
    seed: int | None = None,
    loop: str = "heap",
    placer: str = "cached",
    progress: Callable[[float, float], None] | None = None,
) -> Result:
    """Build and run one simulation."""
    return Simulation(
        scenario, policy, seed=seed, loop=loop, placer=placer, progress=progress
    ).run()
