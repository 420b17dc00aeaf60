"""The simulator takes its decisions from ``shared`` as the shells do: retries by the
agent's rule, levels per task, the harm metric, and the MQTT session model."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from test_sim_model import STORMY

from simulations.sim.model import Simulation, simulate
from simulations.sim.records import Outcome
from simulations.sim.scenario import load, parse, parse_policy, scenario_dir


def _failing(**changes: Any) -> Any:
    """Edge servers only, no faults but execution failures: every retry is the agent's."""
    data: dict[str, Any] = {
        "kind": "sim",
        "name": "failing",
        "duration_s": 60,
        "seed": 3,
        "topology": {"sites": 2, "device": {"count": 40}, "edge": {"count": 2}},
        "workload": {
            "rate_per_device": 0.5,
            "types": [{"name": "f", "fail_rate": 0.3, "max_attempts": 3, "level": "causal"}],
        },
    }
    data.update(changes)
    return parse(data)


def test_a_failed_attempt_is_retried_by_its_node() -> None:
    """``agent_retries``: an ordinary failure is retried on the same node under the
    same epoch (no new placement), after ``backoff_delay``; the budget bounds it."""
    sim = Simulation(_failing(), parse_policy("hybrid_dynamic"))
    sim.attempt_log = []
    m = sim.run().metrics
    assert m["retried"] > 0 and m["replaced"] == 0
    by_task: dict[str, list[Any]] = {}
    for at in sim.attempt_log:
        by_task.setdefault(at.task.id, []).append(at)
    retried = [ats for ats in by_task.values() if len(ats) > 1]
    assert retried
    for ats in retried:
        ats.sort(key=lambda a: a.t_place)
        assert {a.node for a in ats} == {ats[0].node}
        assert {a.epoch for a in ats} == {1}
        assert len(ats) <= 3
        for before, after in itertools.pairwise(ats):
            assert before.outcome == Outcome.FAIL
            assert after.t_place >= before.stop + 0.5  # backoff_s = retry_backoff_s
    assert m["failed"] > 0  # some spent the budget


def test_harm_counts_only_non_idempotent_reexecutions() -> None:
    types = [dict(t) for t in STORMY["workload"]["types"]]
    policy = parse_policy("hybrid_dynamic/eventual")
    plain = simulate(parse({**STORMY, "workload": {**STORMY["workload"], "types": types}}), policy)
    assert plain.metrics["duplicates"] > 0
    assert plain.metrics["harm"] == plain.metrics["duplicates"]
    safe = [{**t, "idempotent": True} for t in types]
    hedged = simulate(parse({**STORMY, "workload": {**STORMY["workload"], "types": safe}}), policy)
    assert hedged.metrics["duplicates"] > 0 and hedged.metrics["harm"] == 0


def test_levels_adapt_per_task() -> None:
    """Adaptive tasks get a level on their own node's link and change it while
    placed (two bad samples down: only tasks that stay placed for a while move)."""
    sc = load(scenario_dir() / "partitions-frequent.toml", params={"duration_s": 150})
    sim = Simulation(sc, parse_policy("hybrid_dynamic/adaptive"))
    sim.attempt_log = []
    m = sim.run().metrics
    assert m["level_changes"] > 0
    levels = {at.level for at in sim.attempt_log if not at.local}
    assert len(levels) >= 2


@pytest.mark.parametrize("cut_s", [5.0, 14.0, 40.0])
def test_a_session_resumes_at_the_heal_or_after_a_reconnect(cut_s: float) -> None:
    """A cut shorter than 1.5 keep-alives (minus the silence before it) keeps the
    connection: the session resumes at the heal. A longer one was dropped: the agent
    reconnects, at the heal when a connection attempt hangs over the cut then (its
    probes follow one another at once while they hang: ``reconnect_wait``), else at
    its next probe, within one backoff (at most ``reconnect_max_s``)."""
    sim = Simulation(_failing(), parse_policy("hybrid_dynamic"))
    net = sim.net
    rng = np.random.default_rng(0)
    b = 100.0 + cut_s
    seen = set()
    for _ in range(200):
        back, new = net.resume(100.0, b, rng)
        if cut_s < 1.5 * net.keepalive_s - net.cadence_s:
            assert (back, new) == (b, False)
        elif cut_s >= 1.5 * net.keepalive_s:
            assert new and b <= back <= b + net.reconnect.backoff_max_s * 1.5
            seen.add(back == b)
        else:
            assert back >= b
    if cut_s > 2.5 * net.keepalive_s:  # the agent gave up and probes: one is out at the heal
        assert True in seen


def test_a_causal_retry_waits_for_contact_after_max_disconnect() -> None:
    """The agent's start gate (``may_start``) on its own retries: a causal retry does
    not start once the node's control path has been down for the task's
    ``max_disconnect_s``; it waits for the heal, and is dropped there if the
    controller placed the task anew meanwhile (never run on both)."""
    types = [
        {
            "name": "f",
            "fail_rate": 0.7,
            "max_attempts": 8,
            "level": "causal",
            "max_disconnect_s": 3,
            "compute_mi": [4000, 8000],  # 1-2 s a run: chains of failures span the cut
        }
    ]
    sc = _failing(workload={"rate_per_device": 0.5, "types": types})
    sim = Simulation(sc, parse_policy("hybrid_dynamic"))
    cut = (10.0, 40.0)
    sim.inject(uplink_down={"edge-0-0": [cut], "edge-0-1": [cut]})
    sim.attempt_log = []
    m = sim.run().metrics
    net = sim.net
    held = 0
    for at in sim.attempt_log:
        if not at.retry:
            continue
        links = net.control_links(net.ctrl[at.node])
        since = net.tl.down_since(links, at.t_recv)
        assert since is None or at.t_recv - since < 3.0 or at.outcome == Outcome.REFUSED
        held += at.t_recv >= cut[1] and at.task.attempts > 0
    assert m["retried"] > 0 and held > 0  # some retries waited for the heal and ran then
