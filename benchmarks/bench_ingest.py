"""Ingest through Mosquitto: delta messages merged and persisted per second (goal ≥ 5,000).

A real ``cloud-controller run`` process and a real Mosquitto. Before the clock
starts, ``NODES`` nodes register (hello) and ``NODES * TASKS_PER_NODE`` tasks are
submitted through the REST API (as workflows of independent tasks) and placed by
the controller. Then every node reports, as an agent does, one ``deltas`` message
when it starts an attempt and one when the attempt succeeds, each with its outbox
sequence number (paho, QoS 1, payloads encoded beforehand). The clock stops when
the controller's store, read through its own SQLite connection (so only committed
state counts), has acknowledged every sequence number of every node and holds
every task as succeeded: merged, persisted and acknowledged.

Baseline, same run: the same with ``ingest.batch_max = 1``, one SQLite transaction
per message (on fewer tasks, to bound the bench's time).

The machine is shared: the note also gives the controller's own CPU time over the
measured window (messages per controller CPU-second, which other load does not
change much) and the load average, so a figure taken beside other work can be read.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
from _report import emit

from shared.clocks import HybridClock
from shared.crdt import AttemptStatus, TaskRecord, merge, set_status, start_attempt
from shared.protocol import (
    PROTOCOL_VERSION,
    Body,
    Capacity,
    Deltas,
    Envelope,
    Hello,
    encode,
    topic,
)
from simulations.testbed.broker import MosquittoBroker

ROOT = Path(__file__).resolve().parents[1]
NODES = 20
TASKS_PER_NODE = 500  # two messages each: 20,000 messages
BASELINE_TASKS_PER_NODE = 100


class BenchNode:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.clock = HybridClock(node_id)
        self.seq = 0

    def envelope(self, body: Body, *, seq: int | None = None) -> bytes:
        return encode(
            Envelope(
                type=body.TYPE,
                id=uuid.uuid4().hex[:16],
                sender=self.node_id,
                hlc=self.clock.now(time.time_ns() // 1_000_000).encode(),
                body=body,
                seq=seq,
            )
        )

    def hello(self) -> bytes:
        cap = Capacity(cpus=10_000.0, memory_mb=10_000_000.0, disk_mb=1e9)
        return self.envelope(
            Hello(
                tier="edge",  # type: ignore[arg-type]
                labels={},
                agent_version="bench",
                protocol_version=PROTOCOL_VERSION,
                capacity=cap,
            )
        )

    def reports(self, task_ids: list[str]) -> list[bytes]:
        """Per task: attempt started, then succeeded (one message each)."""
        out = []
        for task_id in task_ids:
            stamp = self.clock.now(time.time_ns() // 1_000_000)
            dot, started = start_attempt(
                TaskRecord(task_id), node=self.node_id, epoch=1, writer=self.node_id, hlc=stamp
            )
            self.seq += 1
            out.append(self.envelope(Deltas(records=(started,)), seq=self.seq))
            done = set_status(
                merge(TaskRecord(task_id), started),
                dot,
                AttemptStatus.SUCCEEDED,
                writer=self.node_id,
                hlc=stamp,
                exit_code=0,
            )
            self.seq += 1
            out.append(self.envelope(Deltas(records=(done,)), seq=self.seq))
        return out


def api(url: str, path: str, body: object = None) -> object:
    req = urllib.request.Request(
        url + path,
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={"Authorization": "Bearer bench", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.loads(resp.read())


def wait(pred, what: str, timeout_s: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench setup: {what} not reached")
        time.sleep(0.05)


def run_controller(
    workdir: Path, broker_port: int, batch_max: int
) -> tuple[subprocess.Popen[bytes], str]:
    workdir.mkdir(parents=True)
    config = workdir / "controller.toml"
    config.write_text(
        f"""
[controller]
state_dir = "state"
[api]
port = 0
token = "bench"
[broker]
port = {broker_port}
[ingest]
batch_max = {batch_max}
[health]
# The bench's nodes only publish; with pings every minute none is suspected
# partitioned during the run.
heartbeat_interval_s = 60.0
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloud.cli", "run", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "controller.log", "wb"),  # noqa: SIM115
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    ready = workdir / "state" / "controller.ready.json"
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            log = (workdir / "controller.log").read_text()
            raise SystemExit(f"controller did not start: {log}")
        time.sleep(0.05)
    # Ready means the API listens; wait for the broker subscription too.
    url = json.loads(ready.read_text())["api_url"]
    while True:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=5) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        time.sleep(0.05)
    return proc, url


def _cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def measure(workdir: Path, broker_port: int, batch_max: int, tasks: int) -> tuple[float, float]:
    """(messages/s, messages per controller CPU-second) over the measured window."""
    proc, url = run_controller(workdir, broker_port, batch_max)
    ctl = psutil.Process(proc.pid)
    db = sqlite3.connect(str(workdir / "state" / "controller.db"), timeout=30)
    clients: list[mqtt.Client] = []
    try:
        nodes = [BenchNode(f"bench{n:02d}") for n in range(NODES)]
        for node in nodes:
            c = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2, client_id=node.node_id, protocol=mqtt.MQTTv5
            )
            c.max_inflight_messages_set(200)
            c.connect("127.0.0.1", broker_port)
            c.loop_start()
            c.publish(topic(node.node_id, "hello"), node.hello(), qos=1)
            clients.append(c)
        wait(lambda: len(api(url, "/api/v1/nodes")["nodes"]) == NODES, "nodes registered")  # type: ignore[index]
        total = NODES * tasks
        for w in range(0, total, 1000):
            ids = [f"w{w}-t{i}" for i in range(min(1000, total - w))]
            api(
                url,
                "/api/v1/workflows",
                {
                    "id": f"w{w}",
                    "tasks": [
                        {"id": t, "command": ["true"], "resources": {"cpu": 0.01, "memory_mb": 1}}
                        for t in ids
                    ],
                },
            )
        placed_sql = "SELECT COUNT(*) FROM tasks WHERE node IS NOT NULL"
        wait(lambda: db.execute(placed_sql).fetchone()[0] == total, "all tasks placed")
        by_node: dict[str, list[str]] = {n.node_id: [] for n in nodes}
        for task_id, node_id in db.execute("SELECT task_id, node FROM tasks ORDER BY task_id"):
            by_node[node_id].append(task_id)
        prepared = [
            (c, topic(n.node_id, "up"), n.reports(by_node[n.node_id]))
            for c, n in zip(clients, nodes, strict=True)
        ]
        messages = sum(len(p) for _, _, p in prepared)
        acked = sum(n.seq for n in nodes)
        longest = max(len(p) for _, _, p in prepared)

        started, cpu_started = time.perf_counter(), _cpu_s(ctl)
        for i in range(longest):
            for c, name, msgs in prepared:
                if i < len(msgs):
                    c.publish(name, msgs[i], qos=1)
        while db.execute("SELECT COALESCE(SUM(acked_seq), 0) FROM peers").fetchone()[0] < acked:
            if proc.poll() is not None:
                raise SystemExit("controller died during the bench")
            time.sleep(0.01)
        elapsed, cpu = time.perf_counter() - started, _cpu_s(ctl) - cpu_started
        done = db.execute("SELECT COUNT(*) FROM tasks WHERE status = 'succeeded'").fetchone()[0]
        if done != total:
            raise SystemExit(f"only {done} of {total} tasks merged as succeeded")
        return messages / elapsed, messages / cpu
    finally:
        db.close()
        for c in clients:
            c.disconnect()
            c.loop_stop()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        broker = MosquittoBroker(workdir=Path(tmp) / "mosquitto").start()
        try:
            batched, per_cpu = measure(Path(tmp) / "batched", broker.port, 500, TASKS_PER_NODE)
            single, _ = measure(Path(tmp) / "single", broker.port, 1, BASELINE_TASKS_PER_NODE)
        finally:
            broker.stop()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    emit(
        "ingest: delta messages merged and persisted",
        measured=batched,
        unit="messages/s",
        goal=5_000,
        baseline=single,
        baseline_name="one SQLite transaction per message (ingest.batch_max = 1)",
        note=f"{NODES} nodes through Mosquitto, {2 * NODES * TASKS_PER_NODE} start/finish "
        "reports of placed tasks, synchronous=full; the clock stops when the store has "
        "acknowledged every sequence number and holds every task succeeded; "
        f"{per_cpu:,.0f} messages per controller CPU-second; load average {load} "
        f"on {os.cpu_count()} CPUs",
    )


if __name__ == "__main__":
    main()
