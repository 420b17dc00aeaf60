"""The observing half of a run: after every heal, how long the healed agents take to
converge (``converged`` / ``not-converged`` ops); the live display's counts; and the
settle phase's wait for quiescence, which also notes when each task still open became
terminal (the liveness invariant). What is read goes through :class:`.observe.Observer`.
A mixin of :class:`.runner.Testbed`: it reads the run's state from there."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from . import collect
from .observe import POLL_S, Observer, acknowledged

if TYPE_CHECKING:
    from pathlib import Path

    from .history import History, LiveState
    from .processes import AgentProcess
    from .scenario import Scenario

__all__ = ["Monitors"]


class Monitors:
    """Convergence monitors, the live counts and the settle phase (see the module doc)."""

    # the run's state, kept by Testbed
    out: Path
    scenario: Scenario
    node_ids: list[str]
    agents: dict[str, AgentProcess]
    observer: Observer
    state: LiveState
    settle: float
    hist: History
    _final_heal_at: float

    if TYPE_CHECKING:  # Testbed's and Submitter's (declared only: a body would shadow them)

        def _refresh(self) -> None: ...
        async def _nodes(self) -> list[dict[str, Any]]: ...

    async def _measure_convergence(self, cause: str, nodes: tuple[str, ...], at: float) -> None:
        """Time from a heal until the healed agents' replicas equal the controller's.

        Nodes still apart when the run stops measuring (a later fault on the same
        node, or the end of the settle phase) are recorded as ``not-converged``."""
        pending = set(nodes)
        try:
            while pending:
                await asyncio.sleep(POLL_S)
                ctl = await asyncio.to_thread(self.observer.controller_hashes)
                if ctl is None:
                    continue
                for n in sorted(pending):
                    alive = self.agents[n].alive
                    if alive and await asyncio.to_thread(self.observer.node_converged, n, ctl):
                        pending.discard(n)
                        value = {
                            "cause": cause,
                            "node": n,
                            "heal_at": round(at, 3),
                            "after_s": round(self.hist.now() - at, 3),
                        }
                        self.hist.add("monitor", "info", "converged", value)
        finally:
            for n in sorted(pending):
                value = {"cause": cause, "node": n, "heal_at": round(at, 3), "after_s": None}
                self.hist.add("monitor", "info", "not-converged", value)

    async def _poll_status(self) -> None:
        """Keep the live display's counts fresh (what the system says, for the eye only)."""
        while True:
            ctl = await asyncio.to_thread(self.observer.status_counts)
            if ctl is not None:
                self.state.tasks = ctl
            for n in await self._nodes():
                if n.get("node_id") in self.state.nodes:
                    self.state.nodes[n["node_id"]].link = str(n.get("link_state", "?"))
            for n in self.node_ids:
                with contextlib.suppress(OSError, sqlite3.Error):
                    depth = collect.outbox_depth(collect.agent_journal(self.out, n))
                    self.state.nodes[n].outbox = depth
            self.state.elapsed = self.hist.now()
            self._refresh()
            await asyncio.sleep(1.0)

    async def _settle(self) -> dict[str, Any]:
        """Wait for quiescence (at most ``settle_s``). Also records, for the liveness
        invariant, when each task still open at the first look became terminal,
        in seconds after the final heal."""
        started = time.monotonic()
        stable, why = 0, ""
        first_open: set[str] | None = None
        open_: set[str] = set()
        terminal_after: dict[str, float] = {}
        while time.monotonic() - started < self.settle:
            ok, why, now_open = await asyncio.to_thread(
                self.observer.quiescent, acknowledged(self.hist.ops)
            )
            if now_open is not None:
                open_ = now_open
                first_open = set(now_open) if first_open is None else first_open
                for t in first_open - now_open - terminal_after.keys():
                    terminal_after[t] = round(self.hist.now() - self._final_heal_at, 3)
            stable = stable + 1 if ok else 0
            if stable >= 2:
                break
            self.state.phase = f"settling: {why}"
            await asyncio.sleep(0.5)
        took = time.monotonic() - started
        return {
            "quiescent": stable >= 2,
            "after_s": round(took, 3),
            "last": why,
            "liveness_bound_s": self.scenario.liveness_bound_s,
            "open_at_first_look": len(first_open or ()),
            "terminal_after_heal_s": terminal_after,
            "still_open": sorted(open_),
        }
