"""The controller process's inbox (``cloud.server``): what the transport hands over is
ingested in arrival order, in batches of at most ``ingest.batch_max``, also when it
arrives while the ingest task waits; a failing batch is retried one message at a time
and the loop goes on."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from cloud.config import ControllerConfig, IngestConfig
from cloud.server import ControllerProcess


class RecordingController:
    """Stands in for ``cloud.controller.Controller``: records each batch; a batch
    holding ``poison`` fails as a whole (as a rolled-back transaction does)."""

    def __init__(self, poison: bytes | None = None) -> None:
        self.batches: list[list[tuple[str, bytes]]] = []
        self.poison = poison

    def ingest(self, messages: Iterable[tuple[str, bytes]]) -> None:
        batch = list(messages)
        if self.poison is not None and any(p == self.poison for _, p in batch):
            raise RuntimeError("bad batch")
        self.batches.append(batch)


async def _until(pred, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + 30
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.01)


async def _ingest(
    messages: list[tuple[str, bytes]], *, batch_max: int, controller: RecordingController
) -> list[list[tuple[str, bytes]]]:
    proc = ControllerProcess(ControllerConfig(ingest=IngestConfig(batch_max=batch_max)))
    proc.controller = controller  # type: ignore[assignment]
    task = asyncio.create_task(proc._ingest_loop())
    try:
        half = len(messages) // 2
        for topic, payload in messages[:half]:  # before the loop first runs
            proc._received(topic, payload)
        await _until(lambda: not proc.inbox, "first half taken")
        await asyncio.sleep(0.05)  # the loop is waiting on an empty inbox
        for topic, payload in messages[half:]:  # wake it
            proc._received(topic, payload)
        expected = len(messages) - (controller.poison is not None)
        await _until(lambda: sum(len(b) for b in controller.batches) == expected, "all ingested")
    finally:
        task.cancel()
    return controller.batches


def test_inbox_batches_in_order_and_wakes() -> None:
    messages = [(f"t/{i}", str(i).encode()) for i in range(23)]
    batches = asyncio.run(_ingest(messages, batch_max=4, controller=RecordingController()))
    assert all(1 <= len(b) <= 4 for b in batches)
    assert [m for b in batches for m in b] == messages


def test_failing_batch_is_retried_one_by_one() -> None:
    messages = [(f"t/{i}", str(i).encode()) for i in range(10)]
    controller = RecordingController(poison=b"7")
    batches = asyncio.run(_ingest(messages, batch_max=100, controller=controller))
    assert [m for b in batches for m in b] == [m for m in messages if m[1] != b"7"]
