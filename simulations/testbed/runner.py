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
4. **judge**: ledgers, journals and the controller's store are read
   (:mod:`.collect`), the checker runs, and the report and plots are written.

Workload tasks run the stdlib-only ledger task by its file path with
``CONTINUUM_LEDGER`` in their spec env, so they leave fsync'd execution records
that neither the agent nor the controller can edit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from cloud.config import PlacementConfig

from . import collect, ledger_task, local
from .embedded_broker import EmbeddedBroker
from .history import History, LiveState, NodeState
from .launch import Broker, TestbedError, start_broker
from .netns import NetnsLink, netns_available
from .observe import Observer, acknowledged
from .plan import Plan, PlannedSubmission, make_plan
from .processes import AgentProcess, ControllerProcess
from .proxy import FaultProxy, Lossy
from .scenario import CONTROLLER_OPS, Scenario, Step

__all__ = ["Broker", "History", "RunOptions", "Testbed", "TestbedError", "start_broker"]

TOKEN = "testbed-token"
READY_TIMEOUT_S = 30.0
REGISTER_TIMEOUT_S = 30.0  # plus half a second per agent
POLL_S = 0.25
SPEEDS = "speeds.json"  # node -> speed factor, read by the ledger task


def _lossy(params: Mapping[str, Any]) -> Lossy:
    """A ``lossy`` step's shares (each 0 by default, delay_ms 500)."""
    return Lossy(
        drop=float(params.get("drop", 0.0)),
        duplicate=float(params.get("duplicate", 0.0)),
        delay=float(params.get("delay", 0.0)),
        delay_ms=float(params.get("delay_ms", 500.0)),
    )


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


def _ledger_command(args: list[str]) -> list[str]:
    return [sys.executable, str(Path(ledger_task.__file__).resolve()), *args]


class Testbed:
    """One run of one scenario. Use :meth:`run` (async) once."""

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

    # -- workload ----------------------------------------------------------------------

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

    # -- faults --------------------------------------------------------------------------

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

    # -- observation -------------------------------------------------------------------------

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
