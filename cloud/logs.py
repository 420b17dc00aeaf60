"""Logging set-up, in the one line format of ``shared.logformat`` (the agent's too): JSON
lines when stderr is not a terminal, readable text when it is. Log calls put what a machine
filters on in ``extra={"fields": {...}}``; the fields become keys of the JSON object, so logs
can be filtered by task or node.

:func:`log_events` is the controller's operational log: one INFO line per committed
event an operator follows in the journal (joins, leaves, link changes: partitions
and heals, placements and re-placements, drains), its message readable alone and
its fields (``event``, ``node_id``, ``task_id``, ``epoch``, ``reason`` and the
event's scalar data) as keys. The event log (``continuum events``) has every event.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from shared.logformat import LINE_KEYS, line_formatter

__all__ = ["LOGGED_EVENTS", "log_events", "setup_logging"]

#: Event kinds logged at INFO, with the words each line starts with.
LOGGED_EVENTS = {
    "node_registered": "node joined",
    "node_reconciled": "node rejoined",
    "node_departed": "node departed",
    "node_removed": "node removed",
    "link_state": "link changed",
    "node_reconnected": "node healed",
    "placed": "task placed",
    "replaced": "task re-placed",
    "drain": "node draining",
    "undrain": "node undrained",
    "drained": "node drained",
}

_events_log = logging.getLogger("cloud.events")

# Keys an event's data may not take as they are: the JSON line's own keys and the event's
# (``data_`` is put before them).
_RESERVED = LINE_KEYS | {"event", "epoch"}


def setup_logging(level: str = "info", *, stream: object = None) -> None:
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)  # type: ignore[arg-type]
    handler.setFormatter(line_formatter(json_lines=not getattr(stream, "isatty", lambda: False)()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def log_events(events: Iterable[Mapping[str, Any]]) -> None:
    """One INFO line for each event of a kind in :data:`LOGGED_EVENTS` (call after
    the commit that stored them: nothing is logged that a rollback undid)."""
    if not _events_log.isEnabledFor(logging.INFO):
        return
    for ev in events:
        words = LOGGED_EVENTS.get(ev["kind"])
        if words is None:
            continue
        data = ev.get("data") or {}
        fields = {
            "event": ev["kind"],
            "node_id": ev.get("node_id"),
            "task_id": ev.get("task_id"),
            "epoch": ev.get("epoch"),
            "reason": ev.get("reason"),
            # scalar data only: a placement's explanation stays in the event log
            **{
                f"data_{k}" if k in _RESERVED else k: v
                for k, v in data.items()
                if isinstance(v, str | int | float | bool)
            },
        }
        shown = " ".join(
            f"{k}={fields[k]}"
            for k in ("node_id", "old_node", "task_id", "epoch", "old", "new")
            if fields.get(k) is not None
        )
        _events_log.info(
            "%s: %s (%s)",
            words,
            shown,
            fields["reason"],
            extra={"fields": {k: v for k, v in fields.items() if v is not None}},
        )
