"""Several seeds of one configuration: mean and 95 % confidence interval per metric.

The interval is Student's t on the per-seed values (the seeds are independent
replications: every random stream of a run derives from its seed), half-width
``t(0.975, n - 1) · s / √n``; with one seed it is undefined (``nan``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Summary", "parse_seeds", "summarise"]

#: Two-sided 95 % quantiles of Student's t by degrees of freedom (1 … 30); 1.96 beyond.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Summary:
    """``mean`` ± ``half`` (95 %) over ``n`` values."""

    mean: float
    half: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half


def summarise(values: Sequence[float]) -> Summary:
    """Mean and 95 % half-width of the finite ``values``."""
    xs = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    n = len(xs)
    if n == 0:
        return Summary(math.nan, math.nan, 0)
    mean = sum(xs) / n
    if n == 1:
        return Summary(mean, math.nan, 1)
    var = sum((x - mean) ** 2 for x in xs) / (n - 1)
    t = _T975[n - 2] if n - 1 <= len(_T975) else 1.96
    return Summary(mean, t * math.sqrt(var / n), n)


def parse_seeds(text: str) -> list[int]:
    """``1-5`` → [1, 2, 3, 4, 5]; ``1,4,9`` → [1, 4, 9]; ranges and lists combine."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            if sep:
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
                seeds.extend(range(a, b + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise ValueError(f"--seeds {text!r}: use 1-5 or 1,2,7") from None
    if not seeds:
        raise ValueError(f"--seeds {text!r}: no seed")
    return seeds
