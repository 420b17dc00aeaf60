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
