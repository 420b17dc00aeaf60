"""The REST API over a real controller: auth, validation, limits, ids, OpenAPI, SSE, metrics.

No broker is needed: the controller's MQTT send is a recorder (the API never waits on it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cloud_harness import make_config

from cloud.api import build_app
from cloud.api_routes import ROUTES, openapi_document
from cloud.controller import Controller
from cloud.metrics import ControllerMetrics
from cloud.store import Store

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

Scenario = Callable[[TestClient, Controller], Awaitable[None]]


def run(tmp_path: Path, scenario: Scenario) -> None:
    async def main() -> None:
        cfg = make_config(tmp_path)
        store = Store(cfg.db_path)
        controller = Controller(cfg, store, ControllerMetrics(), send=lambda *_: None)
        app = build_app(controller, token=TOKEN, max_body_bytes=cfg.api.max_body_bytes)
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            await scenario(client, controller)
        finally:
            await client.close()
            store.close()

    asyncio.run(main())


def task(task_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": task_id, "command": ["true"], **fields}


def _example_path(path: str) -> str:
    return path.replace("{task_id}", "x").replace("{workflow_id}", "x").replace("{node_id}", "x")


def test_every_api_route_needs_the_bearer_token(tmp_path: Path) -> None:
    async def scenario(client: TestClient, _c: Controller) -> None:
        for route in ROUTES:
            path = _example_path(route.path)
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                resp = await client.request(route.method, path, headers=headers, json={})
                if route.auth:
                    assert resp.status == 401, (route.path, headers)
                    assert (await resp.json())["error"] == "unauthorized"
                    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                else:
                    assert resp.status in (200, 503), route.path  # readyz: no broker here
        assert all(r.auth == r.path.startswith("/api/") for r in ROUTES)

    run(tmp_path, scenario)


def test_invalid_specs_get_400_listing_every_field_problem(tmp_path: Path) -> None:
    async def scenario(client: TestClient, _c: Controller) -> None:
        bad = {
            "id": "t-bad",
            "resources": {"cpu": -1, "memory_mb": "lots"},
            "priority": "high",
            "consistency": {"level": "linearizable"},
            "placement": {"tiers": ["moon"]},
        }
        resp = await client.post("/api/v1/tasks", json=bad, headers=AUTH)
        assert resp.status == 400
        body = await resp.json()
        paths = {p["path"] for p in body["problems"]}
        assert {
            "resources.cpu",
            "resources.memory_mb",
            "priority",
            "consistency.level",
            "placement.tiers[0]",
        } <= paths
        assert any("command" in p["message"] for p in body["problems"])

        wf = {
            "id": "wf",
            "tasks": [
                task("a", depends_on=["b"]),
                task("b", depends_on=["a"]),
                {"id": "c", "command": "rm -rf /"},
            ],
        }
        resp = await client.post("/api/v1/workflows", json=wf, headers=AUTH)
        assert resp.status == 400
        problems = (await resp.json())["problems"]
        assert any("cycle" in p["message"] for p in problems)
        assert any(p["path"] == "tasks[2].command" for p in problems)

        for raw in (b"{not json", b"[1, 2]"):
            resp = await client.post("/api/v1/tasks", data=raw, headers=AUTH)
            assert resp.status == 400

    run(tmp_path, scenario)


def test_body_over_the_limit_is_413(tmp_path: Path) -> None:
    async def scenario(client: TestClient, _c: Controller) -> None:
        big = {**task("t-big"), "env": {"PAD": "x" * 1_100_000}}
        for path in ("/api/v1/tasks", "/api/v1/workflows"):
            resp = await client.post(path, data=json.dumps(big), headers=AUTH)
            assert resp.status == 413
            assert (await resp.json())["error"] == "too_large"

    run(tmp_path, scenario)


def test_unknown_ids_are_404_and_conflicting_specs_409(tmp_path: Path) -> None:
    async def scenario(client: TestClient, _c: Controller) -> None:
        for method, path in (
            ("GET", "/api/v1/tasks/nope"),
            ("POST", "/api/v1/tasks/nope/cancel"),
            ("GET", "/api/v1/workflows/nope"),
            ("GET", "/api/v1/nodes/nope"),
            ("POST", "/api/v1/nodes/nope/drain"),
            ("POST", "/api/v1/nodes/nope/undrain"),
            ("GET", "/api/v1/nope"),
        ):
            resp = await client.request(method, path, headers=AUTH)
            assert resp.status == 404, path
            assert (await resp.json())["error"] == "not_found"

        resp = await client.post("/api/v1/tasks", json=task("t1"), headers=AUTH)
        assert resp.status == 201
        resp = await client.post("/api/v1/tasks", json=task("t1"), headers=AUTH)
        assert resp.status == 200  # idempotent resubmission
        resp = await client.post("/api/v1/tasks", json=task("t1", priority=9), headers=AUTH)
        assert resp.status == 409

    run(tmp_path, scenario)


def test_submit_get_list_cancel_and_events(tmp_path: Path) -> None:
    async def scenario(client: TestClient, c: Controller) -> None:
        for i in range(3):
            resp = await client.post("/api/v1/tasks", json=task(f"t{i}"), headers=AUTH)
            assert resp.status == 201
        resp = await client.post("/api/v1/tasks", json={"command": ["true"]}, headers=AUTH)
        generated = (await resp.json())["task_id"]
        assert generated.startswith("t-")

        page = await (await client.get("/api/v1/tasks?limit=2", headers=AUTH)).json()
        assert len(page["tasks"]) == 2 and page["next"] == page["tasks"][-1]["task_id"]
        rest = await (
            await client.get(f"/api/v1/tasks?limit=10&after={page['next']}", headers=AUTH)
        ).json()
        assert len(page["tasks"]) + len(rest["tasks"]) == 4 and rest["next"] is None
        pending = await (await client.get("/api/v1/tasks?status=pending", headers=AUTH)).json()
        assert len(pending["tasks"]) == 4

        detail = await (await client.get("/api/v1/tasks/t1", headers=AUTH)).json()
        for key in ("record", "spec", "attempts", "version_vector", "content_hash", "consistency"):
            assert key in detail
        assert "no feasible node" in detail["blocked_reason"]  # no node registered

        resp = await client.post("/api/v1/tasks/t1/cancel", json={"reason": "test"}, headers=AUTH)
        assert (await resp.json())["status"] == "cancelled"
        events = await (await client.get("/api/v1/events?task=t1", headers=AUTH)).json()
        kinds = [e["kind"] for e in events["events"]]
        assert kinds[0] == "submitted" and "cancel_requested" in kinds

        # Server-Sent Events: the backlog, then a new event as it happens.
        resp = await client.get("/api/v1/events?follow=1&kind=submitted", headers=AUTH)
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        seen: list[str] = []
        while len(seen) < 4:
            line = (await resp.content.readline()).decode()
            if line.startswith("data: "):
                seen.append(json.loads(line[6:])["task_id"])
        await client.post("/api/v1/tasks", json=task("t-late"), headers=AUTH)
        while len(seen) < 5:
            line = (await asyncio.wait_for(resp.content.readline(), 10)).decode()
            if line.startswith("data: "):
                seen.append(json.loads(line[6:])["task_id"])
        assert seen[-1] == "t-late"
        resp.close()

        text = await (await client.get("/metrics")).text()
        assert 'continuum_tasks{level="none",status="pending"}' in text
        assert "continuum_placements_total" in text
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/readyz")).status == 503  # no broker connection here
        c.set_broker_connected(True)
        assert (await client.get("/readyz")).status == 200

    run(tmp_path, scenario)


def test_openapi_document_lists_exactly_the_routes_served(tmp_path: Path) -> None:
    async def scenario(client: TestClient, _c: Controller) -> None:
        doc = await (await client.get("/api/v1/openapi.json", headers=AUTH)).json()
        assert doc == json.loads(json.dumps(openapi_document()))
        documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
        app: web.Application = client.server.app  # type: ignore[assignment]
        served = {
            (r.method, r.resource.canonical)
            for r in app.router.routes()
            if r.method != "HEAD" and r.resource is not None
        }
        assert documented == served
        for path, ops in doc["paths"].items():
            for op in ops.values():
                names = {p["name"] for p in op["parameters"] if p["in"] == "path"}
                assert names == {s[1:-1] for s in path.split("/") if s.startswith("{")}
                if path.startswith("/api/"):
                    assert "401" in op["responses"] and op["security"]

    run(tmp_path, scenario)


@pytest.mark.parametrize("limit", ["0", "5000", "x"])
def test_paging_limits_are_clamped_or_rejected(tmp_path: Path, limit: str) -> None:
    async def scenario(client: TestClient, _c: Controller) -> None:
        resp = await client.get(f"/api/v1/tasks?limit={limit}", headers=AUTH)
        assert resp.status == (400 if limit == "x" else 200)

    run(tmp_path, scenario)
