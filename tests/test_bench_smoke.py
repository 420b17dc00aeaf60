"""The benchmark scripts still run. ``make bench`` is not part of CI, and two scripts had
stopped running without anyone seeing (bench_placement's baseline drifted from the rule,
bench_traffic hit the API's rate limit: session 13). The scripts that start real processes
run here at a size that takes seconds, through the environment knobs their docstrings name;
what is checked is that each exits 0 and reports every figure it names, never a figure's
value (the suite asserts no speed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from simulations.testbed.broker import MosquittoBroker

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
#: script -> (its knobs at a small size, the figures it must report)
CASES = {
    "bench_agent.py": (
        {"BENCH_AGENT_ONLY": "dispatch", "BENCH_AGENT_TASKS": "20"},
        {"agent no-op dispatch", "agent CPU per no-op task"},
    ),
    "bench_traffic.py": (
        {
            "BENCH_TRAFFIC_WINDOW_S": "2",
            "BENCH_TRAFFIC_HISTORY": "5",
            "BENCH_TRAFFIC_SETTLE_S": "1",
        },
        {
            "idle traffic per node, up (MQTT bytes)",
            "idle traffic per node, down (MQTT bytes)",
            "idle traffic per node, up (MQTT bytes), after 5 tasks",
            "idle traffic per node, down (MQTT bytes), after 5 tasks",
        },
    ),
}


@pytest.mark.parametrize("script", sorted(CASES))
def test_a_benchmark_script_runs_and_reports_its_figures(
    script: str, tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """(``mosquitto``: the scripts start brokers of their own; the fixture is what skips,
    or fails in CI, where none can be started.)"""
    knobs, figures = CASES[script]
    out = tmp_path / "figures.jsonl"
    env = {**os.environ, **knobs, "CONTINUUM_BENCH_OUT": str(out), "PYTHONPATH": str(BENCHMARKS)}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    names = {json.loads(line)["name"] for line in out.read_text().splitlines() if line.strip()}
    assert figures <= names, names
