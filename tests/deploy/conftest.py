"""Fixtures of the deployment tests: a wheelhouse (so installers can run without a network),
a test root with a stand-in ``systemctl``, and the preconditions of running them."""

from __future__ import annotations

import fcntl
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
    the build backend: ``PIP_NO_INDEX=1 PIP_FIND_LINKS=<this>`` installs offline.

    Built once per test session: under pytest-xdist every worker's session fixture would
    build its own (a package build and a dependency resolution each), so the first worker
    builds it in the run's shared temporary directory under a lock and the others wait
    for it and reuse it (or its failure)."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's directory, above every worker's own
    out, failed = shared / "wheelhouse", shared / "wheelhouse.failed"
    with (shared / "wheelhouse.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not out.exists() and not failed.exists():
            _build_wheelhouse(out, failed)
    if failed.exists():
        why = failed.read_text(encoding="utf-8")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must be able to install the package: {why}")
        pytest.skip(why)
    return out


def _build_wheelhouse(out: Path, failed: Path) -> None:
    building = out.with_name("wheelhouse.building")
    shutil.rmtree(building, ignore_errors=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    for args in (
        ["wheel", "--wheel-dir", str(building), f"{REPO}[agent,controller]"],
        ["download", "--dest", str(building), "setuptools>=77", "wheel"],
    ):
        done = subprocess.run([*pip, *args], capture_output=True, text=True)
        if done.returncode != 0:
            why = f"cannot build the wheelhouse (no package index?): {done.stderr[-500:]}"
            failed.write_text(why, encoding="utf-8")
            return
    building.rename(out)


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
