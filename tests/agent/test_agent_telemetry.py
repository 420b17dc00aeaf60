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

from edge_agent import _procfs, telemetry
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


class _ScriptedMeter:
    """The host's CPU share as a script of readings (the input, not the part under test)."""

    def __init__(self, *reads: float) -> None:
        self.reads = iter(reads)

    def percent(self) -> float:
        return next(self.reads)


def test_the_cpu_share_is_read_over_a_window_not_per_pass(tmp_path: Path) -> None:
    """Two passes milliseconds apart must not read the share twice: the second answer would
    be the meaningless 0.0 of an empty interval (an idle host for admission)."""
    sampler = telemetry.Sampler(tmp_path, meter=_ScriptedMeter(97.0, 12.0))  # type: ignore[arg-type]
    assert sampler.sample(100.0)["cpu_pct"] == 97.0
    assert sampler.sample(100.0 + telemetry.CPU_WINDOW_S / 10)["cpu_pct"] == 97.0
    assert sampler.sample(100.0 + telemetry.CPU_WINDOW_S)["cpu_pct"] == 12.0


# ---------------------------------------------------------------- /proc and /sys


def test_a_burning_process_shows_in_the_host_cpu_share_and_its_times() -> None:
    meter = _procfs.CpuMeter()
    with _tasks(_BURN) as root:
        (pid, before), *_ = _procfs.descendants(root.pid).items()
        assert before.ppid == root.pid and _procfs.proc_times(pid) is not None
        wait_until(lambda: _cpu_s(pid) >= before.cpu_s + 0.2, 60.0, "the burner's CPU time")
    assert 0.0 < meter.percent() <= 100.0  # it burnt on this host in between
    assert _procfs.proc_times(root.pid) is None  # killed and reaped (by us)


def _cpu_s(pid: int) -> float:
    times = _procfs.proc_times(pid)
    return 0.0 if times is None else times.cpu_s


def test_descendants_are_the_whole_tree_below_the_root_only() -> None:
    with _tasks(_SLEEP) as root:
        below = _procfs.descendants(root.pid)
        assert len(below) == 1 and root.pid not in below
        assert _procfs.descendants(next(iter(below))) == {}
        assert root.pid in _procfs.descendants(os.getpid())


def test_memory_is_the_kernels_total_and_available(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    total, available = _procfs.memory_mb()
    assert 0 < available <= total
    old_kernel = tmp_path / "meminfo"  # before 3.14: no MemAvailable
    old_kernel.write_text(
        "MemTotal: 2048000 kB\nMemFree: 102400 kB\nBuffers: 51200 kB\nCached: 204800 kB\n"
    )
    monkeypatch.setattr(_procfs, "_MEMINFO_PATH", old_kernel)
    assert _procfs.memory_mb() == (2000.0, 350.0)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, None),
        ({"AC/online": "1"}, None),
        ({"BAT0/capacity": "81"}, 81.0),
        ({"BAT1/energy_now": "30", "BAT1/energy_full": "40", "BAT1/capacity": "1"}, 75.0),
        ({"BAT0/charge_now": "0", "BAT0/charge_full": "40"}, 0.0),
        ({"BAT0/charge_now": "5", "BAT0/charge_full": "10", "BAT9/capacity": "3"}, 50.0),
        ({"BAT0/status": "Unknown"}, None),
    ],
)
def test_the_battery_is_the_first_one_sys_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str], expected: float | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text + "\n")
    monkeypatch.setattr(_procfs, "_POWER_SUPPLY", tmp_path)
    assert _procfs.battery_pct() == expected
    monkeypatch.setattr(_procfs, "_POWER_SUPPLY", tmp_path / "absent")
    assert _procfs.battery_pct() is None


def test_the_agent_imports_no_psutil() -> None:
    """The reads psutil would make are made directly: importing it cost an idle agent ~0.8 MB
    (docs/agent.md, "Footprint")."""
    code = "import sys, edge_agent.agent, edge_agent.cli; print('psutil' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
