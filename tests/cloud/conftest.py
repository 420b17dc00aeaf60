"""The controller harness fixture the scripted-node suites share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cloud_harness import Harness


@pytest.fixture
def h(tmp_path: Path, mosquitto) -> Iterator[Harness]:  # type: ignore[no-untyped-def]
    """A controller service on a real Mosquitto with an injected clock (see Harness)."""
    harness = Harness(tmp_path, mosquitto.port)
    try:
        yield harness
    finally:
        harness.close()
