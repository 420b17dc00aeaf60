"""Start and stop a real Mosquitto on a free loopback port.

Used by the testbed and by the test suite's ``mosquitto`` fixture: one launcher,
so tests exercise exactly the broker set-up the testbed runs. The config is
generated per instance (listener on 127.0.0.1, persistence in the instance's
directory, optional password file and ACL), so brokers never share state and a
``restart()`` keeps the port and the persisted sessions, like a real broker
coming back after a crash.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BrokerError", "MosquittoBroker", "find_mosquitto", "free_port", "wait_for_port"]


class BrokerError(RuntimeError):
    """The broker could not be started (binary missing, port never opened)."""


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary; Debian installs it in /usr/sbin, often off PATH."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free now (small race until someone binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def stop_process(
    proc: subprocess.Popen[bytes] | None, *, kill: bool = False, timeout_s: float = 5.0
) -> int | None:
    """Stop a child process (a broker, an agent, the controller): SIGKILL for a crash,
    else SIGTERM; wait, and SIGKILL it if it outlives ``timeout_s``. Returns its exit
    status (``None`` when there was no process)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


@dataclass
class MosquittoBroker:
    """One Mosquitto process with a generated config under ``workdir``.

    ``users`` maps username → password; when given, anonymous access is off and a
    password file is generated with ``mosquitto_passwd``. ``acl_file`` is copied
    verbatim (use ``%u`` patterns for per-node confinement).
    """

    workdir: Path
    host: str = "127.0.0.1"
    port: int = 0
    users: dict[str, str] | None = None
    acl_file: Path | None = None
    persistence: bool = True
    extra_config: list[str] = field(default_factory=list)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if self.users else 'true'}",
            "set_tcp_nodelay true",  # no Nagle wait (~40 ms) behind an unacked packet
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "autosave_interval 1",
            f"log_dest file {self.workdir / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 100000",
            "max_inflight_messages 100",
            # Started as root, mosquitto drops to the "mosquitto" user, which cannot
            # write our private work directory; stay the user we are.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
        ]
        if self.users:
            passwd = self.workdir / "passwd"
            passwd.write_text("")
            tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
            for user, password in self.users.items():
                subprocess.run([tool, "-b", str(passwd), user, password], check=True)
            lines.append(f"password_file {passwd}")
        if self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
        lines.extend(self.extra_config)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self, timeout_s: float = 10.0) -> MosquittoBroker:
        binary = find_mosquitto()
        if binary is None:
            raise BrokerError("mosquitto is not installed (apt-get install mosquitto)")
        if not self.port:
            self.port = free_port(self.host)
        conf = self._write_config()
        self._proc = subprocess.Popen(
            [binary, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        if not wait_for_port(self.host, self.port, timeout_s):
            err = b""
            if self._proc.poll() is not None and self._proc.stderr is not None:
                err = self._proc.stderr.read()
            self.stop()
            raise BrokerError(
                f"mosquitto did not open {self.host}:{self.port}: {err.decode(errors='replace')}"
            )
        return self

    def stop(self, *, kill: bool = False, timeout_s: float = 5.0) -> None:
        """Stop the broker; ``kill=True`` is SIGKILL (a crash), otherwise SIGTERM."""
        proc, self._proc = self._proc, None
        stop_process(proc, kill=kill, timeout_s=timeout_s)
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()

    def restart(self, timeout_s: float = 10.0) -> None:
        """Stop and start again on the same port, keeping persisted sessions."""
        self.stop()
        self.start(timeout_s)

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
