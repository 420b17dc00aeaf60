"""What a run counts, and the flat metrics row it reports.

``Counters`` is written by every facade (one object shared by the run); ``measure``
turns it, the network's byte and energy counters and the node columns into the
``Result`` row: outcomes, deadline-miss rate, latency, WAN bytes, duplicates and
*harm* (re-executions of non-idempotent tasks: a duplicate that is not just wasted
work but a side effect done twice), energy (LEAF), placements per tier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from shared.vocab import Tier

if TYPE_CHECKING:
    from simulations.sim.network import Network
    from simulations.sim.scenario import SimScenario
    from simulations.sim.topology import Topology

__all__ = ["Counters", "measure"]


@dataclass(slots=True)
class Counters:
    generated: int = 0
    #: each open task's absolute deadline, by task id: one still open when the run
    #: ends is in flight, and a miss already if its deadline has passed
    open_due: dict[str, float] = field(default_factory=dict)
    failed: int = 0
    lost: int = 0
    unplaceable: int = 0
    fenced: int = 0
    refused: int = 0
    duplicates: int = 0
    harm: int = 0
    replaced: int = 0
    retried: int = 0
    local_runs: int = 0
    cancelled: int = 0
    level_changes: int = 0
    flows_failed: int = 0
    dependents_cancelled: int = 0
    placed_tier: dict[Tier, int] = field(default_factory=lambda: dict.fromkeys(Tier, 0))
    lat: list[float] = field(default_factory=list)  # latency of succeeded tasks (s)
    done_at: list[float] = field(default_factory=list)
    deadline: list[float] = field(default_factory=list)
    flows_done: list[float] = field(default_factory=list)


def measure(
    c: Counters,
    sc: SimScenario,
    topo: Topology,
    net: Network,
    *,
    events: int,
    wall: float,
    cpu: float,
) -> tuple[dict[str, float], list[float]]:
    """The flat metrics row and the succeeded tasks' latencies."""
    T = sc.duration_s
    lat = np.array(c.lat)
    done = np.array(c.done_at)
    dl = np.array(c.deadline)
    ok = done <= T + 1e-9
    succeeded = int(ok.sum())
    late = int((lat[ok] > dl[ok]).sum())
    in_flight = len(c.open_due) + int((~ok).sum())
    # A task unfinished when the run ends whose deadline had passed has missed it,
    # whatever comes after: counted as a miss, not left out as undecided (which
    # flattered a mode that leaves work waiting through an outage at the end).
    expired = sum(1 for due in c.open_due.values() if due <= T + 1e-9)
    expired += int((done[~ok] - lat[~ok] + dl[~ok] <= T + 1e-9).sum())
    misses = late + c.failed + c.lost + expired
    decided = c.generated - in_flight + expired
    ok_lat = lat[ok]
    energy_nodes = 0.0
    for g, n in enumerate(topo.nodes):
        cls = n.cls
        energy_nodes += cls.idle_w * T + (cls.max_w - cls.idle_w) * topo.busy[g] / cls.cpus
    # devices that do not compute still idle on power
    plain = topo.devices - topo.computing_devices()
    energy_nodes += plain * sc.topology.device.idle_w * T
    placed = c.placed_tier
    metrics: dict[str, float] = {
        "generated": c.generated,
        "succeeded": succeeded,
        "failed": c.failed,
        "lost": c.lost,
        "in_flight": in_flight,
        "expired_in_flight": expired,
        "deadline_miss_rate": misses / decided if decided else 0.0,
        "late": late,
        "latency_mean_s": float(ok_lat.mean()) if succeeded else math.nan,
        "latency_p50_s": float(np.percentile(ok_lat, 50)) if succeeded else math.nan,
        "latency_p95_s": float(np.percentile(ok_lat, 95)) if succeeded else math.nan,
        "wan_mb": net.wan_bytes / 1e6,
        "duplicates": c.duplicates,
        "harm": c.harm,
        "replaced": c.replaced,
        "retried": c.retried,
        "fenced": c.fenced,
        "lease_refused": c.refused,
        "cancelled": c.cancelled,
        "unplaceable": c.unplaceable,
        "local_runs": c.local_runs,
        "level_changes": c.level_changes,
        "energy_kj": (energy_nodes + net.link_j) / 1e3,
        "energy_links_kj": net.link_j / 1e3,
        "placed_device": placed[Tier.DEVICE],
        "placed_edge": placed[Tier.EDGE],
        "placed_regional": placed[Tier.REGIONAL],
        "placed_cloud": placed[Tier.CLOUD],
        "workflows_done": len(c.flows_done),
        "workflows_failed": c.flows_failed,
        "dependents_cancelled": c.dependents_cancelled,
        "workflow_mean_s": float(np.mean(c.flows_done)) if c.flows_done else math.nan,
        "outage_intervals": net.tl.down_count(below=net.session),
        "events": events,
        "wall_s": wall,
        "cpu_s": cpu,
        "events_per_s": events / wall if wall > 0 else math.nan,
    }
    return metrics, ok_lat.tolist()
