"""The edge's HTTP/1.1 server: framing, streaming, limits and raw upgrades, over real TLS."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
import pytest

from edge.http1 import Http1Server, Limits, Request, Response
from tests.edge.conftest import Pki
from tests.support import eventually


async def _raw(port: int, ctx: ssl.SSLContext, data: bytes):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    writer.write(data)
    await writer.drain()
    return reader, writer


async def test_request_body_and_keepalive(pki: Pki) -> None:
    seen: list[tuple[str, str, bytes]] = []

    async def handler(req: Request, resp: Response) -> None:
        body = b"".join([chunk async for chunk in req.body])
        seen.append((req.method, req.target, body))
        await resp.send(200, b'{"ok":true}')

    server = Http1Server(handler, ssl_context=pki.server_context())
    port = await server.start()
    try:
        conn = aiohttp.TCPConnector(ssl=pki.client_context(), limit=1)
        async with aiohttp.ClientSession(connector=conn) as session:
            for i in range(3):
                async with session.post(
                    f"https://127.0.0.1:{port}/api/v1/x?i={i}", data=b"b" * (100_000 + i)
                ) as r:
                    assert r.status == 200
                    assert await r.json() == {"ok": True}
        assert [s[1] for s in seen] == [f"/api/v1/x?i={i}" for i in range(3)]
        assert [len(s[2]) for s in seen] == [100_000, 100_001, 100_002]
        assert len({id(c) for c in server._connections}) <= 1
    finally:
        await server.stop()


async def test_chunks_are_flushed_as_written(pki: Pki) -> None:
    release = asyncio.Event()

    async def handler(req: Request, resp: Response) -> None:
        await resp.start(200, [("Content-Type", "application/json")])
        await resp.write(b'{"type":"ADDED"}\n')
        await release.wait()
        await resp.write(b'{"type":"DELETED"}\n')
        await resp.finish()

    server = Http1Server(handler, ssl_context=pki.server_context())
    port = await server.start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"https://127.0.0.1:{port}/api/v1/pods?watch=1", ssl=pki.client_context()
            ) as r,
        ):
            # The first event arrives while the handler still holds the second one back.
            first = await asyncio.wait_for(r.content.readline(), 10)
            assert first == b'{"type":"ADDED"}\n'
            release.set()
            assert await r.content.readline() == b'{"type":"DELETED"}\n'
            assert await r.content.read() == b""
    finally:
        await server.stop()


async def test_held_pieces_leave_together_and_a_plain_write_flushes_them(pki: Pki) -> None:
    """A response already in memory goes out in one transport write (one TLS record, one
    syscall); pieces written without `more` still go at once, and the bytes are the same."""
    writes: list[int] = []
    release = asyncio.Event()

    async def handler(req: Request, resp: Response) -> None:
        transport = resp._conn.transport
        assert transport is not None
        real_write = transport.write

        def counting(data: bytes) -> None:
            writes.append(len(data))
            real_write(data)

        transport.write = counting  # type: ignore[method-assign]
        await resp.start(200, [("Content-Type", "application/json")], hold=True)
        await resp.write(b'{"a":', more=True)
        await resp.write(b"1}\n")  # no `more`: head and both pieces leave now, together
        await release.wait()
        await resp.write(b'{"b":2}\n', more=True)
        await resp.finish()  # the held piece and the chunked terminator, together

    server = Http1Server(handler, ssl_context=pki.server_context())
    port = await server.start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"https://127.0.0.1:{port}/x", ssl=pki.client_context()) as r,
        ):
            assert await asyncio.wait_for(r.content.readline(), 10) == b'{"a":1}\n'
            assert len(writes) == 1
            release.set()
            assert await r.content.read() == b'{"b":2}\n'
            assert r.headers["Transfer-Encoding"] == "chunked"
        assert len(writes) == 2
    finally:
        await server.stop()


async def test_a_read_takes_everything_buffered_in_one_piece(pki: Pki) -> None:
    requests: list[Request] = []
    release = asyncio.Event()
    reads: list[bytes] = []

    async def handler(req: Request, resp: Response) -> None:
        requests.append(req)
        await release.wait()
        async for chunk in req.body:
            reads.append(chunk)
        await resp.send(200, b"{}")

    async def buffered(n: int) -> None:
        async with asyncio.timeout(10):
            while not requests or requests[0].body.buffered_bytes < n:  # noqa: ASYNC110
                await asyncio.sleep(0.01)

    server = Http1Server(handler, ssl_context=pki.server_context())
    port = await server.start()
    try:
        head = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 30000\r\n\r\n"
        reader, writer = await _raw(port, pki.client_context(), head)
        for i, piece in enumerate((b"a" * 10_000, b"b" * 10_000, b"c" * 10_000)):
            writer.write(piece)
            await writer.drain()
            await buffered(10_000 * (i + 1))  # each piece arrives on its own
        release.set()
        async with asyncio.timeout(10):
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        assert reads == [b"a" * 10_000 + b"b" * 10_000 + b"c" * 10_000]
        writer.close()
    finally:
        await server.stop()


async def test_upgrade_carries_raw_bytes_both_ways(pki: Pki) -> None:
    async def handler(req: Request, resp: Response) -> None:
        assert req.upgrade
        tunnel = await resp.upgrade([("Upgrade", req.header("upgrade"))])
        while data := await tunnel.read():
            await tunnel.write(b"<" + data + b">")
        tunnel.close()

    server = Http1Server(handler, ssl_context=pki.server_context())
    port = await server.start()
    try:
        head = (
            b"POST /api/v1/namespaces/d/pods/p/portforward HTTP/1.1\r\nHost: x\r\n"
            b"Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n"
        )
        reader, writer = await _raw(port, pki.client_context(), head + b"early")
        status = await reader.readuntil(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 101 ")
        assert b"Upgrade: SPDY/3.1" in status
        assert await reader.readexactly(7) == b"<early>"
        writer.write(b"\x80\x03\x00\x01GET / HTTP/1.1\r\n\r\n")
        await writer.drain()
        got = await reader.readexactly(2 + 4 + 18)
        assert got == b"<\x80\x03\x00\x01GET / HTTP/1.1\r\n\r\n>"
        writer.close()
    finally:
        await server.stop()


async def test_a_tunnel_forwards_what_its_sink_takes_and_queues_the_rest_in_order(
    pki: Pki,
) -> None:
    taking = True
    order: list[tuple[str, bytes]] = []
    reading = asyncio.Event()
    tunnels = []

    def sink(data: bytes) -> bool:
        if taking:
            order.append(("sink", data))
        return taking

    async def handler(req: Request, resp: Response) -> None:
        tunnel = await resp.upgrade([("Upgrade", req.header("upgrade"))])
        tunnels.append(tunnel)
        tunnel.forward(sink)
        await reading.wait()
        while sum(len(d) for w, d in order if w == "read") < 1010:
            order.append(("read", await tunnel.read()))
        assert tunnel.write_nowait(memoryview(b"done"))  # the client reads: no waiting
        tunnel.close()

    server = Http1Server(handler, ssl_context=pki.server_context())
    port = await server.start()
    try:
        head = b"POST /x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n"
        reader, writer = await _raw(port, pki.client_context(), head)
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101 ")

        async def send(data: bytes, total: int) -> None:
            writer.write(data)
            await writer.drain()
            await eventually(lambda: tunnels[0].bytes_in + buffered() == total, "bytes in")

        def buffered() -> int:
            return tunnels[0]._incoming.buffered_bytes

        await eventually(lambda: tunnels, "the upgrade")
        await send(b"a" * 100_000, 100_000)
        assert buffered() == 0  # all taken as it arrived
        taking = False
        await send(b"b" * 1000, 101_000)
        assert buffered() == 1000
        taking = True  # it would take again, but the queue goes first
        await send(b"c" * 10, 101_010)
        assert buffered() == 1010
        reading.set()
        assert await reader.read() == b"done"
        assert b"".join(d for w, d in order if w == "sink") == b"a" * 100_000
        assert b"".join(d for w, d in order if w == "read") == b"b" * 1000 + b"c" * 10
        assert tunnels[0].bytes_in == 101_010
        assert tunnels[0]._response.bytes_out == 4
    finally:
        await server.stop()


async def test_writes_without_waiting_frame_like_write_and_refuse_when_they_would_wait(
    pki: Pki,
) -> None:
    outcomes: list[object] = []
    reader_paused = asyncio.Event()

    async def handler(req: Request, resp: Response) -> None:
        outcomes.append(resp.write_nowait(b"before start"))
        await resp.start(200, [("Content-Type", "text/plain")], hold=True)
        outcomes.append(resp.write_nowait(b"while the head is held"))
        await resp.write(b"first,")
        outcomes.append(resp.write_nowait(memoryview(b"second,")))
        await reader_paused.wait()  # the client stopped reading: fill until refused
        block, n = b"x" * 65536, 0
        while resp.write_nowait(block):
            n += 1
            assert n < 10_000, "never refused"
        outcomes.append(n)
        await resp.write(b"third")  # waits until the client reads again
        await resp.finish()

    server = Http1Server(handler, ssl_context=pki.server_context())
    port = await server.start()
    try:
        reader, writer = await _raw(
            port, pki.client_context(), b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"Transfer-Encoding: chunked" in head
        reader_paused.set()
        await eventually(lambda: len(outcomes) == 4, "the writes refused once the client stopped")
        body = b""
        while not body.endswith(b"0\r\n\r\n"):
            body += await reader.read(1 << 20)
        chunks, rest = [], body
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            chunks.append(rest[: int(size, 16)])
            rest = rest[int(size, 16) + 2 :]
        n = outcomes[3]
        assert outcomes[:3] == [False, False, True]
        assert isinstance(n, int) and n > 0
        assert chunks == [b"first,", b"second,", *[b"x" * 65536] * n, b"third", b""]
        writer.close()
    finally:
        await server.stop()


async def test_declined_upgrade_passes_status_and_closes(pki: Pki) -> None:
    async def handler(req: Request, resp: Response) -> None:
        await resp.send(403, b'{"kind":"Status","code":403}')

    server = Http1Server(handler, ssl_context=pki.server_context())
    port = await server.start()
    try:
        reader, writer = await _raw(
            port,
            pki.client_context(),
            b"GET /exec HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        data = await asyncio.wait_for(reader.read(), 10)
        assert data.startswith(b"HTTP/1.1 403 Forbidden\r\n")
        assert b"Connection: close" in data
        assert data.endswith(b'{"kind":"Status","code":403}')
        writer.close()
    finally:
        await server.stop()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n", 431),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9000\r\n\r\n" + b"z" * 9000, 413),
    ],
    ids=["malformed", "head-too-large", "body-too-large"],
)
async def test_bad_input_gets_a_status_not_a_hang(pki: Pki, request_bytes: bytes, status: int):
    async def handler(req: Request, resp: Response) -> None:
        async for _ in req.body:
            pass
        await resp.send(200, b"{}")

    limits = Limits(max_head_bytes=4096, max_body_bytes=8192, buffer_bytes=1024)
    server = Http1Server(handler, ssl_context=pki.server_context(), limits=limits)
    port = await server.start()
    try:
        reader, writer = await _raw(port, pki.client_context(), request_bytes)
        data = await asyncio.wait_for(reader.read(), 10)
        assert data.startswith(f"HTTP/1.1 {status} ".encode()), data[:80]
        writer.close()
    finally:
        await server.stop()


async def test_client_certificate_reaches_the_handler(pki: Pki) -> None:
    from cryptography import x509

    names: list[str | None] = []

    async def handler(req: Request, resp: Response) -> None:
        if req.peer_cert_der:
            cert = x509.load_der_x509_certificate(req.peer_cert_der)
            names.append(cert.subject.rfc4514_string())
        else:
            names.append(None)
        await resp.send(200, b"{}")

    server = Http1Server(handler, ssl_context=pki.server_context())
    port = await server.start()
    try:
        for ctx in (pki.client_context(pki.client_cert("alice")), pki.client_context()):
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"https://127.0.0.1:{port}/", ssl=ctx) as r,
            ):
                assert r.status == 200
        assert names == ["CN=alice", None]
    finally:
        await server.stop()


async def test_client_hangup_mid_stream_reaches_the_handler(pki: Pki) -> None:
    outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def handler(req: Request, resp: Response) -> None:
        await resp.start(200, [("Content-Type", "text/plain")])
        try:
            while True:
                await resp.write(b"x" * 65536)
                await asyncio.sleep(0.01)
        except ConnectionError:
            outcome.set_result("disconnected")
            raise

    server = Http1Server(handler, ssl_context=pki.server_context())
    port = await server.start()
    try:
        reader, writer = await _raw(
            port, pki.client_context(), b"GET /logs HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        await reader.readuntil(b"\r\n\r\n")
        writer.close()
        assert await asyncio.wait_for(outcome, 10) == "disconnected"
    finally:
        await server.stop()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize(
    ("case", "alert"),
    [("foreign-ca", "ALERT_UNKNOWN_CA"), ("expired", "ALERT_CERTIFICATE_EXPIRED")],
)
def test_a_refused_client_certificate_gets_the_tls_alert(
    pki: Pki, loop: str, case: str, alert: str
) -> None:
    """Both event loops kubegate runs on abort a failed handshake without sending OpenSSL's
    alert; the edge's TLS object makes it go out first, so the client can say why (kubectl:
    "remote error: tls: unknown certificate authority")."""
    import datetime as dt

    import uvloop

    from edge.ca import CertificateAuthority

    if case == "foreign-ca":
        cert = CertificateAuthority.create("someone else's CA").issue_client(
            "admin", dt.timedelta(hours=1)
        )
    else:
        a_day_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        cert = pki.ca.issue_client("admin", dt.timedelta(hours=1), now=a_day_ago)

    async def handler(req: Request, resp: Response) -> None:
        await resp.send(200, b"{}")

    async def attempt() -> str:
        server = Http1Server(handler, ssl_context=pki.server_context())
        port = await server.start()
        try:
            reader, writer = await _raw(port, pki.client_context(cert), b"GET / HTTP/1.1\r\n\r\n")
            try:
                await asyncio.wait_for(reader.read(), 10)
            except ssl.SSLError as exc:
                return str(exc)
            finally:
                writer.close()
            return "no error"
        finally:
            await server.stop()

    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        assert alert in runner.run(attempt())
