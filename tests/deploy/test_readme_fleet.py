"""README "Run it on a fleet" runs as written.

The ``sh`` code blocks of that section are extracted and run, in order, as one bash script
(``set -euo pipefail``) in a private network and PID namespace, against the real Mosquitto,
with real installs (offline, from a wheelhouse) of the controller and the agent, TLS and
per-node credentials. The only rewrites are the test root:

- ``sudo`` is dropped (the test runs as root);
- absolute ``/etc/``, ``/var/``, ``/opt/``, ``/run/`` paths move under the root, and the
  installers get ``--root`` (so every path they write is under it);
- ``apt-get install -y mosquitto`` lays down what Debian's package does (its own
  ``mosquitto.conf``, directories owned by ``mosquitto``, a unit), under the root;
- ``mqtt.example.org`` is ``localhost``;
- a ``# on MACHINE`` comment switches machines: the controller host and ``edge-1`` share the
  test root, ``edge-2`` has a root of its own (its installs, config, state, units and
  ``systemctl``), as a second device would; all run in the one network namespace;
- ``systemctl`` is tests/deploy/fake_systemctl.py, Mosquitto's unit runs
  tests/deploy/rooted_mosquitto.py (the installed config with its paths under the root);
- the tools' default config paths are set to the root's (``CONTINUUM_CONFIG``,
  ``EDGE_AGENT_CONFIG``).

Change a command in the README or in the code, and this test fails until they agree.
"""

from __future__ import annotations

import pwd
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_harness import HERE, REPO, installer_env

# Real installs and services: minutes on a loaded machine, beyond the suite's default.
pytestmark = [pytest.mark.broker, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

SECTION = ("## Run it on a fleet", "### Test partitions")

LINE_REWRITES: tuple[tuple[str, str], ...] = (
    (r"^sudo ", ""),
    (r"^apt-get install -y mosquitto$", "emulate_apt_install_mosquitto"),
    (r"^(sh deploy/install-\w+\.sh .*)$", r'\1 --root "$ROOT"'),
    (r"mqtt\.example\.org", "localhost"),
    (r"(?<=[\s=])/(etc|var|opt|run)/", r"$ROOT/\1/"),
    (r"^# on (the controller host|edge-\d+)\b.*$", r"on_machine '\1'"),
)

PRELUDE = r"""
set -euo pipefail
ip link set lo up
TOP=$ROOT BASE_PATH=$PATH
on_machine() {  # README "# on MACHINE": edge-2 is a machine of its own, under its own root
    case "$1" in
        edge-2) ROOT="$TOP/edge-2" ;;
        *) ROOT="$TOP" ;;
    esac
    mkdir -p "$ROOT/bin" "$ROOT/run/systemd/system"
    ln -sfn "$FAKE_SYSTEMCTL" "$ROOT/bin/systemctl"
    export ROOT FAKE_SYSTEMD_ROOT="$ROOT" EDGE_AGENT_CONFIG="$ROOT/etc/edge-agent/agent.toml"
    export PATH="$ROOT/usr/local/bin:$ROOT/bin:$BASE_PATH"
}
emulate_apt_install_mosquitto() {
    mkdir -p "$ROOT/etc/mosquitto/conf.d" "$ROOT/etc/systemd/system" \
        "$ROOT/var/lib/mosquitto" "$ROOT/var/log/mosquitto" "$ROOT/run/mosquitto"
    chown mosquitto: "$ROOT/var/lib/mosquitto" "$ROOT/var/log/mosquitto" "$ROOT/run/mosquitto"
    cp /etc/mosquitto/mosquitto.conf "$ROOT/etc/mosquitto/mosquitto.conf"
    printf '[Service]\nExecStart=%s %s %s\n' "$PYTHON" "$ROOTED" "$ROOT" \
        > "$ROOT/etc/systemd/system/mosquitto.service"
}
"""


def fleet_commands(readme: str) -> list[str]:
    """The section's ``sh`` blocks, line by line, rewritten for the test root."""
    start, end = SECTION
    assert start in readme and end in readme, f"README lost its {start!r} section"
    section = readme.split(start, 1)[1].split(end, 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) >= 3, "the fleet section should have controller, enrol and run blocks"
    lines = [line for block in blocks for line in block.splitlines()]
    for pattern, replacement in LINE_REWRITES:
        lines = [re.sub(pattern, replacement, line) for line in lines]
    return lines


def test_the_rewrites_keep_every_command() -> None:
    lines = fleet_commands((REPO / "README.md").read_text(encoding="utf-8"))
    text = "\n".join(lines)
    for needed in (
        "install-controller.sh",
        "tls init",
        "tls issue",
        "enroll edge-1",
        "install-agent.sh --bundle",
        "submit hello.toml --wait",
        "logs hello-1",
        "on_machine 'edge-2'",
        "install-agent.sh --bundle edge-2.bundle",
        "drain edge-1 --deadline",
        "nodes remove edge-1",
        "credentials remove edge-1",
    ):
        assert needed in text
    assert "sudo" not in text and "example.org" not in text
    assert not re.search(r"(?<=[\s=])/(etc|var|opt)/", text), "a path escaped the test root"


def _preconditions() -> None:
    if (
        not Path("/usr/sbin/mosquitto").exists()
        or not Path("/etc/mosquitto/mosquitto.conf").exists()
    ):
        pytest.skip("Debian's mosquitto package is not installed")
    try:
        pwd.getpwnam("mosquitto")
    except KeyError:
        pytest.skip("no mosquitto user (Debian's package creates it)")
    if (
        shutil.which("unshare") is None
        or subprocess.run(
            ["unshare", "--net", "--pid", "--fork", "--mount-proc", "true"], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("cannot create network/PID namespaces here (needs root)")


def test_readme_fleet_section_runs_as_written(test_root: Path, wheelhouse: Path) -> None:
    _preconditions()
    root = test_root
    workdir = root / "home"  # the operator's checkout: deploy/ and the files they write
    workdir.mkdir()
    (workdir / "deploy").symlink_to(REPO / "deploy")
    script = PRELUDE + "\n".join(fleet_commands((REPO / "README.md").read_text(encoding="utf-8")))
    env = installer_env(root, wheelhouse, systemd=True)
    env.update(
        ROOT=str(root),
        PYTHON=sys.executable,
        ROOTED=str(HERE / "rooted_mosquitto.py"),
        FAKE_SYSTEMCTL=str(HERE / "fake_systemctl.py"),
        CONTINUUM_CONFIG=f"{root}/etc/continuum/controller.toml",
        EDGE_AGENT_CONFIG=f"{root}/etc/edge-agent/agent.toml",
    )
    done = subprocess.run(
        [
            "unshare",
            "--net",
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            "bash",
            "-c",
            script,
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    logs = "\n".join(
        f"--- {p.relative_to(root)}\n{p.read_text(errors='replace')[-3000:]}"
        for p in sorted(root.glob("**/var/log/**/*.log"))
    )
    report = f"rc={done.returncode}\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}\n{logs}"
    assert done.returncode == 0, report
    assert "task hello-1: succeeded" in done.stdout, report
    assert "hello from the fleet" in done.stdout, report  # continuum logs
    # Drain with migration: the running eventual task moved to edge-2, edge-1 was left empty.
    assert "edge-1: drained (empty)" in done.stdout, report
    assert re.search(r"ticker-1 +\w+ +node edge-2 ", done.stdout), report
    assert "edge-1: removed" in done.stdout, report

    # What the README promises about the files it made.
    agent_dir = root / "etc/edge-agent"
    for secret in (agent_dir / "broker.password", root / "etc/continuum/tls/ca.key"):
        assert secret.stat().st_mode & 0o777 == 0o600, secret
    agent_toml = (agent_dir / "agent.toml").read_text(encoding="utf-8")
    assert "port = 8883" in agent_toml and "tls = true" in agent_toml
    assert 'state_dir = "' + str(root / "var/lib/continuum") in (
        root / "etc/continuum/controller.toml"
    ).read_text(encoding="utf-8")
