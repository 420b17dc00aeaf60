"""The real processes of a run: config generation and start/kill/stop of one
agent (``edge-agent run``) or the controller (``cloud-controller run``).

This is the thin layer that knows the agent's and the controller's config keys
(docs/agent.md, docs/controller.md) and their ``*.ready.json`` files; nothing
else in the testbed does. Both are started in their own session with output to
a log file in their working directory, so ``kill -9`` hits exactly the process
(an agent's task watchdogs survive it, as on a real device).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .broker import stop_process
from .plan import NodeSpec

__all__ = [
    "AgentProcess",
    "ControllerProcess",
    "Managed",
    "ProcessError",
    "dump_command",
    "environ_for_children",
    "to_toml",
]


class ProcessError(RuntimeError):
    """A process did not come up (exited, or wrote no ready file in time)."""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
        )
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def to_toml(doc: Mapping[str, Any]) -> str:
    """Two-level TOML (top-level keys, then ``[section]`` tables): all our configs need."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, Mapping)]
    for section, table in doc.items():
        if isinstance(table, Mapping):
            lines.append(f"\n[{section}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _python_entry(module: str) -> list[str]:
    """Run ``module.main()`` with the testbed's interpreter, whether or not the
    console scripts are on PATH."""
    code = f"import sys; from {module} import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code]


#: The module of each program's command line (its ``main``).
_PROGRAMS = {"edge-agent": "edge_agent.cli", "cloud-controller": "cloud.cli"}


def dump_command(program: str, config: Path) -> list[str]:
    """``edge-agent dump`` or ``cloud-controller dump`` of the process configured by
    ``config`` (the JSON document of ``edge_agent/dump.py`` / ``cloud/dump.py``)."""
    return [*_python_entry(_PROGRAMS[program]), "dump", "--config", str(config)]


@dataclass
class Managed:
    """One supervised process: a generated config, a log, a ready file."""

    name: str
    workdir: Path
    ready_file: Path
    argv_prefix: list[str] = field(default_factory=list)  # e.g. ["ip", "netns", "exec", ns]
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    starts: int = field(default=0, init=False)
    ready: dict[str, Any] = field(default_factory=dict, init=False)
    paused: bool = field(default=False, init=False)

    def command(self) -> list[str]:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self) -> None:
        self.ready_file.unlink(missing_ok=True)
        self.starts += 1
        self.paused = False
        log = open(self.workdir / "process.log", "ab")  # noqa: SIM115 - handed to the child
        log.write(f"--- start {self.starts}: {shlex.join(self.command())}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [*self.argv_prefix, *self.command()],
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=environ_for_children(),
        )
        log.close()

    def wait_ready(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ProcessError(
                    f"{self.name} exited with {self.proc.returncode} before it was ready; "
                    f"last output:\n{self.log_tail()}"
                )
            try:
                self.ready = json.loads(self.ready_file.read_text(encoding="utf-8"))
                return self.ready
            except (FileNotFoundError, json.JSONDecodeError):
                time.sleep(0.05)
        raise ProcessError(
            f"{self.name} wrote no {self.ready_file.name} in {timeout_s:.0f} s:\n{self.log_tail()}"
        )

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return (self.workdir / "process.log").read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """``kill -9`` the process itself (not its children: they are on their own)."""
        if self.alive and self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.paused = False

    def pause(self) -> None:
        """``SIGSTOP`` the process itself: frozen, its sockets open but silent, its tasks'
        watchdogs running on (a device that hangs, or a VM suspended)."""
        if self.alive and self.proc is not None and not self.paused:
            self.proc.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        """``SIGCONT`` a paused process."""
        if self.paused and self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def terminate(self) -> None:
        """Send SIGTERM without waiting (stop many processes in parallel, then ``stop``);
        a paused process is resumed first, or the signal would wait for it."""
        self.resume()
        if self.alive and self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, wait, then SIGKILL. Returns the exit status."""
        self.resume()
        return stop_process(self.proc, timeout_s=timeout_s)


@dataclass
class AgentProcess(Managed):
    node: NodeSpec | None = None
    broker_host: str = "127.0.0.1"
    broker_port: int = 0
    overrides: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        node: NodeSpec,
        workdir: Path,
        *,
        broker_host: str,
        broker_port: int,
        overrides: Mapping[str, Any] | None = None,
        argv_prefix: list[str] | None = None,
    ) -> AgentProcess:
        workdir.mkdir(parents=True, exist_ok=True)
        agent = cls(
            name=node.node_id,
            workdir=workdir,
            ready_file=workdir / "state" / "agent.ready.json",
            argv_prefix=list(argv_prefix or []),
            node=node,
            broker_host=broker_host,
            broker_port=broker_port,
            overrides=dict(overrides or {}),
        )
        agent.config_path.write_text(to_toml(agent.config()), encoding="utf-8")
        return agent

    @property
    def config_path(self) -> Path:
        return self.workdir / "agent.toml"

    @property
    def journal_path(self) -> Path:
        return self.workdir / "state" / "journal.sqlite"

    def config(self) -> dict[str, Any]:
        assert self.node is not None
        base: dict[str, Any] = {
            "log_level": "info",
            "node": {
                "id": self.node.node_id,
                "tier": self.node.tier,
                "labels": dict(self.node.labels),
                "state_dir": str(self.workdir / "state"),
            },
            "broker": {
                "host": self.broker_host,
                "port": self.broker_port,
                "username": self.node.node_id,
                "password": self.node.node_id,
                "keepalive_s": 5,
                "reconnect_min_s": 0.5,
                "reconnect_max_s": 4.0,
            },
            # TCP with the agent's token (api.token in its state dir): local submissions go
            # through aiohttp (simulations/testbed/local.py); the default is a Unix socket.
            "api": {"transport": "tcp", "host": "127.0.0.1", "port": 0},
            "discovery": {"enabled": False},
            # T of docs/agent.md, shortened so connectivity grades move within a short run.
            "autonomy": {"period_s": 6.0, "telemetry_s": 2.0},
            # The testbed runs tasks as itself: run directories under a private tmp
            # are not reachable by an unprivileged user.
            "executor": {
                "run_as": "",
                "max_concurrent": 4,
                "kill_grace_s": 2.0,
                "shutdown_grace_s": 5.0,
            },
        }
        return _merge(base, self.overrides)

    def command(self) -> list[str]:
        return [*_python_entry("edge_agent.cli"), "run", "--config", str(self.config_path)]


@dataclass
class ControllerProcess(Managed):
    broker_host: str = "127.0.0.1"
    broker_port: int = 0
    token: str = "testbed-token"
    mqtt_protocol: str = "5"
    overrides: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        workdir: Path,
        *,
        broker_host: str,
        broker_port: int,
        mqtt_protocol: str = "5",
        token: str = "testbed-token",
        overrides: Mapping[str, Any] | None = None,
    ) -> ControllerProcess:
        workdir.mkdir(parents=True, exist_ok=True)
        ctl = cls(
            name="controller",
            workdir=workdir,
            ready_file=workdir / "state" / "controller.ready.json",
            broker_host=broker_host,
            broker_port=broker_port,
            token=token,
            mqtt_protocol=mqtt_protocol,
            overrides=dict(overrides or {}),
        )
        ctl.config_path.write_text(to_toml(ctl.config()), encoding="utf-8")
        return ctl

    @property
    def config_path(self) -> Path:
        return self.workdir / "controller.toml"

    @property
    def db_path(self) -> Path:
        return self.workdir / "state" / "controller.db"

    def config(self) -> dict[str, Any]:
        base: dict[str, Any] = {
            "controller": {"node_id": "controller", "state_dir": "state", "tick_s": 0.25},
            "api": {"host": "127.0.0.1", "port": 0, "token": self.token},
            "broker": {
                "host": self.broker_host,
                "port": self.broker_port,
                "username": "controller",
                "password": "controller",
                "protocol": self.mqtt_protocol,
                "keepalive_s": 5,
            },
            # Failure detection scaled to a run of a minute: suspect after ~3 s of
            # silence, confirm after 10 s (by default: 120 s of silence, 40 s heartbeats
            # missed 3 times, confirmed 30 s later; a last will is heard at once).
            "health": {"heartbeat_interval_s": 1.0, "suspect_missed": 3, "confirm_after_s": 10.0},
            "consistency": {"lease_s": 10.0, "lease_margin_s": 2.0, "upgrade_dwell_s": 20.0},
        }
        return _merge(base, self.overrides)

    def command(self) -> list[str]:
        return [*_python_entry("cloud.cli"), "run", "--config", str(self.config_path)]

    @property
    def api_url(self) -> str:
        port = self.ready.get("api_port") or self.ready.get("port")
        host = self.ready.get("api_host") or self.ready.get("host") or "127.0.0.1"
        return f"http://{host}:{port}"


def environ_for_children() -> dict[str, str]:
    """The environment processes inherit: unbuffered output, and no ledger path
    leaking from the testbed's own environment into the daemons."""
    env = dict(os.environ)
    env.pop("CONTINUUM_LEDGER", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env
