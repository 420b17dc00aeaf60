"""The traced run replayed through ``shared.crdt``: the CRDT's accounting agrees with
the simulator's own counters, and convergence is when the held deltas arrive."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from test_sim_model import STORMY

from simulations.sim.ledger import Send, converged_at, replay
from simulations.sim.model import Simulation
from simulations.sim.scenario import SimScenario, parse, parse_policy


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


def _one_site(
    *, duration_s: float, devices: int, edges: int, cpus: int, rate: float, level: str
) -> SimScenario:
    """One site of ``edges`` edge nodes, no cloud, one task type at ``level``, each
    task placed on arrival."""
    return parse(
        {
            "kind": "sim",
            "name": "one-site",
            "duration_s": duration_s,
            "topology": {
                "sites": 1,
                "device": {"count": devices},
                "edge": {"count": edges, "cpus": cpus},
                "cloud": {"count": 0},
            },
            "workload": {
                "rate_per_device": rate,
                "types": [{"name": "t", "level": level, "compute_mi": [1000, 3000]}],
            },
            "controller": {"placement_interval_s": 0},
        }
    )


def _traced(
    sc: SimScenario, level: str, *, cut: tuple[float, float]
) -> tuple[Simulation, list[Any], dict[str, dict[str, Any]]]:
    """Run ``sc`` with edge-0-0's uplink cut over ``cut``; the traced attempts."""
    sim = Simulation(sc, parse_policy(f"hybrid_dynamic/{level}"))
    sim.inject(uplink_down={"edge-0-0": [cut]})
    sim.attempt_log = []
    sim.run()
    return (sim, *sim.traced())


def test_convergence_waits_for_the_held_reports() -> None:
    """One edge node cut from 10 s to 30 s while it works: what it did during the
    cut reaches the controller only after the heal, and after its agent has
    reconnected (a 20 s cut outlasts 1.5 keep-alives of the agent's default 6 s:
    the broker dropped the session, and the session resumes at the heal, when a
    connection attempt hangs over the cut then, or at the next attempt)."""
    sc = _one_site(duration_s=60, devices=10, edges=1, cpus=64, rate=1.0, level="causal")
    sim, views, specs = _traced(sc, "causal", cut=(10.0, 30.0))
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


def test_a_never_cut_node_holds_the_controllers_record_without_a_digest() -> None:
    """Eventual work placed on edge-0-0 while its uplink is cut (5-15 s) is hedged to
    edge-0-1; both copies run. With no digest at all, the controller's fan-out
    (``shared.authz.lacking``, as ``cloud/fanout.py``) leaves edge-0-1, never cut,
    holding exactly the controller's record of every moved task (it lacked edge-0-0's
    attempts without it), and edge-0-0 too once its session is back."""
    sc = _one_site(duration_s=40, devices=4, edges=2, cpus=8, rate=0.5, level="eventual")
    sim, views, specs = _traced(sc, "eventual", cut=(5.0, 15.0))
    moved = {v.task_id for v in views if v.epoch > 1 and v.node_id == "edge-0-1"}
    assert moved, "the cut must re-place work onto edge-0-1"

    def stale(send: Send | None) -> set[tuple[str, str]]:
        ledger = replay(views, specs, sc.duration_s, send=send)
        return {
            (node, tid)
            for (node, tid), rec in ledger.nodes.items()
            if tid in moved and ledger.controller[tid] != rec
        }

    assert ("edge-0-1", min(moved)) in stale(None)  # digests only: not yet
    assert stale(sim.control_arrival) == set()


def _view(task_id: str, node: str, epoch: int, t: float, **kw: Any) -> SimpleNamespace:
    """A traced attempt placed at ``t``, received 0.01 s later, run for 1 s."""
    fields: dict[str, Any] = {
        "task_id": task_id,
        "node_id": node,
        "epoch": epoch,
        "level": "eventual",
        "local": False,
        "retry": 0,
        "t_place": t,
        "t_recv": t + 0.01,
        "start": t + 0.01,
        "start_rep": t + 0.02,
        "stop": t + 1.01,
        "report": t + 1.02,
        "outcome": "ok",
        "cancel_at": float("inf"),
        "fence": False,
    }
    return SimpleNamespace(**{**fields, **kw})


@pytest.mark.parametrize("fence", [False, True])
def test_the_node_a_task_leaves_is_told_at_the_move_only_when_fenced(fence: bool) -> None:
    """a holds epoch 1 (placed at 0 s, runs until 1.01 s, reported at 1.02 s); at 0.5 s
    the task moves to b. A fenced move tells a at once (``cloud/reconcile.py``
    ``_fence_old``); a hedge tells it nothing until b's start reaches the controller
    (0.52 s), which is then fanned out to a."""
    views = [_view("t", "a", 1, 0.0, fence=fence), _view("t", "b", 2, 0.5)]
    specs = {"t": {"id": "t"}}

    def send(node: str, t: float) -> float:
        return t + 0.001

    at_move = replay(views, specs, 0.51, send=send)
    assert (at_move.nodes["a", "t"].placement.epoch == 2) is fence
    after_start = replay(views, specs, 0.53, send=send)
    assert after_start.nodes["a", "t"].placement.epoch == 2
    end = replay(views, specs, 5.0, send=send)
    assert end.nodes["a", "t"] == end.nodes["b", "t"] == end.controller["t"]
