"""The supervisor's forker: a small process that makes the supervisor's task processes.

A script of the standard library (``python -S -E _forker.py FD``), started by the supervisor
(``_tasktree.Forker``) and importing little more than ``ctypes`` and ``_child.py`` from its
directory. Forking the supervisor itself for every task cost more than anything else about a
no-op task (issue 14): the kernel copied its page tables, every page the child's Python code
touched was copied, and the supervisor took a fault on each page it wrote after each fork.
This process holds next to nothing, so its forks are cheap, and it makes each child with
``clone3(CLONE_PARENT)``: the child is the *supervisor's* child all the same (reaped by it,
``PR_SET_PDEATHSIG`` towards it, under its subreaper), and with ``CLONE_INTO_CGROUP`` it is
born in the attempt's cgroup (no move after birth). The child then does exactly what a child
forked by the supervisor does (``_child.exec_child``). A raw ``clone3`` skips the C library's
and the interpreter's fork bookkeeping, which is safe here: this process has one thread and
holds no lock, and the child only makes system calls until it execs or exits. Where the
install compiled ``_spawnc.c`` (optional), that does the same without even copying this
process: its child shares our memory until its exec (we wait meanwhile) and sends its own
pid (:func:`_share`); this Python way stays for the requests it cannot pass.

Protocol on a socket pair (``SOCK_SEQPACKET``): once started the forker says ``ready`` (until
then the supervisor forks its tasks itself); the supervisor sends one request per task,
``marshal`` of ``(task, cgroup path or None)`` (``exec_child``'s arguments) with the child's
descriptors attached (``SCM_RIGHTS``), and reads back the child's pid as text (sent by the
forker, or by a ``_spawnc`` child itself), or ``-errno`` when none could be made. Anything
going wrong (no forker, one that died, a refusal, no answer within 0.25 s) makes
``Forker.spawn`` answer ``None`` and ``_tasktree.spawn`` fork the supervisor as before; after a
failure the forker is not used again (it is stopped).
"""

from __future__ import annotations

import _signal  # not signal nor socket: their enums are memory that every fork maps
import _socket
import array
import contextlib
import ctypes
import errno
import marshal
import os
import sys

import _child  # the supervisor's directory is sys.path[0]

try:  # compiled from _spawnc.c where the install could (optional): children made without
    import _spawnc  # copying this process (see _make)
except ImportError:
    _spawnc = None

__all__ = ["main"]

_SYS_CLONE3 = 435  # the same number on every architecture (asm-generic, Linux 5.3)
_CLONE_PARENT = 0x00008000
_CLONE_INTO_CGROUP = 0x200000000  # Linux 5.7
_FDS = 6  # stdin, stdout, stderr, exec fd, work directory, gate (or one fewer)
_MAX_REQUEST = 1 << 20
_PR_SET_NAME = 15
#: Our ``comm``: ``telemetry.FORKER_NAME``, by which the agent leaves us out of the CPU its
#: tasks use (we are the supervisor's child, but no task).
_NAME = b"continuum-fork"


class _CloneArgs(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "flags",
            "pidfd",
            "child_tid",
            "parent_tid",
            "exit_signal",
            "stack",
            "stack_size",
            "tls",
            "set_tid",
            "set_tid_size",
            "cgroup",
        )
    ]


def _serve(sock: _socket.socket) -> None:
    """Make one child per request until the supervisor closes the socket."""
    space = _socket.CMSG_SPACE(_FDS * array.array("i").itemsize)
    while True:
        msg, ancillary, _, _ = sock.recvmsg(_MAX_REQUEST, space, _socket.MSG_CMSG_CLOEXEC)
        if not msg:
            return
        fds = array.array("i")
        for level, kind, data in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        try:
            task, cgroup = marshal.loads(msg)
            child_fds = (*fds, -1) if len(fds) == _FDS - 1 else tuple(fds)
            if len(child_fds) != _FDS:
                raise ValueError("wrong descriptors")
            pid = _make(task, child_fds, cgroup, sock)
        except (ValueError, TypeError, EOFError):
            pid = -errno.EINVAL
        finally:
            for fd in fds:
                os.close(fd)
        if pid is not None:  # else the child sent its pid itself
            sock.send(b"%d" % pid)


def _make(
    task: tuple, fds: tuple[int, ...], cgroup: str | None, sock: _socket.socket
) -> int | None:
    """One child, born in ``cgroup`` when not ``None``: its pid, ``-errno`` when none was made,
    or ``None`` when the child sent its pid on ``sock`` itself (:func:`_share`)."""
    if _spawnc is not None:
        try:
            return _share(task, fds, cgroup, sock)
        except (ValueError, TypeError):
            pass  # what the compiled part cannot pass (a NUL, an "=" in a name): a Python
            # child raises it, as the task's spawn failure
        except OSError as exc:  # no stack for a child (raised before any clone)
            return -(exc.errno or errno.EINVAL)
    return _clone(task, fds, cgroup)


def _share(
    task: tuple, fds: tuple[int, ...], cgroup: str | None, sock: _socket.socket
) -> int | None:
    """A child made by ``_spawnc`` (``_spawnc.c``): it shares our memory until its exec, we
    being suspended meanwhile, so it sends its own pid (the supervisor releases its gate
    before it execs). ``None`` once it has exec'd or exited, what failed before its exec
    written on the exec pipe as a Python child writes it; ``-errno`` when none was made."""
    argv, env, paths, limits, ids, parent = task
    if any("=" in name for name in env):
        raise ValueError("illegal environment variable name")
    procs = None if cgroup is None else os.fsencode(os.path.join(cgroup, "cgroup.procs"))
    pid, error, where = _spawnc.spawn(
        [os.fsencode(arg) for arg in argv],
        [os.fsencode(name) + b"=" + os.fsencode(value) for name, value in env.items()],
        [os.fsencode(path) for path in paths],
        [(which, soft, hard) for which, (soft, hard) in limits],
        ids,
        parent,
        fds,
        procs,
        sock.fileno(),
    )
    if pid < 0:
        return pid
    if error:  # -2: before the exec; -1: no exec path found; i: exec path i
        named = () if where < -1 else (paths[where] if where >= 0 else argv[0],)
        exc = OSError(error, os.strerror(error), *named)
        with contextlib.suppress(OSError):
            os.write(fds[3], f"{type(exc).__name__}: {exc}".encode("utf-8", "replace"))
    return None


def _clone(task: tuple, fds: tuple[int, ...], cgroup: str | None) -> int:
    """One child cloned from this process (a copy of its memory), born in ``cgroup`` when
    not ``None``: its pid, or ``-errno``. A kernel without ``CLONE_INTO_CGROUP`` (before 5.7)
    refuses: there is no attempt cgroup before 5.14 (``_cgroup.create``), so that is not
    expected."""
    cgroup_fd = -1
    # No exit_signal with CLONE_PARENT: the child sends our own (SIGCHLD) to the supervisor.
    args = _CloneArgs(flags=_CLONE_PARENT)
    if cgroup is not None:
        try:
            cgroup_fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            return -(exc.errno or errno.EINVAL)
        args.flags |= _CLONE_INTO_CGROUP
        args.cgroup = cgroup_fd
    # Made here, not in the child: every object a forked child makes costs copied pages.
    failure: OSError = FileNotFoundError(errno.ENOENT, "No such file or directory", task[0][0])
    pid = _syscall(_SYS_CLONE3, ctypes.byref(args), ctypes.sizeof(args))
    if pid == 0:  # pragma: no cover - the child execs or exits
        try:
            _child.exec_child(task, fds, None, failure)
        finally:
            os._exit(127)
    if cgroup_fd >= 0:
        os.close(cgroup_fd)
    return pid if pid > 0 else -(ctypes.get_errno() or errno.EINVAL)


_syscall = _child.libc.syscall
_syscall.restype = ctypes.c_long


def main(fd: int) -> int:
    """Serve the supervisor (our parent) on ``fd``; die with it. The socket is made
    close-on-exec first: no task may inherit it (it could ask for a child as root)."""
    os.set_inheritable(fd, False)
    parent = os.getppid()
    _child.libc.prctl(_child.PR_SET_PDEATHSIG, _signal.SIGKILL, 0, 0, 0)
    _child.libc.prctl(_PR_SET_NAME, _NAME, 0, 0, 0)
    if os.getppid() != parent:
        return 0
    _signal.signal(_signal.SIGTERM, _signal.SIG_IGN)  # a service stop ends the supervisor first
    sock = _socket.socket(fileno=fd)
    with contextlib.suppress(OSError):
        sock.send(b"ready")  # the supervisor asks nothing of us before
        _serve(sock)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
