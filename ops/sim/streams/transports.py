"""Byte channels for a SPDY session: a raw upgraded HTTP/1.1 connection, or WebSocket messages.

aiohttp only switches protocols by itself for WebSocket; for `Upgrade: SPDY/3.1` it would keep
parsing the connection as HTTP. `RawUpgrade` therefore installs its own payload feeder on the
request's protocol (the hook aiohttp's own WebSocketResponse uses) before sending the 101, so
every byte after the response headers reaches the SPDY session untouched.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping

from aiohttp import WSMsgType, web

from ops.sim.streams.errors import SessionClosedError

log = logging.getLogger("kubegate.ops.sim.streams.transports")

READ_PAUSE_BYTES = 1 << 20


class _Feeder:
    """What aiohttp's RequestHandler feeds once a payload parser is installed."""

    def __init__(self, owner: RawUpgrade) -> None:
        self._owner = owner

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._owner._received(bytes(data))
        return False, b""

    def feed_eof(self) -> None:
        self._owner._received(b"")


class RawUpgrade:
    """The connection after `101 Switching Protocols`, as an ordered byte channel."""

    def __init__(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        self._request = request
        self._response = response
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False
        self._closed = False
        self._paused = False
        self._readable = asyncio.Event()

    @property
    def response(self) -> web.StreamResponse:
        """The prepared 101 response, for the handler to return to aiohttp."""
        return self._response

    @classmethod
    async def accept(cls, request: web.BaseRequest, headers: Mapping[str, str]) -> RawUpgrade:
        """Answer 101 with `headers` and take over the connection's bytes."""
        response = web.StreamResponse(status=101, headers=dict(headers))
        response.force_close()
        channel = cls(request, response)
        request.protocol.set_parser(_Feeder(channel))  # type: ignore[arg-type]
        request.protocol.keep_alive(False)
        await response.prepare(request)
        return channel

    def _received(self, data: bytes) -> None:
        if not data:
            self._eof = True
        elif not self._closed:
            self._chunks.append(data)
            self._buffered += len(data)
            if self._buffered > READ_PAUSE_BYTES and not self._paused:
                transport = self._request.transport
                if transport is not None:
                    transport.pause_reading()
                    self._paused = True
        self._readable.set()

    async def read(self) -> bytes:
        while not self._chunks:
            if self._eof or self._closed:
                return b""
            self._readable.clear()
            await self._readable.wait()
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered < READ_PAUSE_BYTES // 2:
            transport = self._request.transport
            if transport is not None:
                transport.resume_reading()
            self._paused = False
        return chunk

    async def write(self, data: bytes) -> None:
        transport = self._request.transport
        if self._closed or transport is None or transport.is_closing():
            raise SessionClosedError("upgraded connection is closed")
        await self._response.write(data)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._readable.set()
        transport = self._request.transport
        if transport is not None and not transport.is_closing():
            transport.close()  # flushes what is buffered, then sends FIN


class WebSocketBytes:
    """Bytes carried in binary WebSocket messages (client-go's TunnelingConnection)."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws

    async def read(self) -> bytes:
        while True:
            msg = await self._ws.receive()
            if msg.type == WSMsgType.BINARY:
                if msg.data:
                    return bytes(msg.data)
                continue
            if msg.type == WSMsgType.TEXT:
                log.info("text message on a SPDY tunnel; closing")
                await self._ws.close(code=1003, message=b"invalid message type received")
            return b""

    async def write(self, data: bytes) -> None:
        if self._ws.closed:
            raise SessionClosedError("websocket is closed")
        try:
            await self._ws.send_bytes(data)
        except ConnectionError as exc:
            raise SessionClosedError(f"websocket write failed: {exc}") from exc

    async def close(self) -> None:
        if not self._ws.closed:
            await self._ws.close()
