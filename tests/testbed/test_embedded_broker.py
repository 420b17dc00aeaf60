"""The embedded (amqtt) broker: same interface as Mosquitto's launcher, and it
queues QoS 1 messages for an offline persistent session with a username, which
is what agents rely on across a partition; with simulations/testbed/amqtt_fixes.py it
also keeps them through a cut link and a reconnect."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from simulations.testbed.embedded_broker import EmbeddedBroker
from simulations.testbed.proxy import FaultProxy

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


class Inbox:
    """Messages a paho client received, with a condition to wait on."""

    def __init__(self) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.cond = threading.Condition()

    def on_message(self, _c: object, _u: object, m: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.got.append((m.topic, m.payload))
            self.cond.notify_all()

    def wait_for(self, pred: object, timeout: float = 30.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: pred(self.got), timeout)  # type: ignore[operator]


class ProxyThread:
    """A FaultProxy on its own event loop thread (the broker client here is paho, threaded)."""

    def __init__(self, port: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.proxy = self.call(FaultProxy("agent-1", "127.0.0.1", port, seed=1).start())

    def call(self, coro: object) -> FaultProxy:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)  # type: ignore[arg-type]

    def do(self, fn: object) -> None:
        async def run() -> None:
            fn()  # type: ignore[operator]

        self.call(run())

    def close(self) -> None:
        self.call(self.proxy.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_cut_client_gets_every_qos1_message_after_the_heal(tmp_path: Path) -> None:
    """amqtt_fixes 1-3: a client behind a cut link is disconnected by its keep-alive (its
    will fires), a message written into the dead connection before that is kept and re-sent,
    messages published after it are queued, and the reconnect (take-overs by connections
    held during the cut included) delivers all of them."""
    with EmbeddedBroker(tmp_path) as broker:
        link = ProxyThread(broker.port)
        wills, inbox = Inbox(), Inbox()
        watcher = client(broker, "watcher", clean=True)
        watcher.on_message = wills.on_message
        watcher.subscribe("continuum/v1/nodes/agent-1/presence", qos=1)
        agent = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id="agent-1",
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        agent.username_pw_set("agent-1", "unused")
        agent.will_set("continuum/v1/nodes/agent-1/presence", b"offline", qos=1)
        agent.reconnect_delay_set(1, 2)
        agent.on_message = inbox.on_message
        subscribed = threading.Event()
        agent.on_subscribe = lambda *a: subscribed.set()
        agent.connect("127.0.0.1", link.proxy.port, keepalive=1)
        agent.loop_start()
        pub = client(broker, "controller", clean=True)
        try:
            agent.subscribe("continuum/v1/nodes/agent-1/down", qos=1)
            assert subscribed.wait(10)
            link.do(lambda: link.proxy.cut("both"))
            pub.publish("continuum/v1/nodes/agent-1/down", b"m0", qos=1).wait_for_publish(10)
            assert wills.wait_for(lambda got: got), "the broker never gave up on the cut client"
            for m in (b"m1", b"m2"):
                pub.publish("continuum/v1/nodes/agent-1/down", m, qos=1).wait_for_publish(10)
            link.do(link.proxy.clear)
            want = {b"m0", b"m1", b"m2"}
            assert inbox.wait_for(lambda got: want <= {p for _t, p in got}), inbox.got
        finally:
            for c in (agent, pub, watcher):
                c.disconnect()
                c.loop_stop()
            link.close()


def test_reconnect_gets_retained_messages_of_its_own_subscriptions_only(tmp_path: Path) -> None:
    """amqtt_fixes 4: another client's subscription to every node's presence does not make
    the broker send those retained messages to an agent that reconnects."""
    with EmbeddedBroker(tmp_path) as broker:
        watcher = client(broker, "controller", clean=True)
        watcher.subscribe("continuum/v1/nodes/+/presence", qos=1)
        watcher.publish(
            "continuum/v1/nodes/agent-2/presence", b"online", qos=1, retain=True
        ).wait_for_publish(10)
        first = client(broker, "agent-1", clean=False)
        subscribed = threading.Event()
        first.on_subscribe = lambda *a: subscribed.set()
        first.subscribe("continuum/v1/nodes/agent-1/down", qos=1)
        assert subscribed.wait(10)
        first.disconnect()
        first.loop_stop()
        inbox = Inbox()
        again = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id="agent-1",
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        again.username_pw_set("agent-1", "unused")
        again.on_message = inbox.on_message
        connected = threading.Event()
        again.on_connect = lambda *a: connected.set()
        again.connect(broker.host, broker.port)
        again.loop_start()
        try:
            assert connected.wait(10)
            watcher.publish("continuum/v1/nodes/agent-1/down", b"marker", qos=1)
            assert inbox.wait_for(lambda got: (got or [("", b"")])[-1][1] == b"marker")
            assert inbox.got == [("continuum/v1/nodes/agent-1/down", b"marker")]
        finally:
            for c in (again, watcher):
                c.disconnect()
                c.loop_stop()
