"""The local API's boundary with real agent processes (issue 11): a private Unix socket by
default (another local user can neither open it nor, if its mode were loosened, be served),
TCP only with the bearer token, ``Content-Length`` validated without reading an unbounded
body, other tasks' env secrets never answered, and locally submitted tasks run as
``executor.run_as`` like placed ones."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_harness import AgentProcess, sh, spec, wait_until

from cloud.api_client import AgentClient
from edge_agent import api as api_module
from edge_agent.api import HEADER_TIMEOUT_S, MAX_BODY, LocalApi, LocalClient
from edge_agent.config import parse_config

pytestmark = [pytest.mark.e2e, pytest.mark.broker]

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root")
PY = shutil.which("python3", path="/usr/bin:/bin") or "python3"


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every local user may traverse (pytest's own tmp is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="continuum-api-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _as_nobody_get(socket_path: Path) -> str:
    """``GET /v1/status`` on the socket as user ``nobody``: what happened, in one word."""
    code = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.settimeout(10)\n"
        "try:\n"
        f"    s.connect({str(socket_path)!r})\n"
        "except PermissionError:\n"
        "    print('refused'); sys.exit()\n"
        "try:\n"
        "    s.sendall(b'GET /v1/status HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n"
        "    print('answered' if s.recv(100) else 'closed')\n"
        "except (BrokenPipeError, ConnectionResetError):\n"
        "    print('closed')\n"
    )
    out = subprocess.run(
        [PY, "-c", code], user="nobody", capture_output=True, text=True, timeout=30, cwd="/"
    )
    return out.stdout.strip() or out.stderr


@ROOT_ONLY
def test_the_socket_is_private_to_the_agents_user(
    tmp_path: Path, mosquitto: Any, open_dir: Path
) -> None:
    sock = open_dir / "agent.sock"
    agent = AgentProcess(tmp_path / "edge-1", mosquitto.port, api={"socket": str(sock)})
    try:
        agent.start()
        info = sock.lstat()
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
        assert info.st_uid == os.geteuid()
        assert agent.status()["node_id"] == "edge-1"  # the agent's own user is served
        assert _as_nobody_get(sock) == "refused"  # the file's mode keeps others out
        sock.chmod(0o666)  # an administrator's mistake: the peer check still refuses
        assert _as_nobody_get(sock) == "closed"
        assert agent.alive and agent.status()["node_id"] == "edge-1"
        assert agent.api_port is None  # no TCP listener at all
    finally:
        agent.cleanup()
    assert not sock.exists()  # removed on shutdown


def test_a_socket_path_longer_than_sun_path_works(tmp_path: Path) -> None:
    """``sun_path`` holds 108 bytes; deep state directories are reached through a descriptor
    of their directory, by the server and the client alike."""
    deep = tmp_path.joinpath(*["d" * 30] * 5)
    deep.mkdir(parents=True)
    cfg = parse_config({"node": {"id": "edge-1", "state_dir": str(deep)}}, env={})
    assert len(str(cfg.api_socket)) > 108
    api = LocalApi(cfg, lambda method, path, body: (200, {"echo": [method, path, len(body)]}))
    api.start()
    try:
        client = LocalClient(socket_path=cfg.api_socket)
        assert client.request("POST", "/x", {"a": 1}) == (200, {"echo": ["POST", "/x", 8]})
        # and the operator's client (``continuum submit unix:PATH``)
        operator = AgentClient(f"unix:{cfg.api_socket}")
        assert operator.request("POST", "/x", {"a": 1}) == {"echo": ["POST", "/x", 8]}
        assert stat.S_IMODE(cfg.api_socket.stat().st_mode) == 0o600
        with pytest.raises(FileExistsError, match="another agent"):
            LocalApi(cfg, lambda method, path, body: (200, {}))  # a live socket is kept
    finally:
        api.stop()
    assert not cfg.api_socket.exists()


def test_tcp_needs_the_bearer_token(tmp_path: Path, mosquitto: Any) -> None:
    agent = AgentProcess(tmp_path / "edge-1", mosquitto.port, api={"transport": "tcp", "port": 0})
    try:
        agent.start()
        token_file = agent.state_dir / "api.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert agent.api_port
        for token in (None, "wrong"):
            code, body = LocalClient(port=agent.api_port, token=token).request("GET", "/v1/status")
            assert code == 401 and body["error"] == "unauthorized" and "message" in body
        code, body = agent.api("GET", "/v1/status")
        assert code == 200 and body["node_id"] == "edge-1"
        code, body = LocalClient(port=agent.api_port).request("POST", "/v1/tasks", {"id": "x"})
        assert code == 401 and not agent.query("SELECT 1 FROM records WHERE task_id = 'x'")
    finally:
        agent.cleanup()


def _raw(sock: Path, head: bytes) -> tuple[int, dict[str, Any]]:
    """Send a request head (and nothing after it) on a fresh connection; the answer must come
    without the server waiting for a body."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(20)
        conn.connect(str(sock))
        conn.sendall(head)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = conn.recv(65536)
            assert chunk, f"connection closed without an answer: {data!r}"
            data += chunk
    status_line, rest = data.split(b"\r\n", 1)
    headers, body = rest.split(b"\r\n\r\n", 1)
    assert b"content-type: application/json" in headers.lower()
    return int(status_line.split()[1]), json.loads(body)


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (b"Content-Length: -1\r\n", 400),
        (b"Content-Length: abc\r\n", 400),
        (b"Content-Length: 1e3\r\n", 400),
        (b"Content-Length: 99999999999999999999\r\n", 413),
        (f"Content-Length: {MAX_BODY + 1}\r\n".encode(), 413),
        (b"Content-Length: 5\r\nContent-Length: 6\r\n", 400),
        (b"Transfer-Encoding: chunked\r\n", 411),
    ],
)
def test_content_length_is_validated_before_any_read(
    tmp_path: Path, mosquitto: Any, headers: bytes, expected: int
) -> None:
    agent = AgentProcess(tmp_path / "edge-1", mosquitto.port)
    try:
        agent.start()
        head = b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n"
        code, body = _raw(agent.api_socket, head)
        assert code == expected and body["error"] and body["message"]
        assert agent.alive and agent.status()["node_id"] == "edge-1"
        assert "Traceback" not in agent.log()
    finally:
        agent.cleanup()


def test_a_half_open_request_is_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Headers that never finish do not hold a server thread: the server closes the
    connection after ``HEADER_TIMEOUT_S`` (0.5 s here instead of waiting out the real
    10 s) and keeps serving."""
    monkeypatch.setattr(api_module, "HEADER_TIMEOUT_S", 0.5)
    cfg = parse_config({"node": {"id": "edge-1", "state_dir": str(tmp_path)}}, env={})
    api = LocalApi(cfg, lambda method, path, body: (200, {"node_id": "edge-1"}))
    api.start()
    try:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(HEADER_TIMEOUT_S * 6)
            conn.connect(str(cfg.api_socket))
            conn.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")  # no blank line
            assert conn.recv(65536) == b""  # closed by the server, not by our timeout
        head = b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n"
        assert _raw(cfg.api_socket, head) == (200, {"node_id": "edge-1"})
    finally:
        api.stop()


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"PUT /v1/tasks HTTP/1.1\r\nHost: x\r\n\r\n", 501),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 120 + b"\r\n", 431),
    ],
)
def test_malformed_requests_are_answered_in_json(
    tmp_path: Path, head: bytes, expected: int
) -> None:
    cfg = parse_config({"node": {"id": "edge-1", "state_dir": str(tmp_path)}}, env={})
    api = LocalApi(cfg, lambda method, path, body: (200, {}))
    api.start()
    try:
        code, body = _raw(cfg.api_socket, head)
        assert code == expected and body["error"] == "bad_request" and body["message"]
    finally:
        api.stop()


def test_other_tasks_env_secrets_are_never_answered(tmp_path: Path, mosquitto: Any) -> None:
    agent = AgentProcess(tmp_path / "edge-1", mosquitto.port)
    try:
        agent.start()
        task = spec("edge-1:with-secret", sh("echo '{}'"), env={"API_KEY": "s3cr3t-value"})
        code, _ = agent.api("POST", "/v1/tasks", task)
        assert code == 201
        wait_until(lambda: agent.task_status("edge-1:with-secret") == "succeeded", 20, "the task")
        code, body = agent.api("GET", "/v1/tasks/edge-1:with-secret")
        assert code == 200 and body["record"]["spec"]["env"] == {"API_KEY": "<redacted>"}
        for path in ("/v1/tasks", "/v1/tasks/edge-1:with-secret", "/v1/status", "/metrics"):
            assert "s3cr3t-value" not in json.dumps(agent.api("GET", path)[1])
    finally:
        agent.cleanup()


@ROOT_ONLY
def test_locally_submitted_tasks_run_as_run_as(tmp_path: Path, mosquitto: Any) -> None:
    """The agent runs as root here: a task submitted on the socket runs as ``nobody``, exactly
    like a placed one, never as the agent's user."""
    agent = AgentProcess(tmp_path / "edge-1", mosquitto.port, executor={"run_as": "nobody"})
    try:
        agent.start()
        assert agent.api("POST", "/v1/tasks", spec("edge-1:who", ["id", "-u"]))[0] == 201
        wait_until(lambda: agent.task_status("edge-1:who") == "succeeded", 20, "the task")
        record = agent.api("GET", "/v1/tasks/edge-1:who")[1]["record"]
        results = [a.get("result") for a in record["attempts"].values()]
        assert results == [65534]
    finally:
        agent.cleanup()
