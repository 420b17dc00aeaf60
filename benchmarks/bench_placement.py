"""Placement throughput and memory: 10,000 tasks of 1,000 distinct shapes onto 5,000
nodes in the ``adaptive`` mode (predicted completion time), each task followed by
the allocation of its node (goals: >= 5,000 placements/s, peak memory growth
<= 100 MB, and faster than a plain loop).

- ``place_batch`` (what the controller's scheduler calls): the measured figure;
  static halves are cached per shape, bounded by ``DEFAULT_CACHE_BYTES``.
- the baseline, written here: the straightforward loop a competent engineer would
  write, over a list of node dicts, applying the same rule (filters, predicted
  finish, cost, deadline margin, tie key) to one node at a time and allocating in
  the dicts. It runs the first ``BASELINE_TASKS`` tasks; the two must choose the
  same nodes there (scores equal to 1e-9 decide ties, so a float rounding
  difference may flip a genuine tie: the agreement is reported, and must be >= 99 %).

Node attributes are random but seeded. Best of ``RUNS`` for the batch path.

Environment (a smaller run, e.g. a smoke test; the defaults are the figures above):
``BENCH_PLACEMENT_NODES`` (5,000), ``BENCH_PLACEMENT_TASKS`` (10,000),
``BENCH_PLACEMENT_SHAPES`` (1,000), ``BENCH_PLACEMENT_BASELINE_TASKS`` (300) and
``BENCH_PLACEMENT_RUNS`` (3).
"""

from __future__ import annotations

import math
import os
import random
import resource
import time
from typing import Any

from _report import emit

from shared.learning import PRIOR_ERROR, TIER_POWER_W, TIER_SPEED
from shared.placement import (
    COST_WEIGHT,
    DEFAULT_CACHE_BYTES,
    LINK_CODES,
    SAFETY,
    NodeTable,
    NodeView,
    TaskDemand,
    node_hash,
    place_batch,
    tie_seed,
)
from shared.vocab import Level, LinkState, PlacementMode, Tier

NODES = int(os.environ.get("BENCH_PLACEMENT_NODES", "5000"))
TASKS = int(os.environ.get("BENCH_PLACEMENT_TASKS", "10000"))
SHAPES = int(os.environ.get("BENCH_PLACEMENT_SHAPES", "1000"))
BASELINE_TASKS = int(os.environ.get("BENCH_PLACEMENT_BASELINE_TASKS", "300"))
RUNS = int(os.environ.get("BENCH_PLACEMENT_RUNS", "3"))
SEED = 20_26
MODE = PlacementMode.ADAPTIVE


def nodes(rng: random.Random) -> list[NodeView]:
    tiers = [Tier.DEVICE, Tier.EDGE, Tier.EDGE, Tier.REGIONAL, Tier.CLOUD]
    links = [LinkState.HEALTHY] * 8 + [LinkState.DEGRADED, LinkState.CRITICAL]
    out = []
    for i in range(NODES):
        tier = rng.choice(tiers)
        cpus = {Tier.DEVICE: 2, Tier.EDGE: 4, Tier.REGIONAL: 16, Tier.CLOUD: 64}[tier]
        out.append(
            NodeView(
                node_id=f"n{i:05d}",
                tier=tier,
                labels={"zone": rng.choice("abcd"), "gpu": rng.choice(["yes", "no", "no"])},
                cpus=cpus,
                memory_mb=cpus * 2048,
                load=rng.random(),
                success_ewma=rng.uniform(0.8, 1.0),
                rtt_ms=rng.uniform(1, 250),
                bandwidth_mbps=rng.choice([10.0, 100.0, 1000.0]),
                link_state=rng.choice(links),
                battery_pct=rng.choice([None, None, None, rng.uniform(5, 100)]),
                partition_rate_per_h=rng.choice([0.0, 0.0, 0.5, 3.0]),
                speed=TIER_SPEED[tier] * rng.uniform(0.5, 2.0),
            )
        )
    return out


def shapes(rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for _ in range(SHAPES):
        shape: dict[str, Any] = {
            "cpu": rng.choice([0.25, 0.5, 1.0, 2.0]),
            "memory_mb": rng.choice([64, 256, 512, 1024]),
            "work_s": round(rng.uniform(0.05, 20.0), 3),
            "deadline_s": rng.choice([None, round(rng.uniform(0.5, 60.0), 2)]),
            "data_size_mb": rng.choice([0.0, 0.0, 1.0, 50.0]),
            "level": rng.choice(list(Level)),
        }
        if rng.random() < 0.2:
            shape["labels"] = (("zone", rng.choice("abcd")),)
        if rng.random() < 0.2:
            shape["tiers"] = frozenset(rng.sample(list(Tier), 2))
        if rng.random() < 0.1:
            shape["max_latency_ms"] = 100.0
        out.append(shape)
    return out


def demands(rng: random.Random) -> list[TaskDemand]:
    pool = shapes(rng)
    return [TaskDemand(task_id=f"t{i:05d}", **rng.choice(pool)) for i in range(TASKS)]


# -- the baseline: a plain loop over node dicts ------------------------------------


def node_dicts(views: list[NodeView]) -> list[dict[str, Any]]:
    return [
        {
            "id": v.node_id,
            "tier": v.tier,
            "labels": dict(v.labels),
            "cpus": v.cpus,
            "memory": v.memory_mb,
            "disk": v.disk_mb,
            "cpu_free": v.cpu_free,
            "memory_free": v.memory_free_mb,
            "disk_free": v.disk_free_mb,
            "load": v.load,
            "success": v.success_ewma,
            "rtt_s": v.rtt_ms / 1000.0,
            "bandwidth": v.bandwidth_mbps,
            "link": LINK_CODES[v.link_state],
            "draining": v.draining,
            "battery": v.battery_pct,
            "partition_rate": v.partition_rate_per_h,
            "speed": v.speed,
            "backlog": v.backlog_s,
            "power": TIER_POWER_W[v.tier] if v.power_w is None else v.power_w,
            "wan": v.wan,
            "error": PRIOR_ERROR if v.error is None else v.error,
            "hash": node_hash(v.node_id),
            "running": v.running,
            "slots": v.slots or math.inf,
            "transfer_j": v.transfer_j_per_mb,
        }
        for v in sorted(views, key=lambda v: v.node_id)
    ]


def plain_place(nodes: list[dict[str, Any]], d: TaskDemand, tie: int) -> dict[str, Any] | None:
    strong = d.level is Level.STRONG
    cands = []
    for n in nodes:
        if n["draining"] or n["tier"] not in d.tiers or n["link"] >= 3:
            continue
        if strong and n["link"] >= 2:  # (5,000 random nodes: some link is never critical)
            continue
        if d.max_latency_ms is not None and n["rtt_s"] * 1000.0 > d.max_latency_ms:
            continue
        if any(n["labels"].get(k) != v for k, v in d.labels):
            continue
        if n["cpus"] < d.cpu or n["memory"] < d.memory_mb or n["disk"] < d.disk_mb:
            continue
        rtt = n["rtt_s"]
        transfer = d.data_size_mb * 8.0 / n["bandwidth"] if d.data_size_mb > 0 else 0.0
        execute = d.work / n["speed"]
        back = rtt / 2 + (d.output_mb * 8.0 / n["bandwidth"] if d.output_mb > 0 else 0.0)
        fixed = (rtt / 2 + (rtt if strong else 0.0)) + transfer + execute + back
        # a running task holds at least a whole core: the backlog is ahead unless a core
        # (of the unreserved ones and of those no running task holds) and a slot are free
        need = max(d.cpu, 1.0)
        busy = (
            need > n["cpu_free"] or n["running"] + need > n["cpus"] or n["running"] + 1 > n["slots"]
        )
        drains = min(n["cpus"], n["slots"]) * n["speed"]
        queue = n["backlog"] / drains if busy else 0.0
        finish = fixed + queue
        battery = n["battery"]
        drain = 1.0 if battery is None else 2.0 - min(max(battery, 0.0), 100.0) / 100.0
        # a live link's grade adds no risk (its round trips are in the finish)
        survive = math.exp(-n["partition_rate"] * min(fixed, 1e9) / 3600.0)
        util = max(n["load"], (n["cpus"] - n["cpu_free"] + d.cpu) / n["cpus"])
        cands.append(
            {
                "node": n,
                "room": n["cpu_free"] >= d.cpu
                and n["memory_free"] >= d.memory_mb
                and n["disk_free"] >= d.disk_mb,
                "finish": finish,
                "energy": n["power"] * execute * drain
                + (d.data_size_mb + d.output_mb) * n["transfer_j"],
                "wan": d.data_size_mb + d.output_mb if n["wan"] else 0.0,
                "util": min(max(util, 0.0), 1.0),
                "risk": 1.0 - min(max(n["success"], 0.0), 1.0) * survive,
                "widen": math.exp(SAFETY * n["error"]),
            }
        )
    # energy and WAN are shares of the largest among the nodes past the filters
    e_max = max((c["energy"] for c in cands), default=0.0)
    w_max = max((c["wan"] for c in cands), default=0.0)
    cands = [c for c in cands if c["room"]]
    if not cands:
        return None
    best, best_key = None, None
    scored = []
    for c in cands:
        energy = c["energy"] / e_max if e_max > 0 else 0.0
        wan = c["wan"] / w_max if w_max > 0 else 0.0
        c["cost"] = (energy + wan + c["util"] + c["risk"]) / 4.0
        scored.append(c)
    for c in scored:
        if d.deadline_s is not None:
            if c["finish"] * c["widen"] <= d.deadline_s:
                s = 1.0 - c["cost"]
            else:
                s = -c["finish"] / (c["finish"] + max(d.deadline_s, 1.0))
        else:
            s = 1.0 / (1.0 + c["finish"] * (1 + COST_WEIGHT * c["cost"]))
        key = (round(s * 1e9), 0xFFFFFFFF - (c["node"]["hash"] ^ tie))
        if best_key is None or key > best_key:
            best, best_key = c["node"], key
    assert best is not None
    best["cpu_free"] -= d.cpu
    best["memory_free"] -= d.memory_mb
    best["disk_free"] -= d.disk_mb
    best["backlog"] += d.work
    best["running"] += 1
    return best


def main() -> None:
    rng = random.Random(SEED)
    views, work = nodes(rng), demands(rng)

    load = os.getloadavg()[0]
    before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    best = best_cpu = 0.0
    batch = []
    for _ in range(RUNS):
        batch = []  # the previous run's decisions go before the next run starts
        table = NodeTable.from_views(views)
        started, cpu = time.perf_counter(), time.process_time()
        batch = place_batch(table, work, mode=MODE, seed=SEED)
        best = max(best, TASKS / (time.perf_counter() - started))
        best_cpu = max(best_cpu, TASKS / (time.process_time() - cpu))
        del table
    growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_kb) / 1024.0
    placed = sum(1 for d in batch if d.node_id is not None)

    dicts = node_dicts(views)
    started, cpu = time.perf_counter(), time.process_time()
    plain = []
    for d in work[:BASELINE_TASKS]:
        chosen = plain_place(dicts, d, tie_seed(d.task_id, 0, SEED))
        plain.append(None if chosen is None else chosen["id"])
    plain_rate = BASELINE_TASKS / (time.perf_counter() - started)
    plain_cpu = BASELINE_TASKS / (time.process_time() - cpu)
    load = max(load, os.getloadavg()[0])
    agree = sum(
        1 for a, b in zip(plain, batch[:BASELINE_TASKS], strict=False) if a == b.node_id
    ) / len(plain)
    if agree < 0.99:
        raise SystemExit(f"placement and the plain loop disagree on {1 - agree:.1%} of tasks")
    note = (
        f"{TASKS} tasks of {SHAPES} shapes on {NODES} nodes, {placed} placed, best of {RUNS}; "
        f"same node as the plain loop on {agree:.1%} of the first {BASELINE_TASKS}; per CPU "
        f"second (the process's own time) {best_cpu:,.0f}/s against {plain_cpu:,.0f}/s; load "
        f"average {load:.1f} on {os.cpu_count()} CPUs (a shared machine: wall figures are "
        "pessimistic)"
    )
    emit(
        f"placement throughput (place_batch, adaptive, {SHAPES:,} shapes)",
        measured=best,
        unit="placements/s",
        goal=5_000,
        baseline=plain_rate,
        baseline_name="plain loop over node dicts (in the benchmark)",
        note=note,
    )
    emit(
        f"placement memory growth ({SHAPES:,} shapes, {RUNS} runs)",
        measured=growth_mb,
        unit="MB",
        goal=100,
        direction="lower",
        note=f"peak RSS growth; shape cache bounded at {DEFAULT_CACHE_BYTES / 2**20:.0f} MB",
    )


if __name__ == "__main__":
    main()
