"""Submissions to an agent's own local API: the work a device accepts by itself, with or
without the cloud (the demo submits some while the agent is cut off).

The agent writes its local API's address into its ready file (``api_port``); the file
is read again on every submission because a restarted agent listens on a new port. The
testbed's agents listen on TCP (``api.transport = "tcp"``), so every request carries the
bearer token the agent keeps in ``api.token`` beside that file.
A task id of the plan is submitted once; a ``409 exists`` answer therefore means an
earlier try of this same submission reached the agent, which counts as acknowledged.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from .processes import AgentProcess

__all__ = ["LocalApiDown", "submit"]


class LocalApiDown(RuntimeError):
    """The agent is not running or has not written its ready file yet."""


def _api_url(agent: AgentProcess) -> tuple[str, dict[str, str]]:
    """The API's URL and the headers that authenticate us to it."""
    try:
        ready = json.loads(agent.ready_file.read_text(encoding="utf-8"))
        token = (agent.ready_file.parent / "api.token").read_text(encoding="ascii").strip()
    except (OSError, json.JSONDecodeError) as exc:
        raise LocalApiDown(f"{agent.name}: no ready file or token ({exc})") from exc
    if not agent.alive:
        raise LocalApiDown(f"{agent.name} is not running")
    url = f"http://127.0.0.1:{int(ready['api_port'])}"
    return url, {"Authorization": f"Bearer {token}"}


async def submit(
    session: aiohttp.ClientSession, agent: AgentProcess, body: dict[str, Any]
) -> tuple[int, Any]:
    """POST ``body`` to the agent's ``/v1/tasks``; returns (status, answer) with a
    ``409 exists`` mapped to 200 (see the module's docstring)."""
    url, headers = _api_url(agent)
    async with session.post(
        url + "/v1/tasks", json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
    ) as resp:
        try:
            data = await resp.json(content_type=None)
        except (json.JSONDecodeError, aiohttp.ContentTypeError):
            data = None
        if resp.status == 409 and isinstance(data, dict) and data.get("error") == "exists":
            return 200, data
        return resp.status, data
