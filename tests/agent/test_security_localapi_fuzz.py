"""Property test of the local API's request framing (issue 11), with the real server in
process: whatever ``Content-Length`` a client sends, the answer is JSON, the server reads at
most what a valid header announces and never waits for an unannounced body."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.api import MAX_BODY, LocalApi
from edge_agent.config import parse_config

LENGTHS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.integers(0, 2 * MAX_BODY).map(str),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30),
    st.sampled_from(["", " ", "+5", "0x10", "1e3", "٣", "5 5", "00000000000000000000001"]),
)


@pytest.fixture(scope="module")
def socket_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    state = tmp_path_factory.mktemp("api")
    cfg = parse_config({"node": {"id": "edge-1", "state_dir": str(state)}}, env={})
    api = LocalApi(cfg, lambda method, path, body: (200, {"read": len(body)}))
    api.start()
    try:
        yield cfg.api_socket
    finally:
        api.stop()


def _exchange(path: Path, data: bytes) -> tuple[int, dict[str, object]]:
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(20)
        conn.connect(str(path))
        conn.sendall(data)
        answer = b""
        while True:
            head, sep, body = answer.partition(b"\r\n\r\n")
            if sep:
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                if len(body) >= length:
                    break
            chunk = conn.recv(65536)
            assert chunk, f"closed without an answer to {data[:200]!r}"
            answer += chunk
    assert b"content-type: application/json" in head.lower()
    return int(head.split()[1]), json.loads(body[:length])


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(value=LENGTHS)
def test_any_content_length_gets_a_json_answer(socket_path: Path, value: str) -> None:
    stripped = value.strip()
    valid = stripped.isascii() and stripped.isdigit() and int(stripped) <= MAX_BODY
    body = b"x" * int(stripped) if valid else b""  # an invalid header is answered unread
    head = f"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: {value}\r\n\r\n"
    code, answer = _exchange(socket_path, head.encode("utf-8") + body)
    if valid:
        assert (code, answer) == (200, {"read": len(body)})
    else:
        assert code in (400, 413) and answer["error"] and answer["message"]
