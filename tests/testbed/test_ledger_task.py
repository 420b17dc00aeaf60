"""The workload task writes the ledger the checker trusts: start/tick/end lines with
the agent's context, per-node files, a result, an exit status, and an end line on
SIGTERM (fencing)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulations.testbed import ledger_task
from simulations.testbed.checker import executions

pytestmark = pytest.mark.timeout(60)


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "CONTINUUM_LEDGER": str(tmp_path / "{node}.jsonl"),
        "CONTINUUM_TASK_ID": "t-1",
        "CONTINUUM_ATTEMPT": "edge-1:3",
        "CONTINUUM_EPOCH": "2",
        **extra,
    }


def read(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_writes_start_ticks_end_and_result(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [
            sys.executable,
            ledger_task.__file__,
            "--sleep-ms",
            "250",
            "--tick-ms",
            "50",
            "--exit",
            "3",
            "--output",
            '{"n": 1}',
        ],
        env=env_for(tmp_path, CONTINUUM_OUTPUT=str(out)),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 3
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"n": 1}
    assert json.loads(out.read_text()) == {"n": 1}
    lines = read(tmp_path / "edge-1.jsonl")
    assert lines[0]["event"] == "start" and lines[-1]["event"] == "end"
    assert any(x["event"] == "tick" for x in lines)
    assert lines[0]["task"] == "t-1" and lines[0]["epoch"] == 2 and lines[0]["node"] == "edge-1"
    (run,) = executions(lines)["t-1"]
    assert run.exit_code == 3 and run.end is not None and run.end >= run.start


def test_sigterm_records_the_end(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulations.testbed.ledger_task", "--sleep-ms", "30000"],
        env=env_for(tmp_path),
    )
    path = tmp_path / "edge-1.jsonl"
    deadline = time.monotonic() + 20
    while not (path.exists() and path.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM
    (run,) = executions(read(path))["t-1"]
    assert run.exit_code == -signal.SIGTERM and not run.succeeded


def test_without_ledger_env_it_refuses(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CONTINUUM_LEDGER"}
    proc = subprocess.run(
        [sys.executable, ledger_task.__file__], env=env, capture_output=True, check=False
    )
    assert proc.returncode == 2


def test_a_slow_node_stretches_the_work(tmp_path: Path) -> None:
    """``CONTINUUM_TB_SPEEDS`` (the scenario's speed factors): on a node of speed 0.25,
    100 ms of work lasts at least 400 ms; a node missing from the file runs at speed 1."""
    speeds = tmp_path / "speeds.json"
    speeds.write_text(json.dumps({"edge-1": 0.25}))
    for attempt in ("edge-1:1", "edge-2:1"):
        env = env_for(tmp_path, CONTINUUM_TB_SPEEDS=str(speeds), CONTINUUM_ATTEMPT=attempt)
        proc = subprocess.run(
            [sys.executable, ledger_task.__file__, "--sleep-ms", "100"], env=env, check=False
        )
        assert proc.returncode == 0
    slow = read(tmp_path / "edge-1.jsonl")
    assert slow[0]["speed"] == 0.25
    (run,) = executions(slow)["t-1"]
    assert run.end is not None and run.end - run.start >= 0.4 * 0.99
    assert read(tmp_path / "edge-2.jsonl")[0]["speed"] == 1.0
