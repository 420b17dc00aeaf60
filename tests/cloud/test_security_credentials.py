"""Broker credentials at rest (issue 11, finding 6): hashed in Python (no password in any
argv), the controller's name and existing nodes protected, the password file written
atomically and never readable by others, ``credentials list|remove``."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import queue
import stat
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cloud_harness import make_config

from cloud.credentials import (
    CredentialsError,
    add_node,
    add_parser,
    hash_password,
    remove_node,
    set_password,
    users,
)
from cloud.enroll import EnrolError, enroll
from simulations.testbed.broker import MosquittoBroker


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_no_process_is_started_with_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_process(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a process was started: {args}")

    monkeypatch.setattr(subprocess, "run", no_process)
    monkeypatch.setattr(subprocess, "Popen", no_process)
    password = add_node(tmp_path / "passwd", "edge-1")
    line = (tmp_path / "passwd").read_text()
    assert line.startswith("edge-1:$7$101$") and password not in line


def test_the_controller_and_existing_nodes_are_protected(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    ctl = set_password(passwd, "controller")
    first = add_node(passwd, "edge-1")
    for name in ("controller", "ops"):
        with pytest.raises(CredentialsError, match="reserved"):
            add_node(passwd, name, reserved={"controller", "ops"})
    with pytest.raises(CredentialsError, match="reserved"):
        remove_node(passwd, "controller")
    with pytest.raises(CredentialsError, match="already has credentials"):
        add_node(passwd, "edge-1")
    with pytest.raises(CredentialsError):
        add_node(passwd, "a/b")
    assert (passwd.read_text().count("controller:"), users(passwd)) == (1, ["controller", "edge-1"])
    second = add_node(passwd, "edge-1", rotate=True)
    assert second != first and users(passwd) == ["controller", "edge-1"]
    assert ctl not in passwd.read_text()


@pytest.mark.broker
def test_rotated_and_removed_entries_take_effect_on_a_real_broker(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    old = add_node(passwd, "edge-1")
    new = add_node(passwd, "edge-1", rotate=True)
    keep = add_node(passwd, "edge-2")
    assert remove_node(passwd, "edge-2") and not remove_node(passwd, "edge-2")
    broker = MosquittoBroker(
        workdir=tmp_path / "b", extra_config=[f"password_file {passwd}", "allow_anonymous false"]
    ).start()
    try:
        assert _login(broker.port, "edge-1", new)
        assert not _login(broker.port, "edge-1", old)
        assert not _login(broker.port, "edge-2", keep)
    finally:
        broker.stop()


def _login(port: int, user: str, password: str) -> bool:
    result: queue.Queue[bool] = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{user}")
    client.username_pw_set(user, password)
    client.on_connect = lambda _c, _u, _f, code, _p: result.put(not code.is_failure)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        return result.get(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_the_file_is_0600_atomic_and_keeps_a_stricter_existing_mode(tmp_path: Path) -> None:
    passwd = tmp_path / "etc" / "passwd"
    old_umask = os.umask(0)  # a permissive umask must not leak into the file
    try:
        add_node(passwd, "edge-1")
    finally:
        os.umask(old_umask)
    assert _mode(passwd) == 0o600
    passwd.chmod(0o644)  # as the issue found it: readable by every local user
    add_node(passwd, "edge-2")
    assert _mode(passwd) == 0o640  # the broker's group may read it, others never
    passwd.chmod(0o600)
    remove_node(passwd, "edge-2")
    assert _mode(passwd) == 0o600
    assert sorted(p.name for p in passwd.parent.iterdir()) == ["passwd"]  # no temp left


def test_hash_is_mosquitto_2_pbkdf2_sha512() -> None:
    text = hash_password("pw", salt=b"0123456789ab")
    _, kind, rounds, salt, digest = text.split("$")
    assert (kind, rounds, base64.b64decode(salt)) == ("7", "101", b"0123456789ab")
    assert base64.b64decode(digest) == hashlib.pbkdf2_hmac("sha512", b"pw", b"0123456789ab", 101)


def test_credentials_list_and_remove_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    passwd = tmp_path / "passwd"
    set_password(passwd, "controller")
    add_node(passwd, "edge-1")
    add_node(passwd, "edge-2")
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    add_parser(
        parser.add_subparsers(dest="command"), [], lambda _a: (passwd, frozenset({"controller"}))
    )

    def run(*argv: str) -> int:
        args = parser.parse_args(list(argv))
        return int(args.func(args))

    assert run("--json", "credentials", "list") == 0
    assert json.loads(capsys.readouterr().out) == {"nodes": ["edge-1", "edge-2"]}
    assert run("credentials", "remove", "edge-1") == 0
    assert run("credentials", "remove", "edge-1") == 1
    assert run("credentials", "remove", "controller") == 2
    capsys.readouterr()
    assert run("credentials", "list") == 0
    assert capsys.readouterr().out.split() == ["edge-2"]


def test_enroll_refuses_the_controller_and_a_silent_rotation(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        broker={"username": "ctl", "password_file": "passwd"},
        agents={"tls": False},
    )
    now = datetime.now(UTC)
    first = enroll(cfg, "edge-1", now=now)
    for name in ("controller", "ctl"):
        with pytest.raises(EnrolError, match="reserved"):
            enroll(cfg, name, now=now)
    with pytest.raises(EnrolError, match="--rotate"):
        enroll(cfg, "edge-1", now=now)
    second = enroll(cfg, "edge-1", now=now, rotate=True)
    assert second.password != first.password
    assert users(tmp_path / "passwd") == ["edge-1"]
