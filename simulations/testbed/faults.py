"""The fault half of a run: timeline steps applied to the proxies, network namespaces
and processes at their times (each recorded as a ``nemesis`` op, heals followed by a
convergence monitor), the ``--lossy`` baseline, and the final heal that lifts every
fault. A mixin of :class:`.runner.Testbed`: it reads the run's state from there."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from .launch import READY_TIMEOUT_S
from .proxy import FaultProxy, Lossy
from .scenario import CONTROLLER_OPS, Step

if TYPE_CHECKING:
    from .history import History
    from .netns import NetnsLink
    from .processes import AgentProcess, ControllerProcess
    from .runner import RunOptions

__all__ = ["Faults"]


def _lossy(params: Mapping[str, Any]) -> Lossy:
    """A ``lossy`` step's shares (each 0 by default, delay_ms 500)."""
    return Lossy(
        drop=float(params.get("drop", 0.0)),
        duplicate=float(params.get("duplicate", 0.0)),
        delay=float(params.get("delay", 0.0)),
        delay_ms=float(params.get("delay_ms", 500.0)),
    )


class Faults:
    """Applies the plan's fault steps (see the module doc)."""

    # the run's state, kept by Testbed
    options: RunOptions
    node_ids: list[str]
    proxies: dict[str, FaultProxy]
    ctl_proxy: FaultProxy | None
    links: dict[str, NetnsLink]
    agents: dict[str, AgentProcess]
    controller: ControllerProcess | None
    hist: History
    _final_heal_at: float

    if TYPE_CHECKING:  # Testbed's and Monitors' (declared only: a body would shadow them)

        def _note(self, text: str) -> None: ...
        def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...
        async def _measure_convergence(
            self, cause: str, nodes: tuple[str, ...], at: float
        ) -> None: ...

    async def _apply(self, step: Step) -> None:
        await asyncio.sleep(max(0.0, step.at - self.hist.now()))
        await self.apply_step(step)

    async def apply_step(self, step: Step) -> None:
        """Apply one timeline step now and record it as a nemesis op."""
        nodes = tuple(step.nodes) if isinstance(step.nodes, tuple) else ()
        if step.op in CONTROLLER_OPS:
            nodes = ()  # the plan resolved the default selector; these ops name no agent
        p = dict(step.params)
        op = step.op
        direction = str(p.get("direction", "both"))
        for n in nodes:
            proxy, link = self.proxies[n], self.links.get(n)
            if op == "partition":
                if link is not None and direction == "both":
                    await asyncio.to_thread(link.down)
                else:
                    proxy.cut(direction)  # type: ignore[arg-type]
            elif op == "heal":
                proxy.clear()
                if link is not None:
                    await asyncio.to_thread(link.up)
            elif op == "delay":
                proxy.set_delay(float(p["ms"]), float(p.get("jitter_ms", 0.0)))
            elif op == "throttle":
                proxy.set_bandwidth(float(p["bytes_per_s"]))
            elif op == "flap":
                proxy.flap(float(p["down_s"]), float(p["up_s"]))
            elif op == "reset":
                proxy.reset()
            elif op == "lossy":
                proxy.set_lossy(_lossy(p), direction)  # type: ignore[arg-type]
            elif op == "pause":
                self.agents[n].pause()
            elif op == "resume":
                self.agents[n].resume()
            elif op == "kill":
                self.agents[n].kill()
            elif op == "restart" and not self.agents[n].alive:
                self.agents[n].start()
        if op == "controller-cut":
            assert self.ctl_proxy is not None
            self.ctl_proxy.cut(direction)  # type: ignore[arg-type]
        elif op == "controller-heal":
            assert self.ctl_proxy is not None
            self.ctl_proxy.clear()
        self.hist.add("nemesis", "info", op, {"nodes": list(nodes), **p})
        self._note(f"{op} {','.join(nodes) or 'controller'}")
        if op == "controller-restart":
            await self._restart_controller(hard=bool(p.get("hard", True)))
        if op in ("heal", "restart", "resume"):
            self._spawn(self._measure_convergence(op, nodes, self.hist.now()))
        elif op in ("controller-heal", "controller-restart"):
            self._spawn(self._measure_convergence(op, tuple(self.node_ids), self.hist.now()))

    async def _restart_controller(self, *, hard: bool) -> None:
        assert self.controller is not None
        ctl = self.controller
        if hard:
            ctl.kill()
        else:
            await asyncio.to_thread(ctl.stop)
        ctl.start()
        await asyncio.to_thread(ctl.wait_ready, READY_TIMEOUT_S)
        self.hist.add("nemesis", "info", "controller-ready", {"starts": ctl.starts})

    def _baseline_loss(self) -> None:
        """``--lossy S``: every agent's link loses, duplicates and delays a share S of
        PUBLISH packets each way from the start to the final heal; other faults' heals
        keep it."""
        if not self.options.lossy:
            return
        share = self.options.lossy
        params = {"drop": share, "duplicate": share, "delay": share, "delay_ms": 500.0}
        for proxy in self.proxies.values():
            proxy.baseline = _lossy(params)
            proxy.clear()
        value = {"nodes": self.node_ids, **params, "baseline": True}
        self.hist.add("nemesis", "info", "lossy", value)

    async def _heal_all(self) -> None:
        for proxy in [*self.proxies.values(), *([self.ctl_proxy] if self.ctl_proxy else [])]:
            proxy.baseline = None
            proxy.clear()
        for link in self.links.values():
            await asyncio.to_thread(link.up)
        for agent in self.agents.values():
            agent.resume()
        restarted = [n for n, a in self.agents.items() if not a.alive]
        for n in restarted:
            self.agents[n].start()
        if self.controller is not None and not self.controller.alive:
            self.controller.start()
            await asyncio.to_thread(self.controller.wait_ready, READY_TIMEOUT_S)
        self._final_heal_at = self.hist.now()
        self.hist.add(
            "nemesis",
            "info",
            "heal",
            {"nodes": list(self.node_ids), "final": True, "restarted": restarted},
        )
        self._spawn(self._measure_convergence("final-heal", tuple(self.node_ids), self.hist.now()))
