"""The fault proxy on a plain TCP echo server: cut, one-way cut, delay, reset,
bandwidth and flapping. Assertions are on what arrives (and in what order), never
on wall-clock durations, except "nothing arrived while cut" which is a bounded wait."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from simulations.testbed.mqtt_frames import encode_length, with_dup
from simulations.testbed.proxy import FaultProxy, Lossy

pytestmark = pytest.mark.timeout(60)


class Echo:
    """An echo server that also records what it received (to tell directions apart)."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Echo:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await r.read(4096):
                self.received += data
                w.write(data)
                await w.drain()
        w.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


@contextlib.asynccontextmanager
async def echo_and_proxy() -> AsyncIterator[tuple[Echo, FaultProxy]]:
    echo = await Echo().start()
    proxy = await FaultProxy("n1", "127.0.0.1", echo.port, seed=1).start()
    try:
        yield echo, proxy
    finally:
        await proxy.stop()
        await echo.stop()


async def connect(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def roundtrip(r: asyncio.StreamReader, w: asyncio.StreamWriter, data: bytes) -> bytes:
    w.write(data)
    await w.drain()
    return await asyncio.wait_for(r.readexactly(len(data)), 10)


async def eventually(pred: object, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():  # type: ignore[operator]
        assert loop.time() < end, "condition never became true"
        await asyncio.sleep(0.01)


def test_passthrough_counts_bytes() -> None:
    async def main() -> None:
        async with echo_and_proxy() as (_, proxy):
            r, w = await connect(proxy)
            assert await roundtrip(r, w, b"hello") == b"hello"
            assert proxy.stats.bytes_up == 5
            await eventually(lambda: proxy.stats.bytes_down == 5)
            assert proxy.stats.connections == 1
            w.close()

    asyncio.run(main())


def test_cut_both_holds_then_delivers_on_heal() -> None:
    async def main() -> None:
        async with echo_and_proxy() as (echo, proxy):
            r, w = await connect(proxy)
            assert await roundtrip(r, w, b"a") == b"a"
            proxy.cut("both")
            assert proxy.faults == {"cut": "both"}
            w.write(b"during-cut")
            await w.drain()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(r.readexactly(1), 0.5)
            assert bytes(echo.received) == b"a"  # nothing reached the server
            assert proxy.connection_count == 1  # connection held, not closed
            proxy.heal()
            assert await asyncio.wait_for(r.readexactly(10), 10) == b"during-cut"
            w.close()

    asyncio.run(main())


def test_cut_holds_new_connections_silent() -> None:
    async def main() -> None:
        async with echo_and_proxy() as (echo, proxy):
            proxy.cut()
            r, w = await connect(proxy)
            w.write(b"x")
            await w.drain()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(r.readexactly(1), 0.5)
            assert echo.received == b""
            proxy.heal()
            assert await asyncio.wait_for(r.readexactly(1), 10) == b"x"
            w.close()

    asyncio.run(main())


def test_a_connect_abandoned_while_cut_never_reaches_the_upstream() -> None:
    """A connection opened during a cut and closed before the heal is gone, like a
    handshake that never got through: the heal replays nothing of it upstream."""

    async def main() -> None:
        async with echo_and_proxy() as (echo, proxy):
            proxy.cut()
            gone_r, gone = await connect(proxy)
            gone.write(b"abandoned")
            gone.write_eof()  # the client gives up (its reading side stays open)
            with contextlib.suppress(ConnectionError):  # the proxy drops it: EOF or reset
                assert await asyncio.wait_for(gone_r.read(), 10) == b""
            gone.close()
            r, w = await connect(proxy)
            w.write(b"kept")
            await w.drain()
            proxy.heal()
            assert await asyncio.wait_for(r.readexactly(4), 10) == b"kept"
            w.close()
            assert echo.received == b"kept"
            assert proxy.stats.connections == 1

    asyncio.run(main())


def test_one_way_cut_up_blocks_only_client_to_server() -> None:
    async def main() -> None:
        async with echo_and_proxy() as (echo, proxy):
            r, w = await connect(proxy)
            assert await roundtrip(r, w, b"1") == b"1"
            proxy.cut("up")
            assert proxy.faults == {"cut": "up"}
            w.write(b"2")
            await w.drain()
            await asyncio.sleep(0.3)
            assert bytes(echo.received) == b"1"
            proxy.heal("up")
            assert await asyncio.wait_for(r.readexactly(1), 10) == b"2"
            w.close()

    asyncio.run(main())


def test_one_way_cut_down_lets_requests_through_but_holds_replies() -> None:
    async def main() -> None:
        async with echo_and_proxy() as (echo, proxy):
            r, w = await connect(proxy)
            proxy.cut("down")
            w.write(b"ping")
            await w.drain()
            await eventually(lambda: bytes(echo.received) == b"ping")  # server got it
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(r.readexactly(1), 0.5)  # reply held
            proxy.heal("down")
            assert await asyncio.wait_for(r.readexactly(4), 10) == b"ping"
            w.close()

    asyncio.run(main())


def test_delay_keeps_order_and_holds_data_back() -> None:
    async def main() -> None:
        async with echo_and_proxy() as (_, proxy):
            r, w = await connect(proxy)
            proxy.set_delay(400, jitter_ms=100, direction="up")
            assert proxy.faults["delay_ms"] == 400
            for i in range(20):
                w.write(f"{i:02d}".encode())
                await w.drain()
            # Nothing can be back before the smallest possible delay (300 ms).
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(r.readexactly(1), 0.2)
            data = await asyncio.wait_for(r.readexactly(40), 10)
            assert data == b"".join(f"{i:02d}".encode() for i in range(20))
            w.close()

    asyncio.run(main())


def test_reset_aborts_connections_and_new_ones_work() -> None:
    async def main() -> None:
        async with echo_and_proxy() as (_, proxy):
            r, w = await connect(proxy)
            assert await roundtrip(r, w, b"x") == b"x"
            assert proxy.reset() == 1
            with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
                await asyncio.wait_for(r.readexactly(1), 10)
            await eventually(lambda: proxy.connection_count == 0)
            assert proxy.stats.resets == 1
            r2, w2 = await connect(proxy)
            assert await roundtrip(r2, w2, b"again") == b"again"
            w2.close()

    asyncio.run(main())


def test_bandwidth_limit_delivers_everything_in_order() -> None:
    async def main() -> None:
        async with echo_and_proxy() as (_, proxy):
            r, w = await connect(proxy)
            proxy.set_bandwidth(20_000, direction="down")
            payload = bytes(range(256)) * 40  # 10 KiB
            w.write(payload)
            await w.drain()
            # At 20 kB/s, 10 KiB cannot all be back within 0.1 s.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(r.readexactly(len(payload)), 0.1)
            proxy.set_bandwidth(None)
            w.close()

    asyncio.run(main())


def test_flap_alternates_and_heal_stops_it() -> None:
    async def main() -> None:
        async with echo_and_proxy() as (_, proxy):
            r, w = await connect(proxy)
            proxy.flap(0.2, 0.2)
            seen_cut = seen_open = False
            loop = asyncio.get_running_loop()
            end = loop.time() + 10
            while not (seen_cut and seen_open) and loop.time() < end:
                seen_cut |= proxy.faults.get("cut") == "both"
                seen_open |= "cut" not in proxy.faults
                await asyncio.sleep(0.02)
            assert seen_cut and seen_open
            proxy.heal()
            assert proxy.faults == {}
            assert await roundtrip(r, w, b"ok") == b"ok"
            w.close()

    asyncio.run(main())


def test_invalid_arguments_are_rejected() -> None:
    proxy = FaultProxy("n", "127.0.0.1", 1)
    with pytest.raises(ValueError):
        proxy.cut("sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        proxy.set_delay(-1)
    with pytest.raises(ValueError):
        proxy.set_bandwidth(0)


def mqtt_packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + encode_length(len(body)) + body


def test_lossy_drops_duplicates_and_reorders_only_publish_packets() -> None:
    """With mqtt framing on, ``lossy`` acts on whole PUBLISH packets of one direction;
    everything else passes untouched, in order."""
    pub1 = mqtt_packet(0x32, b"\x00\x01a\x00\x01one")
    pub2 = mqtt_packet(0x32, b"\x00\x01a\x00\x02two")
    ping = mqtt_packet(0xC0, b"")

    async def scenario() -> None:
        echo = await Echo().start()
        proxy = await FaultProxy("n1", "127.0.0.1", echo.port, seed=1, mqtt=True).start()
        try:
            r, w = await connect(proxy)
            proxy.set_lossy(Lossy(drop=1.0), "up")
            w.write(pub1[:3])  # a packet split across writes is still one packet
            await w.drain()
            w.write(pub1[3:] + ping)
            await w.drain()
            assert await asyncio.wait_for(r.readexactly(len(ping)), 10) == ping
            assert proxy.stats.publish_dropped == 1
            proxy.set_lossy(Lossy(duplicate=1.0), "up")
            w.write(pub2)
            twice = await asyncio.wait_for(r.readexactly(2 * len(pub2)), 10)
            assert twice == pub2 + with_dup(pub2)
            proxy.set_lossy(Lossy(delay=1.0, delay_ms=200), "up")
            w.write(pub1 + ping)
            await w.drain()
            got = await asyncio.wait_for(r.readexactly(len(ping) + len(pub1)), 10)
            assert got == ping + pub1  # the PUBLISH came after the packet sent behind it
            proxy.clear()
            assert proxy.faults == {}
            assert await roundtrip(r, w, pub2) == pub2
            w.close()
        finally:
            await proxy.stop()
            await echo.stop()

    asyncio.run(scenario())


def test_lossy_needs_mqtt_framing_and_valid_shares() -> None:
    proxy = FaultProxy("n1", "127.0.0.1", 9)
    with pytest.raises(ValueError, match="mqtt=True"):
        proxy.set_lossy(Lossy(drop=0.1))
    with pytest.raises(ValueError):
        Lossy(drop=0.6, duplicate=0.6)
