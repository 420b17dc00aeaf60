"""Links in virtual time: outage timelines drawn up front, delivery times computed.

Every link (a device's access link, a site's metro link, a region's WAN link, the
cloud LAN) and every node (crashes) has an id and a sorted list of *down
intervals*, drawn once per run from an alternating renewal process (exponential
up times with mean MTBF, down times with mean MTTR; PureEdgeSim and EdgeCloudSim
use the same memoryless model), with correlated regional outages merged in.
Because the timelines are known, when a message sent at ``t`` over a path arrives
is a pure function: wait until every link of the path is up (``next_up``), then
add the path's latency, a per-message jitter and size / bottleneck bandwidth.
A message is held (MQTT QoS 1, persistent session) rather than dropped while a
link is down. Store-and-forward, no contention between flows: documented limits.

The timelines depend only on the scenario and the seed, never on the policy, so
every compared policy sees exactly the same faults.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain

import numpy as np

from edge_agent.transport import _JITTER as RECONNECT_JITTER
from shared.model import RetryPolicy
from shared.protocol import reconnect_wait
from shared.vocab import Tier
from simulations.sim.scenario import Controller, Failures, LinkClass, Links
from simulations.sim.timelines import Timelines, alternating, merge_intervals, poisson_intervals
from simulations.sim.topology import Topology

__all__ = [
    "CONTROL_BITS",
    "Network",
    "Path",
    "Timelines",
    "alternating",
    "merge_intervals",
    "poisson_intervals",
]

#: One control message (placement, lease, report) on the wire: 512 bytes.
CONTROL_BITS = 512 * 8
_CONTROL_BYTES = CONTROL_BITS / 8.0
#: Exponential draws made at once for the jitter (``Network.exp``).
_BLOCK = 1 << 16
_INF = math.inf


@dataclass(slots=True)
class _Links:
    """Per link id: one-way latency, jitter mean (s), bandwidth (bit/s), nJ/bit, WAN?"""

    lat: list[float]
    jit: list[float]
    bw: list[float]
    nj: list[float]
    wan: list[bool]


class Path:
    """A precomputed path: link ids, latency sum, jitter mean, bottleneck, J/bit, WAN?
    ``down`` lists the links of the path that ever go down (the only ones worth
    checking; every link until the outages are drawn); ``control`` those of them that
    are not a node's own (``Network.control_links``, kept once computed).
    ``ctl_tx``/``ctl_j``: a control message's transmission time and energy on it."""

    __slots__ = (
        "bw",
        "control",
        "ctl_j",
        "ctl_tx",
        "down",
        "j_per_bit",
        "jit",
        "lat",
        "links",
        "wan",
    )

    def __init__(self, links: tuple[int, ...], net: _Links) -> None:
        self.links = self.down = links
        self.control: tuple[int, ...] | None = None
        self.lat = sum((net.lat[x] for x in links), 0.0)
        self.jit = sum((net.jit[x] for x in links), 0.0)
        self.bw = min((net.bw[x] for x in links), default=_INF)
        self.j_per_bit = sum((net.nj[x] for x in links), 0.0) * 1e-9
        self.wan = any(net.wan[x] for x in links)
        # what ``deliver`` computes for ``bits=CONTROL_BITS``, computed once (same floats)
        self.ctl_tx = CONTROL_BITS / self.bw
        self.ctl_j = CONTROL_BITS * self.j_per_bit


class Network:
    """The run's links, paths and outage timelines, and delivery over them.

    Link ids: access link of device ``d`` = ``d``; metro link of site ``s`` =
    ``metro + s``; WAN link of region ``r`` = ``wan + r``; the cloud LAN; node
    ``g`` itself (``node + g``: its crashes); node ``g``'s own uplink (``up +
    g``: a testbed partition of one agent). Paths: device → controller
    (``dev_ctrl``), node → controller (``ctrl``) and, per site, the node side
    of the device → node path (``part[site][g]``, after the device's access
    link). Delivery counts the
    bits on the links crossed: ``wan_bytes`` and ``link_j`` (LEAF J/bit).

    **Sessions.** Every agent (device or node) talks to the controller over an
    MQTT session, so a control path is up only while that session is: one virtual
    link per control path (``session + i``) is down from the start of an outage of
    any of its links until the session resumes (``resume``), and the path's
    ``down`` is that virtual link (and the node itself: a crash, after which the
    restarted agent connects at once). Data transfers between a device and a node
    use the links alone."""

    def __init__(
        self,
        topo: Topology,
        links: Links,
        session: Controller,
        rng: np.random.Generator,
        seed: int,
    ) -> None:
        S, R, D, G = topo.sites, topo.regions, topo.devices, topo.count
        self.metro, self.wan, self.lan, self.node = D, D + S, D + S + R, D + S + R + 1
        self.up = self.node + G
        self.session = self.up + G  # virtual links: device sessions, then node sessions
        count = self.session + D + G
        self.seed = seed
        self.devices = D
        self.keepalive_s = session.keepalive_s
        self.cadence_s = session.telemetry_s
        #: the agent's reconnect schedule, as edge_agent/transport.py builds it (its
        #: jitter; the cap lowered so a jittered delay stays under reconnect_max_s)
        self.reconnect = RetryPolicy(
            max_attempts=1,
            backoff_s=session.reconnect_min_s,
            multiplier=2.0,
            backoff_max_s=session.reconnect_max_s / (1 + RECONNECT_JITTER),
            jitter=RECONNECT_JITTER,
        )
        lat, jit, bw, nj, wan = (
            [0.0] * count,
            [0.0] * count,
            [_INF] * count,
            [0.0] * count,
            [False] * count,
        )

        def fill(first: int, n: int, lc: LinkClass, is_wan: bool) -> None:
            base = lc.latency_ms * rng.uniform(1 - lc.spread, 1 + lc.spread, n) / 1000.0
            for i in range(n):
                lat[first + i] = float(base[i])
                jit[first + i] = lc.jitter_ms / 1000.0
                bw[first + i] = lc.bandwidth_mbps * 1e6
                nj[first + i] = lc.nj_per_bit
                wan[first + i] = is_wan

        fill(0, D, links.access, False)
        fill(self.metro, S, links.metro, False)
        fill(self.wan, R, links.wan, True)
        fill(self.lan, 1, links.lan, False)
        self.net = net = _Links(lat, jit, bw, nj, wan)

        def P(*ids: int) -> Path:
            return Path(tuple(ids), net)

        M, W, L = self.metro, self.wan, self.lan
        self.dev_ctrl = [P(d, M + topo.dev_site[d], W + topo.dev_site[d] % R, L) for d in range(D)]
        self.ctrl: list[Path] = []
        for g, n in enumerate(topo.nodes):
            own = (self.node + g, self.up + g)
            s, r = n.site, n.region
            if n.tier is Tier.EDGE:
                self.ctrl.append(P(M + s, W + r, L, *own))
            elif n.tier is Tier.REGIONAL:
                self.ctrl.append(P(W + r, L, *own))
            elif n.tier is Tier.CLOUD:
                self.ctrl.append(P(L, *own))
            else:
                self.ctrl.append(P(n.device, M + s, W + r, L, *own))
        self.part: list[dict[int, Path]] = []
        for s in range(S):
            r = s % R
            parts: dict[int, Path] = {}
            for g in topo.members(s):
                n = topo.nodes[g]
                own = (self.node + g, self.up + g)
                if n.tier is Tier.EDGE:
                    parts[g] = P(*own)
                elif n.tier is Tier.REGIONAL:
                    parts[g] = P(M + s, *own)
                elif n.tier is Tier.CLOUD:
                    parts[g] = P(M + s, W + r, L, *own)
                else:
                    parts[g] = P(n.device, *own)
            self.part.append(parts)
        self.tl = Timelines(count)
        #: per session link, when its agent reconnected (``resume`` after a dropped session)
        self.reconnects: dict[int, list[float]] = {}
        self.fallible: list[bool] = [False] * count
        self.wan_bytes = 0.0
        self.link_j = 0.0
        # standard exponential draws for the jitter, drawn ``_BLOCK`` at a time (the
        # first block at the first use); ``next`` on it is one C call per draw
        exp_rng = np.random.default_rng([seed, 44])
        self.jitter: Iterator[float] = chain.from_iterable(
            iter(lambda: exp_rng.standard_exponential(_BLOCK).tolist(), None)
        )

    def draw_failures(
        self, topo: Topology, links: Links, failures: Failures, horizon: float, seed: int
    ) -> None:
        """Draw every outage timeline up front (the same for every policy)."""
        rng = np.random.default_rng([seed, 22])
        tl = self.tl
        extra: dict[int, list[tuple[float, float]]] = {}
        for r in range(topo.regions):
            for a, b in poisson_intervals(
                rng, failures.region_outage_per_h / 3600.0, failures.region_outage_s, horizon
            ):
                extra.setdefault(self.wan + r, []).append((a, b))
                for s in range(r, topo.sites, topo.regions):
                    extra.setdefault(self.metro + s, []).append((a, b))

        def draw(first: int, count: int, lc: LinkClass) -> None:
            for i in range(count):
                ivs = alternating(rng, lc.mtbf_s, lc.mttr_s, horizon) + extra.get(first + i, [])
                if ivs:
                    tl.set(first + i, ivs)

        draw(0, topo.devices, links.access)
        draw(self.metro, topo.sites, links.metro)
        draw(self.wan, topo.regions, links.wan)
        draw(self.lan, 1, links.lan)
        for g, n in enumerate(topo.nodes):
            ivs = alternating(rng, n.cls.mtbf_s, n.cls.mttr_s, horizon)
            if ivs:
                tl.set(self.node + g, ivs)
        self.mark_fallible()

    def add_outages(self, link: int, intervals: Iterable[tuple[float, float]]) -> None:
        """More down intervals on ``link`` (call ``mark_fallible`` after)."""
        self.tl.set(link, self.tl.intervals(link) + list(intervals))

    def mark_fallible(self) -> None:
        """Keep in each path only the links that ever go down (for ``next_up``), and
        derive the control paths' sessions from their links' outages."""
        tl = self.tl
        for v in range(self.session, len(tl.starts)):
            tl.set(v, ())
        self.fallible = f = [st is not None for st in tl.starts]
        for parts in self.part:
            for path in parts.values():
                path.down = tuple(x for x in path.links if f[x])
                path.control = None
        rng = np.random.default_rng([self.seed, 66])
        self.reconnects = {}
        for v, path in enumerate([*self.dev_ctrl, *self.ctrl], start=self.session):
            crash = tuple(x for x in path.links if f[x] and self.node <= x < self.up)
            cuts = [x for x in path.links if f[x] and not self.node <= x < self.up]
            outages = merge_intervals(iv for x in cuts for iv in tl.intervals(x))
            if outages:
                resumed = [(a, *self.resume(a, b, rng)) for a, b in outages]
                tl.set(v, [(a, back) for a, back, _ in resumed])
                self.reconnects[v] = [back for _, back, new in resumed if new]
                path.down = (v, *crash)
            else:
                path.down = crash
            path.control = None
        self.fallible = [st is not None for st in tl.starts]

    def resume(self, a: float, b: float, rng: np.random.Generator) -> tuple[float, bool]:
        """When an agent's session is back after its path was cut over ``[a, b)``,
        and whether on a new connection (then it announces itself, sends its outbox
        from the last ack and a full digest).

        A cut holds what is sent, it does not drop it. The broker drops a client it
        has not heard from for 1.5 keep-alives (its last message went out up to one
        telemetry period before the cut); a shorter cut leaves the connection held,
        and it resumes at ``b``. The agent's MQTT client (paho) pings one keep-alive
        after the last bytes it received (up to a keep-alive before the cut: it pings
        whenever the broker is quiet that long) and gives up one keep-alive later.
        Then it waits its backoff and probes (``edge_agent/transport.py``): over the
        cut a connection attempt hangs without an answer for a keep-alive, then
        fails, and the next probe waits ``shared.protocol.reconnect_wait`` (the
        doubled backoff less the time the failed probe was out: at once when it hung
        longer). A probe out at ``b`` goes through at ``b``; otherwise the session
        resumes at the next probe after ``b``. A heal before the agent gave up hands
        it the broker's close at ``b``: it reconnects one backoff later."""
        keepalive = self.keepalive_s
        last = a - self.cadence_s * float(rng.random())
        if b - last < 1.5 * keepalive:
            return b, False
        heard = a - keepalive * float(rng.random())
        t = min(b, heard + 2.0 * keepalive)
        failures, probing = 1, 0.0
        while True:
            t += reconnect_wait(self.reconnect, failures, probing, rng)
            if t >= b:
                return t, True
            if t + keepalive > b:
                return b, True
            t += keepalive
            failures, probing = failures + 1, keepalive

    def exp(self) -> float:
        """A standard exponential draw (pre-drawn in blocks: much cheaper per call)."""
        return next(self.jitter)

    def held_arrival(self, path: Path, t: float) -> float:
        """When a control message sent at ``t`` arrives, held while the path is down,
        without jitter and unmetered (tracing only: it draws nothing, so a replay at
        any horizon sees the same times and the run's own draws are untouched)."""
        return (self.tl.next_up(path.down, t) if path.down else t) + path.lat

    def is_up(self, path: Path, t: float) -> bool:
        return not path.down or self.tl.next_up(path.down, t) <= t

    def deliver(self, path: Path, t: float, bits: float = 0.0) -> float:
        """Arrival time of a message of ``bits`` sent at ``t`` (held while a link is
        down); the bits are counted on the path's links (energy, WAN bytes)."""
        t0 = self.tl.next_up(path.down, t) if path.down else t
        if bits:
            self.link_j += bits * path.j_per_bit
            if path.wan:
                self.wan_bytes += bits / 8.0
            t0 += bits / path.bw
        jit = path.jit
        if jit > 0:  # ``self.exp()``, inlined (several draws per task)
            return t0 + path.lat + jit * next(self.jitter)
        return t0 + path.lat

    def control(self, path: Path, t: float) -> float:
        """``deliver(path, t, CONTROL_BITS)``: a control message (placement, lease,
        report), with its transmission time and energy computed once per path."""
        down = path.down
        t0 = (self.tl.next_up(down, t) if down else t) + path.ctl_tx
        self.link_j += path.ctl_j
        if path.wan:
            self.wan_bytes += _CONTROL_BYTES
        jit = path.jit
        if jit > 0:
            return t0 + path.lat + jit * next(self.jitter)
        return t0 + path.lat

    def deliver_data(self, dev: int, part: Path, t: float, bits: float) -> float:
        """``deliver`` over device ``dev``'s access link followed by ``part`` (the
        node side of the path), without building the joined path."""
        net = self.net
        if self.fallible[dev]:
            t = self.tl.next_up((dev, *part.down), t)
        elif part.down:
            t = self.tl.next_up(part.down, t)
        self.link_j += bits * (net.nj[dev] * 1e-9 + part.j_per_bit)
        if part.wan:
            self.wan_bytes += bits / 8.0
        jit = net.jit[dev] + part.jit
        bw = net.bw[dev] if net.bw[dev] < part.bw else part.bw
        t = t + bits / bw + (net.lat[dev] + part.lat)  # in this order (floats)
        if jit > 0:  # ``self.exp()``, inlined
            return t + jit * next(self.jitter)
        return t

    def crash_in(self, g: int, t0: float, t1: float) -> float | None:
        """When node ``g`` crashes within ``[t0, t1)``, if it does (``first_down``
        on the node's own link, spelled out: once per attempt)."""
        st = self.tl.starts[self.node + g]
        if st is None:
            return None
        i = bisect_right(st, t0 - 1e-12)
        return st[i] if i < len(st) and st[i] < t1 else None

    def restarted(self, g: int, t: float) -> float:
        """When node ``g`` is up at or after ``t`` (after a crash, its restart)."""
        return self.tl.next_up((self.node + g,), t)

    def session_link(self, g: int) -> int:
        """The virtual link of node ``g``'s MQTT session (``reconnects`` is keyed by it)."""
        return self.session + self.devices + g

    def control_links(self, path: Path) -> tuple[int, ...]:
        """A node's control path without the node itself (whose outage is a crash,
        not a partition): its session (kept on the path until its ``down`` changes)."""
        links = path.control
        if links is None:
            links = path.control = tuple(x for x in path.down if not self.node <= x < self.up)
        return links
