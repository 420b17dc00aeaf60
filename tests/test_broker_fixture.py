"""The broker fixture starts a real Mosquitto: a retained message survives a restart
(persistence on, same port), and a custom user/ACL set-up refuses a bad password."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import pytest

pytestmark = pytest.mark.broker


def _client(broker, client_id: str, **auth: str) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    if auth:
        client.username_pw_set(auth["username"], auth["password"])
    return client


def _retained(broker, topic: str) -> bytes | None:
    got = threading.Event()
    payload: list[bytes] = []
    client = _client(broker, "reader")

    def on_message(_c, _u, msg) -> None:
        payload.append(msg.payload)
        got.set()

    client.on_message = on_message
    client.connect(broker.host, broker.port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    got.wait(3)
    client.loop_stop()
    client.disconnect()
    return payload[0] if payload else None


def test_retained_message_survives_restart(mosquitto) -> None:
    writer = _client(mosquitto, "writer")
    writer.connect(mosquitto.host, mosquitto.port)
    writer.loop_start()
    writer.publish("continuum/test", b"hello", qos=1, retain=True).wait_for_publish(3)
    writer.loop_stop()
    writer.disconnect()
    assert _retained(mosquitto, "continuum/test") == b"hello"
    port = mosquitto.port
    mosquitto.restart()
    assert mosquitto.port == port
    assert _retained(mosquitto, "continuum/test") == b"hello"


def test_password_is_enforced(mosquitto_factory) -> None:
    broker = mosquitto_factory(users={"alice": "secret"})
    results: dict[str, object] = {}
    for name, password in (("good", "secret"), ("bad", "wrong")):
        client = _client(broker, f"c-{name}", username="alice", password=password)
        done = threading.Event()

        def on_connect(_c, _u, _f, reason_code, _p, name=name, done=done) -> None:
            results[name] = reason_code.is_failure
            done.set()

        client.on_connect = on_connect
        client.connect(broker.host, broker.port)
        client.loop_start()
        done.wait(3)
        client.loop_stop()
        client.disconnect()
    assert results == {"good": False, "bad": True}
