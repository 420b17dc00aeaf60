"""Containment through a real agent (issue 11): a placed task's ``setsid`` daemon ends with the
controller's cancel, and a task that outgrows its ``memory_mb`` fails with the reason
``memory_limit`` in its record, upstream too."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from agent_harness import AgentFactory, ScriptedCloud, place, spec, wait_until

from shared.crdt import AttemptStatus

pytestmark = [pytest.mark.e2e, pytest.mark.broker]

PY = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
DAEMON = (
    "import os, time\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork():\n"
    "        os._exit(0)\n"
    "    open('daemon.pid.tmp', 'w').write(str(os.getpid()))\n"
    "    os.rename('daemon.pid.tmp', 'daemon.pid')\n"
    "    time.sleep(300)\n"
    "    os._exit(0)\n"
    "time.sleep(300)\n"
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_cancel_ends_a_placed_tasks_setsid_daemon(
    cloud: ScriptedCloud, make_agent: AgentFactory
) -> None:
    agent = make_agent().start()
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    place(cloud, "edge-1", spec("t-daemon", [PY, "-c", DAEMON]))
    pid_files = wait_until(
        lambda: list(Path(agent.state_dir / "runs").glob("t-daemon--*/work/daemon.pid")),
        20,
        "the daemon to start",
    )
    daemon = int(pid_files[0].read_text())
    assert _alive(daemon)
    cloud.cancel("edge-1", "t-daemon", epoch=1, reason="operator")
    wait_until(lambda: cloud.status("t-daemon") == "cancelled", 20, "the cancel upstream")
    wait_until(lambda: not _alive(daemon), 20, "the setsid daemon to end with the attempt")


def test_a_memory_breach_fails_the_task_with_memory_limit(
    cloud: ScriptedCloud, make_agent: AgentFactory
) -> None:
    agent = make_agent().start()
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    hog = spec(
        "t-hog",
        [PY, "-c", "x = bytearray(300 * 1024 * 1024)"],
        resources={"memory_mb": 64},
        retry={"max_attempts": 1},
    )
    place(cloud, "edge-1", hog)
    wait_until(lambda: agent.task_status("t-hog") == "failed", 30, "the breach to fail the task")

    def upstream() -> list[tuple[AttemptStatus, str | None]]:
        rec = cloud.record("t-hog")
        return [] if rec is None else [(a.status, a.reason) for a in rec.attempts.values()]

    wait_until(lambda: upstream() == [(AttemptStatus.FAILED, "memory_limit")], 20, "the report")
