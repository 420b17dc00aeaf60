"""One log line format for the controller and the agent.

The convention, in both shells: a log call says what happened in a message that reads alone,
and puts what a machine filters on in one place, ``extra={"fields": {...}}``::

    log.info("task placed", extra={"fields": {"task_id": task_id, "node_id": node_id}})

The message may repeat a value for the reader (``%``-arguments are fine); the fields are for
``jq``. Nothing else of a record is written: extra keys outside ``fields`` are not part of the
convention (and would clash with the record's own attributes).

Where stderr is not a terminal (journald, files, the testbed) a record is one JSON line::

    {"ts": "2026-12-02T09:11:51.342Z", "level": "info", "logger": "cloud.events",
     "msg": "...", <the fields>, "exc": "<traceback, when there is one>"}

``ts`` is the record's creation time in UTC, RFC 3339 with milliseconds and ``Z``. The
fields are keys of the line; one named like a key of the line itself (``level``, ``msg``...)
is written with a ``data_`` prefix (``data_level``) instead of overwriting it. At a terminal
the same record reads ``<ts> INFO cloud.events: <msg> key=value ...``.

These are formatters only: they turn the record they are given into text, and read neither a
clock nor a stream (the shells' ``setup_logging`` attaches them to stderr).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime

__all__ = [
    "FIELDS",
    "LINE_KEYS",
    "JsonLineFormatter",
    "TextLineFormatter",
    "line_fields",
    "line_formatter",
    "timestamp",
]

#: The ``extra`` key whose mapping holds a record's fields.
FIELDS = "fields"
#: The keys every JSON line has (``exc`` when there is a traceback); fields do not take them.
LINE_KEYS = frozenset({"ts", "level", "logger", "msg", "exc"})


def timestamp(created: float) -> str:
    """``record.created`` as ``2026-12-02T09:11:51.342Z`` (UTC, milliseconds)."""
    moment = datetime.fromtimestamp(created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def line_fields(record: logging.LogRecord) -> dict[str, object]:
    """The record's fields as they appear on its line (``data_`` before a line key)."""
    fields = getattr(record, FIELDS, None)
    if not isinstance(fields, Mapping):
        return {}
    return {f"data_{k}" if k in LINE_KEYS else str(k): v for k, v in fields.items()}


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **line_fields(record),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, default=str)


class TextLineFormatter(logging.Formatter):
    """``<ts> LEVEL logger: msg key=value ...`` and the traceback below, for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{timestamp(record.created)} {record.levelname} {record.name}: "
        text += record.getMessage()
        text += "".join(f" {k}={v}" for k, v in line_fields(record).items())
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def line_formatter(*, json_lines: bool) -> logging.Formatter:
    """JSON lines for machines (stderr not a terminal), text for a person at a terminal."""
    return JsonLineFormatter() if json_lines else TextLineFormatter()
