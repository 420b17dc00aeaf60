"""A fault-injecting TCP proxy: one per agent (and one for the controller), between
the process and the broker.

Why a proxy and not ``tc netem``: netem is not available on the CI kernel, and a
proxy gives per-node, per-direction faults without root (Toxiproxy's idea in
about 200 lines of asyncio).

Fault model, per direction (``up`` = client → upstream, i.e. agent → broker;
``down`` = upstream → client):

- **cut**: stop forwarding while *holding* the connection. Bytes stay unread in
  the kernel's socket buffers, as a partitioned TCP peer's would sit in its
  retransmit queue; EOFs are not propagated either. Whether the connection
  survives is up to the endpoints' keep-alives, exactly as on a real link.
  New connections are accepted and held silent (a connect that "hangs"); one
  opened while cut reaches the upstream only at the heal, and not at all if its
  client gave up first (a handshake that never got through leaves nothing on the
  far side: no abandoned connect replays its CONNECT into the broker at the heal).
- **delay**: each chunk is delivered ``ms ± jitter_ms`` after it was read, in
  order (a chunk never overtakes the previous one).
- **bandwidth**: at most ``bytes_per_s`` per direction per connection.
- **reset**: abort every open connection with a TCP RST on both sides.
- **flap**: alternate cut and healed on a schedule.
- **lossy** (only with ``mqtt=True``, which forwards whole MQTT packets): a share of
  the PUBLISH packets is dropped, a share sent twice (the copy with DUP set) and a share
  held back ``delay_ms`` while later packets pass (reordering). Every other packet
  passes: the connection stays up and looks healthy, it just loses, repeats and
  reorders messages, like a broker or bridge that misbehaves. The draws come from the
  proxy's seeded RNG.

All control methods are plain synchronous calls made on the proxy's event loop
thread (the runner's loop); :class:`ProxyStats` counts bytes forwarded per
direction for the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

from .mqtt_frames import PUBLISH, FrameError, Framer, packet_type, with_dup

__all__ = ["Direction", "FaultProxy", "Lossy", "ProxyStats"]

Direction = Literal["both", "up", "down"]
_CHUNK = 65536


@dataclass
class ProxyStats:
    """Bytes actually forwarded (after faults), per direction, plus connection counts."""

    bytes_up: int = 0
    bytes_down: int = 0
    connections: int = 0
    resets: int = 0
    publish_dropped: int = 0
    publish_duplicated: int = 0
    publish_delayed: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "connections": self.connections,
            "resets": self.resets,
            "publish_dropped": self.publish_dropped,
            "publish_duplicated": self.publish_duplicated,
            "publish_delayed": self.publish_delayed,
        }


@dataclass(frozen=True, slots=True)
class Lossy:
    """Shares (0..1) of PUBLISH packets dropped, duplicated or held back ``delay_ms``."""

    drop: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    delay_ms: float = 500.0

    def __post_init__(self) -> None:
        shares = (self.drop, self.duplicate, self.delay)
        if not all(0.0 <= x <= 1.0 for x in shares) or sum(shares) > 1.0:
            raise ValueError("lossy shares must each be in [0, 1] and add up to at most 1")
        if self.delay_ms < 0:
            raise ValueError("lossy delay_ms must be ≥ 0")


@dataclass
class _Link:
    """Fault settings of one direction; shared by every connection of the proxy."""

    open: asyncio.Event = field(default_factory=asyncio.Event)
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    bytes_per_s: float | None = None
    lossy: Lossy | None = None

    def __post_init__(self) -> None:
        self.open.set()


def _directions(direction: Direction) -> tuple[str, ...]:
    if direction == "both":
        return ("up", "down")
    if direction in ("up", "down"):
        return (direction,)
    raise ValueError(f"direction must be 'both', 'up' or 'down', not {direction!r}")


class FaultProxy:
    """Forward ``listen_host:port`` to ``upstream_host:upstream_port`` with faults.

    ``port=0`` binds a free port (read :attr:`port` after :meth:`start`). The
    jitter draws come from ``random.Random(seed)`` so a run is reproducible.
    """

    def __init__(
        self,
        name: str,
        upstream_host: str,
        upstream_port: int,
        *,
        listen_host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        mqtt: bool = False,
    ) -> None:
        """``mqtt=True``: the streams are MQTT; forward whole packets (needed by
        :meth:`set_lossy`)."""
        self.name = name
        self.mqtt = mqtt
        #: loss that :meth:`clear` keeps (the soak's "lossy broker under every scenario")
        self.baseline: Lossy | None = None
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.listen_host = listen_host
        self.port = port
        self.stats = ProxyStats()
        self._rng = random.Random(seed)
        self._links = {"up": _Link(), "down": _Link()}
        self._server: asyncio.Server | None = None
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flap: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, self.listen_host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        self.stop_flapping()
        if self._server is not None:
            self._server.close()
            self._server = None
        for pair in list(self._conns):
            for w in pair:
                w.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- faults ----------------------------------------------------------------------

    def cut(self, direction: Direction = "both") -> None:
        """Stop forwarding ``direction`` (connections are held, not closed)."""
        for d in _directions(direction):
            self._links[d].open.clear()

    def heal(self, direction: Direction = "both") -> None:
        """Resume forwarding ``direction``; also stops a flap schedule when healing both."""
        if direction == "both":
            self.stop_flapping()
        for d in _directions(direction):
            self._links[d].open.set()

    def set_delay(self, ms: float, jitter_ms: float = 0.0, direction: Direction = "both") -> None:
        if ms < 0 or jitter_ms < 0:
            raise ValueError("delay and jitter must be ≥ 0")
        for d in _directions(direction):
            self._links[d].delay_ms = ms
            self._links[d].jitter_ms = jitter_ms

    def set_bandwidth(self, bytes_per_s: float | None, direction: Direction = "both") -> None:
        """Limit throughput; ``None`` removes the limit."""
        if bytes_per_s is not None and bytes_per_s <= 0:
            raise ValueError("bandwidth must be > 0 bytes/s (or None for unlimited)")
        for d in _directions(direction):
            self._links[d].bytes_per_s = bytes_per_s

    def set_lossy(self, lossy: Lossy | None, direction: Direction = "both") -> None:
        """Lose, duplicate and reorder PUBLISH packets (``None`` stops it)."""
        if lossy is not None and not self.mqtt:
            raise ValueError(f"proxy {self.name}: lossy needs mqtt=True (packet framing)")
        for d in _directions(direction):
            self._links[d].lossy = lossy

    def clear(self) -> None:
        """Remove every fault: heal both ways, no delay, no bandwidth limit, no flapping,
        no loss beyond the :attr:`baseline`."""
        self.heal("both")
        self.set_delay(0.0, 0.0)
        self.set_bandwidth(None)
        self.set_lossy(self.baseline)

    def reset(self) -> int:
        """Abort every open connection with RST on both sides; returns how many."""
        count = 0
        for pair in list(self._conns):
            for w in pair:
                sock = w.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                w.transport.abort()
            count += 1
        self.stats.resets += count
        return count

    def flap(self, down_s: float, up_s: float, *, direction: Direction = "both") -> None:
        """Alternate ``down_s`` cut and ``up_s`` healed until :meth:`stop_flapping`
        (or :meth:`heal` of both directions)."""
        if down_s <= 0 or up_s <= 0:
            raise ValueError("flap periods must be > 0")
        self.stop_flapping()

        async def run() -> None:
            try:
                while True:
                    self.cut(direction)
                    await asyncio.sleep(down_s)
                    for d in _directions(direction):
                        self._links[d].open.set()
                    await asyncio.sleep(up_s)
            except asyncio.CancelledError:
                pass

        self._flap = asyncio.get_running_loop().create_task(run())

    def stop_flapping(self) -> None:
        if self._flap is not None:
            self._flap.cancel()
            self._flap = None

    @property
    def faults(self) -> dict[str, object]:
        """What is in force now, for the live display and the history."""
        out: dict[str, object] = {}
        cut = [d for d, link in self._links.items() if not link.open.is_set()]
        if cut:
            out["cut"] = "both" if len(cut) == 2 else cut[0]
        if self._flap is not None:
            out["flapping"] = True
        up = self._links["up"]
        if up.delay_ms or up.jitter_ms:
            out["delay_ms"] = up.delay_ms
            out["jitter_ms"] = up.jitter_ms
        if up.bytes_per_s is not None:
            out["bytes_per_s"] = up.bytes_per_s
        lossy = [d for d, link in self._links.items() if link.lossy is not None]
        if lossy:
            out["lossy"] = "both" if len(lossy) == 2 else lossy[0]
        return out

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    # -- forwarding ------------------------------------------------------------------

    def _spawn(self, coro: object) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        early = await self._held_until_open(c_reader)
        if early is None:  # the client gave up while cut: the upstream never hears of it
            c_writer.transport.abort()
            return
        try:
            u_reader, u_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            c_writer.transport.abort()
            return
        self.stats.connections += 1
        pair = (c_writer, u_writer)
        self._conns.add(pair)
        done = asyncio.Event()
        remaining = [2]

        def finished() -> None:
            remaining[0] -= 1
            if remaining[0] == 0:
                self._conns.discard(pair)
                for w in pair:
                    w.close()
                done.set()

        self._spawn(self._pump("up", c_reader, u_writer, finished, first=early))
        self._spawn(self._pump("down", u_reader, c_writer, finished))
        await done.wait()

    async def _held_until_open(self, reader: asyncio.StreamReader) -> bytes | None:
        """What a new client sent while the ``up`` link was cut, once it is open (``b""``
        when it was not cut); ``None`` if the client hung up first."""
        opened = self._links["up"].open
        early = bytearray()
        while not opened.is_set():
            read = asyncio.ensure_future(reader.read(_CHUNK))
            healed = asyncio.ensure_future(opened.wait())
            await asyncio.wait({read, healed}, return_when=asyncio.FIRST_COMPLETED)
            healed.cancel()
            if not read.done():
                read.cancel()  # nothing is lost: unread bytes stay in the reader
                with contextlib.suppress(asyncio.CancelledError):
                    await read
                break
            try:
                data = read.result()
            except OSError:
                return None
            if not data:
                return None
            early += data
        return bytes(early)

    def _mangle(
        self,
        link: _Link,
        packets: list[bytes],
        later: Callable[[bytes, float], Coroutine[Any, Any, None]],
    ) -> bytes:
        """The bytes to forward now for ``packets``, after the link's ``lossy`` draws;
        packets held back are handed to ``later(packet, delay_s)``."""
        lossy = link.lossy
        if lossy is None:
            return b"".join(packets)
        out: list[bytes] = []
        for packet in packets:
            if packet_type(packet) != PUBLISH:
                out.append(packet)
                continue
            draw = self._rng.random()
            if draw < lossy.drop:
                self.stats.publish_dropped += 1
            elif draw < lossy.drop + lossy.duplicate:
                self.stats.publish_duplicated += 1
                out += [packet, with_dup(packet)]
            elif draw < lossy.drop + lossy.duplicate + lossy.delay:
                self.stats.publish_delayed += 1
                self._spawn(later(packet, lossy.delay_ms / 1000.0))
            else:
                out.append(packet)
        return b"".join(out)

    async def _pump(
        self,
        direction: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        finished: object,
        first: bytes = b"",
    ) -> None:
        """Read → (hold while cut) → delay → throttle → write, preserving order;
        ``first``: bytes already read from ``reader``, sent ahead of the rest.

        Reading and writing are two tasks joined by a queue so a delay adds latency
        without cutting throughput to one chunk per delay.
        """
        link = self._links[direction]
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        framer = Framer() if self.mqtt else None

        async def later(packet: bytes, delay_s: float) -> None:
            await asyncio.sleep(delay_s)
            await queue.put((0.0, packet))

        async def read_side() -> None:
            nonlocal framer
            last_due = 0.0
            try:
                pending = first
                while True:
                    await link.open.wait()
                    data, pending = pending or await reader.read(_CHUNK), b""
                    if not data:
                        break
                    if framer is not None:
                        try:
                            data = self._mangle(link, framer.feed(data), later)
                        except FrameError:
                            data, framer = framer.take_rest(), None  # not MQTT: pass it on
                        if not data:
                            continue  # all held back (an unfinished packet, or lost)
                    delay = link.delay_ms
                    if link.jitter_ms:
                        delay += self._rng.uniform(-link.jitter_ms, link.jitter_ms)
                    last_due = max(last_due, loop.time() + max(0.0, delay) / 1000.0)
                    await queue.put((last_due, data))
            except (OSError, asyncio.IncompleteReadError):
                pass
            await queue.put((0.0, b""))

        async def write_side() -> None:
            try:
                while True:
                    due, data = await queue.get()
                    if not data:
                        # EOF travels like data: not through a cut.
                        await link.open.wait()
                        break
                    wait = due - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    while data:
                        await link.open.wait()
                        # Under a bandwidth limit, send slices of ~50 ms worth.
                        rate = link.bytes_per_s
                        size = max(1, int(rate / 20)) if rate else len(data)
                        piece, data = data[:size], data[size:]
                        writer.write(piece)
                        await writer.drain()
                        if direction == "up":
                            self.stats.bytes_up += len(piece)
                        else:
                            self.stats.bytes_down += len(piece)
                        if rate:
                            await asyncio.sleep(len(piece) / rate)
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError, RuntimeError):
                    if writer.can_write_eof():
                        writer.write_eof()
                    else:
                        writer.close()

        reader_task = loop.create_task(read_side())
        try:
            await write_side()
        finally:
            reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader_task
            finished()  # type: ignore[operator]
