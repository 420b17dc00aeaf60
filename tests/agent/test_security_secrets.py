"""Secrets on the device (issue 11): the broker password comes from a 0600 file or from an
environment variable the agent takes out of its environment (also out of
``/proc/<pid>/environ``), tasks never see it; every file holding a secret is private from its
creation, in a private state directory."""

from __future__ import annotations

import logging
import os
import pwd
import stat
from pathlib import Path
from typing import Any

import pytest
from agent_harness import AgentProcess, sh, spec, wait_until

from edge_agent.cli import main
from edge_agent.config import PASSWORD_ENV, load_config, take_environ
from shared.errors import ValidationError

SECRET = "pw-Zq8-never-shown"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _config(path: Path, mode: int, **broker: str) -> Path:
    lines = ['[node]\nid = "edge-1"\n[broker]\nhost = "127.0.0.1"']
    lines += [f'{key} = "{value}"' for key, value in broker.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(mode)
    return path


def test_password_file_must_be_private(tmp_path: Path) -> None:
    secret = tmp_path / "broker.password"
    secret.write_text(SECRET + "\n", encoding="utf-8")
    config = _config(tmp_path / "agent.toml", 0o644, password_file=str(secret))
    secret.chmod(0o600)
    assert load_config(config).broker.password == SECRET
    secret.chmod(0o640)
    with pytest.raises(ValidationError, match="chmod 600"):
        load_config(config)


def test_an_inline_password_in_a_readable_config_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(tmp_path / "agent.toml", 0o644, password=SECRET)
    with caplog.at_level(logging.WARNING, logger="edge_agent.config"):
        load_config(config)
    assert "chmod 600" in caplog.text and SECRET not in caplog.text
    caplog.clear()
    config.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="edge_agent.config"):
        load_config(config)
    assert not caplog.records


def test_the_environment_password_is_taken_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, SECRET)
    config = _config(tmp_path / "agent.toml", 0o600)
    assert load_config(config).broker.password == SECRET
    assert PASSWORD_ENV not in os.environ
    assert take_environ(PASSWORD_ENV) is None


@pytest.mark.e2e
@pytest.mark.broker
def test_tasks_never_see_the_broker_password(
    tmp_path: Path, mosquitto_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent gets its password from the environment (as the shipped unit's
    EnvironmentFile gives it); a task running as the agent's own user reads its environment,
    its watchdog's and the agent's ``/proc/<pid>/environ``: the password is in none."""
    broker = mosquitto_factory(users={"edge-1": SECRET})
    monkeypatch.setenv(PASSWORD_ENV, SECRET)
    agent = AgentProcess(
        tmp_path / "edge-1",
        broker.port,
        broker={"username": "edge-1"},
        executor={"run_as": ""},
    )
    try:
        agent.start()
        wait_until(lambda: agent.status()["link_up"], 20, "the agent to log in with it")
        pid = agent.status()["pid"]
        probe = (
            f"(env; cat /proc/$PPID/environ /proc/{pid}/environ) | tr '\\0' '\\n' > seen; "
            f'echo "[$(grep -c ^PATH= seen), $(grep -c {SECRET} seen)]"'
        )
        assert agent.api("POST", "/v1/tasks", spec("edge-1:peek", sh(probe)))[0] == 201
        wait_until(lambda: agent.task_status("edge-1:peek") == "succeeded", 20, "the probe")
        record = agent.api("GET", "/v1/tasks/edge-1:peek")[1]["record"]
        (attempt,) = record["attempts"].values()
        assert attempt["result"] == [3, 0]  # three environments read, the password in none
    finally:
        agent.cleanup()


@pytest.mark.e2e
@pytest.mark.broker
@pytest.mark.parametrize("run_as", ["", "nobody"])
def test_state_files_are_private(tmp_path: Path, mosquitto: Any, run_as: str) -> None:
    if run_as and os.geteuid() != 0:
        pytest.skip("switching users needs root")
    agent = AgentProcess(
        tmp_path / "edge-1", mosquitto.port, api={"transport": "tcp"}, executor={"run_as": run_as}
    )
    state = agent.state_dir
    state.mkdir(parents=True)
    state.chmod(0o755)
    (state / "journal.sqlite").touch(mode=0o644)  # as an older version left it (empty: new)
    try:
        agent.start()
        assert agent.api("POST", "/v1/tasks", spec("edge-1:t", ["true"]))[0] == 201
        wait_until(lambda: agent.task_status("edge-1:t") == "succeeded", 20, "a task to run")
        group = pwd.getpwnam(run_as).pw_gid if run_as else None
        for directory in (state, state / "runs"):
            assert _mode(directory) == (0o710 if group is not None else 0o700)
            assert directory.stat().st_uid == os.geteuid()
            if group is not None:
                assert directory.stat().st_gid == group
        for name in ("journal.sqlite", "journal.sqlite-wal", "agent.ready.json", "api.token"):
            assert _mode(state / name) == 0o600, name
    finally:
        agent.cleanup()


def test_init_writes_the_config_private_from_its_creation(tmp_path: Path) -> None:
    target = tmp_path / "agent.toml"
    assert main(["init", "--path", str(target), "--node-id", "edge-7"]) == 0
    assert _mode(target) == 0o600
    target.chmod(0o644)
    assert main(["init", "--path", str(target), "--node-id", "edge-7", "--force"]) == 0
    assert _mode(target) == 0o600
