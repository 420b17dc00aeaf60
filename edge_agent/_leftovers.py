"""What is left of an attempt whose supervisor is gone (killed, or the machine restarted),
and how the agent ends it: every process carrying the attempt's marker, and its cgroup.

Never by a number read back alone. ``started.json`` names the attempt's process group and
cgroup, but once that group ended its number may be anyone's (pids are reused, and start
again after a reboot), and a cgroup's name (a supervisor's pid and a count) may be another
supervisor's; the agent may be root. So a process is killed only if it carries the marker,
and a cgroup only if it is empty or one of its processes does (one that cleared its
environment then stays: docs/agent.md).
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from edge_agent import _cgroup

__all__ = ["INPUTS", "kill"]

INPUTS = "inputs.json"  # the task's inputs in its run directory; the marker names them


def _marker(run_dir: Path) -> bytes:
    """The environment entry every process of the attempt inherits (``Executor.launch``)."""
    return b"CONTINUUM_INPUTS=" + os.fsencode(run_dir / INPUTS)


def kill(run_dir: Path, cgroup: object) -> bool:
    """SIGKILL what is left of the attempt of ``run_dir``: every process carrying its marker
    (its tree, ``setsid`` daemons included unless they cleared their environment), then its
    ``cgroup`` (the path ``started.json`` names, checked) killed and removed. ``True`` when
    something was there."""
    marker, killed = _marker(run_dir), False
    for name in os.listdir("/proc"):
        if name.isdigit() and _cgroup.carries(int(name), marker):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(name), signal.SIGKILL)
                killed = True
    if not _cgroup.is_ours(cgroup):
        return killed
    members = _cgroup.members(cgroup) or []
    if members and not any(_cgroup.carries(pid, marker) for pid in members):
        return killed
    if not _cgroup.kill(cgroup):
        return killed
    _cgroup.remove(cgroup)
    return True
