"""Routes of the local HTTP API (run on the agent's core thread, see ``api.py``).

``POST /v1/tasks`` (a task spec as JSON; runs locally as causal/eventual, syncs later),
``GET /v1/tasks``, ``GET /v1/tasks/{id}``, ``GET /v1/status``, ``GET /metrics`` (Prometheus text,
``edge_agent/metrics.py``; the same series as the endpoint on ``[metrics] bind``).

A task's ``env`` may carry secrets (tokens for the services it calls): records are answered with
the names of those variables only, their values replaced by ``REDACTED``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from shared.crdt import visible_status

if TYPE_CHECKING:
    from edge_agent.agent import Agent

__all__ = ["route"]


def route(agent: Agent, method: str, path: str, body: bytes) -> tuple[int, object]:
    path = path.split("?", 1)[0].rstrip("/") or "/"
    if path == "/v1/status" and method == "GET":
        return 200, agent.status()
    if path == "/v1/tasks" and method == "POST":
        try:
            data = json.loads(body or b"null")
        except ValueError as exc:
            return 400, {"error": "bad_json", "message": str(exc)}
        if isinstance(data, dict) and isinstance(data.get("task"), dict):
            data = data["task"]
        return agent.submit_local(data)
    if path == "/v1/tasks" and method == "GET":
        return 200, {
            "tasks": [
                {"id": rec.task_id, "status": str(visible_status(rec))}
                for rec in agent.replica.records()
            ]
        }
    if path.startswith("/v1/tasks/") and method == "GET":
        rec = agent.replica.get(path.removeprefix("/v1/tasks/"))
        if rec is None:
            return 404, {"error": "not_found", "message": "no such task"}
        record = _redacted(rec.to_dict())
        return 200, {"id": rec.task_id, "status": str(visible_status(rec)), "record": record}
    if path == "/metrics" and method == "GET":
        from edge_agent.metrics import render  # prometheus_client, loaded on first scrape

        return 200, render(agent.status())
    return 404, {"error": "not_found", "path": path, "message": f"no route {method} {path}"}


REDACTED = "<redacted>"


def _redacted(record: dict[str, Any]) -> dict[str, Any]:
    """The record with the values of its spec's ``env`` hidden."""
    spec = record.get("spec")
    if isinstance(spec, dict) and isinstance(spec.get("env"), dict):
        record = {**record, "spec": {**spec, "env": dict.fromkeys(spec["env"], REDACTED)}}
    return record
