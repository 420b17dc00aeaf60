"""Where a client sends a new submission: the controller, or an agent of its site.

A device (or an operator's ``continuum submit --fallback-agent``) normally submits to the
controller. When the controller cannot be reached (its path is cut: a metro, WAN or region
outage) while an agent nearby still can, the submission may go to that agent's local API
instead, which runs it on its own as ``causal`` or ``eventual`` and syncs it upstream later
(docs/agent.md, "Local API"). ``Failover`` is the client's side of that choice, a circuit
breaker over the controller:

- **closed** (nothing known against the controller): submissions go to the controller. The
  first one that finds it unreachable pays the connect timeout (``connect_wait``), then
  the client records ``failed`` and asks again: now the route is the fallback agent.
- **open** (``down_since`` set): new submissions go straight to the fallback agent, no
  timeout paid again; the controller is probed in the background every ``PROBE_S``
  (``probe_due`` / ``probe_sent``) and the first answer (``reached``) closes the breaker.
  What the client knows is only what its own attempts told it: it learns of an outage by a
  failed attempt and of the end of one by a probe's answer.

Two cases never fail over: work whose *minimum* level is ``strong`` (an agent alone runs only
``causal``/``eventual`` work: a strong attempt needs the controller's lease), and a client
with no fallback agent (none configured, or none it can reach). Those go to the controller,
and wait for it or fail there.

Only a failure to *deliver* counts (a refused or timed-out connection): an answer of any kind,
an HTTP error included, proves the controller reachable, and an answer that never came for a
request that was sent may mean the controller has the task: failing over then could run it
twice, so the caller reports that failure instead (``cloud/operator_cli.py``).

**How long a connection attempt may go unanswered** (``connect_wait``) follows from what the
client knows. From its round trips to the controller (``observe_rtt``, each connection it made
without a retransmission: Karn's rule), TCP's retransmission timeout of RFC 6298: ``SRTT +
4·RTTVAR``, at least ``RTO_MIN_S``, and ``CONNECT_TIMEOUT_S`` (RFC 6298's initial 1 s) before
any sample; an answer later than that is outside what the path has shown, so the controller
is taken as unreachable and the breaker opens. From the task's deadline: a connection that
was never made delivered nothing, so giving up on it cannot run the task twice, and waiting
past the point where the fallback could still meet the deadline (the time left less the
fallback's expected finish) forfeits the fallback's chance. Such an early give-up sends that
one task to the fallback and does *not* open the breaker: an answer not yet overdue by the
RTT rule is no evidence against the controller, and opening on it would send every later
submission past a healthy controller for a probe period. It never comes before the expected
answer (``SRTT``): before that, giving up would bypass a healthy controller on every
submission, a routing choice this rule does not make.

Pure and clock-free: ``now`` is the caller's monotonic seconds (the simulator's virtual time).
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import NamedTuple

from shared.vocab import Level

__all__ = [
    "CONNECT_TIMEOUT_S",
    "PROBE_S",
    "RTO_MAX_S",
    "RTO_MIN_S",
    "ConnectWait",
    "Failover",
    "Route",
]

#: How long a connection attempt to the controller may go unanswered before it counts as
#: failed while the client has no round-trip sample: TCP's initial retransmission timeout
#: (RFC 6298, 1 s): an unanswered SYN is resent then, so waiting longer only helps when a
#: single packet was lost, not across a cut.
CONNECT_TIMEOUT_S = 1.0
#: The lower bound of the RTT-based timeout: Linux's ``TCP_RTO_MIN`` (200 ms). RFC 6298 asks
#: for 1 s to avoid spurious retransmissions with coarse timers and delayed ACKs; a connect
#: answer (SYN-ACK) is never delayed, and Linux, which most clients run, uses 200 ms. Below
#: it, scheduling noise on a loaded client would open the breaker against a healthy controller.
RTO_MIN_S = 0.2
#: The upper bound (RFC 6298 (2.5): at least 60 s).
RTO_MAX_S = 60.0
#: RFC 6298's gains: SRTT ← (1 - alpha)·SRTT + alpha·R,
#: RTTVAR ← (1 - beta)·RTTVAR + beta·|SRTT - R|.
_ALPHA = 1 / 8
_BETA = 1 / 4
# the gains' complements and the bound of a valid sample, once (a sample per submission)
_KEEP_ALPHA, _KEEP_BETA, _INF = 1 - _ALPHA, 1 - _BETA, math.inf
#: Probe period while the controller is marked unreachable: a healed controller is bypassed
#: for at most this long plus a round trip, and a client sends one connection attempt per
#: period during an outage (0.2/s; a site of a thousand devices, 200/s at its edge router).
PROBE_S = 5.0


class Route(StrEnum):
    """Where a new submission goes."""

    CONTROLLER = "controller"
    AGENT = "agent"


class ConnectWait(NamedTuple):
    """How long to wait for the controller's answer to a connection attempt (``timeout_s``),
    and whether the attempt counts as ``failed`` (the breaker opens) when none came by then
    (``opens``): true for the RTT-based timeout, false for a deadline-driven early give-up,
    which sends only its own task to the fallback."""

    timeout_s: float
    opens: bool


class Failover:
    """The client's breaker over the controller (see the module docstring).

    ``down_since``: when an attempt first found the controller unreachable, ``None`` while
    nothing is known against it. ``next_probe``: when the next background probe is due (``inf``
    while closed). ``srtt``/``rttvar``: RFC 6298's smoothed round trip to the controller and
    its variation, seconds (``None`` before the first sample).
    """

    __slots__ = ("down_since", "next_probe", "probe_s", "rttvar", "srtt")

    def __init__(self, probe_s: float = PROBE_S) -> None:
        if not probe_s > 0 or math.isinf(probe_s):
            raise ValueError(f"probe_s must be a positive finite number, not {probe_s!r}")
        self.probe_s = probe_s
        self.down_since: float | None = None
        self.next_probe = math.inf
        self.srtt: float | None = None
        self.rttvar = 0.0

    def observe_rtt(self, rtt_s: float) -> None:
        """A connection to the controller was answered ``rtt_s`` after its first SYN, none
        resent (Karn's rule: the caller leaves out attempts that were retried): RFC 6298's
        (2.2) for the first sample, (2.3) after. A negative or non-finite sample is ignored."""
        if not 0.0 <= rtt_s < _INF:
            return
        srtt = self.srtt
        if srtt is None:
            self.srtt, self.rttvar = rtt_s, rtt_s / 2
        else:
            self.rttvar = _KEEP_BETA * self.rttvar + _BETA * abs(srtt - rtt_s)
            self.srtt = _KEEP_ALPHA * srtt + _ALPHA * rtt_s

    @property
    def rto_s(self) -> float:
        """RFC 6298's retransmission timeout: ``SRTT + 4·RTTVAR`` within ``RTO_MIN_S`` …
        ``RTO_MAX_S``; ``CONNECT_TIMEOUT_S`` before any sample."""
        srtt = self.srtt
        if srtt is None:
            return CONNECT_TIMEOUT_S
        # ``min(RTO_MAX_S, max(RTO_MIN_S, rto))`` spelled out: read on every submission
        rto = srtt + 4 * self.rttvar
        if not rto > RTO_MIN_S:
            return RTO_MIN_S
        return rto if rto < RTO_MAX_S else RTO_MAX_S

    def connect_wait(
        self, *, deadline_left_s: float | None = None, fallback_s: float = 0.0
    ) -> ConnectWait:
        """How long a new connection attempt to the controller may go unanswered (the module
        docstring says why). ``deadline_left_s``: seconds left to the task's deadline
        (``None``: no deadline, or no fallback for this task: nothing to give up early for);
        ``fallback_s``: the fallback's expected time from submission to result (0 when
        unknown: the deadline itself is then the last useful moment).

        The RTT-based timeout (``rto_s``, opens the breaker), unless the fallback could meet
        the deadline only by giving up earlier: then at ``deadline_left_s - fallback_s``, but
        never before ``srtt`` (``opens`` false). When the fallback cannot meet the deadline
        at all, nothing is gained by giving up early."""
        rto = self.rto_s
        if deadline_left_s is None:
            return ConnectWait(rto, True)
        slack = deadline_left_s - fallback_s
        if not slack > 0:
            return ConnectWait(rto, True)
        give_up = max(slack, self.srtt or 0.0)
        if give_up < rto:
            return ConnectWait(give_up, False)
        return ConnectWait(rto, True)

    def route(self, *, min_level: Level, fallback: bool) -> Route:
        """Where a new submission goes now: the controller unless it is marked unreachable,
        a fallback agent is available (``fallback``) and the work may run without the
        controller (``min_level`` below ``strong``)."""
        if self.down_since is None or not fallback or min_level is Level.STRONG:
            return Route.CONTROLLER
        return Route.AGENT

    def failed(self, now: float) -> None:
        """An attempt to reach the controller (a submission or a probe) was not delivered:
        its connection was refused or timed out at ``now``. Opens the breaker (the first
        probe one ``probe_s`` later); an open one keeps its ``down_since`` and schedule."""
        if self.down_since is None:
            self.down_since = now
            self.next_probe = now + self.probe_s

    def reached(self, now: float) -> None:
        """An answer came from the controller at ``now`` (any answer: an HTTP error is one):
        the breaker closes."""
        self.down_since = None
        self.next_probe = math.inf

    def probe_due(self, now: float) -> bool:
        """Whether a background probe of the controller should be sent at ``now``."""
        return now >= self.next_probe

    def probe_sent(self, now: float) -> None:
        """A probe left at ``now``: the next one is due ``probe_s`` later (whatever this one's
        fate; its answer, if any, is ``reached``)."""
        if self.down_since is not None:
            self.next_probe = now + self.probe_s

    def __repr__(self) -> str:
        return (
            f"Failover(down_since={self.down_since!r}, next_probe={self.next_probe!r}, "
            f"srtt={self.srtt!r}, rttvar={self.rttvar!r})"
        )
