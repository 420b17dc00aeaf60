"""Config files as frozen dataclasses: the one reader of every TOML table the shells load.

A *settings class* is a dataclass whose fields are the keys of one TOML table; a field whose
type is another settings class is a nested table (a ``[section]``). The field's annotation
decides the check: ``bool``, ``int``, ``float`` (an integer is accepted and converted),
``str``, ``list[str]``/``tuple[str, ...]``, a table of strings (``dict[str, str]``) or of
numbers (``Mapping[str, float]``). :func:`rule` (the field's metadata) adds what the type
cannot say: bounds, allowed values, a check; ``setting(default, ...)`` is the short form
for an immutable default. A field that is not a key of the file (the file's own path, say)
is declared with ``field(metadata=NOT_A_SETTING)``.

:func:`read_settings` reads a table already parsed from TOML (reading the file, its mode and
the environment stay with the shells) through :class:`~shared.model.Fields`, so every
problem of a file is collected with its dotted path (``broker.port: must be ≤ 65535``,
``api.bogus: unknown field``), in one pass. A key with a problem keeps its default, so the
caller's cross-key checks that follow do not report it a second time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from shared.errors import Problem
from shared.model._fields import Check, Fields

__all__ = ["NOT_A_SETTING", "read_settings", "rule", "setting"]

T = TypeVar("T")

_KEY = "continuum.setting"
#: ``field(metadata=NOT_A_SETTING)``: the field is set by code, never read from the file.
NOT_A_SETTING: Mapping[str, object] = MappingProxyType({_KEY: None})

MAX_STRING_LEN = 4096  # paths and tokens; longer is a mistake, not a setting
MAX_ITEMS = 256  # entries of a list or table key


@dataclass(frozen=True, slots=True)
class _Rule:
    """What a key's type cannot say. Bounds apply to a number and to each value of a table
    of numbers; ``choices`` and ``check`` to a string and to each value of a table of
    strings."""

    min: float | None = None
    max: float | None = None
    exclusive_min: bool = False
    choices: tuple[str, ...] = ()
    check: Check | None = None
    non_empty: bool = False
    max_len: int = MAX_STRING_LEN

    def string_check(self) -> Check | None:
        """``choices`` then ``check``, worded as :meth:`Fields.choice` words a bad choice."""
        if not self.choices:
            return self.check
        allowed = ", ".join(repr(c) for c in self.choices)

        def check(value: str) -> str | None:
            if value not in self.choices:
                return f"must be one of {allowed} (got {value!r})"
            return self.check(value) if self.check is not None else None

        return check


_NO_RULE = _Rule()


def rule(
    *,
    min: float | None = None,
    max: float | None = None,
    exclusive_min: bool = False,
    choices: tuple[str, ...] = (),
    check: Check | None = None,
    non_empty: bool = False,
) -> Mapping[str, object]:
    """A key's rule, as the field's metadata: ``field(default_factory=dict,
    metadata=rule(min=0))``.

    ``min``/``max``/``exclusive_min`` bound a number (``min=0, exclusive_min=True``: must be
    positive); ``choices`` lists the strings allowed; ``check`` returns why a string is
    wrong (or ``None``); ``non_empty`` refuses ``""`` when the key is given.
    """
    return MappingProxyType(
        {_KEY: _Rule(min, max, exclusive_min, tuple(choices), check, non_empty)}
    )


def setting(default: Any, **kwargs: Any) -> Any:
    """``field(default=default, metadata=rule(**kwargs))``: a key with an immutable default."""
    return field(default=default, metadata=rule(**kwargs))


def read_settings(
    data: object,
    cls: type[T],
    *,
    problems: list[Problem],
    path: str = "",
    default: T | None = None,
) -> T:
    """``cls`` built from ``data`` (a table parsed from TOML); problems go to ``problems``.

    Absent keys keep their defaults: ``default``'s values when given, else the class's (a
    section's defaults are the value its parent declares, so a parent may default two
    sections of one class differently). Unknown keys and wrong values are problems (the key
    keeps its default). ``cls`` must be a dataclass whose every field can be read (see the
    module docstring): a field of another type is a ``TypeError``, a mistake in the code.
    """
    return _read(Fields(data, path, problems=problems), cls, default)


def _read(table: Fields, cls: type[T], base: T | None) -> T:
    hints = get_type_hints(cls)
    values: dict[str, object] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        key_rule = f.metadata.get(_KEY, _NO_RULE)
        if key_rule is None or not f.init:
            continue
        if base is not None:
            default = getattr(base, f.name)
        elif f.default is MISSING:
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = f.default
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):  # a [section]: its keys keep their own defaults
            sub = table.sub(f.name)
            values[f.name] = default if sub is None else _read(sub, kind, default)  # type: ignore[arg-type]
            continue
        before = len(table.problems)
        value = _value(table, f.name, kind, default, key_rule, where=cls.__name__)
        values[f.name] = default if len(table.problems) > before else value
    table.finish()
    if base is not None:  # fields that are not keys (NOT_A_SETTING) come from the base
        return dataclasses.replace(base, **values)  # type: ignore[type-var]
    return cls(**values)


def _value(table: Fields, key: str, kind: Any, default: Any, spec: _Rule, *, where: str) -> Any:
    """One key read by its annotation ``kind``."""
    if kind is bool:
        return table.boolean(key, default)
    if kind is int:
        low = None if spec.min is None else int(spec.min) + int(spec.exclusive_min)
        high = None if spec.max is None else int(spec.max)
        return table.integer(key, default, min=low, max=high)
    if kind is float:
        return table.number(
            key, default, min=spec.min, max=spec.max, exclusive_min=spec.exclusive_min
        )
    if kind is str:
        return table.string(
            key, default, max_len=spec.max_len, check=spec.string_check(), non_empty=spec.non_empty
        )
    origin, args = get_origin(kind), get_args(kind)
    if origin in (list, tuple) and args in ((str,), (str, ...)):
        items = table.string_list(
            key, tuple(default), max_items=MAX_ITEMS, max_len=spec.max_len, check=spec.check
        )
        return list(items) if origin is list else items
    if origin in (dict, Mapping) and args == (str, str):
        if not table.has(key):
            return default
        return table.string_map(
            key,
            max_entries=MAX_ITEMS,
            key_check=lambda _: None,
            max_value_len=spec.max_len,
            value_check=spec.string_check(),
        )
    if origin in (dict, Mapping) and args == (str, float):
        return _number_table(table, key, default, spec)
    raise TypeError(f"{where}.{key}: no settings reader for {kind!r}")


def _number_table(table: Fields, key: str, default: Any, spec: _Rule) -> Any:
    """A table of numbers (score weights): every value checked against the key's bounds."""
    sub = table.sub(key)
    if sub is None:
        return default
    if len(sub.data) > MAX_ITEMS:
        table.error(key, f"must have at most {MAX_ITEMS} entries (got {len(sub.data)})")
        return default
    numbers = {
        str(name): sub.number(
            str(name), min=spec.min, max=spec.max, exclusive_min=spec.exclusive_min
        )
        for name in sub.data
    }
    return numbers if sub.valid else default
