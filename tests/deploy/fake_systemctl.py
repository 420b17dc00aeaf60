#!/usr/bin/env python3
"""A stand-in for ``systemctl`` over units installed under a test root (``$FAKE_SYSTEMD_ROOT``).

Enough of systemd for the installers and the README's commands to run as shipped: ``start``,
``restart`` and ``enable --now`` run the unit's ``ExecStart`` (after creating its
``StateDirectory`` and reading its ``EnvironmentFile``) as a detached process, logging to
``ROOT/var/log/UNIT.log``; ``reload`` sends SIGHUP, ``stop`` and ``disable --now``
SIGTERM; ``is-active`` asks whether that process lives. Every call is appended to
``ROOT/systemctl.log``. ``User=`` and the sandboxing options are not applied: the test
checks that a unit's command line, paths and environment work, not systemd itself.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(os.environ["FAKE_SYSTEMD_ROOT"])


def _unit(name: str) -> dict[str, list[str]]:
    path = ROOT / "etc/systemd/system" / f"{name}.service"
    values: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith(("#", ";")):
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def _pidfile(name: str) -> Path:
    return ROOT / "run" / f"{name}.fake-pid"


def _pid(name: str) -> int | None:
    try:
        pid = int(_pidfile(name).read_text())
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return None if state == "Z" else pid  # a zombie has exited


def _env(unit: dict[str, list[str]]) -> dict[str, str]:
    env = dict(os.environ)
    for spec in unit.get("EnvironmentFile", []):
        path = Path(spec.lstrip("-"))
        if not path.exists() and spec.startswith("-"):
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            key, sep, value = line.partition("=")
            if sep and not line.startswith("#"):
                env[key.strip()] = value.strip()
    return env


def _start(name: str) -> None:
    if _pid(name):
        return
    unit = _unit(name)
    for state in unit.get("StateDirectory", []):
        (ROOT / "var/lib" / state).mkdir(parents=True, exist_ok=True)
    cwd = unit.get("WorkingDirectory", [str(ROOT)])[0]
    log = ROOT / "var/log" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            shlex.split(unit["ExecStart"][0]),
            cwd=cwd,
            env=_env(unit),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _pidfile(name).parent.mkdir(parents=True, exist_ok=True)
    _pidfile(name).write_text(str(proc.pid))


def _signal(name: str, sig: int) -> None:
    pid = _pid(name)
    if pid:
        os.kill(pid, sig)


def _stop(name: str) -> None:
    pid = _pid(name)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while _pid(name) and time.monotonic() < deadline:
        time.sleep(0.1)
    _pidfile(name).unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    with (ROOT / "systemctl.log").open("a", encoding="utf-8") as log:
        log.write(" ".join(argv) + "\n")
    words = [a for a in argv if not a.startswith("-")]
    if not words:
        return 0
    verb, names = words[0], [n.removesuffix(".service") for n in words[1:]]
    for name in names:
        if verb in ("start", "restart") or (verb == "enable" and "--now" in argv):
            if verb == "restart":
                _stop(name)
            _start(name)
        elif verb == "stop" or (verb == "disable" and "--now" in argv):
            _stop(name)
        elif verb == "reload":
            _signal(name, signal.SIGHUP)
        elif verb == "is-active":
            return 0 if _pid(name) else 3
        elif verb == "status":
            print(f"{name}: {'active' if _pid(name) else 'inactive'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
