"""The agent end to end: real ``edge-agent run`` processes, a real Mosquitto, and a scripted
cloud speaking ``shared.protocol`` (``agent_harness``). Each test stays within ~20 s."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from agent_harness import AgentProcess, ScriptedCloud, sh, spec, wait_until

from shared.crdt import AttemptStatus
from shared.protocol import Place, decode_from, topic

pytestmark = [pytest.mark.e2e, pytest.mark.broker]

AgentFactory = Callable[..., AgentProcess]


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


def place(
    cloud: ScriptedCloud,
    node: str,
    task: dict[str, Any],
    *,
    epoch: int = 1,
    level: str = "causal",
    lease_s: float | None = None,
) -> None:
    cloud.send(
        node,
        "place",
        Place(task_id=task["id"], epoch=epoch, spec=task, level=level, lease_s=lease_s),
    )


def retained_presence(host: str, port: int, node: str, timeout: float = 5.0) -> str:
    """What a fresh subscriber gets as the retained presence of ``node``."""
    got: list[str] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.on_connect = lambda c, *a: c.subscribe(topic(node, "presence"), qos=1)
    client.on_message = lambda c, u, msg: got.append(
        decode_from(msg.topic, msg.payload).body.status
    )
    client.connect(host, port)
    client.loop_start()
    try:
        wait_until(lambda: got, timeout, f"retained presence of {node}")
    finally:
        client.disconnect()
        client.loop_stop()
    return got[-1]


def succeeded_attempts(cloud: ScriptedCloud, task_id: str) -> list[Any]:
    rec = cloud.record(task_id)
    if rec is None:
        return []
    return [a for a in rec.attempts.values() if a.status == AttemptStatus.SUCCEEDED]


# ------------------------------------------------------------------------------------------


def test_registration_presence_and_last_will(
    cloud: ScriptedCloud, make_agent: AgentFactory, mosquitto: Any
) -> None:
    agent = make_agent().start()
    hello = wait_until(lambda: cloud.messages("hello"), 10, "hello")[0].body
    assert str(hello.tier) == "edge"
    assert hello.capacity.cpus >= 1 and hello.capacity.memory_mb > 0
    assert hello.api_port == agent.api_port
    assert retained_presence(mosquitto.host, mosquitto.port, "edge-1") == "online"
    wait_until(lambda: agent.status()["connectivity"] == "connected", 10, "connected")
    wait_until(lambda: cloud.messages("telemetry"), 10, "telemetry")
    agent.kill()  # no clean disconnect: the broker publishes the will after 1.5 keepalives
    wait_until(
        lambda: retained_presence(mosquitto.host, mosquitto.port, "edge-1") == "offline",
        10,
        "the last will",
        step=0.5,
    )


def test_sigterm_drains_and_exits_zero(
    cloud: ScriptedCloud, make_agent: AgentFactory, mosquitto: Any
) -> None:
    agent = make_agent().start()
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    place(cloud, "edge-1", spec("drain", sh("sleep 1; echo '{\"done\": true}'")))
    wait_until(lambda: agent.status()["running"], 10, "the task to start")
    assert agent.terminate() == 0
    assert cloud.status("drain") == "succeeded"  # finished within the grace, synced first
    assert retained_presence(mosquitto.host, mosquitto.port, "edge-1") == "offline"


def test_placed_task_runs_and_its_success_reaches_the_cloud(
    cloud: ScriptedCloud, make_agent: AgentFactory
) -> None:
    agent = make_agent().start()
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    place(cloud, "edge-1", spec("t-ok", sh("echo working >&2; echo '{\"answer\": 42}'")))
    wait_until(lambda: cloud.status("t-ok") == "succeeded", 10, "success at the cloud")
    (attempt,) = succeeded_attempts(cloud, "t-ok")
    assert attempt.result == {"answer": 42}
    assert attempt.exit_code == 0 and attempt.node == "edge-1" and attempt.epoch == 1
    wait_until(lambda: agent.status()["outbox_depth"] == 0, 10, "the outbox to be acknowledged")
