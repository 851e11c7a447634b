"""The relay side of the transport: take Opens for one cluster and run a handler per stream.

    async def handler(stream: ServerStream) -> None:
        body = b"".join([c async for c in stream.request_body()])
        await stream.send_head(200, [("Content-Type", "application/json")])
        await stream.send(b"{}")
        await stream.end()

    server = RelayServer(nc, cluster="prod", relay_id="relay-prod-a1", handler=handler)
    await server.start()

Replicas of one cluster queue-subscribe to `kg.req.<cluster>` (group `relay.<cluster>`), so each
Open goes to one healthy replica. The handler runs in a task the server owns. When the edge
cancels, the edge goes silent, or the stream is aborted, the handler task is cancelled (it sees
`asyncio.CancelledError`); `stream.failure` then says why, and `await stream.wait_closed()`
lets other tasks notice. A handler that returns without ending
the stream gets it ended for it (with `Error(internal)` if it never sent a head); one that raises
gets `Error(internal)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import CollectorRegistry

from broker import frames, subjects
from broker.errors import (
    FrameTooLargeError,
    MalformedFrameError,
    StreamAbortedError,
    StreamCancelledError,
    StreamError,
    StreamStateError,
    TransportClosedError,
)
from broker.nats_client import subscribe_direct
from broker.transport_config import TransportConfig
from broker.transport_endpoint import Endpoint
from broker.transport_stream import Encoded, StreamBase

log = logging.getLogger("kubegate.broker.transport_relay")

Handler = Callable[["ServerStream"], Awaitable[None]]
"""Serves one stream; runs in a task owned by the server."""


class ServerStream(StreamBase):
    """One proxied request as the relay holds it: request bytes in, response out."""

    def __init__(self, server: RelayServer, open_frame: frames.Open) -> None:
        super().__init__(
            server,
            open_frame,
            remote_peer=open_frame.peer,
            send_credit=open_frame.credit,
            window=server.config.window,
        )
        self._head_sent = False
        self._recv_ended = open_frame.end
        self._task: asyncio.Task[None] | None = None
        self._accept: tuple[str, frames.Accept, asyncio.TimerHandle | None] | None = None
        """An Accept not sent yet: its reply subject, and the timer of a deferred one (None:
        the handler's task sends it before the handler starts)."""

    @property
    def edge_id(self) -> str:
        return self.open.peer

    # -- a deferred Accept ----------------------------------------------------------------------

    def _defer_accept(self, reply: str, accept: frames.Accept) -> None:
        """Hold the Accept of a bodiless Open until this stream's first frame, or at most
        `TransportConfig.accept_within`. The edge sends nothing before it (no body), and a
        quick answer (most GETs) then leaves in the same socket write as its Accept: one
        message for the relay, nats-server and the edge to handle instead of two."""
        timer = asyncio.get_running_loop().call_later(
            self._ep.config.accept_within,
            lambda: asyncio.ensure_future(self._send_accept_quietly()),
        )
        self._accept = (reply, accept, timer)

    async def _send_accept(self) -> None:
        pending, self._accept = self._accept, None
        if pending is None:
            return
        reply, accept, timer = pending
        if timer is not None:
            timer.cancel()
        try:
            await self._ep._publish(reply, accept)
        except TransportClosedError as exc:
            self._lost_nats(exc)

    async def _send_accept_quietly(self) -> None:
        with contextlib.suppress(StreamError):
            await self._send_accept()

    async def _emit_parts(self, encode: Callable[[int], Encoded], *, force: bool = False) -> None:
        if self._accept is not None:
            await self._send_accept()
        await super()._emit_parts(encode, force=force)

    def _can_emit_now(self) -> bool:
        return self._accept is None  # the Accept goes first, and sending it means waiting

    @property
    def cancelled(self) -> bool:
        """The stream was cancelled, aborted or lost; the handler should stop."""
        return self._failure is not None

    @property
    def cancel_reason(self) -> str | None:
        f = self._failure
        if f is None:
            return None
        return f.reason if isinstance(f, StreamCancelledError) else str(f)

    def request_body(self) -> AsyncIterator[bytes]:
        """Async iterator over request-body (or tunnel upstream) chunks, until the edge ends."""
        return self._body()

    async def _body(self) -> AsyncIterator[bytes]:
        while (chunk := await self._read()) is not None:
            yield chunk

    async def read(self) -> bytes | None:
        """The next request chunk, or None once the edge ended its direction."""
        return await self._read()

    async def send_head(self, status: int, headers: list[tuple[str, str]] | None = None) -> None:
        """Send the response status and headers; once, before any `send`."""
        async with self._send_lock:
            await self._emit_head(status, headers)

    async def _emit_head(
        self,
        status: int,
        headers: list[tuple[str, str]] | None,
        body: bytes = b"",
        *,
        end: bool = False,
    ) -> None:
        """The `Head` frame, once (the caller holds the send lock)."""
        self._check_can_send()
        if self._head_sent:
            raise StreamStateError(self.id, "the response head was already sent")
        head = [(k, v) for k, v in headers or ()]
        await self._emit(
            lambda seq: frames.Head(seq=seq, status=status, headers=head, data=body, end=end)
        )
        self._head_sent = True

    async def respond(
        self, status: int, headers: list[tuple[str, str]] | None, body: bytes
    ) -> None:
        """Send a whole response: head, body, end. In one `Head` frame when the edge takes
        bodies there (`Open.head_body`) and the body fits its credit and one chunk, which saves
        the edge, nats-server and this relay two messages per small request; as `send_head`,
        `send`, `end` otherwise."""
        whole = False
        if self.open.head_body and len(body) <= min(self._credit, self._ep.config.chunk_size):
            async with self._send_lock:
                try:
                    await self._emit_head(status, headers, body, end=True)
                except FrameTooLargeError:
                    pass  # headers near the frame limit: they go alone, the body after
                else:
                    whole = self._send_closed = True
                    self._credit -= len(body)
                    self.bytes_sent += len(body)
        if whole:
            self._finish()
            return
        await self.send_head(status, headers)
        if body:
            await self.send(body)
        await self.end()

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send response (or tunnel downstream) bytes; waits while the edge's credit is used up."""
        if not self._head_sent:
            raise StreamStateError(self.id, "send_head must come before response bytes")
        await self._send_data(data, frames.ResponseChunk)

    def send_nowait(self, data: bytes) -> bool:
        """`send` all of `data` at once or nothing (False): the head was sent, no send under
        way, enough credit, NATS ready. For a protocol callback; after a False, `send` it
        (order is kept)."""
        return self._head_sent and self._send_data_nowait(data, frames.ResponseChunk)

    async def end(self) -> None:
        """The response is complete; the stream is finished at both ends."""
        if not self._head_sent:
            raise StreamStateError(self.id, "send_head must come before end")
        await self._send_end()
        self._finish()

    async def fail(self, code: str, message: str) -> None:
        """End the stream with an error the edge turns into a Status (e.g. `upstream`)."""
        if self._closed:
            return
        self._send_closed = True  # concurrent senders stop before their next chunk
        try:
            await self._emit(
                lambda seq: frames.Error(
                    seq=seq, code=frames.clip(code, 64), message=frames.clip(message)
                )
            )
        except StreamError:
            pass  # the stream failed meanwhile; nothing left to tell
        finally:
            self._finish()

    # -- frames from the edge ----------------------------------------------------------------

    def _handle(self, frame: frames.Frame) -> None:
        if isinstance(frame, frames.RequestChunk):
            self._on_data(frame.data)
        elif isinstance(frame, frames.Window):
            self._on_window(frame.credit)
        elif isinstance(frame, frames.End):
            self._on_end()
        elif isinstance(frame, frames.Cancel):
            self._fail(StreamCancelledError(self.id, frame.reason, by_peer=True), "remote_cancel")

    def _terminal_frame(self, seq: int, code: str, message: str) -> frames.Frame:
        return frames.Error(seq=seq, code=code, message=frames.clip(message))

    def _on_failed(self, failure: StreamError) -> None:
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()


class RelayServer(Endpoint):
    """The relay's end of the transport for one cluster and relay replica id."""

    role = "relay"
    accepts = frames.EDGE_TO_RELAY

    def __init__(
        self,
        nc: NatsClient,
        cluster: str,
        relay_id: str,
        handler: Handler,
        *,
        config: TransportConfig | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        super().__init__(nc, relay_id, config=config, registry=registry)
        self.cluster = cluster
        self._handler = handler
        self._open_sub: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def relay_id(self) -> str:
        return self.peer_id

    async def start(self) -> None:
        """Subscribe to this replica's frames, then join the cluster's queue group."""
        if self._started:
            return
        await super().start()
        try:
            self._open_sub = await subscribe_direct(
                self._nc,
                subjects.request_subject(self.cluster),
                self._on_open,
                queue=subjects.relay_queue(self.cluster),
            )
            await self._nc.flush()
        except nats.errors.Error as exc:
            raise TransportClosedError(
                f"cannot subscribe for cluster {self.cluster}: {exc}"
            ) from exc

    async def close(self, reason: str = "relay shutting down") -> None:
        """Leave the queue group first (no new streams), abort the open ones, and wait for
        their handlers to return."""
        if self._closed:
            return
        await self._unsubscribe(self._open_sub)
        await super().close(reason)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.config.close_timeout)
            for task in pending:
                log.error("handler ignored cancellation", extra={"task": task.get_name()})

    # -- opens -------------------------------------------------------------------------------

    async def _refuse(self, msg: Msg, code: str, message: str) -> None:
        log.info("open refused", extra={"code": code, "detail": message})
        try:
            await self._publish(msg.reply, frames.Error(seq=0, code=code, message=message))
        except TransportClosedError:
            pass

    def _on_open(self, msg: Msg) -> None:
        """The queue group's direct handler: validate an Open, register its stream and start
        its handler (which sends the Accept first, unless it is held); never raises."""
        try:
            self._accept_open(msg)
        except Exception:
            self.m.rejected("internal")
            log.exception("open handling failed", extra={"cluster": self.cluster})

    def _accept_open(self, msg: Msg) -> None:
        if not msg.reply:
            self.m.rejected("malformed")
            return
        try:
            frame = frames.decode_frame(msg.data, self.config.max_frame_bytes)
        except FrameTooLargeError as exc:
            self.m.rejected("oversize")
            self._chores.start(self._refuse(msg, frames.ErrorCode.MALFORMED, str(exc)))
            return
        except MalformedFrameError as exc:
            self.m.rejected("malformed")
            self._chores.start(self._refuse(msg, frames.ErrorCode.MALFORMED, frames.clip(str(exc))))
            return
        self.m.frame("in", frames.frame_type(frame), len(msg.data))
        if not isinstance(frame, frames.Open):
            self.m.rejected("protocol")
            self._chores.start(
                self._refuse(msg, frames.ErrorCode.PROTOCOL, "expected an open frame")
            )
            return
        refusal = self._refusal(frame)
        if refusal is not None:
            self._chores.start(self._refuse(msg, *refusal))
            return
        stream = ServerStream(self, frame)
        self._register(stream)
        accept = frames.Accept(relay=self.peer_id, credit=self.config.window)
        if frame.end and self.config.accept_within > 0:
            stream._defer_accept(msg.reply, accept)
        else:
            stream._accept = (msg.reply, accept, None)
        self.m.streams_opened.inc()
        task = asyncio.create_task(self._run(stream), name=f"kubegate-relay-stream-{stream.id}")
        stream._task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _refusal(self, frame: frames.Open) -> tuple[str, str] | None:
        if self._closed:
            return frames.ErrorCode.ABORTED, "relay shutting down"
        if frame.version != frames.PROTOCOL_VERSION:
            return frames.ErrorCode.UNSUPPORTED, f"protocol version {frame.version}"
        if frame.cluster != self.cluster:
            return frames.ErrorCode.WRONG_CLUSTER, f"this relay serves {self.cluster!r}"
        if frame.stream in self._streams:
            return frames.ErrorCode.DUPLICATE, f"stream {frame.stream} is already open"
        if len(self._streams) >= self.config.max_streams:
            return frames.ErrorCode.OVERLOADED, f"{len(self._streams)} streams open"
        return None

    # -- handlers ----------------------------------------------------------------------------

    async def _run(self, stream: ServerStream) -> None:
        pending = stream._accept
        if pending is not None and pending[2] is None:  # an Open with a body: accept at once
            try:
                await stream._send_accept()
            except StreamError:
                return  # NATS is gone: the stream failed, the edge times out or sees it end
        try:
            await self._handler(stream)
        except asyncio.CancelledError:
            if stream.failure is None:  # cancelled by something other than the stream
                await stream._abandon(
                    StreamAbortedError(stream.id, "handler cancelled", by_peer=False),
                    "abort",
                    frames.ErrorCode.ABORTED,
                    "handler cancelled",
                )
            raise
        except StreamError as exc:
            if not stream.closed:
                log.warning("handler failed", extra={"stream": stream.id, "error": str(exc)})
                await self._end_failed(stream, f"{type(exc).__name__}: {exc}")
        except Exception as exc:
            log.exception("handler raised", extra={"stream": stream.id})
            await self._end_failed(stream, f"{type(exc).__name__}: {exc}")
        else:
            if stream.closed:
                return
            if stream._head_sent:
                await self._end_quietly(stream)
            else:
                await self._end_failed(stream, "the handler returned without a response")

    async def _end_failed(self, stream: ServerStream, message: str) -> None:
        try:
            await stream.fail(frames.ErrorCode.INTERNAL, message)
        except StreamError:
            pass

    async def _end_quietly(self, stream: ServerStream) -> None:
        try:
            await stream.end()
        except StreamError:
            pass
