"""The controller's traffic through a real Mosquitto: registration, placement,
acknowledgement, lease answers and pings travel the broker's topics end to end.
Controller behaviour itself is tested on the in-memory bus (the other suites)."""

from __future__ import annotations

import pytest
from cloud_harness import Harness

pytestmark = pytest.mark.broker


def test_a_task_round_trip_over_the_broker(hb: Harness) -> None:
    h = hb
    n1 = h.node("n1")
    h.controller.submit_task({"id": "s", "command": ["true"], "consistency": {"level": "strong"}})
    place = n1.expect("place", lambda e: e.body.task_id == "s")
    n1.request_lease("s", place.body.epoch, request_id="i1-1")
    grant = h.await_msg(n1, "lease_grant")
    assert grant.body.granted and grant.body.request_id == "i1-1"
    dot = n1.start("s", place.body.epoch)
    n1.finish("s", dot, result={"ok": True})
    h.await_msg(n1, "ack", lambda e: e.body.up_to_seq == n1.seq)
    assert h.controller.get_task("s")["status"] == "succeeded"
    h.tick(1.0)  # a ping goes out; the scripted node answers it over the broker
    samples = h.controller.registry.nodes["n1"].monitor.stats(h.clock()).rtt_samples
    h.pump_until(
        lambda: h.controller.registry.nodes["n1"].monitor.stats(h.clock()).rtt_samples > samples
    )
