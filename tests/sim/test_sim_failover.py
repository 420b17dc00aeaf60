"""A plain device's failover to its site's edge agents in the simulator
(``shared.autonomy.Failover`` in ``simulations/sim/agent.py``): only while its path to the
controller is down, learned by one unanswered attempt per outage, never for strong-only work,
and the result counted at the device."""

from __future__ import annotations

import heapq
from typing import Any

import pytest

from shared.autonomy import CONNECT_TIMEOUT_S, RTO_MIN_S
from shared.vocab import Level
from simulations.sim.model import Simulation
from simulations.sim.records import Task, TaskState
from simulations.sim.scenario import parse, parse_policy

#: Two sites, two edge servers each, a cloud; no random failures: the test cuts site 0's
#: metro link from 20 s to 60 s.
QUIET: dict[str, Any] = {
    "kind": "sim",
    "name": "failover",
    "duration_s": 90,
    "seed": 3,
    "topology": {
        "sites": 2,
        "regions": 1,
        "device": {"count": 40, "compute_share": 0.0},
        "edge": {"count": 2, "cpus": 8, "mips": 20000},
        "cloud": {"count": 1, "cpus": 64, "mips": 20000},
    },
    "workload": {
        "rate_per_device": 0.5,
        "types": [
            {"name": "quick", "level": "causal", "deadline_s": 0.5, "compute_mi": [500, 1000]}
        ],
    },
}
CUT = (20.0, 60.0)


def _run(level: str = "causal", cut: bool = True, mode: str = "adaptive") -> tuple[Simulation, Any]:
    spec = dict(QUIET)
    spec["workload"] = {
        **QUIET["workload"],
        "types": [{**QUIET["workload"]["types"][0], "level": level}],
    }
    sim = Simulation(parse(spec), parse_policy(mode))
    if cut:
        sim.net.add_outages(sim.net.metro + 0, [CUT])
        sim.net.mark_fallible()
    plain = sim.agents.plain
    timeouts: dict[int, list[tuple[float, float, bool]]] = {}
    timed_out = plain._timed_out

    def counted(item: tuple[Any, bool]) -> None:
        task, opens = item
        timeouts.setdefault(task.dev, []).append((task.t_arr, sim.loop.now, opens))
        timed_out(item)

    plain._timed_out = counted  # type: ignore[method-assign]
    tasks: list[Any] = []
    submit = plain.submit

    def kept(task: Any, path: Any, t: float) -> None:
        tasks.append(task)
        submit(task, path, t)

    plain.submit = kept  # type: ignore[method-assign]
    result = sim.run()
    return sim, (result, timeouts, tasks)


@pytest.mark.parametrize("mode", ["cloud_only", "adaptive"])
def test_cut_off_devices_fail_over_once_per_outage_and_meet_deadlines(mode: str) -> None:
    sim, (result, timeouts, tasks) = _run(mode=mode)
    site0 = [t for t in tasks if t.site == 0 and CUT[0] + 2 < t.t_arr < CUT[1] - 5]
    assert sim.agents.plain.failovers > 0.8 * len(site0)
    # the timeout is paid only by the attempts sent before the first one failed: for
    # the rest of the outage the breaker stays open
    assert timeouts and all(sim.topo.dev_site[d] == 0 for d in timeouts)
    for paid in timeouts.values():
        opened = min(at for _, at, opens in paid if opens)
        assert all(sent < opened for sent, _, _ in paid)
        assert all(CUT[0] <= sent < CUT[1] for sent, _, _ in paid)
        # each wait is the device's RFC 6298 timeout from its measured round trips:
        # at least RTO_MIN_S, less than the 1 s it starts from
        assert all(RTO_MIN_S - 1e-9 <= at - sent < CONNECT_TIMEOUT_S for sent, at, _ in paid)
    # once the breaker is open, the tasks run on the site's edge servers in time, their
    # result back at the device over its access link
    met = [t for t in site0 if t.state is TaskState.SUCCEEDED and t.best - t.t_arr <= 0.5]
    assert len(met) > 0.8 * len(site0)
    # the first task of each device paid the connect timeout, and most of them still
    # met their 0.5 s deadline on an edge server (a 1 s timeout made every one late)
    first = {}
    for t in sorted(tasks, key=lambda t: t.t_arr):
        if t.dev in timeouts and t.t_arr >= CUT[0]:
            first.setdefault(t.dev, t)
    assert all(t.best - t.t_arr > RTO_MIN_S for t in first.values())
    assert sum(t.best - t.t_arr <= 0.5 for t in first.values()) > 0.8 * len(first)
    assert result.metrics["deadline_miss_rate"] < 0.05


def test_no_outage_no_failover() -> None:
    sim, (_, timeouts, _) = _run(cut=False)
    plain = sim.agents.plain
    assert plain.failovers == 0 and not timeouts
    # every device measured its round trips, and no breaker ever opened
    assert all(b.srtt is not None and b.down_since is None for b in plain.breakers.values())


def test_strong_only_work_waits_for_the_controller() -> None:
    sim, (_, timeouts, tasks) = _run(level="strong")
    assert sim.agents.plain.failovers == 0
    assert timeouts  # the devices still learned of the outage
    held = [t for t in tasks if t.site == 0 and CUT[0] + 2 < t.t_arr < CUT[1] - 5]
    assert held and all(t.t_ctrl >= CUT[1] for t in held)


def test_an_overloaded_site_edge_keeps_the_urgent_work_and_hands_back_long_runs() -> None:
    """Site 0 cut off, its two edge servers of 16 cores each offered ~70 core-seconds of
    work a second, nearly all of it long runs with a long deadline: the agents' plans
    (``shared.autonomy.plan_edf``) keep the short urgent tasks in time and hand back the
    long runs they cannot finish; nothing handed back ever ran, nothing ran twice."""
    spec = dict(QUIET)
    quick = {**QUIET["workload"]["types"][0], "weight": 1}
    slow = {
        "name": "long",
        "level": "causal",
        "weight": 1,
        "deadline_s": 20,
        "compute_mi": [60000, 80000],
    }
    spec["workload"] = {"rate_per_device": 2.0, "types": [quick, slow]}
    spec["topology"] = {**QUIET["topology"], "edge": {"count": 2, "cpus": 16, "mips": 20000}}
    sim = Simulation(parse(spec), parse_policy("adaptive"))
    sim.net.add_outages(sim.net.metro + 0, [CUT])
    sim.net.mark_fallible()
    plain = sim.agents.plain
    seen: list[Any] = []
    submit = plain.submit

    def kept(task: Any, path: Any, t: float) -> None:
        seen.append(task)
        submit(task, path, t)

    plain.submit = kept  # type: ignore[method-assign]
    result = sim.run()
    assert plain.handed_back > 0 and result.metrics["duplicates"] == 0
    tasks = [t for t in seen if t.site == 0 and CUT[0] + 2 < t.t_arr < CUT[1] - 5]
    urgent = [t for t in tasks if t.tt == 0]
    met = [t for t in urgent if t.state is TaskState.SUCCEEDED and t.best - t.t_arr <= 0.5]
    assert len(met) > 0.9 * len(urgent)


def test_a_cut_off_computing_device_whose_core_is_busy_fails_over_too() -> None:
    """A computing device cut off from the controller runs its own task when autonomy
    allows and its core is free; otherwise it submits by its breaker as a plain device
    does, so the task goes to an edge agent of its site instead of waiting at the
    controller for the outage to end (before, every such task was held there: 0
    failovers, all late)."""
    spec = dict(QUIET)
    spec["topology"] = {
        **QUIET["topology"],
        "device": {"count": 40, "compute_share": 1.0, "cpus": 1, "mips": 2000},
    }
    sim = Simulation(parse(spec), parse_policy("adaptive"))
    sim.net.add_outages(sim.net.metro + 0, [CUT])
    sim.net.mark_fallible()
    plain = sim.agents.plain
    seen: list[Any] = []
    submit = plain.submit

    def kept(task: Any, path: Any, t: float) -> None:
        seen.append(task)
        submit(task, path, t)

    plain.submit = kept  # type: ignore[method-assign]
    sim.run()
    cut = [t for t in seen if t.site == 0 and CUT[0] + 2 < t.t_arr < CUT[1] - 5]
    assert cut and plain.failovers > 0.5 * len(cut)
    held = [t for t in cut if CUT[1] <= t.t_ctrl < float("inf")]  # reached it after the heal
    assert len(held) < 0.2 * len(cut)
    met = [t for t in cut if t.state is TaskState.SUCCEEDED and t.best - t.t_arr <= 0.5]
    assert len(met) > 0.8 * len(cut)


def test_a_device_times_out_on_its_edge_path_by_its_own_round_trips() -> None:
    """A device that reached its site's edges measured that path: a crashed edge or a
    cut access link then costs it RFC 6298's timeout over those round trips (at least
    ``RTO_MIN_S``), not the 1 s of a path with no sample."""
    sim, _ = _run()
    edge_rtt = sim.agents.plain.edge_rtt
    assert edge_rtt and all(sim.topo.dev_site[d] == 0 for d in edge_rtt)
    measured = [e for e in edge_rtt.values() if e.srtt is not None]
    assert measured and all(e.rto_s == RTO_MIN_S for e in measured)


def test_a_computing_device_cut_off_by_its_own_access_link_runs_its_task_itself() -> None:
    """A computing device whose own access link is cut reaches no edge and no controller,
    but its own agent: its breaker's fallback offers the task there first (the same
    plan as an edge's), so the tasks of the cut's first seconds, before autonomy lets
    the device start new work on its own, still meet their deadline (before, they went
    to the controller and waited for the heal)."""
    spec = dict(QUIET)
    spec["topology"] = {
        **QUIET["topology"],
        "device": {"count": 40, "compute_share": 1.0, "cpus": 1, "mips": 8000},
    }
    sim = Simulation(parse(spec), parse_policy("adaptive"))
    cut_devs = range(10)
    for d in cut_devs:
        sim.net.add_outages(d, [CUT])
    sim.net.mark_fallible()
    plain = sim.agents.plain
    seen: list[Any] = []
    submit = plain.submit

    def kept(task: Any, path: Any, t: float) -> None:
        seen.append(task)
        submit(task, path, t)

    plain.submit = kept  # type: ignore[method-assign]
    sim.run()
    early = [t for t in seen if t.dev in cut_devs and CUT[0] + 0.5 < t.t_arr < CUT[0] + 6]
    assert early and plain.failovers >= 0.8 * len(early)
    met = [t for t in early if t.state is TaskState.SUCCEEDED and t.best - t.t_arr <= 0.5]
    assert len(met) > 0.8 * len(early)


def test_an_edge_agent_plans_without_the_placements_a_cut_still_holds() -> None:
    """The controller's accounting reserves an attempt's core from its placement on;
    the agent knows of it only once the placement arrives. While a cut holds the
    placements, the agent plans and admits its site's failed-over work on the cores it
    sees free (before, they stayed reserved for the whole outage)."""
    sim = Simulation(parse(QUIET), parse_policy("adaptive"))
    plain, topo = sim.agents.plain, sim.topo
    g = plain.site_edges[0][0]
    cores = int(topo.cpus[g])
    for _ in range(cores):  # one per core, held by a cut until 100 s
        topo.take(g, 1.0, 128.0)
        heapq.heappush(plain.running[g], (105.0, 104.0, 100.0, 1.0, 128.0))
    task = Task("t", 0, 0, 0, 10.0, 700.0, 1e5, 1e4, 1.0, Level.EVENTUAL, Level.STRONG)
    assert plain._unseen(g, 10.0) == (float(cores), 128.0 * cores, cores)
    assert plain._free_at(g, 10.0) == [10.0] * cores
    assert not sim.agents.admit_local(g, task)  # the controller's view: full
    assert sim.agents.admit_local(g, task, plain._unseen(g, 10.0))
    # once they arrived, the agent runs them: its cores free at their expected ends
    assert plain._unseen(g, 101.0) == (0.0, 0.0, 0)
    assert plain._free_at(g, 101.0) == [104.0] * cores
