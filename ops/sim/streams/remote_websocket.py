"""exec/attach over WebSocket: the remote-command channel protocol (v5..v1, base64 too)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import WSMsgType, web

from ops.sim.streams import channel, status
from ops.sim.streams.errors import ChannelProtocolError, SessionClosedError
from ops.sim.streams.remote import EVENT_QUEUE, Event, Gone, Options, Resize, Stdin, StdinClosed

log = logging.getLogger("kubegate.ops.sim.streams.remote_websocket")


class WebSocketRemote:
    """The channel protocol over an aiohttp WebSocket."""

    def __init__(
        self, ws: web.WebSocketResponse, protocol: channel.ChannelProtocol, options: Options
    ) -> None:
        self.ws = ws
        self.protocol = protocol
        self.options = options
        self.events: asyncio.Queue[Event] = asyncio.Queue(EVENT_QUEUE)
        self._reader: asyncio.Task[None] | None = None
        self._resize = channel.ResizeDecoder()

    async def start(self) -> None:
        # kube tells the client the session is up with an empty message on its first stream.
        first = (
            channel.STDOUT
            if self.options.stdout
            else channel.STDERR
            if self.options.stderr
            else channel.ERROR
        )
        await self._send(first, b"")
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="ws reader")

    async def _read(self) -> None:
        stdin_open = self.options.stdin
        try:
            async for msg in self.ws:
                if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                    continue
                decoded = channel.decode(self.protocol, msg.data)
                match decoded:
                    case channel.Data(channel=channel.STDIN, data=data) if stdin_open and data:
                        await self.events.put(Stdin(data))
                    case channel.Data(channel=channel.RESIZE, data=data):
                        for size in self._resize.feed(data):
                            await self.events.put(Resize(size))
                    case channel.Close(channel=channel.STDIN) if stdin_open:
                        stdin_open = False
                        await self.events.put(StdinClosed())
        except ChannelProtocolError as exc:
            log.info("bad remote-command message; closing", extra={"error": str(exc)})
            await self.ws.close(code=1002, message=str(exc)[:120].encode())
        finally:
            await self.events.put(Gone())

    async def _send(self, stream: int, data: bytes) -> None:
        if self.ws.closed:
            raise SessionClosedError("websocket closed")
        message = channel.encode(self.protocol, stream, data)
        try:
            if isinstance(message, str):
                await self.ws.send_str(message)
            else:
                await self.ws.send_bytes(message)
        except ConnectionError as exc:
            raise SessionClosedError(f"websocket write failed: {exc}") from exc

    async def write(self, stream: int, data: bytes) -> None:
        await self._send(stream, data)

    async def finish(self, final: dict[str, Any]) -> None:
        try:
            if self.protocol.status_json:
                await self._send(channel.ERROR, status.encode(final))
            elif text := status.plain_text(final):
                await self._send(channel.ERROR, text.encode())
        except SessionClosedError:
            pass
        await self.abort()

    async def abort(self) -> None:
        """Send the close frame and wait (bounded by aiohttp's close timeout) for the reply."""
        with contextlib.suppress(ConnectionError):
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
