"""``edge-agent dump`` and ``cloud-controller dump``: every task record a process holds
(and the agent's outbox depth) as one JSON document, read while the store is open for
writing, without changing it; a missing or unreadable store is an error, not an empty
dump."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cloud import cli as controller_cli
from cloud.store import Store, TaskRow
from edge_agent import cli as agent_cli
from edge_agent.journal import Journal
from shared.clocks import HybridClock
from shared.crdt import content_hash, new_record
from shared.model import parse_task_spec
from simulations.testbed.collect import collect_state

pytestmark = pytest.mark.timeout(60)


def record(task_id: str, writer: str) -> dict[str, Any]:
    spec = parse_task_spec({"id": task_id, "command": ["true"]}).to_dict()
    return new_record(task_id, spec, writer=writer, hlc=HybridClock(writer).now(1)).to_dict()


def agent_config(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f'[node]\nid = "edge-1"\nstate_dir = "{tmp_path / "state"}"\n'
        '[broker]\nhost = "127.0.0.1"\n',
        encoding="utf-8",
    )
    return path


def controller_config(tmp_path: Path) -> Path:
    path = tmp_path / "controller.toml"
    path.write_text(
        f'[controller]\nstate_dir = "{tmp_path / "state"}"\n[api]\ntoken = "t"\n',
        encoding="utf-8",
    )
    return path


def test_agent_dump_prints_records_and_outbox_while_the_journal_is_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = agent_config(tmp_path)
    (tmp_path / "state").mkdir()
    journal = Journal(tmp_path / "state" / "journal.sqlite")  # the agent's writer, kept open
    recs = {t: record(t, "edge-1") for t in ("edge-1:a", "t-2")}
    with journal.transaction():
        for tid, rec in recs.items():
            journal.put_record(
                tid, rec, status="pending", epoch=None, node=None, level=None, now_ms=1
            )
        journal.add_outbox("t-2", {"delta": 1}, now_ms=1)
    before = (tmp_path / "state" / "journal.sqlite").read_bytes()

    assert agent_cli.main(["dump", "--config", str(config)]) == 0
    doc = json.loads(capsys.readouterr().out)

    assert doc == {
        "version": 1,
        "kind": "edge-agent",
        "node_id": "edge-1",
        "records": recs,
        "outbox_depth": 1,
    }
    assert (tmp_path / "state" / "journal.sqlite").read_bytes() == before
    journal.close()


def test_agent_dump_without_a_journal_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert agent_cli.main(["dump", "--config", str(agent_config(tmp_path))]) == 2
    assert "journal.sqlite" in capsys.readouterr().err


def test_controller_dump_prints_every_record_while_the_store_is_open(tmp_path: Path) -> None:
    """Through the console entry, as the testbed calls it (a separate process)."""
    config = controller_config(tmp_path)
    store = Store(tmp_path / "state" / "controller.db")  # the controller's writer, kept open
    recs = {t: record(t, "controller") for t in ("t-1", "t-2")}
    store.put_tasks(
        [
            TaskRow(tid, rec, "pending", None, 0, None, None, 50, "h", 1, 1)
            for tid, rec in recs.items()
        ]
    )
    presumed = {"kind": "presumed_lost", "reason": "node partitioned; re-placed"}
    store.append_events(
        [
            {**presumed, "ts_ms": 1_000, "task_id": "t-1", "node_id": "n1", "epoch": 1,
             "data": {"attempt": "n1:3"}},
            {"ts_ms": 1_001, "kind": "placed", "reason": "x", "task_id": "t-2", "data": {}},
        ]
    )  # fmt: skip
    code = "import sys; from cloud.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run(
        [sys.executable, "-c", code, "dump", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["kind"] == "controller" and doc["version"] == 1
    assert doc["records"] == recs
    # what the controller inferred lost, which a node's later report outranks in the record
    assert doc["presumed_lost"] == [
        {"task_id": "t-1", "node_id": "n1", "epoch": 1, "attempt": "n1:3", "ts_ms": 1_000}
    ]
    # the judge hashes each side's record itself: what the dump gives is the stored record
    assert {t: content_hash_of(r) for t, r in doc["records"].items()} == {
        t: content_hash_of(r) for t, r in recs.items()
    }
    store.close()


def content_hash_of(rec: dict[str, Any]) -> str:
    from shared.crdt import TaskRecord

    return content_hash(TaskRecord.from_dict(rec))


def test_controller_dump_without_a_store_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert controller_cli.main(["dump", "--config", str(controller_config(tmp_path))]) == 1
    assert "could not be read" in capsys.readouterr().err


def test_the_testbed_takes_what_the_controller_presumed_lost_for_a_confirmed_loss(
    tmp_path: Path,
) -> None:
    """A re-placement's ``lost`` mark is outranked in the record by the old node's own later
    report (success wins); the testbed's collection still finds it, through the dump, as a
    confirmed loss (what invariant 5 accepts a causal re-run after)."""
    (tmp_path / "controller").mkdir()
    controller_config(tmp_path / "controller")
    store = Store(tmp_path / "controller" / "state" / "controller.db")
    rec = record("t-1", "controller")
    store.put_tasks([TaskRow("t-1", rec, "succeeded", None, 0, None, None, 50, "h", 1, 1)])
    store.append_events(
        [
            {"ts_ms": 2_500, "kind": "presumed_lost", "reason": "node partitioned; re-placed",
             "task_id": "t-1", "node_id": "n1", "epoch": 1, "data": {"attempt": "n1:3"}},
        ]
    )  # fmt: skip
    store.close()
    state = collect_state(tmp_path, [])
    assert state["errors"] == []
    assert state["losses"] == [{"task_id": "t-1", "node": "n1", "dot": "n1:3", "wall": 2.5}]
