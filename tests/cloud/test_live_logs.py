"""Live logs of a running attempt: the span a reader gets (``shared.protocol.log_span``, laws
over arbitrary streams), the controller's side of ``log_request`` / ``log_chunk``
(``cloud/log_stream.py``: only the asked node's answer to an outstanding request counts, an
unreachable node is never asked) and the logs route over a real controller. The whole
path with a real agent and broker: tests/agent/test_task_logs_e2e.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from cloud_harness import NodeScript, make_config
from hypothesis import given
from hypothesis import strategies as st

from cloud.api import build_app
from cloud.controller import Controller
from cloud.log_stream import LiveLogs
from cloud.metrics import ControllerMetrics
from cloud.store import Store
from shared.protocol import MAX_LOG_CHUNK, LogChunk, LogRequest, Presence, decode, log_span
from shared.vocab import LinkState

N = "edge-1"


# ------------------------------------------------------------ spans


@given(
    st.text(max_size=300).map(lambda t: t.encode("utf-8")),
    st.integers(0, 200),
    st.integers(1, 40),
)
def test_reading_span_by_span_yields_the_kept_stream_in_order(
    stream: bytes, dropped: int, step: int
) -> None:
    """A reader from offset 0 over a tail that lost ``dropped`` leading bytes gets the tail,
    once, in order, each span at most ``step`` bytes."""
    total = dropped + len(stream)
    offset, read = 0, b""
    for _ in range(total + 2):
        span = log_span(stream, total, offset, step)
        assert span.offset >= offset and span.offset <= span.next_offset <= total
        assert span.next_offset - span.offset <= step
        read += stream[span.offset - dropped : span.next_offset - dropped]
        if span.next_offset == offset == total:
            break
        offset = span.next_offset
    assert read == stream and offset == total


@given(st.text(min_size=1, max_size=100), st.integers(0, 10))
def test_spans_cut_between_characters(text: str, extra: int) -> None:
    data = text.encode("utf-8")
    for step in range(4, 9):  # a budget below 4 bytes may have to split a character
        offset = 0
        while offset < len(data):
            span = log_span(data, len(data), offset, step)
            assert span.text == data[span.offset : span.next_offset].decode("utf-8")
            offset = span.next_offset
    assert log_span(data, len(data), len(data) + extra).text == ""


# ------------------------------------------------------------ the controller's side


class _Uow:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Any, int]] = []

    def queue(self, node_id: str, type_: str, body: Any, *, qos: int = 1) -> None:
        self.sent.append((node_id, type_, body, qos))

    def flush(self) -> None:
        pass


def _live(presence: str = "online", link: LinkState = LinkState.HEALTHY) -> tuple[LiveLogs, _Uow]:
    node = SimpleNamespace(presence=presence, link_state=link)
    uow = _Uow()
    registry: Any = SimpleNamespace(get=lambda node_id: node if node_id == N else None)
    return LiveLogs(registry, uow, ControllerMetrics(), timeout_s=5.0), uow  # type: ignore[arg-type]


def _answer(req: LogRequest, **changes: Any) -> LogChunk:
    fields = {
        "request_id": req.request_id,
        "task_id": req.task_id,
        "attempt": req.attempt,
        "stream": req.stream,
        "running": True,
        "text": "so far\n",
        "offset": 0,
        "next_offset": 7,
        "total": 7,
        **changes,
    }
    return LogChunk(**fields)


def _rejected(live: LiveLogs) -> float:
    return live.metrics.rejected.labels(reason="unasked_log_chunk")._value.get()


def test_only_the_asked_nodes_answer_to_an_open_request_counts() -> None:
    async def scenario() -> None:
        live, uow = _live()
        fetch = asyncio.ensure_future(live.fetch(N, "t-1", f"{N}:1", "stdout", 0))
        await asyncio.sleep(0)
        ((node, type_, req, qos),) = uow.sent
        assert (node, type_, qos) == (N, "log_request", 0)
        assert (req.task_id, req.attempt, req.stream, req.offset) == ("t-1", f"{N}:1", "stdout", 0)
        assert req.max_bytes == MAX_LOG_CHUNK
        for forged in (
            ("edge-2", _answer(req)),  # another node answering
            (N, _answer(req, request_id="nobody-asked")),
            (N, _answer(req, stream="stderr")),
            (N, _answer(req, task_id="t-2")),
            (N, _answer(req, attempt=f"{N}:2")),
        ):
            live.deliver(*forged)
        assert not fetch.done() and _rejected(live) == 5
        live.deliver(N, _answer(req))
        assert (await fetch).text == "so far\n"
        live.deliver(N, _answer(req))  # a duplicate, after the request closed
        assert _rejected(live) == 6 and not live._pending

    asyncio.run(scenario())


def test_an_unreachable_node_is_not_asked_and_silence_times_out() -> None:
    async def scenario() -> None:
        for presence, link in (("offline", LinkState.HEALTHY), ("online", LinkState.PARTITIONED)):
            live, uow = _live(presence, link)
            assert await live.fetch(N, "t-1", f"{N}:1", "stdout", 0) is None and not uow.sent
        live, uow = _live()
        assert await live.fetch("edge-9", "t-1", "edge-9:1", "stdout", 0) is None
        live.timeout_s = 0.01
        assert await live.fetch(N, "t-1", f"{N}:1", "stdout", 0) is None
        assert len(uow.sent) == 1 and not live._pending

    asyncio.run(scenario())


# ------------------------------------------------------------ the route, over a real controller


class _Node(NodeScript):
    """A node whose messages the test hands to the controller; it answers ``log_request``
    from ``output`` as an agent would (``edge_agent/logs_serve.py``)."""

    def __init__(self, node_id: str) -> None:
        super().__init__(node_id)
        self.out: list[tuple[str, bytes]] = []
        self.output = b""

    def _transmit(self, topic_: str, payload: bytes, *, wait: bool) -> None:
        self.out.append((topic_, payload))

    def answer(self, req: LogRequest) -> None:
        span = log_span(self.output, len(self.output), req.offset, req.max_bytes)
        self.publish(
            "up",
            LogChunk(
                req.request_id, req.task_id, req.attempt, req.stream, True, *span, len(self.output)
            ),
        )


def test_the_logs_route_reads_a_running_attempt_from_its_node(tmp_path: Path) -> None:
    async def main() -> None:
        node = _Node(N)
        asked: list[LogRequest] = []

        def send(node_id: str, payload: bytes, qos: int) -> None:
            env = decode(payload)
            if env.type == "log_request" and node_id == N:
                asked.append(env.body)
                node.answer(env.body)
                asyncio.get_running_loop().call_soon(hand_over)

        def hand_over() -> None:
            messages, node.out = node.out, []
            controller.ingest(messages)

        cfg = make_config(tmp_path)
        store = Store(cfg.db_path)
        controller = Controller(cfg, store, ControllerMetrics(), send=send)
        client = TestClient(TestServer(build_app(controller, token="t", max_body_bytes=1 << 20)))
        await client.start_server()
        try:
            node.hello()
            hand_over()
            controller.submit_task({"id": "t-1", "command": ["sleep", "60"]})
            assert controller.get_task("t-1")["node"] == N
            dot = node.start("t-1", 1)
            hand_over()
            node.output = b"line 1\nline 2\n"

            async def logs(**query: Any) -> dict[str, Any]:
                resp = await client.get(
                    "/api/v1/tasks/t-1/logs", params=query, headers={"Authorization": "Bearer t"}
                )
                assert resp.status == 200, await resp.text()
                return dict(await resp.json())

            live = await logs()
            assert (live["live"], live["available"], live["text"], live["next_offset"]) == (
                True,
                True,
                "line 1\nline 2\n",
                14,
            )
            assert asked[-1].attempt == f"{dot[0]}:{dot[1]}" and asked[-1].stream == "stdout"
            rest = await logs(offset="7")
            assert (rest["text"], rest["offset"], rest["truncated"]) == ("line 2\n", 7, False)

            node.publish("presence", Presence(status="offline"))
            hand_over()
            before = len(asked)
            gone = await logs()
            assert len(asked) == before  # an offline node is not asked
            assert (gone["available"], gone["live"], gone["text"]) == (False, False, "")
            assert gone["message"] == f"running on {N}; its log is available when it ends"
        finally:
            await client.close()
            store.close()

    asyncio.run(main())
