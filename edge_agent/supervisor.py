"""The agent's task supervisor: one long-lived process that runs every task attempt.

Run as a *script* (``python -S -E supervisor.py RUNS_DIR``), standard library only (plus
``_safefs``, ``_cgroup``, ``_tasktree``, ``_livelog``, ``_attempt``, ``_clients`` from this
directory): one small interpreter for all tasks, not one per task. The agent starts it on
its first launch (``supervisor_link.py``); in its own session, it outlives the agent: a
``kill -9``'d or ``SIGSTOP``'d agent does not stop it from fencing strong tasks at their
lease deadline, timing tasks out, ending their trees and keeping their outcomes. A restarted
agent re-attaches.

Containment (``_tasktree.py``): the supervisor is a *child subreaper*, every task runs in a
session of its own, as ``run_as``, with its rlimits and ``PR_SET_PDEATHSIG`` towards the
supervisor, in a cgroup v2 of its own where one is writable; when an attempt ends for any
reason its whole tree is killed (``setsid`` daemons included) and ``work/`` is emptied with
the task's rights.

Protocol: newline-delimited JSON on ``RUNS_DIR/supervisor.sock`` (``0600``; a peer of another
uid is refused). Every client gets every event.

- ``{"op": "hello"}`` -> ``{"ev": "hello", "protocol", "pid", "running": {attempt: started},
  "done": {attempt: status}}``: a restarted agent re-attaches with this. ``protocol``:
  :data:`PROTOCOL` (none before it was added: version 1); an agent attached to a supervisor of
  another version sends it no launch (``supervisor_link.py``).
- ``{"op": "launch", "attempt", "run_dir", "spec"}`` -> ``{"ev": "started", "attempt",
  "pid", "pgid", "cgroup", "started"}``, later ``{"ev": "exit", "attempt", "status"}``.
  ``spec``: ``argv``, ``env``, ``uid``/``gid`` (or null), ``timeout_s``, ``deadline``
  (absolute ``CLOCK_MONOTONIC`` seconds or null), ``grace_s``, ``tail_bytes``, ``limits``
  (``{"as"|"cpu"|"fsize"|"nproc": [soft, hard]}``), ``result_max``.
- ``{"op": "deadline", "attempt", "deadline"}`` moves (or with null lifts) the fence;
  ``{"op": "stop", "attempt", "reason"}`` SIGTERMs the tree, SIGKILL after the grace.
- ``{"op": "ack", "attempt"}``: the agent has journaled the outcome; it is forgotten here.

``status`` holds ``exit_code``, ``signal``, ``reason`` (``exited``, ``timeout``, ``fenced``,
``cancelled``, ``stopped``, ``spawn_failed``, ``memory_limit``, ``cpu_limit``,
``file_size_limit``), ``started``, ``ended``, ``deadline``, ``fenced_at``, ``stdout_tail``,
``stderr_tail`` (the last ``tail_bytes``), ``stdout_bytes``, ``stderr_bytes``, ``output`` (the
text of ``output.json`` or null), and ``keep_dir: true`` when the supervisor takes the run
directory over once the outcome is acknowledged (kept for a later attempt, whose launch
renames and reuses it: no inode freed and allocated again; the agent then leaves it). An
outcome no client has acknowledged is also written to
``status.json`` in the run directory once no agent is connected, and the supervisor exits when
no agent is connected and nothing runs, so a restarted agent finds every outcome either here
or there. ``started.json`` (``pid``, ``pgid``, ``started``, ``cgroup``) is written at spawn, before
the task's exec (the child waits at a gate for it, ``_tasktree.spawn``):
an agent that finds the supervisor gone kills what is left through it.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import os
import selectors
import shutil
import signal
import socket
import sys
import time

import _cgroup  # this script's directory is sys.path[0]
import _livelog
import _safefs
import _tasktree
from _attempt import SPARE, STARTED, WORK, Attempt, make_run_dir, recycle
from _clients import ClientIO

SOCKET = "supervisor.sock"
LOCK = "supervisor.lock"
_TICK_S = 1.0  # the longest sleep: timers are re-checked at least this often
_CGROUP_WAIT_S = 2.0  # how long an outcome waits for its cgroup to empty
_FIRST_CLIENT_S = 30.0  # how long a new supervisor waits for the agent that started it
_SPARES = 32  # run directories kept for reuse at most
#: What this supervisor understands, announced in its hello: raised with every change an agent
#: must not send to an older one (2: it makes the run directory, ``_attempt.make_run_dir``).
#: ``supervisor_link.PROTOCOL`` is the agent's side.
PROTOCOL = 2


class Supervisor(ClientIO):
    def __init__(self, runs_dir: str, listener: socket.socket, wake_fd: int) -> None:
        self.runs_dir = runs_dir
        self.listener = listener
        self.sel = selectors.DefaultSelector()
        self.sel.register(listener, selectors.EVENT_READ, ("accept", None))
        self.sel.register(wake_fd, selectors.EVENT_READ, ("wake", None))
        self.wake_fd = wake_fd
        self.attempts: dict[str, Attempt] = {}  # running, or ending (tree, harvest)
        self.done: dict[str, dict] = {}  # ended, not yet acknowledged: attempt -> status
        self.done_dirs: dict[str, str] = {}  # of ``done``: the run directory
        self.persisted: set[str] = set()  # of ``done``: written to status.json
        self.clients: dict[socket.socket, list[bytearray]] = {}  # -> [input, output]
        self.unsent: set[socket.socket] = set()  # clients with output queued by this pass
        self.writing: set[socket.socket] = set()  # clients registered for EVENT_WRITE
        self.pids: dict[int, tuple[Attempt, str]] = {}  # leader / harvester -> attempt
        self.cgroups: list[str] = []  # killed, to remove once empty
        self.spares: list[str] = []  # acknowledged attempts' run directories, for reuse
        self.keep: set[str] = set()  # of ``done``: directories the agent leaves to us
        self.forker = _tasktree.Forker()  # makes the tasks' processes (started by main)
        self.seq = 0
        self.terminating = self.busy = self.accepted = False
        self.first_wait = time.monotonic() + _FIRST_CLIENT_S

    # -- clients -------------------------------------------------------------------
    def handle(self, conn: socket.socket, msg: dict) -> None:
        op = msg["op"]
        key = msg.get("attempt")
        attempt = self.attempts.get(key) if isinstance(key, str) else None
        if op == "hello":
            running = {k: a.started_info() for k, a in self.attempts.items()}
            hello = {
                "ev": "hello",
                "protocol": PROTOCOL,
                "pid": os.getpid(),
                "running": running,
                "done": self.done,
            }
            self.send(conn, hello)
        elif op == "launch":
            if attempt is None and key not in self.done:  # a launch is resent after a reconnect
                files = dict(msg.get("files") or {})
                self.launch(str(key), str(msg["run_dir"]), dict(msg["spec"]), files)
        elif op == "deadline" and attempt is not None and attempt.reason == "exited":
            deadline = msg.get("deadline")
            attempt.deadline = None if deadline is None else float(deadline)
        elif op == "stop" and attempt is not None and attempt.reason == "exited":
            self.stop(attempt, str(msg.get("reason") or "cancelled"))
        elif op == "ack":
            self.done.pop(key, None)
            run_dir = self.done_dirs.pop(key, None)
            self.persisted.discard(key)
            if key in self.keep:  # its directory is ours to keep or remove, not the agent's
                self.keep.discard(key)
                self.keep_dir(str(run_dir))

    def keep_dir(self, run_dir: str) -> None:
        """An acknowledged attempt's run directory: kept as a spare for the next launch
        (``_attempt.make_run_dir``), or removed when enough are kept."""
        self.seq += 1
        spare = os.path.join(self.runs_dir, f"{SPARE}{os.getpid()}-{self.seq}")
        if len(self.spares) < _SPARES and recycle(run_dir, spare):
            self.spares.append(spare)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)

    # -- attempts ------------------------------------------------------------------
    def launch(self, key: str, run_dir: str, spec: dict, files: dict) -> None:
        attempt = Attempt(key, run_dir, spec)
        self.attempts[key] = attempt
        self.seq += 1
        attempt.cgroup = _cgroup.create(f"{os.getpid()}-{self.seq}")
        try:
            spare = self.spares.pop() if self.spares else None
            run_fd = make_run_dir(run_dir, attempt.ids, files, spare)
            try:
                attempt.work_fd = _safefs.open_dir(WORK, dir_fd=run_fd)
                attempt.pid, out, err, exec_fd, gate = _tasktree.spawn(
                    spec,
                    attempt.work_fd,
                    attempt.ids,
                    attempt.cgroup,
                    gate=True,
                    forker=self.forker,
                )
                # Written while the child waits at its gate: the task runs only once the
                # agent could find its pid and cgroup here (a task that kills us at once
                # still leaves the agent the cgroup to end its tree with).
                try:
                    with contextlib.suppress(OSError):
                        info = json.dumps(attempt.started_info()).encode()
                        _safefs.put_file_at(run_fd, STARTED, info)
                finally:
                    _tasktree.release(gate)
            finally:
                os.close(run_fd)
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            attempt.reason, attempt.code, attempt.tree_ended = "spawn_failed", 0, True
            attempt.tails["stderr"] += f"{type(exc).__name__}: {exc}".encode()[-attempt.tail_max :]
            self.end_tree(attempt)
            self.finish(attempt)
            return
        self.pids[attempt.pid] = (attempt, "leader")
        attempt.pipes = 3
        self.sel.register(out, selectors.EVENT_READ, ("stdout", attempt))
        self.sel.register(err, selectors.EVENT_READ, ("stderr", attempt))
        self.sel.register(exec_fd, selectors.EVENT_READ, ("exec", attempt))
        self.broadcast({"ev": "started", "attempt": key, **attempt.started_info()})

    def signal(self, attempt: Attempt, sig: int) -> None:
        """Signal the attempt's tree (``others``: the other attempts' leaders and helpers)."""
        if attempt.pid:
            others = {pid for pid, (other, _) in self.pids.items() if other is not attempt}
            leader = attempt.pid if attempt.code is None else 0  # a reaped pid may be reused
            pids = _tasktree.tree(leader, attempt.cgroup, attempt.marker, others)
            _tasktree.signal_tree(pids, attempt.pid, sig, attempt.cgroup)

    def stop(self, attempt: Attempt, reason: str) -> None:
        attempt.reason, attempt.kill_at = reason, time.monotonic() + attempt.grace
        self.signal(attempt, signal.SIGTERM)

    def timers(self, now: float) -> float:
        """Fence, time out and escalate what is due; the next instant something is due."""
        wake = now + _TICK_S
        for attempt in self.attempts.values():
            if attempt.live_at is not None and now >= attempt.live_at:
                attempt.live_at = None  # continuum logs of a running task (_livelog.py)
                _livelog.write_live(attempt.run_dir, attempt.tails, attempt.written)
            wake = min(wake, attempt.live_at or wake)
            if attempt.code is not None:
                continue
            if attempt.reason == "exited":
                if attempt.deadline is not None and now >= attempt.deadline:
                    attempt.reason = "fenced"
                    self.signal(attempt, signal.SIGKILL)  # the lease is over: no grace past it
                    attempt.fenced_at = time.monotonic()  # after the kill: nothing ran later
                elif now >= attempt.timeout_at:
                    self.stop(attempt, "timeout")
            if attempt.kill_at is not None and now >= attempt.kill_at:
                self.signal(attempt, signal.SIGKILL)
                attempt.kill_at = None
            wake = min(wake, attempt.timeout_at, attempt.kill_at or wake)
            if attempt.reason == "exited" and attempt.deadline is not None:
                wake = min(wake, attempt.deadline)
        return wake

    def read_stream(self, name: str, attempt: Attempt, fd: int) -> None:
        """A chunk of the task's stdout or stderr (kept: its tail), or of the exec pipe (any
        text there: the exec failed, and the child exits 127)."""
        chunk = os.read(fd, 65536)
        if name == "exec" and chunk:
            attempt.reason = "spawn_failed"
            attempt.tails["stderr"] += chunk[-attempt.tail_max :]
            return
        if not chunk:
            self.sel.unregister(fd)
            os.close(fd)
            attempt.pipes -= 1
            return
        attempt.written[name] += len(chunk)
        attempt.live_at = attempt.live_at or time.monotonic() + _livelog.LIVE_S
        tail = attempt.tails[name]
        tail += chunk
        if len(tail) > attempt.tail_max:
            del tail[: len(tail) - attempt.tail_max]

    def read_harvest(self, attempt: Attempt, fd: int) -> None:
        chunk = os.read(fd, 65536)
        if chunk:
            if len(attempt.output) <= int(attempt.spec.get("result_max", 65536)):
                attempt.output += chunk
            return
        self.sel.unregister(fd)
        os.close(fd)
        attempt.harvest_fd = None

    def reap(self) -> None:
        """Collect every child that exited: a leader's status, a harvester's verdict, and
        the orphans of ended trees (reparented here: the supervisor is a subreaper)."""
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            attempt, role = self.pids.pop(pid, (None, ""))
            if attempt is None:
                if pid == self.forker.pid:
                    self.forker.exited()
                continue
            code = os.waitstatus_to_exitcode(status)
            if role == "harvester":
                attempt.harvest_pid = None
                attempt.output_ok = code == 0
                continue
            attempt.code = code
            attempt.cpu_s = usage.ru_utime + usage.ru_stime

    def end_tree(self, attempt: Attempt) -> None:
        """Nothing of the attempt outlives it, whatever session it moved to. A cgroup that is
        already empty is just removed: every process of the attempt is born in it, so there is
        nothing to kill (the usual case: a task that left nothing behind)."""
        if attempt.cgroup is not None and _cgroup.try_remove(attempt.cgroup):
            attempt.cgroup_removed = True  # cgroup_left need not look again
            return
        self.signal(attempt, signal.SIGKILL)
        attempt.cgroup_by = time.monotonic() + _CGROUP_WAIT_S

    def cgroup_left(self, attempt: Attempt) -> bool:
        """Whether the attempt's (killed) cgroup is still there: it is removed before the
        outcome is reported, once its last process is gone (given up after a while)."""
        if attempt.cgroup is None or attempt.cgroup_removed or _cgroup.try_remove(attempt.cgroup):
            return False
        if time.monotonic() < attempt.cgroup_by:
            _cgroup.kill(attempt.cgroup)
            return True
        self.cgroups.append(attempt.cgroup)  # retried on every pass, and at exit
        return False

    def progress(self, attempt: Attempt) -> None:
        """Move an attempt whose leader exited on: end its tree, harvest, report."""
        if attempt.code is None:
            return
        if attempt.pipes:
            self.pipes_held(attempt)
            return
        if not attempt.tree_ended:
            attempt.tree_ended = True
            self.end_tree(attempt)
            work_fd = attempt.work_fd
            if work_fd is not None and os.listdir(work_fd):
                pid, fd = _tasktree.harvest_child(
                    work_fd, attempt.ids, int(attempt.spec.get("result_max", 65536))
                )
                attempt.harvest_pid, attempt.harvest_fd = pid, fd
                self.pids[pid] = (attempt, "harvester")
                self.sel.register(fd, selectors.EVENT_READ, ("harvest", attempt))
        if attempt.harvest_pid is None and attempt.harvest_fd is None:
            if self.cgroup_left(attempt):
                self.busy = True
                return
            self.finish(attempt)

    def pipes_held(self, attempt: Attempt) -> None:
        """The leader exited with its output pipes still open. Usually only their end is
        not read yet (the loop reads it in its next pass, looking again at once): the tree
        is killed only if they are still open after that pass (a descendant holds them),
        rather than on every exit (a cgroup kill and a tree walk each, issue 14)."""
        if attempt.pipes_seen == 0:
            attempt.pipes_seen, self.busy = 1, True
        elif attempt.pipes_seen == 1:
            attempt.pipes_seen = 2
            self.signal(attempt, signal.SIGKILL)

    def finish(self, attempt: Attempt) -> None:
        del self.attempts[attempt.key]
        # Its directory is reused only when nothing of the attempt can be left to write in
        # it: its cgroup emptied and removed, work/ empty, the task having run.
        keep = (
            attempt.cgroup is not None
            and attempt.cgroup not in self.cgroups
            and attempt.reason != "spawn_failed"
            and attempt.work_fd is not None
            and not _listdir(attempt.work_fd)
        )
        if attempt.work_fd is not None:
            os.close(attempt.work_fd)
        code = attempt.code or 0
        stderr = attempt.tails["stderr"].decode("utf-8", "replace")
        reason = attempt.reason
        if reason == "exited":
            reason = _tasktree.limit_reason(code, stderr, attempt.limits, attempt.cpu_s) or reason
        limit = int(attempt.spec.get("result_max", 65536))
        ok = attempt.output_ok and len(attempt.output) <= limit
        spawned = attempt.reason != "spawn_failed"
        status = {
            "exit_code": code if code >= 0 and spawned else None,
            "signal": -code if code < 0 else None,
            "reason": reason,
            "started": attempt.started,
            "ended": time.monotonic(),
            "deadline": attempt.deadline,
            "fenced_at": attempt.fenced_at,
            "stdout_tail": attempt.tails["stdout"].decode("utf-8", "replace"),
            "stderr_tail": stderr,
            "stdout_bytes": attempt.written["stdout"],
            "stderr_bytes": attempt.written["stderr"],
            "output": attempt.output.decode("utf-8", "replace") if ok else None,
        }
        if keep:  # the agent leaves the directory to us (kept for the next attempt)
            status["keep_dir"] = True
            self.keep.add(attempt.key)
        self.done[attempt.key] = status
        self.done_dirs[attempt.key] = attempt.run_dir
        self.broadcast({"ev": "exit", "attempt": attempt.key, "status": status})
        if not self.clients:
            self.persist(attempt.key)
        if not self.attempts:  # leftovers of ended trees (no cgroup to hold them)
            for pid in _tasktree.orphans({*self.pids, self.forker.pid}):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)

    def persist(self, key: str) -> None:
        """Write an unacknowledged outcome to ``status.json`` (synced: while no agent is
        connected, it is the only durable copy)."""
        if key in self.persisted:
            return
        self.persisted.add(key)
        with contextlib.suppress(OSError):
            run_fd = _safefs.open_dir(self.done_dirs[key])
            try:
                data = json.dumps(self.done[key]).encode()
                _safefs.write_file_at(run_fd, "status.json", data)
            finally:
                os.close(run_fd)

    # -- the loop ------------------------------------------------------------------
    def on_term(self, signum: int, frame: object) -> None:
        self.terminating = True  # a service stop: every tree is taken down, then we exit

    def wanted(self) -> bool:
        """While something runs or an agent is connected (or, new, until one connects)."""
        if self.attempts:
            return True
        if self.terminating:
            return False
        return bool(self.clients) or (not self.accepted and time.monotonic() < self.first_wait)

    def run(self) -> None:
        while self.wanted():
            if self.terminating:
                for attempt in self.attempts.values():
                    if attempt.reason == "exited" and attempt.code is None:
                        self.stop(attempt, "stopped")
            wake = self.timers(time.monotonic())
            if self.busy:  # a cgroup to remove: look again soon
                wake, self.busy = min(wake, time.monotonic() + 0.005), False
            for key, mask in self.sel.select(max(0.0, wake - time.monotonic())):
                kind, obj = key.data
                if kind == "accept":
                    self.accept()
                elif kind == "wake":
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.wake_fd, 4096)
                elif kind == "client":
                    if obj in self.clients and mask & selectors.EVENT_WRITE:
                        self.flush(obj)
                    if obj in self.clients and mask & selectors.EVENT_READ:
                        self.read_client(obj)
                elif kind == "harvest":
                    self.read_harvest(obj, key.fd)
                else:
                    self.read_stream(kind, obj, key.fd)
            self.reap()
            for attempt in list(self.attempts.values()):
                self.progress(attempt)
            self.flush_all()
            self.cgroups = [path for path in self.cgroups if not _cgroup.try_remove(path)]
        for path in self.cgroups:
            _cgroup.remove(path)
        for spare in self.spares:
            shutil.rmtree(spare, ignore_errors=True)


def _listdir(fd: int) -> list[str]:
    try:
        return os.listdir(fd)
    except OSError:
        return ["?"]  # unreadable: not known to be empty


def main(runs_dir: str) -> int:
    """Take the runs directory's lock (one supervisor per agent), listen, say ``ready`` on
    stdout (the agent waits for it), then run until no agent is connected and nothing runs."""
    os.umask(0o077)
    _tasktree.libc.prctl(_tasktree.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    runs_fd = _safefs.open_dir(runs_dir)
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    lock = os.open(LOCK, flags, 0o600, dir_fd=runs_fd)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("busy", flush=True)
        return 0
    with contextlib.suppress(FileNotFoundError):
        os.unlink(SOCKET, dir_fd=runs_fd)
    for name in os.listdir(runs_fd):  # spares an earlier supervisor kept (it was killed)
        if name.startswith(SPARE):
            shutil.rmtree(os.path.join(runs_dir, name), ignore_errors=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Through the directory's descriptor: short whatever its path (sun_path holds 108 bytes).
    listener.bind(f"/proc/self/fd/{runs_fd}/{SOCKET}")
    os.chmod(SOCKET, 0o600, dir_fd=runs_fd)  # connecting needs write access: ours only
    listener.listen(64)
    listener.setblocking(False)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    supervisor = Supervisor(runs_dir, listener, wake_r)
    signal.signal(signal.SIGTERM, supervisor.on_term)
    gc.freeze()  # what is imported by now is never collected: a fork's child shares it
    print("ready", flush=True)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
    supervisor.forker.start(dict(os.environ))
    try:
        supervisor.run()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(SOCKET, dir_fd=runs_fd)
        listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
