"""End to end: a short partition scenario against the real controller and agents.

One run (module fixture, ~30 s): a broker (Mosquitto when installed, else the
embedded one), the controller, two agents behind fault proxies; agent-1 is cut
both ways from 3 s to 8 s while work arrives. Two kinds of assertion, kept in
separate tests so a failure says which side broke:

- the **testbed's mechanics**: every planned submission went out and was
  answered, the faults were applied and recorded, tasks really ran and left
  ledger lines, traffic went through the proxies, the report and both plots
  were written, ``check`` re-judges the run to the same verdict;
- the **system's verdict**: every invariant holds (this is the product's
  proof; when it fails, the report's examples name the task and the evidence).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from simulations.testbed import cli, collect

pytestmark = pytest.mark.e2e

SCENARIO = """
kind = "testbed"
name = "e2e-short"
description = "agent-1 of 2 cut both ways 3..8 s; agent-2's link repeats messages, it freezes 1 s"
duration_s = 12
seed = 11
settle_s = 25

[topology]
agents = 2

[workload]
rate_per_s = 2
stop_s = 10
[[workload.mix]]
level = "causal"
weight = 2
sleep_ms = [100, 400]
[[workload.mix]]
level = "eventual"
weight = 1
sleep_ms = [100, 300]
[[workload.mix]]
level = "strong"
weight = 1
sleep_ms = [100, 300]
[[workload.workflows]]
at = 1
width = 2
depth = 2
sleep_ms = [100, 200]

[[timeline]]
at = 3
op = "partition"
nodes = "agent-1"

[[timeline]]
at = 8
op = "heal"
nodes = "agent-1"

[[timeline]]
at = 1
op = "lossy"
nodes = "agent-2"
duplicate = 0.3

[[timeline]]
at = 9
op = "pause"
nodes = "agent-2"

[[timeline]]
at = 10
op = "resume"
nodes = "agent-2"
"""


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    base = tmp_path_factory.mktemp("testbed")
    scenario = base / "e2e-short.toml"
    scenario.write_text(SCENARIO, encoding="utf-8")
    out = base / "run"
    report = cli.run_scenario(str(scenario), out=out, console=Console(quiet=True), progress=False)
    return out, report


def test_mechanics(recorded: tuple[Path, dict[str, Any]]) -> None:
    out, report = recorded
    history = collect.read_history(out)
    plan = json.loads((out / "plan.json").read_text())
    subs = report["submissions"]
    assert subs["invoke"] == len(plan["submissions"]) > 0
    assert subs["ok"] + subs["fail"] + subs["info"] == subs["invoke"]
    assert subs["ok"] == subs["invoke"], "the controller refused or lost submissions"
    nemesis = [(op["f"], op["value"]["nodes"]) for op in history if op["process"] == "nemesis"]
    assert ("partition", ["agent-1"]) in nemesis and ("heal", ["agent-1"]) in nemesis
    assert {("lossy", ("agent-2",)), ("pause", ("agent-2",)), ("resume", ("agent-2",))} <= {
        (f, tuple(nodes)) for f, nodes in nemesis
    }
    assert report["bytes"]["agent-2"]["publish_duplicated"] > 0
    assert [k for _a, _b, k in report["fault_intervals"]["agent-2"]].count("paused") == 1
    ledger = collect.read_ledgers(sorted(collect.ledger_dir(out).glob("*.jsonl")))
    assert {line["event"] for line in ledger} >= {"start", "end"}
    assert report["executions"] > 0
    for node in ("agent-1", "agent-2", "controller"):
        b = report["bytes"][node]
        assert b["bytes_up"] > 0 and b["bytes_down"] > 0
    for path in report["plots"].values():
        assert Path(path).stat().st_size > 5_000
    assert report["invariants"].keys() >= {"nothing_lost", "strong_no_overlap", "convergence"}
    measured = [op["value"]["node"] for op in history if op["process"] == "monitor"]
    assert "agent-1" in measured, "the heal of agent-1 started no convergence measurement"
    again = json.loads((out / collect.REPORT).read_text())
    assert cli.main(["check", str(out)]) == (0 if again["valid"] is True else 1)


def test_verdict_valid(recorded: tuple[Path, dict[str, Any]]) -> None:
    _, report = recorded
    failed = {
        name: {"counts": r["counts"], "examples": r["examples"][:3]}
        for name, r in report["invariants"].items()
        if r["valid"] is not True
    }
    assert report["valid"] is True, json.dumps(failed, indent=1, default=str)
    not_converged = [c for c in report["timings"]["convergence_after_heal"] if c["after_s"] is None]
    assert not not_converged, f"replicas never converged after a heal: {not_converged}"
