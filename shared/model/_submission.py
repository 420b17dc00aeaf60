"""What a user hands in: one task or one workflow, as TOML or JSON text or a dict."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from typing import Literal

from shared.errors import Problem, ValidationError
from shared.model._task import TaskSpec, parse_task_spec
from shared.model._workflow import WorkflowSpec, parse_workflow

__all__ = ["MAX_SUBMISSION_BYTES", "load_submission", "parse_submission"]

#: Bound on submitted text; a full workflow of 1000 tasks fits well inside.
MAX_SUBMISSION_BYTES = 8 * 1024 * 1024


def parse_submission(data: object) -> TaskSpec | WorkflowSpec:
    """A table with a ``tasks`` key is a workflow; any other table is one task."""
    if isinstance(data, Mapping) and "tasks" in data:
        return parse_workflow(data)
    return parse_task_spec(data)


def load_submission(text: str | bytes, fmt: Literal["toml", "json"]) -> TaskSpec | WorkflowSpec:
    """Parse TOML or JSON text, then validate it; syntax errors are ``ValidationError`` too,
    so a caller (CLI, REST API) has one error type to render."""
    if len(text) > MAX_SUBMISSION_BYTES:
        raise ValidationError(
            [Problem("", f"submission larger than {MAX_SUBMISSION_BYTES} bytes")], what=fmt
        )
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError([Problem("", f"not UTF-8: {exc}")], what=fmt) from None
    try:
        if fmt == "toml":
            data: object = tomllib.loads(text)
        elif fmt == "json":
            data = json.loads(text)
        else:
            raise ValueError(f"unknown format {fmt!r} (toml or json)")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValidationError([Problem("", f"not valid {fmt.upper()}: {exc}")], what=fmt) from None
    return parse_submission(data)
