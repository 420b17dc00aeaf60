"""Sync that does not trust the broker: a session that stays connected but hears nothing is
recovered by the agent itself (resubscribe, full digest, then reconnect).

The session silenced by a muted controller, with the agent's clock skipped, is tested in
``tests/pair/test_pair_sync.py`` (no broker). Here the broker is the subject: the defect
seen in the demo on the embedded broker, reproduced. Stock amqtt 0.12 (without the
testbed's fixes) ends the *new* connection's session when a superseded connection of the
same client goes away, and from then on queues every message for the agent instead of
delivering it, while the agent's TCP connection stays up. Before the agent detected
silence it stayed ``disconnected`` until something else reconnected it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from agent_harness import (
    AgentProcess,
    ScriptedCloud,
    place,
    sh,
    spec,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.broker]


def _silent_actions(agent: AgentProcess) -> list[str]:
    return [e["action"] for e in agent.events("silent_session")]


# ---------------------------------------------------------------- stock amqtt

_AMQTT = textwrap.dedent(
    """
    import asyncio, sys
    from amqtt.broker import Broker

    async def main(port):
        broker = Broker({
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": False},
            },
        })
        await broker.start()
        await asyncio.Event().wait()

    asyncio.run(main(int(sys.argv[1])))
    """
)


@pytest.fixture
def stock_amqtt(tmp_path: Path) -> Iterator[int]:
    pytest.importorskip("amqtt")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    log = open(tmp_path / "amqtt.log", "wb")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen([sys.executable, "-c", _AMQTT, str(port)], stdout=log, stderr=log)
    log.close()

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_until(listening, 20, "amqtt to listen")
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _impostor(port: int) -> mqtt.Client:
    """A second connection with the agent's client id: a take-over, as when the agent
    reconnects while the broker still holds its old connection."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id="continuum-agent-edge-1",
        clean_session=False,
        protocol=mqtt.MQTTv311,
    )
    client.username_pw_set("edge-1")
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    return client


def test_the_agent_recovers_from_amqtts_take_over_that_silences_its_session(
    tmp_path: Path, stock_amqtt: int
) -> None:
    cloud = ScriptedCloud("127.0.0.1", stock_amqtt, username="cloud")
    agent = AgentProcess(tmp_path / "edge-1", stock_amqtt, broker={"username": "edge-1"})
    try:
        agent.start()
        wait_until(lambda: agent.status()["connectivity"] == "connected", 15, "connected")
        impostor = _impostor(stock_amqtt)  # takes the session over: the agent is kicked ...
        wait_until(lambda: agent.status()["reconnects"] >= 2, 15, "the agent to reconnect")
        impostor.disconnect()  # ... and the superseded connection's end silences the new one
        impostor.loop_stop()
        wait_until(lambda: "reconnect" in _silent_actions(agent), 20, "the silence detected")
        wait_until(lambda: agent.status()["connectivity"] == "connected", 20, "connected again")
        place(cloud, "edge-1", spec("t-amqtt", sh("echo '{\"ok\": 1}'")))
        wait_until(lambda: cloud.status("t-amqtt") == "succeeded", 20, "work after the recovery")
    finally:
        agent.cleanup()
        cloud.close()
