"""A node's outbox depth (changes it journaled that the controller has not acknowledged)
rides along its telemetry and is exported per node, ``continuum_node_outbox_depth{node}``
(issue 15, per-node series). In-memory bus."""

from __future__ import annotations

from pathlib import Path

from cloud_harness import make_config
from memory_bus import MemoryHarness

from shared.protocol import Telemetry


def _telemetry(outbox: int) -> Telemetry:
    return Telemetry(
        cpu_pct=0.0,
        memory_pct=10.0,
        memory_free_mb=1000.0,
        disk_free_mb=1000.0,
        load=(0.0, 0.0, 0.0),
        outbox=outbox,
    )


def test_the_outbox_depth_of_each_node_is_a_series(tmp_path: Path) -> None:
    harness = MemoryHarness(tmp_path, make_config(tmp_path))
    try:
        n1, n2 = harness.node("n1"), harness.node("n2")
        n1.publish("telemetry", _telemetry(outbox=7))
        n2.publish("telemetry", _telemetry(outbox=0))  # left out on the wire: read back as 0
        nodes = harness.controller.registry.nodes
        harness.pump_until(lambda: "outbox" in nodes["n1"].telemetry)
        harness.pump_until(lambda: "outbox" in nodes["n2"].telemetry)
        text = harness.controller.metrics_text().decode()
        assert 'continuum_node_outbox_depth{node="n1"} 7.0' in text
        assert 'continuum_node_outbox_depth{node="n2"} 0.0' in text
    finally:
        harness.close()
