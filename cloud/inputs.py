"""What a task is handed by its dependencies, and whether that can reach its node.

A task's inputs (``Place.inputs``) are its dependencies' results, and they travel with
its spec in its one ``place`` message, which may not pass ``MAX_MESSAGE_BYTES``. Each
result is bounded (64 KiB) but their number is not (up to ``MAX_DEPENDS_ON``), so a
fan-in over large results can make a ``place`` that can never be sent: placed, the task
would wait on its node for ever with no word to its submitter. The scheduler asks
:func:`unsendable` before placing a ready task and cancels it with the reason instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from shared.crdt import AttemptStatus, TaskRecord
from shared.errors import LocalProtocolError
from shared.model import MAX_DEADLINE_S
from shared.protocol import MAX_INT, MAX_LEASE_S, MAX_MESSAGE_BYTES, Body, Envelope, Place, encode
from shared.vocab import Level

__all__ = ["dependency_results", "unsendable"]


def dependency_results(
    records: Mapping[str, TaskRecord], spec: Mapping[str, Any]
) -> dict[str, Any]:
    """JSON results of the dependencies (their succeeded attempt's result)."""
    out: dict[str, Any] = {}
    for dep in spec.get("depends_on") or ():
        rec = records.get(dep)
        if rec is None:
            continue
        for attempt in rec.attempts.values():
            if attempt.status == AttemptStatus.SUCCEEDED:
                out[dep] = attempt.result
                break
    return out


def unsendable(
    task_id: str,
    spec: Mapping[str, Any],
    inputs: Mapping[str, Any],
    envelope: Callable[[str, Body], Envelope],
) -> str | None:
    """Why the task's ``place`` with ``inputs`` could never be sent (``None``: it can),
    checked on the widest message a placement could make (largest epoch, lease and
    level name, a long number of seconds left) in the sender's ``envelope``."""
    if not inputs:
        return None
    probe = Place(
        task_id=task_id,
        epoch=MAX_INT,
        spec=dict(spec),
        level=Level.EVENTUAL,
        lease_s=MAX_LEASE_S,
        inputs=dict(inputs),
        deadline_left_s=-MAX_DEADLINE_S / 3,
    )
    try:
        encode(envelope("place", probe))
    except LocalProtocolError as exc:
        if exc.reason != "too_large":
            raise
        size = len(json.dumps(inputs, separators=(",", ":")))
        return (
            f"inputs_too_large: its dependencies' results are {size} bytes as JSON, "
            f"and with its spec they do not fit one {MAX_MESSAGE_BYTES}-byte place "
            "message; pass large results by reference (a path or URL)"
        )
    return None
