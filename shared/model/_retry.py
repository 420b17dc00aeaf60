"""Retry backoff: exponential, capped, with multiplicative jitter.

The jitter is ``capped · (1 + jitter · u)`` with ``u`` drawn from the caller's
generator, so the delay lies in ``[d, d · (1 + jitter)]`` where ``d`` is the
capped exponential delay (a design sketch multiplied the jitter in twice, which made the
delay grow with ``d²``). Randomness is passed in: ``shared`` owns no global RNG.
"""

from __future__ import annotations

import math
from typing import Protocol

from shared.model._task import RetryPolicy

__all__ = ["UniformSource", "backoff_delay", "base_delay"]


class UniformSource(Protocol):
    """What ``backoff_delay`` needs of a generator: ``random.Random`` satisfies it."""

    def random(self) -> float: ...


def base_delay(retry: RetryPolicy, failures: int) -> float:
    """The capped, un-jittered delay before the next attempt after ``failures`` failures
    (0 before the first attempt; ``backoff_s`` after the first failure)."""
    if failures <= 0:
        return 0.0
    if retry.backoff_s == 0.0 or retry.multiplier == 1.0:
        return min(retry.backoff_s, retry.backoff_max_s)
    exponent = failures - 1
    # Compare logarithms first (each taken alone: max / a subnormal backoff is inf):
    # multiplier ** exponent overflows for large exponents.
    log_delay = math.log(retry.backoff_s) + exponent * math.log(retry.multiplier)
    if log_delay >= math.log(retry.backoff_max_s):
        return retry.backoff_max_s
    try:
        return min(retry.backoff_s * retry.multiplier**exponent, retry.backoff_max_s)
    except OverflowError:  # a tiny backoff times a factor beyond float range
        return min(math.exp(log_delay), retry.backoff_max_s)


def backoff_delay(retry: RetryPolicy, failures: int, rng: UniformSource) -> float:
    """Seconds to wait before the attempt that follows ``failures`` failures (jittered)."""
    delay = base_delay(retry, failures)
    if delay == 0.0 or retry.jitter == 0.0:
        return delay
    return delay * (1.0 + retry.jitter * rng.random())
