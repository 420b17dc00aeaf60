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

Concurrent clients do not come back together: each sends its next submission when its
answer reached it, so the first of them to be read would start a group of one or two
while the rest arrive during that group's fsync (``benchmarks/bench_backlog.py``, 16
clients: three in four groups held one to three submissions). So a group waits for as
many submissions as the previous group held, at most ``GATHER_S``: clients that were
answered together are expected back together. After a group of one (a lone client)
nothing waits, and the expectation follows the traffic group by group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["GATHER_S", "Outcome", "SubmitGroup"]

#: The longest a group waits for the submissions the previous group's size announces.
GATHER_S = 0.002

#: One submission's outcome: ``(task, created)`` or the error it alone raised.
Outcome = tuple[dict[str, Any], bool] | Exception


class SubmitGroup:
    def __init__(self, submit_many: Callable[[list[dict[str, Any]]], list[Outcome]]) -> None:
        self._submit_many = submit_many
        self._waiting: list[tuple[dict[str, Any], asyncio.Future[tuple[dict[str, Any], bool]]]] = []
        self._expected = 1  # the previous group's size
        self._timer: asyncio.TimerHandle | None = None

    async def submit(self, data: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """``(task, created)`` once the group holding ``data`` committed."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[dict[str, Any], bool]] = loop.create_future()
        self._waiting.append((data, done))
        if len(self._waiting) >= self._expected:  # complete: commit on the next turn
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None
            if len(self._waiting) == self._expected:
                loop.call_soon(self._commit)
        elif len(self._waiting) == 1:  # the first of a group that expects others
            self._timer = loop.call_later(GATHER_S, self._commit)
        return await done

    def _commit(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        group, self._waiting = self._waiting, []
        self._expected = len(group)
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
