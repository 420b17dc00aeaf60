"""A real agent and a real controller joined by the in-memory bus: no broker, no threads.

The controller is ``memory_bus.MemoryHarness``'s (``cloud.controller.Controller`` on a
test-moved monotonic clock). The agent is a real ``edge_agent.agent.Agent`` driven
through its own entry points on the test's thread: :meth:`AgentPair.step` hands it what
arrived (``handle``), runs its ``tick`` and lets the controller ingest what it published.
:class:`AgentLink` stands in for ``edge_agent.transport.Transport``: what the agent
publishes goes to the controller's inbox, the controller's ``down`` messages reach
``Agent.on_message``; a cut link is ``on_link(False)`` and loss, as the broker's
``clean_session=False`` queue is not modelled (the agent's durable outbox is what must
deliver, and does).

Time. The controller's clock moves only when the test moves it (:meth:`AgentPair.advance`).
The agent's monotonic clock (:class:`SkipClock`) is the real one plus what the test
skipped (:meth:`AgentPair.skip`): its cadences (heartbeats, digests, the resend and
silence bounds, connectivity) are crossed without sleeping, while the task processes it
starts run in real time (their watchdogs read ``CLOCK_MONOTONIC``: a skip only makes a
strong attempt's fence later, so fencing stays with the broker-backed, real-process tests
in ``tests/agent``, with transport, ``kill -9`` and the watchdog). Wall clocks are real on
both sides (HLC stamps must agree within the skew bound). Waits are on conditions
(:meth:`AgentPair.run_until`), never on guesses of how long something takes.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent_harness import kill_tasks_of
from memory_bus import MemoryHarness

from edge_agent.agent import Agent
from edge_agent.config import parse_config
from edge_agent.inbox import ApiCall
from shared.crdt import TaskRecord
from shared.protocol import Body, Envelope, Place, decode, encode, topic

WAIT_S = 60.0
#: The agent's sections as the broker-backed e2e tests configure them (``agent_harness``).
AGENT_CONFIG: dict[str, dict[str, Any]] = {
    "node": {"tier": "edge"},
    "broker": {"host": "127.0.0.1"},  # never dialled: the link is an AgentLink
    "discovery": {"enabled": False},
    "autonomy": {"period_s": 3.0, "telemetry_s": 1.0, "lease_margin_s": 0.2},
    "executor": {
        "kill_grace_s": 1.0,
        "shutdown_grace_s": 0.5,
        "min_free_memory_mb": 1.0,
        "max_cpu_percent": 100.0,
    },
}


class SkipClock:
    """The agent's :class:`~edge_agent.clock.Clock`: real time, plus ``skipped`` seconds
    on the monotonic side only."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def mono(self) -> float:
        return time.monotonic() + self.skipped

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000


class AgentLink:
    """The agent's transport on the bus (what ``Uplink`` and the bus call), and what the
    test does to the link: :meth:`cut`, :meth:`partition`, :meth:`heal`."""

    def __init__(self, pair: AgentPair) -> None:
        self.pair = pair
        self.connected = False
        self.reconnects = 0
        self.resubscribes = 0
        self.up_open = True  # the controller hears the agent
        self.down_open = True  # the agent hears the controller
        self.published: list[tuple[str, Envelope]] = []  # (kind, envelope): all it sent
        #: what the agent does not hear (``drop_down(topic, payload)`` -> True drops): a
        #: message lost inside a live session
        self.drop_down: Callable[[str, bytes], bool] | None = None

    # -- what the agent's uplink calls (edge_agent.transport.Transport's methods) ----
    def publish(self, topic_: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        if not self.connected:
            return False
        self.published.append((topic_.rsplit("/", 1)[-1], decode(payload)))
        if self.up_open and self.pair.hears(topic_, payload):
            self.pair.h.memory.inbox.append((topic_, payload))
        return True

    def resubscribe(self) -> None:
        self.resubscribes += 1

    def reconnect(self) -> None:
        """A new connection at once (the broker is there): down, then up again."""
        if self.connected:
            self._set(False)
            self._set(True)

    def stop(self, last: tuple[str, bytes] | None = None) -> None:
        self.connected = False

    # -- what the bus calls --------------------------------------------------------
    def deliver(self, topic_: str, payload: bytes) -> None:
        if self.down_open and not (self.drop_down and self.drop_down(topic_, payload)):
            self.pair.agent.on_message(topic_, payload)

    # -- what the test does --------------------------------------------------------
    def connect(self) -> None:
        if not self.connected:
            self._set(True)

    def cut(self, *, will: bool = False) -> None:
        """The connection is lost: the agent is told (``on_link(False)``); with ``will``
        the broker publishes the agent's last will for it, as on a keep-alive expiry."""
        if self.connected:
            self._set(False)
        if will:
            self.pair.h.memory.inbox.append(self.pair.agent.uplink.offline_presence())

    def partition(self, *, up: bool = True, down: bool = True) -> None:
        """The connection stays up but messages are lost: ``up`` what the agent sends,
        ``down`` what the controller sends (a broker that silently stopped delivering)."""
        self.up_open, self.down_open = not up, not down

    def heal(self) -> None:
        self.up_open = self.down_open = True

    def _set(self, up: bool) -> None:
        self.connected = up
        if up:
            self.reconnects += 1
        self.pair.agent.on_link(up)


class AgentPair:
    """One real agent (node ``node_id``) beside ``h``'s controller and scripted nodes."""

    def __init__(self, h: MemoryHarness, workdir: Path, node_id: str = "edge-1", **sections: Any):
        self.h = h
        self.node_id = node_id
        self.clock = SkipClock()
        data = {k: dict(v) for k, v in AGENT_CONFIG.items()}
        data["node"].update(id=node_id, state_dir=str(workdir / node_id / "state"))
        for name, values in sections.items():
            data.setdefault(name, {}).update(values)
        self.cfg = parse_config(data, env={})
        #: what the controller does not hear (``filter(topic, payload)`` -> False drops)
        self.filter: Callable[[str, bytes], bool] | None = None
        self.agent = self._new_agent()
        self.link = AgentLink(self)
        self.agent.uplink.transport = self.link  # type: ignore[assignment]
        h.memory.nodes[node_id] = self.link

    def _new_agent(self) -> Agent:
        agent = Agent(self.cfg, clock=self.clock, rng=random.Random(7))
        agent.prepare()
        return agent

    def hears(self, topic_: str, payload: bytes) -> bool:
        return self.filter is None or self.filter(topic_, payload)

    # -- driving -------------------------------------------------------------------
    def step(self) -> bool:
        """One round: the agent handles what arrived and ticks, then the controller
        ingests what the agent (and scripted nodes) published. Whether anything moved."""
        agent = self.agent
        moved = False
        while True:
            try:
                event = agent.inbox.get_nowait()
            except Exception:  # queue.Empty
                break
            agent.handle(event)
            moved = True
        agent.core.safely(agent.tick)
        moved = self.h.pump(0.0) > 0 or moved
        return moved

    def run_until(self, pred: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
        """Step until ``pred`` holds (resting a moment when nothing moved: a task process
        runs in real time)."""
        deadline = time.monotonic() + timeout_s
        while not (value := pred()):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            if not self.step():
                time.sleep(0.01)
        return value

    def settle(self, rounds: int = 5) -> None:
        """Step until nothing moves for ``rounds`` steps in a row (messages in flight are
        handled; timers do not fire unless due)."""
        quiet = 0
        while quiet < rounds:
            quiet = 0 if self.step() else quiet + 1

    def skip(self, dt: float) -> None:
        """The agent's monotonic clock jumps ``dt`` (the controller's stays); what that
        makes due is sent and answered."""
        self.clock.skipped += dt
        self.settle(2)

    def skip_until(
        self, pred: Callable[[], Any], what: str, step_s: float = 0.5, limit_s: float = 600.0
    ) -> Any:
        """Skip the agent's clock ``step_s`` at a time until ``pred`` holds (at most
        ``limit_s`` of skipped time, and :data:`WAIT_S` of real time)."""
        start, deadline = self.clock.skipped, time.monotonic() + WAIT_S
        while not (value := pred()):
            if self.clock.skipped - start > limit_s or time.monotonic() > deadline:
                raise AssertionError(f"{what}: not reached")
            self.skip(step_s)
        return value

    def advance(self, dt: float) -> None:
        """Both clocks move ``dt``; the controller ticks."""
        self.clock.skipped += dt
        self.h.tick(dt)
        self.step()

    def connect(self) -> None:
        """Bring the link up and wait until the controller knows the node online and the
        agent is connected."""
        self.link.connect()
        reg = self.h.controller.registry
        self.run_until(
            lambda: (
                (e := reg.get(self.node_id)) is not None
                and e.registered
                and e.presence == "online"
                and self.agent.connectivity == "connected"
            ),
            "the agent registered and connected",
        )

    # -- the agent's side ----------------------------------------------------------
    def api(self, method: str, path: str, body: object | None = None) -> tuple[int, Any]:
        """A local API call, handled on the core's thread (the test's) as ``run`` would."""
        raw = b"" if body is None else json.dumps(body).encode()
        call = ApiCall(method, path, raw)
        self.agent.handle(call)
        return call.result

    def task_status(self, task_id: str) -> str | None:
        code, body = self.api("GET", f"/v1/tasks/{task_id}")
        return body["status"] if code == 200 else None

    def status(self) -> dict[str, Any]:
        return self.agent.status()

    def events(self, kind: str) -> list[dict[str, Any]]:
        rows = self.agent.core.journal.db.execute(
            "SELECT task_id, mono, data FROM events WHERE kind = ? ORDER BY id", (kind,)
        ).fetchall()
        return [{"task_id": t, "mono": m, **json.loads(d or "{}")} for t, m, d in rows]

    def sent(self, kind: str, type_: str | None = None) -> list[Envelope]:
        """What the agent published on ``kind`` (of ``type_``), heard or not."""
        return [e for k, e in self.link.published if k == kind and type_ in (None, e.type)]

    def sent_record(self, task_id: str) -> TaskRecord | None:
        """The record as the deltas the agent published (heard or not) build it: what a
        controller that merged everything it was sent would hold."""
        rec: TaskRecord | None = None
        for env in self.sent("up", "deltas"):
            for delta in env.body.records:
                if delta.task_id == task_id:
                    rec = delta if rec is None else rec.merge(delta)
        return rec

    # -- the controller's side -----------------------------------------------------
    def submit(self, task: dict[str, Any]) -> None:
        """Submit to the controller and wait until the agent holds the placement."""
        self.h.controller.submit_task(task)
        self.run_until(lambda: self.agent.replica.get(task["id"]) is not None, "the placement")

    def task(self, task_id: str) -> dict[str, Any]:
        return self.h.controller.get_task(task_id)

    def upstream(self, task_id: str) -> str | None:
        """The task's status at the controller (``None``: unknown there)."""
        with contextlib.suppress(Exception):
            return str(self.task(task_id)["status"])
        return None

    def down(self, type_: str, body: Body) -> str:
        """A message to the agent as the controller sends it (its id, its HLC), for what
        the real controller only does in a state hard to reach here (a re-sent or stale
        placement, a digest after losing its state)."""
        ctl = self.h.controller
        env = Envelope(
            type=type_,
            id=uuid.uuid4().hex,
            sender=ctl.node_id,
            hlc=ctl.clock.now(ctl.wall_ms()).encode(),
            body=body,
        )
        self.link.deliver(topic(self.node_id, "down"), encode(env))
        return env.id

    def place(self, task: dict[str, Any], *, epoch: int = 1, level: str = "causal") -> None:
        self.down(
            "place", Place(task_id=task["id"], epoch=epoch, spec=task, level=level, lease_s=None)
        )

    # -- the end -------------------------------------------------------------------
    def close(self) -> None:
        """Stop running attempts (their outcomes handled), then release the journal and
        any process group left behind. A bug caught by the core's safety net fails here."""
        agent = self.agent
        core = agent.core
        with contextlib.suppress(Exception):
            for attempt in list(core.running):
                core.executor.stop(attempt, "agent_shutdown")
            end = time.monotonic() + 10.0
            while core.running and time.monotonic() < end:
                agent.core.safely(agent.tick)
                time.sleep(0.02)
        kill_tasks_of(core.state_dir / "runs")
        core.journal.close()
        assert core.counters["internal_errors"] == 0, dict(core.counters)
