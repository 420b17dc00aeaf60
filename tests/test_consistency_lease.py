"""Lease arithmetic, grant rules with epoch fencing, restart safety, agent-side fencing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.consistency import AgentLease, LeaseBook, LeaseDecision, LeasePolicy, restart_deadline

P = LeasePolicy()  # 30 s leases, 1 % drift, 0.5 s agent margin, 5 s controller margin


def test_deadline_arithmetic() -> None:
    assert P.agent_deadline(100.0, 30.0) == pytest.approx(100.0 + 30.0 - 0.5 - 0.3)
    assert P.controller_deadline(100.0, 30.0) == pytest.approx(100.0 + 30.0 + 5.0 + 0.3)
    assert restart_deadline(30.0, now=7.0) == pytest.approx(7.0 + 35.3)
    assert P.clamp(1.0) == 3.0 and P.clamp(1e6) == 300.0 and P.clamp(42.0) == 42.0


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        LeasePolicy(min_duration_s=10.0, duration_s=5.0)
    with pytest.raises(ValueError):
        LeasePolicy(renew_fraction=1.0)
    with pytest.raises(ValueError):
        LeasePolicy(controller_margin_s=-1.0)


def grant(
    book: LeaseBook,
    now: float,
    *,
    epoch: int = 2,
    node: str = "a",
    duration_s: float = 30.0,
    placed_epoch: int = 2,
    placed_node: str = "a",
    wall_ms: int | None = None,
) -> LeaseDecision:
    return book.request(
        task_id="t",
        node=node,
        epoch=epoch,
        duration_s=duration_s,
        now=now,
        placed_epoch=placed_epoch,
        placed_node=placed_node,
        wall_ms=wall_ms,
    )


def test_grant_renew_and_fencing_refusals() -> None:
    book = LeaseBook()
    d = grant(book, 10.0, wall_ms=1_700_000_000_000)
    assert d.granted and d.reason == "granted" and d.duration_s == 30.0
    lease = book.get("t")
    assert lease is not None and lease.replace_after == pytest.approx(45.3)
    assert lease.live(45.29) and not lease.live(45.3)
    assert grant(book, 11.0, epoch=1).reason == "stale_epoch"
    assert grant(book, 11.0, epoch=3).reason == "unknown_epoch"
    assert grant(book, 11.0, node="b").reason == "not_placed_here"
    r = grant(book, 20.0)
    assert r.granted and r.reason == "renewed"
    assert (lease := book.get("t")) is not None and lease.replace_after == pytest.approx(55.3)
    short = grant(book, 21.0, duration_s=3.0)  # a shorter renewal never shortens
    assert short.granted
    assert (lease := book.get("t")) is not None and lease.replace_after == pytest.approx(55.3)


def test_one_live_lease_per_task() -> None:
    book = LeaseBook()
    grant(book, 0.0)
    # placement moved to epoch 3 on node b while epoch 2's lease is live: refused
    d = grant(book, 10.0, epoch=3, node="b", placed_epoch=3, placed_node="b")
    assert not d.granted and d.reason == "lease_held"
    d = grant(book, 35.3, epoch=3, node="b", placed_epoch=3, placed_node="b")
    assert d.granted and d.lease is not None and d.lease.epoch == 3


def test_release_only_the_matching_epoch() -> None:
    book = LeaseBook()
    grant(book, 0.0)
    assert book.release("t", 1) is None
    assert book.release("t", 2) is not None
    assert book.get("t") is None and list(book) == []


def test_restart_is_conservative() -> None:
    book = LeaseBook()
    grant(book, 1000.0, wall_ms=123)
    stored = [lease.to_dict() for lease in book]
    assert stored == [
        {"task_id": "t", "epoch": 2, "node": "a", "duration_s": 30.0, "granted_wall_ms": 123}
    ]
    restored = LeaseBook.restore(stored, now=3.0)  # new process: monotonic clock restarted
    lease = restored.get("t")
    assert lease is not None and lease.replace_after == pytest.approx(3.0 + 35.3)
    again = LeaseBook.restore(list(restored), now=0.0)
    assert (kept := again.get("t")) is not None and kept.epoch == 2


def test_agent_lease_lifecycle() -> None:
    lease = AgentLease("t", 2)
    assert lease.renew_due(0.0) and not lease.valid(0.0) and lease.must_stop(0.0)
    assert lease.request(0.0) == 30.0
    assert not lease.renew_due(1.0)  # waiting for an answer
    assert lease.renew_due(5.0)  # retry after a sixth of the lease
    deadline = lease.granted(6.0, epoch=2, duration_s=30.0)
    assert deadline == pytest.approx(0.0 + 30.0 - 0.8)  # from the *first* send
    assert lease.valid(29.19) and not lease.must_stop(29.19)
    assert lease.must_stop(29.2)
    assert not lease.renew_due(9.99) and lease.renew_due(10.0)  # a third into the lease
    lease.request(10.0)
    assert lease.granted(11.0, epoch=2, duration_s=30.0) == pytest.approx(39.2)
    assert lease.granted(11.5, epoch=2, duration_s=30.0) is None  # duplicate, nothing pending
    assert lease.granted(12.0, epoch=3, duration_s=30.0) is None  # another epoch
    lease.refused(epoch=2, reason="stale_epoch")
    assert not lease.renew_due(25.0)
    assert lease.valid(39.19) and lease.must_stop(39.2)  # still fenced at the old deadline
    lease.request(26.0)
    assert lease.granted(27.0, epoch=2, duration_s=30.0) is None  # no resurrection


def test_agent_matches_by_request_id() -> None:
    lease = AgentLease("t", 1)
    lease.request(0.0, request_id="r1")
    lease.request(5.0, request_id="r2")
    assert lease.granted(6.0, epoch=1, duration_s=30.0, request_id="zz") is None
    assert lease.granted(6.0, epoch=1, duration_s=30.0, request_id="r2") == pytest.approx(34.2)
    assert lease.granted(7.0, epoch=1, duration_s=30.0, request_id="r1") is None  # stale


@settings(max_examples=200)
@given(
    sends=st.lists(st.floats(0, 100), min_size=1, max_size=8),
    delays=st.lists(st.tuples(st.floats(0, 5), st.floats(0, 5)), min_size=8, max_size=8),
    duration=st.floats(3, 300),
    rate=st.floats(-0.01, 0.01),
)
def test_agent_deadline_never_outlives_controller(
    sends: list[float],
    delays: list[tuple[float, float]],
    duration: float,
    rate: float,
) -> None:
    """In real time, with the agent clock off by up to the drift rate either way and
    FIFO delivery, the agent's fence always falls before the controller may re-place."""
    sends = sorted(sends)
    agent = AgentLease("t", 1)
    book = LeaseBook()
    fence_real = 0.0
    replace_real = 0.0
    controller_now = 0.0
    for i, t_send in enumerate(sends):
        agent.request(t_send * (1 + rate))  # the agent's clock reading at real time t_send
        up, down = delays[i]
        controller_now = max(controller_now, t_send + up)  # controller clock = real time
        d = book.request(
            task_id="t",
            node="a",
            epoch=1,
            duration_s=duration,
            now=controller_now,
            placed_epoch=1,
            placed_node="a",
        )
        lease = book.get("t")
        assert d.granted and lease is not None
        replace_real = lease.replace_after
        deadline = agent.granted(
            (controller_now + down) * (1 + rate), epoch=1, duration_s=d.duration_s
        )
        if deadline is not None:
            fence_real = max(fence_real, deadline / (1 + rate))
        assert fence_real <= replace_real
