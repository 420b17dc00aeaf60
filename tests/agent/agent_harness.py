"""Test harness for the agent end to end: a *scripted cloud* (a paho client speaking
``shared.protocol`` on a real Mosquitto) and real ``edge-agent run`` processes.

The scripted cloud does only what a test tells it: by default it acknowledges every ``up``
batch and heartbeat (cumulative ``ack``), merges the deltas it receives into its own replica
(``shared.crdt`` merge, like the controller), and answers lease requests through
``lease_answer`` (``None``: silence). Tests drive it with :meth:`ScriptedCloud.send`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge_agent import _leftovers
from edge_agent.api import LocalClient
from shared.clocks import HybridClock
from shared.crdt import TaskRecord, request_cancel, visible_status
from shared.protocol import (
    Ack,
    Cancel,
    Deltas,
    Envelope,
    Heartbeat,
    LeaseGrant,
    LeaseRequest,
    Place,
    decode_from,
    encode,
    parse_topic,
    subscription,
    topic,
)

ROOT = Path(__file__).resolve().parents[2]
CLOUD_ID = "cloud"


# A wait's deadline only bounds how long a *failing* test takes: a passing one returns as
# soon as its condition holds. The suite runs in parallel workers and must pass with two
# CPU burners beside it, where an agent's timers (disconnect grading, resubscribe) stretch
# well past what a test's author measured on a quiet machine; so no wait gives up sooner.
MIN_DEADLINE_S = 60.0


def kill_tasks_of(runs: Path) -> None:
    """SIGKILL what the attempts under ``runs`` left running, the way the agent does for an
    attempt whose supervisor is gone (``_leftovers.kill``: by its marker). Not by the pgid a
    ``started.json`` recorded: once that group ended, the number may be another test's
    process group (pids are reused), and killing it fails that test instead."""
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(runs):  # a snapshot: the agent may be removing directories
            _leftovers.kill(runs / name, None)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test with ``what``.

    ``timeout`` is raised to :data:`MIN_DEADLINE_S` (see there)."""
    timeout = max(timeout, MIN_DEADLINE_S)
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(step)


class ScriptedCloud:
    """The controller's side of the protocol, scripted by the test."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: dict[str, str] | None = None,
    ) -> None:
        """``tls``: ``ca_certs``, ``certfile``, ``keyfile`` as paho's ``tls_set`` takes them."""
        self.clock = HybridClock(CLOUD_ID)
        self.lock = threading.Lock()
        self.received: list[tuple[str, str, Envelope]] = []  # (node, kind, envelope)
        self.records: dict[str, TaskRecord] = {}
        self.auto_ack = True
        self.lease_answer: Callable[[str, LeaseRequest], LeaseGrant | None] | None = None
        self.lease_requests: list[tuple[float, LeaseRequest]] = []
        self.rejected: list[str] = []
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"scripted-cloud-{uuid.uuid4().hex[:8]}",
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)
        if username:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(**tls)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.connected = threading.Event()
        self.client.connect(host, port, keepalive=5)
        self.client.loop_start()
        wait_until(self.connected.is_set, 10, "the scripted cloud to connect")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    # -- inbound ----------------------------------------------------------------------
    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: object, reason, props
    ) -> None:  # type: ignore[no-untyped-def]
        for kind in ("hello", "presence", "telemetry", "up"):
            client.subscribe(subscription(kind), qos=1)
        self.connected.set()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            env = decode_from(msg.topic, msg.payload)
        except Exception as exc:  # a test failure shows up in ``rejected``
            self.rejected.append(f"{msg.topic}: {exc}")
            return
        node, kind = parse_topic(msg.topic)
        with self.lock:
            self.received.append((node, str(kind), env))
            body = env.body
            if isinstance(body, Deltas):
                for rec in body.records:
                    current = self.records.get(rec.task_id)
                    self.records[rec.task_id] = rec if current is None else current.merge(rec)
        if str(kind) != "up":
            return
        if isinstance(body, Deltas) and self.auto_ack and env.seq is not None:
            self.send(node, "ack", Ack(up_to_seq=env.seq))
        elif isinstance(body, Heartbeat) and self.auto_ack:
            self.send(node, "ack", Ack(heartbeat_id=env.id))
        elif isinstance(body, LeaseRequest):
            self.lease_requests.append((time.monotonic(), body))
            answer = self.lease_answer(node, body) if self.lease_answer else None
            if answer is not None:
                self.send(node, "lease_grant", answer)

    # -- outbound ---------------------------------------------------------------------
    def send(self, node: str, type_: str, body: Any) -> str:
        env = Envelope(
            type=type_,
            id=uuid.uuid4().hex,
            sender=CLOUD_ID,
            hlc=self.clock.now(time.time_ns() // 1_000_000).encode(),
            body=body,
        )
        self.client.publish(topic(node, "down"), encode(env), qos=1)
        return env.id

    def cancel(self, node: str, task_id: str, epoch: int, reason: str) -> None:
        """What the controller does on a user's cancel: set the task-wide flag in its
        record, send that delta, then revoke the node's attempts up to ``epoch``."""
        with self.lock:
            rec = self.records.get(task_id) or TaskRecord(task_id)
            delta = request_cancel(
                rec, writer=CLOUD_ID, hlc=self.clock.now(time.time_ns() // 1_000_000)
            )
            self.records[task_id] = rec.merge(delta)
        self.send(node, "deltas", Deltas(records=(delta,)))
        self.send(node, "cancel", Cancel(task_id=task_id, epoch=epoch, reason=reason))

    # -- queries ----------------------------------------------------------------------
    def messages(self, kind: str, type_: str | None = None) -> list[Envelope]:
        with self.lock:
            return [
                e for _, k, e in self.received if k == kind and (type_ is None or e.type == type_)
            ]

    def status(self, task_id: str) -> str | None:
        with self.lock:
            rec = self.records.get(task_id)
        return None if rec is None else str(visible_status(rec))

    def record(self, task_id: str) -> TaskRecord | None:
        with self.lock:
            return self.records.get(task_id)


def place(
    cloud: ScriptedCloud,
    node: str,
    task: dict[str, Any],
    *,
    epoch: int = 1,
    level: str = "causal",
    lease_s: float | None = None,
) -> None:
    """What the controller sends to place ``task`` on ``node``."""
    cloud.send(
        node,
        "place",
        Place(task_id=task["id"], epoch=epoch, spec=task, level=level, lease_s=lease_s),
    )


def spec(task_id: str, command: list[str], **extra: Any) -> dict[str, Any]:
    return {"id": task_id, "command": command, **extra}


def sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


class AgentProcess:
    """One ``edge-agent run`` process with a generated config under ``workdir``."""

    def __init__(
        self, workdir: Path, broker_port: int, node: str = "edge-1", **sections: dict[str, Any]
    ) -> None:
        self.workdir = workdir
        self.node = node
        self.state_dir = workdir / "state"
        self.config_path = workdir / "agent.toml"
        self.proc: subprocess.Popen[bytes] | None = None
        self.api_port: int | None = None
        config: dict[str, dict[str, Any]] = {
            "node": {"id": node, "tier": "edge", "state_dir": str(self.state_dir)},
            "broker": {
                "host": "127.0.0.1",
                "port": broker_port,
                "keepalive_s": 2,
                "reconnect_min_s": 0.2,
                "reconnect_max_s": 1.0,
            },
            "api": {"port": 0},
            "discovery": {"enabled": False},
            "autonomy": {"period_s": 3.0, "telemetry_s": 1.0, "lease_margin_s": 0.2},
            "executor": {
                "kill_grace_s": 1.0,
                "shutdown_grace_s": 0.5,
                "min_free_memory_mb": 1.0,
                "max_cpu_percent": 100.0,
            },
        }
        for name, values in sections.items():
            config.setdefault(name, {}).update(values)
        self.api_tcp = config["api"].get("transport") == "tcp"
        self.api_cert: str | None = config["api"].get("tls_cert_file")
        self.api_socket = Path(config["api"].get("socket") or self.state_dir / "agent.sock")
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(_toml(config), encoding="utf-8")

    def start(self, timeout: float = 15.0) -> AgentProcess:
        ready = self.state_dir / "agent.ready.json"
        ready.unlink(missing_ok=True)  # a kill -9 leaves the old one behind
        log = open(self.workdir / "agent.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "run", "--config", str(self.config_path)],
            cwd=ROOT,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()

        def is_ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"agent exited with {self.proc.returncode}:\n{self.log()[-3000:]}"
                )
            if not ready.exists():
                return False
            with contextlib.suppress(ValueError):
                data = json.loads(ready.read_text(encoding="utf-8"))
                if data.get("pid") == self.proc.pid:
                    self.api_port = data["api_port"]  # None on the Unix socket
                    return True
            return False

        wait_until(is_ready, timeout, "agent.ready.json")
        return self

    def log(self) -> str:
        path = self.workdir / "agent.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """``kill -9``: no drain, no offline presence, watchdogs survive."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and the exit code. An agent still running after ``timeout`` fails the
        test with its threads' stacks (``kill -USR1``, edge_agent/cli.py) and its log."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)
            with contextlib.suppress(AssertionError):
                wait_until(lambda: "Current thread" in self.log(), 10, "the stack dump")
            self.kill()
            raise AssertionError(
                f"the agent did not exit {timeout} s after SIGTERM:\n{self.log()[-12000:]}"
            ) from None

    def cleanup(self) -> None:
        """Stop the agent and any task process groups it left behind."""
        if self.alive:
            with contextlib.suppress(AssertionError):
                self.terminate(timeout=10)
        kill_tasks_of(self.state_dir / "runs")

    # -- local API --------------------------------------------------------------------
    @property
    def client(self) -> LocalClient:
        """The agent's local API: its Unix socket, or TCP with the token of its state dir."""
        if not self.api_tcp:
            return LocalClient(socket_path=self.api_socket)
        token = (self.state_dir / "api.token").read_text(encoding="ascii").strip()
        return LocalClient(port=self.api_port, token=token, pinned_cert=self.api_cert)

    def api(self, method: str, path: str, body: object | None = None) -> tuple[int, Any]:
        return self.client.request(method, path, body)

    def status(self) -> dict[str, Any]:
        code, body = self.api("GET", "/v1/status")
        assert code == 200, body
        return body

    def task_status(self, task_id: str) -> str | None:
        code, body = self.api("GET", f"/v1/tasks/{task_id}")
        return body["status"] if code == 200 else None

    # -- journal (read-only; WAL allows a concurrent reader) ----------------------------
    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(
            f"file:{self.state_dir / 'journal.sqlite'}?mode=ro", uri=True, timeout=5
        )
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()

    def events(self, kind: str) -> list[dict[str, Any]]:
        rows = self.query("SELECT task_id, mono, data FROM events WHERE kind = ? ORDER BY id", kind)
        return [{"task_id": t, "mono": m, **json.loads(d or "{}")} for t, m, d in rows]


#: ``make_agent(node="edge-1", port=None, **sections)``: a configured, not yet started agent.
AgentFactory = Callable[..., AgentProcess]


def _toml(config: dict[str, dict[str, Any]]) -> str:
    lines = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"
