"""The testbed's process configuration, read for the simulator's sim-to-real runs.

``simulations/testbed/processes.py`` writes one config per real process (the
controller's and each agent's, with the scenario's ``[controller]`` and ``[agent]``
tables and the run's lease merged in); here the same configs are built and read by
the shells' own loaders (``cloud.config``, ``edge_agent.config``), so the shells'
defaults fill in whatever the testbed leaves out (the agent's reconnect backoff,
its anti-entropy period, its executor slots) and the simulator cannot drift from
either.
"""

from __future__ import annotations

from pathlib import Path

from cloud.config import ControllerConfig
from cloud.config import parse_config as parse_controller_config
from edge_agent.config import AgentConfig
from edge_agent.config import parse_config as parse_agent_config
from simulations.sim.scenario import Controller
from simulations.testbed.plan import Plan
from simulations.testbed.processes import AgentProcess, ControllerProcess
from simulations.testbed.scenario import Scenario

__all__ = ["testbed_configs", "testbed_timing"]


def testbed_configs(scenario: Scenario, plan: Plan) -> tuple[AgentConfig, ControllerConfig]:
    """The (first) agent's and the controller's config as the testbed writes them."""
    node = plan.nodes[0]
    agent = parse_agent_config(
        AgentProcess(
            name=node.node_id,
            workdir=Path("agent"),
            ready_file=Path("agent.ready.json"),
            node=node,
            overrides=scenario.agent,
        ).config()
    )
    overrides = dict(scenario.controller)
    if plan.extra.get("lease_s") is not None:  # the random nemesis' lease, as the runner's
        consistency = {**overrides.get("consistency", {}), "lease_s": plan.extra["lease_s"]}
        overrides["consistency"] = consistency
    ctl = parse_controller_config(
        ControllerProcess(
            name="controller",
            workdir=Path("controller"),
            ready_file=Path("controller.ready.json"),
            broker_port=1883,  # where the broker is does not matter here, only a valid port
            overrides=overrides,
        ).config()
    )
    return agent, ctl


def testbed_timing(agent: AgentConfig, ctl: ControllerConfig) -> Controller:
    """The simulator's controller and agent timing from those configs."""
    return Controller(
        placement_interval_s=0.0,
        telemetry_s=ctl.health.heartbeat_interval_s,
        lease_s=ctl.consistency.lease_s,
        suspect_missed=ctl.health.suspect_missed,
        confirm_after_s=ctl.health.confirm_after_s,
        lease_margin_s=ctl.consistency.lease_margin_s,
        upgrade_dwell_s=ctl.consistency.upgrade_dwell_s,
        ack_period_s=agent.autonomy.period_s,
        keepalive_s=float(agent.broker.keepalive_s),
        reconnect_min_s=agent.broker.reconnect_min_s,
        reconnect_max_s=agent.broker.reconnect_max_s,
        antientropy_s=agent.antientropy_s,
    )
