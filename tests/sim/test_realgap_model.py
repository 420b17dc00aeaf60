"""What realgap (simulations/sim/realgap.py) takes from the testbed: the controller's
placement mode, tasks without a deadline, and the durable writes on a start's path."""

from __future__ import annotations

import math

import pytest

from simulations.sim.realgap import START_FSYNCS, SimRun
from simulations.sim.realgap_machine import MachineTiming, measure
from simulations.testbed.scenario import load_scenario, scenario_dir


def _run(name: str, seed: int) -> SimRun:
    return SimRun(load_scenario(scenario_dir() / f"{name}.toml"), seed=seed)


def test_the_testbeds_mode_no_deadline_and_the_start_cost() -> None:
    run = _run("partition-basic", 3)
    assert [p.mode.value for p in run.sim_scenario.policies] == ["adaptive"]  # the default
    assert all(math.isinf(t.deadline_s) for t in run.types)  # no spec has a deadline_s
    edge = run.sim_scenario.topology.edge
    m = MachineTiming()
    assert edge.start_s == pytest.approx(m.process_start_s + START_FSYNCS * m.commit_s)


@pytest.mark.parametrize("seed", [3, 4])
def test_no_eventual_task_waits_behind_agent_1s_burst(seed: int) -> None:
    """With a deadline every node meets, the adaptive rule ranks by cost alone and queued
    an eventual task on agent-1 behind its six line-1 jobs (4.3 s); ranked as a task
    without a deadline (by predicted finish, as the controller ranks the testbed's), it
    runs on a free agent, as in the testbed."""
    result = _run("partition-basic", seed).run()
    assert max(result["latencies"]["eventual"]) < 1.0


def test_the_machine_costs_are_measured_and_simulated() -> None:
    """The bench measures a process start and a commit before each testbed run and the
    simulation of that run starts its tasks with them (realgap_machine.py)."""
    measured = measure()
    assert 0 < measured.commit_s < measured.process_start_s  # an interpreter costs more
    assert MachineTiming.from_dict(measured.as_dict()) == measured
    assert MachineTiming.from_dict(None) == MachineTiming()  # a run recorded without one
    slow = MachineTiming(process_start_s=0.5, commit_s=0.01)
    run = SimRun(load_scenario(scenario_dir() / "partition-basic.toml"), seed=3, machine=slow)
    assert run.sim_scenario.topology.edge.start_s == pytest.approx(0.5 + START_FSYNCS * 0.01)
    assert run.sim_scenario.controller.commit_s == pytest.approx(0.01)
