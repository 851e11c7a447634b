"""The relay's forwarding session towards the API server."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web

from relay.tunnel_conn import TunnelConnection
from relay.upstream import SMALL_BODY, UpgradedConnection, Upstream
from tests.support import eventually


@asynccontextmanager
async def api_server(
    path: str, handler: Callable[[web.Request], Awaitable[web.Response]]
) -> AsyncIterator[int]:
    """A one-route HTTP server standing in for the API server; yields its port."""
    app = web.Application()
    app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def test_cookies_an_api_server_sets_are_never_replayed_to_it() -> None:
    """One relay session forwards every user's requests: a cookie the API server (or an
    aggregated API behind it) sets for one request must not ride along on the next, which
    may be another user's."""
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        resp = web.json_response({"kind": "Status"})
        resp.set_cookie("session", "alice-only", path="/")
        return resp

    async with api_server("/api/v1/namespaces", handler) as port:
        upstream = Upstream(f"http://localhost:{port}", None)  # a name: jars ignore IP hosts
        try:
            for user_token in ("alice", "bob"):
                resp = await upstream.request(
                    "GET",
                    "/api/v1/namespaces",
                    "",
                    [("Authorization", f"Bearer {user_token}")],
                    None,
                )
                assert resp.status == 200
                assert any(k.lower() == "set-cookie" for k, _ in resp.headers)
                async for _ in resp.chunks:
                    pass
                await resp.close()
            assert seen == [None, None]
        finally:
            await upstream.close()


async def test_only_a_small_body_already_here_is_reported_complete() -> None:
    """`complete` lets the relay answer in one frame; a body over one chunk must stream as
    chunks even when all of it came with the head (not be joined into one copy first)."""
    small, large = b"s" * 1000, b"L" * (SMALL_BODY + 20_000)

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=large if request.query.get("size") == "large" else small)

    async with api_server("/body", handler) as port:
        upstream = Upstream(f"http://127.0.0.1:{port}", None)
        try:
            resp = await upstream.request("GET", "/body", "size=small", [], None)
            assert resp.complete and await resp.read() == small
            await resp.close()
            for _ in range(5):
                resp = await upstream.request("GET", "/body", "size=large", [], None)
                assert not resp.complete
                assert await resp.read() == large
                await resp.close()
        finally:
            await upstream.close()


async def test_a_tunnel_write_without_waiting_refuses_while_the_api_server_reads_nothing() -> None:
    """`write_nowait` takes bytes only while `drain` would not wait: what the relay's tunnel
    fast path writes can never pile up past the transport's limit."""
    release = asyncio.Event()
    received = bytearray()

    async def api_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        while data := await reader.read(1 << 20):
            received.extend(data)
        writer.close()

    server = await asyncio.start_server(api_server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    raw = await TunnelConnection.connect("127.0.0.1", port, None, None)
    conn = UpgradedConnection(raw)
    transport = raw.transport
    assert transport is not None
    transport.set_write_buffer_limits(high=64 * 1024)
    block = os.urandom(32 * 1024)
    taken = 0
    while conn.write_nowait(block):  # until socket buffers and the transport's limit are full
        taken += 1
        assert taken < 10_000, "never refused"
    assert transport.get_write_buffer_size() > 64 * 1024
    refused_at = transport.get_write_buffer_size()
    assert not conn.write_nowait(block)
    assert transport.get_write_buffer_size() == refused_at  # nothing taken
    release.set()  # the server reads: writing resumes
    await asyncio.wait_for(raw.drain(), 30)
    assert conn.write_nowait(b"end")
    conn.write_eof()
    await eventually(lambda: len(received) == taken * len(block) + 3, "all of it received")
    assert bytes(received) == block * taken + b"end"
    await conn.close()
    server.close()


async def _serve(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_a_tunnel_hands_what_arrives_to_its_sink_and_queues_what_it_refuses_in_order() -> (
    None
):
    """The download fast path: the sink (the stream's `send_nowait`) gets bytes in the
    connection's callback; a refusal queues them for `read`, and everything after them too
    until `read` has emptied the queue, so the order holds either way."""
    go, more = asyncio.Event(), asyncio.Event()

    async def api_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"early")  # came with the 101: read before anything forwarded
        await go.wait()
        writer.write(b"one")
        await writer.drain()
        await more.wait()
        writer.write(b"two")
        await writer.drain()
        await more.wait()
        writer.close()

    server, port = await _serve(api_server)
    raw = await TunnelConnection.connect("127.0.0.1", port, None, None)
    await eventually(lambda: raw._received.buffered_bytes, "the early bytes queued")
    conn = UpgradedConnection(raw)
    taking, order = True, []

    def sink(data: bytes) -> bool:
        if taking:
            order.append(("sink", data))
        return taking

    conn.forward(sink)
    taking = False  # refuses "one": it queues
    go.set()
    await eventually(lambda: raw._received.buffered_bytes == len(b"earlyone"), "one queued")
    taking = True  # would take "two", but "early" and "one" are still queued: it waits
    more.set()
    await eventually(lambda: raw._received.buffered_bytes == len(b"earlyonetwo"), "two behind")
    assert order == []
    while data := await conn.read():
        order.append(("read", data))
    assert order == [("read", b"early"), ("read", b"one"), ("read", b"two")]
    await conn.close()
    server.close()


async def test_bytes_after_the_101s_head_stay_ahead_of_what_arrived_since() -> None:
    """The upgrade's reader parses the 101 from a read that also holds the tunnel's first
    bytes and puts those back; bytes that arrived meanwhile must come after them."""
    go = asyncio.Event()

    async def api_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"early")  # the rest of the read the 101's head came in
        await writer.drain()
        await go.wait()
        writer.write(b"late")
        await writer.drain()
        writer.close()

    server, port = await _serve(api_server)
    raw = await TunnelConnection.connect("127.0.0.1", port, None, None)
    early = await raw.read()  # taken by the upgrade's reader
    assert early == b"early"
    go.set()
    await eventually(lambda: raw._received.buffered_bytes == len(b"late"), "late queued")
    raw.unread(early)
    conn = UpgradedConnection(raw)
    conn.forward(lambda data: True)  # would take anything, but only once the queue is read
    assert [await conn.read(), await conn.read(), await conn.read()] == [b"early", b"late", b""]
    server.close()


async def test_a_tunnel_stops_reading_past_its_high_water_and_sinks_again_once_read() -> None:
    block = os.urandom(64 * 1024)
    sent = 0

    async def api_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        while sent < 1024 * len(block):
            writer.write(block)
            sent += len(block)
            await writer.drain()
        writer.close()

    server, port = await _serve(api_server)
    raw = await TunnelConnection.connect("127.0.0.1", port, None, None, high_water=256 * 1024)
    raw.forward(lambda data: False)  # a stream out of credit
    await eventually(lambda: raw._received.buffered_bytes >= 256 * 1024, "reading paused")
    await asyncio.sleep(0.2)
    assert raw._received.buffered_bytes <= 256 * 1024 + 256 * 1024  # one read past the mark
    assert sent < 1024 * len(block)  # the server is held back, not buffered here
    sunk = bytearray()
    raw.forward(lambda data: sunk.extend(data) or True)  # credit again
    got = bytearray()
    while data := await raw.read():  # the queue empties; then the sink takes the rest
        got.extend(data)
    assert sunk and bytes(got + sunk) == block * 1024
    server.close()
