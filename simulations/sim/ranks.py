"""Packed rank bases and the row that ranks first: what the simulator's batch paths
(``simulations.sim.placer`` for the weighted-sum modes, ``simulations.sim.predicted``
for the ``adaptive`` mode) share.

A rank base is ``q * 2**32 + 0xFFFFFFFF`` for a row with quantised score ``q``
(``shared.placement._select.quantise``), ``NONE`` for a row that cannot take the
task; a task's rank of a row is its base less the row's tie key (``node_hash ^
tie_seed``), as ``_select.ranks`` packs it.
"""

from __future__ import annotations

import numpy as np

from shared.placement import tie_seed

__all__ = ["LOW", "NONE", "NONE_INT", "SHIFT", "alone", "first", "ranked"]

LOW = np.int64(0xFFFFFFFF)
SHIFT = np.int64(1 << 32)
#: Rank of an infeasible row: below any feasible rank (|q| ≤ 1e9, so ≥ -2**62) even
#: after the tie key (< 2**32) is subtracted.
NONE = np.int64(np.iinfo(np.int64).min + (1 << 33))
NONE_INT = int(NONE)


def first(
    base: np.ndarray, back: np.ndarray, keys: np.ndarray, task_id: str, epoch: int, seed: int
) -> int:
    """The row that ranks first for the decision ``(task_id, epoch, seed)``: the
    argmax of ``base - (keys ^ tie)`` with ``tie = tie_seed(task_id, epoch, seed)``
    (``ranked``); ``back`` is ``base[::-1]`` (a view kept beside the bases: one view
    fewer per task).

    Distinct rank bases differ by at least 2**32 and a tie key is below it, so a row
    alone with the highest base is first whatever the key; it is alone when the
    first and the last argmax (of the reversed view) name it, the common case in
    the ``adaptive`` mode: two argmaxes, and neither the tie seed (a blake2b digest,
    pure, so computing it only when read changes nothing) nor the key's arithmetic.
    Otherwise (equal quantised scores) ``ranked``."""
    j = alone(base, back)
    return j if j >= 0 else ranked(base, keys, task_id, epoch, seed)


def alone(base: np.ndarray, back: np.ndarray) -> int:
    """The row alone with the highest rank base (the first argmax of ``base`` and the
    last, read from ``back = base[::-1]``, agree), or -1 when rows tie for it."""
    j = int(base.argmax())
    return j if int(back.argmax()) + j == len(base) - 1 else -1


def ranked(base: np.ndarray, keys: np.ndarray, task_id: str, epoch: int, seed: int) -> int:
    """The argmax of ``base - (keys ^ tie)`` with ``tie = tie_seed(task_id, epoch,
    seed)`` (int64 xor of two 32-bit values = the uint32 xor of ``_select.ranks``):
    the row ``first`` returns, whether or not rows tie (``first`` only skips this
    when none does)."""
    return int((base - (keys ^ tie_seed(task_id, epoch, seed))).argmax())
