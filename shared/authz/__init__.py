"""Authorisation of what nodes write, decided in the pure core (see ``docs/security.md``).

``authorize_delta`` splits a node's CRDT delta into what it may write and why the
rest was refused; ``may_read`` says which records a node may be sent (``readers``:
every node that may; ``lacking``: those a change must be sent to); ``accept_seq``
bounds how far a node moves its acknowledged outbox mark; ``pinned_to_origin`` keeps
agent-originated tasks on their node. ``local_task_id``/``origin_of`` define the id
namespace a node creates tasks in; ``RefusalEvents`` bounds the events refusals cause.
"""

from shared.authz._merge import (
    DEFAULT_POLICY,
    MergePolicy,
    Reason,
    Refusal,
    Verdict,
    accept_seq,
    authorize_delta,
    may_read,
    pinned_to_origin,
)
from shared.authz._namespace import LOCAL_TOKEN_HEX, local_task_id, origin_of
from shared.authz._readers import lacking, new_writers, readers
from shared.authz._throttle import RefusalEvents

__all__ = [
    "DEFAULT_POLICY",
    "LOCAL_TOKEN_HEX",
    "MergePolicy",
    "Reason",
    "Refusal",
    "RefusalEvents",
    "Verdict",
    "accept_seq",
    "authorize_delta",
    "lacking",
    "local_task_id",
    "may_read",
    "new_writers",
    "origin_of",
    "pinned_to_origin",
    "readers",
]
