"""What a connection received and its consumer has not read yet, as the pieces that arrived.

Shared by the edge's HTTP connections (request bodies, and the client's side of a tunnel) and
the relay's tunnels to the API server. Pieces are kept as the event loop delivered them (no
copy on the way in); the source is paused once `limit` bytes wait and resumed at half of it,
so one slow consumer holds back only its own connection. A sink may take what arrives before
it is queued (`set_sink`): the fast path of a tunnel, which otherwise wakes a task per read
only to pass the bytes on.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable


class ChunkQueue:
    """Bounded FIFO of received pieces feeding one consumer."""

    def __init__(self, limit: int, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        self._limit = limit
        self._pause = pause
        self._resume = resume
        self._paused = False
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._sink: Callable[[bytes], bool] | None = None

    def set_sink(self, sink: Callable[[bytes], bool] | None) -> None:
        """Offer what arrives to `sink` before queueing it: True means it took the bytes. Only
        while nothing is queued, so a refusal (False) queues them and all after them in order
        until the consumer has read the queue empty."""
        self._sink = sink

    def feed(self, data: bytes) -> None:
        if not data:
            return
        if self._sink is not None and not self._chunks and self._sink(data):
            return
        self._chunks.append(data)
        self._size += len(data)
        if self._size >= self._limit and not self._paused:
            self._paused = True
            self._pause()
        self._wake()

    def unread(self, data: bytes) -> None:
        """Put back, ahead of everything queued, what a reader took but did not use (the bytes
        that came with an HTTP 101, after the head its reader parsed)."""
        if not data:
            return
        self._chunks.appendleft(data)
        self._size += len(data)
        self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def set_error(self, exc: BaseException) -> None:
        """The connection failed: `read` raises `exc` once what was queued before is read."""
        if self._error is None:
            self._error = exc
        self._wake()

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and not yet read (never much more than the limit)."""
        return self._size

    async def read(self) -> bytes:
        """The oldest piece queued (waiting for one), or b"" at end of stream."""
        if not await self._wait():
            return b""
        chunk = self._chunks.popleft()
        self._took(len(chunk))
        return chunk

    async def read_all(self) -> bytes:
        """Everything queued so far (waiting for at least one byte), or b"" at end of stream.
        Taking all that queued up while the consumer was busy lets a bulk stream travel in
        few large pieces and a trickle without delay."""
        if not await self._wait():
            return b""
        if len(self._chunks) == 1:
            chunk = self._chunks.popleft()
        else:
            chunk = b"".join(self._chunks)
            self._chunks.clear()
        self._took(len(chunk))
        return chunk

    async def _wait(self) -> bool:
        """Until a piece is queued (True) or the stream ended (False); raises its error."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._eof:
                return False
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return True

    def _took(self, n: int) -> None:
        self._size -= n
        if self._paused and self._size <= self._limit // 2:
            self._paused = False
            self._resume()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
