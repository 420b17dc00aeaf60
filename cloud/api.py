"""The controller's REST API (aiohttp), described by one route table.

``ROUTES`` is the single source: :func:`build_app` registers exactly these
routes and :func:`openapi_document` describes exactly these routes, so the
OpenAPI document cannot drift from what the server answers (a test checks both
directions against the live router).

Rules every ``/api`` route shares, enforced by middlewares rather than by each
handler: a bearer token (401 without the right one), a body limit (413), typed
errors rendered as JSON (400 with every field problem, 404, 409).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from shared.errors import Problem, SpecConflictError, ValidationError

from .metrics import CONTENT_TYPE

__all__ = ["ROUTES", "ApiService", "NotFound", "Route", "build_app", "openapi_document"]

log = logging.getLogger(__name__)

API_VERSION = "1.0.0"
SSE_KEEPALIVE_S = 15.0


class NotFound(LookupError):
    """An id the controller does not know (rendered as 404)."""

    def __init__(self, what: str, ident: str) -> None:
        super().__init__(f"{what} {ident!r} not found")
        self.what = what
        self.ident = ident


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
        "POST",
        "/api/v1/nodes/{node_id}/drain",
        "drain_node",
        "Stop placing new work on a node",
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


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, default=str))


def _error(status: int, error: str, message: str, **extra: object) -> web.Response:
    return _json({"error": error, "message": message, **extra}, status=status)


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "bad_request", "message": f"{name} must be an integer"}),
            content_type="application/json",
        ) from None
    return max(lo, min(hi, value))


class Handlers:
    def __init__(self, service: ApiService) -> None:
        self.service = service

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValidationError([Problem("", f"body is not JSON: {exc}")], what="body") from exc
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
        result, created = self.service.submit_task(await self._body(request))
        return _json(result, status=201 if created else 200)

    async def list_tasks(self, request: web.Request) -> web.Response:
        q = request.query
        return _json(
            self.service.list_tasks(
                status=tuple(q.getall("status", [])),
                node=q.get("node"),
                workflow=q.get("workflow"),
                level=q.get("level"),
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


_Middleware = Callable[..., Awaitable[web.StreamResponse]]


def _make_middlewares(token: str, max_body: int) -> list[_Middleware]:
    expected = token.encode()

    @web.middleware
    async def errors(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except ValidationError as exc:
            return _json(exc.as_dict(), status=400)
        except NotFound as exc:
            return _error(404, "not_found", str(exc), what=exc.what, id=exc.ident)
        except SpecConflictError as exc:
            return _error(409, "conflict", str(exc))
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "too_large", f"body exceeds {max_body} bytes")
        except web.HTTPException as exc:
            if exc.content_type == "application/json":
                raise
            return _error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)

    @web.middleware
    async def auth_and_size(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith("/api/"):
            header = request.headers.get("Authorization", "")
            scheme, _, presented = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                presented.strip().encode(), expected
            ):
                resp = _error(401, "unauthorized", "missing or wrong bearer token")
                resp.headers["WWW-Authenticate"] = 'Bearer realm="continuum"'
                return resp
        if request.content_length is not None and request.content_length > max_body:
            return _error(413, "too_large", f"body exceeds {max_body} bytes")
        return await handler(request)

    return [errors, auth_and_size]


def build_app(
    service: ApiService, *, token: str, max_body_bytes: int = 1_048_576
) -> web.Application:
    if not token:
        raise ValueError("the API needs a bearer token")
    app = web.Application(
        client_max_size=max_body_bytes, middlewares=_make_middlewares(token, max_body_bytes)
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
    404: "Unknown id",
    409: "A different spec already exists under this id",
    413: "Body too large",
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
        "properties": {
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
        for code in (*route.responses, *((401,) if route.auth else ())):
            resp: dict[str, Any] = {"description": _RESPONSE_TEXT[code]}
            if code >= 400:
                resp["content"] = {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                }
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
