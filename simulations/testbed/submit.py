"""The workload half of a run: the submissions of the plan sent at their times, to the
controller's REST API or (``local``) to an agent's own local API, each recorded in the
history as ``invoke`` then ``ok`` / ``fail`` / ``info``. Every task runs the ledger task
by its file path with the run's ledger (and, for heterogeneous agents, speeds) in its
spec env. A mixin of :class:`.runner.Testbed`: it reads the run's state from there."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from . import collect, ledger_task, local
from .launch import TOKEN
from .plan import PlannedSubmission

if TYPE_CHECKING:
    from .history import History, LiveState
    from .processes import AgentProcess

__all__ = ["SPEEDS", "Submitter"]

SPEEDS = "speeds.json"  # node -> speed factor, read by the ledger task


def _ledger_command(args: list[str]) -> list[str]:
    return [sys.executable, str(Path(ledger_task.__file__).resolve()), *args]


class Submitter:
    """Sends the plan's submissions (see the module doc)."""

    # the run's state, kept by Testbed
    out: Path
    agents: dict[str, AgentProcess]
    state: LiveState
    _session: aiohttp.ClientSession | None
    hist: History
    api_url: str
    speeds: dict[str, float]

    if TYPE_CHECKING:  # Testbed's (declared only: a body would shadow it)

        def _note(self, text: str) -> None: ...

    async def _api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        assert self._session is not None
        async with self._session.request(
            method,
            self.api_url + path,
            json=body,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=aiohttp.ClientTimeout(total=10),
        ) as resp:
            try:
                data = await resp.json(content_type=None)
            except (json.JSONDecodeError, aiohttp.ContentTypeError):
                data = None
            return resp.status, data

    async def _nodes(self) -> list[dict[str, Any]]:
        try:
            status, data = await self._api("GET", "/api/v1/nodes")
        except (aiohttp.ClientError, TimeoutError):
            return []
        return list(data.get("nodes", [])) if status == 200 and isinstance(data, dict) else []

    def _with_ledger(self, body: dict[str, Any]) -> dict[str, Any]:
        ledger = str((collect.ledger_dir(self.out) / "{node}.jsonl").resolve())
        out = dict(body)
        out["command"] = _ledger_command(list(body["command"]))
        out["env"] = {**body.get("env", {}), "CONTINUUM_LEDGER": ledger}
        if self.speeds:
            out["env"]["CONTINUUM_TB_SPEEDS"] = str((self.out / SPEEDS).resolve())
        return out

    def request_body(self, sub: PlannedSubmission) -> dict[str, Any]:
        if sub.kind in ("task", "local"):
            return self._with_ledger(sub.body)
        return {**sub.body, "tasks": [self._with_ledger(t) for t in sub.body["tasks"]]}

    async def _submit(self, sub: PlannedSubmission) -> None:
        await asyncio.sleep(max(0.0, sub.at - self.hist.now()))
        value = {"request": sub.request, "kind": sub.kind, "tasks": [dict(t) for t in sub.tasks]}
        if sub.node is not None:
            value["node"] = sub.node
        self.hist.add("client", "invoke", "submit", value)
        body = self.request_body(sub)
        send = self._sender(sub, body)
        done = {"request": sub.request}
        maybe_sent = False
        # Submissions are idempotent per id (an identical spec is accepted again),
        # so transport errors are retried; if none of the tries may have reached
        # the controller the outcome is a definite fail, otherwise indeterminate.
        deadline = time.monotonic() + 20.0
        while True:
            try:
                status, data = await send()
            except (aiohttp.ClientConnectorError, local.LocalApiDown) as exc:
                error = f"connect: {exc}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                maybe_sent = True
                error = f"{type(exc).__name__}: {exc}"
            else:
                if status in (200, 201):
                    self.hist.add("client", "ok", "submit", done)
                    self.state.submitted += 1
                    return
                if 400 <= status < 500:
                    self.hist.add(
                        "client", "fail", "submit", {**done, "status": status, "error": data}
                    )
                    self._note(f"submission {sub.request} rejected ({status})")
                    return
                maybe_sent = True
                error = f"HTTP {status}"
            if time.monotonic() > deadline:
                kind = "info" if maybe_sent else "fail"
                self.hist.add("client", kind, "submit", {**done, "error": error})
                return
            await asyncio.sleep(0.5)

    def _sender(
        self, sub: PlannedSubmission, body: dict[str, Any]
    ) -> Callable[[], Awaitable[tuple[int, Any]]]:
        """How one submission is sent: to the controller's REST API, or (``local``) to
        its agent's local API."""
        if sub.kind == "local":
            assert sub.node is not None and self._session is not None
            agent, session = self.agents[sub.node], self._session
            return lambda: local.submit(session, agent, body)
        path = "/api/v1/tasks" if sub.kind == "task" else "/api/v1/workflows"
        return lambda: self._api("POST", path, body)
