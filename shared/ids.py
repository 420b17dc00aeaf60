"""Identifiers that end up in MQTT topics, file names and SQL rows.

A node id becomes a topic level and a broker username (the ACL uses ``%u``), so
it must never contain the MQTT wildcards ``+`` and ``#`` or the level separator
``/``. The alphabet is deliberately small: letters, digits, ``.``, ``_``, ``-``,
starting with a letter or digit.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = [
    "MAX_NODE_ID_LEN",
    "MAX_TASK_ID_LEN",
    "check_node_id",
    "check_task_id",
    "is_node_id",
    "is_task_id",
]

MAX_NODE_ID_LEN = 64
MAX_TASK_ID_LEN = 128

_NODE_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NODE_ID_LEN - 1}}}")
_TASK_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:-]{{0,{MAX_TASK_ID_LEN - 1}}}")


def is_node_id(value: object) -> bool:
    if type(value) is str:  # exact str only: a subclass's __eq__ must not reach the cache
        return _is_node_id_text(value)
    return isinstance(value, str) and _NODE_ID.fullmatch(value) is not None


@lru_cache(maxsize=4096)
def _is_node_id_text(value: str) -> bool:
    """The few node ids of a fleet are checked in every message (sender, dots, version
    vectors, stamps): remembered, bounded (the texts come from the network)."""
    return _NODE_ID.fullmatch(value) is not None


def is_task_id(value: object) -> bool:
    return isinstance(value, str) and _TASK_ID.fullmatch(value) is not None


def check_node_id(value: object) -> str | None:
    """Return ``None`` when ``value`` is a valid node id, else why it is not."""
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}"
    if is_node_id(value):
        return None
    if not value:
        return "must not be empty"
    if len(value) > MAX_NODE_ID_LEN:
        return f"must be at most {MAX_NODE_ID_LEN} characters"
    return "may hold only letters, digits, '.', '_', '-' and must start with a letter or digit"


def check_task_id(value: object) -> str | None:
    """Return ``None`` when ``value`` is a valid task id, else why it is not."""
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}"
    if is_task_id(value):
        return None
    if not value:
        return "must not be empty"
    if len(value) > MAX_TASK_ID_LEN:
        return f"must be at most {MAX_TASK_ID_LEN} characters"
    return "may hold only letters, digits, '.', '_', ':', '-' and must start with a letter or digit"
