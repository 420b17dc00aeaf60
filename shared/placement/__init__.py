"""Placement: which node runs a task (DESIGN §6), Nomad-style.

Feasibility filters (``FILTERS``, each dropping nodes with a reason from
``REASONS``; exhaustion of free resources counted apart) -> score terms as numpy
columns over all nodes (``TERMS``, weighted by ``Weights``) -> selection with ties
spread by a seed from the task id and epoch. Every ``Decision`` carries an
``Explanation``. ``place`` places one task, ``place_batch`` many at once with the
same answers; ``place_reference`` is the per-node Python loop both are checked
against. Re-placement triggers for the adaptive mode are pure functions.

The building blocks of the pipeline (``prepare`` and its cached ``Shape``,
``first_exhausted``, ``fit_term``, ``resolve_mode``, ``quantise``) are public too:
the simulator composes them into its per-site fast path, so that it decides with
this code rather than a copy of it.

Needs numpy: the controller and the simulator import it, an edge agent never does.
"""

from shared.placement._batch import place_batch
from shared.placement._demand import TaskDemand
from shared.placement._explain import TOP_CANDIDATES, Candidate, Decision, Explanation
from shared.placement._filters import DIMENSIONS, FILTERS, REASONS, first_exhausted
from shared.placement._pipeline import DEFAULT_MODE, DEFAULT_WEIGHTS, Shape, place, prepare
from shared.placement._reference import place_reference
from shared.placement._scoring import (
    MODE_TIERS,
    TERMS,
    TINY,
    Weights,
    ewma,
    fit_term,
    resolve_mode,
    update_success,
)
from shared.placement._select import SCALE, quantise, tie_seed
from shared.placement._table import LINK_CODES, NodeTable, NodeView, node_hash
from shared.placement._triggers import (
    TRIGGERS,
    Trigger,
    failure_rate,
    latency_violated,
    link_degraded,
    overload,
    slowdown,
    task_triggers,
    update_failure_rate,
)

__all__ = [
    "DEFAULT_MODE",
    "DEFAULT_WEIGHTS",
    "DIMENSIONS",
    "FILTERS",
    "LINK_CODES",
    "MODE_TIERS",
    "REASONS",
    "SCALE",
    "TERMS",
    "TINY",
    "TOP_CANDIDATES",
    "TRIGGERS",
    "Candidate",
    "Decision",
    "Explanation",
    "NodeTable",
    "NodeView",
    "Shape",
    "TaskDemand",
    "Trigger",
    "Weights",
    "ewma",
    "failure_rate",
    "first_exhausted",
    "fit_term",
    "latency_violated",
    "link_degraded",
    "node_hash",
    "overload",
    "place",
    "place_batch",
    "place_reference",
    "prepare",
    "quantise",
    "resolve_mode",
    "slowdown",
    "task_triggers",
    "tie_seed",
    "update_failure_rate",
    "update_success",
]
