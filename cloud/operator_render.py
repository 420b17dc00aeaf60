"""How ``continuum`` shows API answers to people: tables that fit 80 columns, times as
clock times, numbers rounded to what a person reads. ``--json`` bypasses all of this."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

__all__ = [
    "event_line",
    "human_ms",
    "nodes_table",
    "print_json",
    "render_explanation",
    "render_node",
    "render_task",
    "render_workflow",
    "rounded",
    "table",
]


def human_ms(ms: int | float | None, *, now: datetime | None = None) -> str:
    """Epoch milliseconds as local time: ``08:20:09`` today, ``12-01 23:59`` otherwise."""
    if ms is None:
        return ""
    when = datetime.fromtimestamp(ms / 1000).astimezone()
    now = now or datetime.now().astimezone()
    return f"{when:%H:%M:%S}" if when.date() == now.date() else f"{when:%m-%d %H:%M}"


def print_json(data: object) -> None:
    """``--json`` output: the API's answer as one line."""
    print(json.dumps(data))


def rounded(value: float | int | None) -> str:
    """Three significant digits at most (``12.3``, ``0.042``, ``1234``); blank for none."""
    if value is None:
        return ""
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> Table:
    """A compact table whose cells wrap instead of being cut with an ellipsis."""
    out = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in columns:
        out.add_column(col, overflow="fold")
    for row in rows:
        out.add_row(*("" if v is None else str(v) for v in row))
    return out


def render_task(console: Console, task: dict[str, Any]) -> None:
    console.print(
        f"[bold]{task['task_id']}[/]  {task['status']}  node {task['node'] or '-'}  "
        f"epoch {task['epoch']}  level {task['level']}  hash {task['content_hash'][:12]}",
        soft_wrap=True,
    )
    attempts = task.get("attempts", [])
    if attempts:
        rows = [
            (a["dot"], a["node"], a["epoch"], a["status"], a.get("exit_code"), a.get("reason"))
            for a in attempts
        ]
        console.print(table("attempts", ["dot", "node", "epoch", "status", "exit", "reason"], rows))
    if task.get("blocked_reason"):
        console.print(f"not placed: {task['blocked_reason']}", markup=False)
    lease = task.get("lease")
    if lease:
        console.print(
            f"lease: epoch {lease['epoch']} on {lease['node_id']}, "
            f"{rounded(lease['duration_s'])} s, expires {human_ms(lease['deadline_ms'])}"
        )


def render_explanation(console: Console, task: dict[str, Any]) -> None:
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
            f"filtered {exp.get('filtered') or {}}; exhausted {exp.get('exhausted') or {}}",
            markup=False,
        )
        top = exp.get("top") or exp.get("candidates") or []
        if top:
            terms = sorted({k for c in top for k in (c.get("terms") or {})})
            rows = [
                (
                    c.get("node"),
                    f"{c.get('score', 0):.3f}",
                    *(f"{(c.get('terms') or {}).get(t, 0):.2f}" for t in terms),
                )
                for c in top
            ]
            console.print(table("top candidates", ["node", "score", *terms], rows))
    consistency = task.get("consistency") or {}
    console.print(
        f"consistency: {consistency.get('mode')} (min {consistency.get('min')}, "
        f"max {consistency.get('max')})"
    )
    history = consistency.get("history") or []
    if history:
        rows = [
            (h["seq"], h["data"].get("from"), h["data"].get("to"), h["reason"]) for h in history
        ]
        console.print(table("level changes", ["seq", "from", "to", "reason"], rows))


def nodes_table(data: dict[str, Any]) -> tuple[Table, str]:
    rows = [
        (
            n["node_id"],
            n["tier"],
            "departed" if n.get("departed") else n["link_state"],
            n["presence"],
            ("empty" if n.get("drained") else "yes") if n["draining"] else "",
            n.get("running"),
            rounded(n.get("rtt_p99_ms")),
        )
        for n in data["nodes"]
    ]
    columns = ["node", "tier", "link", "presence", "drain", "running", "rtt p99 ms"]
    health = data.get("system_health") or {}
    departed = f", {health['departed']} departed" if health.get("departed") else ""
    summary = (
        f"system health: {health.get('state')} ({health.get('available')}/{health.get('total')} "
        f"nodes available{departed}, p99 RTT {rounded(health.get('p99_rtt_ms')) or '-'} ms)"
    )
    return table("nodes", columns, rows), summary


def render_node(console: Console, node: dict[str, Any]) -> None:
    """One node: state, link, capacity against what is reserved, and its active tasks."""
    flags = [
        f for f, on in (("draining", node["draining"]), ("departed", node.get("departed"))) if on
    ]
    if node.get("drained"):
        flags.append("drained (empty)")
    console.print(
        f"[bold]{node['node_id']}[/]  {node['tier']}  {node['presence']}  "
        f"agent {node.get('agent_version') or '-'}  {' '.join(flags)}",
        soft_wrap=True,
    )
    console.print(
        f"link {node['link_state']} ({node.get('link_reason') or '-'}); "
        f"RTT p50 {rounded(node.get('rtt_p50_ms')) or '-'} ms, "
        f"p99 {rounded(node.get('rtt_p99_ms')) or '-'} ms; loss {rounded(node.get('loss_rate'))}; "
        f"silent {rounded(node.get('silent_for_s')) or 0} s",
        markup=False,
    )
    cap = node.get("capacity") or {}
    console.print(
        f"cpus {rounded(node.get('cpu_reserved'))}/{rounded(cap.get('cpus'))} reserved, "
        f"memory {rounded(node.get('memory_reserved_mb'))}/{rounded(cap.get('memory_mb'))} MB; "
        f"success {rounded(node.get('success_ewma'))}; first seen "
        f"{human_ms(node.get('first_seen_ms'))}, last seen {human_ms(node.get('last_seen_ms'))}",
        markup=False,
    )
    if node.get("labels"):
        labels = ", ".join(f"{k}={v}" for k, v in sorted(node["labels"].items()))
        console.print(f"labels: {labels}", markup=False)
    tasks = node.get("tasks") or []
    console.print(f"active tasks ({len(tasks)}): {', '.join(tasks) or '-'}", markup=False)


def render_workflow(console: Console, wf: dict[str, Any]) -> None:
    console.print(
        f"[bold]{wf['workflow_id']}[/] {wf.get('name') or ''}  {wf['status']}  "
        f"submitted {human_ms(wf.get('submitted_ms'))}"
    )
    rows = [
        (t["task_id"], t["status"], t["node"], ", ".join(t.get("depends_on") or []))
        for t in wf["tasks"]
    ]
    console.print(table("tasks", ["task", "status", "node", "after"], rows))


def event_line(ev: dict[str, Any]) -> str:
    parts = [f"#{ev['seq']}", human_ms(ev.get("ts_ms")), ev["kind"]]
    for key in ("task_id", "node_id"):
        if ev.get(key):
            parts.append(f"{key.split('_')[0]}={ev[key]}")
    if ev.get("epoch") is not None:
        parts.append(f"epoch={ev['epoch']}")
    if ev.get("reason"):
        parts.append(ev["reason"])
    return "  ".join(parts)
