"""Per-attempt watchdog: the parent of every task process, and the fence of strong tasks.

Run as a *script* (``python -S _watchdog.py RUN_DIR``), standard library only (plus
``_safefs`` from this directory), so it starts in milliseconds and does not load the agent. It
lives in its own session, so it outlives the agent: when the agent is ``kill -9``'d the watchdog
still stops the task at its lease deadline, which is what makes fencing hold without the agent.
The task process in turn gets ``PR_SET_PDEATHSIG = SIGKILL`` towards the watchdog, so killing
the watchdog kills the task.

Containment: the watchdog is a *child subreaper* (``PR_SET_CHILD_SUBREAPER``), so every
process the task starts stays its descendant even after ``setsid`` and a double fork; where a
cgroup v2 is writable the attempt also runs in a cgroup of its own (``_cgroup.py``). When
the attempt ends for any reason (exit, timeout, cancel, fence, stop) the whole tree is
killed, not only the task's process group. The task runs with the rlimits of ``limits``
(address space, CPU seconds, file size, process count); a breach is reported as its own
reason (``memory_limit``, ``cpu_limit``, ``file_size_limit``).

Contract with the agent. RUN_DIR belongs to the agent (the task cannot write it when it runs as
another user); every file in it is opened relative to a directory descriptor without following
symlinks (``_safefs``):

- ``watch.json`` (read once): ``argv``, ``env``, ``uid``/``gid`` (or null), ``timeout_s``,
  ``deadline`` (absolute ``CLOCK_MONOTONIC`` seconds, or null = no lease), ``grace_s``,
  ``tail_bytes``, ``limits`` (``{"as"|"cpu"|"fsize"|"nproc": [soft, hard]}``),
  ``result_max`` (bytes of ``output.json`` kept).
- ``work/``: the task's working directory and ``HOME``, owned by the task's user; its
  ``output.json`` is read back and the directory emptied *as that user* (a forked child drops
  to the task's uid), so a symlink or hard link to a file the task may not read yields
  nothing, and root never walks what the task left.
- ``lease.fifo``: the agent writes lines ``deadline <monotonic seconds>``, ``deadline none`` or
  ``stop <reason>``. The watchdog opens it read-write, so it never sees end-of-file and a
  restarted agent can reopen it to renew an adopted attempt. Losing the agent keeps the last
  deadline in force: nobody renews, so the task is fenced at that deadline.
- ``started.json`` (written after spawn): ``pid``, ``pgid``, ``started``, ``cgroup`` (its
  path, or null): the agent kills that cgroup when it finds the watchdog dead.
- ``live.json`` (rewritten atomically at most every ``_LIVE_S`` while output arrives, for
  ``continuum logs`` of a running attempt, ``edge_agent/logs_serve.py``): ``stdout``,
  ``stderr`` (the current tails, bytes as latin-1 text so offsets stay exact),
  ``stdout_bytes``, ``stderr_bytes``.
- ``status.json`` (written last, atomically): ``exit_code``, ``signal``, ``reason``
  (``exited``, ``timeout``, ``fenced``, ``cancelled``, ``stopped``, ``spawn_failed``,
  ``memory_limit``, ``cpu_limit``, ``file_size_limit``), ``started``, ``ended``, ``deadline``,
  ``fenced_at``, ``stdout_tail``, ``stderr_tail`` (the last ``tail_bytes`` of each stream),
  ``stdout_bytes``, ``stderr_bytes`` (all each stream wrote), ``output`` (the text of
  ``output.json`` or null). Its presence means the attempt is over, even if the agent was
  dead when it ended.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import selectors
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable

import _cgroup  # this script's directory is sys.path[0]
import _safefs

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
WORK = "work"
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
_libc = ctypes.CDLL(None, use_errno=True)
_LIVE_S = 1.0  # live.json: at most one rewrite a second (each is synced)


def _child_setup(
    parent: int,
    limits: dict[str, list[int]],
    ids: tuple[int, int] | None,
    cgroup: str | None,
) -> Callable[[], None]:
    def set_it() -> None:
        # In the child, in this order: into the attempt's cgroup while still privileged (so
        # that every descendant is born there), then the task's user, then what a credential
        # change would reset (PDEATHSIG).
        if cgroup is not None:
            _cgroup.enter(cgroup)
        if ids is not None:
            os.setgroups([])
            os.setresgid(ids[1], ids[1], ids[1])
            os.setresuid(ids[0], ids[0], ids[0])
        os.umask(0o022)  # the agent's own 077 is not the task's business
        for name, (soft, hard) in limits.items():
            resource.setrlimit(_RLIMITS[name], (soft, hard))
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the watchdog died before we armed the signal
            os._exit(137)

    return set_it


def _descendants(root: int) -> list[int]:
    """Every live process below ``root`` (zombies excluded), from ``/proc``'s parent links."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        if fields[0] != b"Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = [root]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _tree(cgroup: str | None) -> list[int]:
    """The attempt's live processes: its cgroup's members when it has one (one file read),
    else the watchdog's descendants (a walk of ``/proc``)."""
    pids = _cgroup.members(cgroup) if cgroup is not None else None
    return _descendants(os.getpid()) if pids is None else pids


def _signal_tree(pgid: int, sig: int, cgroup: str | None) -> None:
    """Signal the task's group and every other process of the attempt (``setsid`` daemons
    included); SIGKILL goes to the whole cgroup at once when the attempt has one."""
    if sig == signal.SIGKILL and cgroup is not None and _cgroup.kill(cgroup):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    for pid in _tree(cgroup):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _end_tree(cgroup: str | None) -> None:
    """Kill and reap every remaining descendant; as a subreaper the watchdog inherits the
    orphans of each killed process, so repeat until nothing is left (bounded). The attempt's
    cgroup, if any, is killed first and removed last."""
    if cgroup is not None:
        _cgroup.kill(cgroup)
    for _ in range(1000):
        live = _tree(cgroup)
        for pid in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        reaped = 0
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                reaped += 1
        if not live and not reaped:
            break
        if live and not reaped:
            time.sleep(0.005)
    if cgroup is not None:
        _cgroup.remove(cgroup)


def _take_output(work_fd: int, limit: int) -> bytes | None:
    """``output.json`` (``None`` when absent, not a regular file or over ``limit``), then an
    empty work directory: what the task left there is not kept."""
    data = _safefs.read_file_at(work_fd, "output.json", limit)
    with contextlib.suppress(Exception):  # best effort: never at the cost of the output
        _safefs.empty_dir(work_fd)
    return data


def _harvest(work_fd: int, ids: tuple[int, int] | None, limit: int) -> str | None:
    """:func:`_take_output` with the task's own rights: the watchdog may be root, and the
    work directory and everything in it are the task's (a forked reader drops to its user
    and passes the output back through a pipe; it must import nothing: the interpreter's
    files may not be readable by that user)."""
    if ids is None:
        data = _take_output(work_fd, limit)
        return None if data is None else data.decode("utf-8", "replace")
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child exits without returning
        code = 1
        try:
            os.close(rfd)
            os.setgroups([])
            os.setresgid(ids[1], ids[1], ids[1])
            os.setresuid(ids[0], ids[0], ids[0])
            data = _take_output(work_fd, limit)
            if data is not None:
                view = memoryview(data)
                while view:
                    view = view[os.write(wfd, view) :]
                code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    chunks = []
    while chunk := os.read(rfd, 65536):
        chunks.append(chunk)
    os.close(rfd)
    _, status = os.waitpid(pid, 0)
    data = b"".join(chunks)
    ok = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and len(data) <= limit
    return data.decode("utf-8", "replace") if ok else None


def _limit_reason(code: int, stderr: str, limits: dict[str, list[int]]) -> str | None:
    """Which rlimit ended the task, when one did (``code`` as ``Popen.returncode``; a shell
    whose child died of a signal exits with 128 + its number)."""
    if "cpu" in limits and (
        code in (-signal.SIGXCPU, 128 + signal.SIGXCPU)
        or (code == -signal.SIGKILL and _cpu_spent(limits))
    ):
        return "cpu_limit"
    if "fsize" in limits and (
        code in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ)
        or (code > 0 and _says(stderr, _FSIZE_SIGNS))
    ):
        return "file_size_limit"
    if "as" in limits and code != 0 and _says(stderr, _MEMORY_SIGNS):
        return "memory_limit"
    return None


def _cpu_spent(limits: dict[str, list[int]]) -> bool:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime >= limits["cpu"][0]


def _says(text: str, signs: tuple[str, ...]) -> bool:
    return any(sign in text for sign in signs)


def _write_status(run_fd: int, name: str, data: dict) -> None:
    _safefs.write_file_at(run_fd, name, json.dumps(data).encode())


def main(run_dir: str) -> int:
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    run_fd = _safefs.open_dir(run_dir)
    raw = _safefs.read_file_at(run_fd, "watch.json", 16 << 20)
    if raw is None:
        return 2
    spec = json.loads(raw)
    tail_max = int(spec.get("tail_bytes", 4096))
    deadline = spec.get("deadline")
    grace = float(spec.get("grace_s", 5.0))
    limits: dict[str, list[int]] = spec.get("limits") or {}
    uid, gid = spec.get("uid"), spec.get("gid")
    status: dict = {"deadline": deadline, "fenced_at": None, "signal": None, "output": None}
    started = time.monotonic()
    cgroup = _cgroup.create(str(os.getpid()))
    ids = None if uid is None else (uid, gid if gid is not None else uid)
    try:
        work_fd = _safefs.open_dir(WORK, dir_fd=run_fd)
        proc = subprocess.Popen(
            spec["argv"],
            env=spec["env"],
            cwd=os.path.join(run_dir, WORK),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_child_setup(os.getpid(), limits, ids, cgroup),
        )
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        status.update(
            exit_code=None,
            reason="spawn_failed",
            started=started,
            ended=time.monotonic(),
            stdout_tail="",
            stderr_tail=f"{type(exc).__name__}: {exc}"[-tail_max:],
            stdout_bytes=0,
            stderr_bytes=0,
        )
        _end_tree(cgroup)
        _write_status(run_fd, "status.json", status)
        return 0
    pgid = proc.pid
    _write_status(
        run_fd,
        "started.json",
        {"pid": proc.pid, "pgid": pgid, "started": started, "cgroup": cgroup},
    )
    timeout_at = started + float(spec["timeout_s"])
    fifo = os.open("lease.fifo", os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW, dir_fd=run_fd)
    if not stat.S_ISFIFO(os.fstat(fifo).st_mode):
        raise SystemExit(f"{run_dir}/lease.fifo is not a FIFO")
    sel = selectors.DefaultSelector()
    tails = {"stdout": bytearray(), "stderr": bytearray()}
    written = {"stdout": 0, "stderr": 0}  # all a stream wrote: the tail keeps its end
    assert proc.stdout is not None and proc.stderr is not None
    sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
    sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
    sel.register(fifo, selectors.EVENT_READ, "fifo")
    pending = b""
    reason = "exited"
    kill_at: float | None = None  # after SIGTERM: when SIGKILL follows
    live_at: float | None = None  # output arrived: when live.json is next rewritten

    def on_term(signum: int, frame: object) -> None:
        # Someone stops the watchdog itself (service stop): take the task's tree down with it.
        nonlocal reason, kill_at
        if reason == "exited":
            reason, kill_at = "stopped", time.monotonic() + grace
            _signal_tree(pgid, signal.SIGTERM, cgroup)

    signal.signal(signal.SIGTERM, on_term)
    open_pipes = 2
    while True:
        now = time.monotonic()
        if proc.poll() is not None and open_pipes == 0:
            break
        if reason == "exited":
            if deadline is not None and now >= deadline:
                reason, status["fenced_at"] = "fenced", now
                _signal_tree(pgid, signal.SIGKILL, cgroup)  # the lease is over: no grace past it
            elif now >= timeout_at:
                reason, kill_at = "timeout", now + grace
                _signal_tree(pgid, signal.SIGTERM, cgroup)
        if kill_at is not None and now >= kill_at:
            _signal_tree(pgid, signal.SIGKILL, cgroup)
            kill_at = None
        wake = [timeout_at, now + 0.5]
        if deadline is not None and reason == "exited":
            wake.append(deadline)
        if kill_at is not None:
            wake.append(kill_at)
        if live_at is not None and now >= live_at:
            live: dict[str, object] = {k: bytes(v).decode("latin-1") for k, v in tails.items()}
            live.update({f"{k}_bytes": n for k, n in written.items()})
            with contextlib.suppress(OSError):  # a full disk costs the live view, not the task
                _write_status(run_fd, "live.json", live)
            live_at = None
        if live_at is not None:
            wake.append(live_at)
        if proc.poll() is not None and open_pipes:
            # The leader exited but a descendant still holds the pipes: end the tree.
            _signal_tree(pgid, signal.SIGKILL, cgroup)
        for key, _ in sel.select(max(0.0, min(wake) - now)):
            if key.data == "fifo":
                try:
                    pending += os.read(fifo, 4096)
                except BlockingIOError:
                    continue
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    word, _, arg = line.decode("ascii", "replace").strip().partition(" ")
                    if word == "deadline" and reason == "exited":
                        deadline = None if arg == "none" else float(arg)
                        status["deadline"] = deadline
                    elif word == "stop" and reason == "exited":
                        reason, kill_at = (arg or "cancelled"), time.monotonic() + grace
                        _signal_tree(pgid, signal.SIGTERM, cgroup)
                continue
            chunk = os.read(key.fd, 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                open_pipes -= 1
                continue
            written[key.data] += len(chunk)
            live_at = live_at or time.monotonic() + _LIVE_S
            tail = tails[key.data]
            tail += chunk
            if len(tail) > tail_max:
                del tail[: len(tail) - tail_max]
    code = proc.wait()
    _signal_tree(pgid, signal.SIGKILL, cgroup)
    _end_tree(cgroup)  # nothing of the attempt outlives it, whatever session it moved to
    stderr = tails["stderr"].decode("utf-8", "replace")
    if reason == "exited":
        reason = _limit_reason(code, stderr, limits) or reason
    status.update(
        exit_code=code if code >= 0 else None,
        signal=-code if code < 0 else None,
        reason=reason,
        started=started,
        ended=time.monotonic(),
        stdout_tail=tails["stdout"].decode("utf-8", "replace"),
        stderr_tail=stderr,
        stdout_bytes=written["stdout"],
        stderr_bytes=written["stderr"],
        output=_harvest(work_fd, ids, int(spec.get("result_max", 65536))),
    )
    _write_status(run_fd, "status.json", status)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
