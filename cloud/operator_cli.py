"""``continuum``: the operator's command line over the controller's REST API.

Tables (rich) for people, ``--json`` for scripts. The API address and token come
from ``--url``/``--token`` or ``CONTINUUM_API_URL``/``CONTINUUM_API_TOKEN``.
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
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["ApiClient", "ApiError", "main"]

DEFAULT_URL = "http://127.0.0.1:8470"

# Sub-commands provided by other packages: name → (module, help).
DELEGATED = {
    "testbed": ("simulations.testbed.cli", "run partition scenarios against real processes"),
    "simulate": ("simulations.sim.cli", "discrete-event simulation of placement and consistency"),
}


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any] | str) -> None:
        self.status = status
        self.body = body
        super().__init__(f"HTTP {status}: {body}")


class ApiClient:
    """Minimal synchronous client (stdlib only) of the controller's REST API."""

    def __init__(self, url: str, token: str, *, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def _request(self, method: str, path: str, body: object = None, *, stream: bool = False) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            resp = urllib.request.urlopen(req, timeout=None if stream else self.timeout_s)
        except urllib.error.HTTPError as exc:
            raw = exc.read().decode(errors="replace")
            try:
                raise ApiError(exc.code, json.loads(raw)) from None
            except json.JSONDecodeError:
                raise ApiError(exc.code, raw) from None
        if stream:
            return resp
        with resp:
            return json.loads(resp.read() or b"null")

    def get(self, path: str, **query: Any) -> Any:
        items = [(k, v) for k, v in query.items() if v is not None]
        flat = [(k, x) for k, v in items for x in (v if isinstance(v, list | tuple) else [v])]
        qs = "?" + urllib.parse.urlencode(flat) if flat else ""
        return self._request("GET", path + qs)

    def post(self, path: str, body: object = None) -> Any:
        return self._request("POST", path, body if body is not None else {})

    def follow_events(self, **query: Any) -> Iterator[dict[str, Any]]:
        """Yield events from the SSE stream until the connection closes."""
        query = {k: v for k, v in query.items() if v is not None}
        qs = urllib.parse.urlencode({**query, "follow": 1})
        resp = self._request("GET", f"/api/v1/events?{qs}", stream=True)
        with resp:
            data: list[str] = []
            for raw in resp:
                line = raw.decode().rstrip("\n")
                if line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    yield json.loads("\n".join(data))
                    data = []


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def load_submission_file(path: str) -> dict[str, Any]:
    """Read a task or workflow file (TOML or JSON, by extension; ``-`` is JSON on stdin)."""
    if path == "-":
        return json.load(sys.stdin)
    text = Path(path).read_text(encoding="utf-8")
    if path.endswith(".toml"):
        return tomllib.loads(text)
    return json.loads(text)


# -- rendering -------------------------------------------------------------------


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> Table:
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    return table


def _render_task(console: Console, task: dict[str, Any]) -> None:
    console.print(
        f"[bold]{task['task_id']}[/]  status={task['status']}  node={task['node']}  "
        f"epoch={task['epoch']}  level={task['level']}  hash={task['content_hash'][:12]}"
    )
    attempts = task.get("attempts", [])
    if attempts:
        console.print(
            _table(
                "attempts",
                ["dot", "node", "epoch", "status", "exit", "reason"],
                [
                    (
                        a["dot"],
                        a["node"],
                        a["epoch"],
                        a["status"],
                        a.get("exit_code"),
                        a.get("reason"),
                    )
                    for a in attempts
                ],
            )
        )
    if task.get("blocked_reason"):
        console.print(f"not placed: {task['blocked_reason']}", markup=False)
    lease = task.get("lease")
    if lease:
        console.print(
            f"lease: epoch {lease['epoch']} on {lease['node_id']}, "
            f"{lease['duration_s']} s, expires (wall) {lease['deadline_ms']}"
        )


def _render_explanation(console: Console, task: dict[str, Any]) -> None:
    console.print(
        f"[bold]{task['task_id']}[/] is on [bold]{task['node'] or '(nowhere)'}[/] "
        f"under epoch {task['epoch']} at level [bold]{task['level']}[/]"
    )
    exp = task.get("explanation") or {}
    if task.get("blocked_reason"):
        console.print(f"not placed: {task['blocked_reason']}", markup=False)
    if not exp:
        console.print("no placement decision recorded")
    else:
        console.print(
            f"mode {exp.get('mode')}: {exp.get('evaluated')} nodes evaluated; "
            f"filtered {exp.get('filtered') or {}}; exhausted {exp.get('exhausted') or {}}"
        )
        top = exp.get("top") or exp.get("candidates") or []
        if top:
            terms = sorted({k for c in top for k in (c.get("terms") or {})})
            rows = [
                (
                    c.get("node"),
                    f"{c.get('score', 0):.3f}",
                    *(f"{(c.get('terms') or {}).get(t, 0):.3f}" for t in terms),
                )
                for c in top
            ]
            console.print(_table("top candidates", ["node", "score", *terms], rows))
    consistency = task.get("consistency") or {}
    history = consistency.get("history") or []
    console.print(
        f"consistency: {consistency.get('mode')} (min {consistency.get('min')}, "
        f"max {consistency.get('max')})"
    )
    if history:
        console.print(
            _table(
                "level changes",
                ["seq", "from", "to", "reason"],
                [
                    (h["seq"], h["data"].get("from"), h["data"].get("to"), h["reason"])
                    for h in history
                ],
            )
        )


def _event_line(ev: dict[str, Any]) -> str:
    parts = [f"#{ev['seq']}", ev["kind"]]
    for key in ("task_id", "node_id"):
        if ev.get(key):
            parts.append(f"{key.split('_')[0]}={ev[key]}")
    if ev.get("epoch") is not None:
        parts.append(f"epoch={ev['epoch']}")
    parts.append(ev.get("reason", ""))
    return "  ".join(parts)


# -- commands ---------------------------------------------------------------------


def _run_command(args: argparse.Namespace, api: ApiClient, console: Console) -> int:
    out = args.json
    cmd = args.command
    if cmd == "submit":
        body = load_submission_file(args.file)
        path = "/api/v1/workflows" if "tasks" in body else "/api/v1/tasks"
        result = api.post(path, body)
        if out:
            print(json.dumps(result))
        elif "tasks" in body:
            console.print(f"workflow {result['workflow_id']}: {len(result['tasks'])} tasks")
        else:
            console.print(f"task {result['task_id']}: {result['status']} on {result['node']}")
        return 0
    if cmd in ("get", "explain"):
        task = api.get(f"/api/v1/tasks/{_q(args.id)}")
        if out:
            print(json.dumps(task))
        elif cmd == "get":
            _render_task(console, task)
        else:
            _render_explanation(console, task)
        return 0
    if cmd == "list":
        page = api.get(
            "/api/v1/tasks",
            status=args.status,
            node=args.node,
            workflow=args.workflow,
            limit=args.limit,
            after=args.after,
        )
        if out:
            print(json.dumps(page))
        else:
            rows = [
                (t["task_id"], t["status"], t["node"], t["epoch"], t["level"], t["workflow"])
                for t in page["tasks"]
            ]
            console.print(
                _table("tasks", ["task", "status", "node", "epoch", "level", "workflow"], rows)
            )
            if page.get("next"):
                console.print(f"more: --after {page['next']}")
        return 0
    if cmd == "cancel":
        result = api.post(f"/api/v1/tasks/{_q(args.id)}/cancel", {"reason": args.reason})
        print(json.dumps(result)) if out else console.print(f"cancel requested for {args.id}")
        return 0
    if cmd == "nodes":
        data = api.get("/api/v1/nodes")
        if out:
            print(json.dumps(data))
        else:
            rows = [
                (
                    n["node_id"],
                    n["tier"],
                    n["link_state"],
                    n["presence"],
                    "yes" if n["draining"] else "",
                    n.get("running"),
                    n.get("rtt_p99_ms"),
                )
                for n in data["nodes"]
            ]
            console.print(
                _table(
                    "nodes",
                    ["node", "tier", "link", "presence", "draining", "running", "rtt p99 ms"],
                    rows,
                )
            )
            health = data.get("system_health") or {}
            console.print(
                f"system health: {health.get('state')} ({health.get('available')}/"
                f"{health.get('total')} nodes available, p99 RTT {health.get('p99_rtt_ms')} ms)"
            )
        return 0
    if cmd in ("drain", "undrain"):
        result = api.post(f"/api/v1/nodes/{_q(args.node_id)}/{cmd}")
        print(json.dumps(result)) if out else console.print(f"{args.node_id}: {cmd}ed")
        return 0
    if cmd == "events":
        query = {"task": args.task, "node": args.node, "kind": args.kind, "after": args.after}
        if args.follow:
            for ev in api.follow_events(**query):
                print(json.dumps(ev) if out else _event_line(ev), flush=True)
            return 0
        page = api.get("/api/v1/events", limit=args.limit, **query)
        if out:
            print(json.dumps(page))
        else:
            for ev in page["events"]:
                console.print(_event_line(ev), markup=False)
        return 0
    raise AssertionError(cmd)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="continuum",
        description="Operate a Continuum controller over its REST API; run the testbed and the "
        "simulator.",
        epilog=f"Environment: CONTINUUM_API_URL (default {DEFAULT_URL}), CONTINUUM_API_TOKEN.",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("CONTINUUM_API_URL", DEFAULT_URL),
        help="controller API base URL",
    )
    parser.add_argument(
        "--token", default=os.environ.get("CONTINUUM_API_TOKEN", ""), help="API bearer token"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("submit", help="submit a task or workflow file (TOML or JSON; - = stdin)")
    p.add_argument("file")
    for name, text in (
        ("get", "show a task with its attempts"),
        ("explain", "why a task is where it is, at the level it is"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("id", metavar="TASK_ID")
    p = sub.add_parser("list", help="list tasks")
    p.add_argument("--status", action="append", help="filter by status (repeatable)")
    p.add_argument("--node", help="filter by node")
    p.add_argument("--workflow", help="filter by workflow")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--after", help="page after this task id")
    p = sub.add_parser("cancel", help="request cancellation of a task")
    p.add_argument("id", metavar="TASK_ID")
    p.add_argument("--reason", default="operator")
    sub.add_parser("nodes", help="list nodes with link health")
    for name, text in (
        ("drain", "stop placing work on a node"),
        ("undrain", "place work on a node again"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("node_id", metavar="NODE_ID")
    p = sub.add_parser("events", help="show the event log")
    p.add_argument("--follow", "-f", action="store_true", help="stream new events (SSE)")
    p.add_argument("--task")
    p.add_argument("--node")
    p.add_argument("--kind")
    p.add_argument("--after", type=int)
    p.add_argument("--limit", type=int, default=100)
    for name, (_, text) in DELEGATED.items():
        p = sub.add_parser(name, help=text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        return _delegate(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    if args.command in DELEGATED:  # after global options: `continuum --json testbed ...`
        return _delegate(args.command, args.rest)
    console = Console()
    api = ApiClient(args.url, args.token)
    try:
        return _run_command(args, api, console)
    except ApiError as exc:
        body = exc.body
        if isinstance(body, dict) and body.get("problems"):
            print(f"error {exc.status}: invalid {body.get('what')}", file=sys.stderr)
            for p in body["problems"]:
                print(f"  - {p['path'] or '<root>'}: {p['message']}", file=sys.stderr)
        elif isinstance(body, dict):
            print(f"error {exc.status}: {body.get('message', body)}", file=sys.stderr)
        else:
            print(f"error {exc.status}: {body}", file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"cannot reach the controller at {args.url}: {exc.reason}", file=sys.stderr)
        return 1
    except (OSError, json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
