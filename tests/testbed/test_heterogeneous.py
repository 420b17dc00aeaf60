"""The heterogeneous scenario's pieces, without processes: per-group speed factors reach
the ledger task through a speeds file, mixes carry deadlines, kinds, cores and latency
bounds into the specs, and the report counts deadline misses and the harm (re-executions
of non-idempotent tasks) from ground truth; ``compare`` summarises runs per mode."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from shared.errors import ValidationError
from shared.model import parse_task_spec
from simulations.testbed.checker import executions
from simulations.testbed.compare import summarize_modes
from simulations.testbed.metrics import deadline_outcomes, harm
from simulations.testbed.runner import RunOptions, Testbed
from simulations.testbed.scenario import load_scenario, parse_scenario

T0 = 1_800_000_000.0
# Request ids must be distinct per submission: hash(str) is salted per process, so
# ``hash(task) % 1000`` collided now and then and merged two submissions.
_REQUESTS = itertools.count(1)


def test_groups_carry_speeds_and_mixes_carry_deadlines(tmp_path: Path) -> None:
    bed = Testbed(load_scenario("heterogeneous"), RunOptions(out=tmp_path, mode="hybrid_static"))
    assert {n.tier: n.speed for n in bed.plan.nodes} == {"cloud": 1.0, "edge": 0.5, "device": 0.25}
    assert bed.speeds == {"agent-1": 1.0, "agent-2": 0.5, "agent-3": 0.25, "agent-4": 0.25}
    assert bed.controller_overrides()["placement"] == {"mode": "hybrid_static"}
    kinds = set()
    for sub in bed.plan.submissions:
        body = bed.request_body(sub)
        spec = parse_task_spec(body)
        kinds.add(spec.name)
        assert spec.deadline_s is not None and spec.resources.cpu == 1.0
        assert body["env"]["CONTINUUM_TB_SPEEDS"] == str((tmp_path / "speeds.json").resolve())
        assert sub.tasks[0]["deadline_s"] == spec.deadline_s
        if spec.name == "control-step":
            assert spec.placement.max_latency_ms == 100
    assert kinds == {"control-step", "fusion", "analytics", "report", "actuate"}


def test_a_homogeneous_scenario_needs_no_speeds_file(tmp_path: Path) -> None:
    bed = Testbed(load_scenario("partition-basic"), RunOptions(out=tmp_path))
    assert bed.speeds == {} and bed.mode == "adaptive"  # the controller's default
    assert all(
        "CONTINUUM_TB_SPEEDS" not in bed.request_body(s).get("env", {})
        for s in bed.plan.submissions
        if s.kind == "task"
    )


def test_bad_speed_and_deadline_are_reported_with_their_paths() -> None:
    data: dict[str, Any] = {
        "kind": "testbed",
        "name": "x",
        "topology": {"groups": [{"speed": 0}]},
        "workload": {"mix": [{"deadline_s": -1, "kind": "", "cpu": 0}]},
    }
    with pytest.raises(ValidationError) as err:
        parse_scenario(data)
    paths = {p.path for p in err.value.problems}
    assert {
        "topology.groups[0].speed",
        "workload.mix[0].deadline_s",
        "workload.mix[0].kind",
        "workload.mix[0].cpu",
    } <= paths


def _submit(task: str, at: float, deadline: float | None, idempotent: bool = False) -> list[Any]:
    meta: dict[str, Any] = {"task_id": task, "level": "causal", "depends_on": []}
    if deadline is not None:
        meta["deadline_s"] = deadline
    if idempotent:
        meta["idempotent"] = True
    req = next(_REQUESTS)
    return [
        {
            "f": "submit",
            "type": "invoke",
            "wall": T0 + at,
            "value": {"request": req, "tasks": [meta]},
        },
        {"f": "submit", "type": "ok", "value": {"request": req}},
    ]


def _run(task: str, node: str, start: float, end: float, exit_code: int = 0) -> list[Any]:
    base = {"task": task, "attempt": f"{node}:1", "node": node, "epoch": 1, "pid": int(start * 10)}
    return [
        {**base, "event": "start", "t": T0 + start},
        {**base, "event": "end", "t": T0 + end, "exit": exit_code},
    ]


def test_deadline_misses_and_harm_come_from_the_ledger() -> None:
    history = [
        *_submit("met", 0, 2.0),
        *_submit("late", 0, 1.0),
        *_submit("never", 0, 1.0),
        *_submit("free", 0, None),  # no deadline: not counted
        *_submit("twice", 0, 5.0),  # not idempotent, ran twice: harm
        *_submit("hedged", 0, 5.0, idempotent=True),  # idempotent: no harm
    ]
    ledger = [
        *_run("met", "agent-1", 0.5, 1.5),
        *_run("late", "agent-3", 0.2, 1.6),
        *_run("never", "agent-3", 0.2, 0.4, exit_code=1),
        *_run("free", "agent-2", 0.1, 9.0),
        *_run("twice", "agent-1", 0.1, 1.0, exit_code=1),
        *_run("twice", "agent-2", 1.5, 2.0),
        *_run("hedged", "agent-1", 0.1, 1.0),
        *_run("hedged", "agent-2", 0.2, 1.0),
    ]
    runs = executions(ledger)
    d = deadline_outcomes(history, runs)
    assert (d["tasks"], d["missed"]) == (5, 2)
    assert d["rate"] == pytest.approx(0.4)
    assert d["by_node"] == {
        "agent-1": {"met": 2, "missed": 0},
        "agent-2": {"met": 1, "missed": 0},
        "agent-3": {"met": 0, "missed": 1},
        "none": {"met": 0, "missed": 1},
    }
    assert harm(history, runs) == {"reexecutions": 1, "tasks": 1}


def _report(seed: int, missed: int, valid: bool = True) -> dict[str, Any]:
    return {
        "seed": seed,
        "valid": valid,
        "run_dir": f"/r/{seed}",
        "deadlines": {
            "tasks": 10,
            "missed": missed,
            "rate": missed / 10,
            "by_node": {"agent-1": {"met": 10 - missed, "missed": missed}},
        },
        "harm": {"reexecutions": missed % 2, "tasks": missed % 2},
    }


def test_compare_summarises_each_mode_with_its_range() -> None:
    summary = summarize_modes(
        {"adaptive": [_report(1, 1), _report(2, 3)], "hybrid_static": [_report(1, 4, False)]}
    )
    a = summary["modes"]["adaptive"]
    assert a["runs"] == 2 and a["valid"] == 2
    assert a["miss_rate"] == pytest.approx({"mean": 0.2, "min": 0.1, "max": 0.3})
    assert a["reexecutions"] == {"mean": 1.0, "min": 1.0, "max": 1.0}
    assert a["first_success_by_node"] == {"agent-1": 20}
    assert summary["modes"]["hybrid_static"]["valid"] == 0
    assert summary["all_valid"] is False
    json.dumps(summary)  # written to compare.json
