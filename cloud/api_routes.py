"""The controller API's route table and the OpenAPI document generated from it.

``ROUTES`` is the single source: ``cloud.api.build_app`` registers exactly these routes
and :func:`openapi_document` describes exactly these, so the document cannot drift from
what the server answers (tests/cloud/test_controller_api.py checks both directions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .api_http import PROBLEM_JSON

__all__ = ["API_VERSION", "ROUTES", "Param", "Route", "openapi_document"]

API_VERSION = "1.0.0"


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    description: str
    type: str = "string"  # OpenAPI scalar type
    repeated: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: str  # name of the Handlers method
    summary: str
    auth: bool = True
    body: str | None = None  # request schema name
    query: tuple[Param, ...] = field(default_factory=tuple)
    responses: tuple[int, ...] = (200,)
    content_type: str = "application/json"


_PAGE = (
    Param("after", "return items after this id (the previous page's `next`)"),
    Param("limit", "page size (1..1000, default 100)", "integer"),
)

ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", "healthz", "Liveness: the process answers", auth=False),
    Route(
        "GET",
        "/readyz",
        "readyz",
        "Readiness: store open and broker connected",
        auth=False,
        responses=(200, 503),
    ),
    Route(
        "GET",
        "/metrics",
        "metrics",
        "Prometheus metrics",
        auth=False,
        content_type="text/plain",
    ),
    Route("GET", "/api/v1/openapi.json", "openapi", "This document"),
    Route(
        "POST",
        "/api/v1/tasks",
        "submit_task",
        "Submit a task (idempotent for an identical spec under the same id)",
        body="TaskSpec",
        responses=(200, 201, 400, 409, 413),
    ),
    Route(
        "GET",
        "/api/v1/tasks",
        "list_tasks",
        "List tasks, filtered and paged by task id",
        query=(
            Param("status", "visible status (repeatable)", repeated=True),
            Param("node", "node the current placement names"),
            Param("workflow", "workflow id"),
            Param("level", "consistency level in force"),
            *_PAGE,
        ),
    ),
    Route(
        "GET",
        "/api/v1/tasks/{task_id}",
        "get_task",
        "A task: record with attempts, version vector and content hash, placement "
        "explanation, lease, consistency history",
        responses=(200, 404),
    ),
    Route(
        "GET",
        "/api/v1/tasks/{task_id}/logs",
        "task_logs",
        "An attempt's output (stdout or stderr): the tail its node sent with its end, or, "
        "while it runs, what its node holds so far",
        query=(
            Param(
                "attempt", "attempt number from 1, in start order (default: the latest)", "integer"
            ),
            Param("stream", "stdout (default) or stderr"),
            Param("offset", "bytes of the stream already read: answer from there", "integer"),
        ),
        responses=(200, 400, 404),
    ),
    Route(
        "POST",
        "/api/v1/tasks/{task_id}/cancel",
        "cancel_task",
        "Request cancellation (a flag that only becomes true)",
        body="CancelRequest",
        responses=(200, 404),
    ),
    Route(
        "POST",
        "/api/v1/workflows",
        "submit_workflow",
        "Submit a workflow (DAG of tasks)",
        body="WorkflowSpec",
        responses=(200, 201, 400, 409, 413),
    ),
    Route("GET", "/api/v1/workflows", "list_workflows", "List workflows", query=_PAGE),
    Route(
        "GET",
        "/api/v1/workflows/{workflow_id}",
        "get_workflow",
        "A workflow with the status of each task",
        responses=(200, 404),
    ),
    Route("GET", "/api/v1/nodes", "list_nodes", "Registered nodes with link health"),
    Route(
        "GET",
        "/api/v1/nodes/{node_id}",
        "get_node",
        "A node: registration, telemetry, link health, tasks placed on it",
        responses=(200, 404),
    ),
    Route(
        "DELETE",
        "/api/v1/nodes/{node_id}",
        "remove_node",
        "Remove a node; refused while it holds active work unless force=1 (its work is "
        "re-placed by each task's consistency rules, or cancelled)",
        query=(Param("force", "1: remove even while it holds work", "integer"),),
        responses=(200, 404, 409),
    ),
    Route(
        "POST",
        "/api/v1/nodes/{node_id}/drain",
        "drain_node",
        "Stop placing new work on a node and move its movable work away (by each "
        "task's consistency rules); `drained` turns true once it holds nothing",
        responses=(200, 404),
    ),
    Route(
        "POST",
        "/api/v1/nodes/{node_id}/undrain",
        "undrain_node",
        "Place work on a node again",
        responses=(200, 404),
    ),
    Route(
        "GET",
        "/api/v1/events",
        "list_events",
        "The event log; with follow=1 a Server-Sent Events stream (resumes from Last-Event-ID)",
        query=(
            Param("after", "events with a sequence number above this", "integer"),
            Param("limit", "page size (1..1000, default 100)", "integer"),
            Param("task", "only this task's events"),
            Param("node", "only this node's events"),
            Param("kind", "only this kind"),
            Param("follow", "1: stream as text/event-stream", "integer"),
        ),
    ),
)


def _path_params(path: str) -> list[str]:
    return [seg[1:-1] for seg in path.split("/") if seg.startswith("{")]


_RESPONSE_TEXT = {
    200: "OK",
    201: "Created",
    400: "Invalid input: every problem with its field path",
    401: "Missing or wrong bearer token",
    403: "A read-only token on a mutating route",
    404: "Unknown id",
    409: "A different spec already exists under this id; a node to remove holds work",
    413: "Body too large",
    429: "Over the token's rate limit (see Retry-After)",
    503: "Not ready",
}

_SCHEMAS: dict[str, Any] = {
    "TaskSpec": {
        "type": "object",
        "description": "A task spec (docs/task-spec.md); `id` is generated when absent.",
        "additionalProperties": True,
    },
    "WorkflowSpec": {
        "type": "object",
        "description": "A workflow: `id`, `name`, `tasks` (task specs with `depends_on`).",
        "required": ["tasks"],
        "additionalProperties": True,
    },
    "CancelRequest": {"type": "object", "properties": {"reason": {"type": "string"}}},
    "Error": {
        "type": "object",
        "description": "RFC 9457 problem details with the API's own `error` and `message`",
        "required": ["error", "message", "status"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "error": {"type": "string"},
            "message": {"type": "string"},
            "problems": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
                },
            },
        },
    },
}


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 description generated from ``ROUTES``."""
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _path_params(route.path)
        ]
        for p in route.query:
            schema: dict[str, Any] = {"type": p.type}
            if p.repeated:
                schema = {"type": "array", "items": schema}
            params.append(
                {
                    "name": p.name,
                    "in": "query",
                    "required": False,
                    "description": p.description,
                    "schema": schema,
                }
            )
        op: dict[str, Any] = {
            "operationId": route.handler,
            "summary": route.summary,
            "parameters": params,
            "responses": {},
        }
        denied = (401, 429) if route.method == "GET" else (401, 403, 429)
        for code in (*route.responses, *(denied if route.auth else ())):
            resp: dict[str, Any] = {"description": _RESPONSE_TEXT[code]}
            if code >= 400:
                resp["content"] = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}
            elif route.content_type != "application/json":
                resp["content"] = {route.content_type: {"schema": {"type": "string"}}}
            op["responses"][str(code)] = resp
        if route.body:
            op["requestBody"] = {
                "required": route.body != "CancelRequest",
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{route.body}"}}
                },
            }
        op["security"] = [{"bearer": []}] if route.auth else []
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Continuum controller API", "version": API_VERSION},
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
