"""Scenario files: every shipped testbed scenario validates; a bad file lists every
problem with its path; plans are reproducible from the seed."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from shared.errors import ValidationError
from simulations.testbed.plan import make_plan, resolve_nodes
from simulations.testbed.scenario import load_scenario, parse_scenario, scenario_dir

SHIPPED = (
    "partition-basic",
    "flapping-link",
    "agent-crash",
    "controller-restart",
    "cloud-outage",
    "asymmetric",
    "strong-vs-eventual",
    "reconnect-storm",
    "random",
    "frozen-agent",
    "lossy-broker",
)


def shipped_testbed_files() -> list[Path]:
    return [
        p
        for p in sorted(scenario_dir().glob("*.toml"))
        if tomllib.loads(p.read_text()).get("kind") == "testbed"
    ]


def test_every_required_scenario_is_shipped() -> None:
    names = {load_scenario(p).name for p in shipped_testbed_files()}
    assert set(SHIPPED) <= names


@pytest.mark.parametrize("path", shipped_testbed_files(), ids=lambda p: p.stem)
def test_shipped_scenario_validates_and_plans(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.name == path.stem and scenario.description
    plan = make_plan(scenario)
    assert plan.submissions, "a scenario without work proves nothing"
    assert plan.steps, "a testbed scenario needs faults"
    ids = {n.node_id for n in plan.nodes}
    for step in plan.steps:
        assert set(step.nodes) <= ids


def test_bare_name_finds_a_shipped_scenario() -> None:
    assert load_scenario("partition-basic").topology.agents == 3


def test_every_problem_is_listed_with_its_path() -> None:
    data = {
        "kind": "simulation",
        "duration_s": 0,
        "bogus": 1,
        "topology": {"agents": 0, "groups": [{"tier": "moon"}]},
        "workload": {
            "mix": [
                {"level": "sometimes", "sleep_ms": [5, 1]},
                {"level": "adaptive", "min": "strong", "max": "eventual"},
                {"level": "causal", "name": "pinned", "labels": {"line": 1}},
            ],
            "bursts": [{"at": 1, "count": 0}, {"at": 2, "mix": "unknown"}],
            "local": [{"nodes": "moon", "level": "strong"}],
        },
        "nemesis": {"lease_s": [1, 9], "ops": ["pause", "teleport"]},
        "timeline": [
            {"at": 1, "op": "explode"},
            {"at": 2, "op": "delay", "nodes": "agent-x"},
            {"at": 3, "op": "partition", "direction": "sideways"},
            {"op": "heal"},
            {"at": 4, "op": "lossy", "nodes": "all", "drop": 1.5},
        ],
    }
    with pytest.raises(ValidationError) as err:
        parse_scenario(data)
    paths = {p.path for p in err.value.problems}
    expected = {
        "kind",
        "name",
        "duration_s",
        "bogus",
        "topology.agents",
        "topology.groups[0].tier",
        "workload.mix[0].level",
        "workload.mix[0].sleep_ms",
        "workload.mix[1].min",
        "workload.bursts[0].count",
        "workload.mix[2].labels",
        "workload.bursts[1].mix",
        "workload.local[0].nodes",
        "workload.local[0].level",
        "workload.local[0].at",
        "nemesis.lease_s",
        "nemesis.ops",
        "timeline[4].drop",
        "timeline[0].op",
        "timeline[1].ms",
        "timeline[1].nodes",
        "timeline[2].direction",
        "timeline[3].at",
    }
    assert expected <= paths, sorted(paths)


def test_toml_syntax_error_and_missing_file_are_validation_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("kind = ")
    with pytest.raises(ValidationError, match="not valid TOML"):
        load_scenario(bad)
    with pytest.raises(ValidationError, match="no such scenario"):
        load_scenario(tmp_path / "missing.toml")


def test_plan_is_reproducible_and_seed_dependent() -> None:
    scenario = load_scenario("random")
    a, b = make_plan(scenario), make_plan(scenario)
    assert a.steps == b.steps and a.submissions == b.submissions
    c = make_plan(scenario, seed=scenario.seed + 1)
    assert c.steps != a.steps
    # Every random fault is healed (or the node restarted) before the nemesis stops.
    cut = {s.nodes for s in a.steps if s.op in ("partition", "flap", "delay", "lossy")}
    healed = {s.nodes for s in a.steps if s.op == "heal"}
    assert cut <= healed
    paused = {s.nodes for s in a.steps if s.op == "pause"}
    assert paused <= {s.nodes for s in a.steps if s.op == "resume"}
    assert {s.op for s in a.steps} <= {
        "partition",
        "heal",
        "flap",
        "delay",
        "kill",
        "restart",
        "reset",
        "pause",
        "resume",
        "lossy",
    }


def test_plan_scales_with_agents_and_keeps_workflow_dependencies() -> None:
    scenario = load_scenario("partition-basic")
    plan = make_plan(scenario, agents=5)
    assert [n.node_id for n in plan.nodes] == [f"agent-{i}" for i in range(1, 6)]
    (wf,) = [s for s in plan.submissions if s.kind == "workflow"]
    layer1 = [t for t in wf.tasks if t["depends_on"]]
    assert layer1 and all(len(t["depends_on"]) == 2 for t in layer1)
    assert [s.request for s in plan.submissions] == list(range(1, len(plan.submissions) + 1))
    levels = {t["level"] for s in plan.submissions for t in s.tasks}
    assert levels == {"strong", "causal", "eventual", "adaptive"}


def test_selectors() -> None:
    import random

    plan = make_plan(load_scenario("reconnect-storm"))
    rng = random.Random(0)
    nodes = plan.nodes
    assert len(resolve_nodes("all", nodes, rng)) == 10
    assert resolve_nodes("half", nodes, rng) == tuple(f"agent-{i}" for i in range(1, 6))
    assert len(resolve_nodes("random:3", nodes, rng)) == 3
    assert set(resolve_nodes("tier:device", nodes, rng)) == {f"agent-{i}" for i in (2, 4, 6, 8, 10)}
    assert resolve_nodes(("agent-1", "agent-99"), nodes, rng) == ("agent-1",)


def test_pinned_bursts_local_submissions_and_the_drawn_lease() -> None:
    plan = make_plan(load_scenario("partition-basic"))
    pinned = [s for s in plan.submissions if s.body.get("placement")]
    assert len(pinned) == 6 and {s.at for s in pinned} == {6.0}
    assert all(s.body["placement"] == {"labels": {"line": "1"}} for s in pinned)
    assert plan.nodes[0].labels["line"] == "1"
    assert all(n.labels["line"] == "2" for n in plan.nodes[1:])
    local = [s for s in plan.submissions if s.kind == "local"]
    assert [s.node for s in local] == ["agent-1"] * 4
    assert all(s.tasks[0]["local"] == "agent-1" for s in local)
    random_plan = make_plan(load_scenario("random"), seed=3)
    assert 3.0 <= random_plan.extra["lease_s"] <= 6.0
    assert make_plan(load_scenario("random"), seed=3).extra == random_plan.extra
