"""Reading typed fields out of a scenario's nested TOML tables, collecting every
problem with its path (``timeline[2].op``) instead of stopping at the first: what
:mod:`.scenario`'s parser is built on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.errors import Problem
from shared.vocab import Level, Tier

__all__ = ["Reader", "level_names", "selector_problem"]


class Reader:
    """Collects problems while reading typed fields out of nested tables."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def bad(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def table(self, data: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, Mapping):
            self.bad(path, f"must be a table, not {type(value).__name__}")
            return {}
        return value

    def tables(self, data: Mapping[str, Any], key: str, path: str) -> list[Mapping[str, Any]]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            self.bad(path, "must be an array of tables ([[...]])")
            return []
        return value

    def labels(self, data: Mapping[str, Any], key: str, path: str) -> dict[str, str]:
        value = data.get(key, {})
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            self.bad(path, "must be a table of string → string")
            return {}
        return dict(value)

    def unknown(self, data: Mapping[str, Any], allowed: set[str], path: str) -> None:
        for key in sorted(set(data) - allowed):
            self.bad(f"{path}.{key}" if path else key, "unknown field")

    def num(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        default: float | None,
        *,
        lo: float | None = 0.0,
        hi: float | None = None,
        integer: bool = False,
    ) -> Any:
        value = data.get(key, default)
        if value is None:
            return None
        kinds: tuple[type, ...] = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            self.bad(path, f"must be {'an integer' if integer else 'a number'}")
            return default
        if lo is not None and value < lo:
            self.bad(path, f"must be ≥ {lo}")
        if hi is not None and value > hi:
            self.bad(path, f"must be ≤ {hi}")
        return value

    def choice(
        self, data: Mapping[str, Any], key: str, path: str, default: str | None, options: Any
    ) -> Any:
        value = data.get(key, default)
        if value is not None and value not in options:
            self.bad(path, f"must be one of {', '.join(map(str, options))}; got {value!r}")
            return default
        return value

    def range_ms(
        self, data: Mapping[str, Any], key: str, path: str, default: tuple[int, int]
    ) -> Any:
        value = data.get(key, list(default))
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value, value]
        ok = (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
            and value[0] <= value[1]
        )
        if not ok:
            self.bad(path, "must be an integer ≥ 0 or [lo, hi] with 0 ≤ lo ≤ hi")
            return default
        return (value[0], value[1])


def selector_problem(sel: Any) -> str | None:
    if isinstance(sel, list):
        if not sel or not all(isinstance(s, str) and s.startswith("agent-") for s in sel):
            return "a list of node names must hold names like 'agent-2'"
        return None
    if not isinstance(sel, str):
        return "must be a selector string or a list of node names"
    if sel in ("all", "half", "one", "others"):
        return None
    if sel.startswith("random:"):
        return None if sel[7:].isdigit() and int(sel[7:]) > 0 else "random:K needs K ≥ 1"
    if sel.startswith("tier:"):
        return None if sel[5:] in [t.value for t in Tier] else f"unknown tier in {sel!r}"
    if sel.startswith("agent-") and sel[6:].isdigit() and int(sel[6:]) >= 1:
        return None
    return f"unknown selector {sel!r} (all, half, one, others, random:K, tier:T, agent-N)"


def level_names() -> list[str]:
    return [lv.value for lv in Level]
