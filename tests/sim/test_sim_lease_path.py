"""What the simulator charges a start beyond the execution (simulations/sim/agent.py): a
strong start's lease path (request hop, the controller's durable commit of the grant,
``Controller.commit_s``, grant hop), the controller's commit of a placement before it
leaves, and a node's first launch, which waits for the agent's
task supervisor (``NodeClass.supervisor_start_s``)."""

from __future__ import annotations

import pytest

from simulations.sim.model import Simulation
from simulations.sim.scenario import parse, parse_policy


def _run(
    level: str, arrivals: list[float], commit_s: float = 0.0, sup_s: float = 0.0
) -> Simulation:
    sc = parse(
        {
            "kind": "sim",
            "name": "lease-path",
            "duration_s": 30,
            "seed": 3,
            "topology": {
                "sites": 1,
                "device": {"count": 1, "compute_share": 0.0},
                "edge": {"count": 1, "cpus": 4, "mips": 1000, "supervisor_start_s": sup_s},
                "cloud": {"count": 0},
            },
            "workload": {"rate_per_device": 0.0, "types": [{"name": "t", "level": level}]},
            "controller": {"placement_interval_s": 0, "commit_s": commit_s},
        }
    )
    sim = Simulation(sc, parse_policy("edge_only"))
    sim.inject(arrivals=[(t, 0, 0, 2000.0, 0.0, 0.0, 1.0) for t in arrivals])
    sim.attempt_log = []
    assert sim.run().metrics["succeeded"] == len(arrivals)
    return sim


def test_the_placement_and_the_grant_leave_after_the_controllers_commit() -> None:
    """The same run with a 50 ms commit: the placement arrives that much later (and the
    request leaves that much later), the grant and so the start twice that (the draws do
    not change)."""
    (fast,) = _run("strong", [1.0]).attempt_log
    (slow,) = _run("strong", [1.0], commit_s=0.05).attempt_log
    assert slow.t_recv - fast.t_recv == pytest.approx(0.05)
    assert slow.t_req - fast.t_req == pytest.approx(0.05)
    assert slow.t_grant - fast.t_grant == pytest.approx(0.1)
    assert slow.start - fast.start == pytest.approx(0.1)
    assert fast.t_grant > fast.t_req > fast.t_recv


def test_only_a_nodes_first_launch_waits_for_the_supervisor() -> None:
    """With a 200 ms supervisor start, the first of two tasks starts 200 ms after its
    placement arrived; the second, placed 5 s later, starts as without one."""
    cold = sorted(_run("eventual", [1.0, 6.0], sup_s=0.2).attempt_log, key=lambda a: a.start)
    warm = sorted(_run("eventual", [1.0, 6.0]).attempt_log, key=lambda a: a.start)
    assert cold[0].start == pytest.approx(cold[0].t_recv + 0.2)
    assert warm[0].start < cold[0].start
    assert cold[1].start == warm[1].start
