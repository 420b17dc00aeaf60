"""What one task asks of placement, read from its canonical spec dict (docs/task-spec.md).

A ``TaskDemand`` is the flat, hashable subset of a spec the filters and score terms
read. Everything except ``task_id`` forms its ``shape``: two tasks of one shape are
filtered and scored identically, which the batch path uses to score each distinct
shape once per batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.learning import DEFAULT_WORK_S
from shared.placement._table import TIERS, BoolArray
from shared.vocab import Level, PlacementMode, Tier

__all__ = ["COMPUTE_SCALE_CPU_S", "LATENCY_HORIZON_MS", "TaskDemand"]

#: A latency bound at or above this counts as no latency sensitivity at all.
LATENCY_HORIZON_MS = 1000.0
#: CPU-seconds at which a task counts as half compute-heavy (weight = s / (s + scale)).
COMPUTE_SCALE_CPU_S = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskDemand:
    """Resources, constraints and hints of one task, as placement reads them.

    ``level`` is the consistency level in force (an adaptive task's current level).
    ``runtime_s`` is the expected run time used by the link-reliability and
    data-locality terms; ``from_spec`` takes the spec's ``timeout_s`` unless the
    caller passes a measured estimate. ``exclude`` lists nodes a re-placement must
    move away from.

    What the completion-time prediction reads: ``work_s`` the task's work in
    reference-core seconds (``None``: unknown, read as ``DEFAULT_WORK_S`` capped at
    ``runtime_s`` and ``deadline_s``; pass the learner's estimate), ``deadline_s``
    seconds left until the task's deadline (``None``: no deadline), ``output_mb``
    the result's size, ``idempotent`` whether a duplicate run is harmless.
    """

    task_id: str
    cpu: float = 0.1
    memory_mb: float = 64.0
    disk_mb: float = 0.0
    tiers: frozenset[Tier] = frozenset(Tier)
    preferred_tiers: tuple[Tier, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    max_latency_ms: float | None = None
    data_source: str | None = None
    data_size_mb: float = 0.0
    runtime_s: float = 60.0
    level: Level = Level.CAUSAL
    mode: PlacementMode | None = None
    exclude: frozenset[str] = frozenset()
    work_s: float | None = None
    deadline_s: float | None = None
    output_mb: float = 0.0
    idempotent: bool = False
    shape: tuple[Any, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tiers", frozenset(Tier(t) for t in self.tiers))
        object.__setattr__(self, "preferred_tiers", tuple(Tier(t) for t in self.preferred_tiers))
        labels = self.labels.items() if isinstance(self.labels, Mapping) else self.labels
        object.__setattr__(self, "labels", tuple(sorted((str(k), str(v)) for k, v in labels)))
        object.__setattr__(self, "level", Level(self.level))
        if self.mode is not None:
            object.__setattr__(self, "mode", PlacementMode(self.mode))
        object.__setattr__(self, "exclude", frozenset(self.exclude))
        object.__setattr__(
            self,
            "shape",
            (
                self.cpu,
                self.memory_mb,
                self.disk_mb,
                self.tiers,
                self.preferred_tiers,
                self.labels,
                self.max_latency_ms,
                self.data_source,
                self.data_size_mb,
                self.runtime_s,
                self.level,
                self.mode,
                self.exclude,
                self.work_s,
                self.deadline_s,
                self.output_mb,
                self.idempotent,
            ),
        )

    @classmethod
    def from_spec(
        cls,
        spec: Mapping[str, Any],
        *,
        level: Level | str | None = None,
        runtime_s: float | None = None,
        exclude: Iterable[str] = (),
        work_s: float | None = None,
        deadline_s: float | None = None,
    ) -> TaskDemand:
        """Read a canonical spec dict. An adaptive task (``consistency.level ==
        "adaptive"``) is placed at ``level`` when given, else at its ``max`` bound
        (the level a healthy continuum gives it, docs/consistency.md). ``work_s`` (the
        learner's estimate) wins over the spec's optional ``work_s`` hint;
        ``deadline_s`` (the time left now) over the spec's ``deadline_s``."""
        resources = spec.get("resources") or {}
        placement = spec.get("placement") or {}
        consistency = spec.get("consistency") or {}
        if level is None:
            declared = consistency.get("level", Level.CAUSAL.value)
            level = (
                consistency.get("max", Level.CAUSAL.value) if declared == "adaptive" else declared
            )
        latency = placement.get("max_latency_ms")
        mode = placement.get("mode")
        return cls(
            task_id=str(spec["id"]),
            cpu=float(resources.get("cpu", 0.1)),
            memory_mb=float(resources.get("memory_mb", 64)),
            disk_mb=float(resources.get("disk_mb", 0)),
            tiers=frozenset(Tier(t) for t in placement.get("tiers") or list(Tier)),
            preferred_tiers=tuple(Tier(t) for t in placement.get("preferred_tiers") or ()),
            labels=tuple((placement.get("labels") or {}).items()),
            max_latency_ms=None if latency is None else float(latency),
            data_source=placement.get("data_source"),
            data_size_mb=float(placement.get("data_size_mb") or 0.0),
            runtime_s=float(runtime_s if runtime_s is not None else spec.get("timeout_s", 60.0)),
            level=Level(level),
            mode=None if mode is None else PlacementMode(mode),
            exclude=frozenset(exclude),
            work_s=_optional_float(work_s if work_s is not None else spec.get("work_s")),
            deadline_s=_optional_float(
                deadline_s if deadline_s is not None else spec.get("deadline_s")
            ),
            idempotent=bool(spec.get("idempotent", False)),
        )

    # -- derived hints (pure functions of the fields) ---------------------------
    @property
    def work(self) -> float:
        """The work the prediction uses, reference-core seconds: ``work_s``, else the
        default capped by the run time and the deadline (the submitter expects the
        task to fit in both)."""
        if self.work_s is not None:
            return self.work_s
        bounds = (DEFAULT_WORK_S, self.runtime_s, self.deadline_s or DEFAULT_WORK_S)
        return max(min(bounds), 0.0)

    @property
    def latency_sensitivity(self) -> float:
        """0 without a latency bound; towards 1 as the bound tightens below the horizon."""
        if self.max_latency_ms is None:
            return 0.0
        return min(1.0, max(0.0, 1.0 - self.max_latency_ms / LATENCY_HORIZON_MS))

    @property
    def compute_weight(self) -> float:
        """How compute-heavy the task is, in [0, 1): cpu-seconds s over s + 60."""
        work = max(self.cpu, 0.0) * max(self.runtime_s, 0.0)
        return work / (work + COMPUTE_SCALE_CPU_S)

    def tier_mask(self, allowed: frozenset[Tier] | None = None) -> BoolArray:
        """Boolean per tier rank: allowed by the task (and by ``allowed``, the mode's)."""
        tiers = self.tiers if allowed is None else self.tiers & allowed
        return np.array([t in tiers for t in TIERS], dtype=np.bool_)


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
