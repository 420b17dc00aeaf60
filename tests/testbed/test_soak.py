"""The soak's plan and summary (pure parts; the runs themselves are `make soak`)."""

from __future__ import annotations

from pathlib import Path

from simulations.testbed.soak import DEMO, Job, Outcome, jobs, lease_for, shipped, summarize


def test_jobs_interleave_brokers_and_cover_every_scenario() -> None:
    todo = jobs(["mosquitto", "embedded"], demo=2, seeds=3, lossy=0.05)
    assert [j.broker for j in todo[:4]] == ["mosquitto", "embedded"] * 2
    demos = [j for j in todo if j.kind == "demo"]
    assert len(demos) == 4 and all(j.lossy is None and j.lease_s is None for j in demos)
    others = {j.scenario for j in todo if j.kind == "scenario"}
    assert others == set(shipped()) - {DEMO, "random"}
    assert all(3.0 <= (j.lease_s or 0) <= 6.0 for j in todo if j.kind == "scenario")
    assert [j.seed for j in todo if j.kind == "random"] == [1, 1, 2, 2, 3, 3]
    assert len({j.name for j in todo}) == len(todo)
    assert lease_for("asymmetric") == lease_for("asymmetric")
    argv = Job("scenario", "asymmetric", "embedded", lease_s=4.2, lossy=0.05).argv(Path("runs/x"))
    assert argv[-4:] == ["--lease-s", "4.2", "--lossy", "0.05"]
    rerun = jobs(["embedded"], demo=2, seeds=2, lossy=None, only=["random", "asymmetric"])
    assert [j.name for j in rerun] == [
        "embedded-asymmetric",
        "embedded-random-s1",
        "embedded-random-s2",
    ]


def test_summary_counts_valid_runs_and_names_the_rest() -> None:
    ok = Outcome(
        Job("demo", DEMO, "embedded", index=1),
        "VALID",
        50.0,
        45.0,
        autonomy="a: 9 of 14",
        autonomy_share=9 / 14,
        load=3.5,
    )
    bad = Outcome(
        Job("random", "random", "embedded", seed=4),
        "INVALID",
        90.0,
        88.0,
        {"liveness": {"counts": {"never": 1}, "example": None}},
    )
    text = summarize([ok, bad], [Job("random", "random", "embedded", seed=5)])
    assert "| embedded | demo: 1 | 1 | 0 | 45 / 45 | - |" in text
    assert "| embedded | random seeds: 1 | 0 | 1 | 88 / 88 | liveness x1 |" in text
    assert "embedded-random-s4" in text and "a: 9 of 14" in text
    assert "Not run (budget): 1 runs" in text
    assert "- embedded: VALID 1 of 1, under 2 min 1 of 1, autonomy shown 1 of 1" in text
    assert "median 3.5, max 3.5" in text
