"""The supervisor's forker (edge_agent/_forker.py, issue 14): tasks are made by a small process,
as the supervisor's own children (``CLONE_PARENT``), born in their attempt's cgroup; a forker
that is gone or stuck costs nothing but speed (the supervisor forks itself, as before); the
forker outlives each attempt and ends with its supervisor."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_agent_executor import _launch, _wait

import edge_agent
from edge_agent import _cgroup
from edge_agent.config import ExecutorConfig
from edge_agent.executor import Executor
from edge_agent.telemetry import FORKER_NAME, OwnUsage

HERE = str(Path(edge_agent.__file__).parent)


def _python_only(tmp_path: Path) -> str:
    """The supervisor's scripts without the compiled part (``_spawnc``): there the forker
    makes its children in Python, as on a host where the install could not compile it."""
    where = tmp_path / "python-only"
    where.mkdir()
    for script in Path(HERE).glob("*.py"):
        shutil.copy(script, where / script.name)
    return str(where)


@pytest.fixture(params=["compiled", "python"])
def forker_dir(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the forker's scripts are taken from: this checkout (with ``_spawnc`` where it
    was compiled) or a copy without it."""
    return HERE if request.param == "compiled" else _python_only(tmp_path)


def test_the_compiled_part_is_built_where_a_compiler_is() -> None:
    """``pip install`` compiles ``_spawnc.c`` when it can (optional in pyproject.toml): a
    checkout whose install had a compiler must have it, or tasks quietly cost twice as much."""
    if shutil.which("cc") is None:
        pytest.skip("no C compiler here: the forker makes its children in Python")
    from edge_agent import _spawnc

    assert callable(_spawnc.spawn)


# Spawns ``sh -c 'echo $PPID'`` gated through a forker four times: through one that has not
# said it is ready (a socket nobody answers on), through a started one once it is ready, then
# with it stopped (SIGSTOP: the request times out) or killed; prints per spawn the child's
# exit code, whether its parent is us, and whether that forker is still in use.
SPAWN = """
import os, signal, socket, sys, time
sys.path.insert(0, sys.argv[1])
import _tasktree
work = os.open(sys.argv[2], os.O_RDONLY)
silent, unanswered = _tasktree.Forker(), socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
silent._sock = unanswered[0]
forker = _tasktree.Forker()
forker.start({"PATH": "/usr/bin:/bin"})
first = forker.pid
def run(forker):
    spec = {"argv": ["sh", "-c", "echo $PPID"], "env": {"PATH": "/usr/bin:/bin"}, "limits": {}}
    pid, out, err, exec_fd, gate = _tasktree.spawn(spec, work, None, None, gate=True, forker=forker)
    _tasktree.release(gate)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    said = os.read(out, 100).decode().strip()
    for fd in (out, err, exec_fd):
        os.close(fd)
    return [code, said == str(os.getpid()), forker.running]
results = [run(silent)]
end = time.monotonic() + 30
while not forker.ready():
    assert time.monotonic() < end, "the forker never said it is ready"
    time.sleep(0.01)
results.append(run(forker))
os.kill(first, signal.SIGSTOP if sys.argv[3] == "stop" else signal.SIGKILL)
results.append(run(forker))
while True:  # reap the forker and anything its late child left
    try:
        pid, _ = os.waitpid(-1, 0)
    except ChildProcessError:
        break
    if pid == first:
        forker.exited()
print(results, forker.pid)
"""


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_a_forker_makes_the_callers_children_and_a_lost_one_is_not_needed(
    tmp_path: Path, how: str, forker_dir: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-S", "-E", "-c", SPAWN, forker_dir, str(tmp_path), how],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    # Not ready: the task runs by our own fork, and that forker is still to be asked later.
    # Ready: made by the forker (still in use after it, so it answered with a pid), a child
    # of ours. Then the forker is lost: the spawn still runs the task, as our child, by our
    # own fork, and the forker is no longer asked (stopped, its pid forgotten once reaped).
    results, _, pid = done.stdout.strip().rpartition(" ")
    assert results == "[[0, True, True], [0, True, True], [0, True, False]]"
    assert pid == "0"


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _forkers(supervisor: int) -> list[int]:
    return [
        kid
        for kid in _children(supervisor)
        if b"_forker.py" in Path(f"/proc/{kid}/cmdline").read_bytes()
    ]


def _forker_of(supervisor: int) -> int:
    """The supervisor's forker, once it started it (right after saying it is ready)."""
    end = time.monotonic() + 30
    while not (forkers := _forkers(supervisor)):
        assert time.monotonic() < end, "no forker"
        time.sleep(0.02)
    (forker,) = forkers
    return forker


def _gone(pid: int) -> bool:
    """Exited (a zombie not yet reaped counts: the test process is the supervisor's parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def test_the_forker_outlives_each_attempt_and_ends_with_its_supervisor(tmp_path: Path) -> None:
    """Tasks are the supervisor's children, in their own cgroups where there are some; the
    forker is not one of the leftovers killed when nothing runs, and it exits with the
    supervisor."""
    ex = Executor(tmp_path / "runs", ExecutorConfig(run_as="", kill_grace_s=0.5))
    supervisor = ex.supervisor_pid()
    forker = _forker_of(supervisor)
    for n in range(2):
        script = "echo $PPID; cat /proc/self/cgroup"
        ex.launch(_launch(f"t-{n}", ["sh", "-c", script]))
        (outcome,) = _wait(ex)
        assert outcome.succeeded, outcome
        ppid, *cgroups = outcome.stdout_tail.split()
        assert int(ppid) == supervisor
        if _cgroup.own_dir() is not None and os.access(_cgroup.own_dir() or "", os.W_OK):
            assert any(f"/{_cgroup.PREFIX}{supervisor}-" in line for line in cgroups), cgroups
        ex.cleanup(outcome.task_id, outcome.attempt)
        assert _forkers(supervisor) == [forker]  # nothing ran: leftovers were killed, not it
    ex.close()
    end = time.monotonic() + 30
    while not (_gone(supervisor) and _gone(forker)):
        assert time.monotonic() < end, "the supervisor or its forker did not exit"
        time.sleep(0.05)


def test_the_forker_is_no_task_in_what_the_tasks_use(tmp_path: Path) -> None:
    """The forker names itself ``telemetry.FORKER_NAME``; the CPU the tasks use
    (``OwnUsage``, read for admission) counts a running task, not the forker."""
    ex = Executor(tmp_path / "runs", ExecutorConfig(run_as="", kill_grace_s=0.5))
    supervisor = ex.supervisor_pid()
    forker = _forker_of(supervisor)
    end = time.monotonic() + 30
    while _comm(forker) != FORKER_NAME:
        assert time.monotonic() < end, "the forker never named itself"
        time.sleep(0.02)
    launch = _launch("t-sleep", ["sleep", "30"])
    ex.launch(launch)
    end = time.monotonic() + 30
    # Until its exec a child the forker made still bears the forker's name: wait for it.
    while not (tasks := [kid for kid in _children(supervisor) if _comm(kid) == "sleep"]):
        assert time.monotonic() < end, "the task never started"
        time.sleep(0.02)
    counted = {pid for pid, _ in OwnUsage(lambda: supervisor)._read() or {}}
    assert tasks[0] in counted and forker not in counted
    ex.stop(launch.attempt, "cancelled")
    (outcome,) = _wait(ex)
    assert outcome.reason == "cancelled"
    ex.close()


def test_a_task_holds_only_its_standard_streams(tmp_path: Path) -> None:
    """Nothing of the forker's (its socket: a task could ask it for a child) nor of the
    supervisor's reaches a task: its shell has descriptors 0, 1 and 2 only."""
    ex = Executor(tmp_path / "runs", ExecutorConfig(run_as="", kill_grace_s=0.5))
    _forker_of(ex.supervisor_pid())
    ex.launch(_launch("t-fds", ["sh", "-c", "ls /proc/$$/fd"]))
    (outcome,) = _wait(ex)
    assert outcome.succeeded, outcome
    assert sorted(outcome.stdout_tail.split()) == ["0", "1", "2"]
    ex.close()


def test_a_supervisor_whose_forker_died_still_runs_tasks(tmp_path: Path) -> None:
    ex = Executor(tmp_path / "runs", ExecutorConfig(run_as="", kill_grace_s=0.5))
    supervisor = ex.supervisor_pid()
    forker = _forker_of(supervisor)
    os.kill(forker, signal.SIGKILL)
    end = time.monotonic() + 30
    while forker in _children(supervisor):  # reaped by the supervisor's loop
        assert time.monotonic() < end, "the forker was not reaped"
        time.sleep(0.05)
    ex.launch(_launch("t-after", ["sh", "-c", "echo $PPID"]))
    (outcome,) = _wait(ex)
    assert outcome.succeeded, outcome
    assert int(outcome.stdout_tail.split()[0]) == supervisor
    ex.close()


# Spawns each of the specs given as JSON through a ready forker and prints, per spec, the
# child's exit code, its stdout and what its exec pipe said (a failure before the exec).
SPAWN_EACH = """
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
import _tasktree
work = os.open(sys.argv[2], os.O_RDONLY)
forker = _tasktree.Forker()
forker.start({"PATH": "/usr/bin:/bin"})
end = time.monotonic() + 30
while not forker.ready():
    assert time.monotonic() < end, "the forker never said it is ready"
    time.sleep(0.01)
results = []
for spec in json.loads(sys.argv[3]):
    pid, out, err, exec_fd, gate = _tasktree.spawn(spec, work, None, None, gate=True, forker=forker)
    _tasktree.release(gate)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    said = os.read(exec_fd, 4096).decode()
    results.append([code, os.read(out, 4096).decode(), said])
    for fd in (out, err, exec_fd):
        os.close(fd)
assert forker.running, "the forker failed: its children were not its own"
print(json.dumps(results))
"""


def _spawn_each(forker_dir: str, work: Path, specs: list[dict]) -> list[list]:
    done = subprocess.run(
        [sys.executable, "-S", "-E", "-c", SPAWN_EACH, forker_dir, str(work), json.dumps(specs)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_what_fails_before_the_exec_reads_the_same_either_way(
    tmp_path: Path, forker_dir: str
) -> None:
    """A program that is nowhere, one that is not executable, an environment the exec
    refuses: the task's spawn failure says so in the words of the Python child's exception,
    whether the forker's child was made by the compiled part or in Python; a program found
    first on PATH but not runnable, then runnable further on, runs."""
    plain = tmp_path / "plain-file"
    plain.write_text("not a program\n")
    (tmp_path / "first").mkdir()
    shutil.copy(plain, tmp_path / "first" / "sh")  # found first on PATH, not runnable
    env = {"PATH": "/usr/bin:/bin"}
    specs = [
        {"argv": ["no-such-program-here"], "env": env},
        {"argv": [str(plain)], "env": env},
        {"argv": ["true"], "env": {**env, "A=B": "c"}},
        {"argv": ["sh", "-c", "echo ran"], "env": env},
        {"argv": ["sh", "-c", "echo ran"], "env": {"PATH": f"{tmp_path / 'first'}:/usr/bin"}},
    ]
    assert _spawn_each(forker_dir, tmp_path, specs) == [
        [127, "", "FileNotFoundError: [Errno 2] No such file or directory: 'no-such-program-here'"],
        [127, "", f"PermissionError: [Errno 13] Permission denied: '{plain}'"],
        [127, "", "ValueError: illegal environment variable name"],
        [0, "ran\n", ""],
        [0, "ran\n", ""],  # the next one on PATH ran: the refusal before it is no failure
    ]


def test_a_task_starts_with_every_signal_at_its_default(tmp_path: Path, forker_dir: str) -> None:
    """Our Python processes ignore SIGPIPE and SIGXFSZ (the forker SIGTERM too) and an exec
    keeps what is ignored: a task must not inherit that (a stop's SIGTERM would go
    unheard until the SIGKILL, ``yes | head`` would not end by SIGPIPE)."""
    spec = {"argv": ["sh", "-c", "grep SigIgn /proc/self/status"], "env": {"PATH": "/usr/bin"}}
    ((code, out, _),) = _spawn_each(forker_dir, tmp_path, [spec])
    assert code == 0
    ignored = int(out.split()[1], 16)
    for sig in (signal.SIGPIPE, signal.SIGTERM, signal.SIGXFSZ, signal.SIGINT, signal.SIGHUP):
        assert not ignored & (1 << (sig - 1)), (sig, out)
