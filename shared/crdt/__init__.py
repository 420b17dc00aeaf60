"""The replicated task record (a delta-state CRDT) and the replica that syncs it.

See ``docs/crdt.md`` for the lattice, the digest design and why. Mutators
return deltas; ``merge`` is the join; ``visible_status`` is derived, never stored.
"""

from shared.crdt._serialize import canonical_bytes, content_hash
from shared.crdt._task_record import (
    DEFAULT_MAX_ATTEMPTS,
    Attempt,
    AttemptStatus,
    Dot,
    Placement,
    TaskRecord,
    max_attempts,
    merge,
    new_record,
    place,
    request_cancel,
    set_status,
    start_attempt,
    visible_status,
)

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "Attempt",
    "AttemptStatus",
    "Dot",
    "Placement",
    "TaskRecord",
    "canonical_bytes",
    "content_hash",
    "max_attempts",
    "merge",
    "new_record",
    "place",
    "request_cancel",
    "set_status",
    "start_attempt",
    "visible_status",
]
