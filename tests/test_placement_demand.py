"""TaskDemand: reading the canonical spec dict (CONTRACTS §1) and derived hints."""

from __future__ import annotations

import copy

from shared.placement import TaskDemand
from shared.vocab import Level, PlacementMode, Tier

SPEC = {
    "id": "t-42",
    "name": "",
    "command": ["true"],
    "callable": None,
    "args": {},
    "env": {},
    "resources": {"cpu": 0.5, "memory_mb": 128, "disk_mb": 10},
    "priority": 50,
    "timeout_s": 30.0,
    "deadline_s": None,
    "retry": {
        "max_attempts": 3,
        "backoff_s": 1.0,
        "multiplier": 2.0,
        "backoff_max_s": 60.0,
        "jitter": 0.1,
    },
    "consistency": {"level": "strong", "min": "strong", "max": "strong"},
    "placement": {
        "tiers": ["edge", "cloud"],
        "preferred_tiers": ["edge"],
        "labels": {"zone": "north"},
        "max_latency_ms": 50,
        "data_source": "cam-1",
        "data_size_mb": 20.0,
        "mode": "edge_only",
    },
    "max_disconnect_s": 300.0,
    "idempotent": False,
    "depends_on": [],
    "workflow": None,
}


def test_from_spec_reads_every_field() -> None:
    d = TaskDemand.from_spec(SPEC)
    assert d.task_id == "t-42"
    assert (d.cpu, d.memory_mb, d.disk_mb) == (0.5, 128.0, 10.0)
    assert d.tiers == frozenset({Tier.EDGE, Tier.CLOUD})
    assert d.preferred_tiers == (Tier.EDGE,)
    assert d.labels == (("zone", "north"),)
    assert d.max_latency_ms == 50.0
    assert (d.data_source, d.data_size_mb) == ("cam-1", 20.0)
    assert d.runtime_s == 30.0 and d.level is Level.STRONG
    assert d.mode is PlacementMode.EDGE_ONLY


def test_adaptive_level_defaults_to_max_or_the_level_in_force() -> None:
    spec = copy.deepcopy(SPEC)
    spec["consistency"] = {"level": "adaptive", "min": "eventual", "max": "strong"}
    assert TaskDemand.from_spec(spec).level is Level.STRONG
    assert TaskDemand.from_spec(spec, level="causal").level is Level.CAUSAL


def test_runtime_estimate_and_exclusion_override() -> None:
    d = TaskDemand.from_spec(SPEC, runtime_s=5.0, exclude=["n1"])
    assert d.runtime_s == 5.0 and d.exclude == frozenset({"n1"})


def test_defaults_when_placement_is_open() -> None:
    spec = copy.deepcopy(SPEC)
    spec["placement"] = {"tiers": [], "preferred_tiers": [], "labels": {}, "max_latency_ms": None,
                         "data_source": None, "data_size_mb": 0.0, "mode": None}  # fmt: skip
    d = TaskDemand.from_spec(spec)
    assert d.tiers == frozenset(Tier) and d.mode is None and d.latency_sensitivity == 0.0


def test_shape_ignores_task_id() -> None:
    a = TaskDemand(task_id="a", cpu=1.0, labels={"k": "v"})
    b = TaskDemand(task_id="b", cpu=1.0, labels=(("k", "v"),))
    assert a.shape == b.shape
    assert a.shape != TaskDemand(task_id="a", cpu=2.0).shape


def test_hints_are_bounded() -> None:
    assert TaskDemand(task_id="x", max_latency_ms=10).latency_sensitivity == 0.99
    assert TaskDemand(task_id="x", max_latency_ms=5000).latency_sensitivity == 0.0
    light = TaskDemand(task_id="x", cpu=0.1, runtime_s=6).compute_weight
    heavy = TaskDemand(task_id="x", cpu=4, runtime_s=600).compute_weight
    assert 0 < light < 0.05 < 0.9 < heavy < 1
