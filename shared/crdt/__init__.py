"""The replicated task record (a delta-state CRDT) and the replica that syncs it.

See ``docs/crdt.md`` for the lattice, the digest design and why. Mutators
return deltas; ``merge`` is the join; ``visible_status`` is derived, never stored.
``record_digest``/``digest``/``missing`` are the pure anti-entropy functions;
``Replica`` holds one node's records with a delta buffer per peer.
"""

from shared.crdt._canonical import canonical_json
from shared.crdt._digest import HASH_CHARS, digest, missing, parse_summary, record_digest
from shared.crdt._replica import RECENT_DIGESTS, SWEEP_DIGESTS, Batch, Replica
from shared.crdt._serialize import (
    canonical_bytes,
    content_hash,
    record_from_dict,
    record_to_wire,
)
from shared.crdt._task_record import (
    DEFAULT_MAX_ATTEMPTS,
    MAX_LOG_TAIL,
    Attempt,
    AttemptLog,
    AttemptStatus,
    Dot,
    Placement,
    TaskRecord,
    attempt_beats,
    log_limit,
    log_tail,
    max_attempts,
    merge,
    new_record,
    place,
    placement_beats,
    record_tail_room,
    request_cancel,
    set_status,
    start_attempt,
    visible_status,
)

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "HASH_CHARS",
    "MAX_LOG_TAIL",
    "RECENT_DIGESTS",
    "SWEEP_DIGESTS",
    "Attempt",
    "AttemptLog",
    "AttemptStatus",
    "Batch",
    "Dot",
    "Placement",
    "Replica",
    "TaskRecord",
    "attempt_beats",
    "canonical_bytes",
    "canonical_json",
    "content_hash",
    "digest",
    "log_limit",
    "log_tail",
    "max_attempts",
    "merge",
    "missing",
    "new_record",
    "parse_summary",
    "place",
    "placement_beats",
    "record_digest",
    "record_from_dict",
    "record_tail_room",
    "record_to_wire",
    "request_cancel",
    "set_status",
    "start_attempt",
    "visible_status",
]
