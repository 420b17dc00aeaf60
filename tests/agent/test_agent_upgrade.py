"""An agent restarted on the state an earlier agent process left: its journal (a retry keeps
the task's deadline through it) and its task supervisor (one of an older version keeps the
attempts it runs, and new launches wait for one of this version). In process, each agent
on the same state directory, with a real supervisor and real tasks."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from agent_harness import sh, wait_until
from test_agent_core import _agent, _ManualClock, _submit

from edge_agent import supervisor_link
from edge_agent.agent import Agent
from edge_agent.journal import Journal
from edge_agent.recovery import recover
from shared.crdt import visible_status


def _agent_here(tmp_path: Path, clock: _ManualClock) -> Agent:
    """Tasks run as the test's user: they can see the gate files in ``tmp_path``."""
    return _agent(tmp_path, clock, executor={"run_as": ""})


def _restart(old: Agent, tmp_path: Path, clock: _ManualClock) -> Agent:
    """The agent process ends as a ``kill -9`` ends it (its supervisor connection closes, its
    journal is left as it is) and a new one starts on the same state directory."""
    old.core.executor.close()
    old.core.journal.close()
    new = _agent_here(tmp_path, clock)
    recover(new.core, new.scheduler)  # prepare()'s sweep, without its sampler: admission
    return new  # by this machine's load is not under test


def _close(agent: Agent) -> None:
    agent.core.executor.close()  # the supervisor exits once nothing runs
    agent.core.journal.close()


def test_a_retry_keeps_the_deadline_counted_from_submission_through_a_restart(
    tmp_path: Path,
) -> None:
    """``deadline_s`` counts from the submission (docs/task-spec.md), retries included: an
    attempt that fails 8 s into a 10 s deadline, with an agent restart in between, leaves
    its retry the 2 s left; the retry's own failure, past the deadline, queues the next one
    with the same deadline, already passed, and it still runs."""
    clock = _ManualClock()
    gate = tmp_path / "fail-now"
    agent = _agent_here(tmp_path, clock)
    task = {
        "id": "core-1:t",
        "command": sh(f"while [ ! -e {gate} ]; do sleep 0.02; done; exit 1"),
        "deadline_s": 10.0,
        "retry": {"max_attempts": 3, "backoff_s": 1.0, "jitter": 0.0},
    }
    deadline_ms = clock.wall_ms() + 10_000
    try:
        assert _submit(agent, task)[0] == 201
        agent.tick()
        (proc,) = agent.core.journal.processes()
        assert proc.task_deadline_ms == deadline_ms
        clock.now += 8.0
        agent = _restart(agent, tmp_path, clock)
        assert list(agent.core.running) == [proc.attempt]  # adopted, still running
        gate.touch()
        wait_until(lambda: agent.tick() or agent.core.journal.queued(), 30, "the retry")
        (row,) = agent.core.journal.queued()
        assert (row.failures, row.deadline_ms) == (1, deadline_ms)  # 2 s left, not 10
        clock.now += 5.0  # past the deadline and the backoff: it starts, fails at once
        wait_until(
            lambda: agent.tick() or agent.core.counters["outcome_failed"] == 2, 30, "retry 1"
        )
        (row,) = agent.core.journal.queued()
        assert (row.failures, row.deadline_ms) == (2, deadline_ms)
        assert row.deadline_ms < clock.wall_ms()
        clock.now += 5.0
        wait_until(
            lambda: agent.tick() or agent.core.counters["outcome_failed"] == 3, 30, "retry 2"
        )
        assert agent.core.journal.queued() == []  # the budget is spent
    finally:
        _close(agent)


def test_a_journal_of_the_previous_version_opens_and_its_rows_retry_as_before(
    tmp_path: Path,
) -> None:
    """A journal whose ``processes`` table predates ``task_deadline_ms`` gets the column
    when opened; its running attempts read ``None`` (the retry counts from its re-queue,
    as that version did)."""
    path = tmp_path / "journal.db"
    db = sqlite3.connect(path)
    db.executescript(
        """CREATE TABLE processes (
        attempt TEXT PRIMARY KEY, task_id TEXT NOT NULL, epoch INTEGER NOT NULL,
        level TEXT NOT NULL, watchdog_pid INTEGER NOT NULL, pgid INTEGER,
        started_ms INTEGER NOT NULL, deadline REAL, failures INTEGER NOT NULL DEFAULT 0,
        source TEXT NOT NULL DEFAULT 'placed');
        INSERT INTO processes VALUES ('t/n:1', 't', 1, 'causal', 42, NULL, 5, NULL, 0, 'placed');
        """
    )
    db.commit()
    db.close()
    for _ in range(2):  # and a second open finds nothing more to add
        journal = Journal(path)
        try:
            (proc,) = journal.processes()
            assert (proc.attempt, proc.watchdog_pid, proc.task_deadline_ms) == ("t/n:1", 42, None)
        finally:
            journal.close()


#: A real supervisor of this code that announces protocol 1, as one started by an agent of an
#: earlier version does (its hello named no protocol: 1); started as the link starts one.
_OLD_SUPERVISOR = (
    "import sys; sys.path.insert(0, sys.argv[1]); import supervisor; "
    "supervisor.PROTOCOL = 1; sys.exit(supervisor.main(sys.argv[2]))"
)


def _start_old_supervisor(runs: Path) -> subprocess.Popen[bytes]:
    edge_agent_dir = str(Path(supervisor_link.__file__).parent)
    proc = subprocess.Popen(
        [sys.executable, "-S", "-E", "-c", _OLD_SUPERVISOR, edge_agent_dir, str(runs)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    proc.stdout.close()
    return proc


def _status(agent: Agent, task_id: str) -> str | None:
    rec = agent.replica.get(task_id)
    return None if rec is None else str(visible_status(rec))


def test_an_older_supervisor_keeps_its_attempts_and_gets_no_launch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent of the previous version (its link speaks protocol 1) ran ``old`` on a
    supervisor of that version, which outlives it. The upgraded agent re-attaches to that
    supervisor for ``old`` (its exit is reported as ever) but sends it no launch: ``new``
    waits in the queue, never ``spawn_failed``. Once ``old`` ended and was acknowledged, the
    agent lets the old supervisor go (it exits) and starts one of its own version, which runs
    ``new``."""
    clock = _ManualClock()
    gate = tmp_path / "old-may-end"
    agent = _agent_here(tmp_path, clock)
    old_supervisor = _start_old_supervisor(agent.core.executor.runs_dir)
    try:
        monkeypatch.setattr(supervisor_link, "PROTOCOL", 1)  # the previous version's agent
        task = {"id": "core-1:old", "command": sh(f"while [ ! -e {gate} ]; do sleep 0.02; done")}
        assert _submit(agent, task)[0] == 201
        agent.tick()
        (proc,) = agent.core.journal.processes()
        assert proc.watchdog_pid == old_supervisor.pid
        monkeypatch.undo()  # the upgrade
        agent = _restart(agent, tmp_path, clock)
        link = agent.core.executor.link
        assert (link.pid, link.outdated, link.owed) == (old_supervisor.pid, True, {proc.attempt})
        assert _submit(agent, {"id": "core-1:new", "command": ["true"]})[0] == 201
        for _ in range(5):
            agent.tick()
        assert [row.task_id for row in agent.core.journal.queued()] == ["core-1:new"]
        assert [p.task_id for p in agent.core.journal.processes()] == ["core-1:old"]
        gate.touch()
        wait_until(
            lambda: agent.tick() or _status(agent, "core-1:new") == "succeeded", 30, "new ran"
        )
        assert _status(agent, "core-1:old") == "succeeded"
        assert old_supervisor.wait(timeout=60) == 0  # let go: it exited
        assert not link.outdated and link.pid not in (0, old_supervisor.pid)
        assert agent.core.counters["outcome_failed"] == 0  # no spawn_failed
    finally:
        _close(agent)
        if old_supervisor.poll() is None:
            old_supervisor.kill()
            old_supervisor.wait()
