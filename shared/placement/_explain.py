"""The explanation every decision carries (after Nomad's ``AllocMetric``): bounded
counters and the top candidates with every score term, never a log.

The core reads no clock, so the time a decision took is added by the shell that
timed it (``to_dict(elapsed_s=...)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.placement._scoring import TERMS
from shared.vocab import PlacementMode

__all__ = ["TOP_CANDIDATES", "Candidate", "Decision", "Explanation"]

#: How many ranked candidates an explanation keeps.
TOP_CANDIDATES = 5


@dataclass(frozen=True, slots=True)
class Candidate:
    """One ranked node: final score and the value of each term named in ``names``
    (``TERMS`` for the weighted-sum modes; the predicted finish broken into parts
    and the margin, ``PREDICTION_TERMS``, for the ``adaptive`` mode)."""

    node_id: str
    score: float
    values: tuple[float, ...]
    names: tuple[str, ...] = TERMS

    @property
    def terms(self) -> dict[str, float]:
        return dict(zip(self.names, self.values, strict=True))

    def to_dict(self) -> dict[str, object]:
        return {"node": self.node_id, "score": self.score, "terms": self.terms}


@dataclass(frozen=True, slots=True, kw_only=True)
class Explanation:
    """Why a task went where it went.

    ``evaluated`` nodes were considered; ``filtered`` counts the ones dropped for
    good, by reason (``REASONS``); ``exhausted`` the ones short of free resources
    now, by first short dimension; ``candidates`` the best ``TOP_CANDIDATES`` in
    rank order, every term included; ``chosen`` is the first of them, or ``None``.
    """

    mode: PlacementMode
    evaluated: int
    filtered: Mapping[str, int] = field(default_factory=dict)
    exhausted: Mapping[str, int] = field(default_factory=dict)
    candidates: tuple[Candidate, ...] = ()
    chosen: str | None = None

    @property
    def feasible(self) -> int:
        return self.evaluated - sum(self.filtered.values()) - sum(self.exhausted.values())

    def to_dict(self, *, elapsed_s: float | None = None) -> dict[str, object]:
        out: dict[str, object] = {
            "mode": self.mode.value,
            "chosen": self.chosen,
            "evaluated": self.evaluated,
            "feasible": self.feasible,
            "filtered": dict(self.filtered),
            "exhausted": dict(self.exhausted),
            "candidates": [c.to_dict() for c in self.candidates],
        }
        if elapsed_s is not None:
            out["elapsed_s"] = elapsed_s
        return out


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of placing one task: a node id (``None``: nothing feasible) and why."""

    node_id: str | None
    explanation: Explanation
