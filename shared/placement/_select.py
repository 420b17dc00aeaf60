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

``top_rows`` gives the best rows of one decision without packing a rank for every
node: quantising is monotonic, so the best ranks lie among the rows whose score is
within a quantum or two of the best scores; only those are ranked. Scores that are
not finite or not in [-2, 2], and decisions with no more candidates than asked for,
take the exact whole-column path (``exact_top_rows``), which is also the reference
the tests compare against.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import numpy.typing as npt

from shared.placement._table import BoolArray, FloatArray

__all__ = [
    "BOUND",
    "SCALE",
    "exact_top_rows",
    "lead_rows",
    "near_best",
    "order_by_rank",
    "quantise",
    "rank_rows",
    "ranks",
    "tie_seed",
    "top_rows",
]

#: Quantum of a score: scores closer than this are ties.
SCALE = 1e9
_LOW = 0xFFFFFFFF
# The rank of a node that cannot take the task: below any candidate's.
_NO_RANK = np.iinfo(np.int64).min + 1  # + 1: still below after negation
# Rows whose score is within this of the limit-th best are ranked exactly: a score
# quantum is 1e-9 and rounding moves a quantised score by half of one.
_MARGIN = 4e-9
# ``rank_rows`` orders up to this many rows in Python.
_FEW = 16
#: Scores outside [-BOUND, BOUND] (never in practice) take the exact path; a row
#: that cannot take the task scores -BOUND in ``near_best``.
BOUND = 2.0

IntArray = npt.NDArray[np.int64]


#: An empty 4-byte blake2b: copied per call, which costs less than parsing the
#: constructor's keyword again (one call per placement decision).
_BLAKE2B_4 = hashlib.blake2b(digest_size=4)


def tie_seed(task_id: str, epoch: int = 0, seed: int = 0) -> int:
    """32-bit tie-break seed of one decision (blake2b of task id, epoch, seed)."""
    h = _BLAKE2B_4.copy()
    h.update(f"{task_id}\x1f{epoch}\x1f{seed}".encode())
    return int.from_bytes(h.digest(), "big")


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


def exact_top_rows(
    total: FloatArray, ok: BoolArray, hashes: npt.NDArray[np.uint32], tie: int, limit: int
) -> IntArray:
    """Rows of the best ``limit`` entries of ``total`` among ``ok``, best first, by
    packing every row's rank (rows off ``ok`` rank lowest). Each row's rank is
    computed as ``ranks`` does, so whatever ``total`` holds, this is the reference."""
    rank = ranks(quantise(np.where(ok, total, 0.0)), hashes, tie)
    rank[~ok] = _NO_RANK
    if np.count_nonzero(ok) > limit:
        return order_by_rank(np.arange(len(rank)), rank, limit)
    rows = np.flatnonzero(ok)
    return rows[order_by_rank(rows, rank[rows], limit)]  # type: ignore[no-any-return]


def top_rows(
    total: FloatArray, ok: BoolArray, hashes: npt.NDArray[np.uint32], tie: int, limit: int
) -> IntArray:
    """What ``exact_top_rows`` returns, ranking only the rows near the best scores
    (see the module docstring): a handful of whole-column operations instead of a
    dozen. The caller still checks ``ok`` of the rows (the exact path may return
    rows off ``ok`` when scores are not finite, as it always did)."""
    scored = np.where(ok, total, -BOUND)
    rows = near_best(scored, limit)
    if rows is None:
        return exact_top_rows(total, ok, hashes, tie, limit)
    return rank_rows(rows, scored, hashes, tie, limit)


def near_best(scored: FloatArray, limit: int) -> IntArray | None:
    """Rows whose score is within ``_MARGIN`` of the ``limit``-th best, given the
    scores with ``-BOUND`` on the rows that cannot take the task; ``None`` when
    that cannot be decided this way (no more than ``limit`` candidates, scores not
    finite or outside [-BOUND, BOUND]): then ``exact_top_rows`` decides."""
    if len(scored) < max(limit, 1):
        return None
    high, low = scored.max(), scored.min()
    if not (low >= -BOUND and high <= BOUND):  # NaN, infinities or out of range
        return None
    floor = high if limit == 1 else -np.partition(-scored, limit - 1)[limit - 1]
    if floor - _MARGIN <= -BOUND:  # rows that cannot take the task would be among them
        return None
    return np.flatnonzero(scored >= floor - _MARGIN)


def rank_rows(
    rows: IntArray, scored: FloatArray, hashes: npt.NDArray[np.uint32], tie: int, limit: int
) -> IntArray:
    """The best ``limit`` of ``near_best``'s rows (ascending), best first, by their
    packed rank. Up to ``_FEW`` rows (the usual case: only near-ties of the best
    scores) it orders the rows in Python rather than through a dozen numpy calls on
    a few numbers: a higher packed rank is a higher quantised score (``round`` is
    ``np.rint``'s half to even, on the same product), then a lower tie key, then
    the lower row, exactly as ``ranks`` and ``order_by_rank`` order them."""
    if len(rows) == 1:
        return rows
    if len(rows) <= _FEW:
        q = [round(v * SCALE) for v in scored[rows].tolist()]
        keys = [h ^ tie for h in hashes[rows].tolist()]
        order = sorted(range(len(q)), key=lambda j: (-q[j], keys[j], j))
        return rows[order[:limit]]  # type: ignore[no-any-return]
    rank = ranks(quantise(scored[rows]), hashes[rows], tie)
    return rows[order_by_rank(rows, rank, limit)]  # type: ignore[no-any-return]


def lead_rows(
    total: FloatArray,
    ok: BoolArray,
    hashes: npt.NDArray[np.uint32],
    tie: int,
    limit: int,
    beyond: float,
) -> IntArray | None:
    """``top_rows`` over a lead (``_pipeline``): a subset of the rows, whose scores
    on ``ok`` are finite and in [-1, 1], where every row left out that can take the
    task scores at most ``beyond`` (give or take a few ulps; ``-inf``: there is no
    such row). Positions in the subset, best first, as ``top_rows`` over every row
    would give them, or ``None`` when a row left out might rank among them: unless
    ``beyond`` is ``-inf``, the ``limit``-th best of the subset must score
    ``_MARGIN`` or more above ``beyond``, so it quantises strictly above every row
    left out and outranks it whatever its tie key."""
    if beyond == -math.inf:
        return top_rows(total, ok, hashes, tie, limit)
    scored = np.where(ok, total, -BOUND)
    if len(scored) < max(limit, 1):
        return None
    k = len(scored) - limit  # the limit-th best
    floor = scored.max() if limit == 1 else np.partition(scored, k)[k]
    if not floor >= beyond + _MARGIN:
        return None
    return rank_rows(np.flatnonzero(scored >= floor - _MARGIN), scored, hashes, tie, limit)
