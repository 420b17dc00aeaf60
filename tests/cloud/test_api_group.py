"""Group commit of POST /api/v1/tasks (cloud.api_group): submissions waiting for the
same turn of the event loop share one unit of work, and each gets its own answer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cloud_harness import make_config

import cloud.api_group
from cloud.api import build_app
from cloud.api_group import Outcome, SubmitGroup
from cloud.controller import Controller
from cloud.metrics import ControllerMetrics
from cloud.store import Store
from shared.errors import SpecConflictError, ValidationError

AUTH = {"Authorization": "Bearer test-token"}


def test_submissions_of_one_turn_share_a_commit_and_keep_their_own_outcomes() -> None:
    batches: list[list[str]] = []

    def submit_many(batch: list[dict[str, Any]]) -> list[Outcome]:
        batches.append([d["id"] for d in batch])
        return [
            SpecConflictError(d["id"], "a", "b") if d["id"] == "taken" else (d, True) for d in batch
        ]

    async def main() -> list[Any]:
        group = SubmitGroup(submit_many)
        first = await asyncio.gather(
            *(group.submit({"id": i}) for i in ("a", "taken", "b")), return_exceptions=True
        )
        return [*first, await group.submit({"id": "c"})]

    a, taken, b, c = asyncio.run(main())
    assert batches == [["a", "taken", "b"], ["c"]]  # a lone one is its own group
    assert (a, b, c) == (({"id": "a"}, True), ({"id": "b"}, True), ({"id": "c"}, True))
    assert isinstance(taken, SpecConflictError)


def test_a_group_waits_for_as_many_as_the_last_one_held(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients answered together come back one by one: after a group of three, the next
    waits (at most GATHER_S) for three, so submissions read in separate turns share a
    commit; one that stays short commits when GATHER_S is up; after a group of one,
    nothing waits."""
    batches: list[list[str]] = []

    def submit_many(batch: list[dict[str, Any]]) -> list[Outcome]:
        batches.append([d["id"] for d in batch])
        return [(d, True) for d in batch]

    async def later(group: SubmitGroup, task_id: str, turns: int) -> object:
        for _ in range(turns):
            await asyncio.sleep(0)
        return await group.submit({"id": task_id})

    async def main() -> None:
        group = SubmitGroup(submit_many)
        await asyncio.gather(*(group.submit({"id": i}) for i in ("a", "b", "c")))
        monkeypatch.setattr(cloud.api_group, "GATHER_S", 3600.0)  # complete, not timed out
        await asyncio.gather(
            *(later(group, i, turns) for i, turns in (("d", 0), ("e", 3), ("f", 6)))
        )
        monkeypatch.setattr(cloud.api_group, "GATHER_S", 0.0)
        await group.submit({"id": "g"})  # one of three expected: committed when time is up
        await group.submit({"id": "h"})  # after a group of one: on the next turn

    asyncio.run(main())
    assert batches == [["a", "b", "c"], ["d", "e", "f"], ["g"], ["h"]]


def test_a_failed_commit_fails_every_member_and_a_gone_client_is_skipped() -> None:
    def broken(batch: list[dict[str, Any]]) -> list[Outcome]:
        raise OSError("disk full")

    async def main() -> tuple[list[Any], bool]:
        group = SubmitGroup(broken)
        gone = asyncio.ensure_future(group.submit({"id": "gone"}))
        await asyncio.sleep(0)  # it joined the group
        gone.cancel()
        outcomes = await asyncio.gather(
            group.submit({"id": "x"}), group.submit({"id": "y"}), return_exceptions=True
        )
        return outcomes, gone.cancelled()

    outcomes, cancelled = asyncio.run(main())
    assert cancelled
    assert all(isinstance(o, OSError) for o in outcomes)


def test_concurrent_posts_each_get_their_own_answer(tmp_path: Path) -> None:
    """Over the real API and controller: created, conflicting and invalid submissions
    sent at once are answered 201, 409 and 400, and all created are stored."""

    async def main() -> None:
        cfg = make_config(tmp_path)
        store = Store(cfg.db_path)
        controller = Controller(cfg, store, ControllerMetrics(), send=lambda *_: None)
        client = TestClient(TestServer(build_app(controller, token="test-token")))
        await client.start_server()
        try:
            t0 = {"id": "t0", "command": ["a"]}
            first = await client.post("/api/v1/tasks", json=t0, headers=AUTH)
            assert first.status == 201
            bodies: list[dict[str, Any]] = [
                *({"id": f"t{i}", "command": ["true"]} for i in range(1, 9)),
                {"id": "t0", "command": ["other"]},  # the id is taken by another spec
                {"id": "bad", "command": ["true"], "priority": "high"},
            ]
            resps = await asyncio.gather(
                *(client.post("/api/v1/tasks", json=b, headers=AUTH) for b in bodies)
            )
            assert [r.status for r in resps] == [201] * 8 + [409, 400]
            assert [(await r.json())["task_id"] for r in resps[:8]] == [
                f"t{i}" for i in range(1, 9)
            ]
            assert {t["task_id"] for t in controller.list_tasks(limit=100)["tasks"]} == {
                f"t{i}" for i in range(9)
            }
        finally:
            await client.close()
            store.close()

    asyncio.run(main())


@pytest.mark.parametrize("data", [{"tasks": []}, {"command": "not a list"}])
def test_submit_task_raises_a_lone_invalid_spec(tmp_path: Path, data: dict[str, Any]) -> None:
    cfg = make_config(tmp_path)
    store = Store(cfg.db_path)
    try:
        controller = Controller(cfg, store, ControllerMetrics(), send=lambda *_: None)
        with pytest.raises(ValidationError):
            controller.submit_task(data)
    finally:
        store.close()
