"""One task attempt as the supervisor (``supervisor.py``) holds it, from spawn until the agent
acknowledges its outcome. Standard library only: the supervisor imports it from its own
directory, like ``_safefs`` and ``_tasktree``."""

from __future__ import annotations

import time


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
        self.code: int | None = None  # as Popen.returncode, once the leader is reaped
        self.cpu_s = 0.0
        self.tree_ended = False
        self.cgroup_by = 0.0  # when the outcome stops waiting for the cgroup to empty
        self.harvest_pid: int | None = None  # the reader of output.json, and its pipe
        self.harvest_fd: int | None = None
        self.output, self.output_ok = bytearray(), False

    def started_info(self) -> dict:
        return {"pid": self.pid, "pgid": self.pid, "started": self.started, "cgroup": self.cgroup}
