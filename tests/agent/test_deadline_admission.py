"""Deadline-feasible admission on the local API (``edge_agent/deadline_plan.py``, by
``shared.autonomy.plan_edf``), against real ``edge-agent run`` processes: a task that cannot
meet its deadline is refused with ``503 deadline_infeasible`` and nothing journaled, one that
can is admitted; the run times come from the agent's own finished attempts; a queued task the
plan gives up is handed back (cancelled, reason and event); and ``submit_task`` takes an
agent's 503 as an answer (the next agent, or one clear error), never as evidence against the
controller.

Times are chosen so that the decisions hold on a loaded machine: every margin is a whole run
of ``sleep`` (seconds), not a scheduling delay.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from agent_harness import AgentFactory, AgentProcess, wait_until

from cloud.api_client import AgentClient, ApiClient, BothUnreachable, submit_task
from cloud.operator_cli import main
from shared.autonomy import Failover

TOKEN = "test-token"
ONE_SLOT = {"max_concurrent": 1}


def _closed_port() -> int:
    """A port nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _submit(agent: AgentProcess, spec: dict[str, Any]) -> tuple[int, Any]:
    return agent.api("POST", "/v1/tasks", spec)


def _run(agent: AgentProcess, spec: dict[str, Any]) -> str:
    """Submit ``spec`` (no deadline) and wait until it succeeded: a run to learn from."""
    code, body = _submit(agent, spec)
    assert code == 201, body
    wait_until(lambda: agent.task_status(body["id"]) == "succeeded", 60, f"{spec} to succeed")
    return str(body["id"])


def _task_ids(agent: AgentProcess) -> set[str]:
    code, body = agent.api("GET", "/v1/tasks")
    assert code == 200, body
    return {task["id"] for task in body["tasks"]}


def _idle(agent: AgentProcess) -> bool:
    status = agent.status()
    return not status["running"] and not status["queue"]


LONG = {"name": "long", "command": ["sleep", "2"]}  # learned: about 2 s
SHORT = {"name": "short", "command": ["true"]}  # learned: well under a second


def test_a_learned_run_time_decides_admission(make_agent: AgentFactory) -> None:
    """Before the agent ran a kind it has no estimate and admits as before; once it learned
    that ``long`` runs 2 s, a 1 s deadline is refused (503, with the prediction, nothing
    journaled) while ``short`` with the same deadline, and ``long`` with 30 s, are taken."""
    agent = make_agent(executor=ONE_SLOT).start()
    code, body = _submit(agent, {**LONG, "deadline_s": 1.0})
    assert code == 201, body  # no estimate yet: no plan
    wait_until(lambda: agent.task_status(body["id"]) == "succeeded", 60, "the first run")
    _run(agent, SHORT)
    wait_until(lambda: _idle(agent), 60, "an idle agent")
    before = _task_ids(agent)
    events = len(agent.events("submitted_locally"))

    code, body = _submit(agent, {**LONG, "deadline_s": 1.0})
    assert code == 503, body
    assert body["error"] == "deadline_infeasible"
    assert body["deadline_s"] == 1.0 and body["run_s"] > 1.0
    assert body["earliest_finish_s"] > 1.0 and "cannot meet the deadline" in body["message"]
    assert _task_ids(agent) == before  # journaled nothing
    assert len(agent.events("submitted_locally")) == events
    assert agent.status()["counters"]["deadline_infeasible"] == 1

    code, body = _submit(agent, {**SHORT, "deadline_s": 1.0})
    assert code == 201, body
    code, body = _submit(agent, {**LONG, "deadline_s": 30.0})
    assert code == 201, body


def test_learned_run_times_survive_a_restart(make_agent: AgentFactory) -> None:
    """What the agent learned of a kind is journaled (at shutdown, and every ``SAVE_S``
    while runs teach something): restarted, it refuses a deadline the kind cannot meet
    without running it again, and a SIGKILL after a save keeps the saved estimate."""
    agent = make_agent(executor=ONE_SLOT).start()
    _run(agent, LONG)
    assert agent.terminate() == 0
    agent.start()
    code, body = _submit(agent, {**LONG, "deadline_s": 1.0})
    assert code == 503 and body["run_s"] > 1.0, body
    stored = agent.query("SELECT value FROM meta WHERE key = 'run_times'")
    assert stored and "long" in stored[0][0]
    agent.kill()  # nothing learned since the last save: the journal keeps it
    agent.start()
    code, body = _submit(agent, {**LONG, "deadline_s": 1.0})
    assert code == 503, body


def test_the_specs_work_hint_is_the_prior_before_any_run(make_agent: AgentFactory) -> None:
    """A kind the agent never ran is planned from the spec's ``work_s`` (reference-core
    seconds, docs/task-spec.md): 5 s of work cannot meet a 1 s deadline, 0.1 s can."""
    agent = make_agent(executor=ONE_SLOT).start()
    code, body = _submit(agent, {**LONG, "work_s": 5.0, "deadline_s": 1.0})
    assert code == 503, body
    assert body["error"] == "deadline_infeasible" and body["run_s"] > 4.9
    code, body = _submit(agent, {**SHORT, "work_s": 0.1, "deadline_s": 1.0})
    assert code == 201, body


def test_running_work_delays_the_plan(make_agent: AgentFactory) -> None:
    """With its one slot taken by a ``long`` run (2 s expected), a ``short`` task due in
    0.5 s cannot be met (it would start when the slot frees) and is refused; due in 30 s it
    is admitted."""
    agent = make_agent(executor=ONE_SLOT).start()
    _run(agent, LONG)
    _run(agent, SHORT)
    code, body = _submit(agent, {**LONG, "command": ["sleep", "30"]})
    assert code == 201, body
    wait_until(lambda: agent.status()["running"], 60, "the long run to start")
    code, refused = _submit(agent, {**SHORT, "deadline_s": 0.5})
    assert code == 503, refused
    assert refused["earliest_finish_s"] > 0.5 and refused["predicted_finish_s"] > 0.5
    code, body = _submit(agent, {**SHORT, "deadline_s": 30.0})
    assert code == 201, body


def _handed_back(agent: AgentProcess, task_id: str) -> dict[str, Any]:
    """The task was handed back: cancelled, its attempt failed ``deadline_infeasible``, out
    of the queue, with one ``handed_back`` event (returned)."""
    assert agent.task_status(task_id) == "cancelled"
    _, task = agent.api("GET", f"/v1/tasks/{task_id}")
    (attempt,) = task["record"]["attempts"].values()
    assert attempt["status"] == "failed" and attempt["reason"] == "deadline_infeasible"
    assert task_id not in [q["task_id"] for q in agent.status()["queue"]]
    (event,) = [e for e in agent.events("handed_back") if e["task_id"] == task_id]
    assert event["reason"] == "deadline_infeasible"
    return event


def test_a_queued_task_made_hopeless_is_handed_back(make_agent: AgentFactory) -> None:
    """``late`` is admitted behind a ``long`` run expected to end in 2 s (due in 4 s); the run
    overruns (it sleeps 30 s), so ``late`` becomes hopeless while it waits: the agent plans
    again as its slack runs out and hands it back on its own (cancelled, its attempt failed
    ``deadline_infeasible``, a ``handed_back`` event); a later submission is admitted."""
    agent = make_agent(executor=ONE_SLOT).start()
    _run(agent, LONG)
    _run(agent, SHORT)
    code, body = _submit(agent, {**LONG, "command": ["sleep", "30"]})
    assert code == 201, body
    wait_until(lambda: agent.status()["running"], 60, "the overrunning run to start")
    code, late = _submit(agent, {**SHORT, "deadline_s": 4.0})
    assert code == 201, late
    wait_until(lambda: agent.task_status(late["id"]) == "cancelled", 60, "the hand-back")
    event = _handed_back(agent, late["id"])
    assert event["for_task"] is None
    code, new = _submit(agent, {**SHORT, "deadline_s": 60.0})
    assert code == 201, new
    assert [q["task_id"] for q in agent.status()["queue"]] == [new["id"]]
    assert agent.status()["counters"]["handed_back"] == 1


def test_an_urgent_task_takes_the_place_of_a_longer_queued_one(make_agent: AgentFactory) -> None:
    """Moore-Hodgson on a real agent: its one slot is held by a task of a kind it never ran
    (planned busy until its 20 s timeout); ``big`` (3 s learned, due in 24 s) fits behind
    it; ``small`` (2 s learned, due in 23 s) goes first by EDF and would make ``big`` late
    by about a second, so the longer ``big`` is handed back for it, in the transaction that
    admits ``small``. (The margins hold while ``big`` is submitted within 1 s of the
    blocker's start.)"""
    agent = make_agent(executor=ONE_SLOT).start()
    big_kind = {"name": "big", "command": ["sleep", "3"]}
    small_kind = {"name": "small", "command": ["sleep", "2"]}
    _run(agent, big_kind)
    _run(agent, small_kind)
    code, body = _submit(agent, {"name": "block", "command": ["sleep", "60"], "timeout_s": 20})
    assert code == 201, body
    wait_until(lambda: agent.status()["running"], 60, "the blocker to start")
    code, big = _submit(agent, {**big_kind, "deadline_s": 24.0})
    assert code == 201, big
    code, small = _submit(agent, {**small_kind, "deadline_s": 23.0})
    assert code == 201, small
    event = _handed_back(agent, big["id"])
    assert event["for_task"] == small["id"]
    assert [q["task_id"] for q in agent.status()["queue"]] == [small["id"]]


def test_submit_task_takes_a_503_as_an_answer_and_tries_the_next_agent(
    make_agent: AgentFactory,
) -> None:
    """The controller is out of reach (the kept breaker open); ``edge-1`` learned that
    ``long`` runs 2 s and refuses it with a 1 s deadline: the submission goes on to ``edge-2``
    (no estimate: it takes it), and the breaker is untouched. With ``edge-1`` alone, one
    ``BothUnreachable`` that says the deadline cannot be met."""
    slow = make_agent("edge-1", executor=ONE_SLOT).start()
    other = make_agent("edge-2", executor=ONE_SLOT).start()
    _run(slow, LONG)
    api = ApiClient(f"http://127.0.0.1:{_closed_port()}", TOKEN)
    breaker = Failover()
    breaker.failed(0.0)
    state = (breaker.down_since, breaker.next_probe)
    agents = [AgentClient(f"unix:{slow.api_socket}"), AgentClient(f"unix:{other.api_socket}")]
    spec = {**LONG, "deadline_s": 1.0}

    sent = submit_task(api, spec, agents, breaker=breaker)
    assert sent.route == "agent" and sent.agent is agents[1]
    assert sent.answer["id"].startswith("edge-2-")
    assert f"the agent unix:{slow.api_socket}: HTTP 503" in sent.why
    assert (breaker.down_since, breaker.next_probe) == state

    with pytest.raises(BothUnreachable) as raised:
        submit_task(api, spec, agents[:1], breaker=breaker)
    assert raised.value.deadline_infeasible
    assert "cannot meet the deadline" in str(raised.value)
    assert (breaker.down_since, breaker.next_probe) == state


def test_continuum_submit_reports_a_deadline_refusal(
    make_agent: AgentFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``continuum submit --fallback-agent``: refused by the only agent for its deadline,
    exit 3 and one line on stderr; with a second ``--fallback-agent`` the task goes there."""
    slow = make_agent("edge-1", executor=ONE_SLOT).start()
    other = make_agent("edge-2", executor=ONE_SLOT).start()
    _run(slow, LONG)
    task = tmp_path / "task.toml"
    task.write_text('name = "long"\ncommand = ["sleep", "2"]\ndeadline_s = 1.0\n')
    url = f"http://127.0.0.1:{_closed_port()}"
    argv = ["submit", str(task), "--url", url, "--token", TOKEN]
    capsys.readouterr()
    code = main([*argv, "--fallback-agent", f"unix:{slow.api_socket}"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert err.count("\n") == 1 and "cannot meet the deadline of 1 s" in err
    code = main(
        [
            *argv,
            *("--fallback-agent", f"unix:{slow.api_socket}"),
            *("--fallback-agent", f"unix:{other.api_socket}"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"on the agent unix:{other.api_socket}" in out and "HTTP 503" in out
