"""Config parsing: defaults, every problem listed, the ``init`` example stays valid."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

from edge_agent.cli import main
from edge_agent.config import EXAMPLE_CONFIG, load_config, parse_config, render_example
from shared.errors import ValidationError


def test_example_config_parses_and_matches_defaults() -> None:
    cfg = parse_config(tomllib.loads(EXAMPLE_CONFIG), env={})
    assert cfg.node.id == "edge-1"
    assert cfg.broker.reconnect_min_s == 0.5 and cfg.broker.reconnect_max_s == 2.0
    assert cfg.heartbeat_s == pytest.approx(2 * cfg.autonomy.period_s)


def test_every_problem_is_listed_with_its_path() -> None:
    data = {
        "node": {"id": "bad/id", "tier": "moon", "colour": "red"},
        "broker": {"port": "x"},
        "api": {"host": "0.0.0.0"},
        "executor": {"callables": {"f": "nocolon"}},
        "bogus": {},
    }
    with pytest.raises(ValidationError) as err:
        parse_config(data, env={})
    paths = {p.path for p in err.value.problems}
    assert {
        "node.id",
        "node.tier",
        "node.colour",
        "broker.port",
        "api.host",
        "executor.callables.f",
        "bogus",
    } <= paths


def test_password_from_environment() -> None:
    cfg = parse_config({"node": {"id": "n1"}}, env={"EDGE_AGENT_BROKER_PASSWORD": "s3cret"})
    assert cfg.broker.password == "s3cret"


def test_init_writes_loadable_file_and_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "agent.toml"
    assert main(["init", "--path", str(target)]) == 0
    assert load_config(target).node.tier == "edge"
    assert main(["init", "--path", str(target)]) == 1


def test_bad_toml_is_one_problem(tmp_path: Path) -> None:
    target = tmp_path / "agent.toml"
    target.write_text("[node\n")
    with pytest.raises(ValidationError, match="not valid TOML"):
        load_config(target)


def test_help_mentions_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "init" in out and "run" in out and "status" in out


def test_docs_show_exactly_what_init_writes() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "agent.md").read_text(encoding="utf-8")
    block = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    body = EXAMPLE_CONFIG.split("\n\n", 1)[1]  # the example without its header comment
    assert block == body


def test_run_with_a_bad_config_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `run` blocks numpy/pandas imports for the agent process; keep that out of this one
    # (hypothesis needs numpy in later tests when numpy was not imported yet).
    for heavy in ("numpy", "pandas"):
        monkeypatch.setitem(sys.modules, heavy, sys.modules.get(heavy))
    path = tmp_path / "agent.toml"
    path.write_text('[node]\nid = "bad/id"\n', encoding="utf-8")
    assert main(["run", "--config", str(path)]) == 2
    assert "node.id" in capsys.readouterr().err


def test_status_without_an_agent_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    from simulations.testbed.broker import free_port

    assert main(["status", "--port", str(free_port())]) == 1
    assert "no agent answering" in capsys.readouterr().err


def test_init_fills_device_values_keeping_comments(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    argv = ["init", "--path", str(path), "--node-id", "dev-7", "--tier", "device"]
    argv += ["--broker", "mqtt.lan:8883", "--tls", "--ca-file", "/etc/ca.pem"]
    assert main(argv) == 0
    text = path.read_text(encoding="utf-8")
    cfg = load_config(path)
    assert (cfg.node.id, cfg.node.tier, cfg.broker.username) == ("dev-7", "device", "dev-7")
    assert (cfg.broker.host, cfg.broker.port, cfg.broker.tls) == ("mqtt.lan", 8883, True)
    assert cfg.broker.ca_file == "/etc/ca.pem"
    assert 'id = "dev-7"                      # letters, digits' in text  # comment kept, aligned
    discovery = tmp_path / "discover.toml"
    assert main(["init", "--path", str(discovery), "--node-id", "d-1", "--broker", ":1883"]) == 0
    assert load_config(discovery).broker.host == ""  # empty: zeroconf


def test_init_refuses_invalid_device_values(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    assert main(["init", "--path", str(path), "--node-id", "no/slash"]) == 2
    assert not path.exists()


def test_render_example_rejects_unknown_keys() -> None:
    with pytest.raises(ValidationError) as err:
        render_example({"node.colour": "red"})
    assert [p.path for p in err.value.problems] == ["node.colour"]


def test_a_bad_value_is_reported_once_with_its_default_kept_for_the_other_checks() -> None:
    data = {
        "node": {"id": "n1", "state_dir": ""},
        "broker": {"port": 70000, "reconnect_min_s": "soon"},
        "autonomy": {"period_s": 0, "batch_max": 0},
        "executor": {"max_task_processes": -1},
    }
    with pytest.raises(ValidationError) as err:
        parse_config(data, env={})
    paths = [p.path for p in err.value.problems]
    assert sorted(paths) == [
        "autonomy.batch_max",
        "autonomy.period_s",
        "broker.port",
        "broker.reconnect_min_s",
        "executor.max_task_processes",
        "node.state_dir",
    ]
