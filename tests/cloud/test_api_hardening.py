"""REST hardening (issue 11, finding 7), over a real controller and the real aiohttp app:
every error problem JSON with ``message``, JSON limits before parsing, the HTTP parser's
refusals as JSON, NUL, unknown dependencies, bad filters, the header-read timeout, named
tokens with a read-only role, the per-token rate limit, the audit log, and a hypothesis
fuzz of request bodies (never a 500, always JSON)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer
from cloud_harness import make_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud.api import build_app
from cloud.api_access import RateLimit
from cloud.api_http import PROBLEM_JSON, start_api
from cloud.controller import Controller
from cloud.metrics import ControllerMetrics
from cloud.operator_cli import _controller_config
from cloud.store import Store

ADMIN, READER = "admin-secret-1", "reader-secret-2"
TOKENS = f"# operators\nops admin {ADMIN}\ndash read {READER}\n"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
READ_AUTH = {"Authorization": f"Bearer {READER}"}


@asynccontextmanager
async def _controller(tmp_path: Path) -> AsyncIterator[Controller]:
    cfg = make_config(tmp_path)
    store = Store(cfg.db_path)
    try:
        yield Controller(cfg, store, ControllerMetrics(), send=lambda *_: None)
    finally:
        store.close()


def run(
    tmp_path: Path,
    scenario: Callable[[TestClient], Awaitable[None]],
    **app_args: Any,
) -> None:
    async def main() -> None:
        async with _controller(tmp_path) as controller:
            app = build_app(controller, token=TOKENS, **app_args)
            client = TestClient(TestServer(app))
            await client.start_server()
            try:
                await scenario(client)
            finally:
                await client.close()

    asyncio.run(main())


async def _problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.headers["Content-Type"].startswith(PROBLEM_JSON)
    body = await resp.json(content_type=None)
    assert isinstance(body["message"], str) and body["message"]
    assert body["status"] == status and isinstance(body["error"], str)
    return body


def task(task_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": task_id, "command": ["true"], **fields}


def test_every_error_is_problem_json_with_a_message(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> None:
        await _problem(await client.get("/api/v1/tasks"), 401)
        await _problem(await client.get("/api/v1/nope", headers=AUTH), 404)
        await _problem(await client.get("/api/v1/tasks/nope", headers=AUTH), 404)
        resp = await client.delete("/api/v1/tasks", headers=AUTH)
        await _problem(resp, 405)
        await _problem(await client.post("/api/v1/tasks", data=b"{", headers=AUTH), 400)
        body = await _problem(await client.post("/api/v1/tasks", json={}, headers=AUTH), 400)
        assert body["error"] == "validation" and body["problems"]
        await _problem(await client.get("/api/v1/tasks?limit=x", headers=AUTH), 400)
        big = json.dumps(task("t-big", env={"PAD": "x" * 1_100_000}))
        await _problem(await client.post("/api/v1/tasks", data=big, headers=AUTH), 413)

    run(tmp_path, scenario)


def test_json_limits_apply_before_parsing(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> None:
        deep = b"[" * 100_000 + b"]" * 100_000
        body = await _problem(await client.post("/api/v1/tasks", data=deep, headers=AUTH), 400)
        assert "nesting" in json.dumps(body)
        wide = json.dumps(task("t-int", priority=0)).replace(
            '"priority": 0', '"priority": 1' + "0" * 5_000
        )
        body = await _problem(await client.post("/api/v1/tasks", data=wide, headers=AUTH), 400)
        assert "number" in json.dumps(body)
        # Depth within the limit, in strings, or inside a string, is fine.
        ok = {"id": "t-ok", "name": "[[[[" * 50, "callable": "f", "args": {"a": [[[[1]]]]}}
        resp = await client.post("/api/v1/tasks", json=ok, headers=AUTH)
        assert resp.status == 201, await resp.text()

    run(tmp_path, scenario)


def test_nul_unknown_dependencies_and_bad_filters_are_400(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> None:
        body = await _problem(
            await client.post("/api/v1/tasks", json=task("t-nul", name="a\x00b"), headers=AUTH),
            400,
        )
        assert body["problems"][0]["path"] == "name"
        body = await _problem(
            await client.post(
                "/api/v1/tasks", json=task("t-dep", depends_on=["ghost"]), headers=AUTH
            ),
            400,
        )
        assert body["problems"] == [
            {"path": "depends_on[0]", "message": "unknown task 'ghost': submit it first"}
        ]
        assert (await client.post("/api/v1/tasks", json=task("t-a"), headers=AUTH)).status == 201
        resp = await client.post(
            "/api/v1/tasks", json=task("t-b", depends_on=["t-a"]), headers=AUTH
        )
        assert resp.status == 201
        for query in ("status=bogus", "status=pending&status=nope", "level=linearizable"):
            await _problem(await client.get(f"/api/v1/tasks?{query}", headers=AUTH), 400)
        resp = await client.get("/api/v1/tasks?status=pending&level=causal", headers=AUTH)
        assert resp.status == 200

    run(tmp_path, scenario)


def test_named_tokens_read_only_role_and_audit_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(client: TestClient) -> None:
        assert (await client.get("/api/v1/tasks", headers=READ_AUTH)).status == 200
        await _problem(await client.post("/api/v1/tasks", json=task("t-r"), headers=READ_AUTH), 403)
        await _problem(await client.post("/api/v1/nodes/x/drain", headers=READ_AUTH), 403)
        assert (await client.post("/api/v1/tasks", json=task("t-w"), headers=AUTH)).status == 201
        await _problem(await client.post("/api/v1/tasks", json=task("t-x")), 401)

    with caplog.at_level(logging.INFO, logger="continuum.audit"):
        run(tmp_path, scenario)
    audit = [
        tuple(r.fields[k] for k in ("actor", "method", "route", "status", "outcome"))  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "continuum.audit"
    ]
    assert audit == [
        ("dash", "POST", "/api/v1/tasks", 403, "denied"),
        ("dash", "POST", "/api/v1/nodes/x/drain", 403, "denied"),
        ("ops", "POST", "/api/v1/tasks", 201, "ok"),
        (None, "POST", "/api/v1/tasks", 401, "denied"),
    ]


def test_each_token_has_its_own_rate_limit(tmp_path: Path) -> None:
    now = [0.0]

    async def scenario(client: TestClient) -> None:
        for _ in range(3):
            assert (await client.get("/api/v1/tasks", headers=AUTH)).status == 200
        resp = await client.get("/api/v1/tasks", headers=AUTH)
        await _problem(resp, 429)
        assert int(resp.headers["Retry-After"]) >= 1
        assert (await client.get("/api/v1/tasks", headers=READ_AUTH)).status == 200
        now[0] += 1.0  # one request's worth refilled
        assert (await client.get("/api/v1/tasks", headers=AUTH)).status == 200
        await _problem(await client.get("/api/v1/tasks", headers=AUTH), 429)

    run(tmp_path, scenario, rate=RateLimit(rate_per_s=1.0, burst=3.0), clock=lambda: now[0])


# ---------------------------------------------------------------- below the router


def _raw(port: int, request: bytes) -> bytes:
    """Send raw bytes, read until the server closes (or 20 s pass)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                break
        return b"".join(chunks)


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def _parse(data: bytes) -> tuple[int, str, dict[str, Any]]:
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    ctype = next(
        (
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-type:")
        ),
        "",
    )
    return status, ctype, json.loads(body)


def test_parser_refusals_are_json_and_slow_headers_time_out(tmp_path: Path) -> None:
    async def main() -> None:
        async with _controller(tmp_path) as controller:
            app = build_app(controller, token=TOKENS)
            runner, port = await start_api(app, "127.0.0.1", 0, header_timeout_s=0.5)
            try:
                auth = f"Authorization: Bearer {ADMIN}\r\n".encode()
                cases = [
                    b"GET /api/v1/tasks?x=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET /api/v1/tasks HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
                    b"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\n"
                    + auth
                    + b"Content-Length: -1\r\n\r\n{}",
                    b"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\n"
                    + auth
                    + b"Content-Length: abc\r\n\r\n{}",
                ]
                for request in cases:
                    data = await asyncio.to_thread(_raw, port, request)
                    status, ctype, body = _parse(data)
                    assert 400 <= status < 500 and ctype.startswith(PROBLEM_JSON), data[:200]
                    assert body["message"]
                # Half a request: the connection is answered 408 and closed, not held.
                data = await asyncio.to_thread(_raw, port, b"GET /api/v1/tasks HTTP/1.1\r\nHo")
                status, ctype, body = _parse(data)
                assert status == 408 and body["error"] == "timeout"
                # A slow body after complete headers is not cut by the header deadline.
                async with ClientSession() as session:

                    async def slow() -> AsyncIterator[bytes]:
                        yield b'{"id": "t-slow", '
                        await asyncio.sleep(1.0)
                        yield b'"command": ["true"]}'

                    resp = await session.post(
                        f"http://127.0.0.1:{port}/api/v1/tasks",
                        data=slow(),
                        headers={**AUTH, "Content-Type": "application/json"},
                    )
                    assert resp.status == 201, await resp.text()
            finally:
                await runner.cleanup()

    asyncio.run(main())


# ---------------------------------------------------------------- fuzz

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["", "\x00", "a\x00", "true", "x" * 300, "edge-1-0123456789ab"])
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "name",
                    "command",
                    "callable",
                    "args",
                    "env",
                    "resources",
                    "depends_on",
                    "tasks",
                    "priority",
                    "consistency",
                    "placement",
                    "retry",
                    "x",
                    "\x00",
                ]
            )
            | st.text(max_size=8),
            inner,
            max_size=6,
        )
    ),
    max_leaves=30,
)
_raw_bodies = (
    st.binary(max_size=200)
    | st.integers(1, 200_000).map(lambda n: b"[" * n + b"]" * n)
    | st.integers(1, 6_000).map(lambda n: b'{"priority": 1' + b"0" * n + b"}")
    | st.integers(0, 3).map(lambda n: b'{"name": "\\u0000"}' * max(n, 1))
)


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[asyncio.AbstractEventLoop, TestClient]]:
    loop = asyncio.new_event_loop()
    stack: list[Any] = []

    async def start() -> TestClient:
        ctx = _controller(tmp_path_factory.mktemp("fuzz"))
        controller = await ctx.__aenter__()
        stack.append(ctx)
        client = TestClient(
            TestServer(build_app(controller, token=TOKENS, rate=RateLimit(1e9, 1e9)))
        )
        await client.start_server()
        return client

    client = loop.run_until_complete(start())
    try:
        yield loop, client
    finally:
        loop.run_until_complete(client.close())
        loop.run_until_complete(stack[0].__aexit__(None, None, None))
        loop.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    path=st.sampled_from(["/api/v1/tasks", "/api/v1/workflows", "/api/v1/tasks/t-x/cancel"]),
    body=_json.map(lambda v: json.dumps(v).encode()) | _raw_bodies,
)
def test_fuzzed_bodies_never_500_and_errors_are_json(
    live: tuple[asyncio.AbstractEventLoop, TestClient], path: str, body: bytes
) -> None:
    loop, client = live

    async def post() -> None:
        resp = await client.post(path, data=body, headers=AUTH)
        assert resp.status in (200, 201, 400, 404, 409, 413), await resp.text()
        if resp.status >= 400:
            await _problem(resp, resp.status)
        else:
            assert isinstance(await resp.json(), dict)

    loop.run_until_complete(post())


def test_the_cli_takes_the_first_named_token_from_the_controllers_config(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text(TOKENS)
    config = tmp_path / "controller.toml"
    config.write_text('[api]\ntoken_file = "tokens"\nport = 8470\n')
    assert _controller_config(str(config)) == ("http://127.0.0.1:8470", ADMIN)
