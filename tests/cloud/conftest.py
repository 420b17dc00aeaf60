"""The controller harness fixtures the scripted-node suites share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cloud_harness import Harness
from memory_bus import MemoryHarness


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    """The controller with an injected clock and scripted nodes on the in-memory bus
    (``memory_bus``): the fixture for controller behaviour."""
    harness = MemoryHarness(tmp_path)
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture
def hb(tmp_path: Path, mosquitto) -> Iterator[Harness]:  # type: ignore[no-untyped-def]
    """The same on a real Mosquitto, for tests where the broker matters (see Harness)."""
    harness = Harness(tmp_path, mosquitto.port)
    try:
        yield harness
    finally:
        harness.close()
