"""Fixtures shared by every suite.

``mosquitto`` starts a real Mosquitto on a free loopback port (generated config,
its own persistence directory) and stops it afterwards. It skips with a clear
reason only where Mosquitto is not installed and cannot be (not root); under CI
(``CI=true``) a missing broker is a failure, never a skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# The simulator's unit tests watch and replace methods of its objects, which a mypyc
# build (``simulations.native``) makes read-only: the suite imports it interpreted
# (same sources) unless told otherwise, and ``tests/sim/test_sim_native.py`` runs the
# compiled build beside the interpreted one in child processes.
os.environ.setdefault("CONTINUUM_SIM_NATIVE", "0")

from simulations.testbed.broker import MosquittoBroker, find_mosquitto

# Property tests run beside real processes and other workers (``make test`` runs with
# pytest-xdist) and must pass with two CPU burners beside the suite: Hypothesis' wall-clock
# checks (a per-example deadline, "input generation is slow") measure the machine's load,
# not the law under test, so they are off for every property test. Example counts stay as
# each test sets them.
settings.register_profile("continuum", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("continuum")


def _require_mosquitto() -> None:
    if find_mosquitto() is not None:
        return
    reason = "mosquitto is not installed; run `make test` as root to install it (apt-get)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must have a real broker: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _restore_umask() -> Iterator[None]:
    """An agent built in-process narrows the process umask to 077 (edge_agent.core: its
    state is private); that must not leak into later tests, whose subprocesses (the README
    fleet test's services dropping privileges) would then create untraversable dirs."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield
    os.umask(previous)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A running Mosquitto, anonymous access, persistence on; ``.restart()`` keeps the port."""
    _require_mosquitto()
    broker = MosquittoBroker(workdir=tmp_path / "mosquitto").start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[object]:
    """Build brokers with custom users/ACL: ``mosquitto_factory(users=..., acl_file=...)``."""
    _require_mosquitto()
    started: list[MosquittoBroker] = []

    def make(**kwargs: object) -> MosquittoBroker:
        broker = MosquittoBroker(workdir=tmp_path / f"mosquitto{len(started)}", **kwargs)  # type: ignore[arg-type]
        started.append(broker)
        return broker.start()

    try:
        yield make
    finally:
        for broker in started:
            broker.stop()
