"""A server-side SPDY/3.1 session over any byte channel, as kubelet runs it with spdystream.

The peer (kubectl/client-go) opens every stream; the session hands each new stream to whoever
calls `accept()`, who answers it with `stream.reply()` (or refuses it with `reply(fin=True)`,
as kubelet does for a stream it does not want). Pings are echoed. Flow-control windows are
parsed and ignored, exactly like spdystream: it never sends WINDOW_UPDATE, so enforcing windows
would stall it after 64 KiB; backpressure comes from the transport and bounded stream buffers.

The byte channel is either a raw upgraded HTTP/1.1 connection or a WebSocket carrying the SPDY
bytes in binary messages (SPDY/3.1+portforward.k8s.io); see `transports`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Protocol

from ops.sim.streams import spdy
from ops.sim.streams.errors import SessionClosedError, SpdyProtocolError

log = logging.getLogger("kubegate.ops.sim.streams.spdy_session")

DATA_CHUNK = 32 * 1024
DEFAULT_STREAM_BUFFER = 1 << 20
ACCEPT_BACKLOG = 256


class ByteChannel(Protocol):
    """Ordered, reliable bytes both ways (a TCP connection or a WebSocket tunnel)."""

    async def read(self) -> bytes:
        """The next bytes, or b"" once the peer has closed."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class SpdyStream:
    """One peer-initiated stream: headers, an inbound byte queue, and outbound DATA frames."""

    def __init__(self, session: SpdySession, stream_id: int, headers: spdy.Headers) -> None:
        self.session = session
        self.id = stream_id
        self.headers = dict(headers)
        self.replied = False
        self.remote_closed = False  # peer sent FIN or RST: nothing more to read
        self.local_closed = False  # we sent FIN or RST: nothing more to write
        self.reset_status: int | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._readable = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()

    def __repr__(self) -> str:
        return f"<SpdyStream {self.id} {self.headers.get('streamtype', '')}>"

    def header(self, name: str) -> str:
        """First value of a header ("" when absent); names are matched case-insensitively."""
        return self.headers.get(name.lower(), "").split("\x00", 1)[0]

    async def reply(self, headers: spdy.Headers | None = None, *, fin: bool = False) -> None:
        """Send SYN_REPLY; `fin=True` refuses the stream (kubelet's way to reject one)."""
        if self.replied:
            return
        self.replied = True
        if fin:
            self.local_closed = True
        await self.session.send(spdy.SynReplyFrame(self.id, dict(headers or {}), fin))

    async def read(self) -> bytes:
        """The next chunk of data, or b"" once the peer finished or reset the stream."""
        while not self._chunks:
            if self.remote_closed:
                return b""
            self._readable.clear()
            await self._readable.wait()
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._buffered <= self.session.stream_buffer // 2:
            self._space.set()
        return chunk

    async def write(self, data: bytes) -> None:
        if self.local_closed:
            raise SessionClosedError(f"stream {self.id} is closed for writing")
        view = memoryview(data)
        for start in range(0, len(view), DATA_CHUNK):
            await self.session.send(
                spdy.DataFrame(self.id, bytes(view[start : start + DATA_CHUNK]))
            )

    async def close(self) -> None:
        """Half-close: an empty DATA frame with FIN (what spdystream's Close sends)."""
        if self.local_closed or self.session.closed:
            self.local_closed = True
            return
        self.local_closed = True
        try:
            await self.session.send(spdy.DataFrame(self.id, b"", fin=True))
        except SessionClosedError:
            pass

    async def reset(self, status: int = spdy.RstStatus.CANCEL) -> None:
        """Abort both directions with RST_STREAM."""
        already = self.local_closed and self.remote_closed
        self.local_closed = True
        self._finish_remote()
        if not already and not self.session.closed:
            try:
                await self.session.send(spdy.RstStreamFrame(self.id, status))
            except SessionClosedError:
                pass
        self.session.forget(self)

    # Called by the session's reader.
    def _data(self, data: bytes, fin: bool) -> None:
        if data and not self.remote_closed:
            self._chunks.append(data)
            self._buffered += len(data)
            if self._buffered > self.session.stream_buffer:
                self._space.clear()
        if fin:
            self.remote_closed = True
        self._readable.set()

    def _finish_remote(self, status: int | None = None) -> None:
        if status is not None:
            self.reset_status = status
        self.remote_closed = True
        self._readable.set()
        self._space.set()

    async def _wait_space(self) -> None:
        await self._space.wait()


class SpdySession:
    """Reads frames from a channel, routes them to streams, and serialises writes."""

    def __init__(
        self,
        channel: ByteChannel,
        *,
        stream_buffer: int = DEFAULT_STREAM_BUFFER,
        max_frame_length: int = spdy.MAX_LENGTH,
    ) -> None:
        self.channel = channel
        self.stream_buffer = stream_buffer
        self.closed = False
        self._decoder = spdy.FrameDecoder(max_frame_length=max_frame_length)
        self._compressor = spdy.HeaderCompressor()
        self._write_lock = asyncio.Lock()
        self._streams: dict[int, SpdyStream] = {}
        self._last_peer_stream = 0
        self._accepting = True
        self._incoming: asyncio.Queue[SpdyStream] = asyncio.Queue(ACCEPT_BACKLOG)
        self._no_more_streams = asyncio.Event()
        self._done = asyncio.Event()

    @property
    def done(self) -> asyncio.Event:
        """Set once the read loop has ended (peer closed, GOAWAY handled, or error)."""
        return self._done

    async def serve(self) -> None:
        """Run the read loop until the peer goes away; then every stream sees EOF."""
        try:
            while True:
                data = await self.channel.read()
                if not data:
                    break
                for frame in self._decoder.feed(data):
                    await self._dispatch(frame)
        except SpdyProtocolError as exc:
            log.info("spdy protocol error, going away", extra={"error": str(exc)})
            status = spdy.GoAwayStatus.PROTOCOL_ERROR  # exc.status is an RST code, not GOAWAY's
            await self._send_quietly(spdy.GoAwayFrame(self._last_peer_stream, status))
        except (ConnectionError, SessionClosedError) as exc:
            log.debug("spdy channel ended", extra={"error": str(exc)})
        finally:
            self._end_streams()

    async def accept(self) -> SpdyStream | None:
        """The next stream the peer opened, or None once no more will come."""
        if not self._incoming.empty():
            return self._incoming.get_nowait()
        if self._no_more_streams.is_set():
            return None
        getter = asyncio.ensure_future(self._incoming.get())
        waiter = asyncio.ensure_future(self._no_more_streams.wait())
        try:
            await asyncio.wait({getter, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        return None

    async def send(self, frame: spdy.Frame) -> None:
        if self.closed:
            raise SessionClosedError("spdy session closed")
        async with self._write_lock:
            if self.closed:
                raise SessionClosedError("spdy session closed")
            data = spdy.encode_frame(frame, self._compressor)
            try:
                await self.channel.write(data)
            except (ConnectionError, RuntimeError) as exc:
                self.closed = True
                raise SessionClosedError(f"spdy channel write failed: {exc}") from exc

    async def goaway(self, status: int = spdy.GoAwayStatus.OK) -> None:
        self._stop_accepting()
        await self._send_quietly(spdy.GoAwayFrame(self._last_peer_stream, status))

    async def close(self) -> None:
        """GOAWAY, then close the channel; safe to call more than once."""
        if not self.closed:
            await self.goaway()
            self.closed = True
        try:
            await self.channel.close()
        except (ConnectionError, RuntimeError) as exc:
            log.debug("spdy channel close failed", extra={"error": str(exc)})
        self._end_streams()

    def forget(self, stream: SpdyStream) -> None:
        if self._streams.get(stream.id) is stream:
            del self._streams[stream.id]

    async def _send_quietly(self, frame: spdy.Frame) -> None:
        try:
            await self.send(frame)
        except SessionClosedError:
            pass

    async def _dispatch(self, frame: spdy.Frame) -> None:
        match frame:
            case spdy.DataFrame(stream_id=sid, data=data, fin=fin):
                stream = self._streams.get(sid)
                if stream is None:
                    if sid > self._last_peer_stream:
                        await self._send_quietly(
                            spdy.RstStreamFrame(sid, spdy.RstStatus.INVALID_STREAM)
                        )
                    return  # late data for a stream we already dropped
                stream._data(data, fin)
                if stream.remote_closed and stream.local_closed:
                    self.forget(stream)
                await stream._wait_space()
            case spdy.SynStreamFrame():
                await self._open(frame)
            case spdy.RstStreamFrame(stream_id=sid, status=status):
                stream = self._streams.pop(sid, None)
                if stream is not None:
                    stream.local_closed = True
                    stream._finish_remote(status)
            case spdy.HeadersFrame(stream_id=sid, fin=fin):
                stream = self._streams.get(sid)
                if stream is not None and fin:
                    stream._data(b"", True)
            case spdy.PingFrame(ping_id=ping_id):
                if ping_id % 2 == 1:  # the client's pings are odd; echo them
                    await self._send_quietly(frame)
            case spdy.GoAwayFrame():
                self._stop_accepting()
            case spdy.SettingsFrame() | spdy.WindowUpdateFrame() | spdy.SynReplyFrame():
                pass  # no flow-control windows (see module doc); we open no streams

    async def _open(self, frame: spdy.SynStreamFrame) -> None:
        sid = frame.stream_id
        if sid % 2 == 0 or sid <= self._last_peer_stream:
            raise SpdyProtocolError(f"peer opened invalid stream id {sid}", stream_id=sid)
        self._last_peer_stream = sid
        if not self._accepting:
            await self._send_quietly(spdy.RstStreamFrame(sid, spdy.RstStatus.REFUSED_STREAM))
            return
        stream = SpdyStream(self, sid, frame.headers)
        if frame.fin or frame.unidirectional:
            stream._data(b"", True)
        self._streams[sid] = stream
        await self._incoming.put(stream)

    def _stop_accepting(self) -> None:
        self._accepting = False
        self._no_more_streams.set()

    def _end_streams(self) -> None:
        self.closed = True
        self._stop_accepting()
        for stream in list(self._streams.values()):
            stream._finish_remote()
        self._streams.clear()
        self._done.set()
