"""The server SPDY session driven by a scripted client over an in-memory byte channel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from ops.sim.streams import spdy
from ops.sim.streams.spdy_session import SpdySession


@dataclass
class MemoryChannel:
    """One end of an in-memory byte pipe."""

    inbox: asyncio.Queue[bytes]
    outbox: asyncio.Queue[bytes]
    closed: bool = False

    async def read(self) -> bytes:
        return await self.inbox.get()

    async def write(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionResetError("closed")
        await self.outbox.put(data)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.outbox.put(b"")


@dataclass
class Client:
    """A SPDY client built from the codec: what client-go's spdystream does on the wire."""

    channel: MemoryChannel
    compressor: spdy.HeaderCompressor = field(default_factory=spdy.HeaderCompressor)
    decoder: spdy.FrameDecoder = field(default_factory=spdy.FrameDecoder)
    pending: list[spdy.Frame] = field(default_factory=list)

    async def send(self, frame: spdy.Frame) -> None:
        await self.channel.write(spdy.encode_frame(frame, self.compressor))

    async def recv(self) -> spdy.Frame | None:
        while not self.pending:
            data = await asyncio.wait_for(self.channel.read(), 10)
            if not data:
                return None
            self.pending += self.decoder.feed(data)
        return self.pending.pop(0)

    async def open(self, stream_id: int, **headers: str) -> None:
        await self.send(spdy.SynStreamFrame(stream_id, headers))


@pytest.fixture
async def pair() -> AsyncIterator[tuple[SpdySession, Client, asyncio.Task[None]]]:
    to_server: asyncio.Queue[bytes] = asyncio.Queue()
    to_client: asyncio.Queue[bytes] = asyncio.Queue()
    session = SpdySession(MemoryChannel(to_server, to_client), stream_buffer=64)
    client = Client(MemoryChannel(to_client, to_server))
    serving = asyncio.ensure_future(session.serve())
    yield session, client, serving
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)


async def test_stream_open_reply_data_and_half_close(pair) -> None:
    session, client, _ = pair
    await client.open(1, streamtype="data", port="80")
    stream = await session.accept()
    assert stream is not None and stream.header("streamType") == "data"
    await stream.reply()
    assert await client.recv() == spdy.SynReplyFrame(1, {})

    await client.send(spdy.DataFrame(1, b"ping"))
    await client.send(spdy.DataFrame(1, b"", fin=True))
    assert await stream.read() == b"ping"
    assert await stream.read() == b""

    await stream.write(b"x" * 70_000)  # split into DATA frames of at most 32 KiB
    sizes = []
    while sum(sizes) < 70_000:
        frame = await client.recv()
        assert isinstance(frame, spdy.DataFrame) and frame.stream_id == 1
        sizes.append(len(frame.data))
    assert max(sizes) <= 32 * 1024
    await stream.close()
    assert await client.recv() == spdy.DataFrame(1, b"", fin=True)


async def test_refusing_a_stream_replies_with_fin(pair) -> None:
    session, client, _ = pair
    await client.open(1, streamtype="bogus")
    stream = await session.accept()
    assert stream is not None
    await stream.reply(fin=True)
    assert await client.recv() == spdy.SynReplyFrame(1, {}, fin=True)


async def test_client_pings_are_echoed_and_server_ids_ignored(pair) -> None:
    _, client, _ = pair
    await client.send(spdy.PingFrame(2))  # even: a reply to a server ping we never sent
    await client.send(spdy.PingFrame(3))
    assert await client.recv() == spdy.PingFrame(3)


async def test_reset_by_the_client_ends_reads(pair) -> None:
    session, client, _ = pair
    await client.open(1)
    stream = await session.accept()
    assert stream is not None
    await client.send(spdy.RstStreamFrame(1, spdy.RstStatus.CANCEL))
    assert await stream.read() == b""
    assert stream.reset_status == spdy.RstStatus.CANCEL


async def test_invalid_stream_ids_end_the_session(pair) -> None:
    session, client, serving = pair
    await client.open(3)
    first = await session.accept()
    await client.open(1)  # ids must increase
    assert await client.recv() == spdy.GoAwayFrame(3, spdy.GoAwayStatus.PROTOCOL_ERROR)
    await asyncio.wait_for(serving, 10)
    assert first is not None and await first.read() == b""
    assert await session.accept() is None


async def test_goaway_from_the_client_stops_new_streams(pair) -> None:
    session, client, _ = pair
    await client.open(1)
    await client.send(spdy.GoAwayFrame(0))
    await client.open(3)
    assert await client.recv() == spdy.RstStreamFrame(3, spdy.RstStatus.REFUSED_STREAM)
    stream = await session.accept()
    assert stream is not None and stream.id == 1  # queued before the GOAWAY
    assert await session.accept() is None


async def test_data_for_an_unknown_stream_is_reset(pair) -> None:
    _, client, _ = pair
    await client.send(spdy.DataFrame(5, b"stray"))
    assert await client.recv() == spdy.RstStreamFrame(5, spdy.RstStatus.INVALID_STREAM)


async def test_hang_up_ends_every_stream(pair) -> None:
    session, client, serving = pair
    await client.open(1)
    stream = await session.accept()
    await client.channel.close()
    await asyncio.wait_for(serving, 10)
    assert stream is not None and await stream.read() == b""
    assert session.closed and await session.accept() is None


async def test_a_full_stream_buffer_holds_the_reader_back(pair) -> None:
    session, client, _ = pair
    await client.open(1)
    stream = await session.accept()
    assert stream is not None
    for _ in range(4):  # 4 x 40 bytes against a 64-byte buffer
        await client.send(spdy.DataFrame(1, b"y" * 40))
    await client.send(spdy.PingFrame(9))
    for _ in range(1000):  # the reader takes frames until the buffer is over its limit
        if stream._buffered > 64:
            break
        await asyncio.sleep(0)
    assert stream._buffered == 80
    assert client.channel.outbox.qsize() == 3  # two DATA frames and the ping wait unread
    received = b""
    while len(received) < 160:
        received += await stream.read()
    assert received == b"y" * 160
    assert await client.recv() == spdy.PingFrame(9)
