"""Ingest through Mosquitto: delta messages merged and persisted per second (goal ≥ 5,000).

A real ``cloud-controller run`` process and a real Mosquitto. Before the clock
starts, ``NODES`` nodes register (hello) and ``NODES * TASKS_PER_NODE`` tasks are
submitted through the REST API (as workflows of independent tasks) and placed by
the controller. Then every node reports, as an agent does, one ``deltas`` message
when it starts an attempt and one when the attempt succeeds, each with its outbox
sequence number: a QoS 1 ``PUBLISH`` on its own MQTT 5 connection, at most
``INFLIGHT`` unacknowledged at a time or the broker's Receive Maximum if lower (the
testbed's Mosquitto: 100), each message written with its own ``send``. The clock
stops when the controller's store, read through its own SQLite connection (so only
committed state counts), has acknowledged every sequence number of every node and
holds every task as succeeded: merged, persisted and acknowledged.

The nodes are a load generator, not agents: on a real fleet each runs on its own
machine, here all 20 share the controller's cores. So they cost little
(:class:`Publisher`): every ``PUBLISH`` frame is encoded before the clock starts
and one thread writes them and reads the broker's ``PUBACK``s (each checked) for
all 20 connections. Until issue 14's session 7 they were 20 paho clients, 20
network threads, which cost the machine about as much CPU per message as the
controller (90-130 us, measured beside it) and so took that CPU from it, and
which kept up to 200 unacknowledged (paho ignores the Receive Maximum); the note
gives what the bench process costs now.

Baseline, same run: the same with ``ingest.batch_max = 1``, one SQLite transaction
per message (on fewer tasks, to bound the bench's time).

The machine is shared: the note also gives the controller's own CPU time over the
measured window (messages per controller CPU-second, which other load does not
change much) and the load average, so a figure taken beside other work can be read.

Environment (a smaller run, e.g. a smoke test; the defaults are the figure above):
``BENCH_INGEST_TASKS_PER_NODE`` (500) and ``BENCH_INGEST_BASELINE_TASKS_PER_NODE`` (100),
the tasks each node reports on in the measured run and in the baseline's.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

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
TASKS_PER_NODE = int(os.environ.get("BENCH_INGEST_TASKS_PER_NODE", "500"))  # 20,000 messages
BASELINE_TASKS_PER_NODE = int(os.environ.get("BENCH_INGEST_BASELINE_TASKS_PER_NODE", "100"))
INFLIGHT = 200  # unacknowledged PUBLISHes per node (the broker's Receive Maximum if lower)


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


def _varint(n: int) -> bytes:
    """An MQTT variable byte integer."""
    out = bytearray()
    while True:
        n, byte = n >> 7, n & 0x7F
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def publish_frame(topic_: str, payload: bytes, packet_id: int) -> bytes:
    """An MQTT 5 QoS 1 ``PUBLISH`` (no properties), as paho encodes one."""
    rest = _string(topic_) + struct.pack("!H", packet_id) + b"\x00" + payload
    return b"\x32" + _varint(len(rest)) + rest


#: CONNACK property id -> its size (-1: a 2-byte length, then that many bytes; -2: a pair).
_PROPERTY_SIZES = {0x11: 4, 0x12: -1, 0x13: 2, 0x15: -1, 0x16: -1, 0x1A: -1, 0x1C: -1, 0x1F: -1,
                   0x21: 2, 0x22: 2, 0x24: 1, 0x25: 1, 0x26: -2, 0x27: 4, 0x28: 1, 0x29: 1,
                   0x2A: 1}  # fmt: skip


class Publisher:
    """One node's MQTT 5 connection: what the bench's nodes need and nothing else
    (``CONNECT``, QoS 1 ``PUBLISH``, the broker's ``PUBACK``s). Frames are built
    beforehand (:func:`publish_frame`); :func:`publish_all` drives every node's
    connection from one thread."""

    def __init__(self, node_id: str, port: int) -> None:
        self.node_id = node_id
        self.sock = socket.create_connection(("127.0.0.1", port))
        body = b"\x00\x04MQTT\x05\x02\x00\x00\x00" + _string(node_id)  # clean start, no keepalive
        self.sock.sendall(b"\x10" + _varint(len(body)) + body)
        self.buf = b""
        kind, packet = self._packet()
        if kind != 0x20 or packet[1] != 0:
            raise SystemExit(f"bench: {node_id} not connected ({kind:#x} {packet[:2].hex()})")
        self.window = min(INFLIGHT, _receive_maximum(packet[2:]))
        self.inflight = 0
        self.acked = 0
        self.next_id = 1

    def frame(self, topic_: str, payload: bytes) -> bytes:
        """The next ``PUBLISH`` of this connection (packet ids 1..65535 in turn: the
        window is far smaller, so an id is never reused while unacknowledged)."""
        packet_id, self.next_id = self.next_id, self.next_id % 65535 + 1
        return publish_frame(topic_, payload, packet_id)

    def send(self, frame: bytes) -> None:
        self.sock.sendall(frame)
        self.inflight += 1

    def _packet(self) -> tuple[int, bytes]:
        """The next whole packet from the broker (blocking)."""
        while True:
            got = _split(self.buf)
            if got is not None:
                kind, packet, self.buf = got
                return kind, packet
            data = self.sock.recv(65536)
            if not data:
                raise SystemExit(f"bench: the broker closed {self.node_id}'s connection")
            self.buf += data

    def read_acks(self) -> None:
        """Take the ``PUBACK``s that arrived (the socket is readable); any failure or
        other packet ends the bench."""
        data = self.sock.recv(65536)
        if not data:
            raise SystemExit(f"bench: the broker closed {self.node_id}'s connection")
        self.buf += data
        while (got := _split(self.buf)) is not None:
            kind, packet, self.buf = got
            if kind != 0x40 or (len(packet) > 2 and packet[2] >= 0x80):
                raise SystemExit(f"bench: {self.node_id} got {kind:#x} {packet[:3].hex()}")
            self.inflight -= 1
            self.acked += 1

    def publish_wait(self, topic_: str, payload: bytes) -> None:
        """One message, waiting for its ``PUBACK``."""
        self.send(self.frame(topic_, payload))
        while self.inflight:
            self.read_acks()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"\xe0\x00")  # DISCONNECT, normal
        self.sock.close()


def _split(buf: bytes) -> tuple[int, bytes, bytes] | None:
    """(packet type, packet body, the rest) of the first whole packet in ``buf``."""
    length, at = 0, 1
    for shift in (0, 7, 14, 21):
        if at >= len(buf):
            return None
        byte = buf[at]
        at += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
    if at + length > len(buf):
        return None
    return buf[0] & 0xF0, buf[at : at + length], buf[at + length :]


def _receive_maximum(connack: bytes) -> int:
    """The Receive Maximum of a CONNACK's properties (65,535 when absent)."""
    length, at, shift = 0, 0, 0
    while True:
        byte = connack[at]
        at += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    end, found = at + length, 65535
    while at < end:
        prop = connack[at]
        size = _PROPERTY_SIZES[prop]
        at += 1
        if prop == 0x21:
            found = struct.unpack_from("!H", connack, at)[0]
        if size == -2:
            for _ in range(2):
                at += 2 + struct.unpack_from("!H", connack, at)[0]
        elif size == -1:
            at += 2 + struct.unpack_from("!H", connack, at)[0]
        else:
            at += size
    return found


def publish_all(work: list[tuple[Publisher, list[bytes]]], stop: threading.Event) -> None:
    """Every node's frames in turn (message i of each node, then i + 1), each node
    keeping at most its window unacknowledged; returns once all are acknowledged."""
    pos = [0] * len(work)
    by_sock = {p.sock: p for p, _ in work}
    while not stop.is_set():
        for n, (pub, frames) in enumerate(work):
            if pos[n] < len(frames) and pub.inflight < pub.window:
                pub.send(frames[pos[n]])
                pos[n] += 1
        if all(p.acked == len(frames) for p, frames in work):
            return
        sending = any(pos[n] < len(f) and p.inflight < p.window for n, (p, f) in enumerate(work))
        readable, _, _ = select.select(list(by_sock), [], [], 0 if sending else 1.0)
        for sock in readable:
            by_sock[sock].read_acks()


def _publish_all_or_note(
    work: list[tuple[Publisher, list[bytes]]], stop: threading.Event, failed: list[BaseException]
) -> None:
    """:func:`publish_all` on a thread: what ends it early is noted for the main thread."""
    try:
        publish_all(work, stop)
    except BaseException as exc:  # SystemExit included: a thread would swallow it
        failed.append(exc)


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


def measure(
    workdir: Path, broker_port: int, batch_max: int, tasks: int
) -> tuple[float, float, float]:
    """(messages/s, messages per controller CPU-second, the bench process's own CPU-us
    a message: its publisher and its polling of the store) over the measured window."""
    proc, url = run_controller(workdir, broker_port, batch_max)
    ctl, me = psutil.Process(proc.pid), psutil.Process()
    db = sqlite3.connect(str(workdir / "state" / "controller.db"), timeout=30)
    pubs: list[Publisher] = []
    stop = threading.Event()
    sender: threading.Thread | None = None
    try:
        nodes = [BenchNode(f"bench{n:02d}") for n in range(NODES)]
        for node in nodes:
            pubs.append(Publisher(node.node_id, broker_port))
            pubs[-1].publish_wait(topic(node.node_id, "hello"), node.hello())
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
        work = [
            (pub, [pub.frame(topic(n.node_id, "up"), m) for m in n.reports(by_node[n.node_id])])
            for pub, n in zip(pubs, nodes, strict=True)
        ]
        messages = sum(len(frames) for _, frames in work)
        acked = sum(n.seq for n in nodes)

        started, cpu_started, own_started = time.perf_counter(), _cpu_s(ctl), _cpu_s(me)
        failed: list[BaseException] = []
        sender = threading.Thread(
            target=_publish_all_or_note, args=(work, stop, failed), daemon=True
        )
        sender.start()
        while db.execute("SELECT COALESCE(SUM(acked_seq), 0) FROM peers").fetchone()[0] < acked:
            if proc.poll() is not None:
                raise SystemExit("controller died during the bench")
            if failed:
                raise SystemExit(f"publishing failed: {failed[0]}")
            time.sleep(0.01)
        elapsed, cpu = time.perf_counter() - started, _cpu_s(ctl) - cpu_started
        own = _cpu_s(me) - own_started
        done = db.execute("SELECT COUNT(*) FROM tasks WHERE status = 'succeeded'").fetchone()[0]
        if done != total:
            raise SystemExit(f"only {done} of {total} tasks merged as succeeded")
        return messages / elapsed, messages / cpu, own / messages * 1e6
    finally:
        stop.set()
        if sender is not None:
            sender.join(timeout=30)
        db.close()
        for pub in pubs:
            pub.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        broker = MosquittoBroker(workdir=Path(tmp) / "mosquitto").start()
        try:
            batched, per_cpu, pub_us = measure(
                Path(tmp) / "batched", broker.port, 500, TASKS_PER_NODE
            )
            single, _, _ = measure(Path(tmp) / "single", broker.port, 1, BASELINE_TASKS_PER_NODE)
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
        f"{per_cpu:,.0f} messages per controller CPU-second ({1e6 / per_cpu:.0f} CPU-us a "
        f"message); the bench process (its publisher thread, frames built beforehand, and the "
        f"store polling) {pub_us:.0f} CPU-us a message; load average {load} "
        f"on {os.cpu_count()} CPUs",
    )


if __name__ == "__main__":
    main()
