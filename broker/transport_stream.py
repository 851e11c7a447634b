"""One end of a stream: sequence numbers, credit windows, the receive buffer and termination.

Shared by the edge's `ClientStream` and the relay's `ServerStream`, which add the frames of their
direction. Invariants kept here:

- Frames on the stream subject carry `seq` 1, 2, 3... per direction; a receiver that sees any
  other number fails the stream (NATS core may drop, never reorders one publisher's messages).
- A sender never has more than the granted credit of data in flight; the receiver buffers at most
  `window` bytes per stream and grants more only as its consumer reads. A slow consumer therefore
  stalls its own stream's sender and nothing else. A stream read fast (half its window within
  `grow_window_within`) doubles its window, up to `max_window`: bulk transfers are not held back by
  grant round trips, while the slow and idle streams that make up most of an edge's memory keep
  the small one.
- A stream ends exactly once: normally (`_finish`) or with a `StreamError` (`_fail`); every
  waiter (reader, credit-starved sender, head waiter) wakes up and sees the outcome.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from broker import frames, subjects
from broker.errors import (
    FrameTooLargeError,
    StreamClosedError,
    StreamError,
    StreamProtocolError,
    TransportClosedError,
)
from broker.nats_parser import Buffer

if TYPE_CHECKING:
    from broker.transport_endpoint import Endpoint

Encoded = tuple[tuple[Buffer, ...], str]
"""One frame ready for NATS: its bytes in parts (a data frame's head and data), its type."""


@dataclass(frozen=True)
class LiveStream:
    """A snapshot of one open stream, for listings (who is watching what) and revocation."""

    stream_id: str
    user: str
    groups: tuple[str, ...]
    cluster: str
    method: str
    path: str
    request_id: str
    peer: str | None  # the other side's peer id (None while an edge waits for Accept)
    opened_at: float  # wall-clock seconds
    bytes_sent: int
    bytes_received: int


class StreamBase:
    """State of one stream at one end; subclasses handle their direction's frames."""

    def __init__(
        self,
        endpoint: Endpoint,
        open_frame: frames.Open,
        *,
        remote_peer: str | None,
        send_credit: int,
        window: int,
    ) -> None:
        self._ep = endpoint
        self.open = open_frame
        self.id = open_frame.stream
        self.opened_at = time.time()
        self.last_heard = time.monotonic()
        self.remote_peer: str | None = None
        self._subject = ""
        if remote_peer is not None:
            self._set_remote(remote_peer)
        # sending
        self._out_seq = 0
        self._credit = send_credit
        self._credit_changed = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._send_closed = False
        self.bytes_sent = 0
        # receiving
        self._in_seq = 0
        self._window = window
        self._max_window = max(window, endpoint.config.max_window)
        self._grow_within = endpoint.config.grow_window_within
        self._granted = window
        self._last_grant = float("-inf")  # the pace is judged between grants, not from the open
        self._received = 0
        self._consumed = 0
        self._chunks: deque[bytes] = deque()
        self._sink: Callable[[Buffer], bool] | None = None
        self._readable = asyncio.Event()
        self._recv_ended = False
        self.bytes_received = 0
        # termination
        self._closed = False
        self._failure: StreamError | None = None
        self._terminated = asyncio.Event()

    # -- public state ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """The stream ended (normally or not); nothing more can be sent."""
        return self._closed

    @property
    def failure(self) -> StreamError | None:
        """Why the stream failed (cancelled, aborted, peer lost, ...), or None."""
        return self._failure

    @property
    def buffered_bytes(self) -> int:
        """Received bytes not yet read; never more than the window."""
        return self._received - self._consumed

    async def wait_closed(self) -> StreamError | None:
        """Wait until the stream ends; returns its failure, if any."""
        await self._terminated.wait()
        return self._failure

    def snapshot(self) -> LiveStream:
        o = self.open
        return LiveStream(
            stream_id=self.id,
            user=o.user,
            groups=tuple(o.groups),
            cluster=o.cluster,
            method=o.method,
            path=o.path,
            request_id=o.request_id,
            peer=self.remote_peer,
            opened_at=self.opened_at,
            bytes_sent=self.bytes_sent,
            bytes_received=self.bytes_received,
        )

    # -- hooks for subclasses ----------------------------------------------------------------

    def _handle(self, frame: frames.Frame) -> None:
        """Apply one in-sequence frame; raise `StreamProtocolError` if it breaks the protocol."""
        raise NotImplementedError

    def _terminal_frame(self, seq: int, code: str, message: str) -> frames.Frame:
        """The frame that tells the other side this stream failed here."""
        raise NotImplementedError

    def _on_failed(self, failure: StreamError) -> None:
        """Called once when the stream fails (the relay cancels its handler here)."""

    # -- sending -----------------------------------------------------------------------------

    def _set_remote(self, peer: str) -> None:
        self.remote_peer = peer
        self._subject = subjects.stream_subject(peer, self.id)

    def _check_can_send(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise StreamClosedError(self.id, "the stream has finished")
        if self._send_closed:
            raise StreamClosedError(self.id, "this direction was already ended")

    async def _emit(self, make: Callable[[int], frames.Frame], *, force: bool = False) -> None:
        """Number and publish one frame (see `_emit_parts`)."""

        def encode(seq: int) -> Encoded:
            frame = make(seq)
            data = frames.encode_frame(frame, self._ep.config.max_frame_bytes)
            return (data,), frames.frame_type(frame)

        await self._emit_parts(encode, force=force)

    async def _emit_data(self, cls: type[frames.DataFrame], piece: memoryview) -> None:
        """`_emit` of one data frame as its head and `piece` (no frame copy: NATS gets both)."""
        tag = cls.__struct_config__.tag
        max_bytes = self._ep.config.max_frame_bytes

        def encode(seq: int) -> Encoded:
            head = frames.data_frame_head(cls, seq, len(piece))
            if len(head) + len(piece) > max_bytes:
                raise FrameTooLargeError(len(head) + len(piece), max_bytes, tag)
            return (head, piece), tag

        await self._emit_parts(encode)

    async def _emit_parts(self, encode: Callable[[int], Encoded], *, force: bool = False) -> None:
        """Number one frame and hand its bytes (`encode(seq)`: the parts and the frame type)
        to NATS. Numbering and handing over happen without a suspension point in between, so
        seq order is wire order. `force` sends on a stream that has ended (its last word)."""
        if self._closed and not force:
            raise self._failure or StreamClosedError(self.id, "the stream has finished")
        self._out_seq += 1
        try:
            parts, frame_type = encode(self._out_seq)
        except BaseException:
            self._out_seq -= 1  # nothing reached NATS: give the number back
            raise
        try:
            await self._ep._send_raw(self._subject, parts, frame_type)
        except TransportClosedError as exc:
            self._lost_nats(exc)

    def _can_emit_now(self) -> bool:
        """Whether a frame may go out without waiting for anything this end owes first (the
        relay's held Accept)."""
        return True

    def _emit_nowait(self, make: Callable[[int], frames.Frame]) -> bool:
        """`_emit` without a suspension point, if NATS takes the frame at once; False (nothing
        numbered, nothing sent) otherwise."""
        if self._closed or not self._can_emit_now():
            return False
        frame = make(self._out_seq + 1)
        data = frames.encode_frame(frame, self._ep.config.max_frame_bytes)
        if not self._ep._send_raw_nowait(self._subject, [(data,)], frames.frame_type(frame)):
            return False
        self._out_seq += 1
        return True

    def _send_data_nowait(self, data: bytes, chunk: type[frames.DataFrame]) -> bool:
        """Send all of `data` now, from a protocol callback, or nothing (False): the fast path
        of a tunnel, which otherwise wakes a task per read only to publish what it read.

        Only when no send is under way (the awaitable one keeps order), the credit covers all
        of `data` and NATS takes every chunk at once. `data` must be bytes: chunks are views."""
        n = len(data)
        if (
            not n
            or n > self._credit
            or self._send_lock.locked()
            or self._closed
            or self._send_closed
            or not self._can_emit_now()
        ):
            return False
        config = self._ep.config
        tag = chunk.__struct_config__.tag
        view = memoryview(data)
        messages = []
        for seq, at in enumerate(range(0, n, config.chunk_size), self._out_seq + 1):
            piece = view[at : at + config.chunk_size]
            head = frames.data_frame_head(chunk, seq, len(piece))
            if len(head) + len(piece) > config.max_frame_bytes:
                raise FrameTooLargeError(len(head) + len(piece), config.max_frame_bytes, tag)
            messages.append((head, piece))
        if not self._ep._send_raw_nowait(self._subject, messages, tag):
            return False
        self._out_seq += len(messages)
        self._credit -= n
        self.bytes_sent += n
        return True

    def _lost_nats(self, exc: TransportClosedError) -> NoReturn:
        failure = StreamClosedError(self.id, f"NATS connection lost: {exc}")
        self._fail(failure, "transport")
        raise failure from exc

    async def _send_data(
        self, data: bytes | bytearray | memoryview, chunk: type[frames.DataFrame]
    ) -> None:
        """Send `data` in chunks of at most `chunk_size`, each within the granted credit.

        The chunks go out as views of `data` and may be written after this returns, so bytes
        that could still change (a bytearray, a view of one) are copied first."""
        view = memoryview(data).cast("B")
        if not isinstance(view.obj, bytes):
            view = memoryview(bytes(view))
        if not view:
            self._check_can_send()
            return
        chunk_size = self._ep.config.chunk_size
        async with self._send_lock:
            while view:
                self._check_can_send()
                while self._credit <= 0:
                    self._ep.m.credit_stalls.inc()
                    self._credit_changed.clear()
                    await self._credit_changed.wait()
                    self._check_can_send()
                n = min(len(view), self._credit, chunk_size)
                piece, view = view[:n], view[n:]
                self._credit -= n
                await self._emit_data(chunk, piece)
                self.bytes_sent += n

    async def _send_end(self) -> None:
        async with self._send_lock:
            if self._send_closed and self._failure is None:
                return  # already half-closed (or opened without a body): nothing to do
            self._check_can_send()
            await self._emit(lambda seq: frames.End(seq=seq))
            self._send_closed = True

    # -- receiving ---------------------------------------------------------------------------

    def _receive(self, frame: frames.Frame) -> None:
        """One frame from the subscription, in arrival order; checks the sequence first."""
        seq = frame.seq  # type: ignore[union-attr]
        expected = self._in_seq + 1
        if seq != expected:
            raise StreamProtocolError(
                self.id, f"sequence gap: expected frame {expected}, got {seq} (frames lost)"
            )
        self._in_seq = seq
        self.last_heard = time.monotonic()
        self._handle(frame)

    def _on_window(self, credit: int) -> None:
        self._credit += credit
        self._credit_changed.set()

    def _on_data(self, data: Buffer) -> None:
        if self._recv_ended:
            raise StreamProtocolError(self.id, "data after end")
        n = len(data)
        if self._received + n > self._granted:
            raise StreamProtocolError(
                self.id, f"credit overrun: {self._received + n} bytes sent, {self._granted} granted"
            )
        self._received += n
        self.bytes_received += n
        if not n:
            return
        if self._sink is not None and not self._chunks and self._sink(data):
            self._consumed += n
            self._grant_now()
            return
        # readers get bytes; and a view would keep the whole message it came in alive
        self._chunks.append(data if type(data) is bytes else bytes(data))
        self._readable.set()

    def set_sink(self, sink: Callable[[Buffer], bool] | None) -> None:
        """Offer received data to `sink` as it arrives, before it is queued for `read`: the
        fast path of a tunnel, which otherwise wakes a task per frame only to write the bytes
        to a socket. `sink(data)` returns True if it took the data (written on, so read and
        credited at once) or False if it cannot now (its socket is full): the data is then
        queued, and so is everything after it until a reader has emptied the queue, so the
        order holds. The reader still sees the end and the stream's failure."""
        self._sink = sink

    def _on_end(self) -> None:
        if self._recv_ended:
            raise StreamProtocolError(self.id, "end received twice")
        self._recv_ended = True
        self._readable.set()

    @property
    def ready(self) -> bool:
        """True when the next read returns at once: a chunk, the end or a failure is here.
        Lets a writer hold a small piece for the next one instead of sending each alone."""
        return bool(self._chunks) or self._recv_ended or self._failure is not None

    async def _read(self) -> bytes | None:
        """The next received chunk; None once the peer ended its direction."""
        while True:
            if self._failure is not None:
                raise self._failure
            if self._chunks:
                chunk = self._chunks.popleft()
                self._consumed += len(chunk)
                await self._maybe_grant()
                return chunk
            if self._recv_ended:
                return None
            if self._closed:
                raise StreamClosedError(self.id, "the stream has finished")
            self._readable.clear()
            await self._readable.wait()

    async def _maybe_grant(self) -> None:
        """Top the peer's credit back up to a full window once half of it was read."""
        grant = self._next_grant()
        if grant:
            await self._send_grant(grant)

    def _grant_now(self) -> None:
        """`_maybe_grant` from a callback: the grant goes now if NATS takes it at once, else
        from a task."""
        grant = self._next_grant()
        if not grant or self._emit_nowait(lambda seq: frames.Window(seq=seq, credit=grant)):
            return
        self._ep._chores.start(self._send_grant(grant))

    def _next_grant(self) -> int:
        """The credit to grant now (booked as granted), or 0 while more than half the window
        is still outstanding."""
        if self._closed or self._recv_ended or self.remote_peer is None:
            return 0
        outstanding = self._granted - self._consumed
        if outstanding > self._window // 2:
            return 0
        now = time.monotonic()
        if self._window < self._max_window and now - self._last_grant < self._grow_within:
            # Half a window read this fast: the round trip of a grant, not the consumer, would
            # bound this stream. Doubling stays safe: a fast reader does not let buffers fill.
            self._window = min(self._window * 2, self._max_window)
        self._last_grant = now
        grant = self._consumed + self._window - self._granted
        self._granted += grant
        return grant

    async def _send_grant(self, grant: int) -> None:
        try:
            await self._emit(lambda seq: frames.Window(seq=seq, credit=grant))
        except StreamError:
            pass  # the stream failed meanwhile; the next read reports it

    # -- termination -------------------------------------------------------------------------

    def _wake_all(self) -> None:
        self._readable.set()
        self._credit_changed.set()
        self._terminated.set()

    def _finish(self) -> None:
        """End normally: both sides are done with the stream."""
        if self._closed:
            return
        self._closed = True
        self._ep._unregister(self)
        self._wake_all()

    def _fail(self, failure: StreamError, reason: str) -> bool:
        """End with `failure`; False if the stream had already ended."""
        if self._closed:
            return False
        self._closed = True
        self._failure = failure
        self._ep._unregister(self)
        self._ep.m.cancelled(reason)
        self._wake_all()
        self._on_failed(failure)
        return True

    async def _abandon(self, failure: StreamError, reason: str, code: str, message: str) -> bool:
        """Fail here and tell the other side (best effort); False if already ended."""
        if not self._fail(failure, reason):
            return False
        await self._notify_peer(code, message)
        return True

    async def _notify_peer(self, code: str, message: str) -> None:
        """Send the terminal frame, best effort: if it is lost, the peer's liveness check ends
        the stream there."""
        if self.remote_peer is None:
            return
        try:
            await self._emit(lambda seq: self._terminal_frame(seq, code, message), force=True)
        except (StreamError, TransportClosedError):
            pass
