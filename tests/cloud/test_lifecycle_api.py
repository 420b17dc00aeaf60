"""``DELETE /api/v1/nodes/{id}`` over HTTP: a problem+json 409 naming the work a node
still holds, 404 for an unknown node, ``force=1`` to remove it anyway; a node's
``drained`` and ``departed`` fields. The controller runs on the in-memory bus."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp.test_utils import TestClient, TestServer
from memory_bus import MemoryHarness

from cloud.api import build_app

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def run(h: MemoryHarness, scenario: Callable[[TestClient], Awaitable[None]]) -> None:
    async def main() -> None:
        client = TestClient(TestServer(build_app(h.controller, token=TOKEN)))
        await client.start_server()
        try:
            await scenario(client)
        finally:
            await client.close()

    asyncio.run(main())


def test_remove_over_http(h: MemoryHarness) -> None:
    n1 = h.node("n1")
    h.controller.submit_task({"id": "t", "command": ["true"]})
    n1.expect("place", lambda e: e.body.task_id == "t")

    async def scenario(client: TestClient) -> None:
        resp = await client.delete("/api/v1/nodes/n1", headers=AUTH)
        assert resp.status == 409 and resp.content_type == "application/problem+json"
        body = await resp.json()
        assert (body["error"], body["node_id"], body["tasks"]) == ("node_busy", "n1", ["t"])
        assert "drain it first" in body["message"]
        resp = await client.delete("/api/v1/nodes/nope", headers=AUTH)
        assert resp.status == 404 and (await resp.json())["error"] == "not_found"
        node = await (await client.post("/api/v1/nodes/n1/drain", headers=AUTH)).json()
        assert (node["draining"], node["drained"], node["departed"]) == (True, False, False)
        resp = await client.delete("/api/v1/nodes/n1?force=1", headers=AUTH)
        assert resp.status == 200
        assert await resp.json() == {
            "node_id": "n1",
            "removed": True,
            "replaced": [],
            "cancelled": ["t"],  # no other node to take it
        }
        listed = await (await client.get("/api/v1/nodes", headers=AUTH)).json()
        assert listed["nodes"] == [] and listed["system_health"]["departed"] == 0

    run(h, scenario)
