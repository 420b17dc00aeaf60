"""Consistency through the controller: partition rules per level, adaptive levels,
leases across a controller restart.

Time is the controller's injected monotonic clock (``FakeClock``): deadlines are
crossed by advancing it one tick at a time, and every assertion compares the tick
at which something happened with the rule's own deadline.
"""

from __future__ import annotations

from typing import Any

import pytest
from cloud_harness import Harness

from shared.vocab import LinkState

POOL = {"labels": {"pool": "x"}}
STEP = 0.5  # seconds of controller time per tick in the partition runs


def task(task_id: str, level: str | dict[str, str], **fields: Any) -> dict[str, Any]:
    consistency = {"level": level} if isinstance(level, str) else level
    return {
        "id": task_id,
        "command": ["true"],
        "consistency": consistency,
        "placement": POOL,
        **fields,
    }


def node_of(h: Harness, task_id: str) -> tuple[str | None, int]:
    t = h.controller.get_task(task_id)
    return t["node"], t["epoch"]


def test_partition_strong_waits_for_lease_causal_for_max_disconnect_eventual_hedged(
    h: Harness,
) -> None:
    n1 = h.node("n1", labels={"pool": "x"})
    n2 = h.node("n2", labels={"pool": "x"})
    c = h.controller
    c.set_draining("n2", True)  # everything lands on n1 first
    c.submit_task(task("s", "strong"))
    c.submit_task(task("k", "causal", max_disconnect_s=20))
    c.submit_task(task("e", "eventual"))
    for t in ("s", "k", "e"):
        n1.expect("place", lambda env, t=t: env.body.task_id == t and env.body.epoch == 1)
        n1.start(t, 1)
    n1.request_lease("s", 1, duration_s=10.0)
    grant = h.await_msg(n1, "lease_grant")
    assert grant.body.granted and grant.body.duration_s == 10.0
    lease = c.leases.get("s")
    assert lease is not None
    assert lease.replace_after == pytest.approx(h.clock() + 10.0 + 2.0 + 0.1)
    c.set_draining("n2", False)

    n1.answer_pings = False  # n1 falls silent: partitioned from the controller's view
    entry = c.registry.nodes["n1"]
    moved: dict[str, float] = {}
    partitioned_at: float | None = None
    out_of_contact: list[tuple[float, float | None]] = []
    while len(moved) < 3 and h.clock() < 1100:
        h.tick(STEP)
        h.keep_alive("n2")
        now = h.clock()
        if partitioned_at is None and entry.link_state is LinkState.PARTITIONED:
            partitioned_at = now
        out_of_contact.append((now, entry.monitor.out_of_contact_for(now)))
        for t in ("s", "k", "e"):
            if t not in moved and node_of(h, t) == ("n2", 2):
                moved[t] = now
    assert set(moved) == {"s", "k", "e"}
    assert partitioned_at is not None

    # eventual: hedged in the very tick the partition was noticed
    assert moved["e"] == partitioned_at
    # strong: not before the lease deadline plus margin, and at the first tick after it
    assert lease.replace_after <= moved["s"] < lease.replace_after + STEP
    # causal: only once out of contact for max_disconnect_s
    first = min(t for t, out in out_of_contact if out is not None and out >= 20)
    assert moved["k"] == first
    assert moved["k"] > moved["s"] > moved["e"]

    for t in ("s", "k", "e"):
        env = n2.expect("place", lambda env, t=t: env.body.task_id == t)
        assert env.body.epoch == 2
        replaced = h.events(task_id=t, kind="replaced")
        assert len(replaced) == 1 and replaced[0]["data"]["old_node"] == "n1"
    assert "hedge" in h.events(task_id="e", kind="replaced")[0]["reason"]
    assert "lease_expired" in h.events(task_id="s", kind="replaced")[0]["reason"]

    # n1's strong and causal attempts are presumed lost and it is sent the
    # superseding record (epoch 2 on n2: the agent stops and dequeues its attempt;
    # a `cancel` would cancel the task itself). The eventual attempt runs on (the
    # merge keeps both, first success wins).
    def superseded(task_id: str) -> Any:
        return lambda env: any(
            r.task_id == task_id and r.placement is not None and r.placement.epoch == 2
            for r in env.body.records
        )

    n1.expect("deltas", superseded("s"))
    n1.expect("deltas", superseded("k"))
    assert not n1.received("deltas", superseded("e"))
    assert not n1.received("cancel")
    attempts = {a["node"]: a["status"] for a in c.get_task("s")["attempts"]}
    assert attempts == {"n1": "lost"}
    # Fencing: n1 coming back cannot renew the old epoch.
    n1.request_lease("s", 1)
    refused = h.await_msg(n1, "lease_grant", lambda env: env.body.task_id == "s")
    assert not refused.body.granted and refused.body.reason == "stale_epoch"


def _probe(h: Harness, node_id: str, rtt_s: float, dt: float) -> tuple[float, LinkState]:
    """One tick ``dt`` later, then the node answers that tick's ping ``rtt_s`` after it.
    Returns the tick's time and the link state the tick judged by."""
    node = h.nodes[node_id]
    entry = h.controller.registry.nodes[node_id]
    h.tick(dt)
    tick = (h.clock(), entry.link_state)
    ping = node.expect("ping")
    h.clock.advance(rtt_s)
    node.pong(ping)
    samples = entry.monitor._rtts  # the pong has been ingested once its sample is there
    h.pump_until(lambda: len(samples) > 0 and samples[-1][0] == h.clock())
    return tick


def test_adaptive_level_goes_down_at_once_and_up_only_after_the_dwell(h: Harness) -> None:
    n1 = h.node("n1", labels={"pool": "x"})
    n1.answer_pings = False
    c = h.controller
    # No round trip measured yet is unknown health (graded emergency): measure one.
    _probe(h, "n1", 0.01, 1.0)
    c.submit_task(task("a", {"level": "adaptive", "min": "eventual", "max": "strong"}))
    place = n1.expect("place", lambda env: env.body.task_id == "a")
    assert place.body.level == "strong" and place.body.lease_s == 10.0
    n1.start("a", 1)

    def level() -> str:
        return c.tasks.meta["a"].level.value  # type: ignore[union-attr]

    # Degraded link (RTT 150 ms): down one step on the second bad sample.
    bad_ticks = 0
    while level() == "strong":
        _, state = _probe(h, "n1", 0.15, 1.0)
        bad_ticks += state is LinkState.DEGRADED
        assert bad_ticks <= 2
    assert bad_ticks == 2 and level() == "causal"
    change = h.await_msg(n1, "level_change", lambda env: env.body.task_id == "a")
    assert change.body.level == "causal" and "downgrade" in change.body.reason

    # Good link again (10 ms): healthy once the slow samples leave the 5 s window;
    # the level stays down for the whole dwell (30 s), and goes up right after it.
    good_since: float | None = None
    while level() == "causal":
        now, state = _probe(h, "n1", 0.01, 1.0)
        if good_since is None and state is LinkState.HEALTHY:
            good_since = now
        assert now < 1200
    assert good_since is not None
    assert good_since + 30.0 <= now < good_since + 30.0 + 1.01
    up = h.await_msg(n1, "level_change", lambda env: env.body.level == "strong")
    assert "upgrade" in up.body.reason

    history = c.get_task("a")["consistency"]["history"]
    assert [(e["data"]["from"], e["data"]["to"]) for e in history] == [
        ("strong", "causal"),
        ("causal", "strong"),
    ]
    assert c.get_task("a")["consistency"]["mode"] == "adaptive"


def test_controller_restart_loses_nothing_and_keeps_leases(h: Harness) -> None:
    n1 = h.node("n1", labels={"pool": "x"})
    n2 = h.node("n2", labels={"pool": "x"})
    c = h.controller
    c.set_draining("n2", True)
    c.submit_task(task("s", "strong"))
    c.submit_workflow(
        {"id": "wf", "tasks": [task("p", "causal"), task("q", "causal", depends_on=["p"])]}
    )
    n1.expect("place", lambda env: env.body.task_id == "s")
    n1.expect("place", lambda env: env.body.task_id == "p")
    dot_s = n1.start("s", 1)
    del dot_s
    dot_p = n1.start("p", 1)
    n1.request_lease("s", 1)
    assert h.await_msg(n1, "lease_grant").body.granted
    h.await_msg(n1, "ack", lambda env: env.body.up_to_seq == n1.seq)
    acked = n1.seq
    events_before = len(h.events())

    c = h.restart(clock_start=50.0)  # new process: new monotonic clock, same store
    assert c.get_task("s")["status"] == "running" and c.get_task("s")["node"] == "n1"
    assert c.get_task("q")["status"] == "pending" and c.get_task("q")["node"] is None
    assert len(h.events()) >= events_before
    lease = c.leases.get("s")
    assert lease is not None and lease.node == "n1" and lease.epoch == 1
    # Honoured as if granted at the restart (later than the truth, hence safe).
    assert lease.replace_after == pytest.approx(50.0 + 10.0 + 2.0 + 0.1)
    assert c.get_task("s")["lease"]["live"]
    # The acknowledged outbox position survived: a heartbeat is answered with it.
    hb = n1.heartbeat()
    ack = h.await_msg(n1, "ack", lambda env: env.body.heartbeat_id == hb)
    assert ack.body.up_to_seq == acked
    # A renewal of the lease the old process granted is honoured.
    n1.request_lease("s", 1)
    assert h.await_msg(n1, "lease_grant").body.reason == "renewed"
    c.set_draining("n2", False)

    # The workflow resumes: p succeeds, q is placed with p's output.
    n1.finish("p", dot_p, result={"rows": 3})
    place_q = h.await_msg(n1, "place", lambda env: env.body.task_id == "q")
    assert place_q.body.inputs == {"p": {"rows": 3}}

    # n1 falls silent: the strong task waits for the restored lease, then moves.
    n1.answer_pings = False
    deadline = c.leases.get("s").replace_after  # type: ignore[union-attr]
    moved_at = None
    while moved_at is None:
        h.tick(STEP)
        h.keep_alive("n2")
        if node_of(h, "s") == ("n2", 2):
            moved_at = h.clock()
        assert h.clock() < 100
    assert deadline <= moved_at < deadline + STEP
    n2.expect("place", lambda env: env.body.task_id == "s" and env.body.epoch == 2)


def test_the_controllers_own_broker_outage_is_not_blamed_on_the_nodes(h: Harness) -> None:
    n1 = h.node("n1", labels={"pool": "x"})
    h.node("n2", labels={"pool": "x"})
    c = h.controller
    c.set_draining("n2", True)
    c.submit_task(task("e", "eventual"))
    n1.expect("place", lambda env: env.body.task_id == "e")
    c.set_draining("n2", False)
    before = len(h.events())

    c.set_broker_connected(False)  # our connection is gone: we observe nothing
    for _ in range(40):
        h.tick(0.5)
    assert [e["kind"] for e in h.events()[before:]] == []
    c.set_broker_connected(True)
    assert [e["kind"] for e in h.events()[before:]] == ["controller_reconnected"]
    h.tick(0.5)
    assert {e.link_state for e in c.registry.nodes.values()} == {LinkState.HEALTHY}
    assert node_of(h, "e") == ("n1", 1)

    # A real silence after that is still noticed: n1 partitioned, e hedged to n2.
    n1.answer_pings = False
    while node_of(h, "e") != ("n2", 2):
        h.tick(STEP)
        h.keep_alive("n2")
        assert h.clock() < 2000
    assert c.registry.nodes["n1"].link_state is LinkState.PARTITIONED
