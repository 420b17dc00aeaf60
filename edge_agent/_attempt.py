"""One task attempt as the supervisor (``supervisor.py``) holds it, from spawn until the agent
acknowledges its outcome. Standard library only: the supervisor imports it from its own
directory, like ``_safefs`` and ``_tasktree``."""

from __future__ import annotations

import contextlib
import os
import shutil
import time

import _safefs  # this script's directory is sys.path[0]

WORK = "work"  # the task's own directory inside the run directory
SPARE = ".spare-"  # a run directory kept for the next attempt: ``runs/.spare-<pid>-<n>``
STARTED = "started.json"
# What a spare may hold: work/ (empty), the files the supervisor writes. Anything else: not
# reused (removed instead).
_SPARE_NAMES = frozenset({WORK, STARTED, "inputs.json", "args.json", "status.json", "live.json"})


def make_run_dir(
    run_dir: str, ids: tuple[int, int] | None, files: dict, spare: str | None = None
) -> int:
    """The attempt's run directory, made here rather than by the agent (off its core
    thread, issue 14), and a descriptor of it: the agent's user's (0700 under the
    supervisor's umask 077, or 0710 with the task's group so that a task running as
    ``run_as`` can reach its ``work/``), replacing whatever was left under that name;
    ``work/`` and the task's files (``files``: name -> text, 0400) belong to the task's user
    (``ids``; ``None``: ours). With ``spare`` (an ended attempt's directory the supervisor
    kept, ``recycle``) that directory is renamed to ``run_dir`` and made the same way with
    its inodes reused (:func:`_reuse`), or removed if it cannot be."""
    if spare is not None:
        run_fd = _reuse(spare, run_dir, ids, files)
        if run_fd is not None:
            return run_fd
    try:
        os.mkdir(run_dir, 0o700)
    except FileExistsError:  # left by an earlier process under this attempt's name
        if os.path.islink(run_dir):
            os.unlink(run_dir)
        else:
            shutil.rmtree(run_dir)
        os.mkdir(run_dir, 0o700)
    run_fd = _safefs.open_dir(run_dir)
    try:
        if ids is not None:
            os.fchown(run_fd, -1, ids[1])
            os.fchmod(run_fd, 0o710)
        os.mkdir(WORK, 0o700, dir_fd=run_fd)
        if ids is not None:
            os.chown(WORK, *ids, dir_fd=run_fd, follow_symlinks=False)
        for name, text in files.items():
            _check_name(name)
            # Not synced: after a power cut the attempt is lost anyway. Created in place: the
            # directory is new (nothing to replace), and the task cannot write in it.
            _safefs.create_file_at(run_fd, name, text.encode(), mode=0o400, owner=ids)
    except BaseException:
        os.close(run_fd)
        raise
    return run_fd


def _check_name(name: str) -> None:
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"not a file name: {name!r}")


def _reuse(spare: str, run_dir: str, ids: tuple[int, int] | None, files: dict) -> int | None:
    """``spare`` as ``run_dir``, exactly as a new one would be (modes, owners, an empty
    ``work/``, the task's files and nothing else of its last attempt: a stale
    ``started.json`` is made ``{}``, so nothing reads the last attempt's pid in it). Creating
    and removing four inodes per attempt was a large part of a no-op task's cost on a busy
    filesystem (ext4 without a journal scans past every recently freed inode on each
    allocation). ``None`` when it cannot be reused (left under ``run_dir`` for the normal
    path to replace, or gone)."""
    try:
        os.rename(spare, run_dir)
    except OSError:
        with contextlib.suppress(OSError):
            shutil.rmtree(spare)
        return None
    try:
        run_fd = _safefs.open_dir(run_dir)
    except OSError:
        return None
    try:
        names = os.listdir(run_fd)
        if WORK not in names or not _SPARE_NAMES.issuperset(names):
            raise OSError(f"not a spare run directory: {names}")
        work_fd = _safefs.open_dir(WORK, dir_fd=run_fd)
        try:
            if os.listdir(work_fd):
                raise OSError("work/ is not empty")
            os.fchown(work_fd, *(ids or (os.geteuid(), os.getegid())))
            os.fchmod(work_fd, 0o700)
        finally:
            os.close(work_fd)
        if ids is not None:
            os.fchown(run_fd, -1, ids[1])
        os.fchmod(run_fd, 0o700 if ids is None else 0o710)
        for name in names:
            if name not in files and name not in (WORK, STARTED):
                os.unlink(name, dir_fd=run_fd)
        if STARTED in names:  # {} names no pid: read as none (never cut to zero, see put_file_at)
            _safefs.put_file_at(run_fd, STARTED, b"{}")
        for name, text in files.items():
            _check_name(name)
            _safefs.put_file_at(run_fd, name, text.encode(), mode=0o400, owner=ids)
    except (OSError, ValueError):
        os.close(run_fd)
        return None  # make_run_dir replaces what is there
    return run_fd


def recycle(run_dir: str, spare: str) -> bool:
    """Keep an acknowledged attempt's run directory as ``spare`` (for :func:`make_run_dir`)."""
    try:
        os.rename(run_dir, spare)
    except OSError:
        return False
    return True


class Attempt:
    """One task attempt, from spawn until its outcome is acknowledged."""

    def __init__(self, key: str, run_dir: str, spec: dict) -> None:
        self.key, self.run_dir, self.spec = key, run_dir, spec
        uid, gid = spec.get("uid"), spec.get("gid")
        self.ids = None if uid is None else (uid, gid if gid is not None else uid)
        self.deadline = spec.get("deadline")
        self.grace = float(spec.get("grace_s", 5.0))
        self.limits: dict = spec.get("limits") or {}
        self.tail_max = int(spec.get("tail_bytes", 4096))
        self.marker = ("CONTINUUM_INPUTS=" + run_dir + "/inputs.json").encode()
        self.started = time.monotonic()
        self.timeout_at = self.started + float(spec["timeout_s"])
        self.reason = "exited"
        self.fenced_at: float | None = None  # when the fence's kill was sent
        self.kill_at: float | None = None  # after a SIGTERM: when the SIGKILL follows
        self.pid = 0
        self.cgroup: str | None = None
        self.work_fd: int | None = None
        self.tails = {"stdout": bytearray(), "stderr": bytearray()}
        self.written = {"stdout": 0, "stderr": 0}
        self.live_at: float | None = None  # output arrived: when live.json is next written
        self.pipes = 0
        self.pipes_seen = 0  # the leader exited, pipes open: 1 once seen, 2 once killed
        self.code: int | None = None  # as Popen.returncode, once the leader is reaped
        self.cpu_s = 0.0
        self.tree_ended = False
        self.cgroup_by = 0.0  # when the outcome stops waiting for the cgroup to empty
        self.cgroup_removed = False  # by the supervisor, once the tree ended
        self.harvest_pid: int | None = None  # the reader of output.json, and its pipe
        self.harvest_fd: int | None = None
        self.output, self.output_ok = bytearray(), False

    def started_info(self) -> dict:
        return {"pid": self.pid, "pgid": self.pid, "started": self.started, "cgroup": self.cgroup}
