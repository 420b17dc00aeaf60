"""Replicas converge: random operations, a lossy reordering network, then
digest-driven anti-entropy leave every replica identical; the digest is sound;
per-peer delta buffers join, re-send and drop on ack."""

from __future__ import annotations

import pytest
from crdt_world import NODES, PROGRAMS, TASKS, World, run_program, spec_of
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.clocks import Timestamp
from shared.crdt import (
    AttemptStatus,
    Replica,
    TaskRecord,
    content_hash,
    digest,
    merge,
    missing,
    new_record,
    record_digest,
    set_status,
    start_attempt,
)
from shared.errors import SpecConflictError


def hashes(replica: Replica) -> dict[str, str]:
    return {rec.task_id: content_hash(rec) for rec in replica.records()}


@settings(max_examples=80, deadline=None)
@given(PROGRAMS, st.integers(2, 4))
def test_replicas_converge_after_lossy_delivery_and_anti_entropy(
    program: list[tuple[str, int, int, int, int]], n: int
) -> None:
    world = run_program(program, n)
    world.anti_entropy()
    expected = {task_id: content_hash(rec) for task_id, rec in world.oracle().items()}
    for replica in world.replicas:
        assert hashes(replica) == expected, replica.node_id
    # Converged replicas agree on digests and have nothing left to send.
    first = world.replicas[0]
    for replica in world.replicas[1:]:
        assert replica.digest() == first.digest()
        assert replica.missing_for(first.digest()) == []
    assert not world.status_went_down


@settings(max_examples=60, deadline=None)
@given(PROGRAMS)
def test_reliable_delta_delivery_alone_converges(
    program: list[tuple[str, int, int, int, int]],
) -> None:
    """Without drops, buffered deltas (take until ack) are enough: no anti-entropy."""
    world = run_program([op for op in program if op[0] not in ("drop", "send", "recv")], 3)
    for _ in range(2):  # a delta received from one peer is relayed to the others
        for i, sender in enumerate(world.replicas):
            for j, receiver in enumerate(world.replicas):
                if i == j:
                    continue
                batch = sender.take(receiver.node_id)
                for delta in batch.deltas:
                    world.apply(j, delta, origin=sender.node_id)
                sender.ack(receiver.node_id, batch.up_to)
    expected = {task_id: content_hash(rec) for task_id, rec in world.oracle().items()}
    for replica in world.replicas:
        assert hashes(replica) == expected
        assert all(replica.pending(peer) == 0 for peer in replica.peers())


@settings(max_examples=80, deadline=None)
@given(PROGRAMS, st.data())
def test_digest_is_sound(
    program: list[tuple[str, int, int, int, int]], data: st.DataObject
) -> None:
    """If ``missing`` holds a record back, the remote already has all of it; equal
    summaries mean equal records."""
    world = run_program(program, 3)
    pool = world.snapshots + world.deltas
    for task_id in TASKS:
        same = [rec for rec in pool if rec.task_id == task_id]
        if not same:
            continue
        ours = data.draw(st.sampled_from(same))
        theirs = data.draw(st.sampled_from(same))
        sent = missing({task_id: ours}, {task_id: record_digest(theirs)})
        if not sent:
            assert merge(theirs, ours) == theirs
        if record_digest(ours) == record_digest(theirs):
            assert content_hash(ours) == content_hash(theirs)
        # Contexts are exact: the same events (and spec presence), the same record.
        if (ours.context, ours.dots, ours.spec is None) == (
            theirs.context,
            theirs.dots,
            theirs.spec is None,
        ):
            assert ours == theirs


@settings(max_examples=60, deadline=None)
@given(PROGRAMS, st.permutations(range(3)))
def test_replica_join_is_commutative_associative_idempotent(
    program: list[tuple[str, int, int, int, int]], order: list[int]
) -> None:
    """Joining replica states (every record of each into a fresh replica) gives
    one result whatever the order and however often."""
    world = run_program(program, 3)
    states = [list(r.records()) for r in world.replicas]

    def join(*parts: list[TaskRecord]) -> dict[str, str]:
        target = Replica("x")
        for part in parts:
            for rec in part:
                target.apply(rec)
        return hashes(target)

    a, b, c = states
    assert join(a, b) == join(b, a)
    assert join(a, b, c) == join(*(states[i] for i in order))
    assert join(a, a) == join(a)
    assert join(a, b, a, b) == join(a, b)


def _stamp(t: int, node: str = "cloud") -> Timestamp:
    return Timestamp(10_000 + t, 0, node)


def test_missing_sends_what_the_remote_lacks_and_only_that() -> None:
    base = new_record("t1", spec_of("t1"), writer="cloud", hlc=_stamp(0))
    dot, started = start_attempt(base, node="n1", epoch=0, writer="n1", hlc=_stamp(1, "n1"))
    full = merge(base, started)
    records = {"t1": full, "t2": new_record("t2", spec_of("t2"), writer="cloud", hlc=_stamp(2))}
    # Unknown task, older context, garbage: sent. Equal: not sent.
    assert missing(records, {}) == list(records.values())
    assert missing(records, {"t1": record_digest(base), "t2": record_digest(records["t2"])}) == [
        full
    ]
    assert missing(records, digest(records)) == []
    for garbage in ("", "x|y", "a:1|||", "a:-1|||abc", 5, None, "|" * 4, "a:1|b:0||h", "n1:1||x|h"):
        assert missing(records, {"t1": garbage, "t2": digest(records)["t2"]}) == [full]  # type: ignore[dict-item]
    # The remote strictly ahead: nothing to send.
    done = merge(
        full, set_status(full, dot, AttemptStatus.SUCCEEDED, writer="n1", hlc=_stamp(3, "n1"))
    )
    assert missing({"t1": full}, {"t1": record_digest(done)}) == []
    assert missing({"t1": done}, {"t1": record_digest(full)}) == [done]


def test_gap_is_not_claimed_and_equal_context_with_another_hash_is_sent() -> None:
    base = new_record("t1", spec_of("t1"), writer="cloud", hlc=_stamp(0))
    dot, started = start_attempt(base, node="n1", epoch=0, writer="n1", hlc=_stamp(1, "n1"))
    rec = merge(base, started)
    d2 = set_status(rec, dot, AttemptStatus.FAILED, writer="n1", hlc=_stamp(2, "n1"))
    d3 = set_status(merge(rec, d2), dot, AttemptStatus.SUCCEEDED, writer="n1", hlc=_stamp(3, "n1"))
    # Only n1's third event arrives: the record must not claim events 1 and 2.
    gap = merge(base, d3)
    assert gap.context.get("n1") == 0 and gap.dots == frozenset({("n1", 3)})
    assert missing({"t1": rec}, {"t1": record_digest(gap)}) == [rec]
    # Closing the gap folds the dots into the vector.
    closed = merge(merge(gap, started), d2)
    assert closed.context.get("n1") == 3 and not closed.dots
    # A broken writer that reused counters: same context, other content.
    forged = closed._replace(cancel_requested=True)
    assert missing({"t1": closed}, {"t1": record_digest(forged)}) == [closed]


def test_buffers_join_per_task_resend_until_ack_and_skip_the_origin() -> None:
    replica = Replica("cloud", peers=["n1", "n2"])
    base = new_record("t1", spec_of("t1"), writer="cloud", hlc=_stamp(0))
    replica.apply(base)
    _, started = start_attempt(base, node="n1", epoch=0, writer="n1", hlc=_stamp(1, "n1"))
    replica.apply(started, origin="n1")
    assert replica.pending("n1") == 1 and replica.pending("n2") == 1
    to_n1 = replica.take("n1")
    assert to_n1.deltas == (base,)  # n1 sent `started` itself
    to_n2 = replica.take("n2")
    assert to_n2.deltas == (merge(base, started),)  # one joined delta per task
    assert replica.take("n2") == to_n2  # not acked: handed out again
    replica.apply(new_record("t2", spec_of("t2"), writer="cloud", hlc=_stamp(2)))
    replica.ack("n2", to_n2.up_to)
    assert [d.task_id for d in replica.take("n2").deltas] == ["t2"]  # newer stays
    replica.apply(base)  # a duplicate changes nothing and buffers nothing
    replica.ack("n1", replica.take("n1").up_to)
    assert replica.pending("n1") == 0
    replica.remove_peer("n1")
    assert replica.peers() == ["n2"] and replica.take("n1").deltas == ()


def test_apply_returns_merged_record_and_spec_conflict_changes_nothing() -> None:
    replica = Replica("n1", peers=["cloud"])
    base = new_record("t1", spec_of("t1"), writer="cloud", hlc=_stamp(0))
    assert replica.apply(base) is base
    other = new_record("t1", {"id": "t1", "command": ["rm"]}, writer="n1", hlc=_stamp(1, "n1"))
    with pytest.raises(SpecConflictError):
        replica.apply(other)
    assert replica.get("t1") is base and len(replica) == 1 and "t1" in replica
    assert replica.take("cloud").deltas == (base,)
    assert dict(replica.as_mapping()) == {"t1": base}


def test_forget_drops_the_record_its_summary_and_its_buffered_deltas() -> None:
    replica = Replica("n1", peers=["cloud"])
    base = new_record("t1", spec_of("t1"), writer="cloud", hlc=_stamp(0))
    replica.apply(base)
    replica.apply(new_record("t2", spec_of("t2"), writer="cloud", hlc=_stamp(1)))
    assert set(replica.digest()) == {"t1", "t2"}
    replica.forget("t1")
    replica.forget("never-seen")
    assert "t1" not in replica and set(replica.digest()) == {"t2"}
    assert [d.task_id for d in replica.take("cloud").deltas] == ["t2"]
    assert replica.apply(base) is base  # a later delta starts the record again


def test_digest_is_cached_per_record_version() -> None:
    world = World(2)
    world.step("create", 0, 0, 0, 0)
    replica = world.replicas[0]
    first = replica.digest()
    assert first == digest(replica.as_mapping())
    assert replica.digest() == first
    world.step("start", 0, 0, 0, 1)
    assert replica.digest() != first
    assert replica.digest([TASKS[0], "unknown"]) == digest(replica.as_mapping())


def test_replica_rejects_bad_node_ids() -> None:
    with pytest.raises(ValueError):
        Replica("bad/id")
    with pytest.raises(ValueError):
        Replica(NODES[0], peers=["+"])
