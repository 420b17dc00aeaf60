"""``continuum logs TASK [--attempt N] [--follow] [--stderr]``: the output of an attempt
(``GET /api/v1/tasks/{id}/logs``, ``cloud/api_logs.py``; ``cloud/operator_cli.py`` builds
the parser and dispatches here).

The log text goes to stdout as the task wrote it; notes (a cut tail, a running attempt)
go to stderr, so ``continuum logs T > out.txt`` holds only the task's output. Of a running
attempt it shows the output so far (asked of its node). ``--follow`` reads the attempt as a
cursor (the route's ``offset``/``next_offset``): what the node holds while it runs, then the
rest of the tail uploaded with its end; it exits 0 when the attempt succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
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
        "--follow",
        "-f",
        action="store_true",
        help="print the output as it comes until the attempt ends",
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
    if args.follow:
        return _follow(args, ask)
    answer = ask(args.attempt, None)
    if answer is None:
        print(f"{args.id}: no attempt has started yet", file=sys.stderr)
    elif args.json:
        print_json(answer)
    else:
        _print(answer)
    return 0


def _asker(api: ApiClient, args: argparse.Namespace) -> Any:
    """A function asking for attempt ``number`` (``None``: the latest) from ``offset``: the
    answer, or ``None`` while the task has no attempt (an unknown task is an error)."""
    path = f"/api/v1/tasks/{segment(args.id)}/logs"
    stream = "stderr" if args.stderr else "stdout"

    def ask(number: int | None, offset: int | None) -> dict[str, Any] | None:
        try:
            return api.get(path, attempt=number, stream=stream, offset=offset)
        except ApiError as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            if exc.status == 404 and body.get("what") == "attempt" and number is None:
                return None
            raise

    return ask


def _follow(args: argparse.Namespace, ask: Any) -> int:
    """Wait for an attempt, then print its stream as it grows until it has ended and its
    uploaded tail is read to the end."""
    told = None
    while (answer := ask(args.attempt, 0)) is None:
        told = _note(f"{args.id}: waiting for an attempt to start", told)
        time.sleep(args.interval)
    number, offset = answer["attempt"], 0
    if not answer["ended"]:
        _note(f"{args.id}: attempt {number} on {answer['node']} is running; following it", None)
    while True:
        if args.json:
            print(json.dumps(answer), flush=True)
        elif answer["available"]:
            if answer["truncated"]:
                skipped = answer["offset"] - offset
                print(f"[{skipped} bytes not kept]", file=sys.stderr, flush=True)
            sys.stdout.write(answer["text"])
            sys.stdout.flush()
        offset = answer["next_offset"]
        if answer["ended"] and (not answer["available"] or offset >= answer["bytes"]):
            break
        if offset >= answer["bytes"]:  # caught up: the rest has not been written yet
            if not answer["available"] and answer["message"]:
                told = _note(f"{args.id}: attempt {number} {answer['message']}", told)
            time.sleep(args.interval)
        answer = ask(number, offset)
    if not args.json:
        print(_heading(answer), file=sys.stderr)
    return 0 if answer["status"] == "succeeded" else 1


def _note(note: str, told: str | None) -> str:
    """Print ``note`` to stderr unless it was the last one printed."""
    if note != told:
        print(note, file=sys.stderr, flush=True)
    return note


def _heading(answer: dict[str, Any]) -> str:
    return (
        f"attempt {answer['attempt']} of {answer['attempts']} on {answer['node']}: "
        f"{answer['status']}, {answer['stream']}"
    )


def _print(answer: dict[str, Any]) -> None:
    head = _heading(answer)
    if not answer["available"]:
        print(f"{head}: {answer['message']}", file=sys.stderr)
        return
    if answer["live"]:
        head += " (running: the output so far)"
    if answer["truncated"]:
        head += f" (the last {answer['kept_bytes']} of {answer['bytes']} bytes)"
    print(f"{head}:", file=sys.stderr, flush=True)
    text = answer["text"]
    sys.stdout.write(text if not text or text.endswith("\n") else text + "\n")
    sys.stdout.flush()
