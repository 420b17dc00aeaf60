"""Online learning of what placement predicts with: node speed, per-kind task work,
link round trip and bandwidth, and each node's prediction error.

Pure: the state is plain data (``LearnerState``, serialisable with ``to_dict`` /
``from_dict``) that the controller and the simulator keep and feed with what they
observe (finished attempts, pings, transfers); nothing here reads a clock. Priors
(``TIER_SPEED``, ``TIER_POWER_W``, ``PRIOR_ERROR``, ``DEFAULT_WORK_S``) are what
placement assumes before the first sample. See ``docs/placement.md``.
"""

from shared.learning._estimates import (
    DEFAULT_WORK_S,
    DRIFT_VAR,
    EWMA_ALPHA,
    HINT_SPREAD,
    LINK_STATE_RISK,
    MAX_KINDS,
    NO_HINT_SPREAD,
    OBSERVATION_VAR,
    PRIOR_ERROR,
    TIER_POWER_W,
    TIER_SPEED,
    TIER_SPREAD,
    Estimate,
    LearnerState,
    ewma,
    observe_finish,
    observe_rtt,
    observe_run,
    observe_transfer,
    task_kind,
    work_key,
)

__all__ = [
    "DEFAULT_WORK_S",
    "DRIFT_VAR",
    "EWMA_ALPHA",
    "HINT_SPREAD",
    "LINK_STATE_RISK",
    "MAX_KINDS",
    "NO_HINT_SPREAD",
    "OBSERVATION_VAR",
    "PRIOR_ERROR",
    "TIER_POWER_W",
    "TIER_SPEED",
    "TIER_SPREAD",
    "Estimate",
    "LearnerState",
    "ewma",
    "observe_finish",
    "observe_rtt",
    "observe_run",
    "observe_transfer",
    "task_kind",
    "work_key",
]
