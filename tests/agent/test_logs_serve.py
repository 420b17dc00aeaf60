"""The agent's answer to ``log_request`` (``edge_agent/logs_serve.py``) over the file the task
supervisor writes (``edge_agent/_livelog.py``): only an attempt of this node running now is
read, from the offset asked, within the bytes asked; anything else says ``running: false``."""

from __future__ import annotations

import importlib
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from edge_agent.logs_serve import LogServer
from shared.protocol import LogRequest

N = "edge-1"
AGENT_DIR = Path(__file__).resolve().parents[2] / "edge_agent"


def _livelog() -> Any:
    """``_livelog`` as the supervisor imports it (its directory on ``sys.path``)."""
    sys.path.insert(0, str(AGENT_DIR))
    try:
        return importlib.import_module("_livelog")
    finally:
        sys.path.remove(str(AGENT_DIR))


def _server(tmp_path: Path, running: dict[str, Any]) -> LogServer:
    executor = SimpleNamespace(
        run_dir=lambda task_id, key: tmp_path / f"{task_id}--{key.rsplit(':', 1)[-1]}"
    )
    core: Any = SimpleNamespace(node=N, running=running, executor=executor, counters=Counter())
    return LogServer(core, uplink=None)  # type: ignore[arg-type]


def _ask(attempt: str, offset: int = 0, max_bytes: int = 16_384, stream: str = "stdout") -> Any:
    return LogRequest("r-1", "t-1", attempt, stream, offset, max_bytes)


def test_the_running_attempts_output_from_the_offset(tmp_path: Path) -> None:
    server = _server(tmp_path, {f"t-1/{N}:3": object()})
    (tmp_path / "t-1--3").mkdir()
    tail = "éllo\nworld\n".encode()  # the last 12 of 100 bytes written: bytes 88 to 100
    _livelog().write_live(
        str(tmp_path / "t-1--3"),
        {"stdout": tail, "stderr": b"warn\n"},
        {"stdout": 100, "stderr": 5},
    )
    whole = server.chunk(_ask(f"{N}:3"))
    assert (whole.running, whole.text, whole.offset, whole.next_offset, whole.total) == (
        True,
        tail.decode(),
        88,
        100,
        100,
    )
    for offset, max_bytes, text in ((88, 3, "él"), (88, 2, "é"), (95, 3, "orl"), (99, 9, "\n")):
        part = server.chunk(_ask(f"{N}:3", offset=offset, max_bytes=max_bytes))
        assert (part.text, part.offset, part.next_offset) == (
            text,
            offset,
            offset + len(text.encode()),
        )
    assert server.chunk(_ask(f"{N}:3", stream="stderr")).text == "warn\n"
    done = server.chunk(_ask(f"{N}:3", offset=100))
    assert (done.running, done.text, done.next_offset) == (True, "", 100)


def test_nothing_for_other_nodes_or_attempts_not_running(tmp_path: Path) -> None:
    server = _server(tmp_path, {f"t-1/{N}:3": object(), "t-1/edge-2:3": object()})
    for attempt in ("edge-2:3", f"{N}:4"):
        answer = server.chunk(_ask(attempt))
        assert (answer.running, answer.text, answer.total) == (False, "", 0)
    early = server.chunk(_ask(f"{N}:3"))  # running, no output yet: no file
    assert (early.running, early.text, early.total) == (True, "", 0)
