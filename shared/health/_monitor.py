"""Per-node link monitor: the controller's failure detector and link grader.

Fed with what the controller observes of one node (round trips of its heartbeats or
pings, probes that never came back, any message heard, explicit disconnect and
reconnect from presence / last will), it answers the node's ``LinkState``:

- ``partitioned`` (*suspected*): nothing heard for ``suspect_missed`` heartbeat
  intervals (default 3 x 3 s), or a disconnect was reported;
- ``failed`` (*confirmed*): suspected for a further ``confirm_after_s`` (default 30 s,
  the seeds' heartbeat timeout); anything heard clears both at once;
- otherwise graded from the window (default 300 s) of samples: ``healthy`` needs
  p99 < 100 ms, loss < 2 % and no disconnect in the window; ``degraded`` p99 < 200 ms,
  loss < 10 %, at most one disconnect; else ``critical``. The RTT bounds are those of
  the system-health table of docs/consistency.md, applied to one link.

It also keeps the history of partition lengths and the partition rate per hour that
placement's link-reliability term needs. Gaps are judged from the timestamps passed
in, not from how often the caller polls: a heartbeat that arrives after a silence
longer than the suspicion timeout records that silence as a partition even if nobody
asked for the state in between (a detector that counts sweeps would not).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from shared.vocab import LinkState

__all__ = [
    "LinkGrade",
    "LinkMonitor",
    "LinkPolicy",
    "LinkStateChanged",
    "LinkStats",
    "percentile",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkPolicy:
    """Thresholds of the link grader and failure detector (seconds, ms, fractions)."""

    heartbeat_interval_s: float = 3.0
    suspect_missed: int = 3
    confirm_after_s: float = 30.0
    window_s: float = 300.0
    max_samples: int = 1000
    healthy_rtt_ms: float = 100.0
    degraded_rtt_ms: float = 200.0
    healthy_loss: float = 0.02
    degraded_loss: float = 0.10
    healthy_max_disconnects: int = 0
    degraded_max_disconnects: int = 1
    rate_window_s: float = 3600.0
    min_rate_span_s: float = 600.0
    max_history: int = 256

    def __post_init__(self) -> None:
        if self.heartbeat_interval_s <= 0 or self.suspect_missed < 1:
            raise ValueError("heartbeat_interval_s must be > 0 and suspect_missed ≥ 1")
        if self.confirm_after_s < 0 or self.window_s <= 0 or self.max_samples < 1:
            raise ValueError("confirm_after_s ≥ 0, window_s > 0 and max_samples ≥ 1 required")
        if self.rate_window_s <= 0 or self.min_rate_span_s <= 0:
            raise ValueError("rate_window_s and min_rate_span_s must be > 0")

    @property
    def suspect_after_s(self) -> float:
        """Silence after which a node is suspected (partitioned)."""
        return self.heartbeat_interval_s * self.suspect_missed


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkStateChanged:
    """A node's link state moved; ``reason`` says which measurement moved it."""

    node_id: str
    old: LinkState
    new: LinkState
    at: float
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkStats:
    """A snapshot of one link, for telemetry, placement (``NodeView``) and the API."""

    node_id: str
    state: LinkState
    reason: str
    rtt_p50_ms: float | None
    rtt_p99_ms: float | None
    rtt_samples: int
    loss_rate: float
    silent_for_s: float
    partitioned_since: float | None
    partition_lengths_s: tuple[float, ...]
    partition_rate_per_h: float


class LinkGrade(NamedTuple):
    """What a controller's periodic pass reads of every node's link (``LinkMonitor.grade``):
    the state, the RTT percentiles, the mean length of the partitions seen (``outage_s``,
    0 with none) and the partition rate. ``stats`` gives the same figures in a full
    snapshot (with the reason, loss, silence and every partition length), which a pass
    over thousands of nodes per tick would build, and mostly drop, per node."""

    state: LinkState
    rtt_p50_ms: float | None
    rtt_p99_ms: float | None
    outage_s: float
    partition_rate_per_h: float


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty list (``q`` in (0, 1]).

    Nearest rank (``ceil(q·n)``-th smallest) never interpolates past a real sample,
    so p99 of 100 samples is the 99th, not the maximum that
    ``sorted[floor(0.99·n)]`` gives.
    """
    n = len(sorted_values)
    if not n:
        raise ValueError("percentile of no samples")
    # ``min(max(1, ceil(q·n)), n)``, without the two builtin calls (a grade reads two
    # percentiles per node and tick)
    rank = _ceil(q * n)
    if rank < 1:
        rank = 1
    elif rank > n:
        rank = n
    return sorted_values[rank - 1]


_ceil, _insort = math.ceil, bisect.insort
_new = tuple.__new__
# (an enum member read from its class goes through the enum metaclass's attribute hook:
# bound once for the grade every node gets every heartbeat)
_HEALTHY, _DEGRADED, _CRITICAL = LinkState.HEALTHY, LinkState.DEGRADED, LinkState.CRITICAL


class LinkMonitor:
    """Link health of one node, in the controller's monotonic (or virtual) time.

    Every feed method takes ``now`` and returns a ``LinkStateChanged`` when the state
    moved, else ``None``; ``poll(now)`` does the same without new input (call it on a
    timer so suspicion and confirmation are noticed during silence). Time that runs
    backwards is treated as standing still.
    """

    def __init__(self, node_id: str, *, now: float, policy: LinkPolicy | None = None) -> None:
        self.node_id = node_id
        self.policy = policy or LinkPolicy()
        self._now = now
        self._first_seen = now
        self._last_heard = now
        self._reported_down = False
        self._open_since: float | None = None
        self._rtts: deque[tuple[float, float]] = deque()
        self._probes: deque[tuple[float, bool]] = deque()
        self._partitions: deque[tuple[float, float]] = deque(maxlen=self.policy.max_history)
        self._starts: deque[float] = deque()
        # kept as samples come and go, so that a grade costs no sort and no count:
        # the window's RTTs in ascending order, its lost probes, and the last
        # measured reason with what it was formatted from
        self._sorted: list[float] = []
        self._lost = 0
        self._measured: tuple[tuple[float, float, int], str] | None = None
        self._state, self._reason = LinkState.HEALTHY, "registered"
        # every feed ends in a settle: a poll at the instant of the last one, with no
        # feed since, would trim nothing and grade the same (``stats`` right after a
        # probe's ``rtt``, once per node and heartbeat), so it is skipped
        self._settled_at: float | None = None

    # -- feeds ---------------------------------------------------------------

    def rtt(self, rtt_ms: float, now: float) -> LinkStateChanged | None:
        """A probe came back after ``rtt_ms``; the node is alive."""
        if not rtt_ms >= 0:
            raise ValueError(f"rtt_ms must be ≥ 0, got {rtt_ms}")
        now = self._heard(now)
        rtt_ms = float(rtt_ms)
        self._rtts.append((now, rtt_ms))
        _insort(self._sorted, rtt_ms)
        self._probes.append((now, True))
        return self._settle(now)

    def lost(self, now: float, count: int = 1) -> LinkStateChanged | None:
        """``count`` probes (heartbeats, pings) went unanswered: loss, not silence."""
        now = self._advance(now)
        self._probes.extend((now, False) for _ in range(count))
        self._lost += max(count, 0)
        return self._settle(now)

    def heard(self, now: float) -> LinkStateChanged | None:
        """Any message from the node (deltas, telemetry, hello): proof of life."""
        return self._settle(self._heard(now))

    def disconnected(self, now: float) -> LinkStateChanged | None:
        """The broker reported the node gone (presence ``offline`` / last will)."""
        now = self._advance(now)
        self._open_partition(now)
        self._reported_down = True
        return self._settle(now)

    def reconnected(self, now: float) -> LinkStateChanged | None:
        """The node is back (presence ``online``, hello)."""
        return self.heard(now)

    def poll(self, now: float) -> LinkStateChanged | None:
        """Re-evaluate at ``now`` without new input (suspicion, confirmation, window ageing)."""
        now = self._advance(now)
        if now == self._settled_at:
            return None
        return self._settle(now)

    # -- queries -------------------------------------------------------------

    @property
    def state(self) -> LinkState:
        """State as of the last call (use ``poll`` to bring it up to date)."""
        return self._state

    def silent_for(self, now: float) -> float:
        """Seconds since the node was last heard, or since its reported disconnect."""
        since = self._open_since if self._reported_down else self._last_heard
        return max(0.0, max(now, self._now) - (since if since is not None else self._now))

    def out_of_contact_for(self, now: float) -> float | None:
        """Seconds out of contact if partitioned or failed at ``now``, else ``None``."""
        self.poll(now)
        if self._open_since is None:
            return None
        return max(0.0, max(now, self._now) - self._open_since)

    def out_of_contact_since(self, since: float, now: float) -> bool:
        """Whether the node has been out of contact (suspected or reported down) at any
        moment after ``since``, as of ``now``. A probe sent at ``since`` and answered
        now then spans that outage: its round trip measures the outage, not the link."""
        self.poll(now)
        if self._open_since is not None:
            return True
        return bool(self._partitions) and self._partitions[-1][1] > since

    def partition_rate_per_h(self, now: float) -> float:
        """Partitions begun in the last ``rate_window_s`` per hour observed.

        The observed span is floored at ``min_rate_span_s`` so one early blip on a
        fresh node does not read as hundreds per hour.
        """
        # ``max``/``min`` of two spelled out (a grade per node and tick reads it; the
        # builtins parse keyword arguments on every call)
        if self._now > now:
            now = self._now
        policy, starts = self.policy, self._starts
        window = policy.rate_window_s
        horizon = now - window
        while starts and starts[0] < horizon:
            starts.popleft()
        observed = now - self._first_seen
        if window < observed:
            observed = window
        span = policy.min_rate_span_s
        if not span > observed:
            span = observed
        return len(starts) * 3600.0 / span

    def stats(self, now: float) -> LinkStats:
        """Snapshot at ``now`` (also brings the state up to date)."""
        self.poll(now)
        now = self._now
        probes = len(self._probes)
        lost = self._lost
        p50, p99 = self._rtt_percentiles()
        return LinkStats(
            node_id=self.node_id,
            state=self._state,
            reason=self._reason,
            rtt_p50_ms=p50,
            rtt_p99_ms=p99,
            rtt_samples=len(self._sorted),
            loss_rate=lost / probes if probes else 0.0,
            silent_for_s=self.silent_for(now),
            partitioned_since=self._open_since,
            partition_lengths_s=tuple(end - start for start, end in self._partitions),
            partition_rate_per_h=self.partition_rate_per_h(now),
        )

    def grade(self, now: float) -> LinkGrade:
        """The figures of ``stats(now)`` a periodic pass needs (``LinkGrade``), and the
        mean of its partition lengths; brings the state up to date as ``stats`` does."""
        self.poll(now)
        parts = self._partitions
        p50, p99 = self._rtt_percentiles()
        # ``LinkGrade(...)`` without the named tuple's Python ``__new__`` (one a node and tick)
        return _new(  # type: ignore[no-any-return]
            LinkGrade,
            (
                self._state,
                p50,
                p99,
                sum(end - start for start, end in parts) / len(parts) if parts else 0.0,
                self.partition_rate_per_h(self._now),
            ),
        )

    # -- internals -----------------------------------------------------------

    def _rtt_percentiles(self) -> tuple[float | None, float | None]:
        """p50 and p99 of the round trips in the window (``None`` without samples)."""
        values = self._sorted
        if not values:
            return None, None
        return percentile(values, 0.5), percentile(values, 0.99)

    def _advance(self, now: float) -> float:
        if not self._now > now:  # ``max(now, self._now)``
            self._now = now
        return self._now

    def _heard(self, now: float) -> float:
        # ``now = self._advance(now)``, spelled out (once per node and heartbeat)
        if self._now > now:
            now = self._now
        else:
            self._now = now
        if self._open_since is None and now - self._last_heard >= self.policy.suspect_after_s:
            # A silence nobody polled during: it was a partition all the same.
            self._open_partition(self._last_heard)
        if self._open_since is not None:
            self._partitions.append((self._open_since, now))
            self._open_since = None
        self._reported_down = False
        self._last_heard = now
        return now

    def _open_partition(self, start: float) -> None:
        if self._open_since is None:
            self._open_since = start
            self._starts.append(start)

    def _trim(self, now: float) -> None:
        horizon = now - self.policy.window_s
        cap = self.policy.max_samples
        ordered = self._sorted
        while self._rtts and (self._rtts[0][0] < horizon or len(self._rtts) > cap):
            _, rtt = self._rtts.popleft()
            del ordered[bisect.bisect_left(ordered, rtt)]
        while self._probes and (self._probes[0][0] < horizon or len(self._probes) > cap):
            _, ok = self._probes.popleft()
            if not ok:
                self._lost -= 1

    def _grade(self, now: float) -> tuple[LinkState, str]:
        p = self.policy
        silence = now - self._last_heard
        if self._open_since is None and silence >= p.suspect_after_s:
            self._open_partition(self._last_heard)
        if self._open_since is not None:
            suspected_at = (
                self._open_since if self._reported_down else self._last_heard + p.suspect_after_s
            )
            why = "disconnect reported" if self._reported_down else f"silent {silence:.1f} s"
            if now - suspected_at >= p.confirm_after_s:
                return LinkState.FAILED, f"{why}; confirmed after {p.confirm_after_s:g} s"
            return LinkState.PARTITIONED, f"{why}; suspected"
        values = self._sorted
        p99 = percentile(values, 0.99) if values else 0.0
        probes = len(self._probes)
        loss = self._lost / probes if probes else 0.0
        parts = self._partitions  # mostly none: spare the generator then
        recent = sum(1 for _, end in parts if end >= now - p.window_s) if parts else 0
        key = (p99, loss, recent)
        if self._measured is None or self._measured[0] != key:
            text = f"p99 {p99:.0f} ms, loss {loss:.0%}, {recent} disconnect(s) in {p.window_s:g} s"
            self._measured = (key, text)
        measured = self._measured[1]
        if p99 < p.healthy_rtt_ms and loss < p.healthy_loss and recent <= p.healthy_max_disconnects:
            return _HEALTHY, measured
        if (
            p99 < p.degraded_rtt_ms
            and loss < p.degraded_loss
            and recent <= p.degraded_max_disconnects
        ):
            return _DEGRADED, measured
        return _CRITICAL, measured

    def _settle(self, now: float) -> LinkStateChanged | None:
        self._settled_at = now
        self._trim(now)
        new, reason = self._grade(now)
        old, self._state, self._reason = self._state, new, reason
        if new is old:
            return None
        return LinkStateChanged(node_id=self.node_id, old=old, new=new, at=now, reason=reason)
