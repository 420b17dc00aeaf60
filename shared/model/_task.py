"""The task spec: what a user submits, validated once, canonical forever after.

``parse_task_spec`` turns a dict loaded from TOML or JSON into a frozen
:class:`TaskSpec`, or raises one :class:`~shared.errors.ValidationError` that
lists every problem with its field path. ``TaskSpec.to_dict()`` gives the
canonical dict of docs/task-spec.md (every key present, defaults filled): that dict
is what the CRDT stores verbatim and what ``place`` messages carry, so
``parse_task_spec(spec.to_dict()) == spec`` must hold exactly.

Commands are argv lists and never shell strings (docs/security.md): a string command is
refused with a message saying how to write the list. Every size is bounded (the
``MAX_*`` constants) so one spec cannot blow up a journal row or an MQTT message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from shared.crdt import record_tail_room
from shared.errors import Problem, ValidationError
from shared.ids import MAX_TASK_ID_LEN, check_task_id
from shared.model._fields import Fields
from shared.vocab import Level, PlacementMode, Tier

__all__ = [
    "ADAPTIVE",
    "MAX_ARGS_BYTES",
    "MAX_ARGV_ITEMS",
    "MAX_ARG_LEN",
    "MAX_DEPENDS_ON",
    "MAX_ENV_ENTRIES",
    "MAX_ENV_VALUE_LEN",
    "MAX_LABELS",
    "MAX_LABEL_VALUE_LEN",
    "MAX_NAME_LEN",
    "MAX_SPEC_BYTES",
    "RESERVED_ENV",
    "ConsistencySpec",
    "PlacementConstraints",
    "Resources",
    "RetryPolicy",
    "TaskSpec",
    "check_label_key",
    "parse_task_spec",
]

MAX_NAME_LEN: Final = 200
MAX_ARGV_ITEMS: Final = 256
MAX_ARG_LEN: Final = 4096
MAX_ENV_ENTRIES: Final = 64
MAX_ENV_VALUE_LEN: Final = 4096
MAX_LABELS: Final = 64
MAX_LABEL_KEY_LEN: Final = 63
MAX_LABEL_VALUE_LEN: Final = 256
MAX_ARGS_BYTES: Final = 65_536
#: A whole task spec as compact ASCII JSON (its wire form). A task travels in one
#: protocol message (``shared.protocol.MAX_MESSAGE_BYTES``, 256 KiB): in ``place`` with
#: its dependencies' results, in ``deltas`` with its record's events. Half of it leaves
#: them room; a bigger spec was accepted and then could never be sent (tests check both).
MAX_SPEC_BYTES: Final = 131_072
MAX_DEPENDS_ON: Final = 1000
MAX_CALLABLE_LEN: Final = 200
MAX_DATA_SOURCE_LEN: Final = 200
MAX_CPU: Final = 1024.0
MAX_MEMORY_MB: Final = 4 * 1024 * 1024
MAX_DISK_MB: Final = 1 << 30
MAX_PRIORITY: Final = 100
MAX_TIMEOUT_S: Final = 7 * 86_400.0
MAX_DEADLINE_S: Final = 30 * 86_400.0
MAX_DISCONNECT_S: Final = 30 * 86_400.0
MAX_ATTEMPTS: Final = 100
MAX_BACKOFF_S: Final = 86_400.0
MAX_MULTIPLIER: Final = 10.0
MAX_LATENCY_MS: Final = 3_600_000.0
MAX_DATA_SIZE_MB: Final = 1e9

#: The wire spelling of an adaptive consistency level.
ADAPTIVE: Final = "adaptive"

#: Environment names the agent sets itself (docs/agent.md); a spec may not override them.
RESERVED_ENV: Final = frozenset(
    {
        "CONTINUUM_TASK_ID",
        "CONTINUUM_ATTEMPT",
        "CONTINUUM_EPOCH",
        "CONTINUUM_INPUTS",
        "CONTINUUM_OUTPUT",
    }
)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")
_LABEL_KEY = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._/-]{{0,{MAX_LABEL_KEY_LEN - 1}}}")
_CALLABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]*")
_ALL_TIERS: Final = tuple(sorted(Tier, key=lambda tier: tier.rank))
_MAX_ARGS_DEPTH: Final = 32


def _check_env_name(name: str) -> str | None:
    if _ENV_NAME.fullmatch(name) is None:
        return "environment names are letters, digits and '_', not starting with a digit"
    if name in RESERVED_ENV:
        return f"{name} is set by the agent and cannot be overridden"
    return None


def check_label_key(key: str) -> str | None:
    """``None`` when ``key`` is a valid label key (node labels use the same rule)."""
    if _LABEL_KEY.fullmatch(key) is None:
        return (
            f"label keys are 1 to {MAX_LABEL_KEY_LEN} letters, digits, '.', '_', '/', '-',"
            " starting with a letter or digit"
        )
    return None


def _check_callable(name: str) -> str | None:
    if _CALLABLE.fullmatch(name) is None:
        return "a callable name is letters, digits, '_', '.', ':', '-', starting with a letter"
    return None


def _check_no_nul(text: str) -> str | None:
    return "must not contain NUL characters" if "\x00" in text else None


def _json_depth(value: object, depth: int = 0) -> int:
    if isinstance(value, Mapping):
        return max((_json_depth(v, depth + 1) for v in value.values()), default=depth + 1)
    if isinstance(value, list | tuple):
        return max((_json_depth(v, depth + 1) for v in value), default=depth + 1)
    return depth


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    """What one attempt needs on its node; admission and placement compare it with free capacity."""

    cpu: float = 0.1
    memory_mb: int = 64
    disk_mb: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "memory_mb": self.memory_mb, "disk_mb": self.disk_mb}


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """``max_attempts`` counts the first run. Delay before retry *n* (n failures so far) is
    ``min(backoff_max_s, backoff_s · multiplier^(n-1)) · (1 + jitter · u)``, u ∈ [0, 1)."""

    max_attempts: int = 3
    backoff_s: float = 1.0
    multiplier: float = 2.0
    backoff_max_s: float = 60.0
    jitter: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_attempts": self.max_attempts,
            "backoff_s": self.backoff_s,
            "multiplier": self.multiplier,
            "backoff_max_s": self.backoff_max_s,
            "jitter": self.jitter,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsistencySpec:
    """A fixed level (``min == max``, ``adaptive`` false) or adaptive bounds.

    The wire form keeps ``level``: the fixed level, or ``"adaptive"``.
    """

    adaptive: bool = False
    min: Level = Level.CAUSAL
    max: Level = Level.CAUSAL

    @classmethod
    def fixed(cls, level: Level) -> ConsistencySpec:
        return cls(adaptive=False, min=level, max=level)

    @classmethod
    def bounded(cls, low: Level, high: Level) -> ConsistencySpec:
        return cls(adaptive=True, min=low, max=high)

    @property
    def level(self) -> str:
        """The fixed level's value, or ``"adaptive"``."""
        return ADAPTIVE if self.adaptive else self.min.value

    def clamp(self, level: Level) -> Level:
        """``level`` moved inside ``[min, max]``."""
        strength = max(self.min.strength, min(level.strength, self.max.strength))
        return Level.from_strength(strength)

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "min": self.min.value, "max": self.max.value}


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementConstraints:
    """Where a task may run. ``tiers`` is an allowed *set* (kept in tier rank order);
    ``preferred_tiers`` is an order of preference within it; ``mode`` ``None`` means the
    controller's default placement mode."""

    tiers: tuple[Tier, ...] = _ALL_TIERS
    preferred_tiers: tuple[Tier, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    max_latency_ms: float | None = None
    data_source: str | None = None
    data_size_mb: float = 0.0
    mode: PlacementMode | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "tiers": [tier.value for tier in self.tiers],
            "preferred_tiers": [tier.value for tier in self.preferred_tiers],
            "labels": dict(self.labels),
            "max_latency_ms": self.max_latency_ms,
            "data_source": self.data_source,
            "data_size_mb": self.data_size_mb,
            "mode": None if self.mode is None else self.mode.value,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSpec:
    """A validated task. Build it with :func:`parse_task_spec`; the constructor does not
    validate (it is also used by the parser on already-checked values)."""

    id: str
    name: str = ""
    command: tuple[str, ...] | None = None
    callable: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    priority: int = 50
    timeout_s: float = 60.0
    deadline_s: float | None = None
    #: Optional hint: the task's run time on a reference core (speed 1.0), in seconds. The
    #: prior of the learners' per-kind run time (shared.learning ``work_key``) until runs of
    #: its kind are measured; it never bounds a run (``timeout_s`` does).
    work_s: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    consistency: ConsistencySpec = field(default_factory=ConsistencySpec)
    placement: PlacementConstraints = field(default_factory=PlacementConstraints)
    max_disconnect_s: float = 300.0
    idempotent: bool = False
    depends_on: tuple[str, ...] = ()
    workflow: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The canonical dict of docs/task-spec.md (fresh containers; safe to mutate)."""
        return {
            "id": self.id,
            "name": self.name,
            "command": None if self.command is None else list(self.command),
            "callable": self.callable,
            "args": json.loads(json.dumps(self.args)),
            "env": dict(self.env),
            "resources": self.resources.to_dict(),
            "priority": self.priority,
            "timeout_s": self.timeout_s,
            "deadline_s": self.deadline_s,
            "work_s": self.work_s,
            "retry": self.retry.to_dict(),
            "consistency": self.consistency.to_dict(),
            "placement": self.placement.to_dict(),
            "max_disconnect_s": self.max_disconnect_s,
            "idempotent": self.idempotent,
            "depends_on": list(self.depends_on),
            "workflow": self.workflow,
        }


# -- parsing -------------------------------------------------------------------


def parse_task_spec(data: object, *, path: str = "") -> TaskSpec:
    """Validate one task dict; raise one ``ValidationError`` listing every problem."""
    problems: list[Problem] = []
    spec = read_task_spec(Fields(data, path, problems=problems))
    if spec is None:
        raise ValidationError(problems, what="task spec")
    return spec


def read_task_spec(fields: Fields) -> TaskSpec | None:
    """Read a task from ``fields``, adding problems to its list; ``None`` if any were found
    in this task. Used by the workflow parser to collect problems across tasks."""
    before = len(fields.problems)
    if not fields.valid:
        return None
    task_id = fields.string("id", check=check_task_id, max_len=MAX_TASK_ID_LEN)
    name = fields.string("name", "", max_len=MAX_NAME_LEN)
    command, callable_name, args = _read_action(fields)
    env = fields.string_map(
        "env",
        max_entries=MAX_ENV_ENTRIES,
        key_check=_check_env_name,
        max_value_len=MAX_ENV_VALUE_LEN,
        value_check=_check_no_nul,
    )
    resources = _read_resources(fields.sub("resources"))
    priority = fields.integer("priority", 50, min=0, max=MAX_PRIORITY)
    timeout_s = fields.number("timeout_s", 60.0, min=0.0, max=MAX_TIMEOUT_S, exclusive_min=True)
    deadline_s = fields.opt_number("deadline_s", min=0.0, max=MAX_DEADLINE_S, exclusive_min=True)
    work_s = fields.opt_number("work_s", min=0.0, max=MAX_TIMEOUT_S, exclusive_min=True)
    retry = _read_retry(fields.sub("retry"))
    consistency = _read_consistency(fields)
    placement = _read_placement(fields.sub("placement"))
    max_disconnect_s = fields.number(
        "max_disconnect_s", 300.0, min=0.0, max=MAX_DISCONNECT_S, exclusive_min=True
    )
    idempotent = fields.boolean("idempotent", False)
    depends_on = fields.string_list(
        "depends_on",
        (),
        max_items=MAX_DEPENDS_ON,
        max_len=MAX_TASK_ID_LEN,
        check=check_task_id,
        unique=True,
    )
    if task_id in depends_on:
        fields.error("depends_on", f"a task cannot depend on itself ({task_id!r})")
    workflow = fields.opt_string("workflow", max_len=MAX_TASK_ID_LEN, check=check_task_id)
    fields.finish()
    if len(fields.problems) > before:
        return None
    spec = TaskSpec(
        id=task_id,
        name=name,
        command=command,
        callable=callable_name,
        args=args,
        env=env,
        resources=resources,
        priority=priority,
        timeout_s=timeout_s,
        deadline_s=deadline_s,
        work_s=work_s,
        retry=retry,
        consistency=consistency,
        placement=placement,
        max_disconnect_s=max_disconnect_s,
        idempotent=idempotent,
        depends_on=depends_on,
        workflow=workflow,
    )
    size = len(json.dumps(spec.to_dict(), separators=(",", ":")))
    if size > MAX_SPEC_BYTES:
        fields.error(
            None,
            f"is {size:,} bytes as JSON, over {MAX_SPEC_BYTES:,}: a task travels in one "
            "protocol message; pass large data as a file or a data source, not in the spec",
        )
        return None
    attempts = spec.retry.max_attempts
    if record_tail_room(size, attempts) < 0:
        fits = max((n for n in range(1, attempts) if record_tail_room(size, n) >= 0), default=1)
        fields.error(
            "retry.max_attempts",
            f"{attempts} attempts of a spec of {size:,} bytes as JSON make a task record "
            f"too large for one protocol message: at most {fits} for this spec, or a "
            "smaller spec",
        )
        return None
    return spec


def _read_action(fields: Fields) -> tuple[tuple[str, ...] | None, str | None, dict[str, Any]]:
    """``command`` xor ``callable``, and ``args`` (callables only)."""
    raw_command = fields.raw("command")
    command: tuple[str, ...] | None = None
    if isinstance(raw_command, str):
        fields.error(
            "command",
            "must be an argv list such as ['python3', 'job.py', '--n', '3'], not a string:"
            " Continuum never runs a shell (split the words yourself)",
        )
    elif raw_command is not None:
        command = fields.string_list(
            "command", max_items=MAX_ARGV_ITEMS, max_len=MAX_ARG_LEN, check=_check_no_nul
        )
        if isinstance(raw_command, list) and not raw_command:
            fields.error("command", "must not be empty")
    callable_name = fields.opt_string("callable", max_len=MAX_CALLABLE_LEN, check=_check_callable)
    raw_callable = fields.raw("callable")
    if raw_command is None and raw_callable is None:
        fields.error(None, "give exactly one of 'command' (an argv list) or 'callable' (a name)")
    elif raw_command is not None and raw_callable is not None:
        fields.error(None, "give exactly one of 'command' or 'callable', not both")

    args: dict[str, Any] = {}
    raw_args = fields.raw("args")
    if raw_args is not None:
        if not isinstance(raw_args, Mapping):
            fields.error("args", "must be a table (a JSON object)")
        elif raw_args and raw_command is not None:
            fields.error("args", "args are handed to a callable; a command takes its argv only")
        else:
            args = _read_args(fields, raw_args)
    return command, callable_name, args


def _read_args(fields: Fields, raw_args: Mapping[str, Any]) -> dict[str, Any]:
    try:
        encoded = json.dumps(raw_args, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        fields.error("args", f"must be plain JSON (strings, finite numbers, lists, tables): {exc}")
        return {}
    if len(encoded.encode()) > MAX_ARGS_BYTES:
        fields.error("args", f"must encode to at most {MAX_ARGS_BYTES} bytes of JSON")
    elif _json_depth(raw_args) > _MAX_ARGS_DEPTH:
        fields.error("args", f"must nest at most {_MAX_ARGS_DEPTH} levels deep")
    result: dict[str, Any] = json.loads(encoded)
    return result


def _read_resources(fields: Fields | None) -> Resources:
    if fields is None:
        return Resources()
    resources = Resources(
        cpu=fields.number("cpu", 0.1, min=0.0, max=MAX_CPU),
        memory_mb=fields.integer("memory_mb", 64, min=0, max=MAX_MEMORY_MB),
        disk_mb=fields.integer("disk_mb", 0, min=0, max=MAX_DISK_MB),
    )
    fields.finish()
    return resources


def _read_retry(fields: Fields | None) -> RetryPolicy:
    if fields is None:
        return RetryPolicy()
    policy = RetryPolicy(
        max_attempts=fields.integer("max_attempts", 3, min=1, max=MAX_ATTEMPTS),
        backoff_s=fields.number("backoff_s", 1.0, min=0.0, max=MAX_BACKOFF_S),
        multiplier=fields.number("multiplier", 2.0, min=1.0, max=MAX_MULTIPLIER),
        backoff_max_s=fields.number("backoff_max_s", 60.0, min=0.0, max=MAX_BACKOFF_S),
        jitter=fields.number("jitter", 0.1, min=0.0, max=1.0),
    )
    if policy.backoff_max_s < policy.backoff_s:
        fields.error("backoff_max_s", f"must be ≥ backoff_s ({policy.backoff_s:g})")
    fields.finish()
    return policy


def _read_consistency(fields: Fields) -> ConsistencySpec:
    """``consistency = "strong"``, ``= "adaptive"`` (eventual..strong) or a table
    ``{level, min, max}``; a fixed level's bounds, if given, must equal it."""
    raw = fields.raw("consistency")
    if raw is None:
        return ConsistencySpec()
    if isinstance(raw, str):
        raw = {"level": raw}
    table = Fields(raw, fields.path_of("consistency"), problems=fields.problems)
    if not table.valid:
        return ConsistencySpec()
    before = len(table.problems)
    level = table.string("level", ADAPTIVE if table.has("min") or table.has("max") else "causal")
    level_ok = len(table.problems) == before
    low = table.opt_choice("min", Level)
    high = table.opt_choice("max", Level)
    table.finish()
    if not level_ok:
        return ConsistencySpec()
    if level == ADAPTIVE:
        low = low or Level.EVENTUAL
        high = high or Level.STRONG
        if low.strength > high.strength:
            table.error(None, f"min ({low.value}) must not be stronger than max ({high.value})")
        return ConsistencySpec.bounded(low, high)
    try:
        fixed = Level(level)
    except ValueError:
        choices = ", ".join(repr(v) for v in [*(lv.value for lv in Level), ADAPTIVE])
        table.error("level", f"must be one of {choices} (got {level!r})")
        return ConsistencySpec()
    for key, bound in (("min", low), ("max", high)):
        if bound is not None and bound != fixed:
            table.error(
                key,
                f"a fixed level {fixed.value!r} has min = max = level;"
                " use level = 'adaptive' to give bounds",
            )
    return ConsistencySpec.fixed(fixed)


def _read_placement(fields: Fields | None) -> PlacementConstraints:
    if fields is None:
        return PlacementConstraints()
    tiers = fields.choice_list("tiers", Tier, _ALL_TIERS)
    if fields.has("tiers") and not tiers and isinstance(fields.raw("tiers"), list):
        fields.error("tiers", "must allow at least one tier")
    preferred = fields.choice_list("preferred_tiers", Tier, ())
    for index, tier in enumerate(preferred):
        if tier not in tiers:
            fields.error(f"preferred_tiers[{index}]", f"{tier.value!r} is not in tiers")
    constraints = PlacementConstraints(
        tiers=tuple(sorted(tiers, key=lambda tier: tier.rank)),
        preferred_tiers=preferred,
        labels=fields.string_map(
            "labels",
            max_entries=MAX_LABELS,
            key_check=check_label_key,
            max_value_len=MAX_LABEL_VALUE_LEN,
        ),
        max_latency_ms=fields.opt_number(
            "max_latency_ms", min=0.0, max=MAX_LATENCY_MS, exclusive_min=True
        ),
        data_source=fields.opt_string("data_source", max_len=MAX_DATA_SOURCE_LEN),
        data_size_mb=fields.number("data_size_mb", 0.0, min=0.0, max=MAX_DATA_SIZE_MB),
        mode=fields.opt_choice("mode", PlacementMode),
    )
    fields.finish()
    return constraints
