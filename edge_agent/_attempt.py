"""One task attempt as the supervisor (``supervisor.py``) holds it, from spawn until the agent
acknowledges its outcome. Standard library only: the supervisor imports it from its own
directory, like ``_safefs`` and ``_tasktree``."""

from __future__ import annotations

import os
import shutil
import time

import _safefs  # this script's directory is sys.path[0]

WORK = "work"  # the task's own directory inside the run directory


def make_run_dir(run_dir: str, ids: tuple[int, int] | None, files: dict) -> int:
    """The attempt's run directory, made here rather than by the agent (off its core
    thread, issue 14), and a descriptor of it: the agent's user's (0700 under the
    supervisor's umask 077, or 0710 with the task's group so that a task running as
    ``run_as`` can reach its ``work/``), replacing whatever was left under that name;
    ``work/`` and the task's files (``files``: name -> text, 0400) belong to the task's user
    (``ids``; ``None``: ours)."""
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
            if "/" in name or name in ("", ".", ".."):
                raise ValueError(f"not a file name: {name!r}")
            # Not synced: after a power cut the attempt is lost anyway. Created in place: the
            # directory is new (nothing to replace), and the task cannot write in it.
            _safefs.create_file_at(run_fd, name, text.encode(), mode=0o400, owner=ids)
    except BaseException:
        os.close(run_fd)
        raise
    return run_fd


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
        self.harvest_pid: int | None = None  # the reader of output.json, and its pipe
        self.harvest_fd: int | None = None
        self.output, self.output_ok = bytearray(), False

    def started_info(self) -> dict:
        return {"pid": self.pid, "pgid": self.pid, "started": self.started, "cgroup": self.cgroup}
