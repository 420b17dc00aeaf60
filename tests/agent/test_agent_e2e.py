"""The agent end to end: real ``edge-agent run`` processes, a real Mosquitto, and a scripted
cloud speaking ``shared.protocol`` (``agent_harness``). Each test stays within ~20 s."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from agent_harness import (
    AgentFactory,
    AgentProcess,
    ScriptedCloud,
    place,
    sh,
    spec,
    wait_until,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.crdt import AttemptStatus
from shared.protocol import Cancel, Digest, LeaseGrant, LevelChange, decode_from, topic

pytestmark = [pytest.mark.e2e, pytest.mark.broker]


def retained_presence(host: str, port: int, node: str, timeout: float = 5.0) -> str:
    """What a fresh subscriber gets as the retained presence of ``node``."""
    got: list[str] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.on_connect = lambda c, *a: c.subscribe(topic(node, "presence"), qos=1)
    client.on_message = lambda c, u, msg: got.append(
        decode_from(msg.topic, msg.payload).body.status
    )
    client.connect(host, port)
    client.loop_start()
    try:
        wait_until(lambda: got, timeout, f"retained presence of {node}")
    finally:
        client.disconnect()
        client.loop_stop()
    return got[-1]


def succeeded_attempts(cloud: ScriptedCloud, task_id: str) -> list[Any]:
    rec = cloud.record(task_id)
    if rec is None:
        return []
    return [a for a in rec.attempts.values() if a.status == AttemptStatus.SUCCEEDED]


# ------------------------------------------------------------------------------------------


def test_registration_presence_and_last_will(
    cloud: ScriptedCloud, make_agent: AgentFactory, mosquitto: Any
) -> None:
    agent = make_agent().start()
    hello = wait_until(lambda: cloud.messages("hello"), 10, "hello")[0].body
    assert str(hello.tier) == "edge"
    assert hello.capacity.cpus >= 1 and hello.capacity.memory_mb > 0
    assert hello.api_port == agent.api_port
    assert retained_presence(mosquitto.host, mosquitto.port, "edge-1") == "online"
    wait_until(lambda: agent.status()["connectivity"] == "connected", 10, "connected")
    wait_until(lambda: cloud.messages("telemetry"), 10, "telemetry")
    agent.kill()  # no clean disconnect: the broker publishes the will after 1.5 keepalives
    wait_until(
        lambda: retained_presence(mosquitto.host, mosquitto.port, "edge-1") == "offline",
        10,
        "the last will",
        step=0.5,
    )


def test_sigterm_drains_and_exits_zero(
    cloud: ScriptedCloud, make_agent: AgentFactory, mosquitto: Any
) -> None:
    agent = make_agent(executor={"shutdown_grace_s": 5.0}).start()
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    place(cloud, "edge-1", spec("drain", sh("sleep 1; echo '{\"done\": true}'")))
    wait_until(lambda: agent.status()["running"], 10, "the task to start")
    assert agent.terminate() == 0
    assert cloud.status("drain") == "succeeded"  # finished within the grace, synced first
    assert retained_presence(mosquitto.host, mosquitto.port, "edge-1") == "offline"


def test_placed_task_runs_and_its_success_reaches_the_cloud(
    cloud: ScriptedCloud, make_agent: AgentFactory
) -> None:
    agent = make_agent().start()
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    place(cloud, "edge-1", spec("t-ok", sh("echo working >&2; echo '{\"answer\": 42}'")))
    wait_until(lambda: cloud.status("t-ok") == "succeeded", 10, "success at the cloud")
    (attempt,) = succeeded_attempts(cloud, "t-ok")
    assert attempt.result == {"answer": 42}
    assert attempt.exit_code == 0 and attempt.node == "edge-1" and attempt.epoch == 1
    wait_until(lambda: agent.status()["outbox_depth"] == 0, 10, "the outbox to be acknowledged")


def test_broker_stopped_mid_task_task_completes_and_syncs_when_it_returns(
    cloud: ScriptedCloud, make_agent: AgentFactory, mosquitto: Any
) -> None:
    agent = make_agent().start()
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    place(cloud, "edge-1", spec("t-cut", sh("sleep 1.5; echo '{\"v\": 1}'")))
    wait_until(lambda: agent.task_status("t-cut") == "running", 10, "the task to start")
    mosquitto.stop()
    wait_until(lambda: not agent.status()["link_up"], 10, "the agent to notice")
    wait_until(lambda: agent.task_status("t-cut") == "succeeded", 10, "local completion")
    assert agent.status()["outbox_depth"] > 0  # the success waits for an ack
    assert cloud.status("t-cut") != "succeeded"
    mosquitto.start()
    wait_until(lambda: cloud.status("t-cut") == "succeeded", 15, "the success to sync")
    wait_until(lambda: agent.status()["outbox_depth"] == 0, 10, "the outbox to drain")
    assert [a.result for a in succeeded_attempts(cloud, "t-cut")] == [{"v": 1}]


def test_kill_9_mid_task_then_restart_keeps_the_journal_and_delivers_the_outbox(
    cloud: ScriptedCloud, make_agent: AgentFactory
) -> None:
    agent = make_agent().start()
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    cloud.auto_ack = False  # the started-delta stays in the outbox
    place(cloud, "edge-1", spec("t-crash", sh("sleep 1.5; echo '{\"survived\": true}'")))
    wait_until(lambda: agent.task_status("t-crash") == "running", 10, "the task to start")
    agent.kill()
    # The journal is consistent at any kill: the record says started, the process row exists.
    (row,) = agent.query("SELECT task_id, watchdog_pid FROM processes")
    assert row[0] == "t-crash" and row[1] > 0
    assert agent.query("SELECT COUNT(*) FROM outbox")[0][0] >= 1
    time.sleep(2.0)  # the watchdog outlives the agent; the task finishes meanwhile
    cloud.auto_ack = True
    agent.start()
    wait_until(lambda: cloud.status("t-crash") == "succeeded", 15, "the success to sync")
    wait_until(lambda: agent.status()["outbox_depth"] == 0, 10, "the outbox to drain")
    assert agent.query("SELECT COUNT(*) FROM processes")[0][0] == 0
    (attempt,) = succeeded_attempts(cloud, "t-crash")  # exactly one attempt, merged once
    assert attempt.result == {"survived": True}
    rec = cloud.record("t-crash")
    assert rec is not None and len(rec.attempts) == 1
    assert agent.events("adopted") or agent.events("finished")


def test_strong_task_is_fenced_at_its_lease_deadline_and_not_before(
    cloud: ScriptedCloud, make_agent: AgentFactory
) -> None:
    grants: list[float] = []

    def first_grant_only(node: str, req: Any) -> LeaseGrant | None:
        if grants:
            return None  # renewals go unanswered: the lease must run out
        grants.append(time.monotonic())
        return LeaseGrant(
            task_id=req.task_id,
            epoch=req.epoch,
            granted=True,
            duration_s=3.0,
            request_id=req.request_id,
        )

    cloud.lease_answer = first_grant_only
    agent = make_agent().start()
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    task = spec("t-strong", ["sleep", "30"], consistency="strong")
    place(cloud, "edge-1", task, level="strong", lease_s=3.0)
    wait_until(lambda: agent.task_status("t-strong") == "running", 10, "the strong task to start")
    (granted,) = agent.events("lease_granted")
    deadline = granted["deadline"]
    # Renewals were asked for (a third into the lease) and left unanswered.
    wait_until(lambda: len(cloud.lease_requests) >= 2, 5, "a renewal request")
    (finished,) = wait_until(lambda: agent.events("finished"), 10, "the fence")
    assert finished["reason"] == "fenced"
    assert finished["fenced_at"] >= deadline  # not before the deadline
    assert finished["fenced_at"] - deadline < 1.0  # and promptly at it
    # The deadline counts from the request's send time, less the margin: before the grant's end.
    (sent_at, _), *_ = cloud.lease_requests
    assert deadline <= granted["mono"] + 3.0
    assert deadline < finished["fenced_at"] <= deadline + 1.0
    assert grants[0] >= sent_at

    def fenced_upstream() -> bool:
        rec = cloud.record("t-strong")
        return rec is not None and any(a.reason == "lease_expired" for a in rec.attempts.values())

    wait_until(fenced_upstream, 10, "the fenced attempt upstream")
    rec = cloud.record("t-strong")
    assert rec is not None
    assert [(a.status, a.reason) for a in rec.attempts.values()] == [
        (AttemptStatus.FAILED, "lease_expired")
    ]


def test_strong_task_does_not_start_without_a_lease(
    cloud: ScriptedCloud, make_agent: AgentFactory
) -> None:
    agent = make_agent().start()  # the cloud never answers lease requests
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    place(cloud, "edge-1", spec("t-nolease", ["true"], consistency="strong"), level="strong")
    wait_until(lambda: cloud.lease_requests, 10, "a lease request")
    time.sleep(1.0)
    assert agent.task_status("t-nolease") == "pending"
    assert agent.status()["running"] == []


def test_causal_task_keeps_running_through_a_partition(
    cloud: ScriptedCloud, make_agent: AgentFactory, shared_dir: Path
) -> None:
    agent = make_agent().start()  # T = 3 s: disconnected after 3 s without acks
    wait_until(lambda: agent.status()["connectivity"] == "connected", 10, "connected")
    # The task runs until the test lets it end (a condition, not a guess of how long the
    # agent takes to see the partition).
    go = shared_dir / "go"
    script = f"while [ ! -e {go} ]; do sleep 0.1; done; echo '{{\"ok\": 1}}'"
    place(cloud, "edge-1", spec("t-causal", sh(script)))
    wait_until(lambda: agent.task_status("t-causal") == "running", 10, "the task to start")
    cloud.auto_ack = False  # the controller goes silent: a partition as the agent sees it
    wait_until(
        lambda: agent.status()["connectivity"] == "disconnected", 10, "the agent to disconnect"
    )
    status = agent.status()
    assert status["autonomy"] == "fully_autonomous"
    assert [r["task_id"] for r in status["running"]] == ["t-causal"]
    go.touch()
    wait_until(lambda: agent.task_status("t-causal") == "succeeded", 10, "completion")
    kinds = [e["now"] for e in agent.events("connectivity")]
    assert kinds[-1] == "disconnected" and "connected" in kinds
    assert [e["now"] for e in agent.events("autonomy")][-1] == "fully_autonomous"
    cloud.auto_ack = True
    wait_until(lambda: cloud.status("t-causal") == "succeeded", 15, "sync after the partition")
    wait_until(lambda: agent.status()["connectivity"] == "connected", 10, "reconnected")


def test_local_submission_while_disconnected_syncs_later(
    make_agent: AgentFactory, mosquitto: Any
) -> None:
    mosquitto.stop()  # no broker at all while the work is submitted and runs
    agent = make_agent().start()
    code, body = agent.api(
        "POST", "/v1/tasks", spec("edge-1:local-1", sh("echo '{\"local\": true}'"))
    )
    assert code == 201 and body["level"] == "causal", body
    code, body = agent.api("POST", "/v1/tasks", {"command": ["true"]})  # id generated
    assert code == 201
    generated = body["id"]
    code, body = agent.api("POST", "/v1/tasks", {"id": "edge-1:bad", "command": "not a list"})
    assert code == 400
    code, body = agent.api("POST", "/v1/tasks", {"id": "elsewhere", "command": ["true"]})
    assert code == 400 and body["error"] == "invalid_id", body  # the controller would refuse it
    assert agent.task_status("elsewhere") is None
    code, body = agent.api("POST", "/v1/tasks", spec("edge-1:s", ["true"], consistency="strong"))
    assert code == 409 and body["error"] == "strong_needs_controller"
    wait_until(lambda: agent.task_status("edge-1:local-1") == "succeeded", 10, "local completion")
    wait_until(lambda: agent.task_status(generated) == "succeeded", 10, "local completion")
    assert agent.status()["connectivity"] == "disconnected"
    mosquitto.start()
    cloud = ScriptedCloud(mosquitto.host, mosquitto.port)
    try:
        wait_until(
            lambda: cloud.status("edge-1:local-1") == "succeeded", 15, "the local task upstream"
        )
        wait_until(lambda: cloud.status(generated) == "succeeded", 10, "the generated id upstream")
        rec = cloud.record("edge-1:local-1")
        assert rec is not None and rec.spec is not None and rec.spec["id"] == "edge-1:local-1"
        assert rec.placement is not None and rec.placement.node == "edge-1"
    finally:
        cloud.close()


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_types = st.sampled_from(
    [
        "place",
        "cancel",
        "lease_grant",
        "level_change",
        "ack",
        "digest",
        "deltas",
        "ping",
        "hello",
        "heartbeat",
        "bogus",
    ]
)
_bodies = st.fixed_dictionaries(
    {},
    optional={
        "task_id": st.sampled_from(["t-x", "", "../etc", "a" * 200]) | st.integers(),
        "epoch": st.integers(-5, 2**70) | st.text(max_size=3),
        "spec": _json
        | st.fixed_dictionaries(
            # never a runnable argv: the fuzzer must not execute random programs
            {
                "id": st.just("t-x"),
                "command": _json.filter(lambda v: not isinstance(v, list))
                | st.just(["/nonexistent/fuzz-binary"]),
            }
        ),
        "level": st.sampled_from(["strong", "causal", "eventual", "nope"]) | _json,
        "granted": _json,
        "duration_s": st.floats(allow_nan=True) | _json,
        "up_to_seq": st.integers(-(2**64), 2**64) | _json,
        "entries": _json,
        "records": _json,
    },
)
_envelopes = st.fixed_dictionaries(
    {
        "v": st.sampled_from([1, 1, 1, 2, 0, "1"]),
        "type": _types,
        "id": st.text(min_size=0, max_size=40),
        "from": st.sampled_from(["cloud", "edge-1", "", "x/y"]),
        "hlc": st.sampled_from(["1.0.cloud", "zz", "ffffffffffff.0.cloud"]) | st.text(max_size=10),
        "body": _bodies | _json,
    },
    optional={"seq": _json},
)
_payloads = (
    st.binary(max_size=300)
    | _json.map(lambda v: json.dumps(v).encode())
    | _envelopes.map(lambda v: json.dumps(v).encode())
    | st.just(b"{" * 10_000)
    | st.just(b" " * (300 * 1024))  # over the size limit
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stream=st.lists(_payloads, min_size=1, max_size=12))
def test_malformed_down_messages_never_crash_the_agent(
    started_agent: tuple[ScriptedCloud, AgentProcess], stream: list[bytes]
) -> None:
    cloud, agent = started_agent
    for payload in stream:
        cloud.client.publish(topic("edge-1", "down"), payload, qos=1)
    assert agent.alive
    code, _ = agent.api("GET", "/v1/status")
    assert code == 200


@pytest.fixture
def started_agent(
    cloud: ScriptedCloud, make_agent: AgentFactory
) -> Iterator[tuple[ScriptedCloud, AgentProcess]]:
    agent = make_agent().start()
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    yield cloud, agent
    # After the whole stream: still alive, rejections counted, and real work still runs.
    assert agent.alive
    counters = agent.status()["counters"]
    assert any(k.startswith("rejected_") for k in counters), counters
    place(cloud, "edge-1", spec("after-fuzz", sh("echo '{\"fine\": 1}'")), epoch=10**6)
    wait_until(lambda: cloud.status("after-fuzz") == "succeeded", 10, "work after the fuzz")


def test_invalid_spec_becomes_a_failed_attempt_upstream(
    cloud: ScriptedCloud, make_agent: AgentFactory
) -> None:
    make_agent().start()
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    bad = {"id": "t-bad", "command": "rm -rf /"}  # a shell string, not an argv list
    place(cloud, "edge-1", bad)

    def failed_upstream() -> list[Any]:
        rec = cloud.record("t-bad")
        return [] if rec is None else [a for a in rec.attempts.values() if a.reason]

    (attempt,) = wait_until(failed_upstream, 10, "the invalid_spec attempt")
    assert attempt.status == AttemptStatus.FAILED
    assert attempt.reason.startswith("invalid_spec")


def test_status_command_reports_a_running_agent(
    cloud: ScriptedCloud, make_agent: AgentFactory
) -> None:
    agent = make_agent().start()
    wait_until(lambda: agent.status()["connectivity"] == "connected", 10, "connected")
    out = subprocess.run(
        [sys.executable, "-m", "edge_agent", "status", "--config", str(agent.config_path)],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    assert "connectivity  connected" in out
    assert "autonomy      dependent" in out
    assert "outbox" in out and "last sync" in out and "running       0" in out


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the task user (``nobody`` when the tests run as root) can write."""
    path = Path(tempfile.mkdtemp(prefix="agent-e2e-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_restart_fails_lost_attempts_and_reruns_idempotent_ones(
    cloud: ScriptedCloud, make_agent: AgentFactory, shared_dir: Path
) -> None:
    agent = make_agent().start()
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    marker = shared_dir / "ran-once"
    script = f"if [ -e {marker} ]; then echo '{{\"rerun\": 1}}'; else touch {marker}; sleep 30; fi"
    place(cloud, "edge-1", spec("t-lost", sh(script), idempotent=True, retry={"backoff_s": 0.1}))
    wait_until(lambda: marker.exists(), 10, "the first attempt to start")
    agent.kill()
    # The whole attempt dies with the agent (watchdog and task): a power cut, say.
    (watchdog_pid,) = (r[0] for r in agent.query("SELECT watchdog_pid FROM processes"))
    (started,) = agent.state_dir.glob("runs/*/started.json")
    os.killpg(int(json.loads(started.read_text())["pgid"]), signal.SIGKILL)
    os.kill(watchdog_pid, signal.SIGKILL)
    agent.start()
    wait_until(lambda: cloud.status("t-lost") == "succeeded", 15, "the idempotent re-run")
    rec = cloud.record("t-lost")
    assert rec is not None
    outcomes = sorted((a.status, a.reason) for a in rec.attempts.values())
    assert outcomes == [(AttemptStatus.FAILED, "agent_restart"), (AttemptStatus.SUCCEEDED, None)]


def test_cancel_stops_a_running_task(cloud: ScriptedCloud, make_agent: AgentFactory) -> None:
    agent = make_agent().start()
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    place(cloud, "edge-1", spec("t-cancel", ["sleep", "30"]))
    wait_until(lambda: agent.task_status("t-cancel") == "running", 10, "the task to start")
    cloud.cancel("edge-1", "t-cancel", epoch=1, reason="operator")

    def cancelled_upstream() -> bool:
        rec = cloud.record("t-cancel")
        return rec is not None and any(
            a.status == AttemptStatus.CANCELLED for a in rec.attempts.values()
        )

    wait_until(cancelled_upstream, 10, "the stopped attempt upstream")
    assert cloud.status("t-cancel") == "cancelled"
    assert agent.status()["running"] == []


def test_a_cancel_for_a_replaced_epoch_stops_the_attempt_but_not_the_task(
    cloud: ScriptedCloud, make_agent: AgentFactory
) -> None:
    """The controller re-placed the task elsewhere and revokes epoch 1 here: the
    attempt stops, yet the task stays live for its new placement (the testbed caught
    tasks and their workflow dependents cancelled by a re-placement)."""
    agent = make_agent().start()
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    place(cloud, "edge-1", spec("t-moved", ["sleep", "30"]))
    wait_until(lambda: agent.task_status("t-moved") == "running", 10, "the task to start")
    cloud.send("edge-1", "cancel", Cancel(task_id="t-moved", epoch=1, reason="replaced"))

    def revoked_upstream() -> bool:
        rec = cloud.record("t-moved")
        return rec is not None and any(
            a.status == AttemptStatus.CANCELLED for a in rec.attempts.values()
        )

    wait_until(revoked_upstream, 10, "the revoked attempt upstream")
    rec = cloud.record("t-moved")
    assert rec is not None and not rec.cancel_requested
    assert cloud.status("t-moved") != "cancelled"
    assert agent.status()["running"] == []


def test_a_repeated_placement_does_not_run_the_task_again(
    cloud: ScriptedCloud, make_agent: AgentFactory
) -> None:
    """The controller re-sends a placement after a partition when it has not heard of
    the attempt; the agent already ran that epoch and must not run it twice."""
    agent = make_agent().start()
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    task = spec("t-once", ["true"])
    place(cloud, "edge-1", task)
    wait_until(lambda: cloud.status("t-once") == "succeeded", 10, "the first run")
    place(cloud, "edge-1", task)
    place(cloud, "edge-1", task)
    time.sleep(1.5)
    rec = cloud.record("t-once")
    assert rec is not None and len(rec.attempts) == 1
    assert agent.task_status("t-once") == "succeeded"


def test_a_placement_with_an_older_epoch_is_ignored(
    cloud: ScriptedCloud, make_agent: AgentFactory
) -> None:
    agent = make_agent().start()
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    place(cloud, "edge-1", spec("t-epoch", ["sleep", "30"]), epoch=5)
    wait_until(lambda: agent.task_status("t-epoch") == "running", 10, "the task to start")
    place(cloud, "edge-1", spec("t-epoch", ["sleep", "30"]), epoch=4)
    (stale,) = wait_until(lambda: agent.events("stale_placement"), 10, "the stale placement")
    assert (stale["epoch"], stale["current"]) == (4, 5)
    assert [r["epoch"] for r in agent.status()["running"]] == [5]


def _always_grant(duration_s: float) -> Callable[[str, Any], LeaseGrant]:
    def answer(node: str, req: Any) -> LeaseGrant:
        return LeaseGrant(
            task_id=req.task_id,
            epoch=req.epoch,
            granted=True,
            duration_s=duration_s,
            request_id=req.request_id,
        )

    return answer


def test_renewed_strong_task_runs_past_its_first_deadline(
    cloud: ScriptedCloud, make_agent: AgentFactory
) -> None:
    cloud.lease_answer = _always_grant(1.5)
    agent = make_agent().start()
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    task = spec("t-renew", sh("sleep 3; echo '{\"renewed\": true}'"), consistency="strong")
    place(cloud, "edge-1", task, level="strong", lease_s=1.5)
    wait_until(lambda: cloud.status("t-renew") == "succeeded", 15, "success under renewals")
    grants = agent.events("lease_granted")
    assert len(grants) >= 3  # the first grant and renewals a third into each lease
    assert grants[-1]["deadline"] > grants[0]["deadline"]


def test_downgrade_to_causal_lifts_the_fence(
    cloud: ScriptedCloud, make_agent: AgentFactory
) -> None:
    grants: list[int] = []

    def once(node: str, req: Any) -> LeaseGrant | None:
        if grants:
            return None
        grants.append(1)
        return _always_grant(2.0)(node, req)

    cloud.lease_answer = once
    agent = make_agent().start()
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    task = spec("t-down", sh("sleep 3.5; echo '{\"down\": 1}'"), consistency="adaptive")
    place(cloud, "edge-1", task, level="strong", lease_s=2.0)
    wait_until(lambda: agent.task_status("t-down") == "running", 10, "the strong start")
    cloud.send(
        "edge-1",
        "level_change",
        LevelChange(task_id="t-down", epoch=1, level="causal", reason="link degraded"),
    )
    wait_until(lambda: cloud.status("t-down") == "succeeded", 15, "success past the old deadline")
    (finished,) = agent.events("finished")
    assert finished["reason"] == "exited" and finished["fenced_at"] is None
    assert [e["level"] for e in agent.events("level_change")] == ["causal"]


def test_cloud_digest_pulls_what_it_lacks(cloud: ScriptedCloud, make_agent: AgentFactory) -> None:
    """Anti-entropy from the cloud's side: a digest that lacks a record brings the record."""
    agent = make_agent().start()
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    place(cloud, "edge-1", spec("t-ae", sh("echo '{\"ae\": 1}'")))
    wait_until(lambda: cloud.status("t-ae") == "succeeded", 10, "success")
    wait_until(lambda: agent.status()["outbox_depth"] == 0, 10, "the outbox to drain")
    with cloud.lock:
        cloud.records.clear()  # the cloud lost its state (restored from an old backup, say)
    cloud.send("edge-1", "digest", Digest(entries={}))
    wait_until(lambda: cloud.status("t-ae") == "succeeded", 10, "the record re-sent")
    rec = cloud.record("t-ae")
    assert rec is not None and rec.spec is not None  # the full record, not a delta


def test_a_failed_attempt_is_retried_with_backoff_while_partitioned(
    cloud: ScriptedCloud, make_agent: AgentFactory, shared_dir: Path
) -> None:
    agent = make_agent().start()
    wait_until(lambda: agent.status()["connectivity"] == "connected", 10, "connected")
    cloud.auto_ack = False  # the agent retries on its own: nobody re-places
    marker = shared_dir / "failed-once"
    script = f"if [ -e {marker} ]; then echo '{{\"try\": 2}}'; else touch {marker}; exit 3; fi"
    task = spec("t-retry", sh(script), retry={"max_attempts": 3, "backoff_s": 0.2})
    place(cloud, "edge-1", task)
    wait_until(lambda: agent.task_status("t-retry") == "succeeded", 15, "the retry to succeed")
    (scheduled,) = agent.events("retry_scheduled")
    assert scheduled["failures"] == 1 and scheduled["delay_s"] > 0
    cloud.auto_ack = True
    wait_until(lambda: cloud.status("t-retry") == "succeeded", 15, "sync")
    rec = cloud.record("t-retry")
    assert rec is not None
    outcomes = sorted((a.status, a.exit_code) for a in rec.attempts.values())
    assert outcomes == [(AttemptStatus.FAILED, 3), (AttemptStatus.SUCCEEDED, 0)]


def test_anti_entropy_repeats_while_connected(
    cloud: ScriptedCloud, make_agent: AgentFactory
) -> None:
    """Records the controller changed without telling the agent converge without a reconnect:
    the digest exchange repeats every ``antientropy_s``."""
    agent = make_agent(autonomy={"antientropy_s": 0.5}).start()
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    place(cloud, "edge-1", spec("t-periodic", ["true"]))
    wait_until(lambda: cloud.status("t-periodic") == "succeeded", 10, "success")
    wait_until(lambda: len(cloud.messages("up", "digest")) >= 3, 10, "periodic digests")
    last = cloud.messages("up", "digest")[-1].body
    assert set(last.entries) == {"t-periodic"}
    assert agent.status()["reconnects"] == 1


def test_finished_acknowledged_records_are_forgotten_after_the_retention(
    cloud: ScriptedCloud, make_agent: AgentFactory
) -> None:
    """Retention keeps a device's journal and digests bounded: a finished record the
    controller acknowledged leaves the agent after ``retain_finished_s``; running work and
    the controller's copy stay."""
    agent = make_agent(autonomy={"retain_finished_s": 1.0, "antientropy_s": 0.5}).start()
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    place(cloud, "edge-1", spec("t-done", ["true"]))
    place(cloud, "edge-1", spec("t-busy", ["sleep", "30"]))
    wait_until(lambda: cloud.status("t-done") == "succeeded", 10, "success upstream")
    wait_until(lambda: agent.task_status("t-done") is None, 10, "the record forgotten")
    assert agent.query("SELECT task_id FROM records") == [("t-busy",)]
    assert agent.task_status("t-busy") == "running"
    assert cloud.status("t-done") == "succeeded"
    (event,) = agent.events("records_forgotten")
    assert event["count"] == 1
    # The next digests no longer name it, and nothing brings it back.
    wait_until(
        lambda: set(cloud.messages("up", "digest")[-1].body.entries) == {"t-busy"},
        10,
        "a digest without the forgotten record",
    )
    assert agent.task_status("t-done") is None


def test_rows_sent_before_the_cloud_subscribed_are_sent_again(
    make_agent: AgentFactory, mosquitto: Any
) -> None:
    """No ack ever came (the controller was not listening when the agent flushed): the rows
    are re-sent after a period, without waiting for a reconnect."""
    agent = make_agent().start()
    wait_until(lambda: agent.status()["link_up"], 10, "the link")
    code, _ = agent.api("POST", "/v1/tasks", spec("edge-1:early", sh("echo '{\"early\": 1}'")))
    assert code == 201
    wait_until(lambda: agent.task_status("edge-1:early") == "succeeded", 10, "local completion")
    wait_until(lambda: agent.status()["outbox_depth"] > 0, 5, "unacknowledged rows")
    cloud = ScriptedCloud(mosquitto.host, mosquitto.port)  # subscribes only now
    try:
        wait_until(lambda: cloud.status("edge-1:early") == "succeeded", 10, "the re-sent rows")
        wait_until(lambda: agent.status()["outbox_depth"] == 0, 10, "the outbox to drain")
        assert agent.status()["reconnects"] == 1
    finally:
        cloud.close()
