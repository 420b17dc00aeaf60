"""Grouped journal writes (issue 14), with an in-process agent and its real supervisor: one
scheduling pass is one transaction whatever it starts and ends, a start is committed before
its process exists, and an outbox ack costs no synced commit of its own."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.agent import Agent
from edge_agent.config import parse_config
from edge_agent.executor import Launch, Outcome, RunningAttempt
from edge_agent.inbox import ApiCall, TasksReported
from edge_agent.journal import Journal


class _Clock:
    def mono(self) -> float:
        return time.monotonic()

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    cfg = parse_config(
        {
            "node": {"id": "core-1", "state_dir": str(tmp_path / "state")},
            "broker": {"host": "127.0.0.1"},  # never connected: run() is not called
            "discovery": {"enabled": False},
            "executor": {"run_as": "", "max_concurrent": 8, "min_free_memory_mb": 1.0},
        },
        env={},
    )
    made = Agent(cfg, clock=_Clock())
    try:
        yield made
    finally:
        made.core.executor.close()
        made.core.journal.close()


def _submit(agent: Agent, name: str) -> None:
    call = ApiCall("POST", "/v1/tasks", json.dumps({"id": f"core-1:{name}", "command": ["true"]}))
    agent.handle(call)
    assert call.result[0] == 201, call.result


def _statements(agent: Agent) -> list[str]:
    seen: list[str] = []
    agent.core.journal.db.set_trace_callback(seen.append)
    return seen


def _outcomes(agent: Agent, n: int) -> list[Outcome]:
    found: list[Outcome] = []
    end = time.monotonic() + 60
    while len(found) < n:
        assert time.monotonic() < end, f"only {len(found)} of {n} attempts ended"
        found += agent.core.executor.poll()
        time.sleep(0.02)
    return found


def test_a_pass_is_one_transaction_for_its_starts_and_its_ends(agent: Agent) -> None:
    for name in ("a", "b", "c"):
        _submit(agent, name)
    seen = _statements(agent)
    agent.scheduler.start_ready()
    assert seen.count("COMMIT") == 1 and len(agent.core.running) == 3
    ended = _outcomes(agent, 3)
    for name in ("d", "e"):
        _submit(agent, name)
    seen.clear()
    agent.scheduler.settle(ended, start=True)  # three ends and two starts
    assert seen.count("COMMIT") == 1
    statuses = {rec.task_id: rec.attempts for rec in agent.replica.records()}
    assert {task_id for task_id, attempts in statuses.items() if len(attempts) == 1} == {
        f"core-1:{name}" for name in "abcde"
    }
    assert {run.task_id for run in agent.core.running.values()} == {"core-1:d", "core-1:e"}
    agent.scheduler.settle(_outcomes(agent, 2), start=True)
    done = agent.core.journal.db.execute("SELECT status FROM records").fetchall()
    assert done == [("succeeded",)] * 5


def test_a_start_is_committed_before_its_process_exists(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The launch happens after the pass's commit: a crash in between leaves a journaled
    start without a process (the restart sweep fails it), never a process the journal does
    not know."""
    _submit(agent, "a")
    order = _statements(agent)
    launch = agent.core.executor.launch

    def launch_in_order(request: Launch) -> RunningAttempt:
        order.append("launch")
        return launch(request)

    monkeypatch.setattr(agent.core.executor, "launch", launch_in_order)
    agent.scheduler.start_ready()
    assert order.index("launch") > order.index("COMMIT")
    agent.scheduler.settle(_outcomes(agent, 1), start=False)


def test_an_ack_costs_no_synced_commit_of_its_own(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    try:
        with journal.transaction():
            seqs = [journal.add_outbox("t", {"i": i}, now_ms=i) for i in range(3)]
        seen: list[str] = []
        journal.db.set_trace_callback(seen.append)
        with journal.transaction():
            assert journal.ack(seqs[1]) == 2
        assert not [sql for sql in seen if sql.startswith("DELETE")]  # nothing written yet
        assert journal.outbox_depth() == 1  # a read of the outbox carries it out first ...
        deleted = seen.index(next(sql for sql in seen if sql.startswith("DELETE")))
        assert seen[deleted - 1] == "PRAGMA synchronous=NORMAL"  # ... unsynced
        with journal.transaction():
            journal.ack(seqs[2])
            journal.add_outbox("t", {"i": 3}, now_ms=3)  # a durable write: the ack rides along
        assert [s for s, _ in journal.outbox_batch(0, 10)] == [seqs[2] + 1]
    finally:
        journal.close()


def test_a_burst_of_submissions_shares_one_commit_with_the_pass_it_allows(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Local submissions taken together, the ends polled with them and the starts they allow
    are one transaction (issue 14); each submission is answered once that committed, before
    the launches; a wake-up for an exit between them does not split the burst."""
    _submit(agent, "a")
    agent.scheduler.start_ready()
    ended = _outcomes(agent, 1)
    monkeypatch.setattr(agent.core.executor, "poll", lambda: ended)
    order = _statements(agent)
    launch = agent.core.executor.launch
    calls = [
        ApiCall("POST", "/v1/tasks", json.dumps({"id": f"core-1:{name}", "command": ["true"]}))
        for name in ("b", "c", "d")
    ]

    def launch_in_order(request: Launch) -> RunningAttempt:
        order.append(f"launch, answered {sum(call.done.is_set() for call in calls)}")
        return launch(request)

    monkeypatch.setattr(agent.core.executor, "launch", launch_in_order)
    agent.inbox.put(calls[1])
    agent.inbox.put(TasksReported())
    agent.inbox.put(calls[2])
    agent._submit_burst(calls[0])
    assert [call.result[0] for call in calls] == [201, 201, 201]
    assert order.count("COMMIT") == 1
    assert [step for step in order if step.startswith("launch")] == ["launch, answered 3"] * 3
    assert order.index("COMMIT") < order.index("launch, answered 3")
    monkeypatch.undo()
    agent.scheduler.settle(_outcomes(agent, 3), start=False)
    done = agent.core.journal.db.execute("SELECT status FROM records").fetchall()
    assert sorted(done) == [("succeeded",)] * 4
