"""Which records a replica's digests name (``Replica.full_digest``/``periodic_digest``): a
node that keeps finished work would otherwise name every record in every periodic digest,
and its idle traffic would grow with its history (benchmarks/bench_traffic.py)."""

from __future__ import annotations

from shared.clocks import Timestamp
from shared.crdt import (
    RECENT_DIGESTS,
    SWEEP_DIGESTS,
    AttemptStatus,
    Replica,
    merge,
    new_record,
    set_status,
    start_attempt,
)


def _finished(replica: Replica, task_id: str, *, finish: bool = True) -> None:
    stamp = Timestamp(1, 0, "n1")
    rec = new_record(task_id, {"id": task_id, "command": ["true"]}, writer="n1", hlc=stamp)
    dot, started = start_attempt(rec, node="n1", epoch=0, writer="n1", hlc=stamp)
    rec = merge(rec, started)
    if finish:
        rec = merge(rec, set_status(rec, dot, AttemptStatus.SUCCEEDED, writer="n1", hlc=stamp))
    replica.apply(rec)


def test_an_idle_replica_names_its_old_finished_records_a_slice_at_a_time() -> None:
    r = Replica("n1")
    for i in range(600):
        _finished(r, f"old-{i:03d}")
    _finished(r, "running", finish=False)
    assert len(r.full_digest()) == 601 and r.named is None
    first = [r.periodic_digest() for _ in range(RECENT_DIGESTS)]
    assert all(len(d) == 601 for d in first)  # until that many were made: all of them
    seen: set[str] = set()
    for _ in range(SWEEP_DIGESTS):
        d = r.periodic_digest()
        assert "running" in d  # unfinished: every time
        assert len(d) < 601 * 3 // SWEEP_DIGESTS + 2  # a slice of the old ones
        assert r.named == frozenset(d)
        seen |= set(d)
    assert len(seen) == 601  # each record at least once a sweep


def test_a_change_is_named_for_the_next_recent_digests() -> None:
    r = Replica("n1")
    for i in range(100):
        _finished(r, f"old-{i:03d}")
    for _ in range(RECENT_DIGESTS):
        r.periodic_digest()
    _finished(r, "new")
    named = [("new" in r.periodic_digest()) for _ in range(RECENT_DIGESTS + 1)]
    assert named[:RECENT_DIGESTS] == [True] * RECENT_DIGESTS
    assert r.full_digest().keys() >= {"new", "old-000"} and r.named is None
