"""Selection: the best feasible node, ties spread reproducibly.

A score is quantised to ``1e-9`` (``quantise``), so "equal" means equal to nine
decimals whatever path computed it (numpy, the batch path, the reference loop).
The rank of a node for one decision packs the quantised score and a tie key into
one int64: ``q * 2**32 + (2**32 - 1 - key)``, ``key = node_hash ^ tie_seed``. The
tie seed comes from the task id, the placement epoch and the caller's seed (as
Nomad seeds its shuffle from the evaluation id), so a decision can be replayed,
and equal nodes share the load across tasks instead of the first row winning.
Scores lie in [-1, 1], so ``|q| <= 1e9 < 2**30`` and the packed rank cannot
overflow. Equal ranks (same quantised score and same 32-bit key) fall back to
the lower row, which the batch path reproduces.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

from shared.placement._table import FloatArray

__all__ = ["SCALE", "order_by_rank", "quantise", "ranks", "tie_seed"]

#: Quantum of a score: scores closer than this are ties.
SCALE = 1e9
_LOW = 0xFFFFFFFF

IntArray = npt.NDArray[np.int64]


def tie_seed(task_id: str, epoch: int = 0, seed: int = 0) -> int:
    """32-bit tie-break seed of one decision (blake2b of task id, epoch, seed)."""
    data = f"{task_id}\x1f{epoch}\x1f{seed}".encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=4).digest(), "big")


def quantise(total: FloatArray) -> FloatArray:
    """Scores as integer-valued floats in units of 1e-9 (round half to even)."""
    return np.rint(total * SCALE)  # type: ignore[no-any-return]


def ranks(q: FloatArray, hashes: npt.NDArray[np.uint32], tie: int) -> IntArray:
    """Packed rank of feasible nodes (finite ``q``): higher is better, never equal
    unless both the quantised score and the 32-bit key are equal."""
    keys = np.bitwise_xor(hashes, np.uint32(tie)).astype(np.int64)
    return q.astype(np.int64) * (1 << 32) + (_LOW - keys)  # type: ignore[no-any-return]


def order_by_rank(rows: IntArray, rank: IntArray, limit: int) -> IntArray:
    """Positions of the best ``limit`` entries: rank descending, then row ascending."""
    if len(rank) > limit:
        # every entry at least as good as the limit-th, ties at the boundary included
        bound = rank[np.argpartition(-rank, limit - 1)[limit - 1]]
        keep = np.flatnonzero(rank >= bound)
        return keep[np.lexsort((rows[keep], -rank[keep]))[:limit]]  # type: ignore[no-any-return]
    return np.lexsort((rows, -rank))  # type: ignore[no-any-return]
