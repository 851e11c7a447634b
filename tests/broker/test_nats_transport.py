"""`ChunkTransport`: what the loop receives reaches nats-py's read loop whole, the socket pauses
past the high-water mark, and kubegate's connections use it, over TLS too."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from nats.aio.client import Client

from broker.connection import connect
from broker.nats_transport import ChunkTransport
from broker.server import EmbeddedNats
from ops.sim.pki import CertificateAuthority


class Sender:
    """A plain TCP server that writes what a test hands it to the one client that connects
    (and reads from it only when a test does)."""

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.connected = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.connected.set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"nats://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def send(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)
        await self.writer.drain()


@pytest.fixture
async def sender() -> AsyncIterator[Sender]:
    s = Sender()
    yield s
    if s.writer is not None:
        s.writer.close()
    if s.server is not None:
        s.server.close()


async def _connected(sender: Sender, **kw: int) -> ChunkTransport:
    url = await sender.start()
    transport = ChunkTransport(**kw)
    await transport.connect(urlparse(url), buffer_size=0, connect_timeout=5)
    await asyncio.wait_for(sender.connected.wait(), 5)
    return transport


async def test_a_read_returns_everything_received_in_order(sender: Sender) -> None:
    transport = await _connected(sender)
    sent = [os.urandom(n) for n in (1, 1000, 70_000, 300_000)]
    for piece in sent:
        await sender.send(piece)
    got = b""
    while len(got) < sum(map(len, sent)):
        got += await asyncio.wait_for(transport.read(32768), 10)  # the size is not a bound
    assert got == b"".join(sent)
    transport.close()
    await asyncio.wait_for(transport.wait_closed(), 5)


async def test_lines_are_read_across_pieces_and_the_rest_is_kept(sender: Sender) -> None:
    transport = await _connected(sender)
    await sender.send(b"INFO {")
    await asyncio.sleep(0.05)
    await sender.send(b'"a":1}\r\nPONG\r\nMSG x 1 2\r\n')
    assert await asyncio.wait_for(transport.readline(), 5) == b'INFO {"a":1}\r\n'
    assert await asyncio.wait_for(transport.readline(), 5) == b"PONG\r\n"
    assert await asyncio.wait_for(transport.read(10), 5) == b"MSG x 1 2\r\n"
    transport.close()


async def test_the_socket_pauses_past_the_high_water_mark(sender: Sender) -> None:
    transport = await _connected(sender, high_water=64 * 1024)
    block = os.urandom(1024 * 1024)
    # nobody reads: the transport stops reading, so the kernel buffers fill and drain stalls
    sending = asyncio.ensure_future(sender.send(block * 16))
    await asyncio.sleep(0.5)
    assert transport._reading_paused and not sending.done()
    assert transport._size < 64 * 1024 + 1024 * 1024  # one loop read past the mark at most
    got = bytearray()
    while len(got) < 16 * len(block):
        got += await asyncio.wait_for(transport.read(0), 10)
    await sending
    assert bytes(got) == block * 16 and not transport._reading_paused


async def test_the_end_of_the_connection_is_seen(sender: Sender) -> None:
    transport = await _connected(sender)
    await sender.send(b"last words")
    assert sender.writer is not None
    sender.writer.close()
    assert await asyncio.wait_for(transport.read(0), 5) == b"last words"
    assert await asyncio.wait_for(transport.read(0), 5) == b""
    assert transport.at_eof()


async def _carries_a_large_message(nc: Client, subject: str) -> None:
    assert isinstance(nc._transport, ChunkTransport)
    body = os.urandom(900_000)
    sub = await nc.subscribe(subject)
    await nc.publish(subject, body)
    assert (await sub.next_msg(timeout=10)).data == body


async def test_kubegate_connections_read_through_it(nats_url: str) -> None:
    nc = await connect(nats_url, name="t-transport")
    try:
        await _carries_a_large_message(nc, "transport.big")
    finally:
        await nc.close()


async def test_a_server_that_requires_tls_is_reached_through_it(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca")
    issued = ca.issue_server(["127.0.0.1", "localhost"])
    (tmp_path / "server.crt").write_bytes(issued.cert_pem)
    (tmp_path / "server.key").write_bytes(issued.key_pem)
    tls = f'tls {{ cert_file: "{tmp_path / "server.crt"}", key_file: "{tmp_path / "server.key"}" }}'
    server = EmbeddedNats(data_dir=tmp_path / "n", extra_config=tls).start()
    client_tls = ssl.create_default_context(cafile=str(ca.cert_path))
    try:
        nc = await connect(server.url, name="t-tls", tls=client_tls, tls_hostname="127.0.0.1")
        try:
            await _carries_a_large_message(nc, "transport.tls")
            assert nc._transport._transport.get_extra_info("ssl_object") is not None
        finally:
            await nc.close()
    finally:
        server.stop()


async def test_a_reconnect_is_not_ended_by_the_old_connection_closing(sender: Sender) -> None:
    transport = await _connected(sender)
    second = Sender()
    url = await second.start()
    try:
        # connect again at once: the first connection is aborted, and its connection_lost
        # arrives while (or after) the second one is made
        await transport.connect(urlparse(url), buffer_size=0, connect_timeout=5)
        await asyncio.wait_for(second.connected.wait(), 5)
        await asyncio.sleep(0.1)
        assert not transport.at_eof() and transport._error is None
        await second.send(b"from the new server")
        assert await asyncio.wait_for(transport.read(0), 5) == b"from the new server"
        transport.close()
        await asyncio.wait_for(transport.wait_closed(), 5)
    finally:
        if second.writer is not None:
            second.writer.close()
        if second.server is not None:
            second.server.close()


async def test_a_flood_right_after_the_tls_handshake_is_read_whole(tmp_path: Path) -> None:
    """What arrives before start_tls returns must not pause the socket under the TLS layer:
    the resume would go to the TLS transport and the connection would stall for good."""
    ca = CertificateAuthority(tmp_path / "ca")
    issued = ca.issue_server(["127.0.0.1"])
    (tmp_path / "s.crt").write_bytes(issued.cert_pem)
    (tmp_path / "s.key").write_bytes(issued.key_pem)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")
    flood = os.urandom(1024 * 1024) * 16
    done = asyncio.Event()

    async def handle(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"INFO {}\r\n")
        await w.drain()
        await w.start_tls(server_tls)
        w.write(flood)  # at once, as the handshake ends
        await w.drain()
        await done.wait()
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    transport = ChunkTransport(high_water=64 * 1024)
    try:
        port = server.sockets[0].getsockname()[1]
        await transport.connect(urlparse(f"nats://127.0.0.1:{port}"), 0, 5)
        assert await asyncio.wait_for(transport.readline(), 5) == b"INFO {}\r\n"
        client_tls = ssl.create_default_context(cafile=str(ca.cert_path))
        await transport.connect_tls("127.0.0.1", client_tls, 0, 5)
        await asyncio.sleep(0.3)  # let the flood hit the mark
        got = bytearray()
        while len(got) < len(flood):
            got += await asyncio.wait_for(transport.read(0), 5)
        assert bytes(got) == flood
    finally:
        done.set()
        transport.close()
        server.close()


async def test_drain_waits_while_the_peer_reads_nothing_and_returns_once_it_does(
    sender: Sender,
) -> None:
    transport = await _connected(sender)
    block = os.urandom(1024 * 1024)
    written = 0
    while not transport._writable.paused and written < 256 * len(block):
        transport.write(block)  # nobody reads: the loop pauses our writing
        written += len(block)
        await asyncio.sleep(0)
    assert transport._writable.paused, "the loop paused writing"
    draining = asyncio.ensure_future(transport.drain())
    await asyncio.sleep(0.2)
    assert not draining.done()
    assert sender.reader is not None
    got = 0
    while got < written:
        got += len(await asyncio.wait_for(sender.reader.read(1 << 20), 10))
    await asyncio.wait_for(draining, 10)
    assert got == written and not transport._writable.paused


async def test_drain_after_a_clean_close_raises_instead_of_waiting_forever(
    sender: Sender,
) -> None:
    """asyncio's TLS layer ends a connection with connection_lost(None) and no resume_writing;
    nats-py's close then drains what it buffered, and must get an error, not a hang."""
    transport = await _connected(sender)
    receiver = transport._protocol
    receiver.pause_writing()  # as the loop does when the socket's buffers are full
    receiver.connection_lost(None)
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(transport.drain(), 5)


def test_writing_without_a_connection_is_the_error_nats_py_expects() -> None:
    with pytest.raises(RuntimeError, match="not established"):
        ChunkTransport().writelines([b"PING\r\n"])
