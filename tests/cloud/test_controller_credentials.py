"""Enrolment: the password entry (hashed in Python) works against a real broker."""

from __future__ import annotations

from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from cloud.credentials import set_password
from simulations.testbed.broker import MosquittoBroker


def _can_connect(port: int, user: str, password: str) -> bool:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{user}")
    client.username_pw_set(user, password)
    try:
        client.connect("127.0.0.1", port)
    except OSError:
        return False
    result: list[bool] = []
    client.on_connect = lambda _c, _u, _f, rc, _p: result.append(not rc.is_failure)
    client.loop_start()
    try:
        for _ in range(200):
            if result:
                return result[0]
            import time

            time.sleep(0.05)
        return False
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.broker
def test_generated_entry_authenticates(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    pw = set_password(passwd, "edge-1")
    set_password(passwd, "edge-2", "fixed")
    broker = MosquittoBroker(
        workdir=tmp_path / "b", extra_config=[f"password_file {passwd}", "allow_anonymous false"]
    )
    broker.start()
    try:
        assert _can_connect(broker.port, "edge-1", pw)
        assert _can_connect(broker.port, "edge-2", "fixed")
        assert not _can_connect(broker.port, "edge-1", "wrong")
    finally:
        broker.stop()


def test_invalid_node_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        set_password(tmp_path / "passwd", "a/b")
