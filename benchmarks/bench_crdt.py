"""Task record CRDT: merge throughput and the size of a status-change delta.

Figures (each beside its baseline, same run):

- ``crdt record merges/s``: joins of a status-change delta into a full record
  (the hot path of delta sync: every report a node sends), over 2,000 distinct
  realistic records (full TaskSpec, placement, two attempts), both already
  decoded. Baseline: the straightforward dict merge a competent engineer would
  write on records already parsed with one ``json.loads`` (join field by field,
  no re-parsing, no re-encoding).
- ``crdt delta merges/s from the wire``: the same join starting from the delta's
  bytes as they arrive (``json.loads`` + ``TaskRecord.from_dict`` validation +
  merge). Baseline: ``json.loads`` of the delta's canonical JSON + the same dict
  merge (no validation: what a design without it would cost).
- ``crdt full-record merges/s``: joins of two concurrent full replicas of a
  record, each parsed from JSON (the anti-entropy path), beside the dict merge.
- ``crdt status delta / full record bytes``: wire bytes (``record_to_wire``,
  compact JSON) of the delta that moves an attempt to ``succeeded`` (with exit
  code and a small result) over the wire bytes of the full record (what a
  full-state resync would send). Baseline: the same ratio in the canonical form
  (what went on the wire before the compact form).

``BENCH_CRDT_RECORDS`` (default 2,000) sets the number of records and
``BENCH_CRDT_MIN_S`` (default 1) the least seconds each rate is taken over.
"""

from __future__ import annotations

import json
import os
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
    record_to_wire,
    set_status,
    start_attempt,
)
from shared.crdt._canonical import canonical_json
from shared.model import parse_task_spec

N_RECORDS = int(os.environ.get("BENCH_CRDT_RECORDS", "2000"))
MIN_SECONDS = float(os.environ.get("BENCH_CRDT_MIN_S", "1"))


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


# ---------------------------------------------------------------- dict baseline

_RANK = {s.name.lower(): int(s) for s in AttemptStatus}


def _dict_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Full-state merge of two records already parsed to dicts, field by field."""
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
    return out


def _wire(rec: TaskRecord) -> bytes:
    return canonical_json(record_to_wire(rec)).encode("ascii")


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
    # The baseline parses each record once, before the clock starts.
    dict_pairs = [
        (json.loads(canonical_bytes(a)), json.loads(canonical_bytes(b))) for a, b in status_pairs
    ]
    dict_full_pairs = [
        (json.loads(canonical_bytes(a)), json.loads(canonical_bytes(b))) for a, b in full_pairs
    ]
    wire_pairs = [(full, _wire(status)) for full, status in status_pairs]
    dict_wire_pairs = [
        (d, canonical_bytes(status))
        for (d, _), (_, status) in zip(dict_pairs, status_pairs, strict=True)
    ]

    # Sanity: the dict merge and ours agree on what the delta does.
    assert _dict_merge(*dict_pairs[0])["attempts"] == merge(*status_pairs[0]).to_dict()["attempts"]

    dict_rate = _rate(dict_pairs, _dict_merge)
    emit(
        "crdt record merges/s (status delta into full record)",
        measured=_rate(status_pairs, merge),
        unit="merges/s",
        goal=100_000,
        baseline=dict_rate,
        baseline_name="plain dict merge of records parsed once (json.loads)",
        note=f"{N_RECORDS} realistic records, both sides decoded, one process",
    )
    emit(
        "crdt delta merges/s from the wire (bytes → validated record → merge)",
        measured=_rate(
            wire_pairs, lambda full, raw: merge(full, TaskRecord.from_dict(json.loads(raw)))
        ),
        unit="merges/s",
        baseline=_rate(dict_wire_pairs, lambda full, raw: _dict_merge(full, json.loads(raw))),
        baseline_name="json.loads + plain dict merge, no validation",
        note="the ingest path of one delta: decode, validate, join",
    )
    emit(
        "crdt full-record merges/s (concurrent replicas, anti-entropy path)",
        measured=_rate(full_pairs, merge),
        unit="merges/s",
        baseline=_rate(dict_full_pairs, _dict_merge),
        baseline_name="plain dict merge of records parsed once (json.loads)",
    )

    full, status, _, _ = scenarios[0]
    whole = merge(full, status)
    delta_bytes, full_bytes = len(_wire(status)), len(_wire(whole))
    emit(
        "crdt status delta / full record bytes (wire form)",
        measured=delta_bytes / full_bytes,
        unit="fraction",
        goal=0.1,
        direction="lower",
        baseline=len(canonical_bytes(status)) / len(canonical_bytes(whole)),
        baseline_name="the same ratio in the canonical form (the wire form before)",
        note=(
            f"delta {delta_bytes} B, full record {full_bytes} B on the wire"
            f" (of which spec {len(canonical_json(full.spec))} B); canonical"
            f" {len(canonical_bytes(status))} B / {len(canonical_bytes(whole))} B"
        ),
    )


if __name__ == "__main__":
    main()
