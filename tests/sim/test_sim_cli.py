"""The ``continuum simulate`` command line: run, sweep, list, realgap."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from simulations.sim.cli import main
from simulations.sim.runner import grid, parse_param, sweep
from simulations.sim.scenario import scenario_dir

SMALL = """
kind = "sim"
name = "cli-small"
duration_s = 20
seed = 2
policies = ["cloud_only", "edge_only"]
[topology]
sites = 2
[topology.device]
count = 40
[workload]
rate_per_device = 0.5
[[workload.types]]
name = "t"
compute_mi = [100, 300]
"""


@pytest.fixture()
def scenario(tmp_path: Path) -> Path:
    path = tmp_path / "small.toml"
    path.write_text(SMALL, encoding="utf-8")
    return path


def test_run_writes_csv_json_and_plots(scenario: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert (
        main(
            [
                str(scenario),
                "--out",
                str(out),
                "--policy",
                "edge_only",
                "--policy",
                "cloud_only/strong",
            ]
        )
        == 0
    )
    with (out / "results.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["policy"] for r in rows] == ["edge_only/declared", "cloud_only/strong"]
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert data[0]["generated"] > 0 and "p95" in data[0]["latency_percentiles_s"]
    for png in ("metrics.png", "latency_cdf.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_bad_input_is_reported_not_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('kind = "sim"\nname = "b"\nduration_s = 0\n', encoding="utf-8")
    assert main([str(bad), "--out", str(tmp_path / "o")]) == 2
    assert main(["no-such-scenario"]) == 2
    assert main([str(bad), "--policy", "warp"]) == 2


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    assert "pureedgesim-10k" in capsys.readouterr().out


def test_sweep_grid_and_processes_agree(scenario: Path, tmp_path: Path) -> None:
    params = [parse_param("links.wan.latency_ms=20,100"), parse_param("seed=1,2")]
    assert grid(params) == [
        {"links.wan.latency_ms": 20, "seed": 1},
        {"links.wan.latency_ms": 20, "seed": 2},
        {"links.wan.latency_ms": 100, "seed": 1},
        {"links.wan.latency_ms": 100, "seed": 2},
    ]
    one = sweep(scenario, params[:1], jobs=1)
    two = sweep(scenario, params[:1], jobs=2)
    assert [(r.params, r.policy) for r in one] == [(r.params, r.policy) for r in two]
    assert [r.latencies for r in one] == [r.latencies for r in two]
    cloud = {r.params["links.wan.latency_ms"]: r for r in one if r.policy.startswith("cloud")}
    assert cloud[100].metrics["latency_mean_s"] > cloud[20].metrics["latency_mean_s"]
    out = tmp_path / "sw"
    assert (
        main(
            [
                "sweep",
                str(scenario),
                "--param",
                "links.wan.latency_ms=20,100",
                "--out",
                str(out),
                "--no-plots",
            ]
        )
        == 0
    )
    with (out / "results.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and rows[0]["param:links.wan.latency_ms"] == "20"


def test_realgap_simulates_the_testbed_demo(tmp_path: Path) -> None:
    """The testbed's partition-basic scenario, simulated: every planned task runs,
    latencies per level, convergence after the heal, and a comparison when a
    testbed report is given."""
    report = tmp_path / "report.json"
    report.write_text(
        json.dumps(
            {
                "timings": {
                    "latency_s": {"causal": {"count": 3, "p50": 0.5, "p95": 1.0, "max": 1.0}},
                    "convergence_after_heal_max_s": 2.0,
                }
            }
        ),
        encoding="utf-8",
    )
    out = tmp_path / "rg"
    assert (
        main(["realgap", "partition-basic", "--out", str(out), "--testbed-report", str(report)])
        == 0
    )
    doc = json.loads((out / "realgap.json").read_text(encoding="utf-8"))
    sim = doc["sim"]
    assert set(sim["latency_s"]) == {"adaptive", "causal", "eventual", "strong"}
    assert sum(v["count"] for v in sim["latency_s"].values()) == sim["metrics"]["succeeded"]
    assert sim["metrics"]["in_flight"] == 0 and sim["metrics"]["lost"] == 0
    # agent-1's heal, then the testbed's final heal of every agent
    conv = sim["convergence_after_heal"]
    assert [(c["node"], c["cause"]) for c in conv] == [
        ("agent-1", "partition"),
        *((f"agent-{k}", "final-heal") for k in (1, 2, 3)),
    ]
    # seen on the testbed's polls: a whole number of polls after the heal, never before
    # the controller holds what the node holds
    for c in conv:
        polls = c["after_s"] / sim["assumptions"]["poll_s"]
        assert polls >= 1 and abs(polls - round(polls)) < 1e-6
        assert c["after_s"] >= c["controller_holds_after_s"]
    assert doc["gap"]["latency"]["causal"]["p50_ratio_sim_over_testbed"] > 0
    assert doc["gap"]["convergence_max_s"]["testbed"] == 2.0


def test_shipped_scenarios_directory() -> None:
    assert (scenario_dir() / "pureedgesim-10k.toml").exists()


def test_seeds_give_mean_and_interval_and_trace_explains(scenario: Path, tmp_path: Path) -> None:
    out = tmp_path / "seeds"
    argv = [str(scenario), "--seeds", "1-3", "--trace", "4", "--out", str(out), "--no-plots"]
    assert main([*argv, "--policy", "adaptive", "--policy", "cloud_only"]) == 0
    with (out / "results.csv").open(encoding="utf-8") as fh:
        runs = list(csv.DictReader(fh))
    assert [(r["policy"], r["seed"]) for r in runs] == [
        (p, s) for p in ("adaptive/declared", "cloud_only/declared") for s in ("1", "2", "3")
    ]
    with (out / "summary.csv").open(encoding="utf-8") as fh:
        summary = list(csv.DictReader(fh))
    assert [r["seeds"] for r in summary] == ["1 2 3", "1 2 3"]
    misses = [float(r["deadline_miss_rate"]) for r in runs[:3]]
    assert float(summary[0]["deadline_miss_rate"]) == pytest.approx(sum(misses) / 3)
    assert float(summary[0]["generated:ci95"]) > 0
    traced = json.loads((out / "trace.json").read_text(encoding="utf-8"))
    assert len(traced) == 6
    adaptive = traced[0]["decisions"]
    assert 1 <= len(adaptive) <= 4
    best = adaptive[0]["candidates"][0]
    assert best["node"] == adaptive[0]["chosen"]
    # the adaptive mode explains the predicted finish, part by part
    assert {"dispatch_s", "transfer_s", "queue_s", "exec_s", "return_s", "finish_s"} <= set(
        best["terms"]
    )


def test_sweep_plots_each_metric_against_the_swept_value(scenario: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    argv = ["sweep", str(scenario), "--param", "links.wan.latency_ms=20,100", "--seeds", "1,2"]
    assert main([*argv, "--out", str(out)]) == 0
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    with (out / "summary.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["policy"], r["param:links.wan.latency_ms"]) for r in rows] == [
        ("cloud_only/declared", "20"),
        ("edge_only/declared", "20"),
        ("cloud_only/declared", "100"),
        ("edge_only/declared", "100"),
    ]
