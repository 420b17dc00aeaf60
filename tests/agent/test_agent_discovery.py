"""zeroconf on this host (127.0.0.1 only): the agent's advertisement is found by a browser,
and broker discovery prefers a broker that says it serves Continuum."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_harness import AgentProcess, ScriptedCloud, wait_until

from edge_agent.discovery import Advertisement, browse_agents, browse_broker

IFACES = ["127.0.0.1"]


def test_advertise_and_browse_agents() -> None:
    advert = Advertisement("disc-agent-1", "device", 45678, IFACES)
    try:
        found = browse_agents(IFACES, 3.0)
    finally:
        advert.close()
    mine = [s for s in found if s["txt"].get("node") == "disc-agent-1"]
    assert mine, found
    assert mine[0]["port"] == 45678
    assert mine[0]["txt"]["tier"] == "device"
    assert mine[0]["host"] == "127.0.0.1"


@pytest.fixture
def brokers() -> Iterator[None]:
    """Two MQTT brokers on the LAN; only the second says ``continuum=1``."""
    from zeroconf import ServiceInfo, Zeroconf

    zc = Zeroconf(interfaces=IFACES)
    infos = [
        ServiceInfo(
            "_mqtt._tcp.local.",
            f"{name}._mqtt._tcp.local.",
            addresses=[bytes([127, 0, 0, 1])],
            port=port,
            properties=props,
            server=f"{name}.local.",
        )
        for name, port, props in (
            ("aaa-plain-broker", 11883, {}),
            ("zzz-continuum-broker", 21883, {"continuum": "1"}),
        )
    ]
    for info in infos:
        zc.register_service(info, allow_name_change=True)
    try:
        yield
    finally:
        for info in infos:
            zc.unregister_service(info)
        zc.close()


def test_broker_discovery_prefers_a_continuum_broker(brokers: None) -> None:
    """The plain broker's name sorts first, yet a Continuum one is chosen: ours, or the one
    the next test advertises if it runs at the same time (another worker)."""
    chosen = browse_broker(IFACES, 3.0)
    assert chosen is not None and chosen != ("127.0.0.1", 11883)


@pytest.mark.e2e
@pytest.mark.broker
def test_agent_finds_its_broker_and_is_found(tmp_path: Path, mosquitto: Any) -> None:
    """An agent configured with no broker host browses for one, registers through it, and
    advertises itself with its node id and tier."""
    from zeroconf import ServiceInfo, Zeroconf

    zc = Zeroconf(interfaces=IFACES)
    info = ServiceInfo(
        "_mqtt._tcp.local.",
        f"disc-mosquitto-{mosquitto.port}._mqtt._tcp.local.",
        addresses=[bytes([127, 0, 0, 1])],
        port=mosquitto.port,
        properties={"continuum": "1"},
        server="disc-mosquitto.local.",
    )
    zc.register_service(info, allow_name_change=True)
    cloud = ScriptedCloud(mosquitto.host, mosquitto.port)
    agent = AgentProcess(
        tmp_path / "agent",
        0,
        "disc-edge-7",
        broker={"host": ""},
        discovery={"enabled": True, "interfaces": IFACES, "browse_timeout_s": 2.0},
    )
    try:
        agent.start()
        wait_until(lambda: cloud.messages("hello"), 15, "hello through a discovered broker")
        found = browse_agents(IFACES, 3.0)
        assert any(s["txt"].get("node") == "disc-edge-7" for s in found), found
    finally:
        agent.cleanup()
        cloud.close()
        zc.unregister_service(info)
        zc.close()
