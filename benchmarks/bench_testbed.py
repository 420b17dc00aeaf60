"""Testbed benchmarks: convergence after a heal, and a reconnect storm, on real processes.

1. **Convergence after heal** vs offline duration (10 s, 60 s) and updates made
   while offline (~100, ~1,000). One run, four agents cut at the same instant,
   each its own case: agent-1 10 s / 100, agent-2 10 s / 1,000, agent-3 60 s /
   100, agent-4 60 s / 1,000. While cut, each agent is given work through its
   local API (each local submission is two record updates: creation and
   placement); a first long task holds its only executor slot so the records
   stay put and the figure is pure sync. The updates counted are the agent's
   outbox depth just before the heal. Measured by the testbed's monitor: time
   from the heal until the agent's outbox is empty and every record it holds
   has the controller's content hash. Goal: ≤ 2 s for 1,000 updates.

   Baseline, same run: a **full-state resync of the same records** — every
   record the agent then holds (not just the changed ones), published in
   batches of 64 at QoS 1 through a fault proxy and the same kind of broker to
   a receiver that merges each batch with ``shared.crdt`` and commits it to
   SQLite (synchronous=FULL), timed to the last commit. It has none of the
   system's protocol (acks, leases, placement), so it is a lower bound of a
   full-state design.

2. **Reconnect storm**: N agents (50 by default, ``CONTINUUM_BENCH_STORM_AGENTS``
   to scale down) cut together for 6 s, each making ~20 updates offline through
   its local API, and healed in the same instant; measured: time until the last
   agent has converged. Goal ≤ 10 s.

``BENCH_TESTBED_OFFLINE_S`` (default ``10,60``) and ``BENCH_TESTBED_UPDATES`` (default
``100,1000``) give the convergence cases' two offline durations and two update counts
(agent-1 the first of each, agent-2 the first duration and second count, and so on), to
scale the run down (a smoke test); the figures' names follow them.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from _report import emit

from shared.crdt import TaskRecord
from simulations.testbed import collect
from simulations.testbed.processes import AgentProcess
from simulations.testbed.proxy import FaultProxy
from simulations.testbed.runner import RunOptions, Testbed, start_broker
from simulations.testbed.scenario import parse_scenario

OFFLINE_S = [float(x) for x in os.environ.get("BENCH_TESTBED_OFFLINE_S", "10,60").split(",")]
UPDATES = [int(x) for x in os.environ.get("BENCH_TESTBED_UPDATES", "100,1000").split(",")]
#: node → (offline seconds, updates wanted): agent-1 10 s / 100, agent-2 10 s / 1,000,
#: agent-3 60 s / 100, agent-4 60 s / 1,000 at the defaults.
CASES = {
    f"agent-{n}": case
    for n, case in enumerate(((o, u) for o in OFFLINE_S for u in UPDATES), start=1)
}
CUT_AT = 3.0
STORM_UPDATES = 20  # per agent, made while cut
BATCH = 64


def _post(url: str, token: str, body: dict[str, Any]) -> int:
    req = urllib.request.Request(
        f"{url}/v1/tasks",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _local_work(agent: AgentProcess, node: str, updates: int) -> int:
    """Block the executor with one long task, then submit updates/2 tasks through the
    agent's local API (TCP, with the bearer token it keeps beside its ready file);
    returns how many submissions were accepted."""
    url = f"http://127.0.0.1:{int(agent.ready['api_port'])}"
    token = (agent.ready_file.parent / "api.token").read_text(encoding="ascii").strip()
    spec = {"command": ["sleep", "3600"], "timeout_s": 3600, "consistency": {"level": "causal"}}
    # Ids in the node's own namespace ('<node>:<name>'), the only ones it may create.
    accepted = int(_post(url, token, {**spec, "id": f"{node}:bench-block"}) == 201)
    for i in range(max(1, updates // 2 - 1)):
        body = {
            "id": f"{node}:bench-{i}",
            "command": ["true"],
            "consistency": {"level": "eventual"},
        }
        accepted += int(_post(url, token, body) == 201)
    return accepted


def convergence_scenario() -> dict[str, Any]:
    timeline = []
    for node, (offline, _) in CASES.items():
        timeline.append({"at": CUT_AT, "op": "partition", "nodes": node})
        timeline.append({"at": CUT_AT + offline, "op": "heal", "nodes": node})
    return {
        "kind": "testbed",
        "name": "bench-convergence",
        "duration_s": CUT_AT + max(o for o, _ in CASES.values()) + 1.0,
        "settle_s": 5,  # the goal is 2 s: 6 s after the last heal is enough
        "topology": {"agents": len(CASES)},
        "workload": {"rate_per_s": 0},
        "timeline": timeline,
        # No confirmed loss while cut and no re-placement triggers: the figure is the
        # sync of what was recorded offline, not the placement policy moving work.
        "controller": {
            "health": {"confirm_after_s": 600.0},
            "placement": {"mode": "hybrid_static"},
        },
        "agent": {"executor": {"max_concurrent": 1}},
    }


def run_convergence(tmp: Path) -> tuple[dict[str, dict[str, Any]], str]:
    depth: dict[str, int] = {}
    accepted: dict[str, int] = {}

    async def during(bed: Testbed) -> None:
        await asyncio.sleep(max(0.0, CUT_AT + 0.5 - bed.hist.now()))
        jobs = [asyncio.to_thread(_local_work, bed.agents[n], n, u) for n, (_, u) in CASES.items()]
        for node, count in zip(CASES, await asyncio.gather(*jobs), strict=True):
            accepted[node] = count
        for node, (offline, _) in sorted(CASES.items(), key=lambda kv: kv[1][0]):
            await asyncio.sleep(max(0.0, CUT_AT + offline - 0.3 - bed.hist.now()))
            journal = collect.agent_journal(bed.out, node)
            depth[node] = await asyncio.to_thread(collect.outbox_depth, journal)

    scenario = parse_scenario(convergence_scenario())
    bed = Testbed(scenario, RunOptions(out=tmp / "convergence"), during=during)
    asyncio.run(bed.run())
    assert bed.history is not None
    after = {
        op["value"]["node"]: op["value"]["after_s"]
        for op in bed.history.ops
        if op["process"] == "monitor" and op["value"].get("cause") == "heal"
    }
    out = {}
    for node in CASES:
        records = collect.journal_records(collect.agent_journal(bed.out, node))
        out[node] = {
            "updates": depth.get(node, 0),
            "accepted": accepted.get(node, 0),
            "after_s": after.get(node),
            "records": list(records.values()),
        }
    return out, bed.broker_kind


def full_state_resync(records: list[dict[str, Any]], workdir: Path) -> float:
    """Seconds to move ``records`` (full state) through a proxy and a broker into
    a SQLite store that merges each batch in one transaction."""
    broker, _ = start_broker("auto", workdir / "broker", {"bench-pub": "x", "bench-sub": "x"})
    db = sqlite3.connect(workdir / "full.db", check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE tasks (task_id TEXT PRIMARY KEY, record TEXT NOT NULL)")
    held: dict[str, TaskRecord] = {}
    done = threading.Event()
    stored = 0

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        nonlocal stored
        batch = [TaskRecord.from_dict(r) for r in json.loads(msg.payload)]
        with db:
            for rec in batch:
                prev = held.get(rec.task_id)
                merged = rec if prev is None else prev.merge(rec)
                held[rec.task_id] = merged
                db.execute(
                    "INSERT OR REPLACE INTO tasks VALUES (?, ?)",
                    (rec.task_id, json.dumps(merged.to_dict())),
                )
        stored += len(batch)
        if stored >= len(records):
            done.set()

    async def go() -> float:
        proxy = await FaultProxy("full", broker.host, broker.port).start()
        subscribed, connected = threading.Event(), threading.Event()
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sub")
        sub.username_pw_set("bench-sub", "x")
        sub.on_message = on_message
        sub.on_connect = lambda c, *_: c.subscribe("bench/full", qos=1)
        sub.on_subscribe = lambda *_: subscribed.set()
        sub.connect(broker.host, broker.port)
        sub.loop_start()
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-pub")
        pub.username_pw_set("bench-pub", "x")
        pub.on_connect = lambda *_: connected.set()
        pub.connect(proxy.listen_host, proxy.port)
        pub.loop_start()
        for ready in (subscribed, connected):  # the clock starts with both ends ready
            await asyncio.to_thread(ready.wait, 30)
        started = time.perf_counter()
        for i in range(0, len(records), BATCH):
            pub.publish("bench/full", json.dumps(records[i : i + BATCH]), qos=1)
        if not await asyncio.to_thread(done.wait, 60):
            raise RuntimeError(f"full-state resync stored {stored} of {len(records)} records")
        took = time.perf_counter() - started
        for client in (pub, sub):
            client.loop_stop()
            client.disconnect()
        await proxy.stop()
        return took

    try:
        return asyncio.run(go())
    finally:
        db.close()
        broker.stop()


def run_storm(tmp: Path, agents: int) -> tuple[float | None, list[float], int, float]:
    """Returns the time the last agent converged (``None`` unless all did), the
    convergence times of those that did, how many were measured, and the set-up time."""
    scenario = parse_scenario(
        {
            "kind": "testbed",
            "name": "bench-storm",
            "duration_s": 9,
            "settle_s": 12,  # 13 s after the heal: the goal is 10 s
            "topology": {"agents": agents},
            "workload": {"rate_per_s": 0},
            "timeline": [
                {"at": 2, "op": "partition", "nodes": "all"},
                {"at": 8, "op": "heal", "nodes": "all"},
            ],
            "controller": {
                "health": {"confirm_after_s": 600.0},
                "placement": {"mode": "hybrid_static"},
            },
            "agent": {"executor": {"max_concurrent": 1}},
        }
    )

    async def during(bed: Testbed) -> None:
        # Every agent records STORM_UPDATES updates while cut, so each has to sync.
        await asyncio.sleep(max(0.0, 2.5 - bed.hist.now()))
        await asyncio.gather(
            *(asyncio.to_thread(_local_work, a, n, STORM_UPDATES) for n, a in bed.agents.items())
        )

    bed = Testbed(scenario, RunOptions(out=tmp / "storm"), during=during)
    asyncio.run(bed.run())
    assert bed.history is not None
    after = [
        op["value"]["after_s"]
        for op in bed.history.ops
        if op["process"] == "monitor" and op["value"].get("cause") == "heal"
    ]
    converged = [a for a in after if a is not None]
    last = max(converged) if len(converged) == agents else None
    return last, converged, len(after), bed.timings["setup_s"]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-testbed-") as tmp_name:
        tmp = Path(tmp_name)
        cases, broker = run_convergence(tmp)
        for node, (offline, wanted) in CASES.items():
            c = cases[node]
            baseline = full_state_resync(c["records"], tmp / f"full-{node}")
            measured = c["after_s"]
            note = (
                f"{c['updates']} outbox updates ({c['accepted']} local submissions accepted, "
                f"{len(c['records'])} records), {broker} broker; baseline: full state of the "
                f"same records over the same broker kind, merge + SQLite commit"
            )
            emit(
                f"converge after heal, {offline:.0f} s offline, ~{wanted} updates",
                measured=measured if measured is not None else float("inf"),
                unit="s",
                goal=2.0 if wanted >= 1000 else None,
                direction="lower",
                baseline=baseline,
                baseline_name="full-state resync",
                note=note
                if measured is not None
                else "NOT converged within the settle time; " + note,
            )
        agents = int(os.environ.get("CONTINUUM_BENCH_STORM_AGENTS", "50"))
        last, converged, total, setup_s = run_storm(tmp, agents)
        slowest = f"{max(converged):.2f} s" if converged else "-"
        emit(
            f"reconnect storm: {agents} agents healed at once, last converged",
            measured=last if last is not None else float("inf"),
            unit="s",
            goal=10.0,
            direction="lower",
            note=f"{len(converged)} of {total} agents converged after the heal, each with "
            f"{STORM_UPDATES} updates made offline "
            f"(slowest of those: {slowest}); {broker} broker; set-up {setup_s:.0f} s",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
