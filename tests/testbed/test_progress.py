"""The live display: the panel shows what is in force, and the log mode prints
each phase and each note exactly once."""

from __future__ import annotations

import io

from rich.console import Console

from simulations.testbed.history import LiveState, NodeState
from simulations.testbed.progress import Progress, render_state


def state() -> LiveState:
    s = LiveState(phase="workload + faults", elapsed=9.5, duration=34, submitted=7, planned=36)
    s.tasks = {"running": 2, "succeeded": 5}
    s.nodes = {
        "agent-1": NodeState(alive=True, link="partitioned", outbox=4),
        "agent-2": NodeState(alive=False),
    }
    s.faults = {"agent-1": {"cut": "both"}, "controller": {"delay_ms": 300, "jitter_ms": 100}}
    return s


def test_panel_shows_faults_processes_and_counts() -> None:
    console = Console(file=io.StringIO(), width=120)
    console.print(render_state(state()))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    for text in (
        "workload + faults",
        "7/36",
        "running=2",
        "succeeded=5",
        "partitioned",
        "cut both",
        "killed",
        "delay 300±100 ms",
    ):
        assert text in out, text


def test_log_mode_prints_each_note_once() -> None:
    buf = io.StringIO()
    s = state()
    with Progress(Console(file=buf, width=120)) as show:
        for i in range(8):
            s.recent = [*s.recent[-5:], f"note {i}"]
            s.notes += 1
            show(s)
            show(s)
    out = buf.getvalue()
    assert out.count("» workload + faults") == 1
    assert all(out.count(f"note {i}") == 1 for i in range(8))
