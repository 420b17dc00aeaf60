"""The controller process: asyncio loop, MQTT transport, REST API, control loop.

Three tasks share one loop and therefore one thread of controller state:

- *ingest*: drains the inbox of received MQTT messages in batches of up to
  ``ingest.batch_max`` and merges each batch in one transaction (the inbox is a plain
  deque the transport appends to on this loop, with an event to wake the task: one
  hop per message, not a second queue's bookkeeping);
- *tick*: the control loop (pings, link grading, adaptive levels, re-placement,
  pending work) every ``controller.tick_s``;
- the aiohttp server.

Once the API listens, ``controller.ready.json`` (``pid``, ``api_port``, ``api_url``)
is written atomically in the state directory for supervisors (the testbed).
SIGTERM/SIGINT stop accepting, finish the batch in hand and close the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
from collections import deque
from pathlib import Path

from .api import build_app
from .api_access import RateLimit
from .api_http import start_api
from .config import ControllerConfig
from .controller import Controller
from .metrics import ControllerMetrics
from .store import Store
from .transport import MqttTransport

__all__ = ["ControllerProcess", "run_forever"]

log = logging.getLogger(__name__)


def _private_store(state_dir: Path, db_path: Path) -> None:
    """The store holds every task's spec, ``env`` secrets included: the state directory
    is 0700 and the database 0600 before SQLite opens it (its WAL and shared-memory
    files take the database's mode); files an older version left readable are narrowed."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    state_dir.chmod(0o700)
    os.close(os.open(db_path, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
    for path in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")):
        with contextlib.suppress(FileNotFoundError):
            path.chmod(0o600)


def _write_atomic(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    tmp.replace(path)


#: Allocations (net) between young collections: CPython's 700 runs one every few
#: messages under ingest (each decodes into dozens of objects), each walking the young
#: objects; 20,000 still collects cycles promptly and bounds garbage to a few MB.
GC_GEN0 = 20_000


def _settle_gc() -> None:
    """After start-up: the state loaded from the store (every record, the registry)
    lives as long as the process, so it is frozen out of the cyclic collector's walks
    (``gc.freeze``; objects made later are collected as usual), and young collections
    run less often (:data:`GC_GEN0`). Reference counting frees almost everything; the
    collector is left for cycles."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0, gen1, gen2)


class ControllerProcess:
    def __init__(self, cfg: ControllerConfig, *, settle_gc: bool = False) -> None:
        """``settle_gc``: the process is the controller's own (``run_forever``), so the
        collector is tuned for it after start-up (``_settle_gc``; never in a host
        process, such as a test's, whose other objects it would freeze)."""
        self.cfg = cfg
        self.settle_gc = settle_gc
        self.inbox: deque[tuple[str, bytes]] = deque()
        self.arrived = asyncio.Event()
        self.stopping = asyncio.Event()
        self.api_port: int | None = None

    async def run(self) -> None:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        _private_store(cfg.state_dir, cfg.db_path)
        with contextlib.suppress(FileNotFoundError):
            cfg.ready_path.unlink()
        store = Store(cfg.db_path, synchronous=cfg.ingest.synchronous)
        transport = MqttTransport(
            cfg.broker,
            client_id=cfg.client_id,
            loop=loop,
            on_message=self._received,
            on_connected=self._on_connected,
        )
        self.controller = controller = Controller(
            cfg, store, ControllerMetrics(), send=self._sender(transport)
        )
        app = build_app(
            controller,
            token=cfg.api_token(),
            max_body_bytes=cfg.api.max_body_bytes,
            rate=RateLimit(cfg.api.rate_per_s, cfg.api.burst),
        )
        runner, self.api_port = await start_api(app, cfg.api.host, cfg.api.port)
        if self.settle_gc:
            _settle_gc()
        transport.start()
        tasks = [
            asyncio.create_task(self._ingest_loop(), name="ingest"),
            asyncio.create_task(self._tick_loop(), name="tick"),
        ]
        _write_atomic(
            cfg.ready_path,
            {
                "pid": os.getpid(),
                "api_host": cfg.api.host,
                "api_port": self.api_port,
                "api_url": f"http://{cfg.api.host}:{self.api_port}",
                # Where the bearer token is (never the token itself).
                "token_source": "config" if cfg.api.token else "token_file",
                "token_path": str(cfg.token_path),
                "node_id": cfg.controller.node_id,
                "db_path": str(cfg.db_path),
                "broker": f"{cfg.broker.host}:{cfg.broker.port}",
            },
        )
        log.info("controller listening", extra={"fields": {"api_port": self.api_port}})
        try:
            await self.stopping.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            transport.stop()
            await runner.cleanup()
            store.close()
            with contextlib.suppress(FileNotFoundError):
                cfg.ready_path.unlink()
            log.info("controller stopped")

    def _sender(self, transport: MqttTransport):  # type: ignore[no-untyped-def]
        def send(node_id: str, payload: bytes, qos: int) -> None:
            transport.send_down(node_id, payload, qos=qos)

        return send

    def _on_connected(self, connected: bool) -> None:
        self.controller.set_broker_connected(connected)

    def _received(self, topic: str, payload: bytes) -> None:
        """On the loop (the transport's hand-over): into the inbox, ingest woken."""
        self.inbox.append((topic, payload))
        self.arrived.set()

    async def _ingest_loop(self) -> None:
        batch_max = self.cfg.ingest.batch_max
        inbox = self.inbox
        while True:
            if not inbox:
                self.arrived.clear()
                await self.arrived.wait()
                continue
            batch = [inbox.popleft() for _ in range(min(batch_max, len(inbox)))]
            try:
                self.controller.ingest(batch)
            except Exception:
                # Never die on input: the batch's transaction rolled back, the
                # agents still hold the deltas in their outboxes and resend.
                log.exception("ingest batch of %d failed; retrying one by one", len(batch))
                for item in batch:
                    try:
                        self.controller.ingest([item])
                    except Exception:
                        log.exception("dropping message on %s", item[0])
            await asyncio.sleep(0)

    async def _tick_loop(self) -> None:
        while True:
            try:
                self.controller.tick()
            except Exception:
                log.exception("tick failed")
            await asyncio.sleep(self.cfg.controller.tick_s)


def run_forever(cfg: ControllerConfig) -> int:
    async def main() -> None:
        proc = ControllerProcess(cfg, settle_gc=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, proc.stopping.set)
        await proc.run()

    asyncio.run(main())
    return 0
