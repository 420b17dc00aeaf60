"""One task attempt's processes: spawn with its containment, find its tree, end it, and read
back what it left.

Standard library only, and no ``pathlib`` (like ``_safefs`` and ``_cgroup``): the supervisor
(``supervisor.py``, a script run with ``python -S``) imports it from its own directory. The
supervisor is the parent of every task and a *child subreaper*, so a task's ``setsid`` daemons
stay its descendants; where a cgroup v2 is writable each attempt also runs in a cgroup of its
own, which is what tells one attempt's escapees from another's. Without one an attempt's tree
is its leader's descendants, its session and process group, and the supervisor's orphans that
still carry the attempt's marker in their environment (see :func:`tree`).
"""

from __future__ import annotations

import contextlib
import functools
import marshal
import os
import resource
import signal
import socket
import sys

import _cgroup  # the supervisor's directory is sys.path[0]
import _child
import _safefs
from _child import drop_to, exec_child

__all__ = [
    "Forker",
    "harvest_child",
    "limit_reason",
    "orphans",
    "release",
    "signal_tree",
    "spawn",
    "tree",
]

PR_SET_CHILD_SUBREAPER = 36
_RLIMITS = {
    "as": resource.RLIMIT_AS,
    "cpu": resource.RLIMIT_CPU,
    "fsize": resource.RLIMIT_FSIZE,
    "nproc": resource.RLIMIT_NPROC,
}
# What a process that hit RLIMIT_AS / RLIMIT_FSIZE says before exiting: the kernel reports
# these breaches to the process (ENOMEM, EFBIG), not to its parent.
_MEMORY_SIGNS = ("MemoryError", "Cannot allocate memory", "out of memory", "bad_alloc")
_FSIZE_SIGNS = ("File too large",)
_FORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_forker.py")
#: The longest a launch waits for the forker's answer (it takes well under a millisecond): the
#: supervisor's loop, its fences and timeouts included, waits meanwhile, so a stuck forker
#: costs them at most this once (it is then stopped, and the supervisor forks for itself).
_ANSWER_S = 0.25
libc = _child.libc


class Forker:
    """The supervisor's end: start the forker, ask it for children."""

    def __init__(self) -> None:
        self.pid = 0
        self._sock: socket.socket | None = None
        self._ready = False  # it said so: its interpreter has started

    def start(self, env: dict[str, str]) -> None:
        """Start the forker (best effort: without one, tasks are forked by the supervisor)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            theirs.set_inheritable(True)
            argv = [sys.executable, "-S", "-E", _FORKER, str(theirs.fileno())]
            self.pid = os.posix_spawn(sys.executable, argv, env)
        except OSError:
            ours.close()
            return
        finally:
            theirs.close()
        ours.settimeout(_ANSWER_S)
        self._sock = ours

    @property
    def running(self) -> bool:
        """Whether children are asked of the forker (until it fails once)."""
        return self._sock is not None

    def ready(self) -> bool:
        """Whether the forker has started and said so (looked at without waiting: the
        interpreter's start takes tens of milliseconds, longer on a busy host, and the
        supervisor forks for itself meanwhile rather than wait or give the forker up)."""
        sock = self._sock
        if sock is None or self._ready:
            return self._ready and sock is not None
        try:
            word = sock.recv(32, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            word = b""
        if word != b"ready":
            self.stop()
            return False
        self._ready = True
        return True

    def spawn(self, task: tuple, fds: tuple[int, ...], cgroup: str | None) -> int | None:
        """The pid of a child made by the forker for ``task`` with ``fds``
        (``_tasktree.exec_child``'s arguments; the gate -1 when there is none), born in
        ``cgroup``; ``None`` when it could not make one: not ready yet, or failed (the
        forker is then stopped: a child it made late holds only these descriptors, which the
        caller closes)."""
        if not self.ready():
            return None
        sock = self._sock
        assert sock is not None
        try:
            sent = [fd for fd in fds if fd >= 0]
            socket.send_fds(sock, [marshal.dumps((task, cgroup))], sent)
            pid = int(sock.recv(32))
        except (OSError, ValueError):  # TimeoutError included: a stopped forker
            pid = -1
        if pid > 0:
            return pid
        self.stop()
        return None

    def stop(self) -> None:
        """Stop using the forker: it exits on the closed socket (SIGKILL when it is stuck;
        ``pid`` is 0 once the supervisor reaped it, so no reused pid is ever signalled)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.pid > 0:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)

    def exited(self) -> None:
        """The supervisor reaped the forker: no more requests, no signal to its pid."""
        self.pid = 0
        self.stop()


@functools.lru_cache(maxsize=256)
def _candidates(name: str, path: str | None) -> tuple[str, ...]:
    """Where the child looks for ``name`` (in order), for a ``PATH`` of ``path``."""
    if "/" in name:
        return (name,)
    dirs = os.get_exec_path({} if path is None else {"PATH": path})
    return tuple(os.path.join(d, name) for d in dirs)


def _from_first_present(paths: tuple[str, ...]) -> tuple[str, ...]:
    """``paths`` from the first one that exists on: the ones before it would only fail in
    the child with ``ENOENT``/``ENOTDIR``, each failure an exception raised in a forked
    interpreter, whose every touched page is a copy (with a dozen ``PATH`` entries before
    ``/usr/bin`` that was most of a spawn's cost). Looked up here, on each spawn (never
    cached: a program may be installed or removed at any time), and only skipped when
    certainly absent: a name the parent may not look at is still tried by the child, which
    therefore tries exactly what it tried before, in the same order, and fails the same
    way when nothing is there (``paths`` whole)."""
    for index, path in enumerate(paths):
        try:
            os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            pass
        return paths[index:]
    return paths


@functools.cache
def _devnull() -> int:
    """One ``/dev/null`` for every task's stdin (close-on-exec here; ``dup2`` gives each
    child its own inheritable copy), not an ``open`` per spawn."""
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


def spawn(
    spec: dict,
    work_fd: int,
    ids: tuple[int, int] | None,
    cgroup: str | None,
    *,
    gate: bool = False,
    forker: Forker | None = None,
) -> tuple[int, ...]:
    """Fork and exec the task in a session of its own: ``(pid, stdout fd, stderr fd, exec
    fd)``; the call does not wait for the exec (the supervisor goes on meanwhile). With
    ``gate`` a fifth descriptor comes back: the child waits before its exec until
    :func:`release` is called on it (the supervisor names the attempt's pid and cgroup in
    ``started.json`` first, so nothing of the task runs before the agent could find it), and
    exits 137 without exec'ing if the descriptor is closed unreleased (the supervisor died).

    With a running ``forker`` (``_forker.py``) the child is made by that small process, as
    a child of ours all the same, born in ``cgroup``; else (none, or it failed) by a fork of
    this process. Either way the child does what :func:`_child.exec_child` says, and an exec
    failure comes back as text on the exec fd (a close-on-exec pipe: it reads end-of-file
    once the exec happened), the child exiting 127."""
    argv, env = spec["argv"], spec["env"]
    # The PATH search happens here: after the switch to the task's user the child may not
    # read the interpreter's own modules (os.get_exec_path imports one).
    paths = _from_first_present(_candidates(argv[0], env.get("PATH")))
    limits = [
        (_RLIMITS[name], (soft, hard)) for name, (soft, hard) in (spec.get("limits") or {}).items()
    ]
    task = (argv, env, paths, limits, ids, os.getpid())
    pid = None
    if forker is not None and gate:  # a child made too late exits at its closed gate
        pipes = _pipes(gate)
        pid = forker.spawn(task, _child_fds(pipes, work_fd), cgroup)
        if pid is None:  # fresh pipes below: a child the forker made late has only these
            for fd in pipes:
                if fd >= 0:
                    os.close(fd)
    if pid is None:
        pipes = _pipes(gate)
        procs = None if cgroup is None else _cgroup.procs_file(cgroup)
        # Made here, not in the child: every object the forked child makes costs copied pages.
        failure: OSError = FileNotFoundError(2, "No such file or directory", argv[0])
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child execs or exits
            try:
                if gate:
                    os.close(pipes[7])
                exec_child(task, _child_fds(pipes, work_fd), procs, failure)
            finally:
                os._exit(127)
    out_r, out_w, err_r, err_w, fail_r, fail_w, gate_r, gate_w = pipes
    for fd in (out_w, err_w, fail_w):
        os.close(fd)
    if gate:
        os.close(gate_r)
        return pid, out_r, err_r, fail_r, gate_w
    return pid, out_r, err_r, fail_r


def _pipes(gate: bool) -> tuple[int, ...]:
    """A spawn's pipes, read end first: stdout, stderr, exec (close-on-exec, PEP 446: EOF
    means the exec happened), and the gate (-1, -1 without one)."""
    return (*os.pipe(), *os.pipe(), *os.pipe(), *(os.pipe() if gate else (-1, -1)))


def _child_fds(pipes: tuple[int, ...], work_fd: int) -> tuple[int, ...]:
    """:func:`_child.exec_child`'s descriptors from :func:`_pipes`'."""
    return (_devnull(), pipes[1], pipes[3], pipes[5], work_fd, pipes[6])


def release(gate: int) -> None:
    """Let a child spawned with ``gate`` go on to its exec."""
    with contextlib.suppress(OSError):  # it died already: its exit is reported as usual
        os.write(gate, b"1")
    os.close(gate)


def _children(pid: int) -> list[int]:
    """The children of ``pid`` (every thread's: ``/proc/PID/task/*/children``)."""
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as fh:
                kids += [int(word) for word in fh.read().split()]
        except OSError:
            continue
    return kids


def _below(roots: list[int]) -> list[int]:
    """``roots`` and all their descendants."""
    found, todo = set(roots), list(roots)
    while todo:
        for kid in _children(todo.pop()):
            if kid not in found:
                found.add(kid)
                todo.append(kid)
    return sorted(found)


def tree(leader: int, cgroup: str | None, marker: bytes, others: set[int]) -> list[int]:
    """The attempt's live processes: its cgroup's members when it has one (one file read).
    ``leader``: the task's pid while it is not reaped, else 0 (a reaped pid may be reused).

    Otherwise the leader's descendants and those of the supervisor's orphans (a subreaper
    inherits every process whose parent died: a ``setsid`` daemon lands here) that are not
    one of ``others`` (other attempts' leaders and helpers) and carry ``marker``
    (``KEY=value``) in their environment. A daemon that both escapes and clears its
    environment is only told from another attempt's by a cgroup (docs/agent.md); it is
    still killed once no attempt runs (:func:`orphans`)."""
    pids = _cgroup.members(cgroup) if cgroup is not None else None
    if pids is not None:
        return pids
    strays = [
        pid
        for pid in _children(os.getpid())
        if pid != leader and pid not in others and _cgroup.carries(pid, marker)
    ]
    return _below([pid for pid in (leader, *strays) if pid > 0])


def orphans(others: set[int]) -> list[int]:
    """The supervisor's descendants that belong to no attempt it runs (``others``: the live
    attempts' leaders and helpers): leftovers, killed when nothing else runs."""
    return _below([pid for pid in _children(os.getpid()) if pid not in others])


def signal_tree(pids: list[int], pgid: int, sig: int, cgroup: str | None) -> None:
    """Signal the task's group and every process of its tree (``setsid`` daemons included);
    SIGKILL goes to the whole cgroup at once when the attempt has one."""
    if sig == signal.SIGKILL and cgroup is not None and _cgroup.kill(cgroup):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def limit_reason(code: int, stderr: str, limits: dict, cpu_s: float) -> str | None:
    """Which rlimit ended the task, when one did (``code`` as ``Popen.returncode``; a shell
    whose child died of a signal exits with 128 + its number; ``cpu_s``: the leader's CPU)."""
    if "cpu" in limits and (
        code in (-signal.SIGXCPU, 128 + signal.SIGXCPU)
        or (code == -signal.SIGKILL and cpu_s >= limits["cpu"][0])
    ):
        return "cpu_limit"
    if "fsize" in limits and (
        code in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ)
        or (code > 0 and any(sign in stderr for sign in _FSIZE_SIGNS))
    ):
        return "file_size_limit"
    if "as" in limits and code != 0 and any(sign in stderr for sign in _MEMORY_SIGNS):
        return "memory_limit"
    return None


def harvest_child(work_fd: int, ids: tuple[int, int] | None, limit: int) -> tuple[int, int]:
    """Fork a reader that takes ``output.json`` from the work directory and then empties it,
    with the task's own rights (the supervisor may be root; the directory and everything in it
    are the task's, so a link to a file the task may not read yields nothing and root never
    walks what the task left). ``(pid, read end)``: the output (at most ``limit`` bytes)
    arrives on the pipe; exit status 0 means it is complete. The child imports nothing: the
    interpreter's files may not be readable by the task's user."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child exits without returning
        code = 1
        try:
            os.close(rfd)
            if ids is not None:
                drop_to(ids)
            data = _safefs.read_file_at(work_fd, "output.json", limit)
            with contextlib.suppress(Exception):  # best effort: never at the cost of the output
                _safefs.empty_dir(work_fd)
            if data is not None:
                view = memoryview(data)
                while view:
                    view = view[os.write(wfd, view) :]
                code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    return pid, rfd
