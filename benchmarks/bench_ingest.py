"""Ingest through Mosquitto: delta messages merged and persisted per second (goal ≥ 5,000).

A real ``cloud-controller run`` process and a real Mosquitto; ``NODES`` publishers
(paho, QoS 1, in this process) send ``deltas`` messages as agents do: per task one
message that creates and starts it (a locally submitted task) and one that finishes
it, each with its outbox sequence number. Payloads are encoded before the clock
starts. The clock stops when the controller's store (read through its own SQLite
connection, so only committed state counts) acknowledges every sequence number of
every node: merged, persisted and acknowledged.

Baseline, same run: the same controller with ``ingest.batch_max = 1``, one SQLite
transaction per message (on fewer messages, to bound the bench's time).
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
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from _report import emit

from shared.clocks import HybridClock
from shared.crdt import AttemptStatus, TaskRecord, merge, new_record, set_status, start_attempt
from shared.model import parse_task_spec
from shared.protocol import Deltas, Envelope, encode, topic
from simulations.testbed.broker import MosquittoBroker

ROOT = Path(__file__).resolve().parents[1]
NODES = 20
TASKS_PER_NODE = 500  # two messages each: 20,000 messages
BASELINE_TASKS_PER_NODE = 100


def payloads(node_id: str, tasks: int) -> list[bytes]:
    clock = HybridClock(node_id)
    out: list[bytes] = []
    seq = 0

    def message(delta: TaskRecord) -> bytes:
        nonlocal seq
        seq += 1
        env = Envelope(
            type="deltas",
            id=uuid.uuid4().hex[:16],
            sender=node_id,
            hlc=clock.now(time.time_ns() // 1_000_000).encode(),
            body=Deltas(records=(delta,)),
            seq=seq,
        )
        return encode(env)

    for i in range(tasks):
        task_id = f"{node_id}-t{i}"
        stamp = clock.now(time.time_ns() // 1_000_000)
        spec = parse_task_spec({"id": task_id, "command": ["true"]}).to_dict()
        created = new_record(task_id, spec, writer=node_id, hlc=stamp)
        dot, started = start_attempt(created, node=node_id, epoch=0, writer=node_id, hlc=stamp)
        first = merge(created, started)
        out.append(message(first))
        done = set_status(
            first, dot, AttemptStatus.SUCCEEDED, writer=node_id, hlc=stamp, exit_code=0
        )
        out.append(message(done))
    return out


def run_controller(workdir: Path, broker_port: int, batch_max: int) -> subprocess.Popen[bytes]:
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
    import urllib.request

    while True:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=5) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        time.sleep(0.05)
    return proc


def measure(workdir: Path, broker_port: int, batch_max: int, tasks: int) -> float:
    proc = run_controller(workdir, broker_port, batch_max)
    try:
        node_ids = [f"bench{n:02d}-{workdir.name}" for n in range(NODES)]
        prepared = {n: payloads(n, tasks) for n in node_ids}
        total_seq = sum(len(p) for p in prepared.values())
        clients = []
        for n in node_ids:
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=n, protocol=mqtt.MQTTv5)
            c.max_inflight_messages_set(200)
            c.connect("127.0.0.1", broker_port)
            c.loop_start()
            clients.append((c, topic(n, "up"), prepared[n]))
        db = sqlite3.connect(str(workdir / "state" / "controller.db"), timeout=30)
        started = time.perf_counter()
        for i in range(2 * tasks):
            for c, name, msgs in clients:
                c.publish(name, msgs[i], qos=1)
        while True:
            done = db.execute("SELECT COALESCE(SUM(acked_seq), 0) FROM peers").fetchone()[0]
            if done >= total_seq:
                break
            if proc.poll() is not None:
                raise SystemExit("controller died during the bench")
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
        tasks_done = db.execute("SELECT COUNT(*) FROM tasks WHERE status = 'succeeded'").fetchone()[
            0
        ]
        if tasks_done != NODES * tasks:
            raise SystemExit(f"only {tasks_done} of {NODES * tasks} tasks merged as succeeded")
        db.close()
        for c, *_ in clients:
            c.disconnect()
            c.loop_stop()
        return total_seq / elapsed
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        broker = MosquittoBroker(workdir=Path(tmp) / "mosquitto").start()
        try:
            batched = measure(Path(tmp) / "batched", broker.port, 500, TASKS_PER_NODE)
            single = measure(Path(tmp) / "single", broker.port, 1, BASELINE_TASKS_PER_NODE)
        finally:
            broker.stop()
    emit(
        "ingest: delta messages merged and persisted",
        measured=batched,
        unit="messages/s",
        goal=5_000,
        baseline=single,
        baseline_name="one SQLite transaction per message (ingest.batch_max = 1)",
        note=f"{NODES} publishers through Mosquitto, {2 * NODES * TASKS_PER_NODE} messages, "
        "synchronous=full; clock stops when the store has acknowledged every sequence number",
    )


if __name__ == "__main__":
    main()
