"""``continuum logs TASK [--attempt N] [--follow] [--stderr]``: the output tail of an attempt
(``GET /api/v1/tasks/{id}/logs``, ``cloud/api_logs.py``; ``cloud/operator_cli.py`` builds
the parser and dispatches here).

The log text goes to stdout as the task wrote it; notes (a cut tail, a running attempt)
go to stderr, so ``continuum logs T > out.txt`` holds only the task's output. ``--follow``
asks again until the attempt has ended (an attempt's tail arrives with its end), then
prints it and exits 0 when the attempt succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from rich.console import Console

from .api_client import ApiClient, ApiError, segment
from .operator_render import print_json

__all__ = ["add_logs_arguments", "show_logs"]


def add_logs_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", metavar="TASK_ID")
    p.add_argument(
        "--attempt", type=_attempt_number, metavar="N", help="attempt N, from 1 (default: latest)"
    )
    p.add_argument("--stderr", action="store_true", help="show stderr instead of stdout")
    p.add_argument(
        "--follow", "-f", action="store_true", help="wait until the attempt ends, then show it"
    )
    p.add_argument(
        "--interval", type=float, default=1.0, help="--follow: seconds between asks (%(default)s)"
    )


def _attempt_number(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: attempts are numbered from 1")
    return value


def show_logs(args: argparse.Namespace, api: ApiClient, console: Console) -> int:
    ask = _asker(api, args)
    answer = ask()
    if args.follow:
        told = None
        while answer is None or not answer["ended"]:
            note = _waiting(args.id, answer)
            if note != told:
                print(note, file=sys.stderr, flush=True)
                told = note
            time.sleep(args.interval)
            answer = ask()
    if answer is None:
        print(f"{args.id}: no attempt has started yet", file=sys.stderr)
        return 0
    if args.json:
        print_json(answer)
    else:
        _print(answer)
    return (0 if answer["status"] == "succeeded" else 1) if args.follow else 0


def _asker(api: ApiClient, args: argparse.Namespace) -> Any:
    """A function asking for the log once: the answer, or ``None`` while the task has no
    attempt (only a ``--follow`` waits for one; an unknown task is an error either way)."""
    path = f"/api/v1/tasks/{segment(args.id)}/logs"
    stream = "stderr" if args.stderr else "stdout"

    def ask() -> dict[str, Any] | None:
        try:
            return api.get(path, attempt=args.attempt, stream=stream)
        except ApiError as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            if exc.status == 404 and body.get("what") == "attempt" and args.attempt is None:
                return None
            raise

    return ask


def _waiting(task_id: str, answer: dict[str, Any] | None) -> str:
    if answer is None:
        return f"{task_id}: waiting for an attempt to start"
    return f"{task_id}: attempt {answer['attempt']} {answer['message'] or 'has not ended'}"


def _print(answer: dict[str, Any]) -> None:
    head = (
        f"attempt {answer['attempt']} of {answer['attempts']} on {answer['node']}: "
        f"{answer['status']}, {answer['stream']}"
    )
    if not answer["available"]:
        print(f"{head}: {answer['message']}", file=sys.stderr)
        return
    if answer["truncated"]:
        head += f" (the last {answer['kept_bytes']} of {answer['bytes']} bytes)"
    print(f"{head}:", file=sys.stderr, flush=True)
    text = answer["text"]
    sys.stdout.write(text if not text or text.endswith("\n") else text + "\n")
    sys.stdout.flush()
