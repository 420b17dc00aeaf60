"""The agent's core loop in process (no broker, no threads, a manual clock): what a journal
write failure does, what the door does with misrouted messages, how strong work asks for
leases. ``PRAGMA query_only`` makes SQLite itself refuse every write, as a full disk does
(``max_page_count`` would not: small rows still fit in pages already allocated)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from edge_agent.agent import Agent
from edge_agent.config import parse_config
from edge_agent.inbox import ApiCall, LinkChanged, MessageArrived
from edge_agent.journal import QueuedRow
from shared.clocks import HybridClock
from shared.crdt import TaskRecord
from shared.crdt import place as place_delta
from shared.protocol import (
    Ack,
    Deltas,
    Envelope,
    LeaseGrant,
    LeaseRequest,
    Ping,
    Place,
    Presence,
    decode,
    encode,
    topic,
)
from shared.vocab import Level


class _ManualClock:
    """The test's time: it moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def mono(self) -> float:
        return self.now

    def wall_ms(self) -> int:
        return 1_796_000_000_000 + int(self.now * 1000)


def _agent(tmp_path: Path, clock: _ManualClock | None = None, **sections: object) -> Agent:
    cfg = parse_config(
        {
            "node": {"id": "core-1", "state_dir": str(tmp_path / "state")},
            "broker": {"host": "127.0.0.1"},  # never connected: run() is not called
            "discovery": {"enabled": False},
            **sections,
        },
        env={},
    )
    return Agent(cfg, clock=clock or _ManualClock())


def _submit(agent: Agent, task: dict[str, object]) -> tuple[int, object]:
    call = ApiCall("POST", "/v1/tasks", json.dumps(task).encode())
    agent.handle(call)
    return call.result


def test_disk_full_stops_admission_keeps_committed_state_and_recovers(tmp_path: Path) -> None:
    clock = _ManualClock()
    agent = _agent(tmp_path, clock)
    try:
        assert _submit(agent, {"id": "core-1:before", "command": ["true"]})[0] == 201
        core = agent.core
        core.journal.db.execute("PRAGMA query_only = ON")
        code, _ = _submit(agent, {"id": "core-1:during", "command": ["true"]})
        assert code == 500  # the write failed ...
        assert core.admission_stopped is not None  # ... admission stopped and reported
        assert agent.status()["admission_stopped"]
        assert core.counters["journal_errors"] == 1
        # Memory mirrors the journal: the rolled-back task is not half-known.
        assert agent.replica.get("core-1:during") is None
        assert agent.replica.get("core-1:before") is not None
        code, body = _submit(agent, {"id": "core-1:during", "command": ["true"]})
        assert (code, body["error"]) == (503, "admission_stopped")  # type: ignore[index]
        core.safely(agent.tick)  # as the loop runs it; the probe fails too: still stopped
        assert core.admission_stopped is not None
        # Space again (an operator cleaned up): the next probe resumes admission.
        core.journal.db.execute("PRAGMA query_only = OFF")
        clock.now += 5.0  # the probe's period
        core.safely(agent.tick)
        assert core.admission_stopped is None
        assert _submit(agent, {"id": "core-1:after", "command": ["true"]})[0] == 201
        rows = core.journal.db.execute("SELECT task_id FROM records").fetchall()
        assert sorted(r[0] for r in rows) == ["core-1:after", "core-1:before"]
    finally:
        agent.core.journal.close()


class _ShortOfMemory:
    """psutil's view replaced by a node with 10 MB free (the input, not the part under test)."""

    def sample(self, now: float) -> dict[str, object]:
        return {"cpus": 2, "cpu_pct": 5.0, "memory_free_mb": 10.0, "averages": {}}


def test_memory_pressure_sheds_low_priority_queued_work_only(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    try:
        scheduler, core = agent.scheduler, agent.core
        scheduler.sampler = _ShortOfMemory()  # type: ignore[assignment]
        for task_id, priority in (("low", 10), ("default", 50), ("lower", 5)):
            task = {"id": f"core-1:{task_id}", "command": ["true"], "priority": priority}
            assert _submit(agent, task)[0] == 201
        scheduler.shed()
        scheduler.shed()
        scheduler.shed()
        queued = sorted(r.task_id for r in core.journal.queued())
        assert queued == ["core-1:default"]  # below-default priorities went, lowest first
        shed = [
            e
            for e in core.journal.db.execute(
                "SELECT task_id, data FROM events WHERE kind = 'unstartable'"
            )
        ]
        assert [t for t, _ in shed] == ["core-1:lower", "core-1:low"]
        assert all(json.loads(d)["reason"] == "shed" for _, d in shed)
        assert core.counters["shed"] == 2
        # Nothing is admitted while memory is short either.
        scheduler.start_ready()
        assert core.running == {}
        assert core.counters["not_admitted_memory"] >= 1
    finally:
        core.journal.close()


def _message(
    sender: str, node: str, kind: str, type_: str, body: object, *, sent_ms: int = 1
) -> MessageArrived:
    """A message as ``sender`` sent it at ``sent_ms`` (wall clock, its HLC)."""
    clock = HybridClock(sender)
    env = Envelope(
        type=type_, id=uuid.uuid4().hex, sender=sender, hlc=clock.now(sent_ms).encode(), body=body
    )
    return MessageArrived(topic(node, kind), encode(env))


def test_misrouted_and_malformed_messages_are_counted_and_never_stall_the_session(
    tmp_path: Path,
) -> None:
    """What a misbehaving broker delivered on the agent's subscription (amqtt sent every
    node's retained presence on a reconnect): dropped, counted, and the next good message
    is handled at once."""
    agent = _agent(tmp_path)
    core = agent.core
    try:
        noise = [
            _message("cloud", "other-node", "down", "ack", Ack(heartbeat_id="x")),
            _message("other-node", "other-node", "presence", "presence", Presence("online")),
            _message("core-1", "core-1", "presence", "presence", Presence("offline")),
            MessageArrived(topic("core-1", "down"), b"\x00not json"),
            MessageArrived("elsewhere/entirely", b"{}"),
        ]
        for event in noise * 3:
            agent.handle(event)
        assert core.counters["rejected_not_our_topic"] == 9
        assert core.counters["rejected_not_json"] == 3
        assert core.counters["rejected_bad_topic"] == 3
        assert agent.uplink.session.last_ack is None
        agent.handle(_message("cloud", "core-1", "down", "ack", Ack(heartbeat_id="hb")))
        assert agent.uplink.session.last_ack is not None
        assert agent.status()["connectivity"] == "connected"
    finally:
        core.journal.close()


class _Transport:
    """Stands in for MQTT: connected, and keeps what the agent publishes."""

    connected = True
    reconnects = 1

    def __init__(self) -> None:
        self.sent: list[Envelope] = []

    def publish(
        self, topic_name: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> bool:
        self.sent.append(decode(payload))
        return True

    def requests(self) -> list[LeaseRequest]:
        return [e.body for e in self.sent if isinstance(e.body, LeaseRequest)]


def test_strong_work_asks_for_no_more_leases_than_free_slots(tmp_path: Path) -> None:
    """Three strong tasks queued, two slots: two requests (a grant for a task that cannot
    start would only lapse). A task whose request was refused for now (``lease_held``)
    backs off and gives its slot up, so the third task asks."""
    clock = _ManualClock()
    agent = _agent(tmp_path, clock, executor={"max_concurrent": 2})
    transport = _Transport()
    agent.uplink.transport = transport  # type: ignore[assignment]
    try:
        agent.handle(LinkChanged(True))
        agent.handle(_message("cloud", "core-1", "down", "ack", Ack(heartbeat_id=None)))
        for i in range(3):
            task = {"id": f"s{i}", "command": ["true"], "consistency": "strong"}
            place = Place(task_id=f"s{i}", epoch=1, spec=task, level=Level.STRONG, lease_s=6.0)
            agent.handle(_message("cloud", "core-1", "down", "place", place))
        agent.tick()
        first = transport.requests()
        assert sorted(r.task_id for r in first) == ["s0", "s1"]
        for req in first:
            refusal = LeaseGrant(
                task_id=req.task_id,
                epoch=1,
                granted=False,
                reason="lease_held",
                request_id=req.request_id,
            )
            agent.handle(_message("cloud", "core-1", "down", "lease_grant", refusal))
        clock.now += 0.1
        agent.tick()
        assert [r.task_id for r in transport.requests()[2:]] == ["s2"]
        assert agent.core.running == {}
        refused = agent.core.journal.db.execute(
            "SELECT COUNT(*) FROM events WHERE kind = 'lease_refused'"
        ).fetchone()[0]
        assert refused == 2
    finally:
        agent.core.journal.close()


def test_a_strong_placement_asks_for_its_lease_once_journaled_not_at_the_next_pass(
    tmp_path: Path,
) -> None:
    """The request leaves as the placement is handled, after it committed (its ``placed``
    event is in the journal), before any start pass (which may first start the supervisor):
    the round trip overlaps that. The pass that follows does not ask again."""
    agent = _agent(tmp_path)
    transport = _Transport()
    agent.uplink.transport = transport  # type: ignore[assignment]
    try:
        agent.handle(LinkChanged(True))
        agent.handle(_message("cloud", "core-1", "down", "ack", Ack(heartbeat_id=None)))
        task = {"id": "s0", "command": ["true"], "consistency": "strong"}
        place = Place(task_id="s0", epoch=1, spec=task, level=Level.STRONG, lease_s=6.0)
        agent.handle(_message("cloud", "core-1", "down", "place", place))
        assert [(r.task_id, r.epoch) for r in transport.requests()] == [("s0", 1)]
        placed = agent.core.journal.db.execute(
            "SELECT COUNT(*) FROM events WHERE kind = 'placed' AND task_id = 's0'"
        ).fetchone()[0]
        assert placed == 1
        agent.tick()
        assert len(transport.requests()) == 1
    finally:
        agent.core.executor.close()
        agent.core.journal.close()


def test_a_frozen_agent_holds_placed_causal_work_until_the_controller_hears_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The soak's frozen agent: two causal tasks (``max_disconnect_s`` 10) queued, then the
    process is frozen for 15 s (the monotonic clock runs on). Thawed, it starts neither:
    the controller may have re-placed them. Messages the controller sent meanwhile (a ping
    sent 12 s in, read after the thaw) are no contact: it talks to a node it cannot hear. A
    local submission still starts (it stays on its node). The agent probes (a heartbeat);
    the newer placement of ``c1`` (elsewhere) arrives first and drops it from the queue;
    the ack of the probe is the contact: ``c2`` (still ours) starts."""
    clock = _ManualClock()
    agent = _agent(tmp_path, clock, executor={"max_concurrent": 4})
    transport = _Transport()
    agent.uplink.transport = transport  # type: ignore[assignment]
    started: list[str] = []

    def start(rec: TaskRecord, row: QueuedRow, deadline: float | None) -> None:
        """Stands in for the launch: what started leaves the queue."""
        started.append(rec.task_id)
        with agent.core.txn():
            agent.core.journal.remove_queued(row.task_id)

    monkeypatch.setattr(agent.scheduler, "_start", start)
    try:
        agent.handle(LinkChanged(True))
        for task_id in ("c1", "c2"):
            task = {"id": task_id, "command": ["true"], "max_disconnect_s": 10.0}
            place = Place(task_id=task_id, epoch=1, spec=task, level=Level.CAUSAL, lease_s=None)
            sent_ms = clock.wall_ms()
            agent.handle(_message("cloud", "core-1", "down", "place", place, sent_ms=sent_ms))
        ping_ms = clock.wall_ms() + 12_000
        clock.now += 15.0  # SIGSTOP ... SIGCONT: nothing ran meanwhile
        agent.handle(_message("cloud", "core-1", "down", "ping", Ping(), sent_ms=ping_ms))
        assert _submit(agent, {"id": "core-1:l1", "command": ["true"]})[0] == 201
        agent.tick()
        assert started == ["core-1:l1"]
        assert agent.core.counters["held_out_of_contact"] == 2
        probes = [e.id for e in transport.sent if e.type == "heartbeat"]
        assert probes
        rec = agent.replica.get("c1")
        assert rec is not None
        cloud = HybridClock("cloud")
        moved = place_delta(
            rec,
            epoch=2,
            node="core-2",
            level=str(Level.CAUSAL),
            lease_s=None,
            writer="cloud",
            hlc=cloud.now(clock.wall_ms() + 1000),
        )
        news = Deltas(records=(moved,))
        agent.handle(_message("cloud", "core-1", "down", "deltas", news, sent_ms=clock.wall_ms()))
        agent.tick()
        assert started == ["core-1:l1"]  # still no contact: the controller has not answered
        ack = Ack(heartbeat_id=probes[-1])
        agent.handle(_message("cloud", "core-1", "down", "ack", ack, sent_ms=clock.wall_ms()))
        agent.tick()
        assert started == ["core-1:l1", "c2"]
        assert [row.task_id for row in agent.core.journal.queued()] == []
    finally:
        agent.core.journal.close()


def test_a_deadline_counts_from_submission_not_from_queueing_on_the_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``deadline_s`` counts from the task's submission everywhere (docs/task-spec.md): a
    placed task brings the seconds its controller had left when it sent the placement,
    so the queue's earliest-deadline order ranks it by the deadline the user set; a
    local submission is submitted on arrival. A placement without the field (an older
    controller) falls back to the spec's ``deadline_s`` from now."""
    clock = _ManualClock()
    agent = _agent(tmp_path, clock)
    monkeypatch.setattr(agent.scheduler, "start_ready", lambda: None)  # all stay queued
    try:
        now_ms = clock.wall_ms()
        for task_id, left in (("waited", 2.5), ("older", None)):
            task = {"id": task_id, "command": ["true"], "deadline_s": 10.0}
            place = Place(
                task_id=task_id,
                epoch=1,
                spec=task,
                level=Level.CAUSAL,
                deadline_left_s=left,
            )
            agent.handle(_message("cloud", "core-1", "down", "place", place))
        task = {"id": "core-1:l1", "command": ["true"], "deadline_s": 10.0}
        assert _submit(agent, task)[0] == 201
        deadlines = {row.task_id: row.deadline_ms for row in agent.core.journal.queued()}
        assert deadlines == {
            "waited": now_ms + 2_500,
            "older": now_ms + 10_000,
            "core-1:l1": now_ms + 10_000,
        }
    finally:
        agent.core.journal.close()


def test_a_record_row_is_its_sorted_json_with_the_spec_encoded_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Core.change`` splices a task's spec JSON, kept from its first change, into each row
    it rewrites: the row is still exactly ``row_json(record.to_dict())``; another spec
    object under a kept id is encoded again; and only the latest specs are kept."""
    from edge_agent import core as core_module
    from edge_agent.journal import row_json
    from shared.crdt import new_record, start_attempt

    monkeypatch.setattr(core_module, "_SPEC_TEXTS", 2)
    agent = _agent(tmp_path)
    core = agent.core

    def row(task_id: str) -> str:
        (text,) = core.journal.db.execute(
            "SELECT record FROM records WHERE task_id = ?", [task_id]
        ).fetchone()
        rec = core.replica.get(task_id)
        assert rec is not None and text == row_json(rec.to_dict())
        return text

    try:
        ids = [f"core-1:t{i}" for i in range(3)]
        for task_id in ids:
            assert _submit(agent, {"id": task_id, "command": ["true"], "env": {"K": "é"}})[0] == 201
            row(task_id)
        assert list(core._spec_texts) == ids[1:]  # the oldest left
        for task_id in ids:  # a start rewrites each row: kept or not, the same text
            rec = core.replica.get(task_id)
            assert rec is not None
            _, delta = start_attempt(rec, node="core-1", epoch=0, writer="core-1", hlc=core.stamp())
            with core.txn():
                core.change(delta)
            row(task_id)
        rec = core.replica.get(ids[2])
        assert rec is not None and rec.spec is not None
        other = {**rec.spec, "name": "renamed"}  # not a real event: only the encoding counts
        core.replica.forget(ids[2])
        with core.txn():
            core.change(new_record(ids[2], other, writer="core-1", hlc=core.stamp()))
        assert json.loads(row(ids[2]))["spec"]["name"] == "renamed"
    finally:
        core.journal.close()
