"""``shared.autonomy.plan_edf``: an agent's local queue admits a task only when it and every
task it holds can still finish by their deadlines (EDF, each on the core that frees first),
refusing the fewest (Moore-Hodgson: the longest first)."""

from __future__ import annotations

import heapq
import itertools

from hypothesis import given
from hypothesis import strategies as st

from shared.autonomy import DeadlineJob, EdfPlan, plan_edf


def _job(key: str, deadline: float, run_s: float) -> DeadlineJob:
    return DeadlineJob(key, deadline, run_s)


def _finishes(free_at: list[float], now: float, plan: EdfPlan) -> list[float]:
    """Replay the plan: each kept task in order on the core that frees first."""
    heap = [max(now, t) for t in free_at]
    heapq.heapify(heap)
    out = []
    for job, start in zip(plan.kept, plan.starts, strict=True):
        first = heapq.heappop(heap)
        assert start == first
        heapq.heappush(heap, start + job.run_s)
        out.append(start + job.run_s)
    return out


def test_a_task_that_cannot_finish_is_refused() -> None:
    plan = plan_edf([10.0], [], 0.0, _job("late", 10.5, 1.0))  # its core frees at 10 s
    assert not plan.admits("late") and [j.key for j in plan.refused] == ["late"]


def test_no_core_refuses_everything() -> None:
    plan = plan_edf([], [_job("a", 5, 1)], 0.0, _job("b", 5, 1))
    assert plan.kept == () and {j.key for j in plan.refused} == {"a", "b"}


def test_everything_that_fits_is_kept_in_deadline_order() -> None:
    queued = [_job("batch", 30.0, 4.0), _job("report", 5.0, 1.0)]
    plan = plan_edf([0.0, 2.0], queued, 0.0, _job("urgent", 0.5, 0.1))
    assert [j.key for j in plan.kept] == ["urgent", "report", "batch"]
    assert plan.starts == (0.0, 0.1, 1.1) and plan.refused == ()


def test_an_urgent_task_displaces_the_longest_queued_one() -> None:
    """One core, queued long runs up to the brim: the urgent newcomer is kept and the most
    recently admitted of the (equally) long ones is handed back, not the urgent one."""
    queued = [_job(f"batch{i}", 30.0, 3.75) for i in range(8)]  # finish at 30.0
    plan = plan_edf([0.0], queued, 0.0, _job("urgent", 0.5, 0.05))
    assert plan.admits("urgent") and [j.key for j in plan.refused] == ["batch7"]


def test_an_equal_newcomer_is_refused_before_a_promise_is_broken() -> None:
    queued = [_job(f"batch{i}", 30.0, 3.75) for i in range(8)]
    plan = plan_edf([0.0], queued, 0.0, _job("batch8", 30.0, 3.75))
    assert [j.key for j in plan.refused] == ["batch8"] and len(plan.kept) == 8


jobs = st.lists(
    st.tuples(st.floats(min_value=0.0, max_value=20.0), st.floats(min_value=0.01, max_value=5.0)),
    min_size=0,
    max_size=8,
)
cores = st.lists(st.floats(min_value=-1.0, max_value=10.0), min_size=1, max_size=4)


@given(cores, jobs, st.booleans())
def test_what_is_kept_meets_every_deadline_and_nothing_is_lost(
    free_at: list[float], specs: list[tuple[float, float]], offer: bool
) -> None:
    offered = [_job(f"j{i}", d, r) for i, (d, r) in enumerate(specs)]
    queued, new = (offered[:-1], offered[-1]) if offer and offered else (offered, None)
    plan = plan_edf(free_at, queued, 0.0, new)
    assert sorted(j.key for j in (*plan.kept, *plan.refused)) == sorted(j.key for j in offered)
    assert [j.deadline for j in plan.kept] == sorted(j.deadline for j in plan.kept)
    for job, end in zip(plan.kept, _finishes(free_at, 0.0, plan), strict=True):
        assert end <= job.deadline


@given(st.floats(min_value=0.0, max_value=3.0), jobs)
def test_on_one_core_it_keeps_as_many_as_any_feasible_choice(
    free: float, specs: list[tuple[float, float]]
) -> None:
    """Moore-Hodgson is optimal on one machine: no subset that meets every deadline in EDF
    order is larger than what the plan keeps."""
    offered = [_job(f"j{i}", d, r) for i, (d, r) in enumerate(specs)]
    plan = plan_edf([free], offered, 0.0)

    def feasible(subset: tuple[DeadlineJob, ...]) -> bool:
        t = free
        for job in sorted(subset, key=lambda j: j.deadline):
            t += job.run_s
            if t > job.deadline:
                return False
        return True

    subsets = (s for n in range(len(offered) + 1) for s in itertools.combinations(offered, n))
    best = max((len(s) for s in subsets if feasible(s)), default=0)
    assert len(plan.kept) == best
