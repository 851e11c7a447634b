"""What the edge client and the relay server share: one peer on one NATS connection.

A peer subscribes once to `kg.s.<peer>.*` and demultiplexes by the subject's last token (a stream
id, or `%HB` for heartbeats). The subscription's handler is direct (`subscribe_direct`: it runs as
each message is parsed, with no task hop per frame) and never waits on a consumer: data goes into
the stream's buffer, which credit keeps below one window, so a slow reader of one stream cannot
hold up the others. The rare step that must wait, failing a stream and telling its peer after a
protocol violation, runs as a task.

Liveness is per peer, not per stream. Every `heartbeat_interval` a peer sends each peer it shares
streams with one `Heartbeat` listing those streams and the last seq it sent on each (split into
batches of `heartbeat_batch`). A stream is alive while its peer says something about it, a frame
or a heartbeat entry, at least every `dead_after` seconds; otherwise it fails with
`PeerLostError`. Heartbeats travel on the same subscription as the frames, so a heartbeat whose
last-sent seq is above what we received proves frames were lost (a stream error, not a hang).
Idle watches thus cost one heartbeat entry each, and messages scale with peers, not streams.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import CollectorRegistry

from broker import frames, subjects
from broker.errors import (
    FrameTooLargeError,
    MalformedFrameError,
    PeerLostError,
    StreamAbortedError,
    StreamClosedError,
    StreamProtocolError,
    TransportClosedError,
)
from broker.nats_client import publish_parts, publish_parts_nowait, subscribe_direct
from broker.nats_parser import Buffer
from broker.tasks import Chores
from broker.transport_config import TransportConfig
from broker.transport_metrics import TransportMetrics
from broker.transport_stream import LiveStream, StreamBase

log = logging.getLogger("kubegate.broker.transport_endpoint")

_DROP_WARNING_EVERY = 10.0
"""Seconds between warnings about dropped frames of one reason (each is still counted)."""

_RECENTLY_CLOSED = 16384
"""Ids of ended streams remembered so their in-flight frames are dropped quietly."""


class Endpoint:
    """Base of `EdgeClient` and `RelayServer`: subscription, stream table, liveness, metrics."""

    role = "peer"
    accepts: tuple[type, ...] = ()
    """Frame types this end takes on stream subjects."""

    def __init__(
        self,
        nc: NatsClient,
        peer_id: str,
        *,
        config: TransportConfig | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._nc = nc
        self.peer_id = peer_id
        self.config = config or TransportConfig()
        self.m = TransportMetrics.for_registry(registry or CollectorRegistry()).role(self.role)
        self._streams: dict[str, StreamBase] = {}
        self._recently_closed: OrderedDict[str, None] = OrderedDict()
        self._sub: Subscription | None = None
        self._liveness: asyncio.Task[None] | None = None
        self._last_drop_warning: dict[str, float] = {}
        self._started = False
        self._closed = False
        self._chores = Chores(f"transport {self.role} {peer_id}")
        """What the direct handlers start and cannot wait for: a refusal, telling a peer its
        stream failed."""

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to this peer's subjects and start the liveness loop."""
        if self._started:
            return
        self.config.check_payload_limit(self._nc.max_payload)
        self._started = True
        try:
            self._sub = await subscribe_direct(
                self._nc, subjects.peer_wildcard(self.peer_id), self._on_peer_msg
            )
        except nats.errors.Error as exc:
            raise TransportClosedError(f"cannot subscribe for peer {self.peer_id}: {exc}") from exc
        self._liveness = asyncio.create_task(
            self._liveness_loop(), name=f"kubegate-liveness-{self.role}-{self.peer_id}"
        )

    async def close(self, reason: str = "shutting down") -> None:
        """Abort every stream (telling the peers), stop the loop and unsubscribe.
        The NATS connection belongs to the caller and stays open."""
        if self._closed:
            return
        self._closed = True
        if self._liveness is not None:
            self._liveness.cancel()
            await asyncio.gather(self._liveness, return_exceptions=True)
        await self._unsubscribe(self._sub)
        for stream in list(self._streams.values()):
            await stream._abandon(
                StreamAbortedError(stream.id, reason, by_peer=False),
                "shutdown",
                frames.ErrorCode.ABORTED,
                reason,
            )

    async def _unsubscribe(self, sub: Subscription | None) -> None:
        if sub is None:
            return
        try:
            await sub.unsubscribe()
        except nats.errors.Error as exc:
            log.debug("unsubscribe failed", extra={"peer": self.peer_id, "error": str(exc)})

    async def __aenter__(self) -> Endpoint:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- live streams and revocation ---------------------------------------------------------

    def live_streams(self, user: str | None = None) -> list[LiveStream]:
        """Snapshots of the open streams, optionally only one user's."""
        return [s.snapshot() for s in self._streams.values() if user is None or s.open.user == user]

    async def abort(
        self, stream_id: str, reason: str, *, code: str = frames.ErrorCode.ABORTED
    ) -> bool:
        """Cut one stream: the local side sees `StreamAbortedError`, the peer is told why
        (`code` `aborted`, or `revoked` when the user's access ended)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return False
        return await stream._abandon(
            StreamAbortedError(stream_id, reason, by_peer=False), "abort", code, reason
        )

    async def abort_user(self, user: str, reason: str) -> int:
        """Cut every stream of `user` because their access ended (the peer is told `revoked`);
        returns how many were cut."""
        cut = 0
        for stream in [s for s in self._streams.values() if s.open.user == user]:
            cut += await self.abort(stream.id, reason, code=frames.ErrorCode.REVOKED)
        return cut

    # -- stream table ------------------------------------------------------------------------

    def _register(self, stream: StreamBase) -> None:
        self._streams[stream.id] = stream
        self.m.streams_open.inc()

    def _unregister(self, stream: StreamBase) -> None:
        if self._streams.pop(stream.id, None) is None:
            return
        self.m.streams_open.dec()
        self._recently_closed[stream.id] = None
        if len(self._recently_closed) > _RECENTLY_CLOSED:
            self._recently_closed.popitem(last=False)

    # -- publishing --------------------------------------------------------------------------

    async def _send_raw(self, subject: str, parts: tuple[Buffer, ...], frame_type: str) -> None:
        """Hand an encoded frame to NATS: its bytes, or a data frame's head and its data
        (`frames.data_frame_head`), which then reach the socket uncopied. Appending to the
        client's outbound buffer happens before the first suspension point, which keeps
        per-stream seq order."""
        try:
            await publish_parts(self._nc, subject, parts)
        except nats.errors.Error as exc:
            raise TransportClosedError(f"publish to {subject} failed: {exc!r}") from exc
        self.m.frame("out", frame_type, sum(map(len, parts)))

    def _send_raw_nowait(
        self, subject: str, messages: list[tuple[Buffer, ...]], frame_type: str
    ) -> bool:
        """`_send_raw` of each of `messages` (frames of one type, as parts), all of them or
        none, without waiting: True if NATS took them at once (`publish_parts_nowait`)."""
        if not publish_parts_nowait(self._nc, subject, messages):
            return False
        for parts in messages:
            self.m.frame("out", frame_type, sum(map(len, parts)))
        return True

    async def _publish(self, subject: str, frame: frames.Frame) -> None:
        data = frames.encode_frame(frame, self.config.max_frame_bytes)
        await self._send_raw(subject, (data,), frames.frame_type(frame))

    # -- receiving ---------------------------------------------------------------------------

    def _decode(self, msg: Msg) -> frames.Frame | None:
        """The frame in `msg`, or None after counting why it was rejected."""
        try:
            frame = frames.decode_frame(msg.data, self.config.max_frame_bytes)
        except FrameTooLargeError as exc:
            self._drop("oversize", subject=msg.subject, size=exc.size)
            return None
        except MalformedFrameError as exc:
            self._drop("malformed", subject=msg.subject, detail=exc.detail)
            return None
        self.m.frame("in", frames.frame_type(frame), len(msg.data))
        return frame

    def _drop(self, reason: str, **fields: object) -> None:
        """Count a rejected frame; log it, but at warning level only once per interval and
        reason, so a flood of junk cannot flood the log too."""
        self.m.rejected(reason)
        now = time.monotonic()
        if now - self._last_drop_warning.get(reason, -_DROP_WARNING_EVERY) >= _DROP_WARNING_EVERY:
            self._last_drop_warning[reason] = now
            log.warning("frame dropped: %s", reason, extra={"peer": self.peer_id, **fields})
        else:
            log.debug("frame dropped: %s", reason, extra={"peer": self.peer_id, **fields})

    def _on_peer_msg(self, msg: Msg) -> None:
        """The subscription's direct handler: never raises, never waits."""
        try:
            if msg.headers is not None and self._on_status(msg):
                return
            frame = self._decode(msg)
            if frame is None:
                return
            tail = subjects.last_token(msg.subject)
            if tail == subjects.HEARTBEAT_TOKEN:
                if isinstance(frame, frames.Heartbeat):
                    self._on_heartbeat(frame)
                else:
                    self._drop("protocol", subject=msg.subject, type=frames.frame_type(frame))
                return
            stream = self._streams.get(tail)
            if stream is None:
                if tail not in self._recently_closed:
                    self._drop("unknown_stream", subject=msg.subject)
                return
            if self._on_answer(stream, frame):
                return
            if not isinstance(frame, self.accepts):
                self._drop("protocol", stream=tail, type=frames.frame_type(frame))
                return
            try:
                stream._receive(frame)
            except StreamProtocolError as exc:
                self._protocol_failure(stream, exc)
        except Exception:
            self.m.rejected("internal")
            log.exception("frame handling failed", extra={"subject": msg.subject})

    def _on_status(self, msg: Msg) -> bool:
        """A NATS status message (headers, no frame) on a peer subject; True if handled."""
        return False

    def _on_answer(self, stream: StreamBase, frame: frames.Frame) -> bool:
        """The answer to an Open this end sent (the edge's); True if `frame` was one."""
        return False

    def _protocol_failure(self, stream: StreamBase, exc: StreamProtocolError) -> None:
        """Fail `stream` now (nothing more of it is taken) and tell its peer, in a task."""
        self.m.rejected("protocol")
        log.warning(
            "stream failed: protocol violation",
            extra={"stream": stream.id, "peer": stream.remote_peer, "detail": exc.detail},
        )
        if stream._fail(exc, "protocol"):
            self._chores.start(stream._notify_peer(frames.ErrorCode.PROTOCOL, exc.detail))

    def _on_heartbeat(self, hb: frames.Heartbeat) -> None:
        now = time.monotonic()
        for stream_id, sent in hb.streams:
            stream = self._streams.get(stream_id)
            if stream is None or stream.remote_peer != hb.peer:
                continue
            stream.last_heard = now
            if sent > stream._in_seq:
                detail = f"frames lost: peer sent up to {sent}, received up to {stream._in_seq}"
                self._protocol_failure(stream, StreamProtocolError(stream_id, detail))

    # -- liveness ----------------------------------------------------------------------------

    async def _liveness_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            try:
                await self._liveness_tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("liveness tick failed", extra={"peer": self.peer_id})

    async def _liveness_tick(self) -> None:
        """Fail silent streams, then send each peer one heartbeat (batch) for its streams."""
        if self._nc.is_closed:
            for stream in list(self._streams.values()):
                stream._fail(
                    StreamClosedError(stream.id, "the NATS connection is closed"), "transport"
                )
            return
        now = time.monotonic()
        by_peer: dict[str, list[StreamBase]] = {}
        for stream in list(self._streams.values()):
            peer = stream.remote_peer
            if peer is None:
                continue  # an edge still waiting for Accept: bounded by the open timeout
            silent = now - stream.last_heard
            if silent > self.config.dead_after:
                log.warning(
                    "stream failed: peer silent",
                    extra={"stream": stream.id, "peer": peer, "silent_for": round(silent, 2)},
                )
                await stream._abandon(
                    PeerLostError(stream.id, peer, silent),
                    "peer_lost",
                    frames.ErrorCode.PEER_LOST,
                    f"no word from {self.peer_id} for {silent:.1f}s",
                )
                continue
            by_peer.setdefault(peer, []).append(stream)
        batch = self.config.heartbeat_batch
        for peer, streams in by_peer.items():
            subject = subjects.peer_heartbeat_subject(peer)
            for i in range(0, len(streams), batch):
                entries = [(s.id, s._out_seq) for s in streams[i : i + batch] if not s.closed]
                try:
                    await self._publish(
                        subject, frames.Heartbeat(peer=self.peer_id, streams=entries)
                    )
                except TransportClosedError as exc:
                    log.debug("heartbeat not sent", extra={"peer": peer, "error": str(exc)})
                    return
