"""The zero-install broker: amqtt (pure Python, MQTT 3.1.1) in its own process,
behind the same ``start / stop(kill=) / restart / host / port`` interface as
:class:`simulations.testbed.broker.MosquittoBroker`.

Used only where Mosquitto is not installed (the demo on a bare machine). Two
amqtt facts shape it (anchors C3): it speaks MQTT 3.1.1 only, so the controller
must be configured for 3.1.1; and it queues messages for offline persistent
sessions only when the session is *not anonymous*, so anonymous access is off
and every client connects with a username (the node id). amqtt's anonymous-auth
plugin in that mode accepts any username without checking a password: this is
a loopback test broker, not a production one. Sessions live in memory, so a
``restart()`` loses queued messages (Mosquitto's persistence keeps them). The broker
process runs amqtt with the fixes of :mod:`.amqtt_fixes` (keep-alive enforced, QoS 1
messages kept until acknowledged, clean session take-over, retained messages per own
subscription): without them the demo lost messages and sessions after a heal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .broker import BrokerError, free_port, stop_process, wait_for_port

__all__ = ["EmbeddedBroker", "main"]


@dataclass
class EmbeddedBroker:
    workdir: Path
    host: str = "127.0.0.1"
    port: int = 0
    users: dict[str, str] | None = None  # accepted for interface parity; not checked
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    kind = "embedded"
    mqtt_protocol = "3.1.1"

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(self.host)
        log = open(self.workdir / "amqtt.log", "ab")  # noqa: SIM115 - handed to the child
        self._proc = subprocess.Popen(
            [sys.executable, "-m", __name__, "--host", self.host, "--port", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        if not wait_for_port(self.host, self.port, timeout_s):
            self.stop(kill=True)
            tail = (self.workdir / "amqtt.log").read_text(errors="replace")[-2000:]
            raise BrokerError(f"amqtt did not open {self.host}:{self.port}: {tail}")
        return self

    def stop(self, *, kill: bool = False, timeout_s: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        stop_process(proc, kill=kill, timeout_s=timeout_s)

    def restart(self, timeout_s: float = 15.0) -> None:
        self.stop()
        self.start(timeout_s)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: Seconds past a client's keep-alive before the broker gives up on it (Mosquitto's 1.5x
#: for the testbed's 5 s keep-alive): a client behind a cut link is then disconnected, its
#: session queues its messages and its will fires.
DISCONNECT_DELAY_S = 3


def _config(host: str, port: int) -> dict[str, object]:
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 0}},
        "timeout_disconnect_delay": DISCONNECT_DELAY_S,
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": False},
        },
    }


async def _serve(host: str, port: int) -> None:
    from .amqtt_fixes import install

    broker = install()(_config(host, port))
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    with contextlib.suppress(Exception):
        await broker.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Embedded amqtt broker for the testbed")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
