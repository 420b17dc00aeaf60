"""A cgroup v2 per task attempt, where the host gives the agent a writable one.

Standard library only: the supervisor imports it from its own directory (like ``_safefs``), the
executor as ``edge_agent._cgroup``. Only process *tracking* is used (no controllers need to be
enabled): every process of the attempt is born in ``<the supervisor's cgroup>/continuum-<pid>-<n>``
whatever session or parent it moves to, and ``cgroup.kill`` ends them all at once, even when
the supervisor itself is gone. Where there is no cgroup v2, or it is not writable (an agent that
is not root, ``ProtectControlGroups``), every function here says so and the supervisor's
subreaper does the job alone (``_tasktree.py``).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import time
from typing import TypeGuard

__all__ = [
    "PREFIX",
    "carries",
    "create",
    "enter",
    "enter_procs",
    "is_ours",
    "kill",
    "members",
    "own_dir",
    "procs_file",
    "remove",
    "try_remove",
]

PREFIX = "continuum-"


@functools.cache
def own_dir() -> str | None:
    """The directory of this process's cgroup v2, ``None`` without a cgroup v2 mount. Read
    once per process (the supervisor creates a cgroup per attempt beside it): a process is
    not moved to another cgroup under the agent's feet."""
    try:
        with open("/proc/self/cgroup", encoding="ascii") as fh:
            relative = next(line[3:].strip() for line in fh if line.startswith("0::"))
        with open("/proc/self/mountinfo", encoding="utf-8") as fh:
            mounts = [
                left.split()[4]
                for left, _, right in (line.partition(" - ") for line in fh)
                if right.split()[:1] == ["cgroup2"]
            ]
    except (OSError, StopIteration, IndexError):
        return None
    if not mounts:
        return None
    path = os.path.join(mounts[0], relative.lstrip("/"))
    return path if os.path.isdir(path) else None


def create(name: str) -> str | None:
    """A new cgroup ``PREFIX + name`` beside this process's, or ``None`` where not possible.

    Names carry the supervisor's pid, and pids are reused: a cgroup left by an earlier
    process of the same pid (killed, its tree not yet gone) must not cost this attempt
    its containment, so a taken name gets a random suffix instead."""
    base = own_dir()
    if base is None:
        return None
    # The random suffixes are drawn only when a name is taken (three getrandom calls for
    # every attempt otherwise).
    for suffix in itertools.chain(("",), (f"-{os.urandom(4).hex()}" for _ in range(3))):
        path = os.path.join(base, PREFIX + name + suffix)
        try:
            os.mkdir(path, 0o755)
            break
        except FileExistsError:
            continue
        except OSError:
            return None
    else:
        return None
    if not _kill_supported(path):  # before Linux 5.14
        remove(path)
        return None
    return path


_KILL_SEEN: list[bool] = []  # cgroup.kill was there once: the kernel has it (no stat each)


def _kill_supported(path: str) -> bool:
    if _KILL_SEEN:
        return True
    if os.path.exists(os.path.join(path, "cgroup.kill")):
        _KILL_SEEN.append(True)
        return True
    return False


def procs_file(path: str) -> str:
    """The file a process writes its pid to to move into the cgroup ``path``."""
    return os.path.join(path, "cgroup.procs")


def enter(path: str) -> bool:
    """Move the calling process into ``path`` (its children are then born there)."""
    return enter_procs(procs_file(path))


def enter_procs(procs: str) -> bool:
    """:func:`enter` by the cgroup's ``cgroup.procs`` (:func:`procs_file`), with bare system
    calls: a task's forked child calls it, where every Python object made (a text file and
    its codec) costs page copies."""
    try:
        fd = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.write(fd, b"%d" % os.getpid())
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def is_ours(path: object) -> TypeGuard[str]:
    """Is ``path`` an attempt's cgroup beside this process's? A path read back from a run
    directory is checked before the agent kills anything in it."""
    base = own_dir()
    return (
        isinstance(path, str)
        and base is not None
        and os.path.dirname(path) == base.rstrip("/")
        and os.path.basename(path).startswith(PREFIX)
    )


def carries(pid: int, marker: bytes) -> bool:
    """Whether process ``pid`` has ``marker`` (an attempt's ``KEY=value``) in its environment.
    What tells an attempt's processes where no cgroup does (``_tasktree.tree``), and what
    the agent checks before it kills by a number it read back from a run directory: pids
    and cgroup names are reused, and start again after a reboot."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return marker in fh.read().split(b"\0")
    except OSError:
        return False


def members(path: str) -> list[int] | None:
    """The processes in the cgroup, ``None`` when it cannot be read."""
    try:
        with open(os.path.join(path, "cgroup.procs"), encoding="ascii") as fh:
            return [int(line) for line in fh if line.strip()]
    except (OSError, ValueError):
        return None


def kill(path: str) -> bool:
    """SIGKILL every process in the cgroup (``True`` when the cgroup was there)."""
    try:
        with open(os.path.join(path, "cgroup.kill"), "w", encoding="ascii") as fh:
            fh.write("1")
    except OSError:
        return False
    return True


def try_remove(path: str) -> bool:
    """Remove the cgroup if it is empty; ``True`` when it is gone."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def remove(path: str, wait_s: float = 2.0) -> None:
    """Remove the (killed) cgroup once its last process has left it (best effort)."""
    end = time.monotonic() + wait_s
    while not try_remove(path) and time.monotonic() <= end:
        with contextlib.suppress(OSError):
            kill(path)
        time.sleep(0.01)
