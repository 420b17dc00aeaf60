"""The judging half of the testbed on a recorded run built by hand: real CRDT
records in SQLite files laid out like a run directory, ledger lines, a history.

Checks that ``collect`` reads both sides through the processes' ``dump`` commands
(configs written as the runner writes them) and hashes them with one function,
that ``judge`` writes ``report.json`` and both plots, that a diverged agent or an
overlapping strong task turns the verdict invalid, and that ``continuum testbed
check DIR`` exits 0 / 1 accordingly."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from cloud.store import Store, TaskRow
from shared.clocks import Timestamp
from shared.crdt import AttemptStatus, TaskRecord, new_record, place, set_status, start_attempt
from simulations.testbed import cli, collect
from simulations.testbed.observe import Observer
from simulations.testbed.plan import NodeSpec
from simulations.testbed.processes import AgentProcess, ControllerProcess
from simulations.testbed.report import judge

T0 = 1_800_000_000.0
NODES = ["agent-1", "agent-2"]


def _ts(t: float, node: str) -> Timestamp:
    return Timestamp(int(t * 1000), 0, node)


def finished_record(tid: str, node: str, t: float, *, status: AttemptStatus) -> TaskRecord:
    spec = {"id": tid, "command": ["true"]}
    rec = new_record(tid, spec, writer="controller", hlc=_ts(t, "controller"))
    rec = rec.merge(
        place(
            rec,
            epoch=1,
            node=node,
            level="causal",
            lease_s=None,
            writer="controller",
            hlc=_ts(t + 0.1, "controller"),
        )
    )
    dot, delta = start_attempt(rec, node=node, epoch=1, writer=node, hlc=_ts(t + 0.2, node))
    rec = rec.merge(delta)
    return rec.merge(set_status(rec, dot, status, writer=node, hlc=_ts(t + 1, node), exit_code=0))


def write_db(path: Path, table: str, records: dict[str, TaskRecord], outbox: int = 0) -> None:
    """An agent's journal as its dump reads it (the tables it reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE {table} (task_id TEXT PRIMARY KEY, record TEXT, status TEXT)")
    conn.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY, task_id TEXT, delta TEXT)")
    for tid, rec in records.items():
        row = (tid, json.dumps(rec.to_dict()), "succeeded")
        conn.execute(f"INSERT INTO {table} VALUES (?, ?, ?)", row)
    for i in range(outbox):
        conn.execute("INSERT INTO outbox VALUES (?, 't', '{}')", (i,))
    conn.commit()
    conn.close()


def ledger_lines(tid: str, attempt: str, start: float, end: float) -> list[dict[str, Any]]:
    node = attempt.split(":")[0]
    base = {"task": tid, "attempt": attempt, "node": node, "epoch": 1, "pid": hash(attempt) % 9999}
    return [{**base, "event": "start", "t": start}, {**base, "event": "end", "t": end, "exit": 0}]


def make_run(tmp: Path, *, diverge: bool = False, overlap: bool = False) -> Path:
    """Two tasks (t1 strong on agent-1, t2 causal on agent-2), agent-1 cut 2..6 s."""
    run = tmp / "run"
    recs = {
        "t1": finished_record("t1", "agent-1", T0 + 1, status=AttemptStatus.SUCCEEDED),
        "t2": finished_record("t2", "agent-2", T0 + 1, status=AttemptStatus.SUCCEEDED),
    }
    ControllerProcess.create(run / "controller", broker_host="127.0.0.1", broker_port=1)
    for n in NODES:
        node = NodeSpec(n, "edge", {}, 2.0, 1024)
        AgentProcess.create(node, run / "agents" / n, broker_host="127.0.0.1", broker_port=1)
    store = Store(collect.controller_db(run))  # the controller's own store
    store.put_tasks(
        [
            TaskRow(tid, rec.to_dict(), "succeeded", None, 0, None, None, 50, "h", 1, 1)
            for tid, rec in recs.items()
        ]
    )
    store.close()
    stale = finished_record("t1", "agent-1", T0 + 1, status=AttemptStatus.STARTED)
    write_db(
        collect.agent_journal(run, "agent-1"), "records", {"t1": stale if diverge else recs["t1"]}
    )
    write_db(collect.agent_journal(run, "agent-2"), "records", {"t2": recs["t2"]})
    history = [
        {
            "process": "client",
            "type": "invoke",
            "f": "submit",
            "wall": T0 + 0.5,
            "time": 0.5,
            "value": {
                "request": 1,
                "tasks": [{"task_id": "t1", "level": "strong", "depends_on": []}],
            },
        },
        {"process": "client", "type": "ok", "f": "submit", "value": {"request": 1}},
        {
            "process": "client",
            "type": "invoke",
            "f": "submit",
            "wall": T0 + 0.6,
            "time": 0.6,
            "value": {
                "request": 2,
                "tasks": [{"task_id": "t2", "level": "causal", "depends_on": []}],
            },
        },
        {"process": "client", "type": "ok", "f": "submit", "value": {"request": 2}},
        {
            "process": "nemesis",
            "type": "info",
            "f": "partition",
            "wall": T0 + 2,
            "value": {"nodes": ["agent-1"]},
        },
        {
            "process": "nemesis",
            "type": "info",
            "f": "heal",
            "wall": T0 + 6,
            "value": {"nodes": ["agent-1"]},
        },
        {
            "process": "monitor",
            "type": "info",
            "f": "converged",
            "wall": T0 + 6.4,
            "value": {"cause": "heal", "node": "agent-1", "heal_at": 6.0, "after_s": 0.4},
        },
        {
            "process": "testbed",
            "type": "info",
            "f": "settled",
            "wall": T0 + 7,
            "value": {
                "quiescent": True,
                "liveness_bound_s": 30.0,
                "open_at_first_look": 1,
                "terminal_after_heal_s": {"t1": 0.5},
                "still_open": [],
            },
        },
    ]
    run.mkdir(exist_ok=True)
    (run / collect.HISTORY).write_text("".join(json.dumps(op) + "\n" for op in history))
    ledger = collect.ledger_dir(run)
    ledger.mkdir()
    lines1 = ledger_lines("t1", "agent-1:1", T0 + 1.2, T0 + 3.0)
    if overlap:
        lines1 += ledger_lines("t1", "agent-2:1", T0 + 2.0, T0 + 4.0)
    (ledger / "agent-1.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines1))
    lines2 = ledger_lines("t2", "agent-2:1", T0 + 1.2, T0 + 2.0)
    (ledger / "agent-2.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines2) + '{"torn')
    plan = {"scenario": "hand-made", "seed": 1, "nodes": [{"node_id": n} for n in NODES]}
    (run / "plan.json").write_text(json.dumps(plan))
    collected = {
        "state": collect.collect_state(run, NODES),
        "t0_wall": T0,
        "end_wall": T0 + 10,
        "broker": "mosquitto",
        "bytes": {
            n: {"bytes_up": 10, "bytes_down": 20, "connections": 1, "resets": 0} for n in NODES
        },
        "timings": {"setup_s": 1.0},
        "settle": {"quiescent": True, "after_s": 0.5},
    }
    (run / collect.COLLECTED).write_text(json.dumps(collected))
    return run


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One clean run for the tests that only read it or judge it again (each dump starts
    a process: built once, not once per test)."""
    return make_run(tmp_path_factory.mktemp("clean"))


def test_collect_hashes_both_sides_with_one_function(clean_run: Path) -> None:
    run = clean_run
    state = collect.collect_state(run, [*NODES, "agent-9"])
    assert state["controller"]["t1"]["status"] == "succeeded"
    assert state["agents"]["agent-1"]["t1"] == state["controller"]["t1"]["hash"]
    assert state["agents"]["agent-9"] is None and "agent-9" in state["errors"][0]
    assert "agent.toml" in state["errors"][0]  # no config: no dump
    assert collect.outbox_depth(collect.agent_journal(run, "agent-1")) == 0
    observer = Observer(run, NODES, max_age_s=0.0)
    assert observer.status_counts() == {"succeeded": 2}
    hasher = collect.Hasher()  # the live monitors' memoised path agrees with the judge's
    ctl = hasher.controller(collect.controller_db(run))
    assert ctl["t1"] == ("succeeded", state["controller"]["t1"]["hash"])
    agent_2 = collect.journal_records(collect.agent_journal(run, "agent-2"))
    assert hasher.hashes(agent_2) == state["agents"]["agent-2"]
    assert observer.node_converged("agent-2", ctl)


def test_judge_clean_run_writes_report_and_plots(clean_run: Path) -> None:
    run = clean_run
    report = judge(run)
    assert report["valid"] is True, report["invariants"]
    saved = json.loads((run / collect.REPORT).read_text())
    assert saved["valid"] is True
    for path in report["plots"].values():
        assert Path(path).stat().st_size > 5_000  # a real PNG, not an empty file
    t = report["timings"]
    assert t["convergence_after_heal_max_s"] == pytest.approx(0.4)
    assert t["latency_s"]["strong"]["p50"] == pytest.approx(2.5)  # 0.5 → 3.0
    # t1 ended at 3.0 while agent-1 was cut (2..6): one of two completions.
    assert t["completed_while_partitioned"] == 1 and t["completed_executions"] == 2
    assert report["bytes"]["agent-1"]["bytes_down"] == 20


def test_diverged_replica_fails_convergence(tmp_path: Path) -> None:
    report = judge(make_run(tmp_path, diverge=True), recollect=True)
    assert report["valid"] is False
    assert report["invariants"]["convergence"]["valid"] is False
    assert report["invariants"]["convergence"]["counts"]["diverged"] == 1


def test_check_cli_exit_status(
    clean_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["check", str(clean_run)]) == 0
    bad = make_run(tmp_path / "b", overlap=True)
    assert cli.main(["check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "INVALID" in out
    assert cli.main(["check", str(tmp_path / "nothing")]) == 2


def test_list_names_every_shipped_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in (
        "partition-basic",
        "flapping-link",
        "agent-crash",
        "controller-restart",
        "cloud-outage",
        "asymmetric",
        "strong-vs-eventual",
        "reconnect-storm",
        "random",
    ):
        assert name in out
