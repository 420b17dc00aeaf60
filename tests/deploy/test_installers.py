"""deploy/install-agent.sh and deploy/install-controller.sh under ``--root``: checks before
changes, with and without systemd, a bad package, dry runs, and re-runs that report and apply
changed options (also after an install from a bundle, which keeps the node and its secrets).
Installs are real (venv + pip, offline from the wheelhouse)."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest
from deploy_harness import REPO, installer_env, wheel_of

from shared.enrolment import Bundle, encode_bundle

# Real installs: minutes on a loaded machine, beyond the suite's default.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

AGENT = REPO / "deploy" / "install-agent.sh"
CONTROLLER = REPO / "deploy" / "install-controller.sh"


def _run(
    script: Path, root: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(script), "--root", str(root), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_without_systemd_nothing_is_changed(test_root: Path, wheelhouse: Path) -> None:
    env = installer_env(test_root, wheelhouse, systemd=False)
    before = _tree(test_root)
    done = _run(
        AGENT,
        test_root,
        env,
        "--node-id",
        "e1",
        "--broker",
        "h",
        "--package",
        str(wheel_of(wheelhouse)),
    )
    assert done.returncode == 1 and "systemd is not running" in done.stderr
    assert _tree(test_root) == before


@pytest.mark.parametrize(
    ("package", "why"),
    [
        ("/nonexistent/continuum_edge-9.whl", "does not exist"),
        ("continuum-edge-not-published", "cannot be downloaded"),
    ],
)
def test_a_bad_package_fails_before_any_change(
    test_root: Path, wheelhouse: Path, package: str, why: str
) -> None:
    env = installer_env(test_root, wheelhouse, systemd=True)
    before = _tree(test_root)
    done = _run(
        CONTROLLER, test_root, env, "--broker-host", "mqtt.example.org", "--package", package
    )
    assert done.returncode == 1 and why in done.stderr, done.stderr
    assert _tree(test_root) == before


def test_dry_run_says_and_does_nothing(test_root: Path, wheelhouse: Path) -> None:
    env = installer_env(test_root, wheelhouse, systemd=True)
    before = _tree(test_root)
    done = _run(
        AGENT,
        test_root,
        env,
        "--dry-run",
        "--node-id",
        "e1",
        "--broker",
        "h",
        "--package",
        str(wheel_of(wheelhouse)),
    )
    assert done.returncode == 0, done.stderr
    assert "would run:" in done.stdout and "[agent]" in done.stdout  # extras always
    assert _tree(test_root) == before


def test_agent_install_then_rerun_with_changed_options(test_root: Path, wheelhouse: Path) -> None:
    env = installer_env(test_root, wheelhouse, systemd=True)
    wheel = str(wheel_of(wheelhouse))
    first = _run(
        AGENT,
        test_root,
        env,
        "--node-id",
        "e1",
        "--broker",
        "mqtt.example.org",
        "--package",
        wheel,
        "--no-start",
    )
    assert first.returncode == 0, first.stderr
    config = test_root / "etc/edge-agent/agent.toml"
    data = tomllib.loads(config.read_text())
    assert data["broker"] == {**data["broker"], "host": "mqtt.example.org", "port": 1883}
    assert data["node"]["state_dir"] == f"{test_root}/var/lib/edge-agent"
    assert data["node"]["labels"] == {}  # no sample label
    unit = (test_root / "etc/systemd/system/edge-agent.service").read_text()
    assert f"ExecStart={test_root}/opt/edge-agent/.venv/bin/edge-agent run" in unit
    # The extras came along: the agent's own imports work in the installed venv.
    venv_python = test_root / "opt/edge-agent/.venv/bin/python"
    imports = "import sqlite_utils, paho.mqtt, zeroconf, prometheus_client"
    subprocess.run([str(venv_python), "-c", imports], check=True)
    assert (test_root / "usr/local/bin/edge-agent").exists()

    ca = test_root / "ca.crt"
    ca.write_text("not checked by the installer\n")
    again = _run(
        AGENT,
        test_root,
        env,
        "--tls",
        "--ca-file",
        str(ca),
        "--package",
        wheel,
        "--no-start",
    )
    assert again.returncode == 0, again.stderr
    assert "changed: PORT '1883' -> '8883'" in again.stdout
    assert "changed: TLS 'false' -> 'true'" in again.stdout
    data = tomllib.loads(config.read_text())
    assert (data["broker"]["port"], data["broker"]["tls"]) == (8883, True)
    assert data["node"]["id"] == "e1" and data["broker"]["host"] == "mqtt.example.org"  # kept
    assert (config.parent / "agent.toml.bak").exists()
    calls = (test_root / "systemctl.log").read_text().splitlines()
    assert calls.count("daemon-reload") == 2 and "enable edge-agent" in calls

    same = _run(AGENT, test_root, env, "--package", wheel, "--no-start")
    assert same.returncode == 0 and "changed:" not in same.stdout


def test_controller_install_then_rerun_keeps_its_secrets(test_root: Path, wheelhouse: Path) -> None:
    env = installer_env(test_root, wheelhouse, systemd=False)
    wheel = str(wheel_of(wheelhouse))
    first = _run(
        CONTROLLER,
        test_root,
        env,
        "--broker-host",
        "mqtt.example.org",
        "--package",
        wheel,
        "--no-systemd",
    )
    assert first.returncode == 0, first.stderr
    config = test_root / "etc/continuum/controller.toml"
    data = tomllib.loads(config.read_text())
    assert data["controller"]["state_dir"] == f"{test_root}/var/lib/continuum"
    assert data["agents"]["broker_host"] == "mqtt.example.org"
    assert data["broker"]["username"] == "controller" and data["broker"]["password"]
    passwd = test_root / "etc/mosquitto/continuum/passwd"
    assert passwd.read_text().startswith("controller:")
    assert config.stat().st_mode & 0o777 == 0o600
    assert not (test_root / "systemctl.log").exists()
    assert (test_root / "etc/systemd/system/cloud-controller.service").exists()

    again = _run(
        CONTROLLER, test_root, env, "--agents-port", "9883", "--package", wheel, "--no-systemd"
    )
    assert again.returncode == 0, again.stderr
    assert "changed: AGENTS_PORT '8883' -> '9883'" in again.stdout
    new = tomllib.loads(config.read_text())
    assert new["agents"]["broker_port"] == 9883
    assert new["api"]["token"] == data["api"]["token"]
    assert new["broker"]["password"] == data["broker"]["password"]


def test_agent_rerun_after_a_bundle_keeps_the_node_and_its_secrets(
    test_root: Path, wheelhouse: Path
) -> None:
    """Installed from a bundle (mutual TLS), then re-run: without options nothing changes;
    a changed option is reported and applied while the node id, its password file and its
    certificates stay; another node id is refused before anything changes."""
    env = installer_env(test_root, wheelhouse, systemd=True)
    wheel = str(wheel_of(wheelhouse))
    pem = "-----BEGIN CERTIFICATE-----\nnot checked here\n-----END CERTIFICATE-----\n"
    bundle = test_root / "edge-7.bundle"
    bundle.write_text(
        encode_bundle(
            Bundle(
                "edge-7",
                "device",
                "mqtt.example.org",
                8883,
                True,
                "edge-7",
                "s3cret",
                pem,
                pem,
                pem,
            )
        )
    )
    first = _run(AGENT, test_root, env, "--bundle", str(bundle), "--package", wheel, "--no-start")
    assert first.returncode == 0, first.stderr
    conf_dir = test_root / "etc/edge-agent"
    config = conf_dir / "agent.toml"
    joined = tomllib.loads(config.read_text())
    secrets = {
        p.name: p.read_bytes()
        for p in conf_dir.iterdir()
        if p.suffix in (".password", ".crt", ".key")
    }
    assert set(secrets) == {"broker.password", "ca.crt", "edge-7.crt", "edge-7.key"}

    same = _run(AGENT, test_root, env, "--package", wheel, "--no-start")
    assert same.returncode == 0, same.stderr
    assert "changed:" not in same.stdout and tomllib.loads(config.read_text()) == joined

    again = _run(
        AGENT, test_root, env, "--tier", "edge", "--port", "8884", "--package", wheel, "--no-start"
    )
    assert again.returncode == 0, again.stderr
    assert "changed: PORT '8883' -> '8884'" in again.stdout
    assert "changed: TIER 'device' -> 'edge'" in again.stdout
    data = tomllib.loads(config.read_text())
    assert (data["node"]["tier"], data["broker"]["port"]) == ("edge", 8884)
    kept = ("host", "username", "password_file", "tls", "ca_file", "cert_file", "key_file")
    assert {k: data["broker"][k] for k in kept} == {k: joined["broker"][k] for k in kept}
    assert (data["node"]["id"], data["node"]["state_dir"]) == (
        "edge-7",
        joined["node"]["state_dir"],
    )
    assert {p.name: p.read_bytes() for p in conf_dir.iterdir() if p.name in secrets} == secrets
    assert (conf_dir / "agent.toml.bak").exists()

    before = config.read_bytes()
    renamed = _run(AGENT, test_root, env, "--node-id", "edge-8", "--package", wheel, "--no-start")
    assert renamed.returncode == 1 and "joined as edge-7 from a bundle" in renamed.stderr
    assert config.read_bytes() == before
