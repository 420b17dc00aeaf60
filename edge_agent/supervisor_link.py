"""The agent's end of the supervisor's socket: find or start the supervisor, say hello, send
commands, and hand what it reports to the core thread.

The supervisor (``supervisor.py``) is one per runs directory; the first launch starts it and a
restarted agent finds it again through ``runs/supervisor.sock``. A reader thread takes each
report off the socket as it arrives and, for an exit or a lost connection, calls ``notify``
(the agent wakes its core loop with it, so an exit is handled at once rather than on the next
tick); the core thread collects the reports with :meth:`SupervisorLink.drain`. Sends happen
on the core thread.

Upgrades: the supervisor outlives the agent, so a new agent may find one started by an older
version, which would fail what this version sends it (``spawn_failed`` on every launch since
the supervisor makes the run directory). Its hello says its :data:`PROTOCOL` (none: 1). The
agent keeps such a supervisor for the attempts it already runs (their exits, fencing, stops and
acks are the same there) and sends it no launch (:attr:`SupervisorLink.outdated`); once none of
them is owed an ack (:attr:`SupervisorLink.owed`) it disconnects, the old supervisor exits (no
agent, nothing running) and one of this version is started for the next launch.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent import _safefs

__all__ = ["LOST", "SupervisorError", "SupervisorLink"]

_SUPERVISOR = str(Path(__file__).with_name("supervisor.py"))
_SOCKET = "supervisor.sock"
_LOCK = "supervisor.lock"  # held by the supervisor all its life (supervisor.py)
#: How long a restarted agent waits for a supervisor that runs (it holds its lock) but does
#: not answer (frozen, or starved for CPU) before it takes its attempts for lost.
_LIVE_WAIT_S = 60.0
_SEND_TIMEOUT_S = 10.0  # a supervisor never blocks on its clients: only a safety net
_TRIES = 50
#: The supervisor protocol this agent speaks (``supervisor.PROTOCOL``, its side); 1: a
#: supervisor whose hello names none.
PROTOCOL = 2
#: What :meth:`SupervisorLink.drain` reports when the connection broke (the supervisor died).
LOST: dict[str, Any] = {"ev": "lost"}
_json = json.JSONEncoder(separators=(",", ":")).encode  # one encoder for every command


class SupervisorError(OSError):
    """The supervisor could not be started or reached."""


class SupervisorLink:
    def __init__(
        self, runs_dir: Path, env: dict[str, str], notify: Callable[[], None] | None = None
    ) -> None:
        self.runs_dir = runs_dir
        self.env = env  # the supervisor's own environment: no secrets
        self.notify = notify
        self.pid = 0
        self.outdated = False  # the supervisor attached speaks another protocol: no launches
        self.owed: set[str] = set()  # of an outdated one: its attempts not yet acknowledged
        self.failure = ""  # why the last connect found no supervisor (for the journal)
        self._sock: socket.socket | None = None
        self._reports: collections.deque[dict[str, Any]] = collections.deque()
        self._notified = threading.Event()
        self._spawned: list[subprocess.Popen[bytes]] = []  # reaped once they exit

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self, *, start: bool) -> dict[str, Any] | None:
        """Connect and say hello: the supervisor's answer (``pid``, ``running``, ``done``).
        With ``start`` one is started when none answers (``SupervisorError`` if that keeps
        failing), and an outdated one that runs nothing is left to exit, not attached;
        without, ``None`` when none runs."""
        for _ in range(_TRIES):
            try:
                sock, hello, rest = self._hello() if start else self._hello_while_it_runs()
            except (OSError, ValueError) as exc:
                self.failure = f"{type(exc).__name__}: {exc}"
                if not start:
                    return None
                self._start()
                continue
            outdated = _protocol(hello) != PROTOCOL
            if start and outdated and not hello.get("running"):
                sock.close()  # with no agent connected it exits: then one of ours starts
                time.sleep(0.05)
                continue
            self._sock, self.pid, self.outdated = sock, int(hello["pid"]), outdated
            self.owed = {*(hello.get("running") or ()), *(hello.get("done") or ())}
            threading.Thread(
                target=self._read, args=(sock, rest), name="supervisor-link", daemon=True
            ).start()
            return hello
        raise SupervisorError(f"no supervisor answers in {self.runs_dir}")

    def _hello(self) -> tuple[socket.socket, dict[str, Any], bytes]:
        """One connection and its hello: the socket, the answer, what followed it."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(_SEND_TIMEOUT_S)
        runs_fd = _safefs.open_dir(self.runs_dir)
        try:
            # Through the directory's descriptor: its path may not fit a socket address.
            sock.connect(f"/proc/self/fd/{runs_fd}/{_SOCKET}")
            sock.sendall(b'{"op":"hello"}\n')
            hello, rest = _read_hello(sock)
        except BaseException:
            sock.close()
            raise
        finally:
            os.close(runs_fd)
        return sock, hello, rest

    def _hello_while_it_runs(self) -> tuple[socket.socket, dict[str, Any], bytes]:
        """:meth:`_hello`, asked again for up to ``_LIVE_WAIT_S`` while a supervisor runs
        without answering (frozen, starved): taken for gone, its attempts would be failed
        and killed. Raises the last failure."""
        patience = time.monotonic() + _LIVE_WAIT_S
        while True:
            try:
                return self._hello()
            except (OSError, ValueError):
                if not self._runs() or time.monotonic() >= patience:
                    raise
            time.sleep(0.2)

    def _runs(self) -> bool:
        """Whether a supervisor runs for the directory, answering or not: the lock it takes
        first and holds until it exits is taken."""
        try:
            fd = os.open(self.runs_dir / _LOCK, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released with the descriptor
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            os.close(fd)
        return False

    def _start(self) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-S", "-E", _SUPERVISOR, str(self.runs_dir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # it outlives the agent
            close_fds=True,
            env=self.env,
        )
        assert proc.stdout is not None
        with proc.stdout:
            word = proc.stdout.readline().strip()  # ready, or busy: another one runs (exiting)
        self._spawned = [p for p in self._spawned if p.poll() is None] + [proc]
        if word != b"ready":
            time.sleep(0.05)

    def send(self, msg: dict[str, Any]) -> bool:
        """Send one command; ``False`` when there is no supervisor to send it to."""
        sock = self._sock
        if sock is None:
            return False
        if msg.get("op") == "ack":
            self.owed.discard(str(msg.get("attempt")))
        try:
            sock.sendall(_json(msg).encode() + b"\n")
        except OSError:
            self.close()
            self._put(LOST)
            return False
        return True

    def _read(self, sock: socket.socket, buf: bytes) -> None:
        """The reader thread: every report, then :data:`LOST` once the connection breaks
        (unless :meth:`close` broke it)."""
        try:
            while True:
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.strip():
                        self._put(json.loads(line))
                try:
                    chunk = sock.recv(1 << 20)
                except TimeoutError:  # a quiet supervisor: nothing ended
                    continue
                if not chunk:
                    break
                buf += chunk
        except (OSError, ValueError):
            pass
        if self._sock is sock:
            self._sock = None
            sock.close()
            self._put(LOST)

    def _put(self, report: dict[str, Any]) -> None:
        self._reports.append(report)
        if report.get("ev") == "started":
            return  # nothing to act on: taken with the next poll, no wake-up of its own
        if not self._notified.is_set():
            self._notified.set()
            if self.notify is not None:
                self.notify()

    def drain(self) -> list[dict[str, Any]]:
        """The reports received since the last call, in order."""
        self._notified.clear()
        out = []
        while self._reports:
            out.append(self._reports.popleft())
        return out

    def close(self) -> None:
        """Disconnect; a supervisor with nothing to run then exits."""
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _protocol(hello: dict[str, Any]) -> int:
    """The protocol a supervisor's hello announces: 1 when it names none (or none valid)."""
    version = hello.get("protocol", 1)
    return version if isinstance(version, int) else 1


def _read_hello(sock: socket.socket) -> tuple[dict[str, Any], bytes]:
    """The supervisor's answer to hello, and what followed it in the same reads."""
    buf = b""
    while b"\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("the supervisor closed the connection")
        buf += chunk
    line, _, rest = buf.partition(b"\n")
    hello = json.loads(line)
    if not isinstance(hello, dict) or hello.get("ev") != "hello":
        raise ConnectionResetError(f"unexpected first message {hello!r}")
    return hello, rest
