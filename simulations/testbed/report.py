"""Judge a recorded run and present the verdict.

:func:`judge` is the one path from a run directory to ``report.json`` and the
plots: the runner calls it right after a run, ``continuum testbed check DIR``
calls it again later (re-reading the databases when they are still there), so
both give the same verdict for the same files. :func:`render` prints the
verdict table, the timings and the bytes per node with rich.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from . import collect, plots
from .checker import Observation, check_all, executions
from .metrics import completed_while_cut, summarize_run

__all__ = ["judge", "load_run", "render"]

INVARIANT_TITLES = {
    "nothing_lost": "1. nothing lost",
    "strong_no_overlap": "2. strong: never two at once",
    "convergence": "3. replicas converged",
    "workflow_order": "4. workflow order",
    "causal_double_runs": "5. causal: re-run only after confirmed loss",
    "eventual_duplicates": "6. eventual duplicates (allowed)",
    "liveness": "7. every acknowledged task terminal soon after the final heal",
}


BROKERS = {
    "mosquitto": "Mosquitto, installed on this machine",
    "embedded": "amqtt, pure Python, with simulations/testbed/amqtt_fixes.py: "
    "Mosquitto is not installed here",
}


def load_run(run_dir: Path, *, recollect: bool = True) -> dict[str, Any]:
    """What a run left in ``run_dir`` (``collected.json`` and ``plan.json``); with
    ``recollect`` the ground truth is read again from the databases if present."""
    collected = json.loads((run_dir / collect.COLLECTED).read_text(encoding="utf-8"))
    plan = json.loads((run_dir / "plan.json").read_text(encoding="utf-8"))
    nodes = [n["node_id"] for n in plan["nodes"]]
    if recollect and collect.controller_db(run_dir).exists():
        collected["state"] = collect.collect_state(run_dir, nodes)
    return {"collected": collected, "plan": plan, "nodes": nodes}


def _submission_outcomes(history: list[dict[str, Any]]) -> dict[str, int]:
    c = Counter(op["type"] for op in history if op.get("f") == "submit")
    return {k: c.get(k, 0) for k in ("invoke", "ok", "fail", "info")}


def judge(run_dir: Path, *, recollect: bool = False) -> dict[str, Any]:
    """Check ``run_dir``, write ``report.json`` and the plots; return the report."""
    run = load_run(run_dir, recollect=recollect)
    collected, plan, nodes = run["collected"], run["plan"], run["nodes"]
    state = collected["state"]
    history = collect.read_history(run_dir)
    ledger_files = sorted(collect.ledger_dir(run_dir).glob("*.jsonl"))
    ledger = collect.read_ledgers(ledger_files)
    obs = Observation(
        history=history,
        ledger=ledger,
        controller=state.get("controller"),
        agents=state.get("agents") or {},
        losses=state.get("losses") or [],
    )
    verdict = check_all(obs)
    t0, end = float(collected["t0_wall"]), float(collected["end_wall"])
    metrics = summarize_run(history, ledger, nodes, end)
    runs = executions(ledger)
    nemesis = [op for op in history if op.get("process") == "nemesis"]
    title = f"{plan['scenario']} (seed {plan['seed']}, {len(nodes)} agents, {collected['broker']})"
    plot_paths = {
        "timeline": str(
            plots.timeline(
                run_dir / "timeline.png",
                nodes=nodes,
                t0_wall=t0,
                end_wall=end,
                fault_intervals=metrics["fault_intervals"],
                runs=runs,
                nemesis=nemesis,
                convergence=metrics["convergence_after_heal"],
                title=title,
                while_cut=frozenset(completed_while_cut(runs, metrics["fault_intervals"])),
                local=[
                    (str(op["value"]["node"]), float(op["wall"]))
                    for op in history
                    if op.get("f") == "submit"
                    and op.get("type") == "invoke"
                    and (op.get("value") or {}).get("node")
                ],
            )
        ),
        "latency_cdf": str(
            plots.latency_cdf(run_dir / "latency_cdf.png", metrics["latencies"], title=title)
        ),
    }
    after = [
        c["after_s"] for c in metrics["convergence_after_heal"] if c.get("after_s") is not None
    ]
    report = {
        "scenario": plan["scenario"],
        "seed": plan["seed"],
        "agents": len(nodes),
        "broker": collected["broker"],
        "mode": plan.get("mode"),
        "run_dir": str(run_dir),
        "valid": verdict["valid"],
        "invariants": verdict["results"],
        "submissions": _submission_outcomes(history),
        "executions": sum(len(v) for v in runs.values()),
        "deadlines": metrics["deadlines"],
        "harm": metrics["harm"],
        "timings": {
            **collected.get("timings", {}),
            "settle": collected.get("settle", {}),
            "convergence_after_heal": metrics["convergence_after_heal"],
            "convergence_after_heal_max_s": max(after) if after else None,
            "latency_s": metrics["latency_s"],
            "completed_executions": metrics["completed_executions"],
            "completed_while_partitioned": metrics["completed_while_partitioned"],
            "share_completed_while_partitioned": metrics["share_completed_while_partitioned"],
            "autonomy_by_node": metrics["autonomy_by_node"],
        },
        "bytes": collected.get("bytes", {}),
        "fault_intervals": metrics["fault_intervals"],
        "collect_errors": state.get("errors", []),
        "plots": plot_paths,
    }
    (run_dir / collect.REPORT).write_text(json.dumps(report, indent=1, default=str), "utf-8")
    return report


def _mark(valid: object) -> str:
    if valid is True:
        return "[bold green]PASS[/]"
    if valid is False:
        return "[bold red]FAIL[/]"
    return "[bold yellow]UNKNOWN[/]"


def _evidence(result: dict[str, Any]) -> str:
    counts = ", ".join(f"{k}={v}" for k, v in result.get("counts", {}).items())
    if result.get("error"):
        counts += f" (checker error: {result['error']})"
    examples = result.get("examples") or []
    if examples and result.get("valid") is not True:
        counts += f"\n  e.g. {json.dumps(examples[0], default=str)[:300]}"
    return counts


def _fmt_s(value: object) -> str:
    return "-" if value is None else f"{float(value):.2f} s"  # type: ignore[arg-type]


def render(report: dict[str, Any], console: Console) -> None:
    """Print the verdict table, timings, bytes per node and the plot paths."""
    console.print(f"broker: [bold]{report['broker']}[/] ({BROKERS.get(report['broker'], '')})")
    table = Table(title=f"Verdict: {report['scenario']} — {report['run_dir']}", show_lines=True)
    table.add_column("invariant")
    table.add_column("verdict", justify="center")
    table.add_column("evidence", overflow="fold")
    for name, result in report["invariants"].items():
        table.add_row(INVARIANT_TITLES.get(name, name), _mark(result["valid"]), _evidence(result))
    console.print(table)

    t = report["timings"]
    timing = Table(title="Timings", show_header=True)
    timing.add_column("what")
    timing.add_column("value", justify="right")
    for c in t["convergence_after_heal"]:
        if c["after_s"] is None:
            what = f"[red]NOT converged[/] after {c['cause']} @ {c['heal_at']:.1f} s: {c['node']}"
            timing.add_row(what, "-")
            continue
        timing.add_row(
            f"converged after {c['cause']} @ {c['heal_at']:.1f} s: {c['node']}",
            _fmt_s(c["after_s"]),
        )
    for level, lat in t["latency_s"].items():
        timing.add_row(
            f"latency {level} (n={lat['count']}) p50 / p95",
            f"{_fmt_s(lat['p50'])} / {_fmt_s(lat['p95'])}",
        )
    d = report.get("deadlines") or {}
    if d.get("tasks"):
        where = ", ".join(f"{n} {v['met']}/{v['missed']}" for n, v in d["by_node"].items())
        timing.add_row(
            f"deadline misses (placement mode {report.get('mode')}; first success per node "
            f"met/missed: {where})",
            f"{d['missed']} of {d['tasks']} ({d['rate']:.1%})",
        )
    h = report.get("harm") or {}
    timing.add_row(
        "re-executions of non-idempotent tasks (harm)",
        f"{h.get('reexecutions', 0)} ({h.get('tasks', 0)} tasks)",
    )
    share = t.get("share_completed_while_partitioned")
    timing.add_row(
        "executions completed while cut off from the cloud",
        f"{t['completed_while_partitioned']} of {t['completed_executions']}"
        + ("" if share is None else f" ({share:.0%})"),
    )
    for node, a in (t.get("autonomy_by_node") or {}).items():
        timing.add_row(
            f"{node} (cut off for a while): its executions completed while cut off",
            f"{a['while_cut']} of {a['completed']}"
            + (f" ({a['while_cut'] / a['completed']:.0%})" if a["completed"] else ""),
        )
    settle = t.get("settle") or {}
    if settle:
        timing.add_row(
            "quiescence after the final heal",
            _fmt_s(settle.get("after_s")) + ("" if settle.get("quiescent") else " (NOT reached)"),
        )
    if "setup_s" in t:
        timing.add_row("set-up (broker, controller, agents registered)", _fmt_s(t["setup_s"]))
    if "total_s" in t:
        timing.add_row("whole run", _fmt_s(t["total_s"]))
    console.print(timing)

    if report["bytes"]:
        traffic = Table(title="Bytes through each node's link (after faults)")
        lossy = any(b.get("publish_dropped") for b in report["bytes"].values())
        columns = ["node", "up (to broker)", "down (from broker)", "connections", "resets"]
        for col in columns + (["PUBLISH dropped / doubled / delayed"] if lossy else []):
            traffic.add_column(col, justify="right")
        for node, b in report["bytes"].items():
            row = [
                node,
                f"{b['bytes_up']:,}",
                f"{b['bytes_down']:,}",
                str(b["connections"]),
                str(b["resets"]),
            ]
            if lossy:
                row.append(
                    f"{b.get('publish_dropped', 0)} / {b.get('publish_duplicated', 0)}"
                    f" / {b.get('publish_delayed', 0)}"
                )
            traffic.add_row(*row)
        console.print(traffic)
    s = report["submissions"]
    console.print(
        f"submissions: {s['invoke']} sent, {s['ok']} acknowledged, {s['fail']} refused, "
        f"{s['info']} indeterminate; {report['executions']} executions in the ledgers"
    )
    for err in report.get("collect_errors", []):
        console.print(f"[yellow]could not collect[/] {err}")
    valid = report["valid"]
    if valid is True:
        word = "[bold green]VALID[/]: every invariant held"
    elif valid is False:
        word = "[bold red]INVALID[/]: an invariant was violated (see the table)"
    else:
        word = "[bold yellow]UNKNOWN[/]: some ground truth could not be collected"
    console.print(f"\nverdict: {word}")
    console.print(f"report: {Path(report['run_dir']) / collect.REPORT}")
    for name, path in report["plots"].items():
        console.print(f"plot ({name}): {path}")
