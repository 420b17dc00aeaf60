"""A node's lifecycle on the controller: a drain that moves work away by each task's
consistency rules and says when the node is empty; removal, refused while the node
holds work unless forced; departed nodes left out of system health and not revived
as partitioned by a restart. On the in-memory bus (``memory_bus``)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cloud_harness import make_config, wall_ms
from hypothesis import given
from hypothesis import strategies as st
from memory_bus import MemoryHarness
from test_controller_liveness import STEP, placed, task

from cloud.api import NodeBusy
from shared.consistency import Lease
from shared.crdt import AttemptStatus
from shared.decisions import Movability, drain_move
from shared.vocab import Level


def _all_on_n1(
    h: MemoryHarness, levels: dict[str, str], idempotent: frozenset[str] = frozenset()
) -> None:
    """n1 and n2 in pool x, every task of ``levels`` placed on n1 (n2 drained meanwhile);
    those named in ``idempotent`` are."""
    h.node("n1", labels={"pool": "x"})
    h.node("n2", labels={"pool": "x"})
    c = h.controller
    c.set_draining("n2", True)
    for task_id, level in levels.items():
        c.submit_task(task(task_id, level, idempotent=task_id in idempotent))
        h.nodes["n1"].expect("place", lambda e, t=task_id: e.body.task_id == t)
    c.set_draining("n2", False)


def test_drain_moves_work_by_its_level_and_reports_the_node_empty(h: MemoryHarness) -> None:
    levels = {"e": "eventual", "e1": "eventual", "c0": "causal", "c1": "causal"}
    _all_on_n1(h, {**levels, "s0": "strong", "s1": "strong"}, idempotent=frozenset({"e"}))
    n1 = h.nodes["n1"]
    c = h.controller
    n1.start("e", 1)
    dot_e1 = n1.start("e1", 1)
    dot_c1 = n1.start("c1", 1)
    n1.request_lease("s1", 1)
    assert h.await_msg(n1, "lease_grant").body.granted
    dot_s1 = n1.start("s1", 1)
    h.await_msg(n1, "ack", lambda e: e.body.up_to_seq == n1.seq)

    assert c.set_draining("n1", True)["drained"] is False
    h.tick(STEP)
    # idempotent eventual at once (started or not), causal not started, strong without a lease
    for moved in ("e", "c0", "s0"):
        assert placed(h, moved) == ("n2", 2), moved
    # a started causal task, a started eventual one that is not idempotent (never
    # hedged) and a strong one under a live lease stay
    for stays in ("c1", "e1", "s1"):
        assert placed(h, stays) == ("n1", 1), stays
    # the old node learns its placement of e was superseded
    assert n1.received("deltas", lambda env: any(r.task_id == "e" for r in env.body.records))
    node = c.get_node("n1")
    assert node["draining"] and not node["drained"] and node["tasks"] == ["c1", "e1", "s1"]
    assert not h.events(kind="drained")

    n1.finish("c1", dot_c1)
    n1.finish("e1", dot_e1)
    n1.finish("s1", dot_s1)
    h.await_msg(n1, "ack", lambda e: e.body.up_to_seq == n1.seq)
    h.keep_alive("n1", "n2")
    h.tick(STEP)
    assert c.get_node("n1")["drained"] is True
    assert [e["node_id"] for e in h.events(kind="drained")] == ["n1"]
    h.tick(STEP)
    assert len(h.events(kind="drained")) == 1  # reported once


@given(
    level=st.sampled_from(list(Level)),
    started=st.booleans(),
    idempotent=st.booleans(),
    lease_epoch=st.one_of(st.none(), st.integers(1, 3)),
    replace_after=st.floats(0, 100),
    now=st.floats(0, 100),
)
def test_drain_laws(
    level: Level,
    started: bool,
    idempotent: bool,
    lease_epoch: int | None,
    replace_after: float,
    now: float,
) -> None:
    lease = (
        None
        if lease_epoch is None
        else Lease(
            task_id="t",
            epoch=lease_epoch,
            node="n1",
            duration_s=10.0,
            granted_at=0.0,
            replace_after=replace_after,
        )
    )
    facts = Movability(level=level, epoch=2, started=started, lease=lease, idempotent=idempotent)
    d = drain_move(facts, node_id="n1", now=now)
    held = lease is not None and lease.epoch == 2 and lease.live(now)
    # a started attempt keeps causal work, and eventual work that is not idempotent
    # (non-idempotent work is never hedged)
    kept = level is Level.CAUSAL or (level is Level.EVENTUAL and not idempotent)
    if held or (kept and started):
        assert not d.move and d.later  # asked again: the lease ends, the attempt ends
    else:
        assert d.move and d.exclude == ("n1",) and (d.trigger or "").startswith("drain: ")
        # presumed lost only where a lease of this epoch fenced the holder
        assert d.fence == (level is Level.STRONG and lease is not None and lease.epoch == 2)


def test_what_stays_is_asked_again_later() -> None:
    causal = Movability(level=Level.CAUSAL, epoch=1, started=True)
    decision = drain_move(causal, node_id="n1", now=0.0)
    assert not decision.move and decision.later
    no_lease = Movability(level=Level.STRONG, epoch=2, started=False)
    decision = drain_move(no_lease, node_id="n1", now=0.0)
    assert decision.move and not decision.fence and decision.exclude == ("n1",)


def test_remove_is_refused_while_the_node_holds_work(h: MemoryHarness) -> None:
    _all_on_n1(h, {"e": "eventual"})
    with pytest.raises(NodeBusy) as busy:
        h.controller.remove_node("n1", force=False)
    assert busy.value.tasks == ["e"]
    assert h.controller.registry.get("n1") is not None


def test_forced_remove_replaces_or_cancels_and_forgets_the_node(h: MemoryHarness) -> None:
    _all_on_n1(h, {"e": "eventual", "s": "strong"})
    n1 = h.nodes["n1"]
    n1.request_lease("s", 1)
    assert h.await_msg(n1, "lease_grant").body.granted
    n1.start("s", 1)
    h.await_msg(n1, "ack", lambda e: e.body.up_to_seq == n1.seq)

    out = h.controller.remove_node("n1", force=True)
    assert out == {"node_id": "n1", "removed": True, "replaced": ["e"], "cancelled": ["s"]}
    assert placed(h, "e") == ("n2", 2)
    assert h.controller.get_task("s")["status"] == "cancelled"
    assert n1.received("cancel", lambda env: env.body.task_id == "s")
    assert [n["node_id"] for n in h.controller.list_nodes()["nodes"]] == ["n2"]
    [removed] = h.events(kind="node_removed")
    assert removed["data"] == {"replaced": ["e"], "cancelled": ["s"]}
    h.restart()
    assert h.controller.registry.get("n1") is None  # not back from the store


def test_an_idle_node_is_removed_without_force(h: MemoryHarness) -> None:
    h.node("n1")
    assert h.controller.remove_node("n1", force=False)["removed"] is True
    assert h.controller.list_nodes()["nodes"] == []


def test_a_late_pong_does_not_bring_a_removed_node_back(h: MemoryHarness) -> None:
    """A ping out when the node was removed, answered after: the answer is dropped; the
    node's own next message does bring it back, unregistered (docs/operations.md)."""
    n1 = h.node("n1")
    n1.answer_pings = False
    while not n1.received("ping"):  # silent for a heartbeat interval: pinged
        h.tick(STEP)
        h.pump()
    ping = n1.expect("ping")
    assert h.controller.remove_node("n1", force=False)["removed"] is True
    n1.pong(ping)
    h.pump()
    assert h.controller.list_nodes()["nodes"] == []
    n1.heartbeat()
    h.pump_until(lambda: len(h.controller.list_nodes()["nodes"]) == 1)
    assert h.controller.list_nodes()["nodes"][0]["registered"] is False


def _departing(tmp_path: Path) -> MemoryHarness:
    cfg = make_config(
        tmp_path,
        controller={"departed_after_s": 60.0},
        health={"confirm_after_s": 10.0},
    )
    return MemoryHarness(tmp_path, cfg)


def test_a_departed_node_leaves_system_health_until_it_speaks_again(tmp_path: Path) -> None:
    h = _departing(tmp_path)
    try:
        h.node("n1")
        n2 = h.node("n2")
        h.mnode("n2").connected = False
        while not h.events(kind="node_departed"):
            h.tick(1.0)
            h.keep_alive("n1")
            assert h.clock() < 1100
        health = h.controller.list_nodes()["system_health"]
        assert (health["available"], health["total"], health["departed"]) == (1, 1, 1)
        assert health["state"] == "healthy"
        assert h.controller.get_node("n2")["departed"] is True

        h.mnode("n2").connected = True
        n2.heartbeat()
        h.pump()
        assert h.controller.get_node("n2")["departed"] is False
        assert h.controller.list_nodes()["system_health"]["departed"] == 0
    finally:
        h.close()


def test_a_restart_does_not_revive_a_departed_node_as_partitioned(tmp_path: Path) -> None:
    h = _departing(tmp_path)
    try:
        h.node("n1")
        h.node("n2")
        # n2 was last seen two days ago (wall clock), as the store remembers it
        h.store.upsert_node("n2", last_seen_ms=wall_ms() - 2 * 86_400_000)
        h.restart()
        entry = h.controller.registry.get("n2")
        assert entry is not None and entry.departed
        assert h.controller.get_node("n2")["link_state"] == "failed"
        before = len(h.events(kind="link_state"))
        for _ in range(20):
            h.tick(1.0)
            h.keep_alive("n1")
        assert [e for e in h.events(kind="link_state")[before:] if e["node_id"] == "n2"] == []
        assert h.controller.list_nodes()["system_health"]["total"] == 1
    finally:
        h.close()


def test_task_events_name_their_node(h: MemoryHarness) -> None:
    n1 = h.node("n1")
    h.controller.submit_task({"id": "t", "command": ["true"]})
    n1.expect("place", lambda e: e.body.task_id == "t")
    dot = n1.start("t", 1)
    h.await_msg(n1, "ack", lambda e: e.body.up_to_seq == n1.seq)
    n1.finish("t", dot, AttemptStatus.SUCCEEDED)
    h.await_msg(n1, "ack", lambda e: e.body.up_to_seq == n1.seq)
    ran = {e["kind"]: e["node_id"] for e in h.events(task_id="t")}
    assert ran["task_running"] == "n1" and ran["task_succeeded"] == "n1"


def test_partitions_and_heals_are_logged_and_rtt_is_exported_per_node(
    h: MemoryHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cloud.events")
    h.node("n1")
    h.tick(1.0)  # a ping, answered at once: a round trip of zero controller seconds
    h.pump()
    metrics = h.controller.metrics_text().decode()
    assert 'continuum_node_rtt_seconds{node="n1",quantile="0.5"} 0.0' in metrics
    assert 'continuum_node_link_state{link_state="healthy",node="n1"} 1.0' in metrics

    h.mnode("n1").connected = False
    while h.controller.get_node("n1")["link_state"] != "partitioned":
        h.tick(1.0)
    h.mnode("n1").connected = True
    h.keep_alive("n1")
    lines = [(r.getMessage(), getattr(r, "fields", {}).get("new")) for r in caplog.records]
    assert ("node joined: node_id=n1 (first hello)", None) in lines
    assert any(
        m.startswith("link changed: node_id=n1") and new == "partitioned" for m, new in lines
    )
    assert any(m.startswith("node healed: node_id=n1") for m, _ in lines)
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "cloud.events")
