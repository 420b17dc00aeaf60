"""The shipped broker ACL (deploy/mosquitto/acl) confines each agent to its own topics.

Non-delivery is asserted by order, never by waiting: a forbidden publish is made
first, then a permitted one on the same connection; once the permitted one has
arrived, the forbidden one (earlier on the same connection) would have too.
"""

from __future__ import annotations

import queue
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from shared.protocol import topic

ACL = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "acl"
USERS = {"controller": "ctl-pw", "n1": "n1-pw", "n2": "n2-pw"}

pytestmark = pytest.mark.broker


class Client:
    def __init__(self, port: int, user: str) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.subscribed: queue.Queue[object] = queue.Queue()
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"{user}-{uuid.uuid4().hex[:6]}"
        )
        c.username_pw_set(user, USERS[user])
        c.on_message = lambda _c, _u, m: self.messages.put((m.topic, m.payload))
        c.on_subscribe = lambda _c, _u, _mid, codes, _p: self.subscribed.put(codes)
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c

    def subscribe(self, pattern: str) -> list[object]:
        self.client.subscribe(pattern, qos=1)
        return list(self.subscribed.get(timeout=10))  # type: ignore[arg-type]

    def publish(self, name: str, payload: bytes) -> None:
        self.client.publish(name, payload, qos=1).wait_for_publish(timeout=10)

    def next(self) -> tuple[str, bytes]:
        return self.messages.get(timeout=10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def clients(mosquitto_factory) -> Iterator[dict[str, Client]]:  # type: ignore[no-untyped-def]
    broker = mosquitto_factory(users=USERS, acl_file=ACL)
    made = {user: Client(broker.port, user) for user in USERS}
    try:
        yield made
    finally:
        for c in made.values():
            c.close()


def test_agent_cannot_publish_on_another_nodes_topics(clients: dict[str, Client]) -> None:
    ctl, n1 = clients["controller"], clients["n1"]
    ctl.subscribe("continuum/v1/nodes/+/+")
    for kind in ("hello", "presence", "telemetry", "up"):
        n1.publish(topic("n2", kind), b"forged")
    n1.publish(topic("n1", "up"), b"own")
    assert ctl.next() == (topic("n1", "up"), b"own")
    assert ctl.messages.empty()


def test_agent_cannot_read_another_nodes_down(clients: dict[str, Client]) -> None:
    ctl, n1 = clients["controller"], clients["n1"]
    n1.subscribe(topic("n2", "down"))
    n1.subscribe(topic("n1", "down"))
    ctl.publish(topic("n2", "down"), b"for n2")
    ctl.publish(topic("n1", "down"), b"for n1")
    assert n1.next() == (topic("n1", "down"), b"for n1")
    assert n1.messages.empty()


def test_agent_cannot_write_its_own_down_or_read_others_up(clients: dict[str, Client]) -> None:
    ctl, n1, n2 = clients["controller"], clients["n1"], clients["n2"]
    n2.subscribe(topic("n1", "up"))
    n2.subscribe(topic("n2", "down"))
    ctl.subscribe(topic("n1", "down"))
    n1.publish(topic("n1", "down"), b"self-command")
    n1.publish(topic("n1", "up"), b"delta")
    ctl.publish(topic("n1", "down"), b"real")
    assert ctl.next() == (topic("n1", "down"), b"real")
    ctl.publish(topic("n2", "down"), b"to n2")
    assert n2.next() == (topic("n2", "down"), b"to n2")
    assert n2.messages.empty() and ctl.messages.empty()
