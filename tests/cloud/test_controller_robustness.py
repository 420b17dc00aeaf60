"""Bad input never crashes the controller or corrupts its state; local submissions are
adopted, not placed; anti-entropy answers a digest; an adaptive-mode trigger moves an
unstarted task. Scripted nodes on the in-memory bus (junk bytes: on Mosquitto)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from cloud_harness import Harness, NodeScript, ScriptedNode, make_config, wall_ms
from memory_bus import MemoryHarness

from shared.authz import local_task_id
from shared.crdt import TaskRecord, merge, new_record, place, record_digest, start_attempt
from shared.decisions import PLACE_IN_FLIGHT_MIN_S, PLACE_RESEND
from shared.errors import ValidationError
from shared.model import base_delay, parse_task_spec
from shared.protocol import Digest, Envelope, Heartbeat, encode, topic


def local_record(node: NodeScript, task_id: str) -> TaskRecord:
    """As an agent's local API makes one: a task in its namespace, placed on itself at
    epoch 0."""
    spec = parse_task_spec({"id": task_id, "command": ["true"]}).to_dict()
    stamp = node.clock.now(wall_ms())
    rec = new_record(task_id, spec, writer=node.node_id, hlc=stamp)
    return merge(
        rec,
        place(
            rec,
            epoch=0,
            node=node.node_id,
            level="causal",
            lease_s=None,
            writer=node.node_id,
            hlc=stamp,
        ),
    )


def counted(counter: Any, reason: str) -> float:
    """A controller counter's value for ``reason`` (this process)."""
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels["reason"] == reason:
                return float(sample.value)
    return 0.0


def rejected(h: Harness, reason: str) -> float:
    """Messages from the network rejected for ``reason``."""
    return counted(h.controller.metrics.rejected, reason)


def rejected_parts(h: Harness, reason: str) -> float:
    """Parts of nodes' messages ``shared.authz`` refused for ``reason``."""
    return counted(h.controller.metrics.refused, reason)


@pytest.mark.broker
def test_garbage_is_rejected_counted_and_harmless(hb: Harness) -> None:
    h = hb  # raw bytes through the broker: its delivery of junk is part of the subject
    n1 = h.node("n1")
    assert isinstance(n1, ScriptedNode)
    raw = n1.client
    up = topic("n1", "up")
    forged = Envelope(
        type="heartbeat",
        id=uuid.uuid4().hex[:16],
        sender="n2",  # not the topic's node
        hlc=n1.clock.now(wall_ms()).encode().replace(".n1", ".n2"),
        body=Heartbeat(),
    )
    for payload in (b"not json", b"{}", b'{"v": 99}', encode(forged), b"x" * 300_000):
        raw.publish(up, payload, qos=1).wait_for_publish(10)
    raw.publish(topic("n1", "telemetry"), b"[1, 2", qos=1).wait_for_publish(10)
    h.keep_alive("n1")  # the controller still answers, in order, after all of that
    reasons = ("not_json", "bad_version", "sender_mismatch", "too_large")
    counted = {r: rejected(h, r) for r in reasons}
    assert counted == {"not_json": 2, "bad_version": 2, "sender_mismatch": 1, "too_large": 1}
    assert h.controller.registry.nodes["n1"].registered


def test_local_submission_is_adopted_not_placed_and_bad_specs_rejected(h: Harness) -> None:
    n1 = h.node("n1")
    h.node("n2")
    # As an agent's local API does: an id in its namespace, placed on itself at epoch 0.
    local, local_bad = local_task_id("n1", "0000000000a1"), local_task_id("n1", "0000000000a2")
    placed = local_record(n1, local)
    stamp = n1.clock.now(wall_ms())
    _, started = start_attempt(placed, node="n1", epoch=0, writer="n1", hlc=stamp)
    n1.records[local] = merge(placed, started)
    n1.send_deltas([n1.records[local]])
    # A spec no shared.model would produce: rejected, the rest of the stream goes on.
    bad = new_record(local_bad, {"id": local_bad, "command": "rm -rf /"}, writer="n1", hlc=stamp)
    n1.send_deltas([bad])
    h.await_msg(n1, "ack", lambda e: e.body.up_to_seq == n1.seq)
    task = h.controller.get_task(local)
    assert task["status"] == "running" and task["node"] == "n1" and task["epoch"] == 0
    assert h.events(task_id=local, kind="task_adopted")
    assert local_bad not in h.controller.records
    assert h.events(task_id=local_bad, kind="delta_rejected")
    assert rejected(h, "invalid_spec") == 1
    h.tick(1.0)
    h.tick(1.0)
    assert not h.events(task_id=local, kind="placed")


def test_a_nodes_quota_of_local_tasks_counts_its_unfinished_ones(h: Harness) -> None:
    """``shared.authz`` lets a node have 1,000 unfinished tasks of its own: the 1,001st
    new record is refused, one finishing makes room, and a restart counts them again
    (an index, where it was a walk over every task the controller ever held)."""
    n1 = h.node("n1")

    def local(i: int) -> TaskRecord:
        task_id = local_task_id("n1", f"{i:012x}")
        n1.records[task_id] = rec = local_record(n1, task_id)
        return rec

    for first in range(0, 1000, 100):
        n1.send_deltas([local(i) for i in range(first, first + 100)])
    n1.send_deltas([local(1000)])
    h.await_msg(n1, "ack", lambda e: e.body.up_to_seq == n1.seq)
    extra = local_task_id("n1", f"{1000:012x}")
    assert rejected_parts(h, "quota") == 1 and extra not in h.controller.records
    done = local_task_id("n1", f"{0:012x}")
    dot = n1.start(done, 0)
    n1.finish(done, dot)
    n1.send_deltas([n1.records[extra]])
    h.await_msg(n1, "ack", lambda e: e.body.up_to_seq == n1.seq)
    assert extra in h.controller.records
    h.restart()
    h.keep_alive("n1")
    n1.send_deltas([local(1001)])
    h.await_msg(n1, "ack", lambda e: e.body.up_to_seq == n1.seq)
    assert rejected_parts(h, "quota") == 1  # a fresh process: this one counted anew
    assert local_task_id("n1", f"{1001:012x}") not in h.controller.records


def test_digest_is_answered_with_what_the_node_lacks(h: Harness) -> None:
    n1 = h.node("n1")
    h.controller.submit_task({"id": "t1", "command": ["true"]})
    n1.expect("place")
    assert n1.take("deltas") is not None  # the record goes first (Scheduler.send_place)
    # The node lost its journal: its digest names nothing.
    n1.publish("up", Digest(entries={}))
    deltas = h.await_msg(n1, "deltas")
    (rec,) = deltas.body.records
    assert rec.task_id == "t1" and rec.placement is not None and rec.spec is not None
    ours = h.await_msg(n1, "digest")
    assert ours.body.entries == {"t1": record_digest(h.controller.records["t1"])}
    # The place went out a moment ago (it may be in flight): not sent again yet. After
    # the node's reconnect (its hello: a session may have been lost) it is, same epoch.
    assert not n1.received("place")
    n1.hello()
    n1.publish("up", Digest(entries={}))
    again = h.await_msg(n1, "place")
    assert again.body.task_id == "t1" and again.body.epoch == 1
    assert len(h.await_msg(n1, "deltas").body.records) == 1  # the record: it lacks it
    # A node whose copy is exactly ours got the record, maybe not the place (the place
    # dropped by the broker, the record sent on a digest): the place again, but only
    # after a backoff since the last send (shared.decisions.place_resend_due) — queued
    # behind a busy executor looks the same, and the agent recognises an epoch it
    # queued or ran (edge_agent.inbound).
    n1.publish("up", Digest(entries=ours.body.entries))
    h.await_msg(n1, "digest")
    assert not n1.received("place")
    h.clock.advance(base_delay(PLACE_RESEND, 2))
    n1.publish("up", Digest(entries=ours.body.entries))
    h.await_msg(n1, "digest")
    assert h.await_msg(n1, "place").body.epoch == 1
    assert not n1.received("deltas")  # it holds our record: the place alone
    # A node whose copy differs holds something we lack (it started the attempt, the
    # report still in its outbox): no place, our digest asks for its copy.
    h.clock.advance(PLACE_RESEND.backoff_max_s)
    n1.publish("up", Digest(entries={"t1": "x"}))
    h.await_msg(n1, "digest")
    assert not n1.received("place")


def test_a_place_lost_in_a_live_session_is_sent_again_at_the_next_digest(h: Harness) -> None:
    """A ``place`` dropped on the way (a lossy link; no reconnect follows): the node's next
    digest names no record of the task, and once the ``place`` cannot still be in flight
    it goes again at once, not after the 30 s backoff (a testbed run with 5 % of PUBLISH
    packets lost ran such a task 41 s after its placement)."""
    n1 = h.node("n1")
    h.controller.submit_task({"id": "t1", "command": ["true"]})
    n1.expect("place")
    n1.take("deltas")
    n1.publish("up", Digest(entries={}))  # sent before the place arrived: it may be
    h.await_msg(n1, "digest")  # in flight, not sent again
    assert not n1.received("place")
    h.clock.advance(PLACE_IN_FLIGHT_MIN_S + 0.5)
    n1.publish("up", Digest(entries={}))
    assert h.await_msg(n1, "place").body.epoch == 1
    # The record came with it (the node lacked it); once the node holds it, a lost place
    # and a queued task look alike: the backoff again.
    ours = {"t1": record_digest(h.controller.records["t1"])}
    h.clock.advance(PLACE_IN_FLIGHT_MIN_S + 0.5)
    n1.publish("up", Digest(entries=ours))
    h.await_msg(n1, "digest")
    assert not n1.received("place")


def test_a_queued_place_is_sent_again_with_backoff_not_on_every_digest(h: Harness) -> None:
    """A task queued on its node behind busy executors shows our record and no attempt on
    every digest: the place goes again at most after 30 s, 60 s, 120 s ... since the last
    send (at most 8 minutes apart), not once per anti-entropy period."""
    n1 = h.node("n1")
    h.controller.submit_task({"id": "t1", "command": ["true"]})
    n1.expect("place")
    entries = {"t1": record_digest(h.controller.records["t1"])}
    sent = 0
    for _ in range(40):  # 40 digests 30 s apart: 20 minutes queued
        h.clock.advance(30.0)
        n1.publish("up", Digest(entries=entries))
        h.await_msg(n1, "digest")
        while n1.take("place") is not None:
            sent += 1
    # 30 s, then 60, 120, 240, 480, 480 (at 30, 90, 210, 450, 930, 1410 s of 1200).
    assert sent == 5


def test_a_queued_local_submission_is_not_sent_its_place(h: Harness) -> None:
    """A task a node submitted and placed on itself (epoch 0) came with no `place` to
    lose: queued there behind busy executors, it is not sent one on the node's digest
    (a reconnect with hundreds queued would cost the node a transaction per task)."""
    n1 = h.node("n1")
    local = local_task_id("n1", "0000000000b1")
    spec = parse_task_spec({"id": local, "command": ["true"]}).to_dict()
    stamp = n1.clock.now(wall_ms())
    created = new_record(local, spec, writer="n1", hlc=stamp)
    n1.records[local] = merge(
        created,
        place(created, epoch=0, node="n1", level="causal", lease_s=None, writer="n1", hlc=stamp),
    )
    n1.send_deltas([n1.records[local]])
    h.await_msg(n1, "ack", lambda e: e.body.up_to_seq == n1.seq)
    n1.publish("up", Digest(entries={local: record_digest(h.controller.records[local])}))
    h.await_msg(n1, "digest")
    assert not n1.received("place")


def test_adaptive_mode_moves_idempotent_eventual_work_off_a_slow_link(tmp_path: Path) -> None:
    h = MemoryHarness(tmp_path, make_config(tmp_path, placement={"mode": "adaptive"}))
    try:
        n1 = h.node("n1", labels={"pool": "x"})
        n2 = h.node("n2", labels={"pool": "x", "only": "n2"})
        h.controller.set_draining("n2", True)
        h.controller.submit_task(
            {
                "id": "t1",
                "command": ["true"],
                "placement": {"max_latency_ms": 100},
                "consistency": {"level": "eventual"},
                "idempotent": True,  # a policy move never hedges non-idempotent work
            }
        )
        h.controller.submit_task(  # causal: never moved by a policy trigger
            {
                "id": "t2",
                "command": ["true"],
                "placement": {"max_latency_ms": 100},
                "consistency": {"level": "causal"},
            }
        )
        n1.expect("place", lambda e: e.body.task_id == "t1")
        n1.expect("place", lambda e: e.body.task_id == "t2")
        h.controller.set_draining("n2", False)
        for t in ("t3", "t4"):  # equal counts on both nodes: no overload trigger
            h.controller.submit_task(
                {"id": t, "command": ["true"], "placement": {"labels": {"only": "n2"}}}
            )
            n2.expect("place", lambda e, t=t: e.body.task_id == t)
        n1.answer_pings = False
        h.tick(1.0)
        fast = h.controller.registry.nodes["n2"].monitor._rtts
        h.pump_until(lambda: len(fast) == 1)  # n2 answers at once
        ping = n1.expect("ping")
        h.clock.advance(0.3)  # n1's round trip: 300 ms, over the task's 100 ms bound
        n1.pong(ping)
        samples = h.controller.registry.nodes["n1"].monitor._rtts
        h.pump_until(lambda: len(samples) == 1)
        h.keep_alive("n2")
        h.tick(0.0)
        assert h.controller.get_task("t1")["node"] == "n2"
        replaced = h.events(task_id="t1", kind="replaced")
        assert len(replaced) == 1 and replaced[0]["reason"].startswith("latency")
        n2.expect("place", lambda e: e.body.task_id == "t1" and e.body.epoch == 2)
        n1.expect("deltas", lambda e: e.body.records[0].placement.node == "n2")
        assert not n1.received("cancel")
        assert h.controller.get_task("t2")["node"] == "n1"  # causal stays
    finally:
        h.close()


def test_a_spec_too_big_to_send_is_refused_not_left_pending(h: Harness) -> None:
    # it was accepted and placed, and its `place` (over the message bound) never went out:
    # pending on its node for ever, with no error to its submitter
    h.node("n1", cpus=2)
    h.tick()
    big = {"id": "big", "command": ["echo", *(["x" * 4000] * 40)]}
    with pytest.raises(ValidationError, match="bytes as JSON"):
        h.controller.submit_task(big)
    assert "big" not in h.controller.records
