"""Where a client sends a new submission: the controller, or an agent of its site.

A device (or an operator's ``continuum submit --fallback-agent``) normally submits to the
controller. When the controller cannot be reached (its path is cut: a metro, WAN or region
outage) while an agent nearby still can, the submission may go to that agent's local API
instead, which runs it on its own as ``causal`` or ``eventual`` and syncs it upstream later
(docs/agent.md, "Local API"). ``Failover`` is the client's side of that choice, a circuit
breaker over the controller:

- **closed** (nothing known against the controller): submissions go to the controller. The
  first one that finds it unreachable pays the connect timeout (``CONNECT_TIMEOUT_S``), then
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

Pure and clock-free: ``now`` is the caller's monotonic seconds (the simulator's virtual time).
"""

from __future__ import annotations

import math
from enum import StrEnum

from shared.vocab import Level

__all__ = ["CONNECT_TIMEOUT_S", "PROBE_S", "Failover", "Route"]

#: How long a connection attempt to the controller may go unanswered before it counts as
#: failed: TCP's initial retransmission timeout (RFC 6298, 1 s): an unanswered SYN is resent
#: then, so waiting longer only helps when a single packet was lost, not across a cut. A
#: client whose path's round trip nears a second should use more (it is a parameter of the
#: shell's connection, not of this rule).
CONNECT_TIMEOUT_S = 1.0
#: Probe period while the controller is marked unreachable: a healed controller is bypassed
#: for at most this long plus a round trip, and a client sends one connection attempt per
#: period during an outage (0.2/s; a site of a thousand devices, 200/s at its edge router).
PROBE_S = 5.0


class Route(StrEnum):
    """Where a new submission goes."""

    CONTROLLER = "controller"
    AGENT = "agent"


class Failover:
    """The client's breaker over the controller (see the module docstring).

    ``down_since``: when an attempt first found the controller unreachable, ``None`` while
    nothing is known against it. ``next_probe``: when the next background probe is due (``inf``
    while closed).
    """

    __slots__ = ("down_since", "next_probe", "probe_s")

    def __init__(self, probe_s: float = PROBE_S) -> None:
        if not probe_s > 0 or math.isinf(probe_s):
            raise ValueError(f"probe_s must be a positive finite number, not {probe_s!r}")
        self.probe_s = probe_s
        self.down_since: float | None = None
        self.next_probe = math.inf

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
        return f"Failover(down_since={self.down_since!r}, next_probe={self.next_probe!r})"
