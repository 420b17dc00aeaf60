"""The embedded (amqtt) broker: same interface as Mosquitto's launcher, and it
queues QoS 1 messages for an offline persistent session with a username, which
is what agents rely on across a partition."""

from __future__ import annotations

import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from simulations.testbed.embedded_broker import EmbeddedBroker

pytestmark = pytest.mark.timeout(60)


def client(broker: EmbeddedBroker, cid: str, *, clean: bool) -> mqtt.Client:
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=cid,
        clean_session=clean,
        protocol=mqtt.MQTTv311,
    )
    c.username_pw_set(cid, "unused")
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.connect(broker.host, broker.port)
    c.loop_start()
    assert connected.wait(10)
    return c


def test_persistent_session_queues_while_offline(tmp_path: Path) -> None:
    with EmbeddedBroker(tmp_path) as broker:
        assert broker.running and broker.port
        got: list[bytes] = []
        done = threading.Event()

        def on_message(_c: object, _u: object, m: mqtt.MQTTMessage) -> None:
            got.append(m.payload)
            if len(got) == 3:
                done.set()

        sub = client(broker, "agent-1", clean=False)
        subscribed = threading.Event()
        sub.on_subscribe = lambda *a: subscribed.set()
        sub.subscribe("continuum/v1/nodes/agent-1/down", qos=1)
        assert subscribed.wait(10)
        sub.disconnect()
        sub.loop_stop()

        pub = client(broker, "controller", clean=True)
        for i in range(3):
            pub.publish("continuum/v1/nodes/agent-1/down", f"m{i}", qos=1).wait_for_publish(10)
        pub.disconnect()
        pub.loop_stop()

        back = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id="agent-1",
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        back.username_pw_set("agent-1", "unused")
        back.on_message = on_message
        back.connect(broker.host, broker.port)
        back.loop_start()
        try:
            assert done.wait(15), got
            assert got == [b"m0", b"m1", b"m2"]
        finally:
            back.disconnect()
            back.loop_stop()
    assert not broker.running


def test_restart_keeps_the_port(tmp_path: Path) -> None:
    broker = EmbeddedBroker(tmp_path).start()
    try:
        port = broker.port
        broker.restart()
        assert broker.port == port and broker.running
    finally:
        broker.stop(kill=True)
