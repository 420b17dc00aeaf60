"""The pair's fixtures: a real controller (``memory_bus.MemoryHarness``) and a real agent
(``agent_pair.AgentPair``) on the in-memory bus. The harness modules live beside the
suites they were written for (``tests/cloud``, ``tests/agent``)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_TESTS / "cloud"), str(_TESTS / "agent")]

from agent_pair import AgentPair  # noqa: E402 (after the path)
from memory_bus import MemoryHarness  # noqa: E402


@pytest.fixture
def h(tmp_path: Path) -> Iterator[MemoryHarness]:
    (tmp_path / "controller").mkdir()
    harness = MemoryHarness(tmp_path / "controller")
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture
def pair(h: MemoryHarness, tmp_path: Path) -> Iterator[AgentPair]:
    """Agent ``edge-1`` beside the controller, not yet connected (``pair.connect()``)."""
    p = AgentPair(h, tmp_path)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def gate() -> Iterator[Path]:
    """A file a gated task waits for, where the task's user (``nobody`` when the tests run
    as root) can see it: the task ends when the test creates it."""
    where = Path(tempfile.mkdtemp(prefix="pair-gate-"))
    where.chmod(0o755)
    try:
        yield where / "go"
    finally:
        shutil.rmtree(where, ignore_errors=True)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the task's user can write."""
    path = Path(tempfile.mkdtemp(prefix="pair-shared-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
