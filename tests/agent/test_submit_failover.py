"""``continuum submit --fallback-agent``: a task goes to a real agent's local API (a real
``edge-agent run`` process) when the controller cannot be reached, and only then
(``shared.autonomy.Failover``; ``cloud/api_client.py`` ``submit_task``). The controller,
where one answers, is the real one (``cloud.api.build_app`` over a ``Controller``) served
in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_harness import AgentFactory, AgentProcess, wait_until

from cloud.api import build_app
from cloud.api_client import AgentClient, ApiClient, submit_task
from cloud.api_http import start_api
from cloud.controller import Controller
from cloud.metrics import ControllerMetrics
from cloud.operator_cli import main
from cloud.store import Store
from shared.autonomy import Failover

TOKEN = "test-token"


@pytest.fixture
def controller_url(tmp_path: Path) -> Iterator[str]:
    """The real controller's REST API on a free port, its event loop in a thread."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cloud"))
    from cloud_harness import make_config

    loop = asyncio.new_event_loop()
    started: dict[str, Any] = {}

    async def start() -> None:
        cfg = make_config(tmp_path / "controller")
        store = Store(cfg.db_path)
        controller = Controller(cfg, store, ControllerMetrics(), send=lambda *_: None)
        runner, port = await start_api(build_app(controller, token=TOKEN), "127.0.0.1", 0)
        started.update(runner=runner, port=port, store=store)

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    try:
        yield f"http://127.0.0.1:{started['port']}"
    finally:
        asyncio.run_coroutine_threadsafe(started["runner"].cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        started["store"].close()


def _closed_port() -> int:
    """A port nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _full_listener() -> Iterator[int]:
    """The port of a listener whose accept queue is full: new SYNs go unanswered (a
    connection not made, as across a cut)."""
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        queued = []
        for _ in range(4):  # fill the accept queue: later SYNs go unanswered
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            queued.append(c)
        try:
            yield port
        finally:
            for c in queued:
                c.close()


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "task.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _agent_tasks(agent: AgentProcess) -> list[dict[str, Any]]:
    code, body = agent.api("GET", "/v1/tasks")
    assert code == 200, body
    return list(body["tasks"])


def test_refused_controller_fails_over_to_the_agent_and_waits_there(
    make_agent: AgentFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = make_agent().start()
    url = f"http://127.0.0.1:{_closed_port()}"
    task = _write(tmp_path, 'command = ["true"]\n')
    argv = ["submit", task, "--url", url, "--token", TOKEN, "--wait", "--timeout", "60"]
    code = main([*argv, "--fallback-agent", f"unix:{agent.api_socket}"])
    out = capsys.readouterr()
    assert code == 0, out
    assert f"succeeded on the agent unix:{agent.api_socket}" in out.out
    assert f"the controller at {url} is unreachable" in out.out
    (only,) = _agent_tasks(agent)
    assert only["id"].startswith("edge-1-") and only["status"] == "succeeded"


def test_tcp_agent_with_its_token_file_and_json(
    make_agent: AgentFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = make_agent(api={"transport": "tcp"}).start()
    url = f"http://127.0.0.1:{_closed_port()}"
    task = _write(tmp_path, 'command = ["true"]\nconsistency = "eventual"\n')
    code = main(
        [
            *("submit", task, "--url", url, "--token", TOKEN, "--json"),
            *("--fallback-agent", f"http://127.0.0.1:{agent.api_port}"),
            *("--fallback-token-file", str(agent.state_dir / "api.token")),
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out
    assert '"submitted_to": "agent"' in out.out and '"level": "eventual"' in out.out
    assert len(_agent_tasks(agent)) == 1


def test_strong_only_work_does_not_fail_over(
    make_agent: AgentFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = make_agent().start()
    task = _write(tmp_path, 'command = ["true"]\nconsistency = "strong"\n')
    url = f"http://127.0.0.1:{_closed_port()}"
    fallback = ["--fallback-agent", f"unix:{agent.api_socket}"]
    code = main(["submit", task, "--url", url, "--token", TOKEN, *fallback])
    assert code == 1
    assert f"cannot reach the controller at {url}" in capsys.readouterr().err
    assert _agent_tasks(agent) == []


def test_an_answer_from_the_controller_is_never_failed_over(
    make_agent: AgentFactory,
    tmp_path: Path,
    controller_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    agent = make_agent().start()
    task = _write(tmp_path, 'id = "t-1"\ncommand = ["true"]\n')
    fallback = ["--fallback-agent", f"unix:{agent.api_socket}"]
    # refused by the controller (a wrong token): an answer, so no failover
    assert main(["submit", task, "--url", controller_url, "--token", "wrong", *fallback]) == 1
    assert "error 401" in capsys.readouterr().err
    # taken by the controller: the agent is not asked
    assert main(["submit", task, "--url", controller_url, "--token", TOKEN, *fallback]) == 0
    assert "task t-1: pending" in capsys.readouterr().out
    assert _agent_tasks(agent) == []


def test_both_unreachable_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task = _write(tmp_path, 'command = ["true"]\n')
    url = f"http://127.0.0.1:{_closed_port()}"
    gone = tmp_path / "no-agent.sock"
    fallback = ["--fallback-agent", f"unix:{gone}"]
    code = main(["submit", task, "--url", url, "--token", TOKEN, *fallback])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("continuum: the task was not submitted: the controller: ")
    assert "the agent: " in err and "No such file" in err


def test_a_connection_not_made_in_time_fails_over_a_sent_request_unanswered_does_not(
    make_agent: AgentFactory,
) -> None:
    """A listener whose accept queue is full drops new SYNs (the connection is not made
    within the connect timeout: fail over); one that accepted and never answers may have
    the task (no failover: the caller gets the timeout)."""
    agent = make_agent().start()
    spec = {"command": ["true"]}
    with _full_listener() as port:
        api = ApiClient(f"http://127.0.0.1:{port}", TOKEN)
        sent = submit_task(api, spec, AgentClient(f"unix:{agent.api_socket}"))
    assert sent.route == "agent" and "timed out" in sent.why
    wait_until(lambda: len(_agent_tasks(agent)) == 1, 30, "the task on the agent")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        api = ApiClient(f"http://127.0.0.1:{silent.getsockname()[1]}", TOKEN, timeout_s=0.5)
        with pytest.raises(TimeoutError):
            submit_task(api, spec, AgentClient(f"unix:{agent.api_socket}"))
    assert len(_agent_tasks(agent)) == 1


def test_a_deadline_give_up_sends_the_task_over_without_opening_the_breaker(
    make_agent: AgentFactory,
) -> None:
    """A connection not made within the task's deadline (0.3 s, sooner than the RTT rule's
    1 s): this task goes to the agent, but the kept breaker stays closed (no evidence against
    the controller yet); the RTT timeout on a task without a deadline opens it."""
    agent = make_agent().start()
    breaker = Failover()
    fallback = AgentClient(f"unix:{agent.api_socket}")
    with _full_listener() as port:
        api = ApiClient(f"http://127.0.0.1:{port}", TOKEN)
        urgent = {"command": ["true"], "deadline_s": 0.3}
        sent = submit_task(api, urgent, fallback, breaker=breaker)
        assert sent.route == "agent" and api.connect_timeout_s == 0.3
        assert breaker.down_since is None
        sent = submit_task(api, {"command": ["true"]}, fallback, breaker=breaker)
        assert sent.route == "agent" and api.connect_timeout_s == 1.0
        assert breaker.down_since is not None
    wait_until(lambda: len(_agent_tasks(agent)) == 2, 30, "both tasks on the agent")
