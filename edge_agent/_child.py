"""What a task's process does between its fork and its exec (``_tasktree.spawn``).

Standard library only, and as little of it as possible: the supervisor's forker
(``_forker.py``) imports this module, and every module it holds is memory that each of its
forks maps again.
"""

from __future__ import annotations

import _signal  # not signal: its enums are memory that every fork maps
import contextlib
import ctypes
import os
import resource

import _cgroup  # the supervisor's directory is sys.path[0]

__all__ = ["drop_to", "exec_child", "libc"]

PR_SET_PDEATHSIG = 1
_SIGKILL = 9  # signal.SIGKILL, without the signal module's enums (nor converting one here)
libc = ctypes.CDLL(None, use_errno=True)


def drop_to(ids: tuple[int, int]) -> None:
    os.setgroups([])
    os.setresgid(ids[1], ids[1], ids[1])
    os.setresuid(ids[0], ids[0], ids[0])


def exec_child(task: tuple, fds: tuple[int, ...], procs: str | None, failure: OSError) -> None:
    """The child's side of :func:`_tasktree.spawn` (never returns): ``task`` is ``(argv, env, exec
    paths, rlimits, ids, parent pid)``, ``fds`` ``(stdin, stdout, stderr, exec fd, work
    directory, gate or -1)``. In this order: into the attempt's cgroup (``procs``, unless it
    was born there) while still privileged (every descendant is then born there), the task's
    user, umask 022, the rlimits, then ``PR_SET_PDEATHSIG`` (a credential change would reset
    it): the task dies with the supervisor (``parent``). It starts in the work directory
    (never a path a task could swap). First of all, every signal's disposition is set back
    to the default: an exec keeps what is ignored, and our Python processes ignore SIGPIPE
    and SIGXFSZ (the forker SIGTERM too), which a task must not inherit (``_spawnc.c`` does
    the same)."""
    try:
        argv, env, paths, limits, ids, parent = task
        null, out_w, err_w, fail_w, work_fd, gate_r = fds
        for sig in range(1, _signal.NSIG):  # a task starts with every disposition the
            with contextlib.suppress(OSError, ValueError):  # default, not with what we
                _signal.signal(sig, _signal.SIG_DFL)  # ignore (SIGPIPE, SIGXFSZ, SIGTERM)
        os.setsid()
        for fd, target in ((null, 0), (out_w, 1), (err_w, 2)):
            os.dup2(fd, target)
        if procs is not None:
            _cgroup.enter_procs(procs)
        if ids is not None:
            drop_to(ids)
        os.umask(0o022)  # the agent's own 077 is not the task's business
        for which, pair in limits:
            resource.setrlimit(which, pair)
        libc.prctl(PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the supervisor died before we armed the signal
            os._exit(137)
        if gate_r >= 0 and os.read(gate_r, 1) != b"1":  # died before releasing us
            os._exit(137)
        os.fchdir(work_fd)
        for path in paths:
            try:
                os.execve(path, argv, env)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:  # found but not runnable: that is the error to report
                failure = exc
        raise failure
    except BaseException as exc:
        with contextlib.suppress(BaseException):
            os.write(fail_w, f"{type(exc).__name__}: {exc}".encode("utf-8", "replace"))
    finally:
        os._exit(127)
