"""The machine's own costs that the sim-to-real comparison models, measured on it.

A process start and an fsync'd write are not properties of the product but of the
machine and of its load at the moment: the ledger task's interpreter starts in ~20 ms
on this 2-core machine when it is quiet and in 110-190 ms at a load of 10-15. A
constant measured once fits one load only, so the comparison measures them right
before each testbed run, under the load that run will see, and simulates with those
(``MachineTiming``); the defaults are the figures measured when the model was built.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from simulations.testbed import ledger_task

#: Spawns and fsyncs per measurement: the median of this many.
SAMPLES = 9


@dataclass(frozen=True, slots=True)
class MachineTiming:
    """``process_start_s``: the ledger task's interpreter from spawn to exit with no
    work (``--sleep-ms 0``); ``commit_s``: one 4 KiB write + fsync (a durable commit)."""

    process_start_s: float = 0.08
    commit_s: float = 0.004

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any] | None) -> MachineTiming:
        """A run's recorded timing; the defaults for a run recorded without one."""
        if not doc:
            return cls()
        return cls(float(doc["process_start_s"]), float(doc["commit_s"]))


#: The figures measured when the model was built (2026-12-02, at a load of ~5).
DEFAULT_MACHINE = MachineTiming()


def _process_start_s(ledger: Path) -> float:
    cmd = [sys.executable, str(Path(ledger_task.__file__).resolve()), "--sleep-ms", "0"]
    env = dict(os.environ, CONTINUUM_LEDGER=str(ledger))
    took = []
    for _ in range(SAMPLES):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        took.append(time.perf_counter() - t0)
    return statistics.median(took)


def _commit_s(path: Path) -> float:
    block = b"\0" * 4096
    took = []
    with path.open("wb") as f:
        for _ in range(SAMPLES):
            t0 = time.perf_counter()
            f.write(block)
            f.flush()
            os.fsync(f.fileno())
            took.append(time.perf_counter() - t0)
    return statistics.median(took)


def measure(where: Path | None = None) -> MachineTiming:
    """Measure both on this machine now (on the disk of ``where``, default a temp dir)."""
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        base = Path(tmp)
        return MachineTiming(_process_start_s(base / "ledger.jsonl"), _commit_s(base / "fsync"))
