"""Starts task attempts under their watchdog, renews and stops them, and collects outcomes.

Every attempt runs as ``watchdog -> task`` (see ``_watchdog.py``): the watchdog owns the task's
process group, its timeout, its lease deadline and its output tails, and writes the outcome to
``status.json`` in the attempt's run directory. The agent therefore never loses an outcome to its
own crash: a restarted agent either *adopts* a live watchdog (keeps polling it, and can still
renew or stop it through its FIFO) or *harvests* the status file of one that finished meanwhile.

This module holds no policy: who may start, when to renew and what an outcome means for the
task record are decided by the agent from ``shared`` rules.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.config import ExecutorConfig

__all__ = ["Executor", "Launch", "Outcome", "RunningAttempt"]

_WATCHDOG = str(Path(__file__).with_name("_watchdog.py"))
_MAX_RESULT_BYTES = 64 * 1024
_PASSED_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH")


@dataclass(frozen=True, slots=True)
class Launch:
    """What the agent asks for: one attempt of one task (argv xor callable target)."""

    task_id: str
    attempt: str  # the agent's key, "task/node:counter" (unique across tasks)
    epoch: int
    argv: list[str] | None
    callable_target: str | None  # "module:function", already resolved from the allow-list
    args: dict[str, Any]
    env: dict[str, str]
    inputs: dict[str, Any]
    timeout_s: float
    deadline: float | None  # absolute CLOCK_MONOTONIC seconds (strong tasks), else None


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended, read from the watchdog's status file."""

    task_id: str
    attempt: str
    reason: str  # exited | timeout | fenced | cancelled | stopped | spawn_failed | lost
    exit_code: int | None
    signal: int | None
    duration_s: float
    result: Any
    stdout_tail: str
    stderr_tail: str
    deadline: float | None
    fenced_at: float | None

    @property
    def succeeded(self) -> bool:
        return self.reason == "exited" and self.exit_code == 0


@dataclass(slots=True)
class RunningAttempt:
    task_id: str
    attempt: str
    run_dir: Path
    watchdog_pid: int
    proc: subprocess.Popen[bytes] | None = None  # None when adopted after a restart
    pgid: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)  # FIFO lines the watchdog could not take yet


class Executor:
    def __init__(self, runs_dir: Path, cfg: ExecutorConfig) -> None:
        self.runs_dir = runs_dir
        self.cfg = cfg
        self.running: dict[str, RunningAttempt] = {}
        runs_dir.mkdir(parents=True, exist_ok=True)
        self._ids = _task_user(cfg.run_as)

    def run_dir(self, task_id: str, attempt: str) -> Path:
        return self.runs_dir / f"{task_id}--{attempt.rsplit(':', 1)[-1]}"

    def launch(self, launch: Launch) -> RunningAttempt:
        """Write the attempt's files, then start its watchdog (in its own session)."""
        run_dir = self.run_dir(launch.task_id, launch.attempt)
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        os.mkfifo(run_dir / "lease.fifo", 0o600)
        (run_dir / "inputs.json").write_text(json.dumps(launch.inputs), encoding="utf-8")
        env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
        env.update(launch.env)
        env.update(
            HOME=str(run_dir),
            CONTINUUM_TASK_ID=launch.task_id,
            CONTINUUM_ATTEMPT=launch.attempt.rpartition("/")[2],  # the dot, node:counter
            CONTINUUM_EPOCH=str(launch.epoch),
            CONTINUUM_INPUTS=str(run_dir / "inputs.json"),
            CONTINUUM_OUTPUT=str(run_dir / "output.json"),
        )
        argv = launch.argv
        if launch.callable_target is not None:
            (run_dir / "args.json").write_text(json.dumps(launch.args), encoding="utf-8")
            env["CONTINUUM_ARGS"] = str(run_dir / "args.json")
            argv = [sys.executable, "-m", "edge_agent._callable", launch.callable_target]
        uid, gid = self._ids
        if uid is not None:
            os.chown(run_dir, uid, gid or 0)
            for name in ("inputs.json", "args.json"):
                with contextlib.suppress(FileNotFoundError):
                    os.chown(run_dir / name, uid, gid or 0)
        watch = {
            "argv": argv,
            "env": env,
            "cwd": str(run_dir),
            "uid": uid,
            "gid": gid,
            "timeout_s": launch.timeout_s,
            "deadline": launch.deadline,
            "grace_s": self.cfg.kill_grace_s,
            "tail_bytes": self.cfg.output_tail_bytes,
        }
        (run_dir / "watch.json").write_text(json.dumps(watch), encoding="utf-8")
        proc = subprocess.Popen(
            [sys.executable, "-S", "-E", _WATCHDOG, str(run_dir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
        running = RunningAttempt(launch.task_id, launch.attempt, run_dir, proc.pid, proc)
        self.running[launch.attempt] = running
        return running

    def adopt(self, task_id: str, attempt: str, watchdog_pid: int) -> RunningAttempt | None:
        """Take over a watchdog left by a previous agent process, when it is still ours and
        alive or has left its status file; ``None`` means the attempt is gone."""
        run_dir = self.run_dir(task_id, attempt)
        if not (run_dir / "status.json").exists() and not _is_watchdog(watchdog_pid, run_dir):
            return None
        running = RunningAttempt(task_id, attempt, run_dir, watchdog_pid)
        running.pgid = _read_pgid(run_dir)
        self.running[attempt] = running
        return running

    def orphan_pgid(self, task_id: str, attempt: str) -> int | None:
        """Process group of an attempt whose watchdog is gone (for a restart sweep)."""
        return _read_pgid(self.run_dir(task_id, attempt))

    @staticmethod
    def kill_group(pgid: int) -> bool:
        """SIGKILL a process group; ``True`` when something was there."""
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def _tell(self, attempt: str, line: str) -> bool:
        """Send a line to the attempt's watchdog. A watchdog that has not opened its FIFO yet
        (it starts in a few tens of milliseconds) gets the line on a later :meth:`poll`: a
        cancel or a renewal sent right after the launch must not be lost."""
        running = self.running.get(attempt)
        if running is None:
            return False
        running.pending.append(line)
        return self._deliver(running) or not (running.run_dir / "status.json").exists()

    @staticmethod
    def _deliver(running: RunningAttempt) -> bool:
        """Write the pending lines; ``False`` (lines kept) while nobody reads the FIFO."""
        try:
            fd = os.open(running.run_dir / "lease.fifo", os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return False  # no reader: the watchdog has not started reading, or has exited
        try:
            os.write(fd, "".join(line + "\n" for line in running.pending).encode("ascii"))
        except OSError:
            return False
        finally:
            os.close(fd)
        running.pending.clear()
        return True

    def set_deadline(self, attempt: str, deadline: float | None) -> bool:
        """Move the fence of a running attempt (``None`` lifts it, for a level downgrade)."""
        return self._tell(
            attempt, "deadline none" if deadline is None else f"deadline {deadline!r}"
        )

    def stop(self, attempt: str, reason: str) -> bool:
        """SIGTERM the attempt's group, SIGKILL after the grace; the outcome says ``reason``."""
        return self._tell(attempt, f"stop {reason}")

    def poll(self) -> list[Outcome]:
        """Outcomes of attempts that ended since the last call (each reported once)."""
        done: list[Outcome] = []
        for attempt, running in list(self.running.items()):
            if running.pgid is None:
                running.pgid = _read_pgid(running.run_dir)
            if running.pending:
                self._deliver(running)
            if running.proc is not None:
                if running.proc.poll() is None:
                    continue
            elif not (running.run_dir / "status.json").exists() and _is_watchdog(
                running.watchdog_pid, running.run_dir
            ):
                continue
            del self.running[attempt]
            done.append(self._outcome(running))
        return done

    def _outcome(self, running: RunningAttempt) -> Outcome:
        status_path = running.run_dir / "status.json"
        try:
            status = json.loads(status_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            # The watchdog died without a word (killed): its task died with it (PDEATHSIG).
            if running.pgid is not None:
                self.kill_group(running.pgid)
            status = {"reason": "lost", "exit_code": None, "signal": None}
        started, ended = status.get("started"), status.get("ended")
        stdout = status.get("stdout_tail", "")
        return Outcome(
            task_id=running.task_id,
            attempt=running.attempt,
            reason=status["reason"],
            exit_code=status.get("exit_code"),
            signal=status.get("signal"),
            duration_s=(ended - started) if started is not None and ended is not None else 0.0,
            result=_result(running.run_dir / "output.json", stdout),
            stdout_tail=stdout,
            stderr_tail=status.get("stderr_tail", ""),
            deadline=status.get("deadline"),
            fenced_at=status.get("fenced_at"),
        )

    def cleanup(self, task_id: str, attempt: str) -> None:
        """Remove a finished attempt's directory once its outcome is journaled."""
        shutil.rmtree(self.run_dir(task_id, attempt), ignore_errors=True)


def _task_user(name: str) -> tuple[int | None, int | None]:
    """Tasks run unprivileged: as ``run_as`` when we are root, else as ourselves."""
    if os.geteuid() != 0 or not name:
        return None, None
    entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def _read_pgid(run_dir: Path) -> int | None:
    try:
        return int(json.loads((run_dir / "started.json").read_text(encoding="utf-8"))["pgid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_watchdog(pid: int, run_dir: Path) -> bool:
    """Is ``pid`` alive and the watchdog of this run dir (not a recycled pid)?"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return _WATCHDOG.encode() in cmdline and str(run_dir).encode() in cmdline


def _result(output_file: Path, stdout_tail: str) -> Any:
    """The task's JSON result: the output file when written, else the last stdout line
    when it parses as JSON; bounded so that it fits in a message."""
    with contextlib.suppress(OSError, ValueError):
        if output_file.stat().st_size <= _MAX_RESULT_BYTES:
            return json.loads(output_file.read_text(encoding="utf-8"))
    lines = [line for line in stdout_tail.splitlines() if line.strip()]
    if lines and len(lines[-1]) <= _MAX_RESULT_BYTES:
        with contextlib.suppress(ValueError):
            return json.loads(lines[-1])
    return None
