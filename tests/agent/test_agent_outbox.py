"""The outbox's deltas as objects (issue 14): the uplink sends what this process journaled
without parsing each row back (``Journal.outbox_pending``), so a delta is validated once, by
``encode`` — which still refuses one the controller would refuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_agent_core import _agent, _submit, _Transport

from edge_agent.journal import Journal
from shared.protocol import Deltas


def test_committed_rows_keep_their_objects_until_acknowledged(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    a, b = object(), object()
    with j.transaction():
        sa = j.add_outbox("t1", {"x": 1}, now_ms=1, obj=a)
        sb = j.add_outbox("t2", {"x": 2}, now_ms=1, obj=b)
    with pytest.raises(RuntimeError), j.transaction():
        j.add_outbox("t3", {"x": 3}, now_ms=2, obj=object())
        raise RuntimeError("rolled back")
    sc = j.add_outbox("t4", {"x": 4}, now_ms=3)  # no object: parsed from its row
    rows = j.outbox_pending(0, 10)
    assert [(r.seq, r.obj, r.delta) for r in rows] == [
        (sa, a, None),
        (sb, b, None),
        (sc, None, {"x": 4}),
    ]
    assert rows[0].size == len(json.dumps({"x": 1}, separators=(",", ":")))
    j.ack(sa)
    assert [r.obj for r in j.outbox_pending(0, 10)] == [b, None]
    j.close()
    reopened = Journal(tmp_path / "j.sqlite")  # a later process: every row parsed
    assert [(r.obj, r.delta) for r in reopened.outbox_pending(0, 10)] == [
        (None, {"x": 2}),
        (None, {"x": 4}),
    ]
    reopened.close()


def test_journaled_deltas_go_up_as_made_and_an_invalid_one_is_still_refused(
    tmp_path: Path,
) -> None:
    agent = _agent(tmp_path)
    transport = _Transport()
    agent.uplink.transport = transport  # type: ignore[assignment]
    core = agent.core
    try:
        agent.uplink.session.link_changed(True, core.clock.mono())
        assert _submit(agent, {"id": "core-1:ok", "command": ["true"]})[0] == 201
        agent.uplink.flush()
        sent = [e.body for e in transport.sent if isinstance(e.body, Deltas)]
        assert [r.task_id for body in sent for r in body.records] == ["core-1:ok"]
        assert sent[0].records[0] == core.replica.get("core-1:ok")
        # A delta this process made that the controller would refuse (an id it rejects):
        # encode's check, the one validation left on this path, keeps it from going up.
        bad = core.replica.get("core-1:ok")._replace(task_id="not a valid id!")
        with core.txn():
            core.journal.add_outbox(bad.task_id, bad.to_dict(), now_ms=1, obj=bad)
        before = len(transport.sent)
        agent.uplink.flush()
        assert len(transport.sent) == before
        assert core.counters["encode_errors"] == 1
    finally:
        core.journal.close()


def test_the_last_seq_is_answered_from_memory_as_the_table_would(tmp_path: Path) -> None:
    """``outbox_last_seq`` (asked on every tick) without a query or the pending delete: the
    highest committed seq, 0 once an ack covers it, unchanged by a rolled-back insert, and
    the table's own answer after a reopen."""
    j = Journal(tmp_path / "j.sqlite")

    def table() -> int:
        j._delete_acked()
        return int(j.db.execute("SELECT MAX(seq) FROM outbox").fetchone()[0] or 0)

    assert j.outbox_last_seq() == 0 == table()
    with j.transaction():
        first = j.add_outbox("t", {}, now_ms=1)
        second = j.add_outbox("t", {}, now_ms=1)
    assert j.outbox_last_seq() == second == table()
    with pytest.raises(RuntimeError), j.transaction():
        j.add_outbox("t", {}, now_ms=2)
        raise RuntimeError("rolled back")
    assert j.outbox_last_seq() == second == table()
    j.ack(first)
    assert j.outbox_last_seq() == second == table()
    j.ack(second)
    assert j.outbox_last_seq() == 0 == table()
    third = j.add_outbox("t", {}, now_ms=3)  # autocommit
    assert j.outbox_last_seq() == third == table()
    j.close()
    reopened = Journal(tmp_path / "j.sqlite")
    assert reopened.outbox_last_seq() == third
    reopened.close()


def test_a_delta_encode_refuses_is_passed_over_and_the_later_ones_still_go_up(
    tmp_path: Path,
) -> None:
    """One delta the controller would refuse (here an id it rejects; in the field, a record
    over the message size bound) used to stop the outbox: every flush retried it and every
    later delta waited behind it. Now the batch goes again row by row, the refused row is
    passed over once (counted, an event), and the rows after it are sent."""
    agent = _agent(tmp_path)
    transport = _Transport()
    agent.uplink.transport = transport  # type: ignore[assignment]
    core = agent.core
    try:
        assert _submit(agent, {"id": "core-1:a", "command": ["true"]})[0] == 201
        good = core.replica.get("core-1:a")
        bad = good._replace(task_id="not a valid id!")
        with core.txn():
            core.journal.add_outbox(bad.task_id, bad.to_dict(), now_ms=1, obj=bad)
        assert _submit(agent, {"id": "core-1:b", "command": ["true"]})[0] == 201
        agent.uplink.session.link_changed(True, core.clock.mono())
        agent.uplink.flush()
        sent = [
            r.task_id for e in transport.sent if isinstance(e.body, Deltas) for r in e.body.records
        ]
        assert sent == ["core-1:a", "core-1:b"]
        assert core.counters["deltas_passed_over"] == 1
        kinds = [k for (k,) in core.journal.db.execute("SELECT kind FROM events")]
        assert kinds.count("delta_passed_over") == 1
        # a reconnection resends from the last acknowledged row: passed over again, quietly
        agent.uplink.session.link_changed(False, core.clock.mono())
        agent.uplink.session.link_changed(True, core.clock.mono())
        agent.uplink.flush()
        resent = [
            r.task_id for e in transport.sent if isinstance(e.body, Deltas) for r in e.body.records
        ]
        assert resent[len(sent) :] == ["core-1:a", "core-1:b"]
        assert core.counters["deltas_passed_over"] == 1
    finally:
        core.journal.close()
