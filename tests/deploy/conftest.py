"""Fixtures of the deployment tests: a wheelhouse (so installers can run without a network),
a test root with a stand-in ``systemctl``, and the preconditions of running them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_harness import HERE, REPO


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package and every dependency of its agent and controller extras as wheels, plus
    the build backend: ``PIP_NO_INDEX=1 PIP_FIND_LINKS=<this>`` installs offline."""
    out = tmp_path_factory.mktemp("wheelhouse")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    for args in (
        ["wheel", "--wheel-dir", str(out), f"{REPO}[agent,controller]"],
        ["download", "--dest", str(out), "setuptools>=77", "wheel"],
    ):
        done = subprocess.run([*pip, *args], capture_output=True, text=True)
        if done.returncode != 0:
            why = f"cannot build the wheelhouse (no package index?): {done.stderr[-500:]}"
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"CI must be able to install the package: {why}")
            pytest.skip(why)
    return out


@pytest.fixture
def test_root() -> Iterator[Path]:
    """A root directory others may traverse (services drop privileges, tasks run as nobody),
    with ``bin/systemctl`` = tests/deploy/fake_systemctl.py."""
    root = Path(tempfile.mkdtemp(prefix="continuum-root-"))
    root.chmod(0o755)
    (root / "bin").mkdir()
    (root / "bin" / "systemctl").symlink_to(HERE / "fake_systemctl.py")
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
