"""The edge side of the transport: open a stream to a cluster's relays and use it.

    client = EdgeClient(nc, peer_id="edge-1", registry=registry)
    await client.start()
    stream = await client.open("prod", method="GET", path="/api/v1/pods", user="alice")
    await stream.end_send()                      # no request body
    head = await stream.response_head()          # status and headers
    async for chunk in stream:                   # response body (after a 101: the tunnel)
        ...

`open` fails fast with `NoRelayError` when no relay of the cluster is connected (NATS reports
no responders), with `OpenTimeoutError` when relays exist but none accepted in time, and with
`OpenRejectedError` when a relay refused (overloaded, wrong cluster, ...).

The Open is published with the stream's own subject as its reply subject, so the relay's answer
(Accept or a refusal) comes in on the edge's one direct subscription, in order with the frames
that follow it, and no inbox, request future or timer task of nats-py's is involved.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterable

import nats.errors
from nats.aio.client import NO_RESPONDERS_STATUS
from nats.aio.msg import Msg

from broker import frames, subjects
from broker.errors import (
    NoRelayError,
    OpenRejectedError,
    OpenTimeoutError,
    RemoteStreamError,
    StreamAbortedError,
    StreamCancelledError,
    StreamError,
    StreamProtocolError,
    StreamRevokedError,
    TransportClosedError,
)
from broker.transport_endpoint import Endpoint
from broker.transport_stream import StreamBase


class ClientStream(StreamBase):
    """One proxied request as the edge holds it: request bytes out, response in."""

    def __init__(self, endpoint: EdgeClient, open_frame: frames.Open, window: int) -> None:
        super().__init__(endpoint, open_frame, remote_peer=None, send_credit=0, window=window)
        self._head: frames.Head | None = None
        self._head_ready = asyncio.Event()
        self._answer: asyncio.Future[frames.Accept | frames.Error | None] = (
            asyncio.get_running_loop().create_future()
        )
        """The relay's answer to the Open: Accept, Error, or None when NATS said that nobody
        serves the cluster (set by the endpoint's handler, in frame order)."""

    @property
    def relay_id(self) -> str | None:
        """The relay replica serving this stream."""
        return self.remote_peer

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send request-body (or tunnel upstream) bytes; waits while the relay's credit is spent."""
        await self._send_data(data, frames.RequestChunk)

    def send_nowait(self, data: bytes) -> bool:
        """`send` all of `data` at once or nothing (False): no send under way, enough credit,
        NATS ready. For a protocol callback; after a False, `send` it (order is kept)."""
        return self._send_data_nowait(data, frames.RequestChunk)

    async def end_send(self) -> None:
        """No more request bytes (half-close); the response keeps coming."""
        await self._send_end()

    async def response_head(self) -> frames.Head:
        """The response status and headers, once the relay sent them."""
        while self._head is None:
            if self._failure is not None:
                raise self._failure
            await self._head_ready.wait()
        return self._head

    async def read(self) -> bytes | None:
        """The next response chunk, or None when the response is complete."""
        return await self._read()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._body()

    async def _body(self) -> AsyncIterator[bytes]:
        while (chunk := await self._read()) is not None:
            yield chunk

    async def cancel(self, reason: str = "cancelled by the client") -> None:
        """Give up the stream: the relay cancels its handler; local waiters see
        `StreamCancelledError`. A no-op once the stream has ended."""
        if self._closed:
            return  # the usual case: the edge's request finished and cancels just in case
        await self._abandon(
            StreamCancelledError(self.id, reason, by_peer=False),
            "cancel",
            frames.ErrorCode.ABORTED,
            reason,
        )

    async def __aenter__(self) -> ClientStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self.closed:
            await self.cancel("closed by the edge")

    # -- frames from the relay ---------------------------------------------------------------

    def _on_answer(self, answer: frames.Accept | frames.Error | None) -> None:
        if self._answer.done():
            return
        if isinstance(answer, frames.Accept):
            self._set_remote(answer.relay)
            self.last_heard = time.monotonic()
            if answer.credit:
                self._on_window(answer.credit)
        self._answer.set_result(answer)

    def _handle(self, frame: frames.Frame) -> None:
        if isinstance(frame, frames.ResponseChunk):
            if self._head is None:
                raise StreamProtocolError(self.id, "response bytes before the head")
            self._on_data(frame.data)
        elif isinstance(frame, frames.Window):
            self._on_window(frame.credit)
        elif isinstance(frame, frames.Head):
            if self._head is not None:
                raise StreamProtocolError(self.id, "a second response head")
            self._head = frame
            self._head_ready.set()
            if frame.data:
                self._on_data(frame.data)
            if frame.end:
                self._on_end()
                self._finish()
        elif isinstance(frame, frames.End):
            if self._head is None:
                raise StreamProtocolError(self.id, "response ended without a head")
            self._on_end()
            self._finish()
        elif isinstance(frame, frames.Error):
            failure: StreamError
            if frame.code == frames.ErrorCode.REVOKED:
                failure = StreamRevokedError(self.id, frame.message, by_peer=True)
                reason = "remote_abort"
            elif frame.code == frames.ErrorCode.ABORTED:
                failure = StreamAbortedError(self.id, frame.message, by_peer=True)
                reason = "remote_abort"
            else:
                failure = RemoteStreamError(self.id, frame.code, frame.message)
                reason = "remote_error"
            self._fail(failure, reason)

    def _terminal_frame(self, seq: int, code: str, message: str) -> frames.Frame:
        return frames.Cancel(seq=seq, reason=frames.clip(message))

    def _wake_all(self) -> None:
        super()._wake_all()
        self._head_ready.set()


class EdgeClient(Endpoint):
    """The edge's end of the transport: one per NATS connection and edge peer id."""

    role = "edge"
    accepts = frames.RELAY_TO_EDGE

    async def open(
        self,
        cluster: str,
        *,
        method: str,
        path: str,
        user: str,
        query: str = "",
        headers: Iterable[tuple[str, str]] = (),
        groups: Iterable[str] = (),
        request_id: str = "",
        has_body: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 - bounds the NATS request/reply
    ) -> ClientStream:
        """Open a stream to one relay replica of `cluster` for one HTTP request.

        `has_body=False` (a GET, a watch) closes the request direction in the Open itself."""
        if self._closed or not self._started:
            raise TransportClosedError("the edge client is not running")
        timeout = self.config.open_timeout if timeout is None else timeout
        open_frame = frames.Open(
            stream=secrets.token_hex(12),
            peer=self.peer_id,
            cluster=cluster,
            method=method,
            path=path,
            query=query,
            headers=[(k, v) for k, v in headers],
            user=user,
            groups=list(groups),
            request_id=request_id,
            credit=self.config.window,
            end=not has_body,
            head_body=True,
        )
        data = frames.encode_frame(open_frame, self.config.max_frame_bytes, validate=True)
        stream = ClientStream(self, open_frame, self.config.window)
        stream._send_closed = open_frame.end
        self._register(stream)  # before the Open: the answer comes on the stream's subject
        try:
            answer = await self._request_open(stream, cluster, data, timeout)
        except BaseException:
            stream._finish()
            raise
        if isinstance(answer, frames.Error):
            stream._finish()
            raise OpenRejectedError(cluster, answer.code, answer.message)
        self.m.streams_opened.inc()
        failure = stream.failure
        if isinstance(failure, StreamProtocolError):  # broken before the Accept arrived
            await stream._notify_peer(frames.ErrorCode.PROTOCOL, failure.detail)
        return stream  # a stream that already ended reports how on first use

    async def _request_open(
        self,
        stream: ClientStream,
        cluster: str,
        data: bytes,
        timeout: float,  # noqa: ASYNC109
    ) -> frames.Accept | frames.Error:
        """Publish the Open (replies to the stream's subject) and wait for the answer."""
        answer = stream._answer
        try:
            await self._nc.publish(
                subjects.request_subject(cluster),
                data,
                reply=subjects.stream_subject(self.peer_id, stream.id),
            )
        except nats.errors.Error as exc:
            raise TransportClosedError(f"cannot send Open for {cluster!r}: {exc!r}") from exc
        self.m.frame("out", "open", len(data))

        def give_up() -> None:
            if not answer.done():
                answer.set_exception(OpenTimeoutError(cluster, timeout))

        expire = asyncio.get_running_loop().call_later(timeout, give_up)
        try:
            result = await answer
        finally:
            expire.cancel()
        if result is None:
            raise NoRelayError(cluster)
        return result

    # -- answers to Opens ---------------------------------------------------------------------

    def _on_status(self, msg: Msg) -> bool:
        """NATS's "no responders" for an Open (no relay of the cluster is subscribed)."""
        headers = msg.headers
        if not headers or headers.get("Status") != NO_RESPONDERS_STATUS:
            return False
        stream = self._streams.get(subjects.last_token(msg.subject))
        if isinstance(stream, ClientStream):
            stream._on_answer(None)
        return True

    def _on_answer(self, stream: StreamBase, frame: frames.Frame) -> bool:
        """An Accept, or a refusal (an Error numbered 0), for a stream waiting for one."""
        if not isinstance(stream, ClientStream) or stream._answer.done():
            return False
        if isinstance(frame, frames.Accept):
            stream._on_answer(frame)
            return True
        if isinstance(frame, frames.Error) and frame.seq == 0:
            stream._on_answer(frame)
            return True
        return False
