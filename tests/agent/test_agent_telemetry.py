"""Telemetry is news or a refresh (issue 14): a sample is sent when a count changed or a
figure moved by its threshold, else at most every ``REFRESH_S``; values are rounded. A sample
carries the CPU our own task processes use (``own_cpu``), measured on real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_harness import wait_until
from hypothesis import given
from hypothesis import strategies as st

from edge_agent import telemetry
from edge_agent.telemetry import REFRESH_S, Sampler, rounded, worth_reporting


def _report(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "cpu_pct": 3.0,
        "memory_pct": 41.0,
        "memory_free_mb": 8000.0,
        "disk_free_mb": 50_000.0,
        "load": (0.1, 0.2, 0.3),
        "battery_pct": None,
        "queue_len": 0,
        "running": 0,
        "rtt_ms_p50": 4.2,
        "reconnects": 1,
        "averages": {"cpu_pct": {"1m": 3.0}, "memory_pct": {"1m": 41.0}},
    }
    return {**base, **over}


def test_the_first_report_and_a_stale_one_always_go() -> None:
    assert worth_reporting(None, _report(), 0.0)
    assert not worth_reporting(_report(), _report(), REFRESH_S - 1)
    assert worth_reporting(_report(), _report(), REFRESH_S)


def test_counts_go_at_once_noise_does_not() -> None:
    last = _report()
    assert worth_reporting(last, _report(queue_len=1), 1.0)
    assert worth_reporting(last, _report(running=2), 1.0)
    assert worth_reporting(last, _report(reconnects=2), 1.0)
    # A spike of the instantaneous CPU with a calm one-minute average is not news.
    assert not worth_reporting(last, _report(cpu_pct=60.0), 1.0)
    busy = _report(averages={"cpu_pct": {"1m": 13.0}, "memory_pct": {"1m": 41.0}})
    assert worth_reporting(last, busy, 1.0)
    assert not worth_reporting(last, _report(memory_free_mb=7300.0), 1.0)
    assert worth_reporting(last, _report(memory_free_mb=7100.0), 1.0)
    assert worth_reporting(last, _report(battery_pct=80.0), 1.0)


@given(st.floats(0, 100), st.floats(0, 1e6), st.floats(0, 64))
def test_rounding_keeps_what_placement_reads(cpu: float, free: float, load: float) -> None:
    out = rounded(_report(cpu_pct=cpu, memory_free_mb=free, load=(load, load, load)))
    assert abs(out["cpu_pct"] - cpu) <= 0.5 and out["cpu_pct"] == int(out["cpu_pct"])
    assert abs(out["memory_free_mb"] - free) <= 0.5
    assert all(abs(v - load) <= 0.005 for v in out["load"])
    assert rounded(out) == out  # rounding twice changes nothing


# ---------------------------------------------------------------- own task usage

#: A stand-in supervisor: it starts one task process (the code in argv[1]) and waits for it.
_ROOT = "import subprocess, sys; subprocess.Popen([sys.executable, '-c', sys.argv[1]]).wait()"
_BURN = "print('ready', flush=True)\nwhile True: pass"
_SLEEP = "import time\nprint('ready', flush=True)\ntime.sleep(3600)"


@contextlib.contextmanager
def _tasks(task: str) -> Iterator[subprocess.Popen[bytes]]:
    """A root process with one task process under it, running ``task`` (ready when yielded)."""
    root = subprocess.Popen(
        [sys.executable, "-c", _ROOT, task], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert root.stdout is not None
        assert root.stdout.readline().strip() == b"ready"
        yield root
    finally:
        os.killpg(root.pid, signal.SIGKILL)
        root.wait()


def _own(sampler: Sampler) -> float | None:
    return sampler.sample(time.monotonic()).get("own_cpu")


def test_own_usage_counts_a_burning_task(tmp_path: Path) -> None:
    with _tasks(_BURN) as root:
        sampler = Sampler(tmp_path, tasks_root=lambda: root.pid)
        # Under contention the burner may get a small share: any clear use will do.
        wait_until(lambda: (_own(sampler) or 0.0) >= 0.1, 60.0, "the burner's CPU use")


def test_own_usage_of_a_sleeping_task_is_about_nothing(tmp_path: Path) -> None:
    with _tasks(_SLEEP) as root:
        sampler = Sampler(tmp_path, tasks_root=lambda: root.pid)
        readings: list[float] = []

        def read() -> bool:
            own = _own(sampler)
            readings.extend([] if own is None else [own])
            return bool(readings)

        wait_until(read, 60.0, "a reading")
        assert max(readings) < 0.05


def test_own_usage_is_unknown_without_a_live_root(tmp_path: Path) -> None:
    assert "own_cpu" not in Sampler(tmp_path).sample(time.monotonic())
    nobody = Sampler(tmp_path, tasks_root=lambda: 0)
    assert "own_cpu" not in nobody.sample(0.0) and "own_cpu" not in nobody.sample(5.0)
    with _tasks(_SLEEP) as root:
        pid = root.pid
    gone = Sampler(tmp_path, tasks_root=lambda: pid)
    assert "own_cpu" not in gone.sample(0.0) and "own_cpu" not in gone.sample(5.0)


def test_the_cpu_share_is_read_over_a_window_not_per_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two passes milliseconds apart must not read psutil twice: its second answer would be
    the meaningless 0.0 of an empty interval (an idle host for admission)."""
    reads = iter([0.0, 97.0, 12.0])  # the prime, then two real reads
    monkeypatch.setattr(telemetry.psutil, "cpu_percent", lambda interval=None: next(reads))
    sampler = telemetry.Sampler(tmp_path)
    assert sampler.sample(100.0)["cpu_pct"] == 97.0
    assert sampler.sample(100.0 + telemetry.CPU_WINDOW_S / 10)["cpu_pct"] == 97.0
    assert sampler.sample(100.0 + telemetry.CPU_WINDOW_S)["cpu_pct"] == 12.0
