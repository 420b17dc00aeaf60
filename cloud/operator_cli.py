"""``continuum``: the operator's command line over the controller's REST API.

Tables (rich, ``cloud/operator_render.py``) for people, ``--json`` for scripts. The API
address and token come from ``--url``/``--token``, else ``CONTINUUM_API_URL``/
``CONTINUUM_API_TOKEN``, else the controller's own config when it is readable here
(``--config``, ``$CONTINUUM_CONFIG`` or ``/etc/continuum/controller.toml``: ``sudo continuum``
on the controller host needs nothing else). Global options are accepted before or after the
command.
``continuum testbed …`` and ``continuum simulate …`` hand their arguments to the
testbed and simulator CLIs, imported only when asked for, so the operator CLI
works on a machine without the ``sim`` extra.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console

from shared.completion import add_completion_command, completion_script
from shared.vocab import TaskStatus

from .api_client import ApiClient, ApiError
from .api_client import segment as _q
from .operator_failover import add_fallback_arguments, submit_failover
from .operator_logs import add_logs_arguments, show_logs
from .operator_nodes import drain, remove_node, show_node
from .operator_render import (
    event_line,
    human_ms,
    nodes_table,
    render_explanation,
    render_task,
    render_workflow,
    table,
)
from .operator_render import (
    print_json as _print_json,
)

__all__ = ["ApiClient", "ApiError", "main"]

DEFAULT_URL = "http://127.0.0.1:8470"
DEFAULT_CONFIG = "/etc/continuum/controller.toml"
T = TypeVar("T")
FORMATS = {".toml": "toml", ".json": "json", ".yaml": "yaml", ".yml": "yaml"}

# Sub-commands provided by other packages: name → (module, help).
DELEGATED = {
    "testbed": ("simulations.testbed.cli", "run partition scenarios against real processes"),
    "simulate": ("simulations.sim.cli", "discrete-event simulation of placement and consistency"),
}


class UsageError(Exception):
    """Bad input from the command line or a file (exit 2, message as is)."""


def load_submission_file(path: str) -> dict[str, Any]:
    """Read a task or workflow file, its format by extension (.toml, .json, .yaml/.yml);
    ``-`` is JSON on stdin."""
    if path == "-":
        return json.load(sys.stdin)
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        known = ", ".join(FORMATS)
        raise UsageError(f"{path}: unknown file type (the extension says the format: {known})")
    text = Path(path).read_text(encoding="utf-8")
    try:
        if fmt == "toml":
            data = tomllib.loads(text)
        elif fmt == "json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # each parser has its own error type; all mean the same here
        raise UsageError(f"{path}: not valid {fmt.upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: must hold one task or workflow (a table / object)")
    return data


def _controller_config(path: str | None) -> tuple[str | None, str | None]:
    """(url, token) from the controller's config when it is readable here."""
    from .api_access import parse_tokens
    from .config import load_config

    candidate = Path(path or os.environ.get("CONTINUUM_CONFIG") or DEFAULT_CONFIG)
    try:
        cfg = load_config(candidate)
        token = parse_tokens(cfg.api_token())[0].secret  # the first of the named tokens
    except (OSError, ValueError):
        return None, None
    host = "127.0.0.1" if cfg.api.host in ("0.0.0.0", "::", "") else cfg.api.host
    return f"http://{host}:{cfg.api.port}", token


def _api(args: argparse.Namespace) -> ApiClient:
    url = args.url or os.environ.get("CONTINUUM_API_URL")
    token = args.token or os.environ.get("CONTINUUM_API_TOKEN")
    if not url or not token:
        conf_url, conf_token = _controller_config(args.config)
        url, token = url or conf_url, token or conf_token
    return ApiClient(url or DEFAULT_URL, token or "")


# -- commands: each takes (args, api, console) and returns the exit status --------


class TimedOut(Exception):
    """A ``--wait`` ran out of time (exit 1)."""


def _wait_for(
    what: str, timeout_s: float, probe: Callable[[], T | None], interval_s: float = 0.5
) -> T:
    """Call ``probe()`` until it returns something; a controller not up yet (connection
    refused or dropped) is asked again."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = probe()
        except OSError:  # urllib's URLError included
            found = None
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise TimedOut(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def _cmd_submit(args: argparse.Namespace, api: ApiClient, console: Console) -> int:
    body = load_submission_file(args.file)
    if args.fallback_agent and "tasks" not in body:
        return submit_failover(args, api, body, console, done=_cmd_submit_done, wait=_wait_for)
    if "tasks" in body:
        result = api.post("/api/v1/workflows", body)
        if args.json:
            _print_json(result)
        else:
            console.print(f"workflow {result['workflow_id']}: {len(result['tasks'])} tasks")
        return 0
    return _cmd_submit_done(args, api, api.post("/api/v1/tasks", body), console)


def _cmd_submit_done(
    args: argparse.Namespace, api: ApiClient, result: dict[str, Any], console: Console
) -> int:
    if args.wait:
        result = _wait_for(
            f"task {result['task_id']} to finish",
            args.timeout,
            lambda: _terminal(api.get(f"/api/v1/tasks/{_q(result['task_id'])}")),
        )
    if args.json:
        _print_json(result)
    else:
        where = f"on {result['node']}" if result["node"] else "not placed yet"
        console.print(f"task {result['task_id']}: {result['status']} {where}", markup=False)
        if result.get("blocked_reason"):
            console.print(f"  why: {result['blocked_reason']}", markup=False)
    return 1 if args.wait and result["status"] != TaskStatus.SUCCEEDED else 0


def _terminal(task: dict[str, Any]) -> dict[str, Any] | None:
    return task if TaskStatus(task["status"]).terminal else None


def _cmd_get(args: argparse.Namespace, api: ApiClient, console: Console) -> int:
    task = api.get(f"/api/v1/tasks/{_q(args.id)}")
    if args.json:
        _print_json(task)
    elif args.command == "get":
        render_task(console, task)
    else:
        render_explanation(console, task)
    return 0


def _cmd_list(args: argparse.Namespace, api: ApiClient, console: Console) -> int:
    page = api.get(
        "/api/v1/tasks",
        status=args.status,
        node=args.node,
        workflow=args.workflow,
        limit=args.limit,
        after=args.after,
    )
    if args.json:
        _print_json(page)
        return 0
    rows = [
        (t["task_id"], t["status"], t["node"], t["epoch"], t["level"], t["workflow"])
        for t in page["tasks"]
    ]
    console.print(table("tasks", ["task", "status", "node", "epoch", "level", "workflow"], rows))
    if page.get("next"):
        console.print(f"more: continuum list --after {page['next']}", markup=False)
    return 0


def _cmd_cancel(args: argparse.Namespace, api: ApiClient, console: Console) -> int:
    result = api.post(f"/api/v1/tasks/{_q(args.id)}/cancel", {"reason": args.reason})
    _print_json(result) if args.json else console.print(f"cancel requested for {args.id}")
    return 0


def _cmd_nodes(args: argparse.Namespace, api: ApiClient, console: Console) -> int:
    if args.nodes_command == "remove":
        return remove_node(args, api, console)
    if args.wait:
        _wait_for(
            f"node {args.wait} to be connected",
            args.timeout,
            lambda: next(
                (
                    n
                    for n in api.get("/api/v1/nodes")["nodes"]
                    if n["node_id"] == args.wait and n["presence"] == "online"
                ),
                None,
            ),
        )
    data = api.get("/api/v1/nodes")
    if args.json:
        _print_json(data)
        return 0
    nodes, summary = nodes_table(data)
    console.print(nodes)
    console.print(summary, markup=False)
    return 0


def _cmd_events(args: argparse.Namespace, api: ApiClient, console: Console) -> int:
    query = {"task": args.task, "node": args.node, "kind": args.kind, "after": args.after}
    if args.follow:
        for ev in api.follow_events(**query):
            print(json.dumps(ev) if args.json else event_line(ev), flush=True)
        return 0
    page = api.get("/api/v1/events", limit=args.limit, **query)
    if args.json:
        _print_json(page)
        return 0
    for ev in page["events"]:
        console.print(event_line(ev), markup=False, soft_wrap=True)
    if len(page["events"]) == args.limit:
        console.print(
            f"more: continuum events --after {page['next']} (or --follow for new ones)",
            markup=False,
        )
    return 0


def _cmd_workflow(args: argparse.Namespace, api: ApiClient, console: Console) -> int:
    if args.wf_command == "get":
        wf = api.get(f"/api/v1/workflows/{_q(args.id)}")
        _print_json(wf) if args.json else render_workflow(console, wf)
        return 0
    page = api.get("/api/v1/workflows", limit=args.limit, after=args.after)
    if args.json:
        _print_json(page)
        return 0
    rows = [
        (w["workflow_id"], w.get("name"), w["tasks"], human_ms(w.get("submitted_ms")))
        for w in page["workflows"]
    ]
    console.print(table("workflows", ["workflow", "name", "tasks", "submitted"], rows))
    if page.get("next"):
        console.print(f"more: continuum workflow list --after {page['next']}", markup=False)
    return 0


COMMANDS = {
    "submit": _cmd_submit,
    "get": _cmd_get,
    "explain": _cmd_get,
    "list": _cmd_list,
    "cancel": _cmd_cancel,
    "nodes": _cmd_nodes,
    "node": show_node,
    "drain": drain,
    "undrain": drain,
    "events": _cmd_events,
    "logs": show_logs,
    "workflow": _cmd_workflow,
}


def _delegate(name: str, argv: list[str]) -> int:
    module_name = DELEGATED[name][0]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        print(
            f"continuum {name} needs {module_name} (install the 'sim' extra: "
            f"pip install 'continuum-edge[sim]'): {exc}",
            file=sys.stderr,
        )
        return 2
    return int(module.main(argv) or 0)


def _common(*, top: bool) -> argparse.ArgumentParser:
    """Options accepted before and after the command (defaults on the top parser only, so a
    value given after the command is not overwritten by the top parser's default)."""
    parent = argparse.ArgumentParser(add_help=False)
    unset = None if top else argparse.SUPPRESS
    parent.add_argument("--url", default=unset, help=f"controller API (default {DEFAULT_URL})")
    parent.add_argument("--token", default=unset, help="API bearer token")
    parent.add_argument(
        "--config",
        default=unset,
        help=f"controller config to take url and token from "
        f"(default $CONTINUUM_CONFIG or {DEFAULT_CONFIG})",
    )
    parent.add_argument(
        "--json", action="store_true", default=False if top else unset, help="print JSON"
    )
    return parent


def _wait_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--timeout", type=float, default=120.0, help=f"{what} (default %(default)s s)")


def build_parser() -> argparse.ArgumentParser:
    from .cli import package_version

    common = _common(top=False)
    parser = argparse.ArgumentParser(
        prog="continuum",
        description="Operate a Continuum controller over its REST API; run the testbed and the "
        "simulator.",
        epilog="Environment: CONTINUUM_API_URL, CONTINUUM_API_TOKEN, CONTINUUM_CONFIG.",
        parents=[_common(top=True)],
    )
    parser.add_argument("--version", action="version", version=f"continuum {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, parents=[common])

    p = add("submit", "submit a task or workflow file (.toml, .json, .yaml; - = JSON on stdin)")
    p.add_argument(
        "file", help="a task or workflow file (.toml, .json, .yaml); - reads JSON from stdin"
    )
    p.add_argument(
        "--wait", action="store_true", help="wait until the task ends; exit 1 unless it succeeded"
    )
    _wait_options(p, "how long --wait waits")
    add_fallback_arguments(p)
    for name, text in (
        ("get", "show a task with its attempts"),
        ("explain", "why a task is where it is, at the level it is"),
    ):
        add(name, text).add_argument("id", metavar="TASK_ID")
    p = add("list", "list tasks")
    p.add_argument(
        "--status",
        action="append",
        choices=[s.value for s in TaskStatus],
        help="filter by status (repeatable)",
    )
    p.add_argument("--node", help="filter by node")
    p.add_argument("--workflow", help="filter by workflow")
    p.add_argument("--limit", type=_page_size, default=100, help="page size (1..1000)")
    p.add_argument("--after", help="page after this task id")
    p = add("cancel", "request cancellation of a task")
    p.add_argument("id", metavar="TASK_ID")
    p.add_argument("--reason", default="operator")
    p = add("nodes", "list nodes with link health; `nodes remove NODE` removes one")
    p.add_argument("--wait", metavar="NODE_ID", help="first wait until this node is online")
    _wait_options(p, "how long --wait waits")
    nodes_sub = p.add_subparsers(dest="nodes_command", metavar="ACTION")
    p = nodes_sub.add_parser(
        "remove",
        help="forget a node (refused while it holds work unless --force)",
        parents=[common],
    )
    p.add_argument("node_id", metavar="NODE_ID")
    p.add_argument(
        "--force",
        action="store_true",
        help="remove it even while it holds work: each task is re-placed by its "
        "consistency rules, or cancelled",
    )
    add("node", "show one node: link, capacity, active tasks").add_argument(
        "node_id", metavar="NODE_ID"
    )
    p = add("drain", "stop placing work on a node and move its movable work away")
    p.add_argument("node_id", metavar="NODE_ID")
    p.add_argument(
        "--deadline",
        type=float,
        metavar="S",
        help="wait up to S seconds for the node to be empty; exit 1 if it is not",
    )
    add("undrain", "place work on a node again").add_argument("node_id", metavar="NODE_ID")
    add_logs_arguments(add("logs", "show the stdout (or stderr) tail of a task's attempt"))
    p = add("events", "show the event log, oldest first (page with --after)")
    p.add_argument("--follow", "-f", action="store_true", help="stream new events (SSE)")
    p.add_argument("--task")
    p.add_argument("--node")
    p.add_argument("--kind")
    p.add_argument("--after", type=int, help="events after this sequence number")
    p.add_argument("--limit", type=_page_size, default=100, help="page size (1..1000)")
    wf = add("workflow", "show workflows")
    wf_sub = wf.add_subparsers(dest="wf_command", required=True, metavar="ACTION")
    wf_sub.add_parser("get", help="a workflow and its tasks", parents=[common]).add_argument(
        "id", metavar="WORKFLOW_ID"
    )
    p = wf_sub.add_parser("list", help="list workflows", parents=[common])
    p.add_argument("--limit", type=_page_size, default=100, help="page size (1..1000)")
    p.add_argument("--after", help="page after this workflow id")
    for name, (_, text) in DELEGATED.items():
        p = sub.add_parser(name, help=text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
    add_completion_command(sub, [common], "continuum")
    return parser


def _page_size(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{value} is not in 1..1000")
    return value


def _report_api_error(exc: ApiError) -> None:
    body = exc.body
    if isinstance(body, dict) and body.get("problems"):
        print(f"error {exc.status}: invalid {body.get('what')}", file=sys.stderr)
        for p in body["problems"]:
            print(f"  - {p['path'] or '<root>'}: {p['message']}", file=sys.stderr)
    elif isinstance(body, dict):
        print(f"error {exc.status}: {body.get('message', body)}", file=sys.stderr)
    else:
        print(f"error {exc.status}: {body}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        return _delegate(argv[0], argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in DELEGATED:  # after global options: `continuum --json testbed ...`
        return _delegate(args.command, args.rest)
    if args.command == "completion":
        print(completion_script(parser, args.shell), end="")
        return 0
    api = _api(args)
    try:
        return COMMANDS[args.command](args, api, Console())
    except UsageError as exc:
        print(f"continuum: {exc}", file=sys.stderr)
        return 2
    except TimedOut as exc:
        print(f"continuum: {exc}", file=sys.stderr)
        return 1
    except ApiError as exc:
        _report_api_error(exc)
        return 1
    except urllib.error.URLError as exc:
        print(f"cannot reach the controller at {api.url}: {exc.reason}", file=sys.stderr)
        return 1
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
