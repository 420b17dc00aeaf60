"""paho's MQTT client without two per-message costs of a busy subscriber.

The controller receives every node's messages (QoS 1) on one connection, and paho
spends as much time per message as the ingest does (bench_ingest, py-spy):

- **Reads**: paho asks the socket for each packet's first byte, then its length
  bytes one at a time, then its body: three or more ``recv`` calls per message. Here
  ``_sock_recv`` serves those reads from one read-ahead buffer, refilled with a
  single ``recv`` of up to :data:`READ_AHEAD` bytes, and ``loop_read`` keeps reading
  while the buffer holds bytes (``select`` only sees the socket's). A packet wholly in
  the buffer is taken from it at once (``_packet_read``); one cut by the buffer's end,
  or with a malformed length, is read by paho from where it starts.
- **Wake-ups**: every packet paho queues (each ``PUBACK``) also writes a byte to a
  socket pair to wake the network thread's ``select``. A packet the network thread
  queues itself needs no wake-up: that thread writes what is queued before it
  selects again. Packets queued by other threads (our publishes) still wake it.

- **Decoding**: under MQTT 5 paho builds a ``Properties`` object for every
  ``PUBLISH`` (about a tenth of the controller's time holding the GIL under ingest,
  py-spy ``--gil``). A QoS 1 ``PUBLISH`` whose property section is empty (every node
  message) is decoded here into the same ``MQTTMessage``, ``properties`` ``None`` (one
  wholly in the read-ahead buffer straight from it, without paho's in-packet dict and
  dispatch); any other packet, or with paho's logging on, goes to paho.
- **Delivery**: paho looks every message's topic up in its per-topic callbacks
  (``message_callback_add``) under a lock before it calls ``on_message``. A client that
  never registered one (the controller) calls ``on_message`` directly, with paho's
  callback lock and exception handling.
- **Acknowledgements**: paho queues each ``PUBACK`` as its own packet and writes each
  with its own ``send``. The ``PUBACK`` of a message decoded here is sent, as paho
  would, only after ``on_message`` returned, but together with those of every other
  message of the same read-ahead buffer: one packet, one ``send`` per burst. Acks not
  yet queued when the connection ends are dropped with it (the broker redelivers).

All touch paho internals (``_sock_recv``, ``_sock_close``, ``_packet_queue``,
``_sockpairW``, ``_thread``, ``_in_packet``, ``_handle_publish``, ``_handle_on_message``,
``_sock``, ``_manual_ack``, ``_logger``, ``_in_callback_mutex``, ``_userdata``,
``_packet_read``, ``_packet_handle``, ``_msgtime_mutex``) of the 2.x line pinned in
pyproject.toml; tests/cloud/test_mqtt_client.py and tests/cloud/test_controller_broker.py
run them on a real broker.
"""

from __future__ import annotations

import struct
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.exception import MalformedPacket

__all__ = ["READ_AHEAD", "Client"]

#: Bytes asked of the socket per ``recv``: many small messages at once, one packet at most.
READ_AHEAD = 262_144
#: A ``PUBACK`` as paho writes it (``_send_command_with_mid``): type, length 2, packet id.
_PUBACK = struct.Struct("!BBH")


class Client(mqtt.Client):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_buf = b""
        self._read_pos = 0
        self._pubacks: list[bytes] = []  # PUBACKs of this read-ahead buffer's messages
        self._filtered = False  # a per-topic callback was ever registered

    def message_callback_add(self, sub: str, callback: Any) -> None:
        self._filtered = True
        super().message_callback_add(sub, callback)

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._read_pos >= len(self._read_buf):
            # Raises BlockingIOError when nothing is there (paho's "try again later");
            # b"" is the peer's EOF, passed on as paho expects it.
            self._read_buf, self._read_pos = super()._sock_recv(READ_AHEAD), 0
        out = self._read_buf[self._read_pos : self._read_pos + bufsize]
        self._read_pos += len(out)
        return out

    def _sock_close(self) -> None:
        self._read_buf, self._read_pos = b"", 0  # never read an old connection's bytes
        self._pubacks.clear()  # nor acknowledge its packet ids on the next one
        super()._sock_close()

    def _packet_read(self) -> MQTTErrorCode:
        """paho's ``_packet_read`` for a packet wholly in the read-ahead buffer: its
        fixed header (type byte, 1-4 length bytes) and body taken in one step; paho's
        state afterwards is what its own read leaves. Anything else goes to paho."""
        buf, start = self._read_buf, self._read_pos
        end = len(buf)
        if self._in_packet["command"] != 0 or end - start < 2:
            return super()._packet_read()
        length, at = 0, start + 1
        for shift in (0, 7, 14, 21):  # the remaining length: 7 bits a byte, at most 4
            if at >= end:
                return super()._packet_read()
            byte = buf[at]
            at += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
        else:
            return super()._packet_read()  # a fifth length byte: paho refuses it
        if at + length > end:
            return super()._packet_read()
        self._read_pos = at + length
        command, packet = buf[start], buf[at : at + length]
        if command & 0xF0 == mqtt.PUBLISH and self._plain_publish(command, packet):
            rc = MQTTErrorCode.MQTT_ERR_SUCCESS  # paho's in-packet state untouched: idle
        else:
            rc = self._handle_in_packet(command, packet)
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()
        return rc

    def _handle_in_packet(self, command: int, packet: bytes) -> MQTTErrorCode:
        """paho's handling of one whole packet, through its in-packet state."""
        self._in_packet = {
            "command": command,
            "have_remaining": 1,
            "remaining_count": [],
            "remaining_mult": 1,
            "remaining_length": len(packet),
            "packet": bytearray(packet),
            "to_process": 0,
            "pos": 0,
        }
        try:
            rc = self._packet_handle()
        except MalformedPacket as exc:
            self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
            rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
        self._in_packet = {
            "command": 0,
            "have_remaining": 0,
            "remaining_count": [],
            "remaining_mult": 1,
            "remaining_length": 0,
            "packet": bytearray(b""),
            "to_process": 0,
            "pos": 0,
        }
        return rc

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._read_pos < len(self._read_buf):
            rc = super().loop_read(max_packets)
        if self._pubacks:
            acks, self._pubacks = b"".join(self._pubacks), []
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None:
                self._packet_queue(mqtt.PUBACK, acks, 0, 1)
        return rc

    def _packet_queue(
        self,
        command: int,
        packet: bytes | bytearray,
        mid: int,
        qos: int,
        info: mqtt.MQTTMessageInfo | None = None,
    ) -> MQTTErrorCode:
        if threading.current_thread() is not self._thread:
            return super()._packet_queue(command, packet, mid, qos, info)
        wake, self._sockpairW = self._sockpairW, None  # queued by the network thread itself
        try:
            return super()._packet_queue(command, packet, mid, qos, info)
        finally:
            self._sockpairW = wake

    def _handle_publish(self) -> MQTTErrorCode:
        if self._plain_publish(self._in_packet["command"], self._in_packet["packet"]):
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._handle_publish()  # paho decodes, checks and logs it

    def _plain_publish(self, header: int, packet: bytes | bytearray) -> bool:
        """Deliver and queue the ``PUBACK`` of a QoS 1 ``PUBLISH`` with an empty property
        section (``header``: its fixed header's first byte; ``packet``: its body); ``False``,
        having done nothing, for any other (paho's to handle)."""
        if not (
            header & 0x06 == 0x02  # QoS 1
            and self._protocol == mqtt.MQTTv5
            and not self._manual_ack
            and self.on_log is None
            and self._logger is None
            and len(packet) >= 2
        ):
            return False
        props = 4 + int.from_bytes(packet[:2], "big")  # topic length, topic, packet id
        if len(packet) <= props or packet[props] != 0:  # properties: paho's
            return False
        message = mqtt.MQTTMessage(
            mid=int.from_bytes(packet[props - 2 : props], "big"), topic=bytes(packet[2 : props - 2])
        )
        message.dup = bool(header & 0x08)
        message.qos = 1
        message.retain = bool(header & 0x01)
        message.payload = bytes(packet[props + 1 :])
        message.timestamp = mqtt.time_func()
        if self._filtered:
            self._handle_on_message(message)
        else:
            self._deliver(message)
        self._pubacks.append(_PUBACK.pack(mqtt.PUBACK, 2, message.mid))  # sent by loop_read
        return True

    def _deliver(self, message: mqtt.MQTTMessage) -> None:
        """``_handle_on_message`` without per-topic callbacks: ``on_message`` under the
        callback lock; its exception raised unless ``suppress_exceptions``."""
        on_message = self.on_message
        if on_message is None:
            return
        with self._in_callback_mutex:
            try:
                on_message(self, self._userdata, message)
            except Exception:
                if not self.suppress_exceptions:
                    raise
