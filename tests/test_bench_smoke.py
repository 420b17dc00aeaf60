"""The benchmark scripts still run. ``make bench`` is not part of CI, and two scripts had
stopped running without anyone seeing (bench_placement's baseline drifted from the rule,
bench_traffic hit the API's rate limit: session 13). Every ``benchmarks/bench_*.py`` runs
here at a small size, through the environment knobs its docstring names (their defaults
are ``make bench``'s run); what is checked is that each exits 0 and reports every figure it
names, never a figure's value (the suite asserts no speed). A figure whose name embeds a
size follows the knob; one whose name embeds what the run found (a task count, the levels
a testbed run saw) is matched by a pattern.

Two cases take longer than the others, about 40 s each on a quiet 2-core machine, because
they run real testbed scenarios whose length the script does not choose: bench_testbed
(a convergence run whose agents are cut for 2 and 4 s, then a storm of 2 agents: the
storm's timeline is 9 s plus its settle) and bench_realgap (one testbed run of
partition-basic, a 34 s scenario, and its simulation). The rest take a few seconds to
about 10 s each."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

# The sizes the figures' names embed.
BACKLOG_PENDING = 200
PLACEMENT_SHAPES, PLACEMENT_RUNS = 60, 2
SIM_SLICE_S, SIM_LOOP_EVENTS = 5, 20_000
TESTBED_OFFLINE_S, TESTBED_UPDATES, STORM_AGENTS = (2, 4), (6, 10), 2
SIM_GOALS = ("wan-100ms", "partitions-frequent", "outages-long", "pureedgesim-10k")
#: The held-out scenarios among SIM_GOALS, and those that declare adaptive consistency.
HELD_OUT, CONSISTENCY = {"outages-long"}, {"partitions-frequent", "outages-long"}

Figure = str | re.Pattern[str]


def _sim_goals_figures() -> set[Figure]:
    out: set[Figure] = set()
    for name in SIM_GOALS:
        label = f"{name} (held out)" if name in HELD_OUT else name
        out |= {
            f"sim goals: {label} {mode} deadline miss"
            for mode in ("cloud_only", "edge_only", "hybrid_static", "hybrid_dynamic", "adaptive")
        }
        out |= {
            f"sim goals: {label} {what}"
            for what in (
                "adaptive miss minus the best other mode",
                "adaptive WAN / cloud_only WAN",
                "adaptive energy / lowest mode's",
                "adaptive energy / the floor for running every task",
                "tasks whose submission reaches the controller after the deadline",
                "tasks that reach neither the controller nor a site agent in time",
            )
        }
        if name in CONSISTENCY:
            out |= {
                f"sim goals: {name} {what}"
                for what in (
                    "adaptive consistency miss minus the best fixed level",
                    "adaptive consistency harm minus causal's",
                    "fixed levels adaptive consistency beats on misses or harm",
                )
            }
    out.add("sim goals: wan-100ms adaptive miss minus edge_only's")
    out.add("sim goals: pureedgesim-10k adaptive deadline miss (goal ≤ 0.5 %)")
    return out


#: script -> (its knobs at a small size, ``{tmp}`` the test's own directory; the figures
#: it must report)
CASES: dict[str, tuple[dict[str, str], set[Figure]]] = {
    "bench_agent.py": (
        {"BENCH_AGENT_ONLY": "dispatch", "BENCH_AGENT_TASKS": "20"},
        {"agent no-op dispatch", "agent CPU per no-op task"},
    ),
    "bench_backlog.py": (
        {
            "BENCH_BACKLOG_PENDING": str(BACKLOG_PENDING),
            "BENCH_BACKLOG_IDLE_S": "2",
            "BENCH_BACKLOG_LATENCY_POSTS": "100",
            "BENCH_BACKLOG_RATE_POSTS": "100",
        },
        {
            f"backlog: {what}, {BACKLOG_PENDING:,} pending"
            for what in (
                "controller idle CPU",
                "POST /api/v1/tasks p99",
                "POST p99 while tasks finish",
                "sustained POSTs",
            )
        },
    ),
    "bench_crdt.py": (
        {"BENCH_CRDT_RECORDS": "200", "BENCH_CRDT_MIN_S": "0.1"},
        {
            "crdt record merges/s (status delta into full record)",
            "crdt delta merges/s from the wire (bytes → validated record → merge)",
            "crdt full-record merges/s (concurrent replicas, anti-entropy path)",
            "crdt status delta / full record bytes (wire form)",
        },
    ),
    "bench_ingest.py": (
        {"BENCH_INGEST_TASKS_PER_NODE": "20", "BENCH_INGEST_BASELINE_TASKS_PER_NODE": "5"},
        {"ingest: delta messages merged and persisted"},
    ),
    "bench_placement.py": (
        {
            "BENCH_PLACEMENT_NODES": "300",
            "BENCH_PLACEMENT_TASKS": "600",
            "BENCH_PLACEMENT_SHAPES": str(PLACEMENT_SHAPES),
            "BENCH_PLACEMENT_BASELINE_TASKS": "100",
            "BENCH_PLACEMENT_RUNS": str(PLACEMENT_RUNS),
        },
        {
            f"placement throughput (place_batch, adaptive, {PLACEMENT_SHAPES:,} shapes)",
            f"placement memory growth ({PLACEMENT_SHAPES:,} shapes, {PLACEMENT_RUNS} runs)",
        },
    ),
    "bench_realgap.py": (
        {
            "CONTINUUM_REALGAP_RUNS": "1",
            "CONTINUUM_REALGAP_SCENARIOS": "partition-basic",
            "CONTINUUM_REALGAP_DIR": "{tmp}/runs",
        },
        # Which levels a figure exists for is the scenario's plan; a figure without
        # enough samples on a side is named without its gap.
        {
            re.compile(
                rf"realgap: partition-basic {what}(, \|sim / testbed - 1\|)?",
            )
            for what in (
                r"\w+ latency p50",
                r"\w+ latency p95",
                "convergence after heal p50",
                "convergence after heal max",
            )
        },
    ),
    "bench_sim.py": (
        {
            "SIM_BENCH_DURATION_S": "5",
            "SIM_BENCH_SLICE_S": str(SIM_SLICE_S),
            "SIM_BENCH_LOOP_EVENTS": str(SIM_LOOP_EVENTS),
            # the build `make bench` runs (the suite's own processes run interpreted)
            "CONTINUUM_SIM_NATIVE": "1",
        },
        {
            *(
                re.compile(rf"sim: pureedgesim-10k {mode} wall \(5 s simulated, [\d,]+ tasks\)")
                for mode in ("hybrid_dynamic", "adaptive")
            ),
            "sim: pureedgesim-10k events/s (heap loop)",
            f"sim: event loop alone, heap vs SimPy ({SIM_LOOP_EVENTS:,} events, 1000 pending)",
            f"sim: whole simulation events/s, heap loop vs SimPy ({SIM_SLICE_S} s slice)",
            *(
                f"sim: wall, cached batch placer vs shared place_batch per tick, {mode} "
                f"({SIM_SLICE_S} s slice)"
                for mode in ("hybrid_dynamic", "adaptive")
            ),
            "sim: pureedgesim-10k adaptive wall, this process's build vs interpreted "
            "(5 s simulated)",
        },
    ),
    "bench_sim_goals.py": (
        {
            "SIM_GOALS_QUICK": "1",
            "SIM_GOALS_QUICK_S": "10",
            "SIM_GOALS_ONLY": ",".join(SIM_GOALS),
            "SIM_GOALS_JOBS": "1",
            "SIM_GOALS_RUNS": "",
        },
        _sim_goals_figures(),
    ),
    "bench_testbed.py": (
        {
            "BENCH_TESTBED_OFFLINE_S": ",".join(map(str, TESTBED_OFFLINE_S)),
            "BENCH_TESTBED_UPDATES": ",".join(map(str, TESTBED_UPDATES)),
            "CONTINUUM_BENCH_STORM_AGENTS": str(STORM_AGENTS),
        },
        {
            *(
                f"converge after heal, {offline} s offline, ~{updates} updates"
                for offline in TESTBED_OFFLINE_S
                for updates in TESTBED_UPDATES
            ),
            f"reconnect storm: {STORM_AGENTS} agents healed at once, last converged",
        },
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
#: The scripts that start brokers of their own (the others compute in-process).
NEED_BROKER = {
    "bench_agent.py",
    "bench_backlog.py",
    "bench_ingest.py",
    "bench_realgap.py",
    "bench_testbed.py",
    "bench_traffic.py",
}


def test_every_benchmark_script_has_a_case() -> None:
    assert {p.name for p in BENCHMARKS.glob("bench_*.py")} == set(CASES)


def _reported(figure: Figure, names: set[str]) -> bool:
    if isinstance(figure, re.Pattern):
        return any(figure.fullmatch(name) for name in names)
    return figure in names


@pytest.mark.timeout(360)
@pytest.mark.parametrize("script", sorted(CASES))
def test_a_benchmark_script_runs_and_reports_its_figures(
    script: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """(The scripts that start brokers of their own ask for ``mosquitto``: the fixture is
    what skips, or fails in CI, where none can be started.)"""
    if script in NEED_BROKER:
        request.getfixturevalue("mosquitto")
    knobs, figures = CASES[script]
    out = tmp_path / "figures.jsonl"
    env = {
        **os.environ,
        **{name: value.format(tmp=tmp_path) for name, value in knobs.items()},
        "CONTINUUM_BENCH_OUT": str(out),
        "PYTHONPATH": str(BENCHMARKS),
    }
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    names = {json.loads(line)["name"] for line in out.read_text().splitlines() if line.strip()}
    missing = [f for f in figures if not _reported(f, names)]
    assert not missing, (missing, sorted(names))


def test_a_figure_of_zero_has_no_ratio_rather_than_a_crash(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An idle process measured at 0.00 % CPU over a short window (bench_backlog in a fresh
    clone's CI) divided its baseline by zero and ended the script."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setenv("CONTINUUM_BENCH_OUT", str(tmp_path / "figures.jsonl"))
    from _report import emit

    assert emit("idle", measured=0.0, unit="%", direction="lower", baseline=0.5)["ratio"] is None
    assert emit("idle", measured=1.0, unit="%", direction="lower", baseline=0.5)["ratio"] == 0.5
    assert emit("rate", measured=0.0, unit="/s", baseline=2.0)["ratio"] == 0.0
