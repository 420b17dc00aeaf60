"""The simulator's lease path for a strong start: request hop, the controller's durable
commit of the grant (``Controller.commit_s``), grant hop (simulations/sim/agent.py)."""

from __future__ import annotations

import pytest

from simulations.sim.model import Simulation
from simulations.sim.scenario import parse, parse_policy


def _one_strong_task(commit_s: float) -> Simulation:
    sc = parse(
        {
            "kind": "sim",
            "name": "lease-path",
            "duration_s": 30,
            "seed": 3,
            "topology": {
                "sites": 1,
                "device": {"count": 1, "compute_share": 0.0},
                "edge": {"count": 1, "cpus": 4, "mips": 1000},
                "cloud": {"count": 0},
            },
            "workload": {"rate_per_device": 0.0, "types": [{"name": "t", "level": "strong"}]},
            "controller": {"placement_interval_s": 0, "commit_s": commit_s},
        }
    )
    sim = Simulation(sc, parse_policy("edge_only"))
    sim.inject(arrivals=[(1.0, 0, 0, 2000.0, 0.0, 0.0, 1.0)])
    sim.attempt_log = []
    assert sim.run().metrics["succeeded"] == 1
    return sim


def test_the_grant_leaves_after_the_controllers_commit() -> None:
    """The same run with a 50 ms commit: the grant, and so the start, come exactly that
    much later; the request leaves at the same time (the draws do not change)."""
    (fast,) = _one_strong_task(0.0).attempt_log
    (slow,) = _one_strong_task(0.05).attempt_log
    assert slow.t_req == fast.t_req
    assert slow.t_grant - fast.t_grant == pytest.approx(0.05)
    assert slow.start - fast.start == pytest.approx(0.05)
    assert fast.t_grant > fast.t_req > fast.t_recv
