"""Run one scenario against real processes and judge it from ground truth.

The order of a run (every step is recorded in ``history.jsonl``, Jepsen-style,
with the monotonic offset ``time`` from the start of the workload and the host
clock ``wall``):

1. **set up**: a broker (Mosquitto when installed, else the embedded amqtt
   one), one :class:`FaultProxy` for the controller and one per agent, the
   controller and N agents as real processes (``cloud-controller run``,
   ``edge-agent run``) with generated configs; wait until every agent has
   registered with the controller;
2. **workload and faults**: the plan's submissions go to the controller's REST
   API at their times (``submit`` invoke → ok | fail | info), the timeline's
   steps are applied at theirs (``nemesis`` info ops); after every heal a
   monitor measures how long the healed agents take to converge (``converged``);
3. **heal and settle**: at ``duration_s`` every fault is lifted, killed agents
   are restarted, and the run waits (at most ``settle_s``) for quiescence: every
   acknowledged task terminal at the controller, every agent's outbox empty and
   its records equal to the controller's;
4. **judge**: the ledgers are read and every process's records collected
   through its ``dump`` command (:mod:`.collect`), the checker runs, and the
   report and plots are written.

Workload tasks run the stdlib-only ledger task by its file path with
``CONTINUUM_LEDGER`` in their spec env, so they leave fsync'd execution records
that neither the agent nor the controller can edit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from cloud.config import PlacementConfig

from . import collect
from .embedded_broker import EmbeddedBroker
from .faults import Faults
from .history import History, LiveState, NodeState
from .launch import READY_TIMEOUT_S, TOKEN, Broker, TestbedError, start_broker
from .monitor import Monitors
from .netns import NetnsLink, netns_available
from .observe import POLL_S, Observer
from .plan import Plan, make_plan
from .processes import AgentProcess, ControllerProcess
from .proxy import FaultProxy
from .scenario import Scenario
from .submit import SPEEDS, Submitter

__all__ = ["Broker", "History", "RunOptions", "Testbed", "TestbedError", "start_broker"]

REGISTER_TIMEOUT_S = 30.0  # plus half a second per agent


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What ``continuum testbed run`` was asked for."""

    out: Path
    agents: int | None = None
    broker: str = "auto"  # auto | mosquitto | embedded
    netns: bool = False
    seed: int | None = None
    duration_s: float | None = None  # override (tests, benchmarks)
    settle_s: float | None = None
    lease_s: float | None = None  # strong lease for the controller (the soak's 3-6 s)
    lossy: float | None = None  # every agent link lossy (this share each) until the final heal
    mode: str | None = None  # the controller's placement mode (default: the scenario's)


class Testbed(Submitter, Faults, Monitors):
    """One run of one scenario. Use :meth:`run` (async) once. The workload, the faults
    and the monitors are mixins (:mod:`.submit`, :mod:`.faults`, :mod:`.monitor`) over
    the state this class keeps."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        scenario: Scenario,
        options: RunOptions,
        *,
        on_event: Callable[[LiveState], None] | None = None,
        during: Callable[[Testbed], Awaitable[Any]] | None = None,
    ) -> None:
        """``during`` (benchmarks) runs alongside the workload, from the start of
        the clock; the heal waits for it and its exceptions propagate."""
        self.scenario = scenario
        self.options = options
        self.plan: Plan = make_plan(scenario, agents=options.agents, seed=options.seed)
        self.duration = options.duration_s or scenario.duration_s
        self.settle = options.settle_s or scenario.settle_s
        self.out = options.out
        self.node_ids = [n.node_id for n in self.plan.nodes]
        self.state = LiveState(duration=self.duration, planned=len(self.plan.submissions))
        self.state.nodes = {n: NodeState() for n in self.node_ids}
        self.on_event = on_event
        self.during = during
        self.broker: Broker | None = None
        self.broker_kind = ""
        self.controller: ControllerProcess | None = None
        self.ctl_proxy: FaultProxy | None = None
        self.agents: dict[str, AgentProcess] = {}
        self.proxies: dict[str, FaultProxy] = {}
        self.links: dict[str, NetnsLink] = {}
        self.history: History | None = None
        self.timings: dict[str, float] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.observer = Observer(self.out, self.node_ids, max_age_s=POLL_S / 2)
        self._final_heal_at = 0.0

    # -- helpers -------------------------------------------------------------------

    @property
    def hist(self) -> History:
        assert self.history is not None
        return self.history

    def _note(self, text: str) -> None:
        self.state.recent = [*self.state.recent[-5:], f"{self.hist.now():6.1f}s {text}"]
        self.state.notes += 1
        self._refresh()

    def _refresh(self) -> None:
        if self.on_event is not None:
            self.state.faults = {n: p.faults for n, p in self.proxies.items() if p.faults}
            if self.ctl_proxy is not None and self.ctl_proxy.faults:
                self.state.faults["controller"] = self.ctl_proxy.faults
            for n, a in self.agents.items():
                self.state.nodes[n].alive = a.alive
            self.on_event(self.state)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def api_url(self) -> str:
        assert self.controller is not None
        return self.controller.api_url

    # -- set up ----------------------------------------------------------------------

    @property
    def lease_s(self) -> float | None:
        """The strong lease this run imposes: ``--lease-s``, else the random nemesis'
        draw (``None``: the scenario's own ``[controller.consistency]``)."""
        return self.options.lease_s or self.plan.extra.get("lease_s")

    def controller_overrides(self) -> dict[str, Any]:
        """The scenario's ``[controller]`` tables with this run's lease merged in."""
        out = dict(self.scenario.controller)
        if self.lease_s is not None:
            out["consistency"] = {**out.get("consistency", {}), "lease_s": self.lease_s}
        if self.options.mode is not None:
            out["placement"] = {**out.get("placement", {}), "mode": self.options.mode}
        return out

    @property
    def mode(self) -> str:
        """The controller's placement mode in this run."""
        placement = self.controller_overrides().get("placement", {})
        return str(placement.get("mode") or PlacementConfig().mode)

    @property
    def speeds(self) -> dict[str, float]:
        """Node → speed factor, when any agent is not of speed 1 (else empty: the
        ledger task then needs no speeds file)."""
        speeds = {n.node_id: n.speed for n in self.plan.nodes}
        return speeds if any(v != 1.0 for v in speeds.values()) else {}

    async def _setup(self) -> None:
        t = time.monotonic()
        self.state.phase = "starting broker"
        self._refresh()
        users = {n: n for n in [*self.node_ids, "controller"]}
        self.broker, protocol = await asyncio.to_thread(
            start_broker, self.options.broker, self.out / "broker", users
        )
        self.broker_kind = "embedded" if isinstance(self.broker, EmbeddedBroker) else "mosquitto"
        b = self.broker
        seed = self.plan.seed
        self.ctl_proxy = await FaultProxy(
            "controller", b.host, b.port, seed=seed, mqtt=True
        ).start()
        if self.options.netns:
            why = netns_available()
            if why:
                raise TestbedError(f"--netns: {why}")
        for i, node in enumerate(self.plan.nodes, start=1):
            listen = "127.0.0.1"
            prefix: list[str] = []
            if self.options.netns:
                link = NetnsLink(i, os.getpid() % 1000).create()
                self.links[node.node_id] = link
                listen, prefix = link.host_ip, link.exec_prefix
            proxy = FaultProxy(
                node.node_id, b.host, b.port, listen_host=listen, seed=seed + i, mqtt=True
            )
            self.proxies[node.node_id] = await proxy.start()
            self.agents[node.node_id] = AgentProcess.create(
                node,
                self.out / "agents" / node.node_id,
                broker_host=listen,
                broker_port=proxy.port,
                overrides=self.scenario.agent,
                argv_prefix=prefix,
            )
        self.state.phase = "starting controller"
        self._refresh()
        self.controller = ControllerProcess.create(
            self.out / "controller",
            broker_host=self.ctl_proxy.listen_host,
            broker_port=self.ctl_proxy.port,
            mqtt_protocol=protocol,
            token=TOKEN,
            overrides=self.controller_overrides(),
        )
        self.controller.start()
        await asyncio.to_thread(self.controller.wait_ready, READY_TIMEOUT_S)
        self.state.phase = f"starting {len(self.agents)} agents"
        self._refresh()
        for agent in self.agents.values():
            agent.start()
        await asyncio.gather(
            *(
                asyncio.to_thread(a.wait_ready, READY_TIMEOUT_S + 0.5 * len(self.agents))
                for a in self.agents.values()
            )
        )
        self.state.phase = "waiting for registration"
        self._refresh()
        await self._wait_registered()
        self.timings["setup_s"] = time.monotonic() - t

    async def _wait_registered(self) -> None:
        deadline = time.monotonic() + REGISTER_TIMEOUT_S + 0.5 * len(self.node_ids)
        missing = set(self.node_ids)
        while time.monotonic() < deadline:
            nodes = await self._nodes()
            missing = set(self.node_ids) - {n["node_id"] for n in nodes if n.get("registered")}
            if not missing:
                return
            await asyncio.sleep(POLL_S)
        raise TestbedError(
            f"agents never registered with the controller: {', '.join(sorted(missing))}"
        )

    # -- the run ---------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        """Run the scenario and return what :func:`.report.judge` needs."""
        if (self.out / collect.HISTORY).exists():
            raise TestbedError(f"{self.out} already holds a run; choose another --out")
        self.out.mkdir(parents=True, exist_ok=True)
        collect.ledger_dir(self.out).mkdir(exist_ok=True)
        self._write_plan()
        if self.speeds:
            (self.out / SPEEDS).write_text(json.dumps(self.speeds), encoding="utf-8")
        self.history = History(self.out / collect.HISTORY)
        t_start = time.monotonic()
        settle: dict[str, Any] = {}
        state: dict[str, Any] = {}
        t_wall0 = time.time()
        try:
            async with aiohttp.ClientSession() as self._session:
                await self._setup()
                self.hist.start_clock()
                self._baseline_loss()
                t_wall0 = time.time()
                self.hist.add(
                    "testbed", "info", "start", {"nodes": self.node_ids, "broker": self.broker_kind}
                )
                self.state.phase = "workload + faults"
                poller = self._spawn(self._poll_status())
                work = [self._spawn(self._submit(s)) for s in self.plan.submissions]
                faults = [self._spawn(self._apply(s)) for s in self.plan.steps]
                extra = self._spawn(self.during(self)) if self.during is not None else None
                await asyncio.sleep(max(0.0, self.duration - self.hist.now()))
                await asyncio.gather(*faults, return_exceptions=True)
                if extra is not None:
                    await extra
                self.state.phase = "healing"
                self._refresh()
                self.timings["workload_s"] = self.hist.now()
                await self._heal_all()
                await asyncio.gather(*work, return_exceptions=True)
                self.state.phase = "settling"
                t_settle = time.monotonic()
                settle = await self._settle()
                self.timings["settle_s"] = time.monotonic() - t_settle
                self.hist.add("testbed", "info", "settled", settle)
                self._note(f"settled: {settle['last']} after {settle['after_s']:.1f} s")
                poller.cancel()
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                self.state.phase = "collecting"
                self._refresh()
                state = await asyncio.to_thread(collect.collect_state, self.out, self.node_ids)
                self.hist.add("testbed", "info", "end", {})
        finally:
            t_down = time.monotonic()
            await self._teardown()
            self.timings["teardown_s"] = time.monotonic() - t_down
            if self.history is not None:
                self.history.close()
        self.timings["total_s"] = time.monotonic() - t_start
        result = {
            "state": state,
            "settle": settle,
            "t0_wall": t_wall0,
            "end_wall": time.time(),
            "bytes": self._bytes(),
            "broker": self.broker_kind,
            "timings": self.timings,
            "processes": self._process_summary(),
        }
        (self.out / collect.COLLECTED).write_text(json.dumps(result, default=str), "utf-8")
        return result

    def _bytes(self) -> dict[str, dict[str, int]]:
        out = {n: p.stats.to_dict() for n, p in self.proxies.items()}
        if self.ctl_proxy is not None:
            out["controller"] = self.ctl_proxy.stats.to_dict()
        return out

    def _process_summary(self) -> dict[str, Any]:
        procs = {n: a.starts for n, a in self.agents.items()}
        if self.controller is not None:
            procs["controller"] = self.controller.starts
        return {"starts": procs}

    def _write_plan(self) -> None:
        plan = {
            "scenario": self.scenario.name,
            "path": self.scenario.path,
            "seed": self.plan.seed,
            "duration_s": self.duration,
            "settle_s": self.settle,
            "lease_s": self.lease_s,
            "lossy": self.options.lossy,
            "mode": self.mode,
            "nodes": [asdict(n) for n in self.plan.nodes],
            "steps": [
                {"at": s.at, "op": s.op, "nodes": list(s.nodes), "params": dict(s.params)}
                for s in self.plan.steps
            ],
            "submissions": [
                {"at": s.at, "request": s.request, "kind": s.kind, "tasks": list(s.tasks)}
                for s in self.plan.submissions
            ],
        }
        (self.out / "plan.json").write_text(json.dumps(plan, indent=1), encoding="utf-8")

    async def _teardown(self) -> None:
        """Stop everything started, in reverse order, never raising."""
        self.state.phase = "stopping"
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for agent in self.agents.values():
            agent.terminate()
        for agent in self.agents.values():
            await asyncio.to_thread(agent.stop, 10.0)
        if self.controller is not None:
            await asyncio.to_thread(self.controller.stop, 10.0)
        for proxy in [*self.proxies.values(), *([self.ctl_proxy] if self.ctl_proxy else [])]:
            with contextlib.suppress(Exception):
                await proxy.stop()
        if self.broker is not None:
            await asyncio.to_thread(self.broker.stop)
        for link in self.links.values():
            await asyncio.to_thread(link.destroy)
