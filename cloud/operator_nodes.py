"""``continuum`` commands on one node: ``node NODE`` (its detail), ``nodes remove NODE
[--force]`` and ``drain NODE [--deadline S]`` / ``undrain NODE`` (``cloud/operator_cli.py``
builds the parser and dispatches here)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from rich.console import Console

from .api_client import ApiClient, segment
from .operator_render import print_json, render_node

__all__ = ["drain", "remove_node", "show_node"]


def remove_node(args: argparse.Namespace, api: ApiClient, console: Console) -> int:
    result = api.delete(f"/api/v1/nodes/{segment(args.node_id)}", force=1 if args.force else None)
    if args.json:
        print_json(result)
        return 0
    console.print(f"{args.node_id}: removed", markup=False)
    for outcome in ("replaced", "cancelled"):
        if result.get(outcome):
            console.print(f"  {outcome}: {', '.join(result[outcome])}", markup=False)
    console.print(
        f"revoke its broker login too: cloud-controller credentials remove {args.node_id}",
        markup=False,
    )
    return 0


def show_node(args: argparse.Namespace, api: ApiClient, console: Console) -> int:
    node = api.get(f"/api/v1/nodes/{segment(args.node_id)}")
    print_json(node) if args.json else render_node(console, node)
    return 0


def drain(args: argparse.Namespace, api: ApiClient, console: Console) -> int:
    node = api.post(f"/api/v1/nodes/{segment(args.node_id)}/{args.command}")
    if args.command == "drain" and args.deadline is not None:
        node = _wait_drained(args, api, console)
    if args.json:
        print_json(node)
    elif args.command == "undrain":
        console.print(f"{args.node_id}: undrained", markup=False)
    else:
        left = node.get("tasks") or []
        state = "drained (empty)" if node.get("drained") else f"draining, {len(left)} task(s) on it"
        console.print(f"{args.node_id}: {state}", markup=False)
        if left:
            console.print(f"  still there: {', '.join(left)}", markup=False)
    return 1 if args.command == "drain" and args.deadline is not None and not node["drained"] else 0


def _wait_drained(args: argparse.Namespace, api: ApiClient, console: Console) -> dict[str, Any]:
    """Ask until the node holds nothing or ``--deadline`` passes (the last answer either
    way: the caller says what is left). Progress goes to stderr."""
    deadline = time.monotonic() + args.deadline
    path = f"/api/v1/nodes/{segment(args.node_id)}"
    shown = None
    while True:
        node = api.get(path)
        left = len(node.get("tasks") or [])
        if node.get("drained") or time.monotonic() > deadline:
            return node
        if left != shown and not args.json:
            print(f"{args.node_id}: {left} task(s) still on it", file=sys.stderr, flush=True)
            shown = left
        time.sleep(0.5)
