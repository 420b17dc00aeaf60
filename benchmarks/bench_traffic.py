"""Idle control traffic per node with default configs (issue 14 goal: ≤ 0.25 kbit/s each way).

A real ``cloud-controller run`` and a real ``edge-agent run``, both with their default
configuration (only paths, ports and the node id set; discovery off), on a real Mosquitto.
The agent reaches the broker through a counting TCP proxy
(``simulations.testbed.proxy.FaultProxy``, no faults), which counts the MQTT bytes
forwarded each way (TCP/IP headers are not counted). After the agent registered and a
warm-up, the bytes of a window of ``BENCH_TRAFFIC_WINDOW_S`` seconds (120 by default: two
of the longest idle cadence, the 60 s telemetry refresh) are the figure. Then the agent runs
``BENCH_TRAFFIC_HISTORY`` no-op tasks (200 by default) and, once they are finished and no
longer recent to its periodic digests (``BENCH_TRAFFIC_SETTLE_S``, 11 minutes by default),
a second window is measured the same way: an idle node that has worked keeps its finished
records (``autonomy.retain_finished_*``), and a digest naming every one of them each period
made its idle traffic grow with its history (``shared.crdt.Replica.periodic_digest``).

Baseline, same run: a bare paho client with the agent's default MQTT keep-alive, connected
through another counting proxy and doing nothing, the floor any MQTT node pays to stay
connected. The issue's anchor, KubeEdge's ≈ 0.25 kbit/s up, is the goal.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from _report import emit

from edge_agent.config import AutonomyConfig, BrokerConfig
from shared.crdt import RECENT_DIGESTS
from simulations.testbed.broker import MosquittoBroker, stop_process
from simulations.testbed.proxy import FaultProxy

ROOT = Path(__file__).resolve().parents[1]
WINDOW_S = float(os.environ.get("BENCH_TRAFFIC_WINDOW_S", "120"))
WARMUP_S = 10.0
HISTORY = int(os.environ.get("BENCH_TRAFFIC_HISTORY", "200"))
#: After the history, the wait before the second window: until the finished records are no
#: longer "recent" to the agent's periodic digests (``shared.crdt.RECENT_DIGESTS`` periods of
#: the default ``antientropy_s``, 2 T), plus a minute.
SETTLE_S = float(
    os.environ.get(
        "BENCH_TRAFFIC_SETTLE_S", str(RECENT_DIGESTS * 2 * AutonomyConfig().period_s + 60)
    )
)
GOAL_KBIT_S = 0.25


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
    )


def _controller(workdir: Path, broker_port: int) -> tuple[subprocess.Popen[bytes], str]:
    workdir.mkdir(parents=True)
    config = workdir / "controller.toml"
    config.write_text(
        f'[controller]\nstate_dir = "{workdir / "state"}"\n'
        f'[api]\nport = 0\ntoken = "bench"\n'
        # the history's submissions and polls are no client to slow down (default 50/s)
        "rate_per_s = 100000.0\nburst = 100000.0\n"
        f"[broker]\nport = {broker_port}\n"
    )
    proc = _spawn(["cloud.cli", "run", "--config", str(config)], workdir / "controller.log")
    ready = workdir / "state" / "controller.ready.json"
    _wait(lambda: ready.exists() or proc.poll() is not None, "controller ready", 60)
    if proc.poll() is not None:
        raise SystemExit((workdir / "controller.log").read_text())
    return proc, json.loads(ready.read_text())["api_url"]


def _agent(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    workdir.mkdir(parents=True)
    config = workdir / "agent.toml"
    config.write_text(
        f'[node]\nid = "idle-1"\nstate_dir = "{workdir / "state"}"\n'
        f'[broker]\nhost = "127.0.0.1"\nport = {port}\n'
        f"[discovery]\nenabled = false\n"
    )
    return _spawn(["edge_agent.cli", "run", "--config", str(config)], workdir / "agent.log")


def _api(url: str, path: str, body: object | None = None) -> Any:
    req = urllib.request.Request(
        url + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Bearer bench", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _nodes(url: str) -> list[dict[str, object]]:
    return _api(url, "/api/v1/nodes")["nodes"]  # type: ignore[no-any-return]


def _run_history(url: str) -> None:
    """``HISTORY`` no-op tasks through the controller, until every one succeeded."""
    ids = {_api(url, "/api/v1/tasks", {"command": ["true"]})["task_id"] for _ in range(HISTORY)}

    def done() -> bool:
        ids.difference_update(
            [t for t in ids if _api(url, f"/api/v1/tasks/{t}")["status"] == "succeeded"]
        )
        return not ids

    _wait(done, f"{HISTORY} tasks succeeded", 300)


def _wait(pred, what: str, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_traffic: {what} not reached")
        time.sleep(0.1)


def _kbit_s(nbytes: int, seconds: float) -> float:
    return nbytes * 8 / 1000 / seconds


class _Tally:
    """Messages of the node per direction and type, seen by a subscriber beside it."""

    def __init__(self, port: int) -> None:
        self.counts: dict[str, list[int]] = {}
        self.on = False
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tally")
        self.client.on_connect = lambda c, *a: c.subscribe("continuum/v1/nodes/idle-1/#")
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if self.on:
            kind = msg.topic.rsplit("/", 1)[1]
            try:
                type_ = json.loads(msg.payload)["type"]
            except (ValueError, KeyError, TypeError):
                type_ = "?"
            entry = self.counts.setdefault(f"{kind}:{type_}", [0, 0])
            entry[0] += 1
            entry[1] += len(msg.payload)

    def summary(self) -> str:
        return ", ".join(f"{k} {n}x{b // max(n, 1)} B" for k, (n, b) in sorted(self.counts.items()))

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class _Window:
    """Bytes each way through a proxy from ``start`` to ``rates``."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.up0 = self.down0 = 0

    def start(self) -> None:
        self.up0, self.down0 = self.proxy.stats.bytes_up, self.proxy.stats.bytes_down

    def rates(self, elapsed: float) -> tuple[float, float]:
        stats = self.proxy.stats
        return (
            _kbit_s(stats.bytes_up - self.up0, elapsed),
            _kbit_s(stats.bytes_down - self.down0, elapsed),
        )


async def _window(agent: _Window, bare: _Window, tally: _Tally) -> dict[str, Any]:
    """One idle window: the agent's and the bare client's rates, the agent's messages."""
    tally.counts = {}
    agent.start()
    bare.start()
    started, tally.on = time.monotonic(), True
    await asyncio.sleep(WINDOW_S)
    elapsed, tally.on = time.monotonic() - started, False
    up, down = agent.rates(elapsed)
    bare_up, bare_down = bare.rates(elapsed)
    return {
        "up": up,
        "down": down,
        "bare_up": bare_up,
        "bare_down": bare_down,
        "messages": tally.summary(),
    }


async def _measure(tmp: Path, broker_port: int) -> list[dict[str, Any]]:
    agent_proxy = await FaultProxy("agent", "127.0.0.1", broker_port).start()
    bare_proxy = await FaultProxy("bare", "127.0.0.1", broker_port).start()
    ctl, url = await asyncio.to_thread(_controller, tmp / "controller", broker_port)
    agent = _agent(tmp / "agent", agent_proxy.port)
    bare = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bare-1", clean_session=False)
    tally = _Tally(broker_port)
    agent_w, bare_w = _Window(agent_proxy), _Window(bare_proxy)
    try:
        await asyncio.to_thread(
            _wait, lambda: any(n.get("registered") for n in _nodes(url)), "agent registered", 60
        )
        bare.connect("127.0.0.1", bare_proxy.port, keepalive=BrokerConfig().keepalive_s)
        bare.loop_start()
        await asyncio.sleep(WARMUP_S)
        windows = [await _window(agent_w, bare_w, tally)]
        if HISTORY > 0:
            await asyncio.to_thread(_run_history, url)
            await asyncio.sleep(SETTLE_S)
            windows.append(await _window(agent_w, bare_w, tally))
        if agent.poll() is not None or ctl.poll() is not None:
            raise SystemExit("a process died during a window")
        node = _nodes(url)[0]
        for got in windows:
            got["connections"] = float(agent_proxy.stats.to_dict().get("connections", 0))
            got["link_healthy"] = float(node.get("link_state") == "healthy")
        return windows
    finally:
        tally.stop()
        bare.loop_stop()
        bare.disconnect()
        stop_process(agent)
        stop_process(ctl)
        await agent_proxy.stop()
        await bare_proxy.stop()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-traffic-") as tmp:
        broker = MosquittoBroker(workdir=Path(tmp) / "mosquitto").start()
        try:
            windows = asyncio.run(_measure(Path(tmp), broker.port))
        finally:
            broker.stop()
    for i, got in enumerate(windows):
        when = "a fresh agent" if i == 0 else f"after {HISTORY} finished tasks"
        note = (
            f"{WINDOW_S:.0f} s idle window, {when}, default configs, one agent through a"
            f" counting proxy; link {'healthy' if got['link_healthy'] else 'NOT healthy'} at"
            f" the end; {got['connections']:.0f} connection(s); messages in the window:"
            f" {got['messages']}; anchor: KubeEdge ≈ 0.25 kbit/s up"
        )
        for direction in ("up", "down"):
            emit(
                f"idle traffic per node, {direction} (MQTT bytes)"
                + ("" if i == 0 else f", after {HISTORY} tasks"),
                measured=got[direction],
                unit="kbit/s",
                goal=GOAL_KBIT_S,
                direction="lower",
                baseline=got[f"bare_{direction}"],
                baseline_name="bare MQTT connection with the agent's keep-alive (the floor)",
                note=note,
            )


if __name__ == "__main__":
    main()
