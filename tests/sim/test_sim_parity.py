"""Parity of the decision cores: one recorded trace of inputs, fed to the controller's
(the real ``cloud.controller.Controller`` on the in-memory bus, no broker) and to the
simulator's (``simulations.sim.controller.Controller`` given the same facts), must
give the same decisions: which tasks are re-placed, at which tick, and the health.

The trace: node n1 holds an eventual, a causal (``max_disconnect_s`` 12), a strong
(lease granted) and an adaptive task (eventual … strong, no lease asked), all
started; n2 holds nothing; then n1 falls silent while n2 answers every ping, and the
clock runs on in 1 s ticks. Compared tick by tick: where each task is, the adaptive
task's level, the system health. Both sides run with the controller's
configuration (the harness's: 1 s pings, suspicion after 3, 10 s leases + 2 s
margin). What the production rules give: the adaptive task, not idempotent, is
placed at strong by cost (a duplicate would harm) and asks no lease, so it leaves n1
with the eventual task once n1 is suspected (tick 3), the causal one after 12 s out
of contact (tick 12), the strong one once its lease and the margin have run out
(tick 13); the system is critical from tick 3 (one node of two out).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from cloud.config import ControllerConfig
from simulations.sim.model import Simulation
from simulations.sim.records import INF, Attempt, Task
from simulations.sim.scenario import parse, parse_policy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "cloud"))
from memory_bus import MemoryHarness

STEP = 1.0
TICKS = 50
#: far away: the controller counts deadlines on the wall clock, which the trace's
#: simulated ticks do not move
DEADLINE_S = 3600.0
#: task id -> (level, max_disconnect_s)
TASKS: dict[str, tuple[str, float]] = {
    "e": ("eventual", 300.0),
    "c": ("causal", 12.0),
    "s": ("strong", 300.0),
    "a": ("adaptive", 20.0),
}


def _consistency(level: str) -> dict[str, str]:
    if level == "adaptive":
        return {"level": "adaptive", "min": "eventual", "max": "strong"}
    return {"level": level}


#: per tick: (node of each task, the adaptive task's level, the system health)
Decisions = list[tuple[tuple[str, ...], str, str]]


def _controller_decisions(h: MemoryHarness) -> Decisions:
    """The real controller, tick by tick."""
    try:
        n1 = h.node("n1", labels={"pool": "x"})
        for tid, (level, max_disc) in TASKS.items():
            h.controller.submit_task(
                {
                    "id": tid,
                    "command": ["true"],
                    "consistency": _consistency(level),
                    "placement": {"labels": {"pool": "x"}},
                    "max_disconnect_s": max_disc,
                    "deadline_s": DEADLINE_S,
                }
            )
            n1.expect("place", lambda e, tid=tid: e.body.task_id == tid)
            if level == "strong":
                n1.request_lease(tid, 1, request_id="i1-1")
                assert h.await_msg(n1, "lease_grant").body.granted
            n1.start(tid, 1)
        h.node("n2", labels={"pool": "x"})
        h.keep_alive("n1", "n2")
        cut = h.clock()
        h.mnode("n1").connected = False
        assert h.clock() == cut
        out: Decisions = []
        for _ in range(TICKS):
            h.tick(STEP)
            h.keep_alive("n2")
            h.pump()
            rows = [h.controller.get_task(tid) for tid in TASKS]
            out.append(
                (
                    tuple(r["node"] for r in rows),
                    rows[-1]["level"],
                    h.controller.registry.system_health(h.clock()).health.value,
                )
            )
        return out
    finally:
        h.close()


def _simulator_decisions(cfg: ControllerConfig) -> Decisions:
    """The same trace fed to the simulator's controller facade, configured as the
    controller is: its monitors hear what the controller heard, its lease book
    granted the same lease, and each tick is one ``decide``."""
    health, consistency = cfg.health, cfg.consistency
    sc = parse(
        {
            "kind": "sim",
            "name": "parity",
            "duration_s": 1000,
            "topology": {
                "sites": 1,
                "device": {"count": 1},
                "edge": {"count": 2},
                "cloud": {"count": 0},
            },
            "workload": {
                "rate_per_device": 0.0,
                "types": [
                    {
                        "name": tid,
                        "level": level,
                        "max_disconnect_s": max_disc,
                        "deadline_s": DEADLINE_S,
                    }
                    for tid, (level, max_disc) in TASKS.items()
                ],
            },
            "controller": {
                "telemetry_s": health.heartbeat_interval_s,
                "suspect_missed": health.suspect_missed,
                "confirm_after_s": health.confirm_after_s,
                "link_window_s": health.window_s,
                "lease_s": consistency.lease_s,
                "lease_margin_s": consistency.lease_margin_s,
                "upgrade_dwell_s": consistency.upgrade_dwell_s,
            },
        }
    )
    sim = Simulation(sc, parse_policy("hybrid_dynamic/declared"))
    ctl = sim.ctl
    n1, n2 = sim.topo.index["edge-0-0"], sim.topo.index["edge-0-1"]
    names = {n1: "n1", n2: "n2"}
    t = 0.0
    # registered, heard, no round trip measured yet (no ping has gone out)
    for g in (n1, n2):
        ctl.monitors[g].heard(t)
    ctl.decide(t, [])
    tasks: list[Task] = []
    where: dict[str, int] = {}
    for k, tid in enumerate(TASKS):
        lo, hi = sim.workload.bounds(k)
        task = Task(tid, 0, 0, k, t, 1.0, 0.0, 0.0, 1.0, lo, hi, level=lo, epoch=1)
        ctl.placed(task, n1, t)  # the level on n1 (a fixed task keeps its own)
        at = Attempt(task, n1, 1, task.level, t, start=t, stop=INF, report=INF)
        ctl.open_on[n1].append(at)
        where[tid] = n1
        tasks.append(task)
        if tid == "s":
            ctl.leases.request(
                task_id=tid,
                node="edge-0-0",
                epoch=1,
                duration_s=ctl.lease_policy.duration_s,
                now=t,
                placed_epoch=1,
                placed_node="edge-0-0",
            )

    def moved(task: Task, now: float) -> None:
        """What the scheduler does with a move here: a new epoch on the only other
        node, n2, at the level for n2's link (n2 does not start it in the trace)."""
        task.epoch += 1
        ctl.placed(task, n2, now)
        ctl.open_on[n2].append(Attempt(task, n2, task.epoch, task.level, now, start=INF, stop=INF))
        where[task.id] = n2

    sim.sched.enqueue = moved  # type: ignore[method-assign]
    cut = t
    out: Decisions = []
    for k in range(1, TICKS + 1):
        # a controller tick decides on what it has heard so far, then pings: n2's
        # pong (and heartbeat) comes back at once, n1 says nothing
        t = cut + k * STEP
        changed: list[Any] = []
        for g in (n1, n2):
            change = ctl.monitors[g].poll(t)
            if change is not None:
                changed.append((g, change.old, change.new))
        ctl.decide(t, changed)
        ctl.monitors[n2].rtt(0.0, t)
        ctl.monitors[n2].heard(t)
        health = ctl.health(t).value  # as the registry answers once the pong is in
        out.append((tuple(names[where[tid]] for tid in TASKS), tasks[-1].level.value, health))
    return out


def test_the_same_trace_gives_the_same_decisions(tmp_path: Path) -> None:
    h = MemoryHarness(tmp_path)
    real = _controller_decisions(h)
    simulated = _simulator_decisions(h.cfg)
    assert simulated == real
    # not vacuous: every task left n1, in the order of its level's rule
    moved_at = {
        tid: next(k for k, (nodes, *_) in enumerate(real) if nodes[i] == "n2")
        for i, tid in enumerate(TASKS)
    }
    assert moved_at["e"] == moved_at["a"] < moved_at["c"] < moved_at["s"]
    assert {level for _, level, _ in real} == {"strong"}  # non-idempotent: never hedged
    assert {health for *_, health in real} == {"healthy", "critical"}
