"""Task containment with real processes (issue 11): the whole task tree ends with the attempt
(``setsid`` daemons included) on finish, timeout and cancel; rlimits from the spec's resources
are enforced and a breach fails with its own reason; files in a run directory are never opened
through a symlink the task planted, nor as root on a task-owned path; run directories are
private."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_agent_e2e import shared_dir  # noqa: F401 - the fixture: a dir the task user can write
from test_agent_executor import _launch  # one builder of test launches

from edge_agent import _cgroup
from edge_agent.config import ExecutorConfig
from edge_agent.executor import Executor, Outcome

# The system interpreter: the test's own may sit where ``nobody`` cannot reach it.
PY = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")

# A daemon that escapes the task's session and process group (setsid + double fork) and
# records its pid in ``argv[2]``, a directory the test owns outside the task's ``work/`` (which
# is emptied when the attempt ends: a pid file there may be gone before the test reads it);
# the task waits for it, then either ends at once or keeps running.
DAEMON = """
import os, sys, time
pid_file = os.path.join(sys.argv[2], "daemon.pid")
if os.fork() == 0:
    os.setsid()
    if os.fork():
        os._exit(0)
    for fd in (0, 1, 2):
        os.close(fd)
    with open(pid_file + ".tmp", "w") as fh:
        fh.write(str(os.getpid()))
    os.rename(pid_file + ".tmp", pid_file)
    time.sleep(300)
    os._exit(0)
while not os.path.exists(pid_file):
    time.sleep(0.01)
print("ready", flush=True)
if sys.argv[1] == "stay":
    time.sleep(300)
"""


def _wait(ex: Executor, limit: float = 60.0) -> Outcome:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        done = ex.poll()
        if done:
            return done[0]
        time.sleep(0.02)
    raise AssertionError(f"the attempt did not end within {limit} s")


def _wait_for(path: Path, limit: float = 30.0) -> None:
    end = time.monotonic() + limit
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.02)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture(params=["self", "nobody"])
def ex(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Executor]:
    """Tasks as the test's own user, and (as root) as ``nobody``."""
    if request.param == "nobody" and os.geteuid() != 0:
        pytest.skip("switching users needs root")
    run_as = "" if request.param == "self" else "nobody"
    executor = Executor(tmp_path / "runs", ExecutorConfig(run_as=run_as, kill_grace_s=0.5))
    yield executor
    for running in list(executor.running.values()):
        executor.stop(running.attempt, "cancelled")


def _daemon_pid(pid_dir: Path) -> int:
    pid_file = pid_dir / "daemon.pid"
    _wait_for(pid_file)
    return int(pid_file.read_text())


@pytest.mark.parametrize("end", ["finish", "timeout", "cancel"])
def test_a_setsid_daemon_ends_with_the_attempt(
    ex: Executor,
    end: str,
    shared_dir: Path,  # noqa: F811 - the imported fixture
) -> None:
    mode = "leave" if end == "finish" else "stay"
    timeout = 3.0 if end == "timeout" else 60.0
    argv = [PY, "-c", DAEMON, mode, str(shared_dir)]
    running = ex.launch(_launch(f"t-{end}", argv, timeout_s=timeout))
    daemon = _daemon_pid(shared_dir)
    if end != "finish":  # on finish the attempt may already be over: the pid file is the proof
        assert not _gone(daemon)
    if end == "cancel":
        assert ex.stop(running.attempt, "cancelled")
    out = _wait(ex)
    assert out.reason == {"finish": "exited", "timeout": "timeout", "cancel": "cancelled"}[end]
    assert _gone(daemon), f"the setsid daemon {daemon} outlived the attempt ({end})"


def test_memory_limit_breach_fails_with_its_reason(ex: Executor) -> None:
    hog = "x = bytearray(300 * 1024 * 1024); print('allocated')"
    ex.launch(_launch("t-mem", [PY, "-c", hog], resources={"memory_mb": 64}))
    out = _wait(ex)
    assert out.reason == "memory_limit" and not out.succeeded
    assert "allocated" not in out.stdout_tail


def test_the_same_allocation_fits_a_larger_request(ex: Executor) -> None:
    hog = "x = bytearray(300 * 1024 * 1024); print('allocated')"
    ex.launch(_launch("t-mem-ok", [PY, "-c", hog], resources={"memory_mb": 1024}))
    out = _wait(ex)
    assert out.succeeded and "allocated" in out.stdout_tail


@pytest.mark.parametrize("shell", ["exec ", ""])  # the writer itself, or a shell's child
def test_file_size_limit_breach_fails_with_its_reason(ex: Executor, shell: str) -> None:
    writer = ["/bin/sh", "-c", f"{shell}head -c 5000000 /dev/zero > big"]
    ex.launch(_launch("t-fsize", writer, resources={"disk_mb": 1}))
    out = _wait(ex)
    assert out.reason == "file_size_limit" and not out.succeeded


def test_rlimits_follow_the_spec_resources(ex: Executor) -> None:
    resources = {"memory_mb": 128, "disk_mb": 10, "cpu": 2.0}
    ex.launch(_launch("t-lim", ["cat", "/proc/self/limits"], resources=resources, timeout_s=10.0))
    out = _wait(ex)
    limits = {line[:26].strip(): line[26:].split()[:2] for line in out.stdout_tail.splitlines()[1:]}
    assert limits["Max address space"] == [str(128 << 20)] * 2
    assert limits["Max file size"] == [str(10 << 20)] * 2
    assert limits["Max cpu time"][0] == str(2 * 10 + 1)  # timeout x cores (+1 s)
    separate_user = ex.cfg.run_as != ""
    assert (limits["Max processes"] == ["256", "256"]) == separate_user


@pytest.fixture
def root_only_file() -> Iterator[Path]:
    """A file only root may read or write, somewhere every user can reach."""
    fd, name = tempfile.mkstemp(prefix="continuum-victim-")
    os.write(fd, b"TOP SECRET\n")
    os.close(fd)
    os.chmod(name, 0o600)
    yield Path(name)
    os.unlink(name)


@ROOT_ONLY
def test_output_symlink_to_a_root_only_file_is_not_the_result(
    ex: Executor, root_only_file: Path
) -> None:
    script = f"ln -s {root_only_file} output.json"
    ex.launch(_launch("t-outlink", ["/bin/sh", "-c", script]))
    out = _wait(ex)
    assert out.succeeded and out.result is None
    assert root_only_file.read_text() == "TOP SECRET\n"


def test_an_output_fifo_does_not_hang_the_supervisor(ex: Executor) -> None:
    ex.launch(_launch("t-fifo", ["/bin/sh", "-c", "mkfifo output.json && echo '{\"v\": 1}'"]))
    out = _wait(ex, limit=30)
    assert out.succeeded and out.result == {"v": 1}


@ROOT_ONLY
def test_a_planted_status_tmp_symlink_is_never_written_through(
    ex: Executor,
    root_only_file: Path,
    shared_dir: Path,  # noqa: F811 - the imported fixture
) -> None:
    """With no agent connected, the supervisor writes the outcome to ``status.json.tmp`` and
    renames it: a task that links that name (or ``started.json.tmp``) to a root-only file must
    not have it overwritten. As ``nobody`` the task cannot even create the link (the run
    directory is not its own)."""
    go = shared_dir / "go"
    script = (
        f"ln -s {root_only_file} ../status.json.tmp; "
        f"ln -s {root_only_file} ../started.json.tmp; "
        "ls -l ../status.json.tmp >/dev/null 2>&1 && echo planted || echo refused; "
        f"while [ ! -e {go} ]; do sleep 0.05; done"
    )
    running = ex.launch(_launch("t-statuslink", ["/bin/sh", "-c", script]))
    ex.close()  # the agent goes away: the supervisor keeps the outcome on disk
    go.touch()
    status = running.run_dir / "status.json"
    _wait_for(status)
    again = Executor(ex.runs_dir, ex.cfg)  # a restarted agent harvests it
    assert again.adopt(running.task_id, running.attempt, running.watchdog_pid) is not None
    out = _wait(again)
    assert out.succeeded
    assert out.stdout_tail.strip() == ("planted" if ex.cfg.run_as == "" else "refused")
    assert root_only_file.read_text() == "TOP SECRET\n"
    assert stat.S_ISREG(status.lstat().st_mode)
    assert not (running.run_dir / "status.json.tmp").exists()


def test_run_directory_modes_and_owners(ex: Executor) -> None:
    running = ex.launch(_launch("t-modes", ["sleep", "30"], inputs={"dep": {"v": 1}}))
    _wait_for(running.run_dir / "started.json")
    try:
        task_user = pwd.getpwnam(ex.cfg.run_as) if ex.cfg.run_as else None
        uid = os.geteuid() if task_user is None else task_user.pw_uid
        run_dir = running.run_dir.stat()
        runs = ex.runs_dir.stat()
        expected_dir_mode = 0o700 if task_user is None else 0o710
        for info in (run_dir, runs):
            assert stat.S_IMODE(info.st_mode) == expected_dir_mode
            assert info.st_uid == os.geteuid()
            if task_user is not None:
                assert info.st_gid == task_user.pw_gid
        work = (running.run_dir / "work").stat()
        assert stat.S_IMODE(work.st_mode) == 0o700 and work.st_uid == uid
        inputs = (running.run_dir / "inputs.json").stat()
        assert stat.S_IMODE(inputs.st_mode) == 0o400 and inputs.st_uid == uid
        for path in (running.run_dir / "started.json", ex.runs_dir / "supervisor.sock"):
            info = path.lstat()
            assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.geteuid()
    finally:
        ex.stop(running.attempt, "cancelled")
        with contextlib.suppress(AssertionError):
            _wait(ex)


def _has_cgroups() -> bool:
    path = _cgroup.create(f"probe-{os.getpid()}")
    if path is None:
        return False
    _cgroup.remove(path)
    return True


NEEDS_CGROUP = pytest.mark.skipif(not _has_cgroups(), reason="no writable cgroup v2 here")


@NEEDS_CGROUP
def test_a_taken_cgroup_name_still_gives_a_new_cgroup() -> None:
    """A stale cgroup of an earlier process with the same pid (pids are reused) does not
    leave the next attempt without one."""
    stale = _cgroup.create(f"stale-{os.getpid()}")
    assert stale is not None
    try:
        fresh = _cgroup.create(f"stale-{os.getpid()}")
        assert fresh is not None and fresh != stale
        assert os.path.basename(fresh).startswith(os.path.basename(stale) + "-")
        assert _cgroup.is_ours(fresh)
        _cgroup.remove(fresh)
    finally:
        _cgroup.remove(stale)


@NEEDS_CGROUP
def test_each_attempt_has_its_own_cgroup(ex: Executor) -> None:
    running = ex.launch(_launch("t-cg", ["cat", "/proc/self/cgroup"]))
    out = _wait(ex)
    (line,) = [x for x in out.stdout_tail.splitlines() if x.startswith("0::")]
    cgroup = os.path.basename(line)
    assert cgroup.startswith(_cgroup.PREFIX)
    assert cgroup == os.path.basename(
        json.loads((running.run_dir / "started.json").read_text())["cgroup"]
    )
    own = _cgroup.own_dir()
    assert own is not None and not os.path.exists(os.path.join(own, cgroup))  # removed


@NEEDS_CGROUP
def test_a_task_that_kills_its_supervisor_leaves_no_daemon(
    tmp_path: Path,
    shared_dir: Path,  # noqa: F811 - the imported fixture
) -> None:
    """Only a task running as the agent's own user can signal its supervisor; the subreaper is
    then gone, but the attempt's cgroup still holds the daemon and the agent kills it."""
    ex = Executor(tmp_path / "runs", ExecutorConfig(run_as="", kill_grace_s=0.5))
    script = DAEMON.replace('print("ready", flush=True)', "os.kill(os.getppid(), 9)")
    ex.launch(_launch("t-rogue", [PY, "-c", script, "stay", str(shared_dir)]))
    daemon = _daemon_pid(shared_dir)
    out = _wait(ex)
    assert out.reason == "lost"
    end = time.monotonic() + 20
    while not _gone(daemon):
        assert time.monotonic() < end, f"the daemon {daemon} outlived its lost supervisor"
        time.sleep(0.05)


def test_the_work_directory_is_emptied_as_the_tasks_user(ex: Executor) -> None:
    """What the task left (files, directories, a link to a system file) is removed by the
    supervisor with the task's rights before the outcome is reported; the link's target stays."""
    passwd = Path("/etc/passwd").read_bytes()
    script = (
        "mkdir -p d/e && touch d/e/f && ln -s /etc/passwd link && ln -s /etc d/etc && "
        "echo '{\"v\": 1}' > output.json"
    )
    running = ex.launch(_launch("t-leftovers", ["/bin/sh", "-c", script]))
    out = _wait(ex)
    assert out.succeeded and out.result == {"v": 1}
    assert list((running.run_dir / "work").iterdir()) == []
    assert Path("/etc/passwd").read_bytes() == passwd


# Without a cgroup: a process that becomes a child subreaper (as the supervisor is) starts an
# attempt whose daemon leaves its session, and a process of another attempt beside it; the
# attempt's tree is found by its marker and ended, the other process is left alone.
NO_CGROUP_TREE = """
import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
import _tasktree
_tasktree.libc.prctl(_tasktree.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
py, daemon, pid_dir = sys.argv[2], sys.argv[3], sys.argv[4]
work = os.open(pid_dir, os.O_RDONLY)
def start(marker, argv):
    env = {"PATH": "/usr/bin:/bin", "CONTINUUM_INPUTS": marker}
    pid, *fds = _tasktree.spawn({"argv": argv, "env": env, "limits": {}}, work, None, None)
    for fd in fds:
        os.close(fd)
    return pid
leader = start("/a/inputs.json", [py, "-c", daemon, "leave", pid_dir])
other = start("/b/inputs.json", ["sleep", "60"])
os.waitpid(leader, 0)  # the leader is gone; its daemon is now this process's child
found = _tasktree.tree(leader, None, b"CONTINUUM_INPUTS=/a/inputs.json", {other})
mine = int(open(os.path.join(pid_dir, "daemon.pid")).read())
assert mine in found and other not in found, (mine, other, found)
_tasktree.signal_tree(found, leader, signal.SIGKILL, None)
assert os.waitpid(mine, 0)[0] == mine  # killed, and reaped here
assert os.waitpid(other, os.WNOHANG) == (0, 0)  # still running
os.kill(other, signal.SIGKILL)
print("ok")
"""


def test_without_a_cgroup_the_tree_is_found_by_its_marker(shared_dir: Path) -> None:  # noqa: F811
    edge_agent_dir = str(Path(_cgroup.__file__).parent)
    out = subprocess.run(
        [PY, "-S", "-c", NO_CGROUP_TREE, edge_agent_dir, PY, DAEMON, str(shared_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.stdout.strip() == "ok", out.stderr


def test_a_descendant_holding_the_output_pipes_ends_with_the_leader(
    ex: Executor,
    shared_dir: Path,  # noqa: F811 - the imported fixture
) -> None:
    """The leader exits while a child it left keeps its stdout and stderr open: the attempt
    still ends (the supervisor kills what holds the pipes once a pass has read what was
    pending, issue 14), as ``exited`` with the leader's code, and the child with it."""
    pid_file = shared_dir / "holder.pid"
    script = f"sleep 300 & echo $! > {pid_file}.tmp && mv {pid_file}.tmp {pid_file}; exit 3"
    ex.launch(_launch("t-holder", ["/bin/sh", "-c", script], timeout_s=60.0))
    out = _wait(ex, limit=30.0)
    assert (out.reason, out.exit_code) == ("exited", 3)
    holder = int(pid_file.read_text())
    end = time.monotonic() + 10
    while not _gone(holder):  # the kill is sent before the outcome; the reaping follows
        assert time.monotonic() < end, f"the pipe holder {holder} outlived the attempt"
        time.sleep(0.02)


def _spares(ex: Executor) -> list[str]:
    return sorted(name for name in os.listdir(ex.runs_dir) if name.startswith(".spare-"))


@NEEDS_CGROUP
def test_an_acknowledged_run_directory_is_reused_exactly_as_a_new_one(ex: Executor) -> None:
    """Issue 14: the supervisor takes an acknowledged attempt's directory over (kept as a
    spare, not removed by the agent) and a later launch reuses it: same inode, yet made as
    a new one (modes, owners, an empty ``work/``, its own inputs, ``started.json`` naming
    its own pid), nothing of the earlier attempt left in it."""
    used = "cat ../inputs.json; echo '{\"r\": 1}' > output.json; echo x > stray.txt"
    first = ex.launch(_launch("t-used", ["/bin/sh", "-c", used], inputs={"n": 1}))
    done = _wait(ex)
    assert done.succeeded and done.stdout_tail.strip() == '{"n": 1}'
    inode = first.run_dir.stat().st_ino
    first_pid = json.loads((first.run_dir / "started.json").read_text())["pid"]
    ex.cleanup(first.task_id, first.attempt)
    end = time.monotonic() + 30
    while first.run_dir.exists() or not _spares(ex):  # renamed by the supervisor on the ack
        assert time.monotonic() < end, "the acknowledged directory was not kept"
        time.sleep(0.02)
    check = "cat ../inputs.json; ls -A"  # from work/: the test's own dirs may be closed
    second = ex.launch(_launch("t-next", ["/bin/sh", "-c", check], inputs={"n": 2}))
    out = _wait(ex)
    assert out.succeeded and out.stdout_tail.strip() == '{"n": 2}'  # work/ held nothing
    assert second.run_dir.stat().st_ino == inode and _spares(ex) == []
    task_user = pwd.getpwnam(ex.cfg.run_as) if ex.cfg.run_as else None
    uid = os.geteuid() if task_user is None else task_user.pw_uid
    info = second.run_dir.stat()
    assert stat.S_IMODE(info.st_mode) == (0o700 if task_user is None else 0o710)
    work = (second.run_dir / "work").stat()
    assert stat.S_IMODE(work.st_mode) == 0o700 and work.st_uid == uid
    inputs = (second.run_dir / "inputs.json").stat()
    assert stat.S_IMODE(inputs.st_mode) == 0o400 and inputs.st_uid == uid
    started = json.loads((second.run_dir / "started.json").read_text())
    assert started["pid"] != first_pid
    assert sorted(os.listdir(second.run_dir)) == ["inputs.json", "started.json", "work"]
    ex.cleanup(second.task_id, second.attempt)


def test_a_failed_spawn_leaves_its_directory_to_the_agent(ex: Executor) -> None:
    """What the supervisor does not keep (here: an exec that failed) the agent removes."""
    running = ex.launch(_launch("t-noexec", ["no-such-program-anywhere"]))
    assert _wait(ex).reason == "spawn_failed"
    ex.cleanup(running.task_id, running.attempt)
    end = time.monotonic() + 30
    while running.run_dir.exists():
        assert time.monotonic() < end, "the failed attempt's directory was not removed"
        time.sleep(0.02)
    assert _spares(ex) == []
