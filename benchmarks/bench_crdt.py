"""Task record CRDT: merge throughput and the size of a status-change delta.

Figures (issue 2, one run, each beside its baseline):

- ``crdt record merges/s``: joins of a status-change delta into a full record
  (the hot path of delta sync: every report a node sends), over 2,000 distinct
  realistic records (full TaskSpec, placement, two attempts). Baseline: a naive
  full-state merge of dict-of-JSON records (decode both, join field by field,
  encode), as a design without deltas would do for every message.
- ``crdt full-record merges/s``: joins of two concurrent full replicas of a
  record, each parsed from JSON (the anti-entropy path), reported without a goal.
- ``crdt status delta / full record bytes``: canonical bytes of the delta that
  moves an attempt to ``succeeded`` (with exit code and a small result) over the
  canonical bytes of the full record (what a full-state resync would send).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from _report import emit

from shared.clocks import Timestamp
from shared.crdt import (
    AttemptStatus,
    TaskRecord,
    canonical_bytes,
    merge,
    new_record,
    place,
    set_status,
    start_attempt,
)
from shared.crdt._canonical import canonical_json
from shared.model import parse_task_spec

N_RECORDS = 2_000
MIN_SECONDS = 1.0


def _spec(i: int) -> dict[str, Any]:
    return parse_task_spec(
        {
            "id": f"job-{i:05d}",
            "name": "resize camera frames",
            "command": ["python3", "-m", "vision.resize", "--width", "640", "--in", f"/data/{i}"],
            "env": {"MODEL": "mobilenet-v3", "LOG_LEVEL": "info"},
            "resources": {"cpu": 0.5, "memory_mb": 256},
            "priority": 60,
            "timeout_s": 120,
            "retry": {"max_attempts": 4, "backoff_s": 2},
            "consistency": {"level": "adaptive", "min": "causal", "max": "strong"},
            "placement": {
                "tiers": ["edge", "regional"],
                "preferred_tiers": ["edge"],
                "labels": {"camera": "yes"},
                "max_latency_ms": 50,
                "data_source": "camera-3",
                "data_size_mb": 12.5,
            },
        }
    ).to_dict()


def _stamp(t: int, node: str) -> Timestamp:
    return Timestamp(1_764_400_000_000 + t, 0, node)


def _scenario(i: int) -> tuple[TaskRecord, TaskRecord, TaskRecord, TaskRecord]:
    """(full record, status-change delta, two concurrent full replicas) of task ``i``."""
    rec = new_record(f"job-{i:05d}", _spec(i), writer="cloud", hlc=_stamp(0, "cloud"))
    rec = merge(
        rec,
        place(
            rec,
            epoch=1,
            node="edge-1",
            level="strong",
            lease_s=30,
            writer="cloud",
            hlc=_stamp(1, "cloud"),
        ),
    )
    dot1, delta = start_attempt(
        rec, node="edge-1", epoch=1, writer="edge-1", hlc=_stamp(2, "edge-1")
    )
    rec = merge(rec, delta)
    rec = merge(
        rec,
        set_status(
            rec,
            dot1,
            AttemptStatus.FAILED,
            writer="edge-1",
            hlc=_stamp(3, "edge-1"),
            exit_code=1,
            reason="exit status 1",
        ),
    )
    rec = merge(
        rec,
        place(
            rec,
            epoch=2,
            node="edge-2",
            level="strong",
            lease_s=30,
            writer="cloud",
            hlc=_stamp(4, "cloud"),
        ),
    )
    dot2, delta = start_attempt(
        rec, node="edge-2", epoch=2, writer="edge-2", hlc=_stamp(5, "edge-2")
    )
    full = merge(rec, delta)
    status = set_status(
        full,
        dot2,
        AttemptStatus.SUCCEEDED,
        writer="edge-2",
        hlc=_stamp(6, "edge-2"),
        exit_code=0,
        result={"frames": 240},
    )
    # Concurrent replicas: the node saw its success, the cloud raised cancel.
    node_side = merge(full, status)
    cloud_side = merge(
        full,
        TaskRecord(full.task_id, cancel_requested=True, dots=frozenset({("cloud", 3)})),
    )
    # As anti-entropy sees them: parsed from the wire, sharing no objects.
    return full, status, _reparsed(node_side), _reparsed(cloud_side)


def _reparsed(rec: TaskRecord) -> TaskRecord:
    return TaskRecord.from_dict(json.loads(canonical_bytes(rec)))


# ---------------------------------------------------------------- naive baseline

_RANK = {s.name.lower(): int(s) for s in AttemptStatus}


def _naive_merge(a_json: str, b_json: str) -> str:
    """Full-state merge of two JSON-encoded records, field by field."""
    a, b = json.loads(a_json), json.loads(b_json)
    out = dict(a)
    if "spec" in b:
        out["spec"] = b["spec"]
    pa, pb = a.get("placement"), b.get("placement")
    if pb is not None and (pa is None or pb["epoch"] > pa["epoch"]):
        out["placement"] = pb
    attempts = dict(a.get("attempts", {}))
    for key, theirs in b.get("attempts", {}).items():
        ours = attempts.get(key)
        if ours is None or _RANK[theirs["status"]] > _RANK[ours["status"]]:
            attempts[key] = theirs
    out["attempts"] = attempts
    out["cancel"] = a.get("cancel", False) or b.get("cancel", False)
    context = dict(a.get("context", {}))
    for node, count in b.get("context", {}).items():
        context[node] = max(context.get(node, 0), count)
    out["context"] = context
    return json.dumps(out, sort_keys=True, separators=(",", ":"))


def _rate(pairs: list[tuple[Any, Any]], fn: Callable[[Any, Any], object]) -> float:
    """Merges per second over ``pairs``, repeated for at least MIN_SECONDS."""
    done = 0
    started = time.perf_counter()
    while True:
        for a, b in pairs:
            fn(a, b)
        done += len(pairs)
        elapsed = time.perf_counter() - started
        if elapsed >= MIN_SECONDS:
            return done / elapsed


def main() -> None:
    scenarios = [_scenario(i) for i in range(N_RECORDS)]
    status_pairs = [(full, status) for full, status, _, _ in scenarios]
    full_pairs = [(node, cloud) for _, _, node, cloud in scenarios]
    json_pairs = [
        (canonical_bytes(full).decode(), canonical_bytes(status).decode())
        for full, status, _, _ in scenarios
    ]

    # Sanity: the naive merge and ours agree on what the delta does.
    assert (
        json.loads(_naive_merge(*json_pairs[0]))["attempts"]
        == merge(*status_pairs[0]).to_dict()["attempts"]
    )

    ours = _rate(status_pairs, merge)
    naive = _rate(json_pairs, _naive_merge)
    emit(
        "crdt record merges/s (status delta into full record)",
        measured=ours,
        unit="merges/s",
        goal=100_000,
        baseline=naive,
        baseline_name="naive full-state dict-of-JSON merge",
        note=f"{N_RECORDS} realistic records, one process",
    )
    emit(
        "crdt full-record merges/s (concurrent replicas, anti-entropy path)",
        measured=_rate(full_pairs, merge),
        unit="merges/s",
        baseline=naive,
        baseline_name="naive full-state dict-of-JSON merge",
    )

    full, status, _, _ = scenarios[0]
    delta_bytes = len(canonical_bytes(status))
    full_bytes = len(canonical_bytes(merge(full, status)))
    emit(
        "crdt status delta / full record bytes",
        measured=delta_bytes / full_bytes,
        unit="fraction",
        goal=0.1,
        direction="lower",
        baseline=1.0,
        baseline_name="full-state resync (whole record)",
        note=(
            f"delta {delta_bytes} B, full record {full_bytes} B"
            f" (of which spec {len(canonical_json(full.spec))} B)"
        ),
    )


if __name__ == "__main__":
    main()
