"""Canonical JSON: one byte string per value, so equal states hash equal.

Sorted keys, no whitespace, ASCII escapes (any string encodes, lone surrogates
included) and no NaN/Infinity. Also the bounded checker that untrusted JSON
values (specs, attempt results) must pass before they enter a record, so that
canonical encoding of a validated record can never fail.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from shared.errors import Problem

__all__ = [
    "MAX_INT",
    "MAX_JSON_DEPTH",
    "MAX_JSON_NODES",
    "canonical_json",
    "json_problems",
    "sha256_hex",
]

MAX_JSON_DEPTH = 32
MAX_JSON_NODES = 20_000
MAX_STRING_LEN = 65_536
MAX_INT = 2**63 - 1

_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False, check_circular=False
)


def canonical_json(value: object) -> str:
    """Sorted-key compact JSON text of a JSON-able value."""
    return _ENCODER.encode(value)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def json_problems(value: object, path: str) -> list[Problem]:
    """Every reason ``value`` is not a bounded JSON value (``[]`` when it is).

    Accepts ``None``, ``bool``, ``int``, finite ``float``, ``str``, ``list`` and
    ``dict`` with ``str`` keys; bounds nesting depth, node count and string length.
    """
    if _clean(value):
        return []
    problems: list[Problem] = []
    budget = [MAX_JSON_NODES]
    _walk(value, path, 0, problems, budget)
    return problems


def _clean(value: object) -> bool:
    """Whether ``_walk`` certainly finds no problem in ``value``: the common case, checked
    level by level without a call or a path per value (a spec is checked on every record
    that carries it: decoding a delta batch spent a third of its time here). ``False``
    whenever in doubt (a subclass of a JSON type included): ``_walk`` then decides, and
    names every problem."""
    level: list[Any] = [value]
    nodes = 0
    depth = 0
    while level:
        nodes += len(level)
        if nodes > MAX_JSON_NODES:
            return False
        below: list[Any] = []
        for item in level:
            kind = type(item)
            if kind is str:
                if len(item) > MAX_STRING_LEN:
                    return False
            elif kind is dict:
                if depth >= MAX_JSON_DEPTH:
                    return False
                for key in item:
                    if type(key) is not str:
                        return False
                below.extend(item.values())
            elif kind is list:
                if depth >= MAX_JSON_DEPTH:
                    return False
                below.extend(item)
            elif kind is int:
                if not -MAX_INT <= item <= MAX_INT:
                    return False
            elif kind is float:
                if not math.isfinite(item):
                    return False
            elif item is not None and kind is not bool:
                return False
        level = below
        depth += 1
    return True


def _walk(value: object, path: str, depth: int, problems: list[Problem], budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        if budget[0] == -1:
            problems.append(Problem(path, f"more than {MAX_JSON_NODES} JSON values"))
        return
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -MAX_INT <= value <= MAX_INT:
            problems.append(Problem(path, "integer out of 64-bit range"))
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            problems.append(Problem(path, "must be a finite number"))
        return
    if isinstance(value, str):
        if len(value) > MAX_STRING_LEN:
            problems.append(Problem(path, f"string longer than {MAX_STRING_LEN}"))
        return
    if depth >= MAX_JSON_DEPTH and isinstance(value, list | dict):
        problems.append(Problem(path, f"nested deeper than {MAX_JSON_DEPTH}"))
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, f"{path}[{i}]", depth + 1, problems, budget)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append(Problem(path, f"object key {key!r} is not a string"))
                continue
            _walk(item, f"{path}.{key[:60]}" if path else key[:60], depth + 1, problems, budget)
        return
    problems.append(Problem(path, f"not a JSON value ({type(value).__name__})"))
