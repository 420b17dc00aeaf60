"""The pure parts of the local API's deadline admission (``edge_agent/deadline_plan.py``,
``shared.autonomy.edf_finish``) and of the client's reading of a refusal
(``cloud/api_client.py``)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.api_client import ApiError, BothUnreachable, deadline_refusal
from edge_agent.deadline_plan import DeadlineInfeasible, RunTimes, slot_free_at
from shared.autonomy import DeadlineJob, edf_finish, plan_edf

times = st.floats(min_value=0.0, max_value=1e4, allow_nan=False)
runs = st.floats(min_value=0.001, max_value=100.0, allow_nan=False)


@given(st.integers(min_value=0, max_value=8), st.lists(times, max_size=12), times)
def test_slot_free_at_one_time_per_slot_none_before_now(
    slots: int, ends: list[float], now: float
) -> None:
    free = slot_free_at(slots, ends, now)
    assert len(free) == slots
    assert all(t >= now for t in free)
    # a slot is free now for each slot nothing runs on; the rest free as the latest ends
    assert free.count(now) >= max(0, slots - len(ends))
    assert sorted(free) == free
    if slots and ends:
        assert free[-1] == max(now, *ends)


def test_slot_free_at_more_attempts_than_slots() -> None:
    """Five attempts on four slots: the first slot frees when the second attempt ends."""
    assert slot_free_at(4, [1.0, 2.0, 3.0, 4.0, 5.0], 0.0) == [2.0, 3.0, 4.0, 5.0]
    assert slot_free_at(2, [], 7.0) == [7.0, 7.0]


@st.composite
def _jobs(draw: st.DrawFn) -> list[DeadlineJob]:
    n = draw(st.integers(min_value=1, max_value=8))
    return [DeadlineJob(f"j{i}", draw(times), draw(runs)) for i in range(n)]


@given(st.data())
def test_edf_finish_agrees_with_the_plan_on_what_it_keeps(data: st.DataObject) -> None:
    """For every task a plan keeps, ``edf_finish`` over the kept tasks is its planned start
    plus its run, and never after its deadline; a task alone finishes a run after the
    first free core."""
    jobs = data.draw(_jobs())
    free_at = data.draw(st.lists(times, min_size=1, max_size=4))
    now = data.draw(times)
    plan = plan_edf(free_at, jobs[:-1], now, jobs[-1])
    for job, start in zip(plan.kept, plan.starts, strict=True):
        finish = edf_finish(free_at, list(plan.kept), now, job.key)
        assert math.isclose(finish, start + job.run_s)
        assert finish <= job.deadline + 1e-9
    alone = jobs[0]
    first = min(max(now, t) for t in free_at)
    assert math.isclose(edf_finish(free_at, [alone], now, alone.key), first + alone.run_s)


def test_edf_finish_without_cores_is_never() -> None:
    job = DeadlineJob("a", 1.0, 1.0)
    assert edf_finish([], [job], 0.0, "a") == math.inf


def test_run_times_learn_from_finished_runs_and_the_hint() -> None:
    """No run and no hint: no estimate; a hint gives one before the first run; the runs
    take over, and follow a kind whose runs get longer."""
    runs_ = RunTimes("edge-1", "edge")
    spec = {"name": "job", "command": ["x"], "deadline_s": 10.0}
    assert runs_.expected_s(spec) is None
    hinted = {**spec, "work_s": 2.0}
    assert runs_.expected_s(hinted) == _approx(2.0)  # an edge core is the reference
    for _ in range(10):
        runs_.observe(spec, 0.5)
    assert runs_.expected_s(spec) == _approx(0.5)
    assert runs_.expected_s({**spec, "work_s": 2.0}) == _approx(0.5)  # learned beats the hint
    for _ in range(20):
        runs_.observe(spec, 4.0)
    assert runs_.expected_s(spec) == _approx(4.0)
    other = {"command": ["sleep", "1"]}  # its kind is its command
    assert runs_.expected_s(other) is None


def _approx(value: float) -> object:
    return pytest.approx(value, rel=0.05)


def test_a_refusal_answers_with_its_context_as_json() -> None:
    hopeless = DeadlineInfeasible(
        "n:t", predicted_finish_s=math.inf, earliest_finish_s=3.0, deadline_s=1.0, run_s=3.0
    )
    body = hopeless.as_dict()
    assert json.loads(json.dumps(body, allow_nan=False)) == body
    assert body["error"] == "deadline_infeasible" and body["predicted_finish_s"] is None
    assert "even with nothing ahead it would finish at 3 s" in body["message"]
    crowded = DeadlineInfeasible(
        "n:t", predicted_finish_s=0.8, earliest_finish_s=0.5, deadline_s=1.0, run_s=0.5
    )
    assert "tasks already promised would then miss theirs" in crowded.message


def test_the_client_reads_a_deadline_refusal() -> None:
    refusal = ApiError(
        503,
        DeadlineInfeasible(
            "n:t", predicted_finish_s=2.0, earliest_finish_s=2.0, deadline_s=1.0, run_s=2.0
        ).as_dict(),
    )
    assert deadline_refusal(refusal)
    assert not deadline_refusal(ApiError(503, {"error": "admission_stopped"}))
    assert not deadline_refusal(OSError("refused"))
    both = BothUnreachable(OSError("refused"), [("unix:a", OSError("gone")), ("unix:b", refusal)])
    assert both.deadline_infeasible and both.agent is refusal
    assert "the agent unix:b: HTTP 503: this agent cannot meet" in str(both)
    assert not BothUnreachable(OSError("refused"), [("unix:a", OSError("x"))]).deadline_infeasible
