"""Telemetry is news or a refresh (issue 14): a sample is sent when a count changed or a
figure moved by its threshold, else at most every ``REFRESH_S``; values are rounded."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.telemetry import REFRESH_S, rounded, worth_reporting


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
