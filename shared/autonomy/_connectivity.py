"""Connectivity from the age of the last controller acknowledgement, and the autonomy level
it implies (docs/agent.md).

Only acknowledgements count, not TCP or MQTT liveness: a broker that stays up while the
controller is gone (or a one-way cut) must still push the agent towards autonomy.
"""

from __future__ import annotations

import math
from enum import StrEnum

from shared.vocab import Connectivity

__all__ = ["AutonomyLevel", "autonomy_level", "connectivity"]


def connectivity(ack_age_s: float, period_s: float = 15.0) -> Connectivity:
    """Grade the uplink from ``ack_age_s`` (seconds since the last ack; ``inf`` = never).

    ``< T/4`` connected, ``< T/2`` degraded, ``< T`` intermittent, else disconnected, with
    ``T = period_s``. A negative age (clock adjusted under the caller) counts as fresh; NaN
    counts as never acknowledged, the safe side.
    """
    if not period_s > 0 or math.isinf(period_s):
        raise ValueError(f"period_s must be a positive finite number, not {period_s!r}")
    if math.isnan(ack_age_s):
        return Connectivity.DISCONNECTED
    age = max(ack_age_s, 0.0)
    if age < period_s / 4:
        return Connectivity.CONNECTED
    if age < period_s / 2:
        return Connectivity.DEGRADED
    if age < period_s:
        return Connectivity.INTERMITTENT
    return Connectivity.DISCONNECTED


class AutonomyLevel(StrEnum):
    """How much the agent currently decides on its own, from least to most.

    The *rules* do not change with the level (a strong task needs its lease at every level;
    see :func:`~shared.autonomy.may_start`); what changes is who is expected to act:

    - ``dependent``: the controller is listening; it places, re-places and retries, and the
      agent's reports reach it within a heartbeat.
    - ``semi_autonomous``: acks lag; the agent still defers to the controller but its reports
      may arrive late, so it keeps every change in the outbox and retries on its own.
    - ``highly_autonomous``: the controller may already consider the node suspect; the agent
      runs and retries placed work itself and takes local submissions.
    - ``fully_autonomous``: no controller; the agent is the only decision maker for its work
      (queue order, retries, shedding) until anti-entropy reconciles after reconnect.
    """

    DEPENDENT = "dependent"
    SEMI_AUTONOMOUS = "semi_autonomous"
    HIGHLY_AUTONOMOUS = "highly_autonomous"
    FULLY_AUTONOMOUS = "fully_autonomous"

    @property
    def rank(self) -> int:
        """0 (dependent) … 3 (fully autonomous), for comparisons."""
        return _RANK[self]


_RANK = {
    AutonomyLevel.DEPENDENT: 0,
    AutonomyLevel.SEMI_AUTONOMOUS: 1,
    AutonomyLevel.HIGHLY_AUTONOMOUS: 2,
    AutonomyLevel.FULLY_AUTONOMOUS: 3,
}

_BY_CONNECTIVITY = {
    Connectivity.CONNECTED: AutonomyLevel.DEPENDENT,
    Connectivity.DEGRADED: AutonomyLevel.SEMI_AUTONOMOUS,
    Connectivity.INTERMITTENT: AutonomyLevel.HIGHLY_AUTONOMOUS,
    Connectivity.DISCONNECTED: AutonomyLevel.FULLY_AUTONOMOUS,
}


def autonomy_level(conn: Connectivity) -> AutonomyLevel:
    """The level for a connectivity grade: one step per grade, monotone.

    Seed 001 §D2 lets a connected node be semi-autonomous when its past local decisions
    agreed with the cloud's; Continuum has no such accuracy measure, so connected is
    always ``dependent``.
    """
    return _BY_CONNECTIVITY[Connectivity(conn)]
