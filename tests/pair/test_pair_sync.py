"""The agent's sync with the controller, on the in-memory pair (``agent_pair``): a real
agent and a real controller, no broker. Work placed by the controller runs and its outcome
reaches it; a cut link, a partition that leaves the connection up, a silent session, rows
nobody heard, the digests of anti-entropy and retention all converge. Moved here from the
broker-backed ``tests/agent/test_agent_e2e.py`` and ``test_agent_sync.py``, where the
broker was not the subject; the agent's clock is skipped instead of waited on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent_harness import sh, spec
from agent_pair import AgentPair
from memory_bus import MemoryHarness

from shared.crdt import AttemptStatus, TaskRecord
from shared.protocol import Digest, decode


def _gated(gate: Path, result: str) -> list[str]:
    """A task that runs until the test creates ``gate``, then prints ``result``."""
    return sh(f"while [ ! -e {gate} ]; do sleep 0.05; done; echo '{result}'")


def _succeeded(pair: AgentPair, task_id: str) -> list[dict[str, Any]]:
    return [a for a in pair.task(task_id)["attempts"] if a["status"] == "succeeded"]


def test_placed_task_runs_and_its_success_reaches_the_controller(pair: AgentPair) -> None:
    pair.connect()
    pair.submit(spec("t-ok", sh("echo working >&2; echo '{\"answer\": 42}'")))
    assert pair.task("t-ok")["node"] == "edge-1"
    pair.run_until(lambda: pair.upstream("t-ok") == "succeeded", "success at the controller")
    (attempt,) = _succeeded(pair, "t-ok")
    assert attempt["result"] == {"answer": 42}
    assert (attempt["exit_code"], attempt["node"], attempt["epoch"]) == (0, "edge-1", 1)
    pair.run_until(lambda: pair.status()["outbox_depth"] == 0, "the outbox acknowledged")


def test_a_cut_mid_task_task_completes_and_syncs_when_the_link_returns(
    pair: AgentPair, gate: Path
) -> None:
    pair.connect()
    pair.submit(spec("t-cut", _gated(gate, '{"v": 1}')))
    pair.run_until(lambda: pair.task_status("t-cut") == "running", "the task to start")
    pair.link.cut()
    pair.step()
    assert not pair.status()["link_up"]
    gate.touch()
    pair.run_until(lambda: pair.task_status("t-cut") == "succeeded", "local completion")
    assert pair.status()["outbox_depth"] > 0  # the success waits for an ack
    assert pair.upstream("t-cut") != "succeeded"
    pair.link.connect()
    pair.run_until(lambda: pair.upstream("t-cut") == "succeeded", "the success to sync")
    pair.run_until(lambda: pair.status()["outbox_depth"] == 0, "the outbox to drain")
    assert [a["result"] for a in _succeeded(pair, "t-cut")] == [{"v": 1}]


def test_causal_task_keeps_running_through_a_partition(pair: AgentPair, gate: Path) -> None:
    pair.connect()  # T = 3 s: disconnected after 3 s without acks
    pair.submit(spec("t-causal", _gated(gate, '{"ok": 1}')))
    pair.run_until(lambda: pair.task_status("t-causal") == "running", "the task to start")
    pair.link.partition()  # the connection stays up; nothing passes either way
    pair.skip_until(lambda: pair.status()["connectivity"] == "disconnected", "disconnected")
    status = pair.status()
    assert status["autonomy"] == "fully_autonomous"
    assert [r["task_id"] for r in status["running"]] == ["t-causal"]
    gate.touch()
    pair.run_until(lambda: pair.task_status("t-causal") == "succeeded", "completion")
    kinds = [e["now"] for e in pair.events("connectivity")]
    assert kinds[-1] == "disconnected" and "connected" in kinds
    assert [e["now"] for e in pair.events("autonomy")][-1] == "fully_autonomous"
    assert pair.upstream("t-causal") != "succeeded"
    pair.link.heal()
    pair.skip_until(lambda: pair.upstream("t-causal") == "succeeded", "sync after the partition")
    pair.skip_until(lambda: pair.status()["connectivity"] == "connected", "connected again")


def test_local_submission_while_disconnected_syncs_later(pair: AgentPair) -> None:
    """No link at all while the work is submitted and runs; then it reaches the controller,
    which accepts records in the node's namespace."""
    code, body = pair.api(
        "POST", "/v1/tasks", spec("edge-1:local-1", sh("echo '{\"local\": true}'"))
    )
    assert code == 201 and body["level"] == "causal", body
    code, body = pair.api("POST", "/v1/tasks", {"command": ["true"]})  # id generated
    assert code == 201
    generated = body["id"]
    code, body = pair.api("POST", "/v1/tasks", {"id": "edge-1:bad", "command": "not a list"})
    assert code == 400
    code, body = pair.api("POST", "/v1/tasks", {"id": "elsewhere", "command": ["true"]})
    assert code == 400 and body["error"] == "invalid_id", body  # the controller would refuse it
    assert pair.task_status("elsewhere") is None
    code, body = pair.api("POST", "/v1/tasks", spec("edge-1:s", ["true"], consistency="strong"))
    assert code == 409 and body["error"] == "strong_needs_controller"
    pair.run_until(lambda: pair.task_status("edge-1:local-1") == "succeeded", "local completion")
    pair.run_until(lambda: pair.task_status(generated) == "succeeded", "local completion")
    assert pair.status()["connectivity"] == "disconnected"
    pair.connect()
    pair.run_until(lambda: pair.upstream("edge-1:local-1") == "succeeded", "the local task up")
    pair.run_until(lambda: pair.upstream(generated) == "succeeded", "the generated id upstream")
    rec = TaskRecord.from_dict(pair.task("edge-1:local-1")["record"])
    assert rec.spec is not None and rec.spec["id"] == "edge-1:local-1"
    assert rec.placement is not None and rec.placement.node == "edge-1"


def _silent_actions(pair: AgentPair) -> list[str]:
    return [e["action"] for e in pair.events("silent_session")]


def test_a_silent_session_resubscribes_then_reconnects_until_acks_return(
    pair: AgentPair,
) -> None:
    pair.connect()  # T = 3 s
    hellos = len(pair.sent("hello"))
    pair.link.partition(up=False)  # the controller hears the agent; the agent hears nothing
    pair.skip_until(lambda: "resubscribe" in _silent_actions(pair), "a resubscribe")
    assert pair.link.resubscribes == 1
    pair.skip_until(lambda: "reconnect" in _silent_actions(pair), "a reconnect")
    assert len(pair.sent("hello")) > hellos  # announced on the new connection
    assert pair.status()["reconnects"] >= 2
    pair.link.heal()
    pair.skip_until(lambda: pair.status()["connectivity"] == "connected", "connected again")
    actions = len(_silent_actions(pair))
    pair.submit(spec("t-after", sh("echo '{\"ok\": 1}'")))
    pair.run_until(lambda: pair.upstream("t-after") == "succeeded", "work after the recovery")
    pair.skip(3.0)  # a period more: acks again, so no more recovery
    assert len(_silent_actions(pair)) == actions


def test_rows_sent_before_the_controller_heard_are_sent_again(pair: AgentPair) -> None:
    """No ack ever came (nothing the agent published was heard): the rows are re-sent after
    a period, without waiting for a reconnect."""
    pair.link.partition()
    pair.link.connect()
    pair.step()
    assert pair.status()["link_up"]
    code, _ = pair.api("POST", "/v1/tasks", spec("edge-1:early", sh("echo '{\"early\": 1}'")))
    assert code == 201
    pair.run_until(lambda: pair.task_status("edge-1:early") == "succeeded", "local completion")
    pair.run_until(lambda: pair.status()["outbox_depth"] > 0, "unacknowledged rows")
    pair.link.heal()
    pair.skip_until(lambda: pair.upstream("edge-1:early") == "succeeded", "the re-sent rows")
    pair.skip_until(lambda: pair.status()["outbox_depth"] == 0, "the outbox to drain")
    assert pair.status()["reconnects"] == 1


def test_a_digest_lacking_a_record_brings_the_whole_record(pair: AgentPair) -> None:
    """Anti-entropy from the controller's side: a digest that lacks a record (a controller
    restored from an old backup, say) brings the full record, not a delta."""
    pair.connect()
    pair.submit(spec("t-ae", sh("echo '{\"ae\": 1}'")))
    pair.run_until(lambda: pair.upstream("t-ae") == "succeeded", "success")
    pair.run_until(lambda: pair.status()["outbox_depth"] == 0, "the outbox to drain")
    before = len(pair.sent("up", "deltas"))
    pair.down("digest", Digest(entries={}))
    pair.step()
    resent = [r for e in pair.sent("up", "deltas")[before:] for r in e.body.records]
    (rec,) = [r for r in resent if r.task_id == "t-ae"]
    assert rec.spec is not None  # the full record
    assert [a.status for a in rec.attempts.values()] == [AttemptStatus.SUCCEEDED]


def test_a_place_lost_while_its_record_arrives_is_sent_again_at_a_digest(
    tmp_path: Path, h: MemoryHarness
) -> None:
    """The controller sends a task's record, then its ``place``; only the ``place`` is lost
    (a lossy link, the session up). The agent holds a record placing the task on it under
    an epoch it never took up, which a queued task's copy at the controller cannot be told
    from: its digest leaves the record out (``shared.decisions.place_not_taken``), and the
    controller sends the ``place`` again at once, not after its 30 s backoff."""
    pair = AgentPair(h, tmp_path, autonomy={"antientropy_s": 0.5})
    lost: list[str] = []

    def drop(topic_: str, payload: bytes) -> bool:
        env = decode(payload)
        if env.type == "place" and not lost:
            lost.append(env.body.task_id)
            return True
        return False

    try:
        pair.connect()
        pair.link.drop_down = drop
        pair.submit(spec("t-lost", ["true"]))
        pair.settle()
        assert lost == ["t-lost"] and pair.task_status("t-lost") == "pending"  # the record
        waited = 0.0
        while pair.task_status("t-lost") == "pending":
            assert waited < 10.0, "the place was not sent again within a third of the backoff"
            pair.advance(0.5)  # both clocks: the agent's digests, the controller's in-flight
            waited += 0.5
        pair.run_until(lambda: pair.upstream("t-lost") == "succeeded", "success")
        (attempt,) = pair.task("t-lost")["attempts"]
        assert (attempt["node"], attempt["epoch"]) == ("edge-1", 1)
    finally:
        pair.close()


def test_anti_entropy_repeats_while_connected(tmp_path: Path, h: MemoryHarness) -> None:
    """Records the controller changed without telling the agent converge without a
    reconnect: the digest exchange repeats every ``antientropy_s``."""
    pair = AgentPair(h, tmp_path, autonomy={"antientropy_s": 0.5})
    try:
        pair.connect()
        pair.submit(spec("t-periodic", ["true"]))
        pair.run_until(lambda: pair.upstream("t-periodic") == "succeeded", "success")
        pair.skip_until(lambda: len(pair.sent("up", "digest")) >= 3, "periodic digests")
        last = pair.sent("up", "digest")[-1].body
        assert set(last.entries) == {"t-periodic"}
        assert pair.status()["reconnects"] == 1
    finally:
        pair.close()


def test_at_most_retain_finished_max_finished_records_are_kept(
    tmp_path: Path, h: MemoryHarness
) -> None:
    """A busy device would hold days of finished records (about 6.5 kB each in memory):
    beyond the newest ``retain_finished_max`` acknowledged ones, the oldest are forgotten,
    whatever their age; unfinished work is never counted out."""
    pair = AgentPair(
        h,
        tmp_path,
        autonomy={"retain_finished_s": 0.0, "retain_finished_max": 2, "antientropy_s": 0.5},
    )
    try:
        pair.connect()
        pair.submit(spec("t-busy", ["sleep", "30"]))
        for i in range(4):
            pair.submit(spec(f"t-{i}", ["true"]))
            pair.run_until(lambda i=i: pair.upstream(f"t-{i}") == "succeeded", "success upstream")
        pair.skip_until(lambda: pair.task_status("t-1") is None, "the oldest forgotten")
        rows = pair.agent.core.journal.db.execute("SELECT task_id FROM records").fetchall()
        assert sorted(rows) == [("t-2",), ("t-3",), ("t-busy",)]
        assert pair.task_status("t-busy") == "running"
        assert pair.upstream("t-0") == "succeeded"  # the controller keeps its copy
    finally:
        pair.close()


def test_finished_acknowledged_records_are_forgotten_after_the_retention(
    tmp_path: Path, h: MemoryHarness
) -> None:
    """Retention keeps a device's journal and digests bounded: a finished record the
    controller acknowledged leaves the agent after ``retain_finished_s``; running work and
    the controller's copy stay, and the controller's digests do not bring it back."""
    pair = AgentPair(h, tmp_path, autonomy={"retain_finished_s": 1.0, "antientropy_s": 0.5})
    try:
        pair.connect()
        pair.submit(spec("t-done", ["true"]))
        pair.submit(spec("t-busy", ["sleep", "30"]))
        pair.run_until(lambda: pair.upstream("t-done") == "succeeded", "success upstream")
        pair.run_until(lambda: pair.task_status("t-done") is None, "the record forgotten")
        rows = pair.agent.core.journal.db.execute("SELECT task_id FROM records").fetchall()
        assert rows == [("t-busy",)]
        assert pair.task_status("t-busy") == "running"
        assert pair.upstream("t-done") == "succeeded"
        (event,) = pair.events("records_forgotten")
        assert event["count"] == 1
        # The next digests no longer name it, and nothing brings it back.
        digests = len(pair.sent("up", "digest"))
        pair.skip_until(lambda: len(pair.sent("up", "digest")) > digests + 1, "later digests")
        assert set(pair.sent("up", "digest")[-1].body.entries) == {"t-busy"}
        assert pair.task_status("t-done") is None
    finally:
        pair.close()
