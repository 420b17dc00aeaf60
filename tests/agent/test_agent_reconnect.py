"""Reconnect probes on a real Mosquitto (edge_agent.transport, shared.protocol.reconnect_wait).

Through a fault proxy: while the link is cut each probe hangs (the proxy holds it) and
the next one follows at once, so a probe is out when the link heals and the heal is
found by it; the probes abandoned during the cut never reach the broker. Against a
broker that is down: refused probes wait out the jittered backoff (no storm).
Assertions are on what happened (waits chosen, connections the broker got), never
on durations; conditions are waited for with generous deadlines.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_agent.config import BrokerConfig
from edge_agent.transport import Transport
from simulations.testbed.broker import MosquittoBroker
from simulations.testbed.proxy import FaultProxy

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]

DEADLINE_S = 60.0


def wait_for(what: str, cond: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class Waits(threading.Event):
    """The transport's stop event, recording every wait it is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is not None:
            self.asked.append(timeout)
        return super().wait(timeout)


class Probed:
    """An agent's transport, counting its connect probes (each resolves the broker)."""

    def __init__(self, port: int, **broker: object) -> None:
        self.probes = 0
        self.up = False
        cfg = BrokerConfig(host="127.0.0.1", port=port, **broker)  # type: ignore[arg-type]
        self.transport = Transport(
            cfg,
            client_id="continuum-agent-n1",
            subscriptions=["continuum/v1/nodes/n1/down"],
            on_message=lambda *_: None,
            on_link=self._link,
            will=lambda: ("continuum/v1/nodes/n1/presence", b"offline"),
            resolve=self._resolve,
            rng=random.Random(7),
        )
        self.waits = Waits()
        self.transport._stop = self.waits  # observe the waits it chooses
        self._target = ("127.0.0.1", port)

    def _resolve(self) -> tuple[str, int]:
        self.probes += 1
        return self._target

    def _link(self, up: bool) -> None:
        self.up = up


@pytest.fixture
def proxy_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], object]) -> None:
    """Run a proxy control method on the proxy's loop (its contract) and wait for it."""
    done = threading.Event()
    loop.call_soon_threadsafe(lambda: (fn(), done.set()))
    assert done.wait(10)


def test_a_cut_link_always_has_a_probe_out_and_the_heal_finds_it(
    mosquitto: MosquittoBroker, proxy_loop: asyncio.AbstractEventLoop
) -> None:
    proxy = asyncio.run_coroutine_threadsafe(
        FaultProxy("n1", mosquitto.host, mosquitto.port).start(), proxy_loop
    ).result(10)
    # The keep-alive (and so how long a probe may hang) is longer than any backoff.
    agent = Probed(proxy.port, keepalive_s=2, reconnect_min_s=0.2, reconnect_max_s=0.6)
    agent.transport.start()
    try:
        wait_for("the first connection", lambda: agent.up)
        on_loop(proxy_loop, proxy.cut)
        wait_for("the cut to be noticed", lambda: not agent.up)
        cut_at = agent.probes
        wait_for("three probes held by the cut", lambda: agent.probes >= cut_at + 3)
        # Each probe hung longer than the backoff: the next one followed at once.
        during = len(agent.waits.asked)
        assert agent.waits.asked[-2:] == [0.0, 0.0]
        on_loop(proxy_loop, proxy.heal)
        healed_at = agent.probes
        wait_for("the link to come back", lambda: agent.up)
        # Found by the probe out at the heal (or one started at once after it): no
        # backoff wait since, and none of the probes the cut held reached the broker.
        assert all(w == 0.0 for w in agent.waits.asked[during:])
        assert proxy.stats.connections == 2 + (agent.probes - healed_at)
    finally:
        agent.transport.stop()
        asyncio.run_coroutine_threadsafe(proxy.stop(), proxy_loop).result(10)


def test_a_broker_that_is_down_is_probed_with_backoff_and_found_when_back(
    tmp_path: Path,
) -> None:
    broker = MosquittoBroker(workdir=tmp_path / "mosquitto").start()
    agent = Probed(broker.port, keepalive_s=2, reconnect_min_s=0.2, reconnect_max_s=0.6)
    agent.transport.start()
    try:
        wait_for("the first connection", lambda: agent.up)
        broker.stop()
        wait_for("the loss to be noticed", lambda: not agent.up)
        lost_at = agent.probes
        wait_for("two refused probes", lambda: agent.probes >= lost_at + 2)
        # Refused at once, each probe waited out a jittered backoff: no storm.
        refused = agent.waits.asked[-2:]
        assert all(0.0 < w <= 0.6 for w in refused), refused
        broker.start()
        wait_for("the link to come back", lambda: agent.up)
    finally:
        agent.transport.stop()
        broker.stop()
