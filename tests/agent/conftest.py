"""Fixtures of the agent's broker-backed tests: a scripted cloud on a real Mosquitto, and a
factory of real ``edge-agent run`` processes (stopped, and their logs checked, afterwards)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_harness import AgentFactory, AgentProcess, ScriptedCloud


@pytest.fixture
def cloud(mosquitto: Any) -> Iterator[ScriptedCloud]:
    c = ScriptedCloud(mosquitto.host, mosquitto.port)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def make_agent(tmp_path: Path, mosquitto: Any) -> Iterator[AgentFactory]:
    made: list[AgentProcess] = []

    def make(node: str = "edge-1", port: int | None = None, **sections: Any) -> AgentProcess:
        agent = AgentProcess(tmp_path / node, port or mosquitto.port, node, **sections)
        made.append(agent)
        return agent

    try:
        yield make
    finally:
        for agent in made:
            agent.cleanup()
    for agent in made:  # a bug caught by the core loop's safety net still fails the test
        assert "internal error" not in agent.log(), agent.log()[-3000:]
