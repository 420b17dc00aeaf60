"""Failure detection that a last will cannot fool, and strong work that stays live:
an attempt fenced at its lease deadline, or not retried by its node, is placed again
under a new epoch; a restarted controller does not honour a superseded lease; every
lease answer names the request it answers. On the in-memory bus (``memory_bus``)."""

from __future__ import annotations

from typing import Any

from cloud_harness import Harness, NodeScript
from memory_bus import MemoryHarness

from shared.crdt import AttemptLog, AttemptStatus
from shared.vocab import LinkState

STEP = 0.5


def task(task_id: str, level: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": task_id,
        "command": ["true"],
        "consistency": {"level": level},
        "placement": {"labels": {"pool": "x"}},
        **fields,
    }


def placed(h: Harness, task_id: str) -> tuple[str | None, int]:
    t = h.controller.get_task(task_id)
    return t["node"], t["epoch"]


def on_n1_while_n2_drains(
    h: MemoryHarness, task_id: str, level: str
) -> tuple[NodeScript, NodeScript]:
    """Two nodes of one pool; ``task_id`` placed on n1 while n2 drains (still draining:
    the caller lifts it when n2 should become the alternative)."""
    n1 = h.node("n1", labels={"pool": "x"})
    n2 = h.node("n2", labels={"pool": "x"})
    h.controller.set_draining("n2", True)
    h.controller.submit_task(task(task_id, level))
    n1.expect("place", lambda e: e.body.task_id == task_id)
    return n1, n2


def test_a_last_will_is_not_contact_and_the_clock_runs_from_the_last_real_one(
    h: MemoryHarness,
) -> None:
    n1 = h.node("n1", labels={"pool": "x"})
    c = h.controller
    c.submit_task(task("k", "causal", max_disconnect_s=20))
    n1.expect("place", lambda e: e.body.task_id == "k")
    n1.start("k", 1)
    h.node("n2", labels={"pool": "x"})
    h.keep_alive("n1", "n2")
    last_contact = h.clock()

    frozen = h.mnode("n1")
    frozen.connected = False  # SIGSTOP: it hears nothing and says nothing
    entry = c.registry.nodes["n1"]
    will_sent = False
    moved_at = None
    while moved_at is None:
        h.tick(STEP)
        h.keep_alive("n2")
        if not will_sent and h.clock() >= last_contact + 1:
            # The broker's keep-alive for n1 expired before our own suspicion did:
            # the broker says "offline" for it, n1 itself says nothing.
            h.memory.will(frozen)
            will_sent = True
            h.pump()
            assert entry.link_state is LinkState.PARTITIONED
            assert entry.last_contact == last_contact
            assert not h.events(node_id="n1", kind="node_reconnected")
        if placed(h, "k") == ("n2", 2):
            moved_at = h.clock()
        assert h.clock() < last_contact + 60
    # max_disconnect_s counts from the last real contact, not from the will.
    assert last_contact + 20 <= moved_at < last_contact + 20 + 2 * STEP
    assert not h.events(node_id="n1", kind="node_reconnected")


def test_a_strong_attempt_fenced_on_a_healthy_node_is_placed_again(h: MemoryHarness) -> None:
    n1 = h.node("n1", labels={"pool": "x"})
    c = h.controller
    c.submit_task(task("s", "strong"))
    n1.expect("place", lambda e: e.body.task_id == "s" and e.body.epoch == 1)
    n1.request_lease("s", 1, request_id="i1-1")
    assert h.await_msg(n1, "lease_grant").body.granted
    dot = n1.start("s", 1)
    # The broker -> agent direction was cut: no renewal reached it, so it fenced
    # itself at its deadline and says so; the controller still hears it fine.
    n1.finish("s", dot, AttemptStatus.FAILED, reason="lease_expired")
    h.await_msg(n1, "ack", lambda e: e.body.up_to_seq == n1.seq)
    assert c.leases.get("s") is None  # the holder's own report freed the lease
    assert h.events(task_id="s", kind="lease_released")
    h.tick(STEP)
    again = n1.expect("place", lambda e: e.body.task_id == "s" and e.body.epoch == 2)
    assert again.body.level == "strong"
    (replaced,) = h.events(task_id="s", kind="replaced")
    assert replaced["reason"].startswith("retry: strong attempt failed on n1 (lease_expired)")
    n1.request_lease("s", 2, request_id="i1-2")
    grant = h.await_msg(n1, "lease_grant")
    assert grant.body.granted and grant.body.request_id == "i1-2"


def test_an_ordinary_failure_is_left_to_the_nodes_own_retry(h: MemoryHarness) -> None:
    n1 = h.node("n1", labels={"pool": "x"})
    h.controller.submit_task(task("k", "causal"))
    n1.expect("place", lambda e: e.body.task_id == "k")
    dot = n1.start("k", 1)
    n1.finish("k", dot, AttemptStatus.FAILED, reason="exit_code 1")
    h.await_msg(n1, "ack", lambda e: e.body.up_to_seq == n1.seq)
    for _ in range(4):
        h.tick(STEP)
    assert placed(h, "k") == ("n1", 1)
    assert not n1.received("place")


def test_a_task_its_node_declined_is_placed_again_elsewhere(h: MemoryHarness) -> None:
    """An agent that shed a queued task (or does not allow its callable) never retries it
    (``shared.decisions.DECLINED``): the controller places it again, on another node."""
    n1, n2 = on_n1_while_n2_drains(h, "k", "causal")
    h.controller.set_draining("n2", False)
    dot = n1.start("k", 1)
    n1.finish("k", dot, AttemptStatus.FAILED, reason="shed")
    h.await_msg(n1, "ack", lambda e: e.body.up_to_seq == n1.seq)
    h.tick(STEP)
    n2.expect("place", lambda e: e.body.task_id == "k" and e.body.epoch == 2)
    assert placed(h, "k") == ("n2", 2)
    (replaced,) = h.events(task_id="k", kind="replaced")
    assert replaced["reason"].startswith("retry: causal attempt failed on n1 (shed)")


def test_a_task_retried_with_long_output_reaches_its_new_node_whole(h: MemoryHarness) -> None:
    """Nine failed attempts, each with both tails full of escaped characters: the record the
    controller sends ahead of the re-placement was over the message bound (encode refused
    it, the new node ran without the task's history and its digests asked for it again).
    The tails an attempt carries shrink with the retry budget (``shared.crdt.log_limit``)."""
    n1 = h.node("n1", labels={"pool": "x"})
    n2 = h.node("n2", labels={"pool": "x"})
    h.controller.set_draining("n2", True)
    h.controller.submit_task(task("k", "causal", retry={"max_attempts": 10}))
    n1.expect("place", lambda e: e.body.task_id == "k")
    noisy = AttemptLog("\x01" * 20_000, "\u00e9" * 20_000, 20_000, 40_000)
    for i in range(9):
        dot = n1.start("k", 1)  # the node's own retries under its placement
        n1.finish(
            "k", dot, AttemptStatus.FAILED, reason="shed" if i == 8 else "exit_code 1", log=noisy
        )
    h.await_msg(n1, "ack", lambda e: e.body.up_to_seq == n1.seq)
    h.controller.set_draining("n2", False)
    h.tick(STEP)
    history = n2.expect(
        "deltas", lambda e: any(r.task_id == "k" and r.attempts for r in e.body.records)
    )
    (rec,) = [r for r in history.body.records if r.task_id == "k"]
    assert len(rec.attempts) == 9 and all(a.log is not None for a in rec.attempts.values())
    n2.expect("place", lambda e: e.body.task_id == "k" and e.body.epoch == 2)


def test_after_a_restart_a_superseded_lease_does_not_block_the_new_holder(
    h: MemoryHarness,
) -> None:
    n1, n2 = on_n1_while_n2_drains(h, "s", "strong")
    n1.request_lease("s", 1)
    assert h.await_msg(n1, "lease_grant").body.granted
    n1.start("s", 1)
    h.controller.set_draining("n2", False)
    h.mnode("n1").connected = False  # n1 is cut off for good
    while placed(h, "s") != ("n2", 2):
        h.tick(STEP)
        h.keep_alive("n2")
        assert h.clock() < 1100
    n2.expect("place", lambda e: e.body.task_id == "s" and e.body.epoch == 2)

    h.restart(clock_start=50.0)  # before n2 asked for its lease
    n2.request_lease("s", 2, request_id="i2-1")
    grant = h.await_msg(n2, "lease_grant")
    assert grant.body.granted, grant.body.reason
    assert grant.body.request_id == "i2-1"


def test_every_lease_answer_echoes_the_request_id(h: MemoryHarness) -> None:
    n1 = h.node("n1", labels={"pool": "x"})
    h.controller.submit_task(task("s", "strong"))
    n1.expect("place", lambda e: e.body.task_id == "s")
    n1.request_lease("s", 0, request_id="i1-7")  # stale epoch: refused
    refusal = h.await_msg(n1, "lease_grant")
    assert not refusal.body.granted and refusal.body.reason == "stale_epoch"
    assert refusal.body.request_id == "i1-7"
    n1.request_lease("nope", 1, request_id="i1-8")  # unknown task: refused
    unknown = h.await_msg(n1, "lease_grant")
    assert unknown.body.reason == "unknown_task" and unknown.body.request_id == "i1-8"
    n1.request_lease("s", 1, request_id="i1-9")
    grant = h.await_msg(n1, "lease_grant")
    assert grant.body.granted and grant.body.request_id == "i1-9"


def test_a_fenced_attempt_reported_before_a_restart_is_placed_again_after_it(
    h: MemoryHarness,
) -> None:
    n1 = h.node("n1", labels={"pool": "x"})
    h.controller.submit_task(task("s", "strong"))
    n1.expect("place", lambda e: e.body.task_id == "s" and e.body.epoch == 1)
    n1.request_lease("s", 1)
    assert h.await_msg(n1, "lease_grant").body.granted
    dot = n1.start("s", 1)
    n1.finish("s", dot, AttemptStatus.FAILED, reason="lease_expired")
    h.await_msg(n1, "ack", lambda e: e.body.up_to_seq == n1.seq)
    h.restart(clock_start=50.0)  # before any tick acted on the report
    h.keep_alive("n1")
    h.tick(STEP)
    n1.expect("place", lambda e: e.body.task_id == "s" and e.body.epoch == 2)


def test_a_retry_that_finds_no_node_is_tried_again(h: MemoryHarness) -> None:
    n1 = h.node("n1", labels={"pool": "x"})
    c = h.controller
    c.submit_task(task("s", "strong"))
    n1.expect("place", lambda e: e.body.task_id == "s" and e.body.epoch == 1)
    n1.request_lease("s", 1)
    assert h.await_msg(n1, "lease_grant").body.granted
    dot = n1.start("s", 1)
    c.set_draining("n1", True)  # nowhere to go for now
    n1.finish("s", dot, AttemptStatus.FAILED, reason="lease_expired")
    h.await_msg(n1, "ack", lambda e: e.body.up_to_seq == n1.seq)
    for _ in range(3):
        h.tick(STEP)
        h.keep_alive("n1")
    assert placed(h, "s") == ("n1", 1)
    c.set_draining("n1", False)
    h.tick(STEP)
    n1.expect("place", lambda e: e.body.task_id == "s" and e.body.epoch == 2)
