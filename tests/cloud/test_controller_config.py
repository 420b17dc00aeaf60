from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cloud.cli import main as controller_main
from cloud.config import load_config, parse_config, render_default_config
from shared.errors import ValidationError


def test_default_config_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(render_default_config(token="tok"))
    cfg = load_config(path)
    assert cfg.api_token() == "tok"
    assert cfg.state_dir == tmp_path / "controller-state"
    assert cfg.health.suspect_missed == 3


def test_every_problem_is_listed_with_its_path() -> None:
    with pytest.raises(ValidationError) as err:
        parse_config(
            {
                "api": {"port": "eighty", "bogus": 1},
                "broker": {"protocol": "4"},
                "placement": {"mode": "random"},
                "nope": {},
            }
        )
    paths = {p.path for p in err.value.problems}
    assert {
        "api.port",
        "api.bogus",
        "broker.protocol",
        "placement.mode",
        "nope",
        "api.token",
    } <= paths


def test_token_file_is_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("secret\n")
    path = tmp_path / "c.toml"
    path.write_text('[api]\ntoken_file = "token"\n')
    assert load_config(path).api_token() == "secret"


def test_init_writes_a_loadable_config_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "controller.toml"
    old_umask = os.umask(0)  # a permissive umask must not open the file to others
    try:
        assert controller_main(["init", "--path", str(path)]) == 0
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the API token
    assert load_config(path).api_token()
    assert controller_main(["init", "--path", str(path)]) == 1


def test_a_bad_value_is_reported_once_with_its_bounds() -> None:
    data = {
        "api": {"token": "t", "port": 70000, "rate_per_s": 0},
        "agents": {"broker_port": 0, "tls": "yes"},
        "health": {"suspect_missed": 0, "window_s": -1},
        "controller": {"node_id": "a/b", "log_level": "loud"},
        "placement": {"weights": {"fit": -1}},
    }
    with pytest.raises(ValidationError) as err:
        parse_config(data)
    problems = {p.path: p.message for p in err.value.problems}
    assert len(problems) == len(err.value.problems)  # one problem per key
    assert problems == {
        "api.port": "must be ≤ 65535 (got 70000)",
        "api.rate_per_s": "must be > 0 (got 0)",
        "agents.broker_port": "must be ≥ 1 (got 0)",
        "agents.tls": "must be true or false, not a string",
        "health.suspect_missed": "must be ≥ 1 (got 0)",
        "health.window_s": "must be > 0 (got -1)",
        "controller.node_id": problems["controller.node_id"],
        "controller.log_level": "must be one of 'debug', 'info', 'warning', 'error' (got 'loud')",
        "placement.weights.fit": "must be ≥ 0 (got -1)",
    }
