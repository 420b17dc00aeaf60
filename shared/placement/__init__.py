"""Placement: which node runs a task, Nomad-style (``docs/placement.md``).

Feasibility filters (``FILTERS``, each dropping nodes with a reason from
``REASONS``; exhaustion of free resources counted apart) -> a rank for every
feasible node at once with numpy: in the ``adaptive`` mode the predicted
completion time and cost (``_predict``), in the others the weighted sum of score
terms (``TERMS``, ``Weights``) -> selection with ties spread by a seed from the
task id and epoch. Every ``Decision`` carries an ``Explanation``. ``place_batch``
places tasks in order and allocates them; ``place`` is its single-task form.
Re-placement triggers for the adaptive mode are pure functions.

The building blocks of the pipeline (``prepare`` and its ``Shape``,
``first_exhausted``, ``fit_term``, ``resolve_mode``, ``quantise``) are public too:
the simulator composes them into its per-site fast path for the weighted-sum
modes, so that it decides with this code rather than a copy of it.

Needs numpy: the controller and the simulator import it, an edge agent never does.
"""

from shared.placement._cache import DEFAULT_CACHE_BYTES, ShapeCache
from shared.placement._demand import TaskDemand
from shared.placement._explain import TOP_CANDIDATES, Candidate, Decision, Explanation
from shared.placement._filters import DIMENSIONS, FILTERS, REASONS, first_exhausted
from shared.placement._pipeline import (
    DEFAULT_MODE,
    DEFAULT_WEIGHTS,
    PREDICTED_MODES,
    Shape,
    feasibility_key,
    place,
    place_batch,
    prepare,
)
from shared.placement._predict import COST_WEIGHT, PREDICTION_TERMS, SAFETY
from shared.placement._scoring import (
    LINK_STATE_RISK,
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

__all__ = [
    "COST_WEIGHT",
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_MODE",
    "DEFAULT_WEIGHTS",
    "DIMENSIONS",
    "FILTERS",
    "LINK_CODES",
    "LINK_STATE_RISK",
    "MODE_TIERS",
    "PREDICTED_MODES",
    "PREDICTION_TERMS",
    "REASONS",
    "SAFETY",
    "SCALE",
    "TERMS",
    "TINY",
    "TOP_CANDIDATES",
    "Candidate",
    "Decision",
    "Explanation",
    "NodeTable",
    "NodeView",
    "Shape",
    "ShapeCache",
    "TaskDemand",
    "Weights",
    "ewma",
    "feasibility_key",
    "first_exhausted",
    "fit_term",
    "node_hash",
    "place",
    "place_batch",
    "prepare",
    "quantise",
    "resolve_mode",
    "tie_seed",
    "update_success",
]
