"""The ``pause`` / ``resume`` faults: SIGSTOP and SIGCONT of the process itself, and a
paused process can still be stopped (SIGTERM would wait for a SIGCONT otherwise)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from simulations.testbed.processes import Managed

pytestmark = pytest.mark.timeout(60)


@dataclass
class Sleeper(Managed):
    def command(self) -> list[str]:
        return [sys.executable, "-c", "import time; time.sleep(600)"]


def state(pid: int) -> str:
    """The kernel's one-letter state of ``pid`` (T: stopped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


def wait_state(pid: int, want: set[str], timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while (s := state(pid)) not in want:
        assert time.monotonic() < deadline, f"process state stayed {s!r}, wanted {want}"
        time.sleep(0.02)
    return s


def test_pause_freezes_resume_thaws_and_a_paused_process_still_stops(tmp_path: Path) -> None:
    proc = Sleeper(name="sleeper", workdir=tmp_path, ready_file=tmp_path / "ready.json")
    proc.start()
    try:
        assert proc.pid is not None
        proc.pause()
        assert proc.paused and proc.alive
        wait_state(proc.pid, {"T"})
        proc.resume()
        assert not proc.paused
        wait_state(proc.pid, {"S", "R", "D"})
        proc.pause()
        wait_state(proc.pid, {"T"})
    finally:
        status = proc.stop(timeout_s=20)
    assert status is not None and not proc.alive and not proc.paused
