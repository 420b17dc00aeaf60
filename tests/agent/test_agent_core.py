"""The agent's core loop in process (no broker, no threads): what a journal write failure
does. ``PRAGMA query_only`` makes SQLite itself refuse every write, as a full disk does
(``max_page_count`` would not: small rows still fit in pages already allocated)."""

from __future__ import annotations

import json
from pathlib import Path

from edge_agent.agent import Agent, _ApiCall
from edge_agent.config import parse_config


def _agent(tmp_path: Path) -> Agent:
    cfg = parse_config(
        {
            "node": {"id": "core-1", "state_dir": str(tmp_path / "state")},
            "broker": {"host": "127.0.0.1"},  # never connected: run() is not called
            "discovery": {"enabled": False},
        },
        env={},
    )
    return Agent(cfg)


def _submit(agent: Agent, task: dict[str, object]) -> tuple[int, object]:
    call = _ApiCall("POST", "/v1/tasks", json.dumps(task).encode())
    agent._handle(("api", call))
    return call.result


def test_disk_full_stops_admission_keeps_committed_state_and_recovers(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    try:
        assert _submit(agent, {"id": "before", "command": ["true"]})[0] == 201
        agent.journal.db.execute("PRAGMA query_only = ON")
        code, _ = _submit(agent, {"id": "during", "command": ["true"]})
        assert code == 500  # the write failed ...
        assert agent.admission_stopped is not None  # ... admission stopped and reported
        assert agent.status()["admission_stopped"]
        assert agent.counters["journal_errors"] == 1
        # Memory mirrors the journal: the rolled-back task is not half-known.
        assert agent.replica.get("during") is None
        assert agent.replica.get("before") is not None
        code, body = _submit(agent, {"id": "during", "command": ["true"]})
        assert (code, body["error"]) == (503, "admission_stopped")  # type: ignore[index]
        agent._safely(agent._tick)  # as the loop runs it; the probe fails too: still stopped
        assert agent.admission_stopped is not None
        # Space again (an operator cleaned up): the next probe resumes admission.
        agent.journal.db.execute("PRAGMA query_only = OFF")
        agent._timers["journal_probe"] = 0.0
        agent._safely(agent._tick)
        assert agent.admission_stopped is None
        assert _submit(agent, {"id": "after", "command": ["true"]})[0] == 201
        rows = agent.journal.db.execute("SELECT task_id FROM records").fetchall()
        assert sorted(r[0] for r in rows) == ["after", "before"]
    finally:
        agent.journal.close()


class _ShortOfMemory:
    """psutil's view replaced by a node with 10 MB free (the input, not the part under test)."""

    def sample(self, now: float) -> dict[str, object]:
        return {"cpus": 2, "cpu_pct": 5.0, "memory_free_mb": 10.0, "averages": {}}


def test_memory_pressure_sheds_low_priority_queued_work_only(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    try:
        agent.sampler = _ShortOfMemory()  # type: ignore[assignment]
        for task_id, priority in (("low", 10), ("default", 50), ("lower", 5)):
            task = {"id": task_id, "command": ["true"], "priority": priority}
            assert _submit(agent, task)[0] == 201
        agent._shed()
        agent._shed()
        agent._shed()
        queued = sorted(r["task_id"] for r in agent.journal.queued())
        assert queued == ["default"]  # below-default priorities went, lowest first
        shed = [
            e
            for e in agent.journal.db.execute(
                "SELECT task_id, data FROM events WHERE kind = 'unstartable'"
            )
        ]
        assert [t for t, _ in shed] == ["lower", "low"]
        assert all(json.loads(d)["reason"] == "shed" for _, d in shed)
        assert agent.counters["shed"] == 2
        # Nothing is admitted while memory is short either.
        agent._start_ready(0.0)
        assert agent.running == {}
        assert agent.counters["not_admitted_memory"] >= 1
    finally:
        agent.journal.close()
