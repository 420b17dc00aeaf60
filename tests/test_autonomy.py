"""shared.autonomy: connectivity grading, autonomy levels, queue order with aging, admission,
shedding and the consistency gate."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.autonomy import (
    AutonomyLevel,
    QueuedTask,
    QueuePolicy,
    admit,
    autonomy_level,
    connectivity,
    effective_priority,
    may_start,
    order_queue,
    select_for_shedding,
    shortage,
)
from shared.consistency import AgentLease, LeasePolicy, replacement_allowed
from shared.vocab import Connectivity, Level

# ---------------------------------------------------------------- connectivity


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (0.0, Connectivity.CONNECTED),
        (3.74, Connectivity.CONNECTED),
        (3.75, Connectivity.DEGRADED),
        (7.49, Connectivity.DEGRADED),
        (7.5, Connectivity.INTERMITTENT),
        (14.99, Connectivity.INTERMITTENT),
        (15.0, Connectivity.DISCONNECTED),
        (math.inf, Connectivity.DISCONNECTED),
        (math.nan, Connectivity.DISCONNECTED),
        (-2.0, Connectivity.CONNECTED),
    ],
)
def test_connectivity_thresholds_at_quarter_half_and_full_period(
    age: float, expected: Connectivity
) -> None:
    assert connectivity(age, 15.0) == expected


def test_connectivity_default_period_is_15_s() -> None:
    assert connectivity(14.0) == Connectivity.INTERMITTENT
    assert connectivity(15.0) == Connectivity.DISCONNECTED


@pytest.mark.parametrize("period", [0.0, -1.0, math.inf, math.nan])
def test_connectivity_rejects_a_bad_period(period: float) -> None:
    with pytest.raises(ValueError, match="period_s"):
        connectivity(1.0, period)


_ORDER = list(Connectivity)


@given(
    a=st.floats(min_value=0, max_value=1e6),
    b=st.floats(min_value=0, max_value=1e6),
    period=st.floats(min_value=0.01, max_value=1e4),
)
def test_connectivity_and_autonomy_are_monotone_in_ack_age(
    a: float, b: float, period: float
) -> None:
    lo, hi = sorted((a, b))
    c_lo, c_hi = connectivity(lo, period), connectivity(hi, period)
    assert _ORDER.index(c_lo) <= _ORDER.index(c_hi)
    assert autonomy_level(c_lo).rank <= autonomy_level(c_hi).rank


def test_autonomy_level_one_step_per_grade() -> None:
    assert [autonomy_level(c) for c in Connectivity] == [
        AutonomyLevel.DEPENDENT,
        AutonomyLevel.SEMI_AUTONOMOUS,
        AutonomyLevel.HIGHLY_AUTONOMOUS,
        AutonomyLevel.FULLY_AUTONOMOUS,
    ]
    assert autonomy_level("disconnected") == AutonomyLevel.FULLY_AUTONOMOUS  # type: ignore[arg-type]
    assert str(AutonomyLevel.FULLY_AUTONOMOUS) == "fully_autonomous"


# ---------------------------------------------------------------- queue order


def _t(
    tid: str, priority: int = 50, deadline: float | None = None, enqueued: float = 0.0
) -> QueuedTask:
    return QueuedTask(task_id=tid, priority=priority, deadline=deadline, enqueued=enqueued)


def test_order_priority_then_deadline_then_waiting_time() -> None:
    tasks = [
        _t("low", 10, enqueued=0.0),
        _t("high-late-deadline", 90, deadline=500.0, enqueued=5.0),
        _t("high-early-deadline", 90, deadline=100.0, enqueued=6.0),
        _t("mid-new", 50, enqueued=7.0),
        _t("mid-old", 50, enqueued=2.0),
        _t("mid-deadline", 50, deadline=50.0, enqueued=8.0),
    ]
    ordered = [t.task_id for t in order_queue(tasks, now=9.0)]
    assert ordered == [
        "high-early-deadline",
        "high-late-deadline",
        "mid-deadline",
        "mid-old",
        "mid-new",
        "low",
    ]


def test_aging_lifts_a_long_waiting_task() -> None:
    policy = QueuePolicy(aging_s=10.0)
    old = _t("old", 0, enqueued=0.0)
    fresh = _t("fresh", 100, enqueued=1009.0)
    assert effective_priority(old, 1009.0, policy) == 100
    # Tied at 100 after 1000 s: the deadline-less tie falls to the longer wait.
    assert order_queue([fresh, old], 1009.0, policy)[0] is old
    assert order_queue([fresh, old], 999.0, policy)[0] is fresh


def test_effective_priority_ignores_future_enqueue_times() -> None:
    assert effective_priority(_t("x", 7, enqueued=100.0), 0.0) == 7


def test_queue_policy_validates() -> None:
    with pytest.raises(ValueError):
        QueuePolicy(aging_s=0)


_tasks = st.lists(
    st.builds(
        QueuedTask,
        task_id=st.text("abcdef", min_size=1, max_size=6),
        priority=st.integers(0, 100),
        deadline=st.none() | st.floats(0, 1e4),
        enqueued=st.floats(0, 1e4),
    ),
    max_size=30,
    unique_by=lambda t: t.task_id,
)


@given(tasks=_tasks, now=st.floats(0, 2e4))
def test_order_is_a_permutation_and_independent_of_input_order(
    tasks: list[QueuedTask], now: float
) -> None:
    ordered = order_queue(tasks, now)
    assert sorted(t.task_id for t in ordered) == sorted(t.task_id for t in tasks)
    assert order_queue(list(reversed(tasks)), now) == ordered
    effs = [effective_priority(t, now) for t in ordered]
    assert effs == sorted(effs, reverse=True)


@settings(max_examples=60)
@given(
    victim_priority=st.integers(0, 100),
    arrivals=st.lists(st.integers(0, 100), min_size=1, max_size=40),
    gap=st.floats(1.0, 30.0),
)
def test_nothing_starves(victim_priority: int, arrivals: list[int], gap: float) -> None:
    """A single-slot server takes the head of the queue every ``gap`` seconds while a stream
    of new tasks keeps arriving: the victim is served within the bound of the module doc."""
    policy = QueuePolicy(aging_s=10.0)
    queue = [_t("victim", victim_priority, enqueued=0.0)]
    now = 0.0
    served_at = None
    # Two arrivals per service: the queue grows, so only aging can save the victim.
    stream = iter([p for p in arrivals for _ in range(50)])
    for step in range(5000):
        for k in range(2):
            p = next(stream, None)
            if p is not None:
                queue.append(_t(f"t{step}-{k}", p, enqueued=now))
        now += gap
        head = order_queue(queue, now, policy)[0]
        queue.remove(head)
        if head.task_id == "victim":
            served_at = now
            break
    assert served_at is not None
    # Only tasks arriving less than 101 aging steps after it can overtake it.
    overtakers = 2 * (101 * policy.aging_s / gap + 1)
    assert served_at <= (overtakers + 1) * gap + 101 * policy.aging_s


# ---------------------------------------------------------------- admission


def test_admit_checks_concurrency_first() -> None:
    decision = admit({"cpu": 0.1, "memory_mb": 1}, {}, running=4, max_concurrent=4)
    assert not decision
    assert decision.reason == "concurrency_limit"


def test_admit_memory_against_free_with_headroom() -> None:
    metrics = {"memory_free_mb": 500.0, "cpu_pct": 0.0, "cpus": 2}
    assert admit({"cpu": 0.1, "memory_mb": 400}, metrics)
    refused = admit({"cpu": 0.1, "memory_mb": 400}, metrics, headroom_mb=200)
    assert (refused.ok, refused.reason) == (False, "memory")


def test_admit_cpu_only_while_our_tasks_hold_cpu() -> None:
    busy = {"memory_free_mb": 4000.0, "cpu_pct": 100.0, "cpus": 2}
    # Nothing of ours runs: a busy neighbour must not starve the queue.
    assert admit({"cpu": 1.0, "memory_mb": 10}, busy, {"cpu": 0.0})
    assert admit({"cpu": 8.0, "memory_mb": 10}, busy, {"cpu": 0.0})
    refused = admit({"cpu": 0.5, "memory_mb": 10}, busy, {"cpu": 0.5}, running=1)
    assert refused.reason == "cpu_busy"
    idle = {"memory_free_mb": 4000.0, "cpu_pct": 0.0, "cpus": 2}
    assert admit({"cpu": 1.0, "memory_mb": 10}, idle, {"cpu": 1.0}, running=1)
    refused = admit({"cpu": 1.5, "memory_mb": 10}, idle, {"cpu": 1.0}, running=1)
    assert refused.reason == "cpu_reserved"


def test_admit_cpu_busy_only_when_waiting_for_our_tasks_helps() -> None:
    # A neighbour keeps both cores busy; one task of ours holds a reservation.
    busy = {"memory_free_mb": 4000.0, "cpu_pct": 100.0, "cpus": 2}
    want, held = {"cpu": 0.5, "memory_mb": 10}, {"cpu": 0.5}
    # Our task sleeps (or waits on IO): its end frees no CPU, so waiting helps nobody.
    assert admit(want, {**busy, "own_cpu": 0.0}, held, running=1)
    assert admit(want, {**busy, "own_cpu": 0.2}, held, running=1)
    # Our task burns a core: once it ends there is room, so the start waits.
    refused = admit(want, {**busy, "own_cpu": 1.0}, held, running=1)
    assert (refused.ok, refused.reason) == (False, "cpu_busy")
    # Unknown own usage (the simulator, an older caller): refused as before.
    assert admit(want, busy, held, running=1).reason == "cpu_busy"
    assert admit(want, {**busy, "own_cpu": "x"}, held, running=1).reason == "cpu_busy"
    # The reservation check is not relaxed by idle tasks.
    refused = admit({"cpu": 1.6, "memory_mb": 10}, {**busy, "own_cpu": 0.0}, held, running=1)
    assert refused.reason == "cpu_reserved"


def test_admit_treats_missing_metrics_as_unknown() -> None:
    assert admit({"cpu": 4.0, "memory_mb": 10**6}, None, {"cpu": 3.0}, running=1)
    assert admit({"cpu": 1.0, "memory_mb": 10}, {"cpu_pct": True, "memory_free_mb": "x"})


@given(
    want_mem=st.floats(0, 1e5),
    free=st.floats(0, 1e5),
    want_cpu=st.floats(0, 64),
    held=st.floats(0, 64),
    cpus=st.integers(1, 64),
    busy=st.floats(0, 100),
    own=st.none() | st.floats(0, 64),
)
def test_admitted_tasks_fit(
    want_mem: float,
    free: float,
    want_cpu: float,
    held: float,
    cpus: int,
    busy: float,
    own: float | None,
) -> None:
    metrics = {"memory_free_mb": free, "cpu_pct": busy, "cpus": cpus}
    resources = {"cpu": want_cpu, "memory_mb": want_mem}
    known = metrics if own is None else {**metrics, "own_cpu": own}
    decision = admit(resources, known, {"cpu": held}, running=1)
    idle = cpus * (1 - busy / 100)
    # Waiting for our tasks frees at most what they use (all of it while that is unknown).
    room_by_waiting = math.inf if own is None else idle + own
    if decision:
        assert want_mem <= free
        assert held + want_cpu <= cpus
        assert want_cpu <= idle + 1e-9 or want_cpu > room_by_waiting
    else:
        assert decision.reason in ("memory", "cpu_reserved", "cpu_busy")
        assert decision.reason != "cpu_busy" or idle < want_cpu <= room_by_waiting
    # Knowing our own usage only ever admits more, never refuses what was admitted.
    before = admit(resources, metrics, {"cpu": held}, running=1)
    assert decision.ok or not before.ok
    assert decision.reason in (before.reason, None)


# ---------------------------------------------------------------- shedding


def test_shortage_memory_and_cpu_prefers_the_minute_average() -> None:
    kw = {"min_free_memory_mb": 64.0, "max_cpu_percent": 95.0}
    assert shortage({"memory_free_mb": 10.0}, **kw) == "memory"
    assert shortage({"memory_free_mb": 1000.0, "cpu_pct": 99.0}, **kw) == "cpu"
    spike = {"memory_free_mb": 1000.0, "cpu_pct": 100.0, "averages": {"cpu_pct": {"1m": 30.0}}}
    assert shortage(spike, **kw) is None
    assert shortage({}, **kw) is None


def test_shedding_picks_the_lowest_priority_newest_first_and_spares_default_work() -> None:
    tasks = [
        _t("p10-old", 10, enqueued=1.0),
        _t("p10-new", 10, enqueued=5.0),
        _t("p40", 40, enqueued=0.0),
        _t("p50", 50, enqueued=0.0),
    ]
    short = {"memory_free_mb": 1.0}
    assert [t.task_id for t in select_for_shedding(tasks, short)] == ["p10-new"]
    assert [t.task_id for t in select_for_shedding(tasks, short, count=10)] == [
        "p10-new",
        "p10-old",
        "p40",
    ]
    assert select_for_shedding(tasks, {"memory_free_mb": 1000.0, "cpu_pct": 5.0}) == []
    assert select_for_shedding([_t("p50", 50)], short) == []


@given(tasks=_tasks, count=st.integers(0, 5), free=st.floats(0, 200))
def test_shedding_never_takes_protected_work_and_only_under_pressure(
    tasks: list[QueuedTask], count: int, free: float
) -> None:
    victims = select_for_shedding(tasks, {"memory_free_mb": free}, count=count)
    assert len(victims) <= count
    assert all(v.priority < 50 for v in victims)
    if free >= 64.0:
        assert victims == []
    kept = [t for t in tasks if t not in victims and t.priority < 50]
    if victims and kept:
        assert max(v.priority for v in victims) <= min(t.priority for t in kept)


# ---------------------------------------------------------------- consistency gate


def _granted_lease(epoch: int = 3) -> AgentLease:
    lease = AgentLease("t1", epoch, policy=LeasePolicy(duration_s=30.0))
    lease.request(100.0)
    assert lease.granted(100.5, epoch=epoch, duration_s=30.0) is not None
    return lease


def test_causal_and_eventual_start_without_a_lease() -> None:
    assert may_start(Level.CAUSAL, None, 0.0)
    assert may_start("eventual", None, 0.0)


def test_causal_does_not_start_after_a_silence_longer_than_max_disconnect() -> None:
    """The controller may re-place causal work after ``max_disconnect_s`` of silence, so a
    placement held across a longer one waits for the next contact; eventual never waits."""
    assert may_start(Level.CAUSAL, None, 0.0, out_of_contact_s=9.9, max_disconnect_s=10.0)
    assert not may_start(Level.CAUSAL, None, 0.0, out_of_contact_s=10.0, max_disconnect_s=10.0)
    assert not may_start(Level.CAUSAL, None, 0.0, out_of_contact_s=math.nan, max_disconnect_s=10.0)
    assert may_start(Level.EVENTUAL, None, 0.0, out_of_contact_s=1e9, max_disconnect_s=10.0)


@given(
    silence=st.floats(min_value=0.0, max_value=1e6),
    bound=st.floats(min_value=0.001, max_value=1e6),
)
def test_causal_gate_is_exactly_the_controllers_replacement_bound(
    silence: float, bound: float
) -> None:
    """Held exactly when the controller may re-place the task after the same silence
    (``shared.consistency.replacement_allowed``): never both a start and a re-placement."""
    started = may_start(Level.CAUSAL, None, 0.0, out_of_contact_s=silence, max_disconnect_s=bound)
    replaced = replacement_allowed(
        Level.CAUSAL, out_of_contact_s=silence, max_disconnect_s=bound, now=0.0
    ).allowed
    assert started != replaced


def test_strong_needs_an_unexpired_lease_for_the_current_epoch() -> None:
    lease = _granted_lease(epoch=3)
    assert lease.deadline is not None
    assert not may_start(Level.STRONG, None, 101.0)
    assert may_start(Level.STRONG, lease, 101.0, epoch=3)
    assert not may_start(Level.STRONG, lease, 101.0, epoch=4)
    assert not may_start(Level.STRONG, lease, lease.deadline)
    requested = AgentLease("t1", 3)
    requested.request(100.0)  # asked, not granted
    assert not may_start(Level.STRONG, requested, 100.1)
