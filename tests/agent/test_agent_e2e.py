"""The agent end to end: real ``edge-agent run`` processes, a real Mosquitto, and a scripted
cloud speaking ``shared.protocol`` (``agent_harness``), for what needs them: registration,
the last will, SIGTERM, ``kill -9`` and restart, the watchdog's fence under a lease, the
``status`` command. The agent's behaviour where the broker is not the subject (sync,
partitions, cancels, placements, retries, digests, malformed messages) is tested on the
in-memory pair with a real controller: ``tests/pair``. Each test stays within ~20 s."""

from __future__ import annotations

import contextlib
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
    ScriptedCloud,
    place,
    sh,
    spec,
    wait_until,
)

from shared.crdt import AttemptStatus
from shared.protocol import LeaseGrant, LevelChange, decode_from, topic

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
    agent = make_agent(executor={"max_concurrent": 3}).start()
    hello = wait_until(lambda: cloud.messages("hello"), 10, "hello")[0].body
    assert str(hello.tier) == "edge"
    assert hello.capacity.cpus >= 1 and hello.capacity.memory_mb > 0
    assert hello.capacity.slots == 3  # executor.max_concurrent: what placement queues against
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


def test_sigusr1_dumps_every_threads_stack_and_the_agent_runs_on(
    cloud: ScriptedCloud, make_agent: AgentFactory
) -> None:
    """``kill -USR1`` is how an operator (or a test that timed out) sees where a stuck agent
    is: every thread's stack on stderr, and nothing else changes."""
    agent = make_agent().start()
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGUSR1)
    wait_until(lambda: "Current thread" in agent.log(), 10, "the stack dump")
    assert "_loop" in agent.log()  # the core thread, waiting on its inbox
    assert agent.alive and agent.status()["node_id"] == "edge-1"
    assert agent.terminate() == 0


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
    # The supervisor first: killed second, it could see its task die and keep that outcome
    # (exit by SIGKILL) for the restarted agent, which is not what a power cut leaves.
    os.kill(watchdog_pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):  # PR_SET_PDEATHSIG may have ended it
        os.killpg(int(json.loads(started.read_text())["pgid"]), signal.SIGKILL)
    agent.start()
    wait_until(lambda: cloud.status("t-lost") == "succeeded", 15, "the idempotent re-run")
    rec = cloud.record("t-lost")
    assert rec is not None
    outcomes = sorted((a.status, a.reason) for a in rec.attempts.values())
    assert outcomes == [(AttemptStatus.FAILED, "agent_restart"), (AttemptStatus.SUCCEEDED, None)]


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
