"""Logging set-up: stderr, in the one line format of ``shared.logformat`` (JSON lines when
stderr is not a terminal: journald, files, the testbed; text for a person at a terminal).
Log calls put what a machine filters on in ``extra={"fields": {...}}``."""

from __future__ import annotations

import logging
import sys

from shared.logformat import line_formatter

__all__ = ["setup_logging"]


def setup_logging(level: str, *, json_lines: bool | None = None) -> None:
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(line_formatter(json_lines=json_lines))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("zeroconf").setLevel(logging.WARNING)
