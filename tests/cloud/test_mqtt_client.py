"""cloud.mqtt_client on a real Mosquitto: with reads served from one read-ahead buffer
and no self-wake per PUBACK, a QoS 1 subscriber still gets every message of a burst,
in order, small and large (packets split across reads), and its own publishes from
another thread still go out at once (acknowledged by the broker)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cloud.config import BrokerConfig
from cloud.mqtt_client import READ_AHEAD, Client
from cloud.transport import MqttTransport
from simulations.testbed.broker import MosquittoBroker

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]


def _connected(client: mqtt.Client, port: int, topic: str | None = None) -> None:
    ready = threading.Event()
    if topic is not None:
        client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        client.on_subscribe = lambda *_: ready.set()
    else:
        client.on_connect = lambda *_: ready.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    assert ready.wait(30)


def test_a_burst_arrives_whole_and_in_order(mosquitto: MosquittoBroker) -> None:
    got: list[bytes] = []
    done = threading.Event()
    payloads = [f"{i:06d}".encode() * (1 + i % 40) for i in range(3000)]
    payloads[1500] = b"L" * (READ_AHEAD + 12_345)  # one packet longer than a read
    sub = Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sub", protocol=mqtt.MQTTv5)
    sub.max_inflight_messages_set(1000)

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        got.append(msg.payload)
        if len(got) == len(payloads):
            done.set()

    sub.on_message = on_message
    _connected(sub, mosquitto.port, "burst/#")
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pub", protocol=mqtt.MQTTv5)
    pub.max_inflight_messages_set(1000)
    _connected(pub, mosquitto.port)
    try:
        infos = [pub.publish("burst/x", p, qos=1) for p in payloads]
        assert done.wait(60), f"{len(got)} of {len(payloads)} arrived"
        assert got == payloads
        # The subscriber's own publish, from this thread, is sent and acknowledged.
        own = sub.publish("elsewhere", b"ack", qos=1)
        # The publisher's PUBACKs can trail the subscriber's deliveries on a loaded machine.
        deadline = time.monotonic() + 60
        while not (own.is_published() and all(info.is_published() for info in infos)):
            assert time.monotonic() < deadline, "publishes not acknowledged within 60 s"
            time.sleep(0.01)
    finally:
        for client in (pub, sub):
            client.disconnect()
            client.loop_stop()


def test_publishes_with_and_without_properties_keep_their_fields(
    mosquitto: MosquittoBroker,
) -> None:
    """QoS 1 without properties is decoded by ``Client._handle_publish`` itself; with
    properties, or QoS 0, paho decodes it: each arrives with its topic, QoS, payload and
    properties, and the QoS 1 ones are acknowledged (the broker sends the next)."""
    got: list[mqtt.MQTTMessage] = []
    done = threading.Event()
    sub = Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sub2", protocol=mqtt.MQTTv5)

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        got.append(msg)
        if len(got) == 4:
            done.set()

    sub.on_message = on_message
    _connected(sub, mosquitto.port, "fields/#")
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pub2", protocol=mqtt.MQTTv5)
    _connected(pub, mosquitto.port)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = ("k", "v")
    try:
        pub.publish("fields/plain", b"one", qos=1)
        pub.publish("fields/props", b"two", qos=1, properties=props)
        pub.publish("fields/q0", b"three", qos=0)
        pub.publish("fields/plain/empty", b"", qos=1)
        assert done.wait(60), f"{len(got)} of 4 arrived"
    finally:
        for client in (pub, sub):
            client.disconnect()
            client.loop_stop()
    by_topic = {m.topic: m for m in got}
    assert {t: (m.qos, m.payload) for t, m in by_topic.items()} == {
        "fields/plain": (1, b"one"),
        "fields/props": (1, b"two"),
        "fields/q0": (0, b"three"),
        "fields/plain/empty": (1, b""),
    }
    assert by_topic["fields/plain"].properties is None
    assert by_topic["fields/props"].properties.UserProperty == [("k", "v")]
    assert all(not m.retain and not m.dup and m.mid for m in got if m.qos == 1)


def test_per_topic_callbacks_still_take_their_messages(mosquitto: MosquittoBroker) -> None:
    """Without per-topic callbacks ``on_message`` is called directly; once one is added,
    paho's lookup routes its topic's messages to it and only the rest to ``on_message``."""
    plain: list[str] = []
    special: list[str] = []
    done = threading.Event()
    sub = Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sub3", protocol=mqtt.MQTTv5)

    def note(into: list[str]) -> mqtt.CallbackOnMessage:
        def on(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
            into.append(msg.topic)
            if len(plain) + len(special) == 3:
                done.set()

        return on

    sub.on_message = note(plain)
    _connected(sub, mosquitto.port, "cb/#")
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pub3", protocol=mqtt.MQTTv5)
    _connected(pub, mosquitto.port)
    try:
        pub.publish("cb/a", b"1", qos=1).wait_for_publish(30)
        deadline = time.monotonic() + 30
        while not plain:
            assert time.monotonic() < deadline, "first message not delivered"
            time.sleep(0.01)
        sub.message_callback_add("cb/special", note(special))
        pub.publish("cb/special", b"2", qos=1)
        pub.publish("cb/b", b"3", qos=1)
        assert done.wait(30), f"{plain} {special}"
    finally:
        for client in (pub, sub):
            client.disconnect()
            client.loop_stop()
    assert sorted(plain) == ["cb/a", "cb/b"]
    assert special == ["cb/special"]


def test_every_command_on_down_carries_the_message_expiry(mosquitto: MosquittoBroker) -> None:
    """The transport builds the commands' MQTT 5 properties once; each command still
    arrives with its message expiry."""
    got: list[mqtt.MQTTMessage] = []
    done = threading.Event()
    node = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="node4", protocol=mqtt.MQTTv5)

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        got.append(msg)
        if len(got) == 2:
            done.set()

    node.on_message = on_message
    _connected(node, mosquitto.port, "continuum/v1/nodes/n4/down")
    loop = asyncio.new_event_loop()
    cfg = BrokerConfig(port=mosquitto.port, command_expiry_s=600)
    transport = MqttTransport(cfg, client_id="ctl4", loop=loop, on_message=lambda t, p: None)
    transport.start()
    try:
        assert transport.connected.wait(30)
        transport.send_down("n4", b"one")
        transport.send_down("n4", b"two")
        assert done.wait(30), f"{len(got)} of 2 arrived"
    finally:
        transport.stop()
        node.disconnect()
        node.loop_stop()
        loop.close()
    assert [m.payload for m in got] == [b"one", b"two"]
    # The broker passes on the time left: at most the expiry, never absent.
    assert all(0 < m.properties.MessageExpiryInterval <= 600 for m in got)


class _Chunks:
    """A socket whose reads return the given chunks, then "no data yet"."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def recv(self, bufsize: int) -> bytes:
        if not self.chunks:
            raise BlockingIOError
        return self.chunks.pop(0)

    def close(self) -> None:
        self.chunks.clear()


def _publish(topic: bytes, mid: int, payload: bytes) -> tuple[int, bytes, bytes]:
    """(type byte, body, whole packet) of an MQTT 5 QoS 1 PUBLISH without properties."""
    body = len(topic).to_bytes(2, "big") + topic + mid.to_bytes(2, "big") + b"\x00" + payload
    length, n = b"", len(body)
    while True:
        n, digit = divmod(n, 128)
        length += bytes([digit | (0x80 if n else 0)])
        if not n:
            break
    return 0x32, body, bytes([0x32]) + length + body


def test_packets_whole_in_the_buffer_and_cut_by_its_end_are_read_alike() -> None:
    """Every split of a stream of packets into two reads (a fixed header or a body cut
    anywhere) hands the same packets, in order, to paho's packet handler or (a plain
    PUBLISH wholly in the buffer) straight to the client's own publish handler."""
    packets = [_publish(b"t/a", 1, b"x" * 5), _publish(b"t/b", 2, b"y" * 300)]
    packets.append(_publish(b"t/c", 3, b""))
    stream = b"".join(p[2] for p in packets)
    for cut in range(1, len(stream)):
        client = Client(mqtt.CallbackAPIVersion.VERSION2, client_id="cut", protocol=mqtt.MQTTv5)
        seen: list[tuple[int, bytes]] = []

        def handle(c: Client = client, into: list[tuple[int, bytes]] = seen) -> MQTTErrorCode:
            into.append((c._in_packet["command"], bytes(c._in_packet["packet"])))
            return MQTTErrorCode.MQTT_ERR_SUCCESS

        def plain(
            header: int, body: bytes | bytearray, into: list[tuple[int, bytes]] = seen
        ) -> bool:
            into.append((header, bytes(body)))
            return True

        client._packet_handle = handle  # type: ignore[method-assign]
        client._plain_publish = plain  # type: ignore[method-assign]
        client._sock = _Chunks([stream[:cut], stream[cut:]])  # type: ignore[assignment]
        while client._packet_read() == MQTTErrorCode.MQTT_ERR_SUCCESS:
            pass
        assert seen == [(kind, body) for kind, body, _ in packets], cut


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_connected_means_subscribed(mosquitto: MosquittoBroker, protocol: str) -> None:
    """The transport reports connected (the controller's ``/readyz``) at the broker's SUBACK,
    not at the CONNACK: from then on a node's message reaches it (before, a hello published
    between the two found no subscriber and was dropped)."""
    loop = asyncio.new_event_loop()
    got: list[tuple[str, bytes]] = []
    cfg = BrokerConfig(port=mosquitto.port, protocol=protocol)
    transport = MqttTransport(
        cfg, client_id="ctl-ready", loop=loop, on_message=lambda t, p: got.append((t, p))
    )
    transport.start()
    node = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="n1")
    try:
        assert transport.connected.wait(30)
        _connected(node, mosquitto.port)
        node.publish("continuum/v1/nodes/n1/hello", b"hi", qos=1).wait_for_publish(30)
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:  # handed over on the asyncio loop
            loop.run_until_complete(asyncio.sleep(0.01))
        assert got == [("continuum/v1/nodes/n1/hello", b"hi")]
    finally:
        transport.stop()
        node.disconnect()
        node.loop_stop()
        loop.close()


def test_a_refused_subscription_is_not_ready(caplog: pytest.LogCaptureFixture) -> None:
    """A SUBACK refusing a subscription (an ACL that does not let these credentials read
    the nodes' topics; MQTT 5's 0x87) leaves the transport not connected, and says why.
    (Mosquitto's ACL file grants such subscriptions and filters deliveries, so the SUBACK
    is the broker's answer as paho hands it over.)"""
    loop = asyncio.new_event_loop()
    transport = MqttTransport(
        BrokerConfig(port=1), client_id="ctl", loop=loop, on_message=lambda t, p: None
    )
    transport._subscribe_mid = 7
    refused = ReasonCode(PacketTypes.SUBACK, identifier=0x87)
    granted = ReasonCode(PacketTypes.SUBACK, identifier=1)
    try:
        with caplog.at_level(logging.ERROR, logger="cloud.transport"):
            transport._handle_subscribe(transport.client, None, 7, [granted, refused] * 2, None)
        assert not transport.connected.is_set()
        assert "subscriptions to presence, up" in caplog.text
        transport._handle_subscribe(transport.client, None, 6, [granted] * 4, None)  # not ours
        assert not transport.connected.is_set()
        transport._handle_subscribe(transport.client, None, 7, [granted] * 4, None)
        assert transport.connected.is_set()
    finally:
        loop.close()
