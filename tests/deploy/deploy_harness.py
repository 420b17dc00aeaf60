"""Helpers of the deployment tests (tests/deploy): where things are, and the environment an
installer runs in under a test root."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def wheel_of(wheelhouse: Path) -> Path:
    return next(wheelhouse.glob("continuum_edge-*.whl"))


def installer_env(root: Path, wheelhouse: Path, *, systemd: bool) -> dict[str, str]:
    """The environment an installer runs in under ``root``: offline pip, the fake systemctl
    first on PATH, and ``root/run/systemd/system`` (what the installers check) present only
    when ``systemd``."""
    if systemd:
        (root / "run/systemd/system").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTINUUM_", "EDGE_AGENT_"))}
    env.update(
        PATH=f"{root}/usr/local/bin:{root}/bin:{env['PATH']}",
        FAKE_SYSTEMD_ROOT=str(root),
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(wheelhouse),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    return env
