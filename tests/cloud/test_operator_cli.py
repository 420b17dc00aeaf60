"""Command-line conventions of ``continuum``, ``cloud-controller`` and ``edge-agent``: global
options anywhere, ``--version``, file types by extension, checked filter values, tables that
fit 80 columns with human times and rounded numbers, paging hints, and ``submit`` of a task
that could not be placed."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from cloud.cli import build_parser as controller_parser
from cloud.operator_cli import COMMANDS, UsageError, build_parser, load_submission_file
from cloud.operator_render import human_ms, nodes_table, rounded
from edge_agent.cli import _parser as agent_parser


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "--url", "http://h:1", "nodes"],
        ["nodes", "--json", "--url", "http://h:1"],
        ["--url", "http://h:1", "nodes", "--json"],
    ],
)
def test_continuum_global_options_anywhere(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.json is True and args.url == "http://h:1" and args.command == "nodes"


def test_controller_and_agent_global_options_anywhere() -> None:
    for argv in (
        ["--config", "c.toml", "--json", "tls", "list"],
        ["tls", "list", "--json", "--config", "c.toml"],
    ):
        args = controller_parser().parse_args(argv)
        assert (args.config, args.json) == ("c.toml", True)
    for argv in (["--json", "status"], ["status", "--json"]):
        assert agent_parser().parse_args(argv).json is True
    assert agent_parser().parse_args(["status"]).json is False


@pytest.mark.parametrize("module", ["cloud.operator_cli", "cloud.cli", "edge_agent.cli"])
def test_version_on_all_three(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, "--version"], capture_output=True, text=True, check=True
    )
    assert done.stdout.split()[-1][0].isdigit() or done.stdout.strip().endswith("unknown")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("t.toml", 'id = "a"\ncommand = ["true"]\n'),
        ("t.json", '{"id": "a", "command": ["true"]}'),
        ("t.yaml", "id: a\ncommand: ['true']\n"),
        ("t.YML", "id: a\ncommand: ['true']\n"),
    ],
)
def test_submission_format_by_extension(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    assert load_submission_file(str(path)) == {"id": "a", "command": ["true"]}


def test_unknown_or_broken_files_are_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("id = 1")
    with pytest.raises(UsageError, match=r"unknown file type .*\.toml, \.json, \.yaml, \.yml"):
        load_submission_file(str(tmp_path / "t.txt"))
    (tmp_path / "t.yaml").write_text('{"id": "a", "command": ["true"]')
    with pytest.raises(UsageError, match="not valid YAML"):
        load_submission_file(str(tmp_path / "t.yaml"))


@pytest.mark.parametrize("argv", [["list", "--status", "bogus"], ["events", "--limit", "0"]])
def test_invalid_filter_values_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2


def test_tables_fit_80_columns_with_rounded_numbers() -> None:
    node = {
        "node_id": "edge-with-a-rather-long-name-0001",
        "tier": "regional",
        "link_state": "degraded",
        "presence": "online",
        "draining": True,
        "running": 12,
        "rtt_p99_ms": 12.345678901234,
    }
    data = {
        "nodes": [node] * 3,
        "system_health": {"state": "degraded", "available": 3, "total": 3, "p99_rtt_ms": 1234.5678},
    }
    out = io.StringIO()
    console = Console(file=out, width=80)
    table, summary = nodes_table(data)
    console.print(table)
    console.print(summary)
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text and "12.3" in text and "1235 ms" in text
    assert "12.345678" not in text
    assert rounded(0.04213) == "0.0421" and rounded(None) == ""


def test_times_are_clock_times() -> None:
    assert len(human_ms(1_796_200_000_000)) in (8, 11)  # HH:MM:SS today, else MM-DD HH:MM
    assert human_ms(None) == ""


class _StubApi:
    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers

    def post(self, path: str, body: object = None) -> Any:
        return self.answers[path]

    def get(self, path: str, **query: Any) -> Any:
        return self.answers[path]


def _run(argv: list[str], answers: dict[str, Any]) -> tuple[int, str]:
    args: argparse.Namespace = build_parser().parse_args(argv)
    out = io.StringIO()
    code = COMMANDS[args.command](args, _StubApi(answers), Console(file=out, width=80))  # type: ignore[arg-type]
    return code, out.getvalue()


def test_submit_of_an_unplaceable_task_prints_why(tmp_path: Path) -> None:
    spec = tmp_path / "t.toml"
    spec.write_text('id = "t1"\ncommand = ["true"]\n')
    pending = {
        "task_id": "t1",
        "status": "pending",
        "node": None,
        "blocked_reason": "no node has label gpu=yes",
    }
    code, out = _run(["submit", str(spec)], {"/api/v1/tasks": pending})
    assert code == 0
    assert "None" not in out and "not placed yet" in out and "no node has label gpu=yes" in out


def test_events_say_when_there_is_more() -> None:
    events = [
        {
            "seq": i,
            "ts_ms": 1_796_200_000_000,
            "kind": "placed",
            "task_id": "t",
            "node_id": "n",
            "epoch": 1,
            "reason": "",
        }
        for i in range(1, 3)
    ]
    page = {"events": events, "next": 2}
    code, out = _run(["events", "--limit", "2"], {"/api/v1/events": page})
    assert code == 0 and "continuum events --after 2" in out
    code, out = _run(["events", "--limit", "3"], {"/api/v1/events": page})
    assert "--after" not in out


def test_workflow_get_and_list() -> None:
    wf = {
        "workflow_id": "w1",
        "name": "etl",
        "status": "running",
        "submitted_ms": 0,
        "tasks": [
            {"task_id": "a", "status": "succeeded", "node": "n1", "depends_on": []},
            {"task_id": "b", "status": "running", "node": "n2", "depends_on": ["a"]},
        ],
    }
    code, out = _run(["workflow", "get", "w1"], {"/api/v1/workflows/w1": wf})
    assert code == 0 and "etl" in out and "b" in out
    page = {
        "workflows": [{"workflow_id": "w1", "name": "etl", "tasks": 2, "submitted_ms": 0}],
        "next": None,
    }
    code, out = _run(["workflow", "list", "--json"], {"/api/v1/workflows": page})
    assert code == 0
    code, out = _run(["workflow", "list"], {"/api/v1/workflows": page})
    assert "w1" in out and "more" not in out


def test_json_output_is_the_api_answer(capsys: pytest.CaptureFixture[str]) -> None:
    page = {"workflows": [], "next": None}
    _run(["workflow", "list", "--json"], {"/api/v1/workflows": page})
    assert json.loads(capsys.readouterr().out) == page


def test_controller_docs_show_exactly_what_init_writes() -> None:
    from cloud.config import render_default_config

    doc = (Path(__file__).resolve().parents[2] / "docs" / "controller.md").read_text()
    block = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    assert block == render_default_config(token="…").split("\n\n", 1)[1]
