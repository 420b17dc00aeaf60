"""The runner's pure-ish parts, without processes: what it submits and how it
turns timeline steps into proxy faults and history ops."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shared.model import parse_task_spec, parse_workflow
from simulations.testbed import collect
from simulations.testbed.proxy import FaultProxy
from simulations.testbed.runner import History, RunOptions, Testbed, TestbedError
from simulations.testbed.scenario import Step, load_scenario


def bed(tmp_path: Path) -> Testbed:
    return Testbed(load_scenario("partition-basic"), RunOptions(out=tmp_path / "run"))


def test_request_bodies_are_valid_specs_that_write_the_ledger(tmp_path: Path) -> None:
    b = bed(tmp_path)
    kinds = set()
    for sub in b.plan.submissions:
        body = b.request_body(sub)
        kinds.add(sub.kind)
        tasks = body["tasks"] if sub.kind == "workflow" else [body]
        for task in tasks:
            assert task["command"][1].endswith("ledger_task.py")
            ledger = task["env"]["CONTINUUM_LEDGER"]
            assert ledger == str((collect.ledger_dir(b.out) / "{node}.jsonl").resolve())
        if sub.kind == "workflow":
            parse_workflow(body)
        else:
            parse_task_spec(body)
        assert (sub.node is not None) == (sub.kind == "local")
    assert kinds == {"task", "workflow", "local"}


def test_steps_become_proxy_faults_and_history_ops(tmp_path: Path) -> None:
    async def scenario() -> None:
        b = bed(tmp_path)
        b.out.mkdir(parents=True)
        b.history = History(b.out / collect.HISTORY)
        b.proxies = {n: FaultProxy(n, "127.0.0.1", 9, mqtt=True) for n in b.node_ids}
        p1, p2 = b.proxies["agent-1"], b.proxies["agent-2"]
        await b.apply_step(Step(1.0, "partition", ("agent-1",), {"direction": "up"}))
        await b.apply_step(Step(1.0, "delay", ("agent-2",), {"ms": 300, "jitter_ms": 50}))
        await b.apply_step(Step(1.0, "throttle", ("agent-2",), {"bytes_per_s": 5000}))
        assert p1.faults == {"cut": "up"}
        assert p2.faults == {"delay_ms": 300.0, "jitter_ms": 50.0, "bytes_per_s": 5000.0}
        await b.apply_step(Step(2.0, "flap", ("agent-1",), {"down_s": 1, "up_s": 1}))
        assert p1.faults.get("flapping") is True
        await b.apply_step(Step(2.5, "lossy", ("agent-2",), {"drop": 0.05, "direction": "up"}))
        assert p2.faults.get("lossy") == "up"
        await b.apply_step(Step(3.0, "heal", ("agent-1", "agent-2")))
        assert p1.faults == {} and p2.faults == {}
        b.ctl_proxy = FaultProxy("controller", "127.0.0.1", 9)
        await b.apply_step(Step(4.0, "controller-cut", tuple(b.node_ids), {"direction": "down"}))
        assert b.ctl_proxy.faults == {"cut": "down"}
        assert b.history.ops[-1]["value"]["nodes"] == []  # names no agent
        await b.apply_step(Step(5.0, "controller-heal", tuple(b.node_ids)))
        assert b.ctl_proxy.faults == {}
        ops = [(op["process"], op["f"], op["value"]["nodes"]) for op in b.history.ops]
        assert ops[0] == ("nemesis", "partition", ["agent-1"])
        assert ops[-1] == ("nemesis", "controller-heal", [])
        monitors = list(b._tasks)  # the convergence monitors started by the heals
        assert monitors
        await asyncio.sleep(0)  # let them start
        for task in monitors:
            task.cancel()
        results = await asyncio.gather(*monitors, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results), results
        # a monitor stopped before its nodes converged records them as not converged
        stopped = [op["value"] for op in b.history.ops if op["f"] == "not-converged"]
        assert {(v["cause"], v["node"]) for v in stopped} >= {
            ("heal", "agent-1"),
            ("heal", "agent-2"),
        }
        b.history.close()

    asyncio.run(scenario())


def test_a_directory_holding_a_run_is_refused(tmp_path: Path) -> None:
    b = bed(tmp_path)
    b.out.mkdir(parents=True)
    (b.out / collect.HISTORY).write_text("")
    with pytest.raises(TestbedError, match="already holds a run"):
        asyncio.run(b.run())
