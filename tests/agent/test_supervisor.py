"""The task supervisor with real agents, real tasks and a real broker (issue 14): a strong task
is fenced at its lease deadline while its agent is ``kill -9``'d or ``SIGSTOP``'d, with the
whole tree (a ``setsid`` daemon grandchild included); a restarted agent re-attaches to the
attempts its supervisor still runs (and can still stop them); one supervisor serves every
task of an agent."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from agent_harness import AgentFactory, AgentProcess, ScriptedCloud, place, sh, spec, wait_until
from test_agent_e2e import shared_dir  # noqa: F401 - the fixture: a dir the task user can write

from edge_agent import _cgroup
from shared.crdt import AttemptStatus
from shared.protocol import LeaseGrant

pytestmark = [pytest.mark.e2e, pytest.mark.broker]

# The system interpreter: the test's own may sit where ``nobody`` cannot reach it.
PY = shutil.which("python3", path="/usr/bin:/bin") or sys.executable

# Ticks (CLOCK_MONOTONIC, the lease deadline's clock) into a ledger from the task and from a
# daemon it starts outside its session (setsid + double fork); both record their pids.
TICKER = """
import os, sys, time
ledger, pids = sys.argv[1], sys.argv[2]
def tick(name):
    with open(os.path.join(pids, name + ".tmp"), "w") as fh:
        fh.write(str(os.getpid()))
    os.rename(os.path.join(pids, name + ".tmp"), os.path.join(pids, name))
    while True:
        with open(ledger, "a") as fh:
            fh.write(repr(time.monotonic()) + "\\n")
        time.sleep(0.05)
if os.fork() == 0:
    os.setsid()
    if os.fork():
        os._exit(0)
    tick("daemon.pid")
tick("task.pid")
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _first_grant_only(grants: list[float]) -> Any:
    def answer(node: str, req: Any) -> LeaseGrant | None:
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

    return answer


def _start_strong_ticker(
    cloud: ScriptedCloud, agent: AgentProcess, pids: Path
) -> tuple[float, list[int], Path]:
    """Place a strong ticker on ``agent``: (its lease deadline, [task, daemon] pids, ledger)."""
    cloud.lease_answer = _first_grant_only([])
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    ledger = pids / "ledger"
    task = spec("t-fence", [PY, "-c", TICKER, str(ledger), str(pids)], consistency="strong")
    place(cloud, "edge-1", task, level="strong", lease_s=3.0)
    wait_until(lambda: agent.task_status("t-fence") == "running", 20, "the strong task to start")
    (granted,) = wait_until(lambda: agent.events("lease_granted"), 20, "the grant")
    wait_until(lambda: (pids / "daemon.pid").exists(), 20, "the daemon")
    wait_until(lambda: (pids / "task.pid").exists(), 20, "the task")
    procs = [int((pids / name).read_text()) for name in ("task.pid", "daemon.pid")]
    return float(granted["deadline"]), procs, ledger


def _check_fenced(agent: AgentProcess, cloud: ScriptedCloud, deadline: float, ledger: Path) -> None:
    """The journaled outcome: fenced at or after the deadline, and nothing ticked after it."""
    (finished,) = wait_until(lambda: agent.events("finished"), 30, "the fenced outcome")
    assert finished["reason"] == "fenced"
    assert finished["fenced_at"] >= deadline
    assert max(float(x) for x in ledger.read_text().split()) <= finished["fenced_at"]

    def upstream() -> list[tuple[AttemptStatus, str | None]]:
        rec = cloud.record("t-fence")
        return [] if rec is None else [(a.status, a.reason) for a in rec.attempts.values()]

    wait_until(lambda: upstream() == [(AttemptStatus.FAILED, "lease_expired")], 30, "upstream")


def test_a_killed_agents_strong_task_is_fenced_with_its_whole_tree(
    cloud: ScriptedCloud,
    make_agent: AgentFactory,
    shared_dir: Path,  # noqa: F811 - the imported fixture
) -> None:
    agent = make_agent().start()
    deadline, procs, ledger = _start_strong_ticker(cloud, agent, shared_dir)
    agent.kill()  # kill -9: nobody renews, nobody is left to stop the task but the supervisor
    for pid in procs:
        wait_until(lambda pid=pid: not _alive(pid), 30, f"process {pid} to be fenced")
    assert time.monotonic() >= deadline
    agent.start()  # the outcome the supervisor kept is journaled and reported
    _check_fenced(agent, cloud, deadline, ledger)


def test_a_frozen_agents_strong_task_is_fenced_with_its_whole_tree(
    cloud: ScriptedCloud,
    make_agent: AgentFactory,
    shared_dir: Path,  # noqa: F811 - the imported fixture
) -> None:
    agent = make_agent().start()
    deadline, procs, ledger = _start_strong_ticker(cloud, agent, shared_dir)
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGSTOP)
    try:
        for pid in procs:
            wait_until(lambda pid=pid: not _alive(pid), 30, f"process {pid} to be fenced")
        assert _state(agent.proc.pid) == "T"  # fenced while the agent was still frozen
    finally:
        agent.proc.send_signal(signal.SIGCONT)
    _check_fenced(agent, cloud, deadline, ledger)


def _state(pid: int) -> str:
    data = Path(f"/proc/{pid}/stat").read_text()
    return data[data.rfind(")") + 2]


def test_a_restarted_agent_reattaches_to_its_running_tasks(
    cloud: ScriptedCloud,
    make_agent: AgentFactory,
    shared_dir: Path,  # noqa: F811 - the imported fixture
) -> None:
    agent = make_agent().start()
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    go = shared_dir / "go"
    waiter = f"while [ ! -e {go} ]; do sleep 0.05; done; echo '{{\"waited\": 1}}'"
    place(cloud, "edge-1", spec("t-wait", sh(waiter)))
    place(cloud, "edge-1", spec("t-sleep", ["sleep", "300"]))
    for task_id in ("t-wait", "t-sleep"):
        wait_until(lambda t=task_id: agent.task_status(t) == "running", 20, f"{task_id} to run")
    supervisors = {row[0] for row in agent.query("SELECT watchdog_pid FROM processes")}
    assert len(supervisors) == 1  # one supervisor for every task of the agent
    (supervisor,) = supervisors
    agent.kill()
    assert _alive(supervisor)  # it outlives the agent, and its tasks run on
    agent.start()
    try:
        wait_until(lambda: len(agent.events("adopted")) == 2, 20, "both attempts re-attached")
    except AssertionError as exc:  # say what the restart did instead (a rare failure)
        kinds = agent.query("SELECT kind, task_id, data FROM events ORDER BY id")
        raise AssertionError(
            f"{exc}; the journal's events: {kinds[-30:]}\nthe log:\n{agent.log()[-8000:]}"
        ) from exc
    assert {r["task_id"] for r in agent.status()["running"]} == {"t-wait", "t-sleep"}
    cloud.cancel("edge-1", "t-sleep", epoch=1, reason="operator")  # the channel still works
    wait_until(lambda: cloud.status("t-sleep") == "cancelled", 30, "the cancel after re-attach")
    go.touch()
    wait_until(lambda: cloud.status("t-wait") == "succeeded", 30, "the re-attached success")
    rec = cloud.record("t-wait")
    assert rec is not None
    assert [a.result for a in rec.attempts.values()] == [{"waited": 1}]  # one attempt, once
    no_rows = lambda: agent.query("SELECT COUNT(*) FROM processes")[0][0] == 0  # noqa: E731
    wait_until(no_rows, 30, "both attempts' process rows to go")
    assert len(agent.events("started")) == 2  # nothing was started again


def _supervisors(agent: AgentProcess) -> list[int]:
    """The supervisor processes of ``agent``'s runs directory."""
    runs = str(agent.state_dir / "runs").encode()
    found = []
    for entry in os.listdir("/proc"):
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if runs in argv and any(arg.endswith(b"supervisor.py") for arg in argv):
            found.append(int(entry))
    return found


def test_the_supervisor_ends_once_its_agent_stopped_and_nothing_runs(
    cloud: ScriptedCloud, make_agent: AgentFactory
) -> None:
    agent = make_agent().start()
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    place(cloud, "edge-1", spec("t-quick", ["true"]))
    wait_until(lambda: cloud.status("t-quick") == "succeeded", 20, "the task")
    assert len(_supervisors(agent)) == 1
    agent.terminate()
    wait_until(lambda: not _supervisors(agent), 30, "the supervisor to exit")


def test_sigterm_with_a_frozen_supervisor_still_exits_and_the_next_start_reattaches(
    cloud: ScriptedCloud, make_agent: AgentFactory
) -> None:
    """A stop the supervisor never confirms bounds the agent's exit (the grace, then the kill
    grace and a little): the attempt stays in the journal for the next start to settle."""
    agent = make_agent(executor={"shutdown_grace_s": 0.5, "kill_grace_s": 1.0}).start()
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    place(cloud, "edge-1", spec("t-frozen", ["sleep", "300"]))
    wait_until(lambda: agent.task_status("t-frozen") == "running", 20, "the task to run")
    (supervisor,) = _supervisors(agent)
    os.kill(supervisor, signal.SIGSTOP)
    try:
        assert agent.terminate() == 0
        assert "stopping without the end of running attempts" in agent.log()
    finally:
        os.kill(supervisor, signal.SIGCONT)
    agent.start()  # the thawed supervisor carries out the stop it was sent: the task ends
    wait_until(lambda: agent.events("adopted"), 20, "the attempt re-attached")
    assert not agent.events("lost_on_restart")


def test_a_restart_kills_only_the_lost_attempts_processes_not_what_reuses_its_numbers(
    cloud: ScriptedCloud, make_agent: AgentFactory
) -> None:
    """The agent and its supervisor die (a power cut, say); the attempt's task dies with the
    supervisor, and by the restart its recorded process group and cgroup name belong to
    someone else (pids are reused, and start again after a reboot). The restart settles the
    attempt as lost and kills nothing of theirs."""
    agent = make_agent().start()
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    place(cloud, "edge-1", spec("t-gone", ["sleep", "300"]))
    wait_until(lambda: agent.task_status("t-gone") == "running", 20, "the task to run")
    found = lambda: list(agent.state_dir.glob("runs/*/started.json"))  # noqa: E731
    (started_file,) = wait_until(found, 10, "the supervisor's started.json")
    started = json.loads(started_file.read_text())
    (supervisor,) = _supervisors(agent)
    agent.kill()
    os.kill(supervisor, signal.SIGKILL)
    wait_until(lambda: not _alive(started["pid"]), 10, "the task to die with its supervisor")
    decoy = subprocess.Popen(["sleep", "300"], start_new_session=True)  # its own group
    cgroup = _cgroup.create(f"decoy-{os.getpid()}")  # None without a writable cgroup v2
    try:
        if cgroup is not None:
            Path(_cgroup.procs_file(cgroup)).write_text(str(decoy.pid))
        reused = {**started, "pid": decoy.pid, "pgid": decoy.pid, "cgroup": cgroup}
        started_file.write_text(json.dumps(reused))
        agent.start()
        wait_until(lambda: agent.events("lost_on_restart"), 20, "the attempt settled as lost")
        assert decoy.poll() is None  # neither its process group nor its cgroup was killed
        (lost,) = agent.events("lost_on_restart")
        assert lost["killed_survivors"] is False
        assert lost["supervisor"].startswith("no supervisor answered (")  # the journal says why
    finally:
        decoy.kill()
        decoy.wait()
        if cgroup is not None:
            _cgroup.remove(cgroup)


def test_a_restarted_agent_waits_for_a_frozen_supervisor_rather_than_kill_its_tasks(
    cloud: ScriptedCloud, make_agent: AgentFactory
) -> None:
    """A supervisor that runs but does not answer (frozen here for longer than one hello may
    take, 10 s) is asked again while it holds its lock: its attempts are re-attached once it
    answers, not failed and killed as the attempts of a dead one would be."""
    agent = make_agent().start()
    wait_until(lambda: cloud.messages("hello"), 10, "hello")
    place(cloud, "edge-1", spec("t-wait-for-it", ["sleep", "300"]))
    wait_until(lambda: agent.task_status("t-wait-for-it") == "running", 20, "the task to run")
    (supervisor,) = _supervisors(agent)
    agent.kill()
    os.kill(supervisor, signal.SIGSTOP)
    thaw = threading.Timer(12.0, os.kill, (supervisor, signal.SIGCONT))  # the fault's length
    thaw.start()
    try:
        agent.start(timeout=90)  # the restart sweep runs before the agent says it is ready
        assert len(agent.events("adopted")) == 1 and not agent.events("lost_on_restart")
        assert agent.task_status("t-wait-for-it") == "running"
    finally:
        thaw.cancel()
        os.kill(supervisor, signal.SIGCONT)
