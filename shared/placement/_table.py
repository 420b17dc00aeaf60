"""What placement knows about the nodes: one ``NodeView`` per node, and the columnar
``NodeTable`` the pipeline scores.

The table is built once (``from_views``) and then kept: the controller or the
simulator moves free resources and running counts in place as tasks are placed
(``allocate``) and finish (``release``), and refreshes telemetry columns with
``update``. Scoring every feasible node at once with numpy is what makes one
decision cost microseconds instead of a Python loop over thousands of nodes.

Rows are kept sorted by node id, so the same set of views gives the same table
whatever order they arrived in; decisions are then reproducible from the views
alone. Ties between equal nodes are *not* broken by row order but by a hash of the
node id (``node_hash``), so they spread across equal nodes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from shared.learning import PRIOR_ERROR, TIER_POWER_W, TIER_SPEED
from shared.vocab import LinkState, Tier

__all__ = ["LINK_CODES", "TIERS", "NodeTable", "NodeView", "node_hash"]

#: Tiers in column order: ``table.tier`` holds ``Tier.rank`` (device 0 … cloud 3).
TIERS: tuple[Tier, ...] = tuple(sorted(Tier, key=lambda t: t.rank))
#: ``table.link`` holds these codes, in order of severity.
LINK_CODES: dict[LinkState, int] = {state: state.severity for state in LinkState}
_LINK_BY_CODE = {code: state for state, code in LINK_CODES.items()}

# ``NodeTable.size_mask`` keeps the masks of this many needs (oldest out first).
_SIZES = 256

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]


def node_hash(node_id: str) -> int:
    """A stable 32-bit hash of a node id (blake2b), used to spread ties."""
    return int.from_bytes(hashlib.blake2b(node_id.encode(), digest_size=4).digest(), "big")


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeView:
    """One node as the scheduler sees it: registry facts plus the latest telemetry.

    Units: CPUs in cores, memory and disk in MB, ``load`` a utilisation in [0, 1],
    ``rtt_ms`` the controller-measured round trip (the latency-bound filter compares
    against it), ``bandwidth_mbps`` the measured uplink, ``partition_rate_per_h`` the
    link monitor's partitions per hour, ``battery_pct`` ``None`` on mains power.
    ``cpu_free``/``memory_free_mb``/``disk_free_mb`` default to the full capacity;
    disk defaults to unlimited (a node that reports no disk is not disk-checked).
    ``data_sources`` names the data sets the node holds (a task whose
    ``data_source`` is the node's id or one of these needs no transfer).

    What the completion-time prediction reads (all optional, with safe defaults):
    ``speed`` the per-core speed relative to a server core (default: the tier's
    prior, ``shared.learning.TIER_SPEED``; pass the learned one), ``backlog_s`` the
    placed and unfinished work on the node in reference-core seconds (default 0),
    ``power_w`` the watts one busy core adds (default: ``TIER_POWER_W`` of the
    tier), ``wan`` whether data to and from the node crosses the WAN (default: cloud
    tier only), ``error`` the node's learned prediction error,
    ``|log(actual / predicted)|`` (default ``PRIOR_ERROR``), ``slots`` the attempts
    the node's agent runs at once (its ``executor.max_concurrent``, advertised in its
    hello; 0, the default: not advertised, as many as the cpus allow),
    ``transfer_j_per_mb`` the joules one MB of a task's input or output costs on
    every link of the path between the submitter and the node (LEAF's energy per
    bit x 8e6; 0, the default: unknown, and the cost then prices execution alone).
    """

    node_id: str
    tier: Tier
    labels: Mapping[str, str] = field(default_factory=dict)
    cpus: float = 1.0
    memory_mb: float = 1024.0
    disk_mb: float = math.inf
    cpu_free: float | None = None
    memory_free_mb: float | None = None
    disk_free_mb: float | None = None
    running: int = 0
    load: float = 0.0
    success_ewma: float = 1.0
    rtt_ms: float = 0.0
    bandwidth_mbps: float = 100.0
    link_state: LinkState = LinkState.HEALTHY
    draining: bool = False
    battery_pct: float | None = None
    partition_rate_per_h: float = 0.0
    data_sources: frozenset[str] = frozenset()
    speed: float | None = None
    backlog_s: float = 0.0
    power_w: float | None = None
    wan: bool | None = None
    error: float | None = None
    slots: int = 0
    transfer_j_per_mb: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "tier", Tier(self.tier))
        object.__setattr__(self, "link_state", LinkState(self.link_state))
        object.__setattr__(self, "labels", dict(self.labels))
        object.__setattr__(self, "data_sources", frozenset(self.data_sources))
        if self.cpu_free is None:
            object.__setattr__(self, "cpu_free", float(self.cpus))
        if self.memory_free_mb is None:
            object.__setattr__(self, "memory_free_mb", float(self.memory_mb))
        if self.disk_free_mb is None:
            object.__setattr__(self, "disk_free_mb", float(self.disk_mb))
        if self.speed is None:
            object.__setattr__(self, "speed", TIER_SPEED[self.tier])
        if self.power_w is None:
            object.__setattr__(self, "power_w", TIER_POWER_W[self.tier])
        if self.wan is None:
            object.__setattr__(self, "wan", self.tier is Tier.CLOUD)
        if self.error is None:
            object.__setattr__(self, "error", PRIOR_ERROR)


# Telemetry columns ``update`` may set: NodeView field name -> table column.
_UPDATABLE = {
    "cpu_free": "cpu_free",
    "memory_free_mb": "memory_free",
    "disk_free_mb": "disk_free",
    "running": "running",
    "load": "load",
    "success_ewma": "success",
    "rtt_ms": "rtt_ms",
    "bandwidth_mbps": "bandwidth",
    "link_state": "link",
    "draining": "draining",
    "battery_pct": "battery",
    "partition_rate_per_h": "partition_rate",
    "speed": "speed",
    "backlog_s": "backlog",
    "power_w": "power",
    "wan": "wan",
    "error": "error",
    "transfer_j_per_mb": "transfer_j",
}


class NodeTable:
    """Columnar numpy form of a set of ``NodeView`` s (one row per node, sorted by id).

    Columns (all length ``n``): ``tier`` (int8 tier rank), ``cpus``, ``memory``,
    ``disk``, ``cpu_free``, ``memory_free``, ``disk_free``, ``running`` (float, for
    arithmetic), ``load``, ``success``, ``rtt_ms``, ``bandwidth``, ``link`` (int8,
    ``LINK_CODES``), ``draining`` (bool), ``battery`` (NaN on mains),
    ``partition_rate``, ``speed``, ``backlog``, ``power``, ``wan`` (bool),
    ``error``, ``slots`` (``inf`` where the view's is 0: no limit but the cpus),
    ``transfer_j``, ``hash`` (uint32 ``node_hash``). Label and data-source lookups are
    answered as cached boolean masks.
    """

    def __init__(self, views: Iterable[NodeView]) -> None:
        rows = sorted(views, key=lambda v: v.node_id)
        ids = [v.node_id for v in rows]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate node ids in placement table")
        self.ids: list[str] = ids
        self.index: dict[str, int] = {nid: i for i, nid in enumerate(ids)}
        self._labels: list[dict[str, str]] = [dict(v.labels) for v in rows]
        self._sources: list[frozenset[str]] = [v.data_sources for v in rows]

        def col(values: Iterable[float]) -> FloatArray:
            return np.fromiter(values, dtype=np.float64, count=len(rows))

        self.tier = np.fromiter((v.tier.rank for v in rows), dtype=np.int8, count=len(rows))
        self.cpus = col(v.cpus for v in rows)
        self.memory = col(v.memory_mb for v in rows)
        self.disk = col(v.disk_mb for v in rows)
        self.cpu_free = col(v.cpu_free for v in rows)  # type: ignore[misc]
        self.memory_free = col(v.memory_free_mb for v in rows)  # type: ignore[misc]
        self.disk_free = col(v.disk_free_mb for v in rows)  # type: ignore[misc]
        self.running = col(v.running for v in rows)
        self.load = col(v.load for v in rows)
        self.success = col(v.success_ewma for v in rows)
        self.rtt_ms = col(v.rtt_ms for v in rows)
        self.bandwidth = col(v.bandwidth_mbps for v in rows)
        self.link = np.fromiter((LINK_CODES[v.link_state] for v in rows), np.int8, len(rows))
        self.draining = np.fromiter((v.draining for v in rows), dtype=np.bool_, count=len(rows))
        self.battery = col(math.nan if v.battery_pct is None else v.battery_pct for v in rows)
        self.partition_rate = col(v.partition_rate_per_h for v in rows)
        self.speed = col(v.speed for v in rows)  # type: ignore[misc]
        self.backlog = col(v.backlog_s for v in rows)
        self.power = col(v.power_w for v in rows)  # type: ignore[misc]
        self.wan = np.fromiter((bool(v.wan) for v in rows), dtype=np.bool_, count=len(rows))
        self.error = col(v.error for v in rows)  # type: ignore[misc]
        self.slots = col(v.slots if v.slots > 0 else math.inf for v in rows)
        self.transfer_j = col(v.transfer_j_per_mb for v in rows)
        self.hash = np.fromiter((node_hash(i) for i in ids), dtype=np.uint32, count=len(rows))
        self._label_masks: dict[tuple[str, str], BoolArray] = {}
        self._source_masks: dict[str, BoolArray] = {}
        self._tier_masks: dict[frozenset[Tier], BoolArray] = {}
        self._size_masks: dict[tuple[float, float, float], BoolArray] = {}

    @classmethod
    def from_views(cls, views: Iterable[NodeView]) -> NodeTable:
        return cls(views)

    def __len__(self) -> int:
        return len(self.ids)

    # -- lookups ---------------------------------------------------------------
    def label_mask(self, key: str, value: str) -> BoolArray:
        """Nodes whose label ``key`` equals ``value`` (cached; labels change only by upsert)."""
        mask = self._label_masks.get((key, value))
        if mask is None:
            mask = np.fromiter(
                (lab.get(key) == value for lab in self._labels), dtype=np.bool_, count=len(self)
            )
            self._label_masks[(key, value)] = mask
        return mask

    def tier_mask(self, tiers: frozenset[Tier]) -> BoolArray:
        """Nodes whose tier is in ``tiers`` (cached; a node's tier changes only by upsert)."""
        mask = self._tier_masks.get(tiers)
        if mask is None:
            mask = np.array([t in tiers for t in TIERS], dtype=np.bool_)[self.tier]
            self._tier_masks[tiers] = mask
        return mask

    def size_mask(self, cpu: float, memory_mb: float, disk_mb: float) -> BoolArray:
        """Nodes whose capacity is at least this in every dimension (cached, for the
        last ``_SIZES`` needs asked; capacity changes only by upsert)."""
        key = (cpu, memory_mb, disk_mb)
        mask = self._size_masks.get(key)
        if mask is None:
            mask = (self.cpus >= cpu) & (self.memory >= memory_mb) & (self.disk >= disk_mb)
            if len(self._size_masks) >= _SIZES:
                del self._size_masks[next(iter(self._size_masks))]
            self._size_masks[key] = mask
        return mask

    def source_mask(self, source: str) -> BoolArray:
        """Nodes that *are* the data source (by node id) or hold it (``data_sources``)."""
        mask = self._source_masks.get(source)
        if mask is None:
            mask = np.fromiter(
                (
                    nid == source or source in src
                    for nid, src in zip(self.ids, self._sources, strict=True)
                ),
                dtype=np.bool_,
                count=len(self),
            )
            self._source_masks[source] = mask
        return mask

    def labels_of(self, i: int) -> Mapping[str, str]:
        return self._labels[i]

    def sources_of(self, i: int) -> frozenset[str]:
        return self._sources[i]

    def view(self, node_id: str) -> NodeView:
        """The row as a ``NodeView`` again (free resources and telemetry as they are now)."""
        i = self.index[node_id]
        battery = float(self.battery[i])
        return NodeView(
            node_id=node_id,
            tier=TIERS[int(self.tier[i])],
            labels=self._labels[i],
            cpus=float(self.cpus[i]),
            memory_mb=float(self.memory[i]),
            disk_mb=float(self.disk[i]),
            cpu_free=float(self.cpu_free[i]),
            memory_free_mb=float(self.memory_free[i]),
            disk_free_mb=float(self.disk_free[i]),
            running=int(self.running[i]),
            load=float(self.load[i]),
            success_ewma=float(self.success[i]),
            rtt_ms=float(self.rtt_ms[i]),
            bandwidth_mbps=float(self.bandwidth[i]),
            link_state=_LINK_BY_CODE[int(self.link[i])],
            draining=bool(self.draining[i]),
            battery_pct=None if math.isnan(battery) else battery,
            partition_rate_per_h=float(self.partition_rate[i]),
            data_sources=self._sources[i],
            speed=float(self.speed[i]),
            backlog_s=float(self.backlog[i]),
            power_w=float(self.power[i]),
            wan=bool(self.wan[i]),
            error=float(self.error[i]),
            slots=int(self.slots[i]) if math.isfinite(self.slots[i]) else 0,
            transfer_j_per_mb=float(self.transfer_j[i]),
        )

    def views(self) -> list[NodeView]:
        return [self.view(nid) for nid in self.ids]

    # -- in-place updates ------------------------------------------------------
    def allocate(
        self,
        node: int | str,
        cpu: float,
        memory_mb: float,
        disk_mb: float = 0.0,
        *,
        work_s: float = 0.0,
    ) -> tuple[float, float, float, float]:
        """A task was placed on ``node``: take its resources, count it as running,
        add its work (reference-core seconds) to the node's backlog. Returns the
        row's free cpu, free memory, running count and backlog after it, as Python
        floats (the values ``item`` reads next): a caller keeping per-row state
        needs not read them back.

        Runs once per placement: each column is read as a Python float (``item``)
        and written back, the same double arithmetic as ``column[i] -= x`` at less
        than half its cost; a zero disk or work leaves its column untouched
        (``x - 0.0`` is ``x``; so is ``x + 0.0`` but for ``x`` = -0.0, which compares
        and sums as 0.0)."""
        i = self.index[node] if isinstance(node, str) else node
        cpu_free = self.cpu_free[i] = self.cpu_free.item(i) - cpu
        memory_free = self.memory_free[i] = self.memory_free.item(i) - memory_mb
        if disk_mb:
            self.disk_free[i] = self.disk_free.item(i) - disk_mb
        running = self.running[i] = self.running.item(i) + 1.0
        backlog = self.backlog.item(i)
        if work_s:
            backlog = self.backlog[i] = backlog + work_s
        return cpu_free, memory_free, running, backlog

    def release(
        self,
        node: int | str,
        cpu: float,
        memory_mb: float,
        disk_mb: float = 0.0,
        *,
        work_s: float = 0.0,
    ) -> None:
        """A task on ``node`` ended: give its resources back (never above capacity)
        and take its work off the backlog (never below 0)."""
        i = self.index[node] if isinstance(node, str) else node
        self.cpu_free[i] = min(self.cpu_free[i] + cpu, self.cpus[i])
        self.memory_free[i] = min(self.memory_free[i] + memory_mb, self.memory[i])
        self.disk_free[i] = min(self.disk_free[i] + disk_mb, self.disk[i])
        self.running[i] = max(self.running[i] - 1.0, 0.0)
        self.backlog[i] = max(self.backlog[i] - work_s, 0.0)

    def update(self, node_id: str, **values: object) -> None:
        """Refresh telemetry columns of one node, by ``NodeView`` field name
        (``load=0.4, link_state="degraded", battery_pct=None`` …). Tier, labels,
        capacity and data sources change only through ``upsert``."""
        i = self.index[node_id]
        for name, value in values.items():
            attr = _UPDATABLE.get(name)
            if attr is None:
                raise ValueError(f"placement table cannot update {name!r} in place; use upsert")
            column = getattr(self, attr)
            if name == "link_state":
                column[i] = LINK_CODES[LinkState(str(value))]
            elif name == "battery_pct":
                column[i] = math.nan if value is None else float(value)  # type: ignore[arg-type]
            else:
                column[i] = value

    def upsert(self, view: NodeView) -> NodeTable:
        """A new or re-registered node: returns the rebuilt table (rare, O(n))."""
        views = {v.node_id: v for v in self.views()}
        views[view.node_id] = view
        return NodeTable(views.values())

    def remove(self, node_id: str) -> NodeTable:
        """Drop a node for good: returns the rebuilt table (rare, O(n))."""
        return NodeTable(v for v in self.views() if v.node_id != node_id)
