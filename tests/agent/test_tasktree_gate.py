"""The spawn gate (edge_agent/_tasktree.py): a task spawned with ``gate`` execs only once the
supervisor released it (after naming it in ``started.json``), never if the supervisor closed
the gate unreleased (it died)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import edge_agent

GATE = """
import os, sys
sys.path.insert(0, sys.argv[1])
import _tasktree
work = os.open(sys.argv[2], os.O_RDONLY)
def run(name, release):
    spec = {"argv": ["touch", name], "env": {"PATH": "/usr/bin:/bin"}, "limits": {}}
    pid, out, err, exec_fd, gate = _tasktree.spawn(spec, work, None, None, gate=True)
    if release:
        _tasktree.release(gate)
    else:
        os.close(gate)
    for fd in (out, err, exec_fd):
        os.close(fd)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
print(run("released", True), run("closed", False))
"""


def test_a_gated_task_execs_only_once_released(tmp_path: Path) -> None:
    here = str(Path(edge_agent.__file__).parent)
    done = subprocess.run(
        [sys.executable, "-c", GATE, here, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == ["0", "137"]
    assert (tmp_path / "released").exists()
    assert not (tmp_path / "closed").exists()


SEARCH = """
import os, sys
sys.path.insert(0, sys.argv[1])
import _tasktree
work = os.open(sys.argv[2], os.O_RDONLY)
def run(name, path):
    spec = {"argv": [name], "env": {"PATH": path}, "limits": {}}
    pid, out, err, exec_fd = _tasktree.spawn(spec, work, None, None)
    failure = os.read(exec_fd, 4096).decode()
    for fd in (out, err, exec_fd):
        os.close(fd)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), failure
print(repr([run(*case) for case in eval(sys.argv[3])]))
"""


def test_the_path_search_is_the_same_with_absent_entries_skipped(tmp_path: Path) -> None:
    """The parent skips the ``PATH`` entries where the program certainly is not (issue 14:
    each was a failed exec in the forked child); what runs, or how it fails, is unchanged:
    the first entry holding the name wins, one that holds it unrunnable is passed over as
    before, and a name found nowhere fails as ``FileNotFoundError`` (exit 127)."""
    here = str(Path(edge_agent.__file__).parent)
    work = tmp_path / "work"
    work.mkdir()
    blocked, good = tmp_path / "blocked", tmp_path / "good"
    blocked.mkdir()
    good.mkdir()
    (blocked / "job").write_text("not runnable\n")  # no x bit: EACCES, passed over
    (good / "job").write_text("#!/bin/sh\ntouch ran\n")
    (good / "job").chmod(0o755)
    absent = ":".join(str(tmp_path / f"none{i}") for i in range(5))
    cases = [
        ("job", f"{absent}:{blocked}:{good}:/usr/bin:/bin"),
        ("no-such-program-here", f"{absent}:/usr/bin:/bin"),
    ]
    done = subprocess.run(
        [sys.executable, "-c", SEARCH, here, str(work), repr(cases)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (ran, ran_failure), (missing, missing_failure) = eval(done.stdout)
    assert (ran, ran_failure) == (0, "")
    assert (work / "ran").exists()
    assert missing == 127 and missing_failure.startswith("FileNotFoundError")
