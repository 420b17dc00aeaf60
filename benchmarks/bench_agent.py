"""Edge agent footprint and dispatch overhead (issue 3), each beside its baseline.

1. **Idle footprint**: an ``edge-agent run`` process connected to a local Mosquitto, with a
   minimal cloud acknowledging its heartbeats (so it is ``connected``, sending heartbeats and
   telemetry as in the field), discovery off. After a warm-up, its resident memory (the
   largest sample, once a second) and CPU time are measured over a window, side by side with a
   bare ``python -c`` interpreter sleeping over the same window. Goals: RSS ≤ 40 MB, CPU ≤ 1 %
   of one core. The window is ``BENCH_AGENT_WINDOW_S`` seconds, 20 by default to keep
   ``make bench`` short; the issue's 60 s window is ``BENCH_AGENT_WINDOW_S=60``.
2. **Dispatch**: ``BENCH_AGENT_TASKS`` (default 60) no-op tasks (``true``) submitted at once to
   the local API and run to success (journal, watchdog, outcome, sync), in tasks per second,
   beside a bare ``subprocess.run(["true"])`` loop.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
from _report import emit

from edge_agent.api import LocalClient
from shared.clocks import HybridClock
from shared.protocol import (
    Ack,
    Envelope,
    Heartbeat,
    decode_from,
    encode,
    parse_topic,
    subscription,
    topic,
)
from simulations.testbed.broker import MosquittoBroker, stop_process

ROOT = Path(__file__).resolve().parents[1]

WINDOW_S = float(os.environ.get("BENCH_AGENT_WINDOW_S", "20"))
WARMUP_S = 5.0
TASKS = int(os.environ.get("BENCH_AGENT_TASKS", "60"))


class _Acker:
    """The smallest cloud: acknowledges heartbeats and outbox batches."""

    def __init__(self, port: int) -> None:
        self.clock = HybridClock("cloud")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.on_connect = lambda c, *a: c.subscribe(subscription("up"), qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        env = decode_from(msg.topic, msg.payload)
        node, _ = parse_topic(msg.topic)
        if isinstance(env.body, Heartbeat):
            ack = Ack(heartbeat_id=env.id)
        elif env.seq is not None:
            ack = Ack(up_to_seq=env.seq)
        else:
            return
        reply = Envelope(
            type="ack",
            id=uuid.uuid4().hex,
            sender="cloud",
            hlc=self.clock.now(time.time_ns() // 1_000_000).encode(),
            body=ack,
        )
        client.publish(topic(node, "down"), encode(reply), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _footprint(pid: int, window_s: float) -> tuple[float, float]:
    """(peak RSS in MB, CPU % of one core) of ``pid`` over ``window_s``."""
    proc = psutil.Process(pid)
    start_cpu = sum(proc.cpu_times()[:2])
    start = time.monotonic()
    peak = 0
    while (elapsed := time.monotonic() - start) < window_s:
        peak = max(peak, proc.memory_info().rss)
        time.sleep(min(1.0, window_s - elapsed))
    cpu = sum(proc.cpu_times()[:2]) - start_cpu
    peak = max(peak, proc.memory_info().rss)
    return peak / 2**20, 100.0 * cpu / (time.monotonic() - start)


def _api(client: LocalClient, method: str, path: str, body: object | None = None) -> object:
    code, answer = client.request(method, path, body)
    if code >= 300:
        raise SystemExit(f"{method} {path}: {code} {answer}")
    return answer


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        work = Path(tmp)
        broker = MosquittoBroker(workdir=work / "mosquitto").start()
        acker = _Acker(broker.port)
        state = work / "state"
        config = work / "agent.toml"
        config.write_text(
            f'[node]\nid = "bench-1"\nstate_dir = "{state}"\n'
            f'[broker]\nhost = "127.0.0.1"\nport = {broker.port}\n'
            "[api]\nport = 0\n[discovery]\nenabled = false\n"
            "[executor]\nmin_free_memory_mb = 1.0\nmax_cpu_percent = 100.0\n",
            encoding="utf-8",
        )
        agent = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "run", "--config", str(config)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        baseline = subprocess.Popen(
            [sys.executable, "-c", f"import time; time.sleep({WINDOW_S + WARMUP_S + 60})"]
        )
        try:
            ready = state / "agent.ready.json"
            deadline = time.monotonic() + 30
            while not ready.exists():
                if time.monotonic() > deadline or agent.poll() is not None:
                    raise SystemExit("the agent did not become ready")
                time.sleep(0.1)
            api = LocalClient(socket_path=state / "agent.sock", timeout=30)
            time.sleep(WARMUP_S)
            status = _api(api, "GET", "/v1/status")
            assert isinstance(status, dict)
            results: dict[str, tuple[float, float]] = {}
            threads = [
                threading.Thread(
                    target=lambda k=k, p=p: results.__setitem__(k, _footprint(p, WINDOW_S))
                )
                for k, p in (("agent", agent.pid), ("baseline", baseline.pid))
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            (rss, cpu), (base_rss, base_cpu) = results["agent"], results["baseline"]
            note = f"idle {WINDOW_S:.0f} s, connectivity {status['connectivity']}"
            emit(
                "agent idle RSS",
                measured=rss,
                unit="MB",
                goal=40.0,
                direction="lower",
                baseline=base_rss,
                baseline_name="bare python -c",
                note=note,
            )
            emit(
                "agent idle CPU",
                measured=cpu,
                unit="% of a core",
                goal=1.0,
                direction="lower",
                baseline=base_cpu,
                baseline_name="bare python -c",
                note=note,
            )

            started = time.monotonic()
            for _ in range(TASKS):
                _api(api, "POST", "/v1/tasks", {"command": ["true"]})
            while True:
                listing = _api(api, "GET", "/v1/tasks")
                assert isinstance(listing, dict)
                done = sum(t["status"] == "succeeded" for t in listing["tasks"])
                if done >= TASKS:
                    break
                if time.monotonic() - started > 120:
                    raise SystemExit(f"only {done}/{TASKS} no-op tasks succeeded in 120 s")
                time.sleep(0.05)
            agent_rate = TASKS / (time.monotonic() - started)
            started = time.monotonic()
            for _ in range(TASKS):
                subprocess.run(["true"], check=True)
            bare_rate = TASKS / (time.monotonic() - started)
            emit(
                "agent no-op dispatch",
                measured=agent_rate,
                unit="tasks/s",
                baseline=bare_rate,
                baseline_name="subprocess.run(['true']) loop",
                note=f"{TASKS} tasks via the local API, max_concurrent 4, journaled + synced",
            )
        finally:
            stop_process(agent, timeout_s=20)
            baseline.kill()
            baseline.wait()
            acker.close()
            broker.stop()


if __name__ == "__main__":
    main()
