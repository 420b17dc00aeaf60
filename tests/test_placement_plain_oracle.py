"""benchmarks/bench_placement.py's baseline, the plain loop over node dicts, is a second,
independent implementation of the adaptive rule (filters, predicted finish, cost, deadline
margin, tie key, allocation): its speed is only honest while it decides what
``place_batch`` decides. Checked here at a small scale, so that a change of the rule that the
loop does not follow fails the suite rather than the benchmark (where it went unseen: the
script exited on 62.7 % disagreement)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_placement as bench

from shared.placement import NodeTable, place_batch, tie_seed


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_plain_loop_decides_what_place_batch_decides(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench, "NODES", 300)
    monkeypatch.setattr(bench, "TASKS", 400)
    monkeypatch.setattr(bench, "SHAPES", 40)
    rng = random.Random(seed)
    views, work = bench.nodes(rng), bench.demands(rng)
    batch = place_batch(NodeTable.from_views(views), work, mode=bench.MODE, seed=seed)
    dicts = bench.node_dicts(views)
    plain = []
    for d in work:
        chosen = bench.plain_place(dicts, d, tie_seed(d.task_id, 0, seed))
        plain.append(None if chosen is None else chosen["id"])
    decided = [b.node_id for b in batch]
    assert sum(a == b for a, b in zip(plain, decided, strict=True)) >= 0.99 * len(work)
    assert any(d is not None for d in decided)
