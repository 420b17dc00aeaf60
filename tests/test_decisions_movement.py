"""What may move and when (shared.decisions): safety, triggers with cooldown and
overload budget, the partition rule and retries of ended attempts."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.consistency import Lease
from shared.crdt import AttemptStatus as A
from shared.decisions import (
    DECLINED,
    TRIGGER_COOLDOWN_S,
    AttemptFacts,
    Movability,
    NodeFacts,
    PartitionFacts,
    RetryFacts,
    Trigger,
    TriggerFacts,
    agent_retries,
    drain_move,
    fired_triggers,
    holder_stopped,
    movable,
    partition_move,
    retry_move,
    trigger_move,
)
from shared.vocab import Level, LinkState, TaskStatus


def lease(epoch: int, *, until: float, node: str = "a") -> Lease:
    return Lease(
        task_id="t", epoch=epoch, node=node, duration_s=10.0, granted_at=0.0, replace_after=until
    )


# -- movable --------------------------------------------------------------------


def test_a_started_attempt_never_moves() -> None:
    for level in Level:
        d = movable(Movability(level=level, epoch=1, started=True), now=0.0)
        assert not d.move and "started" in d.reason


def test_idempotent_eventual_moves_causal_never() -> None:
    eventual = Movability(level=Level.EVENTUAL, epoch=1, started=False, idempotent=True)
    assert movable(eventual, now=0).move
    for idempotent in (False, True):
        causal = Movability(level=Level.CAUSAL, epoch=1, started=False, idempotent=idempotent)
        assert not movable(causal, now=0).move


def test_non_idempotent_work_is_never_hedged_by_a_policy_move() -> None:
    # a start the controller has not heard of may be under way: moving would run the
    # side effect twice, whatever the trigger
    eventual = Movability(level=Level.EVENTUAL, epoch=1, started=False)
    d = movable(eventual, now=0)
    assert not d.move and "not idempotent" in d.reason
    assert not trigger_move(
        facts(node_triggers=(OVERLOAD,), overload_budget=1, movability=eventual), now=100
    ).move


@given(
    level=st.sampled_from([Level.CAUSAL, Level.EVENTUAL]),
    started=st.booleans(),
    epoch=st.integers(1, 3),
    lease_epoch=st.one_of(st.none(), st.integers(1, 3)),
    until=st.floats(0, 100),
    now=st.floats(0, 100),
)
def test_no_move_hedges_non_idempotent_work(
    level: Level, started: bool, epoch: int, lease_epoch: int | None, until: float, now: float
) -> None:
    # neither a policy move nor a drain re-places non-idempotent work whose attempt
    # was heard started: a second run of its side effect is harm, not a hedge
    held = None if lease_epoch is None else lease(lease_epoch, until=until)
    work = Movability(level=level, epoch=epoch, started=started, lease=held)
    assert not movable(work, now=now).move
    drained = drain_move(work, node_id="a", now=now)
    if started:
        assert not drained.move and drained.later  # a live lease of the epoch holds it too
    if drained.move:  # only before it started, and the old node is told (superseded)
        assert not started and drained.exclude == ("a",)


def test_drain_hedges_idempotent_eventual_work_only() -> None:
    running = Movability(level=Level.EVENTUAL, epoch=1, started=True)
    d = drain_move(running, node_id="a", now=0.0)
    assert not d.move and "not idempotent" in d.reason
    d = drain_move(replace(running, idempotent=True), node_id="a", now=0.0)
    assert d.move and "idempotent" in d.reason and d.exclude == ("a",)


def test_strong_moves_only_without_a_lease_of_this_epoch() -> None:
    base = Movability(level=Level.STRONG, epoch=2, started=False)
    assert movable(base, now=0).move
    assert movable(replace(base, lease=lease(1, until=5.0)), now=6.0).move
    assert not movable(replace(base, lease=lease(1, until=5.0)), now=4.0).move  # live
    assert not movable(replace(base, lease=lease(2, until=5.0)), now=9.0).move  # this epoch


# -- triggers -------------------------------------------------------------------


def node(node_id: str, tasks: int, **kw: Any) -> NodeFacts:
    return NodeFacts(node_id=node_id, eligible=True, active_tasks=tasks, **kw)


def test_overload_budget_needs_a_gap_of_two() -> None:
    swap = fired_triggers([node("a", 1), node("b", 0)])
    assert swap.triggers == {} and swap.overload_budget == {}
    real = fired_triggers([node("a", 4), node("b", 0), node("c", 1)])
    assert [t.name for t in real.triggers["a"]] == ["overload"]
    assert real.overload_budget == {"a": 1}


def test_ineligible_nodes_neither_fire_nor_count() -> None:
    out = fired_triggers(
        [
            node("a", 4, failure_ewma=0.5),
            NodeFacts(node_id="b", eligible=False, active_tasks=0, failure_ewma=0.9),
        ]
    )
    assert set(out.triggers) == {"a"} and [t.name for t in out.triggers["a"]] == ["failure_rate"]


def test_pending_event_triggers_are_kept() -> None:
    pending = Trigger(name="link_degraded", reason="r", value=1.0, threshold=1.0, node_id="a")
    out = fired_triggers([node("a", 1, pending=(pending,)), node("b", 1)])
    assert out.triggers["a"] == (pending,)


OVERLOAD = Trigger(name="overload", reason="busy", value=4.0, threshold=2.0, node_id="a")
DEGRADED = Trigger(name="link_degraded", reason="worse", value=1.0, threshold=1.0, node_id="a")
EVENTUAL = Movability(level=Level.EVENTUAL, epoch=1, started=False, idempotent=True)


def facts(**kw: Any) -> TriggerFacts:
    base: dict[str, Any] = {
        "node_id": "a",
        "adaptive": True,
        "level": Level.EVENTUAL,
        "movability": EVENTUAL,
    }
    return TriggerFacts(**{**base, **kw})


def test_trigger_moves_only_in_adaptive_mode() -> None:
    assert not trigger_move(facts(adaptive=False, node_triggers=(OVERLOAD,)), now=100).move
    d = trigger_move(facts(node_triggers=(OVERLOAD,), overload_budget=1), now=100)
    assert d.move and d.trigger == "overload: busy" and d.exclude == ("a",)


def test_latency_names_the_move_and_needs_no_budget() -> None:
    d = trigger_move(facts(node_triggers=(OVERLOAD,), rtt_ms=80.0, max_latency_ms=50.0), now=100)
    assert d.move and d.trigger is not None and d.trigger.startswith("latency:")
    assert not trigger_move(facts(rtt_ms=40.0, max_latency_ms=50.0), now=100).move


def test_overload_alone_respects_the_spent_budget() -> None:
    d = trigger_move(facts(node_triggers=(OVERLOAD,), overload_budget=0), now=100)
    assert not d.move and "budget" in d.reason


def test_link_degraded_moves_strong_work_only() -> None:
    strong = Movability(level=Level.STRONG, epoch=1, started=False)
    assert trigger_move(
        facts(node_triggers=(DEGRADED,), level=Level.STRONG, movability=strong), now=100
    ).move
    assert not trigger_move(facts(node_triggers=(DEGRADED,)), now=100).move


@given(st.floats(0, 100))
def test_cooldown(since: float) -> None:
    d = trigger_move(facts(node_triggers=(OVERLOAD,), overload_budget=1, moved_at=0.0), now=since)
    assert d.move is (since >= TRIGGER_COOLDOWN_S)


def test_trigger_respects_safety() -> None:
    causal = Movability(level=Level.CAUSAL, epoch=1, started=False)
    d = trigger_move(facts(node_triggers=(OVERLOAD,), overload_budget=1, movability=causal), now=99)
    assert not d.move and "causal" in d.reason


# -- partition ------------------------------------------------------------------


def pfacts(**kw: Any) -> PartitionFacts:
    base: dict[str, Any] = {"node_id": "a", "link": LinkState.PARTITIONED, "level": Level.CAUSAL}
    return PartitionFacts(**{**base, **kw})


def test_partition_rule_only_for_nodes_out_of_reach() -> None:
    d = partition_move(pfacts(link=LinkState.CRITICAL, level=Level.EVENTUAL), now=0)
    assert not d.move and d.reason == "node in reach"


@pytest.mark.parametrize(
    ("level", "kw", "moves", "fence"),
    [
        (Level.EVENTUAL, {}, True, False),
        (Level.CAUSAL, {"out_of_contact_s": 10.0, "max_disconnect_s": 20.0}, False, True),
        (Level.CAUSAL, {"out_of_contact_s": 20.0, "max_disconnect_s": 20.0}, True, True),
        (Level.STRONG, {"lease": lease(1, until=50.0)}, False, True),
        (Level.STRONG, {"lease": lease(1, until=5.0)}, True, True),
    ],
)
def test_partition_rule_per_level(
    level: Level, kw: dict[str, Any], moves: bool, fence: bool
) -> None:
    d = partition_move(pfacts(level=level, **kw), now=10.0)
    assert d.move is moves
    if moves:
        assert d.fence is fence and d.exclude == ("a",)
        assert d.trigger is not None and d.trigger.startswith(f"partitioned: {level.value} task")


# -- retries --------------------------------------------------------------------


def fenced(node: str = "a", epoch: int = 1) -> AttemptFacts:
    return AttemptFacts(node=node, epoch=epoch, status=A.FAILED, reason="lease_expired")


def rfacts(**kw: Any) -> RetryFacts:
    base: dict[str, Any] = {
        "node_id": "a",
        "link": LinkState.HEALTHY,
        "level": Level.STRONG,
        "epoch": 1,
        "status": TaskStatus.PENDING,
        "attempts": (fenced(),),
    }
    return RetryFacts(**{**base, **kw})


def test_agent_retry_rule() -> None:
    def retries(status: A, reason: str, level: Level = Level.CAUSAL, idem: bool = False) -> bool:
        a = AttemptFacts(node="a", epoch=1, status=status, reason=reason)
        return agent_retries(a, level=level, idempotent=idem)

    assert retries(A.FAILED, "exit_code 1")
    assert not retries(A.FAILED, "lease_expired")
    assert not retries(A.LOST, "node partitioned; re-placed")
    assert retries(A.FAILED, "agent_restart", idem=True)
    assert not retries(A.FAILED, "agent_restart", Level.STRONG, idem=True)
    for declined in DECLINED:  # the node would decline it again
        assert not retries(A.FAILED, declined, idem=True)


def test_a_declined_task_is_placed_again_elsewhere() -> None:
    """An agent that shed a task, or does not allow its callable, never retries it; the
    controller places it again, avoiding that node. An ordinary failure it retries itself."""
    for declined in DECLINED:
        attempt = AttemptFacts(node="a", epoch=1, status=A.FAILED, reason=declined)
        d = retry_move(rfacts(level=Level.CAUSAL, attempts=(attempt,)), now=0.0)
        assert d.move and d.exclude == ("a",), declined
    failed = AttemptFacts(node="a", epoch=1, status=A.FAILED, reason="exit_code 1")
    assert not retry_move(rfacts(level=Level.CAUSAL, attempts=(failed,)), now=0.0).move


def test_fenced_strong_attempt_on_a_healthy_node_is_placed_again() -> None:
    d = retry_move(rfacts(), now=0.0)
    assert d.move and d.exclude == () and d.trigger is not None
    assert d.trigger.startswith("retry: strong attempt failed on a")


def test_the_holders_own_report_frees_its_lease() -> None:
    # the holder reported its attempt of the leased epoch ended: it has stopped
    assert retry_move(rfacts(lease=lease(1, until=50.0)), now=0.0).move
    # but another epoch's live lease still forbids a second attempt
    waiting = retry_move(rfacts(lease=lease(0, until=50.0, node="b")), now=0.0)
    assert not waiting.move and waiting.later  # time alone will change it
    # and a controller-inferred loss proves nothing about the holder
    lost = AttemptFacts(node="a", epoch=1, status=A.LOST, reason="inferred")
    assert not retry_move(rfacts(attempts=(lost,), lease=lease(1, until=50.0)), now=0.0).move
    assert retry_move(rfacts(attempts=(lost,), lease=lease(1, until=50.0)), now=50.0).move


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"status": TaskStatus.FAILED}, "task failed"),
        ({"link": LinkState.PARTITIONED}, "partition rule"),
        ({"attempts": ()}, "no attempt"),
        ({"attempts": (fenced(epoch=0),)}, "no attempt"),
        ({"attempts": (AttemptFacts(node="a", epoch=1, status=A.STARTED),)}, "live"),
        (
            {"attempts": (AttemptFacts(node="a", epoch=1, status=A.FAILED, reason="exit 1"),)},
            "retries it itself",
        ),
        ({"attempts": (AttemptFacts(node="a", epoch=1, status=A.CANCELLED),)}, "cancelled"),
    ],
)
def test_retry_waits(kw: dict[str, Any], why: str) -> None:
    d = retry_move(rfacts(**kw), now=0.0)
    assert not d.move and why in d.reason


def test_holder_stopped_needs_the_holders_own_report_of_every_attempt() -> None:
    held = lease(1, until=50.0)
    ended = AttemptFacts(node="a", epoch=1, status=A.FAILED, reason="exit 1")
    running = AttemptFacts(node="a", epoch=1, status=A.STARTED)
    lost = AttemptFacts(node="a", epoch=1, status=A.LOST)
    elsewhere = AttemptFacts(node="b", epoch=1, status=A.FAILED)
    assert holder_stopped(held, [ended])
    assert not holder_stopped(held, [ended, running])
    assert not holder_stopped(held, [lost])
    assert not holder_stopped(held, [elsewhere])
    assert not holder_stopped(held, [])
