"""nats-py's TCP transport without asyncio's StreamReader: each read hands over what arrived.

nats-py reads its socket through a `StreamReader` limited to 32 KiB: every piece the event loop
receives is appended to the reader's buffer (a copy), read back out in 32 KiB slices (a second
copy), and the socket is paused and resumed each time 64 KiB are waiting. A relay carrying a
port-forward receives 100-256 KiB frames that way. This transport keeps the pieces as the loop
delivered them and gives them to the parser one by one, uncopied (`broker.nats_parser` takes a
payload from the pieces it spans with one copy), pausing the socket only past `high_water`
bytes.

It implements nats-py's `Transport` interface, and `broker.nats_client.NatsClient` installs it for
`nats://` and `tls://` servers. TLS (a `tls://` URL or a server that requires it) goes through
`loop.start_tls` on the same protocol.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any
from urllib.parse import ParseResult

from nats.aio.transport import Transport

from broker.write_gate import WriteGate

HIGH_WATER = 4 * 1024 * 1024
"""Received bytes the transport holds before it stops reading the socket (the server then
holds the rest; a slow consumer is the server's to detect)."""


class _Receiver(asyncio.Protocol):
    """One connection's socket end: queues what arrives and wakes the reader; tracks write
    flow control. A reconnect makes a new one: callbacks from an earlier connection (its
    `connection_lost` may come after the next connection began) are ignored."""

    def __init__(self, owner: ChunkTransport) -> None:
        self.owner = owner

    @property
    def current(self) -> bool:
        return self.owner._protocol is self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.current:
            self.owner._on_connected(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if self.current:
            self.owner._on_data(data)

    def eof_received(self) -> bool | None:
        if self.current:
            self.owner._on_eof(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.current:
            self.owner._on_lost(exc)

    def pause_writing(self) -> None:
        if self.current:
            self.owner._writable.pause()

    def resume_writing(self) -> None:
        if self.current:
            self.owner._writable.resume()


class ChunkTransport(Transport):
    """A nats-py `Transport` over an asyncio protocol; `read` returns each piece received."""

    def __init__(self, high_water: int = HIGH_WATER) -> None:
        self.high_water = high_water
        self._transport: asyncio.Transport | None = None
        self._protocol = _Receiver(self)
        self._reset()

    def _reset(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._error: Exception | None = None
        self._reading_paused = False
        self._upgrading = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._writable = WriteGate()
        self._lost = False
        self._closed: asyncio.Event = asyncio.Event()

    # -- nats-py's Transport ---------------------------------------------------------------

    async def connect(self, uri: ParseResult, buffer_size: int, connect_timeout: int) -> None:
        if self._transport is not None:  # a reconnect reuses the transport object
            self._transport.abort()
            self._transport = None
        self._reset()
        self._protocol = protocol = _Receiver(self)
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(
            loop.create_connection(lambda: protocol, uri.hostname, uri.port), connect_timeout
        )

    async def connect_tls(
        self,
        uri: str | ParseResult,
        ssl_context: ssl.SSLContext,
        buffer_size: int,
        connect_timeout: int,
    ) -> None:
        assert self._transport is not None, "connect must be called first"
        hostname = uri if isinstance(uri, str) else uri.hostname
        # What the server sends right after the handshake reaches `_on_data` before start_tls
        # returns the TLS transport: pausing then would pause the socket under the TLS layer,
        # and the later resume would go to the TLS transport and never undo it.
        self._upgrading = True
        try:
            upgraded = await asyncio.wait_for(
                asyncio.get_running_loop().start_tls(
                    self._transport, self._protocol, ssl_context, server_hostname=hostname
                ),
                connect_timeout,
            )
        finally:
            self._upgrading = False
        assert upgraded is not None
        self._transport = upgraded  # type: ignore[assignment]
        self._pause_if_full()

    def write(self, payload: Any) -> None:
        self._connected().write(payload)

    def writelines(self, payload: Any) -> None:
        self._connected().writelines(payload)

    def _connected(self) -> asyncio.Transport:
        if self._transport is None:
            # RuntimeError, as the asyncio transport gives once closed: nats-py's flusher
            # expects it (a failed reconnect can leave us without a connection)
            raise RuntimeError("the NATS connection is not established")
        return self._transport

    async def read(self, buffer_size: int) -> bytes:
        """The oldest piece received, as the event loop delivered it (waiting for one); b"" at
        the end. Never joined: the parser takes each payload from the pieces it spans with one
        copy anyway. `buffer_size` is ignored, as nats-py's WebSocket transport does."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            await self._wait_readable()
        data = self._chunks.popleft()
        self._size -= len(data)
        if self._reading_paused and self._size <= self.high_water // 2 and self._transport:
            self._reading_paused = False
            self._transport.resume_reading()
        return data

    async def readline(self) -> bytes:
        """Up to and including the next b"\\n" (the INFO and PONG lines of the handshake)."""
        while True:
            joined = b"".join(self._chunks)
            end = joined.find(b"\n")
            if end >= 0:
                line, rest = joined[: end + 1], joined[end + 1 :]
                self._chunks.clear()
                if rest:
                    self._chunks.append(rest)
                self._size = len(rest)
                return line
            if self._error is not None:
                raise self._error
            if self._eof:
                return joined
            await self._wait_readable()

    async def drain(self) -> None:
        if self._error is not None:
            raise self._error
        if self._lost:
            # as asyncio's StreamWriter: a connection that ended (even cleanly, which asyncio's
            # TLS layer reports without resuming writing) cannot be drained
            raise ConnectionResetError("connection lost")
        await self._writable.wait()

    async def wait_closed(self) -> None:
        if self._transport is not None:
            await self._closed.wait()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    def __bool__(self) -> bool:
        return self._transport is not None

    # -- from the protocol ---------------------------------------------------------------------

    def _on_connected(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def _on_data(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        self._pause_if_full()
        self._wake_reader()

    def _pause_if_full(self) -> None:
        if self._size > self.high_water and not self._reading_paused and not self._upgrading:
            self._reading_paused = True
            assert self._transport is not None
            self._transport.pause_reading()

    def _on_eof(self, exc: Exception | None) -> None:
        self._eof = True
        if exc is not None and self._error is None:
            self._error = exc
        self._wake_reader()

    def _on_lost(self, exc: Exception | None) -> None:
        self._on_eof(exc)
        self._lost = True
        self._writable.fail(exc or ConnectionResetError("connection lost"))
        self._closed.set()

    def _wake_reader(self) -> None:
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait_readable(self) -> None:
        self._read_waiter = asyncio.get_running_loop().create_future()
        try:
            await self._read_waiter
        finally:
            self._read_waiter = None
