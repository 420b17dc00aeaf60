"""The device deployment files agree with the agent: the unit's state directory is the
config's default, it restarts always, and the install script parses and
drives ``edge-agent init`` with options that exist."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edge_agent.config import AgentConfig

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _unit() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (DEPLOY / "edge-agent.service").read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            values[key.strip()] = value.strip()
    return values


def test_unit_restarts_always_with_the_default_state_dir() -> None:
    unit = _unit()  # its user and sandbox: test_security_deploy.py
    assert unit["Restart"] == "always"
    assert f"/var/lib/{unit['StateDirectory']}" == AgentConfig().node.state_dir
    assert unit["ExecStart"].endswith("edge-agent run --config /etc/edge-agent/agent.toml")


def test_install_script_parses_and_uses_existing_init_options() -> None:
    script = DEPLOY / "install-agent.sh"
    subprocess.run(["sh", "-n", str(script)], check=True)
    usage = subprocess.run(["sh", str(script), "--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and "--node-id" in usage.stdout
    bad = subprocess.run(["sh", str(script), "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown option" in bad.stderr
    help_text = subprocess.run(
        [sys.executable, "-m", "edge_agent", "init", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    init_options = {w.strip(",[]") for w in help_text.split() if w.startswith("--")}
    text = script.read_text(encoding="utf-8")
    used = {word for word in text.split() if word.startswith("--") and word in init_options}
    assert {"--path", "--node-id", "--tier", "--broker", "--tls", "--ca-file"} <= used
