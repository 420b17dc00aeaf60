"""Group commit for ``POST /api/v1/tasks``: submissions that arrive together share one
unit of work.

Every submission is durable before it is answered (one fsync'd SQLite transaction),
and on an ordinary disk that fsync, not the controller's work, bounds how many
single POSTs a second one thread can take. So a POST does not commit alone: it joins
the submissions waiting for the next turn of the event loop, and that turn commits
them together (``Controller.submit_tasks``: one transaction, one placement pass) and
answers each with its own outcome. A lone client waits no longer than before (its
group is itself); concurrent clients share each fsync. A submission's own error (a
bad spec, a conflicting id) is its answer alone; a failed commit is every member's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["Outcome", "SubmitGroup"]

#: One submission's outcome: ``(task, created)`` or the error it alone raised.
Outcome = tuple[dict[str, Any], bool] | Exception


class SubmitGroup:
    def __init__(self, submit_many: Callable[[list[dict[str, Any]]], list[Outcome]]) -> None:
        self._submit_many = submit_many
        self._waiting: list[tuple[dict[str, Any], asyncio.Future[tuple[dict[str, Any], bool]]]] = []

    async def submit(self, data: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """``(task, created)`` once the group holding ``data`` committed."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[dict[str, Any], bool]] = loop.create_future()
        self._waiting.append((data, done))
        if len(self._waiting) == 1:  # the first of a group: commit on the next turn
            loop.call_soon(self._commit)
        return await done

    def _commit(self) -> None:
        group, self._waiting = self._waiting, []
        try:
            outcomes = self._submit_many([data for data, _ in group])
        except Exception as exc:  # the transaction rolled back: nothing was submitted
            outcomes = [exc] * len(group)
        for (_, done), outcome in zip(group, outcomes, strict=True):
            if done.done():  # the client went away (its handler was cancelled)
                continue
            if isinstance(outcome, Exception):
                done.set_exception(outcome)
            else:
                done.set_result(outcome)
