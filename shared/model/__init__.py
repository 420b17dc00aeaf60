"""Task and workflow model: validation of user input into frozen specs.

A spec is validated once, at the edge of the system (CLI, REST API, local agent
API), into a :class:`TaskSpec` or :class:`WorkflowSpec`; everything downstream
trusts its canonical dict (``to_dict()``, docs/task-spec.md). Bad input raises one
:class:`~shared.errors.ValidationError` listing every problem with its path.
:class:`Fields` is the validating reader the parsers use; config files and wire
bodies use it too; :func:`read_settings` builds a config file's frozen dataclasses with it.
"""

from shared.model._fields import REQUIRED, Fields, join_path
from shared.model._retry import UniformSource, backoff_delay, base_delay
from shared.model._settings import NOT_A_SETTING, read_settings, rule, setting
from shared.model._submission import MAX_SUBMISSION_BYTES, load_submission, parse_submission
from shared.model._task import (
    ADAPTIVE,
    MAX_ARG_LEN,
    MAX_ARGS_BYTES,
    MAX_ARGV_ITEMS,
    MAX_DEADLINE_S,
    MAX_DEPENDS_ON,
    MAX_ENV_ENTRIES,
    MAX_ENV_VALUE_LEN,
    MAX_LABEL_VALUE_LEN,
    MAX_LABELS,
    MAX_NAME_LEN,
    MAX_SPEC_BYTES,
    RESERVED_ENV,
    ConsistencySpec,
    PlacementConstraints,
    Resources,
    RetryPolicy,
    TaskSpec,
    check_label_key,
    parse_task_spec,
)
from shared.model._workflow import MAX_WORKFLOW_TASKS, WorkflowSpec, find_cycles, parse_workflow

__all__ = [
    "ADAPTIVE",
    "MAX_ARGS_BYTES",
    "MAX_ARGV_ITEMS",
    "MAX_ARG_LEN",
    "MAX_DEADLINE_S",
    "MAX_DEPENDS_ON",
    "MAX_ENV_ENTRIES",
    "MAX_ENV_VALUE_LEN",
    "MAX_LABELS",
    "MAX_LABEL_VALUE_LEN",
    "MAX_NAME_LEN",
    "MAX_SPEC_BYTES",
    "MAX_SUBMISSION_BYTES",
    "MAX_WORKFLOW_TASKS",
    "NOT_A_SETTING",
    "REQUIRED",
    "RESERVED_ENV",
    "ConsistencySpec",
    "Fields",
    "PlacementConstraints",
    "Resources",
    "RetryPolicy",
    "TaskSpec",
    "UniformSource",
    "WorkflowSpec",
    "backoff_delay",
    "base_delay",
    "check_label_key",
    "find_cycles",
    "join_path",
    "load_submission",
    "parse_submission",
    "parse_task_spec",
    "parse_workflow",
    "read_settings",
    "rule",
    "setting",
]
