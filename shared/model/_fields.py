"""A validating reader for JSON-like objects that collects *every* problem.

User specs, config files and wire bodies all arrive as dicts from TOML or JSON.
``Fields`` wraps one such object: its typed getters return a usable value (the
default when the input is wrong) and record a :class:`~shared.errors.Problem`
with the field's full path instead of raising, so a single pass reports all
that is wrong. ``finish()`` reports the keys nobody read — as errors for user
input (``strict``: a typo must not pass silently), ignored on the wire
(``strict=False``: forward compatibility, docs/protocol.md).

Numbers exclude ``bool`` (``True`` is an ``int`` in Python but never a number in
a spec) and non-finite floats (JSON parsers accept ``NaN``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Final, TypeVar

from shared.errors import Problem, ValidationError

__all__ = ["REQUIRED", "Fields", "join_path"]

E = TypeVar("E", bound=StrEnum)
Check = Callable[[str], "str | None"]


class _Required:
    """Sentinel type: the field must be present."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()


def join_path(path: str, key: str | int) -> str:
    """``join_path("tasks[1]", "retry") == "tasks[1].retry"``; ints index lists."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    return type(value).__name__


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and (isinstance(value, int) or math.isfinite(value))
    )


class Fields:
    """One JSON object under validation at ``path``; problems go to ``problems``.

    Pass the parent's ``problems`` list to nested readers (``sub()`` does) so
    every problem of one input ends up in one :class:`ValidationError`.
    """

    def __init__(
        self,
        data: object,
        path: str = "",
        *,
        problems: list[Problem] | None = None,
        strict: bool = True,
    ) -> None:
        self.path = path
        self.problems: list[Problem] = [] if problems is None else problems
        self.strict = strict
        self._seen: set[str] = set()
        if isinstance(data, Mapping):
            self.data: Mapping[str, object] = data
            self.valid = True
        else:
            self.data = {}
            self.valid = False
            self.problems.append(Problem(path, f"must be a table, not {_type_name(data)}"))

    # -- bookkeeping -----------------------------------------------------------

    def path_of(self, key: str | int) -> str:
        return join_path(self.path, key)

    def error(self, key: str | int | None, message: str) -> None:
        """Record a problem at ``key`` (or at this object itself when ``None``)."""
        self.problems.append(Problem(self.path if key is None else self.path_of(key), message))

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str) -> object:
        """The unvalidated value (or ``None``), marking the key as read."""
        self._seen.add(key)
        return self.data.get(key)

    def _get(self, key: str, default: object) -> tuple[bool, object]:
        """(present, value); records "required" when absent without a default."""
        self._seen.add(key)
        if key in self.data:
            return True, self.data[key]
        if default is REQUIRED:
            self.error(key, "is required")
        return False, default

    def finish(self) -> None:
        """Report every key that no getter read (only when ``strict``)."""
        if not self.strict:
            return
        known = sorted(self._seen)
        for key in self.data:
            if key in self._seen:
                continue
            import difflib  # only for a misspelt key: the agent's idle memory (docs/agent.md)

            hint = difflib.get_close_matches(str(key), known, n=1)
            suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
            self.error(str(key), f"unknown field{suffix}")

    def raise_if_problems(self, what: str) -> None:
        if self.problems:
            raise ValidationError(self.problems, what=what)

    # -- scalars ---------------------------------------------------------------

    def string(
        self,
        key: str,
        default: str | _Required = REQUIRED,
        *,
        max_len: int = 200,
        check: Check | None = None,
        non_empty: bool = False,
    ) -> str:
        present, value = self._get(key, default)
        if not present:
            return value if isinstance(value, str) else ""
        return self._check_string(key, value, max_len=max_len, check=check, non_empty=non_empty)

    def opt_string(
        self, key: str, *, max_len: int = 200, check: Check | None = None, non_empty: bool = True
    ) -> str | None:
        """An optional string: missing or ``null`` gives ``None``."""
        self._seen.add(key)
        value = self.data.get(key)
        if value is None:
            return None
        return self._check_string(key, value, max_len=max_len, check=check, non_empty=non_empty)

    def _check_string(
        self, key: str | int, value: object, *, max_len: int, check: Check | None, non_empty: bool
    ) -> str:
        if not isinstance(value, str):
            self.error(key, f"must be a string, not {_type_name(value)}")
            return ""
        if len(value) > max_len:
            self.error(key, f"must be at most {max_len} characters (got {len(value)})")
        elif non_empty and not value:
            self.error(key, "must not be empty")
        elif check is not None and (why := check(value)) is not None:
            self.error(key, why)
        return value

    def number(
        self,
        key: str,
        default: float | _Required = REQUIRED,
        *,
        min: float | None = None,
        max: float | None = None,
        exclusive_min: bool = False,
    ) -> float:
        present, value = self._get(key, default)
        if not present:
            return float(value) if _is_number(value) else 0.0
        return self._check_number(key, value, min=min, max=max, exclusive_min=exclusive_min)

    def opt_number(
        self,
        key: str,
        *,
        min: float | None = None,
        max: float | None = None,
        exclusive_min: bool = False,
    ) -> float | None:
        """An optional number: missing or ``null`` gives ``None``."""
        self._seen.add(key)
        value = self.data.get(key)
        if value is None:
            return None
        return self._check_number(key, value, min=min, max=max, exclusive_min=exclusive_min)

    def _check_number(
        self,
        key: str,
        value: object,
        *,
        min: float | None,
        max: float | None,
        exclusive_min: bool,
    ) -> float:
        if not _is_number(value):
            self.error(key, f"must be a finite number, not {_type_name(value)}")
            return 0.0
        number = float(value)  # type: ignore[arg-type]
        if min is not None and (number <= min if exclusive_min else number < min):
            self.error(key, f"must be {'>' if exclusive_min else '≥'} {min:g} (got {number:g})")
        elif max is not None and number > max:
            self.error(key, f"must be ≤ {max:g} (got {number:g})")
        return number

    def integer(
        self,
        key: str,
        default: int | _Required = REQUIRED,
        *,
        min: int | None = None,
        max: int | None = None,
    ) -> int:
        present, value = self._get(key, default)
        if not present:
            return value if isinstance(value, int) else 0
        return self._check_integer(key, value, min=min, max=max)

    def opt_integer(
        self, key: str, *, min: int | None = None, max: int | None = None
    ) -> int | None:
        """An optional integer: missing or ``null`` gives ``None``."""
        self._seen.add(key)
        value = self.data.get(key)
        if value is None:
            return None
        return self._check_integer(key, value, min=min, max=max)

    def _check_integer(self, key: str, value: object, *, min: int | None, max: int | None) -> int:
        # 3.0 from a JSON writer that prints floats is accepted as 3.
        if isinstance(value, float) and _is_number(value) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            self.error(key, f"must be an integer, not {_type_name(value)}")
            return 0
        if min is not None and value < min:
            self.error(key, f"must be ≥ {min} (got {value})")
        elif max is not None and value > max:
            self.error(key, f"must be ≤ {max} (got {value})")
        return value

    def boolean(self, key: str, default: bool | _Required = REQUIRED) -> bool:
        present, value = self._get(key, default)
        if not isinstance(value, bool):
            if present:
                self.error(key, f"must be true or false, not {_type_name(value)}")
            return False
        return value

    def choice(self, key: str, enum: type[E], default: E | _Required = REQUIRED) -> E:
        present, value = self._get(key, default)
        if not present:
            return value if isinstance(value, enum) else next(iter(enum))
        return self._check_choice(key, value, enum) or next(iter(enum))

    def opt_choice(self, key: str, enum: type[E]) -> E | None:
        """An optional enum value: missing or ``null`` gives ``None``."""
        self._seen.add(key)
        value = self.data.get(key)
        if value is None:
            return None
        return self._check_choice(key, value, enum)

    def _check_choice(self, key: str | int, value: object, enum: type[E]) -> E | None:
        if isinstance(value, str):
            try:
                return enum(value)
            except ValueError:
                pass
        allowed = ", ".join(repr(member.value) for member in enum)
        shown = repr(value) if isinstance(value, str) else _type_name(value)
        self.error(key, f"must be one of {allowed} (got {shown})")
        return None

    # -- containers ------------------------------------------------------------

    def sub(self, key: str, *, required: bool = False) -> Fields | None:
        """The nested table at ``key`` sharing our problem list; ``None`` if absent."""
        self._seen.add(key)
        if key not in self.data:
            if required:
                self.error(key, "is required")
            return None
        return Fields(self.data[key], self.path_of(key), problems=self.problems, strict=self.strict)

    def sequence(self, key: str, *, max_items: int, required: bool = False) -> list[object] | None:
        """The list at ``key`` (``None`` if absent or wrong); checks its length only."""
        self._seen.add(key)
        if key not in self.data:
            if required:
                self.error(key, "is required")
            return None
        value = self.data[key]
        if not isinstance(value, list | tuple):
            self.error(key, f"must be a list, not {_type_name(value)}")
            return None
        if len(value) > max_items:
            self.error(key, f"must have at most {max_items} items (got {len(value)})")
            return None
        return list(value)

    def string_list(
        self,
        key: str,
        default: tuple[str, ...] | _Required = REQUIRED,
        *,
        max_items: int,
        max_len: int = 200,
        check: Check | None = None,
        unique: bool = False,
    ) -> tuple[str, ...]:
        items = self.sequence(key, max_items=max_items, required=default is REQUIRED)
        if items is None:
            return default if isinstance(default, tuple) else ()
        out: list[str] = []
        seen: set[str] = set()
        key_path = self.path_of(key)
        item_reader = Fields({}, key_path, problems=self.problems)
        for index, item in enumerate(items):
            text = item_reader._check_string(
                index, item, max_len=max_len, check=check, non_empty=True
            )
            if unique and text in seen:
                item_reader.error(index, f"duplicate {text!r}")
            seen.add(text)
            out.append(text)
        return tuple(out)

    def choice_list(
        self, key: str, enum: type[E], default: tuple[E, ...], *, unique: bool = True
    ) -> tuple[E, ...]:
        items = self.sequence(key, max_items=len(enum))
        if items is None:
            return default
        out: list[E] = []
        item_reader = Fields({}, self.path_of(key), problems=self.problems)
        for index, item in enumerate(items):
            member = item_reader._check_choice(index, item, enum)
            if member is None:
                continue
            if unique and member in out:
                item_reader.error(index, f"duplicate {member.value!r}")
                continue
            out.append(member)
        return tuple(out)

    def string_map(
        self,
        key: str,
        *,
        max_entries: int,
        key_check: Check,
        max_value_len: int,
        value_check: Check | None = None,
    ) -> dict[str, str]:
        """A table of string → string (env, labels); missing gives ``{}``."""
        table = self.sub(key)
        if table is None or not table.valid:
            return {}
        if len(table.data) > max_entries:
            self.error(key, f"must have at most {max_entries} entries (got {len(table.data)})")
            return {}
        out: dict[str, str] = {}
        for name, value in table.data.items():
            table._seen.add(name)
            if not isinstance(name, str) or (why := key_check(name)) is not None:
                table.error(str(name), f"bad key: {why or 'must be a string'}")
                continue
            out[name] = table._check_string(
                name, value, max_len=max_value_len, check=value_check, non_empty=False
            )
        return out
