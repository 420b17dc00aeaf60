"""Which broker a run gets: Mosquitto when asked for or installed, else the embedded one
(:mod:`.embedded_broker`), started and returned with the MQTT protocol the controller must
speak (Mosquitto: 5; amqtt: 3.1.1). Used by the runner and the testbed benchmark."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from .broker import BrokerError, MosquittoBroker, find_mosquitto
from .embedded_broker import EmbeddedBroker

__all__ = ["READY_TIMEOUT_S", "TOKEN", "Broker", "TestbedError", "start_broker"]

#: The controller's REST API bearer token in a run.
TOKEN = "testbed-token"
#: How long the controller and each agent get to write their ready file.
READY_TIMEOUT_S = 30.0


class TestbedError(RuntimeError):
    """The run could not be set up (broker, controller or an agent did not start)."""

    __test__ = False  # not a pytest test class, despite the name


class Broker(Protocol):
    host: str
    port: int

    def stop(self, *, kill: bool = False, timeout_s: float = 5.0) -> None: ...


def start_broker(kind: str, workdir: Path, users: Mapping[str, str]) -> tuple[Broker, str]:
    """Start the broker; returns it and the MQTT protocol the controller must speak.

    ``auto`` prefers Mosquitto and falls back to the embedded broker."""
    if kind not in ("auto", "mosquitto", "embedded"):
        raise TestbedError(f"unknown broker {kind!r} (auto, mosquitto, embedded)")
    if kind == "mosquitto" or (kind == "auto" and find_mosquitto() is not None):
        has_passwd = any(
            os.access(p, os.X_OK)
            for p in ("/usr/bin/mosquitto_passwd", "/usr/sbin/mosquitto_passwd")
        )
        broker = MosquittoBroker(workdir, users=dict(users) if has_passwd else None)
        try:
            return broker.start(), "5"
        except BrokerError as exc:
            raise TestbedError(str(exc)) from exc
    embedded = EmbeddedBroker(workdir, users=dict(users))
    try:
        return embedded.start(), embedded.mqtt_protocol
    except BrokerError as exc:
        raise TestbedError(str(exc)) from exc
