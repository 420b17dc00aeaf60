"""The local API's own HTTP/1.1 request parsing (``edge_agent/api.py``, ``_read_head``): what
``http.server`` did for clients that are not ``LocalClient`` (curl, a shell script), kept —
keep-alive and pipelining, HTTP/1.0 closing, ``Expect: 100-continue``, scheme-relative paths
— and header lines that could be read two ways refused."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.api import LocalApi
from edge_agent.config import parse_config


@pytest.fixture
def api_socket(tmp_path: Path) -> Iterator[Path]:
    """A local API that answers each request with what it was given."""
    cfg = parse_config({"node": {"id": "edge-1", "state_dir": str(tmp_path)}}, env={})
    api = LocalApi(cfg, lambda method, path, body: (200, {"m": method, "p": path, "n": len(body)}))
    api.start()
    try:
        yield cfg.api_socket
    finally:
        api.stop()


def _talk(path: Path, data: bytes) -> bytes:
    """Send ``data`` and read until the server closes the connection."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(20)
        conn.connect(str(path))
        conn.sendall(data)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_pipelined_requests_on_one_connection(api_socket: Path) -> None:
    answer = _talk(
        api_socket,
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /c HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert b'{"m": "GET", "p": "/a", "n": 0}' in answer
    assert b'{"m": "POST", "p": "/b", "n": 3}' in answer
    assert answer.endswith(b'{"m": "GET", "p": "/c", "n": 0}')
    assert answer.count(b"Connection: close\r\n") == 1


def test_http_10_closes_and_expect_continue_is_answered(api_socket: Path) -> None:
    answer = _talk(api_socket, b"GET //x/y HTTP/1.0\r\n\r\n")  # closed without being asked
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b'"p": "/x/y", "n": 0}')
    answer = _talk(
        api_socket,
        b"POST /t HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n"
        b"Connection: close\r\n\r\nhi",
    )
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET / HTTP/1.1\r\nContent-Length : 5\r\n\r\n", b"400"),  # space before the colon
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", b"400"),
        (b"GET / HTTP/1.x\r\n\r\n", b"400"),
        (b"GET / HTTP/\xb2.1\r\n\r\n", b"400"),  # a non-ASCII digit is not a version
        (b"GET /\r\n\r\n", b"400"),
        (b"GET / HTTP/2.0\r\n\r\n", b"505"),
        (b"GET / HTTP/1.1\r\nX: " + b"y" * 70_000 + b"\r\n\r\n", b"431"),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 99 + b"Connection: close\r\n\r\n", b"200"),
    ],
)
def test_malformed_heads_are_refused_and_the_connection_closed(
    api_socket: Path, head: bytes, status: bytes
) -> None:
    """An error closes the connection (``_talk`` reads until it does); 100 headers are
    still served, one more is 431 (tests/agent/test_security_localapi.py)."""
    answer = _talk(api_socket, head)
    assert answer.split(b" ", 2)[1] == status, answer[:200]
    assert b"Content-Type: application/json" in answer


def test_a_kept_alive_client_reuses_its_connection_and_replaces_a_closed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``LocalClient(keep_alive=True)`` (issue 14: the dispatch bench's submitters): one
    connection, hence one server thread, for a thread's requests; one the agent closed (its
    header timeout) is noticed before a request is sent on it and replaced; ``close`` ends
    them."""
    import select
    import threading

    from edge_agent import api as api_module
    from edge_agent.api import LocalClient

    monkeypatch.setattr(api_module, "HEADER_TIMEOUT_S", 0.3)  # the server's idle close
    monkeypatch.setattr(api_module, "_REUSE_IDLE_S", 60.0)  # only the close tells
    cfg = parse_config({"node": {"id": "edge-1", "state_dir": str(tmp_path)}}, env={})
    served: list[str] = []
    api = LocalApi(
        cfg, lambda m, p, b: (served.append(threading.current_thread().name), (200, {}))[1]
    )
    api.start()
    client = LocalClient(socket_path=cfg.api_socket, keep_alive=True)
    try:
        for _ in range(5):
            assert client.request("POST", "/x", {"a": 1}) == (200, {})
        assert len(served) == 5 and len(set(served)) == 1
        kept = client._mine.conn
        assert kept is not None and kept.sock is not None
        assert select.select([kept.sock], [], [], 30)[0]  # the server closed it
        assert client.request("GET", "/y") == (200, {})
        assert len(set(served)) == 2
        plain = LocalClient(socket_path=cfg.api_socket)  # the default: one per request
        for _ in range(2):
            assert plain.request("GET", "/z") == (200, {})
        assert len(set(served)) == 4
    finally:
        client.close()
        api.stop()
    assert client._kept == []
