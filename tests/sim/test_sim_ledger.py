"""The traced run replayed through ``shared.crdt``: the CRDT's accounting agrees with
the simulator's own counters, and convergence is when the held deltas arrive."""

from __future__ import annotations

import pytest
from test_sim_model import STORMY

from simulations.sim.ledger import converged_at, replay
from simulations.sim.model import Simulation
from simulations.sim.scenario import parse, parse_policy


@pytest.mark.parametrize("policy", ["hybrid_dynamic/eventual", "adaptive/adaptive"])
def test_crdt_replay_counts_the_same_duplicates(policy: str) -> None:
    sim = Simulation(parse(STORMY), parse_policy(policy))
    sim.attempt_log = []
    metrics = sim.run().metrics
    ledger = sim.ledger()
    assert metrics["duplicates"] > 0 or policy.startswith("adaptive")
    assert ledger.duplicates == metrics["duplicates"]
    # the controller never believes more successes than the devices saw plus the
    # reports that reached it, and never knows a task the run did not generate
    assert sum(ledger.status().values()) <= metrics["generated"]


def test_convergence_waits_for_the_held_reports() -> None:
    """One edge node cut from 10 s to 30 s while it works: what it did during the
    cut reaches the controller only after the heal, and after its agent has
    reconnected (a 20 s cut outlasts 1.5 keep-alives of the agent's default 6 s:
    the broker dropped the session, and the session resumes at the heal, when a
    connection attempt hangs over the cut then, or at the next attempt)."""
    sc = parse(
        {
            "kind": "sim",
            "name": "cut",
            "duration_s": 60,
            "topology": {
                "sites": 1,
                "device": {"count": 10},
                "edge": {"count": 1, "cpus": 64},
                "cloud": {"count": 0},
            },
            "workload": {
                "rate_per_device": 1.0,
                "types": [{"name": "t", "level": "causal", "compute_mi": [1000, 3000]}],
            },
            "controller": {"placement_interval_s": 0},
        }
    )
    sim = Simulation(sc, parse_policy("hybrid_dynamic/causal"))
    sim.inject(uplink_down={"edge-0-0": [(10.0, 30.0)]})
    sim.attempt_log = []
    sim.run()
    views, specs = sim.traced()
    held = [v.report for v in views if v.stop < 30.0 <= v.report]
    assert held, "work finished during the cut must be reported after it"
    at = converged_at(views, specs, "edge-0-0", 30.0, sc.duration_s)
    # not before the last held report arrived; soon after (fresh work is in flight too)
    assert at is not None and max(held) <= at < 32.6
    g = sim.topo.index["edge-0-0"]
    resumed = sim.net.reconnects[sim.net.session_link(g)]
    assert len(resumed) == 1 and 30.0 <= resumed[0] < 32.0
    assert min(held) >= resumed[0]  # held until the agent reconnected
    assert not replay(views, specs, 30.9).converged("edge-0-0")
