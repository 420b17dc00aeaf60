"""Per-attempt watchdog: the parent of every task process, and the fence of strong tasks.

Run as a *script* (``python -S _watchdog.py RUN_DIR``), standard library only, so it starts in
milliseconds and does not load the agent. It lives in its own session, so it outlives the agent:
when the agent is ``kill -9``'d the watchdog still stops the task at its lease deadline, which is
what makes fencing hold without the agent (DESIGN §5). The task process in turn gets
``PR_SET_PDEATHSIG = SIGKILL`` towards the watchdog, so killing the watchdog kills the task.

Contract with the agent (all files in RUN_DIR):

- ``watch.json`` (read once): ``argv``, ``env``, ``cwd``, ``uid``/``gid`` (or null), ``timeout_s``,
  ``deadline`` (absolute ``CLOCK_MONOTONIC`` seconds, or null = no lease), ``grace_s``,
  ``tail_bytes``.
- ``lease.fifo``: the agent writes lines ``deadline <monotonic seconds>``, ``deadline none`` or
  ``stop <reason>``. The watchdog opens it read-write, so it never sees end-of-file and a
  restarted agent can reopen it to renew an adopted attempt. Losing the agent keeps the last
  deadline in force: nobody renews, so the task is fenced at that deadline.
- ``started.json`` (written after spawn): ``pid``, ``pgid``, ``started``.
- ``status.json`` (written last, atomically): ``exit_code``, ``signal``, ``reason`` (``exited``,
  ``timeout``, ``fenced``, ``cancelled``, ``spawn_failed``), ``started``, ``ended``,
  ``deadline``, ``fenced_at``, ``stdout_tail``, ``stderr_tail``. Its presence means the attempt
  is over, even if the agent was dead when it ended.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import selectors
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1


def _write_json(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _pdeathsig(parent: int):
    libc = ctypes.CDLL(None, use_errno=True)

    def set_it() -> None:
        # Runs in the child after setuid (a credential change would clear the setting).
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the watchdog died before we armed the signal
            os._exit(137)

    return set_it


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def main(run_dir: str) -> int:
    with open(os.path.join(run_dir, "watch.json"), encoding="utf-8") as fh:
        spec = json.load(fh)
    tail_max = int(spec.get("tail_bytes", 4096))
    deadline = spec.get("deadline")
    grace = float(spec.get("grace_s", 5.0))
    status: dict = {"deadline": deadline, "fenced_at": None, "signal": None}
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            spec["argv"],
            env=spec["env"],
            cwd=spec.get("cwd") or run_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            user=spec.get("uid"),
            group=spec.get("gid"),
            extra_groups=[] if spec.get("uid") is not None else None,
            preexec_fn=_pdeathsig(os.getpid()),
        )
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        status.update(
            exit_code=None,
            reason="spawn_failed",
            started=started,
            ended=time.monotonic(),
            stdout_tail="",
            stderr_tail=f"{type(exc).__name__}: {exc}"[-tail_max:],
        )
        _write_json(os.path.join(run_dir, "status.json"), status)
        return 0
    pgid = proc.pid
    _write_json(
        os.path.join(run_dir, "started.json"), {"pid": proc.pid, "pgid": pgid, "started": started}
    )
    timeout_at = started + float(spec["timeout_s"])
    fifo = os.open(os.path.join(run_dir, "lease.fifo"), os.O_RDWR | os.O_NONBLOCK)
    sel = selectors.DefaultSelector()
    tails = {"stdout": bytearray(), "stderr": bytearray()}
    assert proc.stdout is not None and proc.stderr is not None
    sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
    sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
    sel.register(fifo, selectors.EVENT_READ, "fifo")
    pending = b""
    reason = "exited"
    kill_at: float | None = None  # after SIGTERM: when SIGKILL follows

    def on_term(signum: int, frame: object) -> None:
        # Someone stops the watchdog itself (service stop): take the task's group down with it.
        nonlocal reason, kill_at
        if reason == "exited":
            reason, kill_at = "stopped", time.monotonic() + grace
            _killpg(pgid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    open_pipes = 2
    while True:
        now = time.monotonic()
        if proc.poll() is not None and open_pipes == 0:
            break
        if reason == "exited":
            if deadline is not None and now >= deadline:
                reason, status["fenced_at"] = "fenced", now
                _killpg(pgid, signal.SIGKILL)  # the lease is over: no grace past it
            elif now >= timeout_at:
                reason, kill_at = "timeout", now + grace
                _killpg(pgid, signal.SIGTERM)
        if kill_at is not None and now >= kill_at:
            _killpg(pgid, signal.SIGKILL)
            kill_at = None
        wake = [timeout_at, now + 0.5]
        if deadline is not None and reason == "exited":
            wake.append(deadline)
        if kill_at is not None:
            wake.append(kill_at)
        if proc.poll() is not None and open_pipes:
            # The leader exited but a descendant still holds the pipes: end the group.
            _killpg(pgid, signal.SIGKILL)
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
                        _killpg(pgid, signal.SIGTERM)
                continue
            chunk = os.read(key.fd, 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                open_pipes -= 1
                continue
            tail = tails[key.data]
            tail += chunk
            if len(tail) > tail_max:
                del tail[: len(tail) - tail_max]
    code = proc.wait()
    _killpg(pgid, signal.SIGKILL)  # stragglers of the group never outlive the attempt
    status.update(
        exit_code=code if code >= 0 else None,
        signal=-code if code < 0 else None,
        reason=reason,
        started=started,
        ended=time.monotonic(),
        stdout_tail=tails["stdout"].decode("utf-8", "replace"),
        stderr_tail=tails["stderr"].decode("utf-8", "replace"),
    )
    _write_json(os.path.join(run_dir, "status.json"), status)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
