"""The controller's REST API (aiohttp), described by one route table.

``ROUTES`` is the single source: :func:`build_app` registers exactly these
routes and :func:`openapi_document` describes exactly these routes, so the
OpenAPI document cannot drift from what the server answers (a test checks both
directions against the live router).

Rules every ``/api`` route shares, enforced by middlewares rather than by each
handler: a named bearer token (401 without one, 403 for a read-only token on a
mutating route), a per-token rate limit (429), a body limit (413) and JSON limits
checked before parsing (``cloud.api_limits``), every error an
``application/problem+json`` body with ``error`` and ``message``, and an audit
record (actor, route, outcome) of every mutating request. Below the router,
:func:`start_api` serves the app with a header-read timeout and answers the HTTP
parser's own refusals (over-long URL or header, bad ``Content-Length``) as JSON too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from shared.errors import Problem, ValidationError
from shared.vocab import Level, TaskStatus

from .api_access import ApiToken, RateLimit, access_middlewares, parse_tokens
from .api_http import (
    PROBLEM_JSON,
    NotFound,
    error_middleware,
    json_response,
    parse_json_body,
    problem,
)
from .api_logs import LogHandlers
from .metrics import CONTENT_TYPE

__all__ = [
    "ROUTES",
    "ApiService",
    "NodeBusy",
    "NotFound",
    "Route",
    "build_app",
    "openapi_document",
]

_STATUSES = frozenset(s.value for s in TaskStatus)
_LEVELS = frozenset(level.value for level in Level)

log = logging.getLogger(__name__)

API_VERSION = "1.0.0"
SSE_KEEPALIVE_S = 15.0


class NodeBusy(Exception):
    """A node asked to be removed still holds active work (answered 409)."""

    def __init__(self, node_id: str, tasks: list[str]) -> None:
        super().__init__(
            f"node {node_id!r} holds {len(tasks)} active task(s): drain it first, "
            "or remove it with force (its work is re-placed or cancelled)"
        )
        self.node_id = node_id
        self.tasks = tasks


class ApiService(Protocol):
    """What the API needs from the controller (see ``cloud.controller.Controller``)."""

    def submit_task(self, data: dict[str, Any]) -> tuple[dict[str, Any], bool]: ...
    def submit_workflow(self, data: dict[str, Any]) -> tuple[dict[str, Any], bool]: ...
    def list_tasks(self, **filters: Any) -> dict[str, Any]: ...
    def get_task(self, task_id: str) -> dict[str, Any]: ...
    def cancel_task(self, task_id: str, reason: str) -> dict[str, Any]: ...
    def list_workflows(self, *, after: str | None, limit: int) -> dict[str, Any]: ...
    def get_workflow(self, workflow_id: str) -> dict[str, Any]: ...
    def list_nodes(self) -> dict[str, Any]: ...
    def get_node(self, node_id: str) -> dict[str, Any]: ...
    def set_draining(self, node_id: str, draining: bool) -> dict[str, Any]: ...
    def remove_node(self, node_id: str, *, force: bool) -> dict[str, Any]: ...
    def list_events(self, **filters: Any) -> dict[str, Any]: ...
    async def wait_for_events(self, after: int, timeout_s: float, **filters: Any) -> None: ...
    def is_ready(self) -> tuple[bool, dict[str, Any]]: ...
    def metrics_text(self) -> bytes: ...


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
        "The output tail (stdout or stderr) an attempt's node sent with its end",
        query=(
            Param(
                "attempt", "attempt number from 1, in start order (default: the latest)", "integer"
            ),
            Param("stream", "stdout (default) or stderr"),
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


_json = json_response


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.lstrip("-").isdigit() and len(raw) <= 20):
        raise ValidationError([Problem(name, "must be an integer")], what="query")
    return max(lo, min(hi, int(raw)))


def _choices(request: web.Request, name: str, allowed: frozenset[str]) -> tuple[str, ...]:
    """Every value of query parameter ``name``, each one of ``allowed`` (else 400)."""
    values = tuple(request.query.getall(name, []))
    problems = [
        Problem(name, f"{v!r} is not one of {', '.join(sorted(allowed))}")
        for v in values
        if v not in allowed
    ]
    if problems:
        raise ValidationError(problems, what="query")
    return values


class Handlers(LogHandlers):
    def __init__(self, service: ApiService) -> None:
        self.service = service

    async def _body(self, request: web.Request) -> dict[str, Any]:
        data = parse_json_body(await request.read())
        if not isinstance(data, dict):
            raise ValidationError([Problem("", "body must be a JSON object")], what="body")
        return data

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        ready, detail = self.service.is_ready()
        return _json({"ready": ready, **detail}, status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        body = self.service.metrics_text()
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = CONTENT_TYPE
        return resp

    async def openapi(self, request: web.Request) -> web.Response:
        return _json(openapi_document())

    async def submit_task(self, request: web.Request) -> web.Response:
        data = await self._body(request)
        self._known_dependencies(data)
        result, created = self.service.submit_task(data)
        return _json(result, status=201 if created else 200)

    def _known_dependencies(self, data: dict[str, Any]) -> None:
        """A lone task may depend only on tasks the controller has (an unknown id would
        leave it pending forever, with no reason given)."""
        deps = data.get("depends_on")
        if not isinstance(deps, list):
            return  # absent, or wrong: the spec's own validation says so
        problems = []
        for i, dep in enumerate(deps[:1_000]):
            if not isinstance(dep, str) or dep == data.get("id"):
                continue
            try:
                self.service.get_task(dep)
            except NotFound:
                problems.append(
                    Problem(f"depends_on[{i}]", f"unknown task {dep!r}: submit it first")
                )
        if problems:
            raise ValidationError(problems, what="task spec")

    async def list_tasks(self, request: web.Request) -> web.Response:
        q = request.query
        levels = _choices(request, "level", _LEVELS)
        return _json(
            self.service.list_tasks(
                status=_choices(request, "status", _STATUSES),
                node=q.get("node"),
                workflow=q.get("workflow"),
                level=levels[-1] if levels else None,
                after=q.get("after"),
                limit=_int_param(request, "limit", 100, 1, 1000),
            )
        )

    async def get_task(self, request: web.Request) -> web.Response:
        return _json(self.service.get_task(request.match_info["task_id"]))

    async def cancel_task(self, request: web.Request) -> web.Response:
        reason = "operator"
        if request.can_read_body:
            body = await self._body(request)
            reason = str(body.get("reason") or reason)[:200]
        return _json(self.service.cancel_task(request.match_info["task_id"], reason))

    async def submit_workflow(self, request: web.Request) -> web.Response:
        result, created = self.service.submit_workflow(await self._body(request))
        return _json(result, status=201 if created else 200)

    async def list_workflows(self, request: web.Request) -> web.Response:
        limit = _int_param(request, "limit", 100, 1, 1000)
        return _json(self.service.list_workflows(after=request.query.get("after"), limit=limit))

    async def get_workflow(self, request: web.Request) -> web.Response:
        return _json(self.service.get_workflow(request.match_info["workflow_id"]))

    async def list_nodes(self, request: web.Request) -> web.Response:
        return _json(self.service.list_nodes())

    async def get_node(self, request: web.Request) -> web.Response:
        return _json(self.service.get_node(request.match_info["node_id"]))

    async def remove_node(self, request: web.Request) -> web.Response:
        force = request.query.get("force") in ("1", "true", "yes")
        try:
            return _json(self.service.remove_node(request.match_info["node_id"], force=force))
        except NodeBusy as exc:
            return problem(409, "node_busy", str(exc), node_id=exc.node_id, tasks=exc.tasks)

    async def drain_node(self, request: web.Request) -> web.Response:
        return _json(self.service.set_draining(request.match_info["node_id"], True))

    async def undrain_node(self, request: web.Request) -> web.Response:
        return _json(self.service.set_draining(request.match_info["node_id"], False))

    async def list_events(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        after = _int_param(request, "after", 0, 0, 2**62)
        filters = {"task_id": q.get("task"), "node_id": q.get("node"), "kind": q.get("kind")}
        if q.get("follow") not in ("1", "true", "yes"):
            limit = _int_param(request, "limit", 100, 1, 1000)
            return _json(self.service.list_events(after=after, limit=limit, **filters))
        last_id = request.headers.get("Last-Event-ID", "")
        if last_id.isdigit():
            after = int(last_id)
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        try:
            while True:
                page = self.service.list_events(after=after, limit=500, **filters)
                for ev in page["events"]:
                    after = ev["seq"]
                    data = json.dumps(ev, default=str)
                    await resp.write(f"id: {after}\nevent: {ev['kind']}\ndata: {data}\n\n".encode())
                if page["events"]:
                    continue
                await resp.write(b": keepalive\n\n")
                await self.service.wait_for_events(after, SSE_KEEPALIVE_S, **filters)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return resp


def build_app(
    service: ApiService,
    *,
    token: str = "",
    tokens: tuple[ApiToken, ...] = (),
    max_body_bytes: int = 1_048_576,
    rate: RateLimit | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> web.Application:
    """The app over ``service``. ``token``: a token text (``cloud.api_access``: one
    secret, or named tokens with roles, one per line); ``tokens``: parsed ones."""
    tokens = tokens or (parse_tokens(token) if token else ())
    if not tokens:
        raise ValueError("the API needs a bearer token")
    audit, access = access_middlewares(
        tokens, max_body=max_body_bytes, rate=rate or RateLimit(), clock=clock
    )
    app = web.Application(
        client_max_size=max_body_bytes,
        middlewares=[audit, error_middleware(max_body_bytes), access],
    )
    handlers = Handlers(service)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, getattr(handlers, route.handler))
    return app


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
