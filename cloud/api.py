"""The controller's REST API (aiohttp), described by one route table.

``cloud.api_routes.ROUTES`` is the single source: :func:`build_app` registers exactly
these routes and ``cloud.api_routes.openapi_document`` describes exactly these, so the
OpenAPI document cannot drift from what the server answers.

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
from typing import Any, Protocol

from aiohttp import web

from shared.errors import Problem, ValidationError
from shared.protocol import LogChunk
from shared.vocab import Level, TaskStatus

from .api_access import ApiToken, RateLimit, access_middlewares, parse_tokens
from .api_group import Outcome, SubmitGroup
from .api_http import (
    NotFound,
    error_middleware,
    json_response,
    parse_json_body,
    problem,
)
from .api_logs import LogHandlers
from .api_routes import ROUTES, openapi_document
from .metrics import CONTENT_TYPE

__all__ = [
    "ApiService",
    "NodeBusy",
    "NotFound",
    "build_app",
]

_STATUSES = frozenset(s.value for s in TaskStatus)
_LEVELS = frozenset(level.value for level in Level)

log = logging.getLogger(__name__)

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

    def submit_tasks(self, batch: list[dict[str, Any]]) -> list[Outcome]: ...
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
    async def live_log(
        self, node_id: str, task_id: str, attempt: str, stream: str, offset: int
    ) -> LogChunk | None: ...
    def is_ready(self) -> tuple[bool, dict[str, Any]]: ...
    def metrics_text(self) -> bytes: ...


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
        self.submits = SubmitGroup(service.submit_tasks)

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
        result, created = await self.submits.submit(data)
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
