"""Agent-originated task ids: the namespace a node may create tasks in.

A task submitted to an agent's local API without an id gets ``<node>-<12 hex digits>``
(:func:`local_task_id`); one submitted with an id of its own must spell it
``<node>:<anything>`` (node ids never contain ``:``). Either way the owner is read back
unambiguously even though node ids may themselves contain ``-``: node ``edge`` cannot
claim ``edge-1-0123456789ab`` (owner ``edge-1``) nor ``edge-1:job`` (owner ``edge-1``).

The namespace only decides who may *create* a record the controller has never
seen. Who may later *read* it is the origin the controller recorded at creation
(``shared.authz.may_read``), never a parse of the id: an id submitted through
the controller's API may look like any node's.
"""

from __future__ import annotations

import re

from shared.ids import MAX_NODE_ID_LEN, is_node_id

__all__ = ["LOCAL_TOKEN_HEX", "local_task_id", "origin_of"]

#: Hex digits of the random part of an agent-originated id.
LOCAL_TOKEN_HEX = 12

_LOCAL = re.compile(rf"(.{{1,{MAX_NODE_ID_LEN}}})-([0-9a-f]{{{LOCAL_TOKEN_HEX}}})")


def local_task_id(node: str, token: str) -> str:
    """The id of a task submitted on ``node``; ``token`` is 12 lowercase hex digits
    (the caller draws them: this module reads no randomness)."""
    if not is_node_id(node):
        raise ValueError(f"invalid node id {node!r}")
    if re.fullmatch(rf"[0-9a-f]{{{LOCAL_TOKEN_HEX}}}", token) is None:
        raise ValueError(f"token must be {LOCAL_TOKEN_HEX} lowercase hex digits, not {token!r}")
    return f"{node}-{token}"


def origin_of(task_id: str) -> str | None:
    """The node whose namespace ``task_id`` is in, or ``None`` (not agent-originated)."""
    node, colon, rest = task_id.partition(":")
    if colon:
        return node if is_node_id(node) and rest else None
    match = _LOCAL.fullmatch(task_id)
    if match is None or not is_node_id(match.group(1)):
        return None
    return match.group(1)
