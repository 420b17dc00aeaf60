"""Starts task attempts through the agent's supervisor, renews and stops them, and collects
outcomes.

Every attempt runs under one long-lived supervisor per agent (``supervisor.py``), which owns
the tasks' process trees, rlimits, timeouts, lease deadlines and output tails, and reports each
exit on its Unix socket. The agent therefore never loses an outcome to its own crash: the
supervisor outlives it, keeps what ended until an agent acknowledges it (``cleanup``, called
once the outcome is journaled), and writes it to ``status.json`` in the run directory when no
agent is connected. A restarted agent *re-attaches*: it connects again, and :meth:`adopt`
takes over what still runs or what ended meanwhile. Files in a run directory are only opened
through ``_safefs`` (no symlink followed), and the task's own ``output.json`` is read by the
supervisor as the task's user, never by the agent.

This module holds no policy: who may start, when to renew and what an outcome means for the
task record are decided by the agent from ``shared`` rules.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pwd
import queue
import shutil
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent import _leftovers, _safefs
from edge_agent._leftovers import INPUTS
from edge_agent.config import ExecutorConfig
from edge_agent.supervisor_link import LOST, SupervisorError, SupervisorLink

__all__ = [
    "Executor",
    "Launch",
    "Outcome",
    "RunningAttempt",
    "SupervisorError",
    "prepare_state_dir",
    "task_limits",
    "task_user",
]

log = logging.getLogger("edge_agent.executor")
_WORK = "work"  # the task's own directory inside the run directory (see supervisor.py)
_MAX_RESULT_BYTES = 64 * 1024
_MAX_STATUS_BYTES = 1 << 20  # status.json: tails and result are bounded well below this
_PRIVATE_FILES = (
    "journal.sqlite",
    "journal.sqlite-wal",
    "journal.sqlite-shm",
    "agent.ready.json",
    "api.token",
)
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
    resources: Mapping[str, Any] = field(default_factory=dict)  # the spec's: rlimits


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended, as the supervisor reported it."""

    task_id: str
    attempt: str
    # exited | timeout | fenced | cancelled | stopped | spawn_failed | lost
    # | memory_limit | cpu_limit | file_size_limit (an rlimit from the spec's resources)
    reason: str
    exit_code: int | None
    signal: int | None
    duration_s: float
    result: Any
    stdout_tail: str
    stderr_tail: str
    deadline: float | None
    fenced_at: float | None
    stdout_bytes: int = 0  # all the stream wrote; the tail is its end
    stderr_bytes: int = 0

    @property
    def succeeded(self) -> bool:
        return self.reason == "exited" and self.exit_code == 0


@dataclass(slots=True)
class RunningAttempt:
    task_id: str
    attempt: str
    run_dir: Path
    watchdog_pid: int  # the supervisor's pid (the journal's ``processes.watchdog_pid``)
    orphaned: bool = False  # its supervisor is gone: the outcome is status.json, or lost


class Executor:
    def __init__(self, runs_dir: Path, cfg: ExecutorConfig) -> None:
        """``link.notify``, when set, is called (on another thread) when an attempt ended:
        the caller's cue to :meth:`poll`."""
        self.runs_dir = runs_dir
        self.cfg = cfg
        self.running: dict[str, RunningAttempt] = {}
        self._ids = task_user(cfg.run_as)
        env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}  # no secrets
        self.link = SupervisorLink(runs_dir, env)
        self._attached: dict[str, dict[str, Any]] = {}  # what the supervisor runs: started
        self._exits: dict[str, dict[str, Any]] = {}  # ended, not yet taken by poll()
        self._kept: set[str] = set()  # ended attempts whose directory the supervisor keeps
        self._trash: queue.SimpleQueue[Path] | None = None  # run directories to remove
        _safefs.private_dir(runs_dir, self._ids[1])
        if self._ids[0] is None:
            # Tasks as the agent's own user can do whatever the agent can (docs/agent.md).
            who = "root" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
            log.warning(
                "tasks run as the agent's own user %s: %s",
                who,
                "set executor.run_as" if who == "root" else "run the agent as root for run_as",
            )

    # -- the supervisor --------------------------------------------------------------
    def supervisor_pid(self) -> int:
        """The pid of the supervisor to launch with, starting it when none runs
        (``SupervisorError`` if that fails); 0 while one of an older version still has
        attempts of ours: launches wait, then it is let go (``supervisor_link.py``)."""
        if self.link.connected and self.link.outdated and not self.link.owed:
            self.link.close()
        if not self.link.connected:
            self._attach(start=True)
        return 0 if self.link.outdated else self.link.pid

    def _attach(self, *, start: bool) -> None:
        hello = self.link.connect(start=start)
        if hello is not None:
            self._attached = dict(hello.get("running") or {})
            self._exits.update(hello.get("done") or {})

    def _take(self) -> None:
        """Apply what the supervisor reported since the last call."""
        for msg in self.link.drain():
            key = str(msg.get("attempt"))
            if msg is LOST:
                self._lost()
            elif msg.get("ev") == "started":
                self._attached[key] = msg
            elif msg.get("ev") == "exit":
                self._attached.pop(key, None)
                self._exits[key] = msg["status"]

    def _lost(self) -> None:
        """The supervisor is gone (killed: it exits on its own only with nobody connected):
        its tasks died with it (``PR_SET_PDEATHSIG``); what left their session is killed
        with their cgroup by :meth:`poll`."""
        self._attached = {}
        for running in self.running.values():
            if running.attempt not in self._exits:
                running.orphaned = True

    def close(self) -> None:
        """Disconnect; a supervisor with nothing to run then exits."""
        self.link.close()

    # -- attempts --------------------------------------------------------------------
    def run_dir(self, task_id: str, attempt: str) -> Path:
        return self.runs_dir / f"{task_id}--{attempt.rsplit(':', 1)[-1]}"

    def launch(self, launch: Launch) -> RunningAttempt:
        """Ask the supervisor to start an attempt: it makes the run directory and writes the
        task's files (``_attempt.make_run_dir``: the directory stays the agent's user's, only
        ``work/`` and the task's own input files belong to the task's user), then spawns it.
        A supervisor that cannot be reached makes the attempt end at once as
        ``spawn_failed``."""
        run_dir = self.run_dir(launch.task_id, launch.attempt)
        uid, gid = self._ids
        work = run_dir / _WORK
        env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
        env.update(launch.env)
        env.update(
            HOME=str(work),
            CONTINUUM_TASK_ID=launch.task_id,
            CONTINUUM_ATTEMPT=launch.attempt.rpartition("/")[2],  # the dot, node:counter
            CONTINUUM_EPOCH=str(launch.epoch),
            CONTINUUM_INPUTS=str(run_dir / INPUTS),  # also the attempt's marker (_leftovers)
            CONTINUUM_OUTPUT=str(work / "output.json"),
        )
        argv = launch.argv
        task_files = {INPUTS: launch.inputs}
        if launch.callable_target is not None:
            task_files["args.json"] = launch.args
            env["CONTINUUM_ARGS"] = str(run_dir / "args.json")
            argv = [sys.executable, "-m", "edge_agent._callable", launch.callable_target]
        spec = {
            "argv": argv,
            "env": env,
            "uid": uid,
            "gid": gid,
            "timeout_s": launch.timeout_s,
            "deadline": launch.deadline,
            "grace_s": self.cfg.kill_grace_s,
            "tail_bytes": self.cfg.output_tail_bytes,
            "limits": task_limits(
                launch.resources,
                launch.timeout_s,
                self.cfg.kill_grace_s,
                self.cfg.max_task_processes if uid is not None else 0,
            ),
            "result_max": _MAX_RESULT_BYTES,
        }
        msg = {
            "op": "launch",
            "attempt": launch.attempt,
            "run_dir": str(run_dir),
            "spec": spec,
            "files": {name: json.dumps(content) for name, content in task_files.items()},
        }
        try:
            sent = self.supervisor_pid() > 0 and self.link.send(msg)
        except OSError as exc:  # SupervisorError included
            sent, why = False, f"{type(exc).__name__}: {exc}"
        else:
            why = "the supervisor went away"
        running = RunningAttempt(launch.task_id, launch.attempt, run_dir, self.link.pid)
        self.running[launch.attempt] = running
        if not sent:
            self._exits[launch.attempt] = {"reason": "spawn_failed", "stderr_tail": why}
        return running

    def adopt(self, task_id: str, attempt: str, watchdog_pid: int) -> RunningAttempt | None:
        """Re-attach to an attempt started by a previous agent process: one the supervisor
        still runs or holds the outcome of, or whose ``status.json`` it left; ``None``
        means the attempt is gone (``watchdog_pid``, the journal's, is not needed)."""
        if not self.link.connected:
            self._attach(start=False)
        run_dir = self.run_dir(task_id, attempt)
        known = attempt in self._attached or attempt in self._exits
        if not known and _status(run_dir) is None:
            return None
        running = RunningAttempt(task_id, attempt, run_dir, self.link.pid or watchdog_pid)
        running.orphaned = not known
        self.running[attempt] = running
        return running

    def whereabouts(self) -> str:
        """Why :meth:`adopt` found an attempt gone, for the restart sweep's event: which
        supervisor answered without it, or why none did."""
        if self.link.connected:
            return f"supervisor {self.link.pid} runs no such attempt"
        if self.link.failure:
            return f"no supervisor answered ({self.link.failure})"
        return "no supervisor recorded"

    def release_unclaimed(self) -> list[str]:
        """After the restart sweep: acknowledge the outcomes the supervisor still holds for
        attempts nobody adopted (journaled just before a crash that lost the ack) and remove
        their directories; their keys."""
        unclaimed = [key for key in self._exits if key not in self.running]
        for key in unclaimed:
            self._note_kept(key, self._exits.pop(key))
            self.cleanup(key.rpartition("/")[0], key)
        return unclaimed

    def kill_leftovers(self, task_id: str, attempt: str) -> bool:
        """Kill what is left of an attempt whose supervisor is gone (``_leftovers.kill``);
        ``True`` when something was there."""
        run_dir = self.run_dir(task_id, attempt)
        return _leftovers.kill(run_dir, (_read_json(run_dir, "started.json") or {}).get("cgroup"))

    def set_deadline(self, attempt: str, deadline: float | None) -> bool:
        """Move the fence of a running attempt (``None`` lifts it, for a level downgrade)."""
        if attempt not in self.running:
            return False
        return self.link.send({"op": "deadline", "attempt": attempt, "deadline": deadline})

    def stop(self, attempt: str, reason: str) -> bool:
        """SIGTERM the attempt's tree, SIGKILL after the grace; the outcome says ``reason``."""
        if attempt not in self.running:
            return False
        return self.link.send({"op": "stop", "attempt": attempt, "reason": reason})

    def poll(self) -> list[Outcome]:
        """Outcomes of attempts that ended since the last call (each reported once)."""
        self._take()
        done: list[Outcome] = []
        for attempt, running in list(self.running.items()):
            status = self._exits.pop(attempt, None)
            if status is not None:
                self._note_kept(attempt, status)
            elif running.orphaned:
                status = _status(running.run_dir) or self._lost_attempt(running)
            if status is None:
                continue
            del self.running[attempt]
            done.append(self._outcome(running, status))
        return done

    def _lost_attempt(self, running: RunningAttempt) -> dict[str, Any]:
        """An attempt whose supervisor died without a word: its task died with it
        (``PR_SET_PDEATHSIG``); what left its session is still in its cgroup, when it has one,
        or carries its marker."""
        self.kill_leftovers(running.task_id, running.attempt)
        return {"reason": "lost", "exit_code": None, "signal": None}

    @staticmethod
    def _outcome(running: RunningAttempt, status: dict[str, Any]) -> Outcome:
        started, ended = status.get("started"), status.get("ended")
        stdout = str(status.get("stdout_tail") or "")
        stderr = str(status.get("stderr_tail") or "")
        return Outcome(
            task_id=running.task_id,
            attempt=running.attempt,
            reason=str(status.get("reason") or "lost"),
            exit_code=status.get("exit_code"),
            signal=status.get("signal"),
            duration_s=(ended - started) if started is not None and ended is not None else 0.0,
            result=_result(status.get("output"), stdout),
            stdout_tail=stdout,
            stderr_tail=stderr,
            deadline=status.get("deadline"),
            fenced_at=status.get("fenced_at"),
            stdout_bytes=_count(status.get("stdout_bytes"), stdout),
            stderr_bytes=_count(status.get("stderr_bytes"), stderr),
        )

    def _note_kept(self, attempt: str, status: dict[str, Any]) -> None:
        """A status the supervisor sent (not one read from disk) may say it keeps the run
        directory (``keep_dir``: reused for a later attempt)."""
        if status.get("keep_dir") is True:
            self._kept.add(attempt)

    def cleanup(self, task_id: str, attempt: str) -> None:
        """Acknowledge a finished attempt's outcome to the supervisor (once journaled: it is
        forgotten there) and have its directory removed by a helper thread (off the loop),
        unless the supervisor takes it over with the ack."""
        sent = self.link.send({"op": "ack", "attempt": attempt})
        if attempt in self._kept and (self._kept.remove(attempt) or sent):
            return
        if self._trash is None:  # removing directories costs milliseconds on a busy disk
            self._trash = queue.SimpleQueue()
            threading.Thread(target=_remove_dirs, args=(self._trash,), daemon=True).start()
        self._trash.put(self.run_dir(task_id, attempt))


def _remove_dirs(trash: queue.SimpleQueue[Path]) -> None:
    """Remove finished attempts' directories, for ever. The supervisor has emptied ``work/``
    as the task's user; ``rmtree`` works through directory descriptors, so a link left there
    is removed, never followed."""
    while True:
        run_dir = trash.get()
        with contextlib.suppress(OSError):
            os.rmdir(run_dir / _WORK)  # empty: removable without reading the task's directory
        if not _remove_files_dir(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)


def _remove_files_dir(run_dir: Path) -> bool:
    """Remove a directory that holds only files (a run directory once ``work/`` is gone, the
    usual case) with a few system calls, links unlinked, never followed; ``False`` (nothing
    left half-done that ``rmtree`` cannot finish) when it holds anything else."""
    try:
        run_fd = _safefs.open_dir(run_dir)
    except OSError:
        return False
    try:
        for name in os.listdir(run_fd):
            os.unlink(name, dir_fd=run_fd)  # a directory: IsADirectoryError
        os.rmdir(run_dir)
    except OSError:
        return False
    finally:
        os.close(run_fd)
    return True


def task_limits(
    resources: Mapping[str, Any], timeout_s: float, grace_s: float, processes: int
) -> dict[str, list[int]]:
    """The rlimits ``[soft, hard]`` of one attempt, from the spec's ``resources``:
    ``memory_mb`` bounds the address space, ``disk_mb`` the size of any file written (0 =
    no bound for either), CPU seconds are ``timeout_s`` times the requested cores (at least
    one: a single-threaded task meets its timeout first), and ``processes`` (when the task runs
    as its own user; 0 = no bound) the processes of that user."""
    limits: dict[str, list[int]] = {}
    memory_mb = int(resources.get("memory_mb", 0))
    if memory_mb > 0:
        limits["as"] = [memory_mb << 20, memory_mb << 20]
    disk_mb = int(resources.get("disk_mb", 0))
    if disk_mb > 0:
        limits["fsize"] = [disk_mb << 20, disk_mb << 20]
    cpu_s = math.ceil(timeout_s * max(float(resources.get("cpu", 1.0)), 1.0)) + 1
    limits["cpu"] = [cpu_s, cpu_s + math.ceil(grace_s) + 1]
    if processes > 0:
        limits["nproc"] = [processes, processes]
    return limits


def task_user(name: str) -> tuple[int | None, int | None]:
    """``(uid, gid)`` tasks run as: ``run_as`` when we are root, else ``(None, None)``, ourselves
    (only root can switch users)."""
    if os.geteuid() != 0 or not name:
        return None, None
    entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def prepare_state_dir(state_dir: Path, run_as: str) -> None:
    """Make the agent's state directory private before anything is written in it: the process
    umask becomes 077 (the journal, its WAL, the ready file and every run file are created
    owner-only, with no chmod window), the directory is 0700 (0710 with the task's group when
    tasks run as ``run_as``, so they can reach their run directories), and secret-holding
    files left by an older version lose any group/other rights."""
    os.umask(0o077)
    _safefs.private_dir(state_dir, task_user(run_as)[1])
    for name in _PRIVATE_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(state_dir / name, 0o600, follow_symlinks=False)


def _read_json(run_dir: Path, name: str) -> dict[str, Any] | None:
    """A JSON object the supervisor wrote in the run directory (never through a symlink)."""
    try:
        run_fd = _safefs.open_dir(run_dir)
    except OSError:
        return None
    try:
        raw = _safefs.read_file_at(run_fd, name, _MAX_STATUS_BYTES)
    finally:
        os.close(run_fd)
    try:
        data = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _status(run_dir: Path) -> dict[str, Any] | None:
    """The supervisor's final word left on disk (no agent was connected when the attempt
    ended), ``None`` otherwise."""
    return _read_json(run_dir, "status.json")


def _result(output: object, stdout_tail: str) -> Any:
    """The task's JSON result: ``output.json`` if it wrote one that parses (read by the
    supervisor as the task's user), else the last stdout line if it parses; ``None`` over
    ``_MAX_RESULT_BYTES`` as the wire's ASCII JSON (``shared.crdt.log_limit`` counts on it)."""
    lines = [line for line in stdout_tail.splitlines() if line.strip()][-1:]
    for text in [output, *lines] if isinstance(output, str) else lines:
        if len(text) <= _MAX_RESULT_BYTES:
            with contextlib.suppress(ValueError):
                value = json.loads(text)
                small = len(json.dumps(value, separators=(",", ":"))) <= _MAX_RESULT_BYTES
                return value if small else None
    return None


def _count(value: object, tail: str) -> int:
    """A stream's byte count from the status: at least what its tail holds."""
    counted = value if isinstance(value, int) and not isinstance(value, bool) else 0
    return max(counted, len(tail.encode("utf-8", "replace")))
