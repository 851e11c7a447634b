"""The nats-py client our connections use, minus copies of every payload.

- Out: nats-py builds each PUB command as `header + payload + CRLF`, two copies of the payload
  (for the 100-256 KiB frames of a port-forward or a large list, about an eighth of an edge's
  CPU). This client joins the command in one copy; `publish_parts` (any nats-py client)
  publishes pieces without joining them at all, for the data frames of `broker.transport`.
  Messages with headers (HPUB: every activity event) are built the same way, their header
  block in one join.
- In: TCP servers are read through `broker.nats_transport.ChunkTransport` (no StreamReader, two
  fewer copies of every byte) and parsed by `broker.nats_parser` (one copy per payload instead
  of three). Header blocks are split by `parse_header_lines`, nats-py's rules in a third of the
  time (every JetStream delivery has them: 3.7 -> 1.5 us for a control event's three headers).
- `publish_parts_nowait` publishes from a protocol callback, without a task in between.
- `flush()` writes what is still buffered before its PING (nats-py lets the PING overtake it).
- Direct subscriptions (`subscribe_direct`) call a synchronous handler as each message is
  parsed, instead of queueing it for the subscription's own task.

Tests hold all of it to nats-py's bytes, calls and dicts. Since it leans on nats-py internals
(`_send_publish`, `_send_ping`, `_ps`, `_parse_header_lines`, `_connect_to_server`,
`_pending`, `_flush_queue`, `_flusher_task`, `_process_msg`, `_subs`, `_remove_sub`), pyproject pins
nats-py to the minor release it was checked against.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nats import errors
from nats.aio.client import _HEADER_KEY_RE, _HEADER_VALUE_NEWLINES, Client, _validate_subject
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from broker.nats_parser import CRLF, Buffer, Parser
from broker.nats_transport import ChunkTransport

_PLAIN_HEADER_LINE = b"NATS/1.0\r\n"
_WHITESPACE = re.compile(r"\s")
r"""For str patterns `\s` is exactly `str.isspace`, which nats-py tests per character."""


def parse_header_lines(raw: bytes) -> dict[str, str]:
    """`Name: Value` lines as nats-py splits them: lines without a colon, names that are not
    ASCII or hold whitespace are skipped; values are stripped and decoded (bad UTF-8 replaced).
    """
    out: dict[str, str] = {}
    has_whitespace = _WHITESPACE.search
    for line in raw.split(CRLF):
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        try:
            key = name.strip().decode("ascii")
        except UnicodeDecodeError:
            continue
        if has_whitespace(key) is not None:
            continue
        out[key] = value.strip().decode("utf-8", "replace")
    return out


def header_block(headers: Mapping[str, Any]) -> bytes:
    """An HPUB header block as nats-py builds it (keys stripped, empty ones skipped, invalid
    ones refused with `BadHeaderError`; values stripped, line breaks made spaces), in one join
    instead of an append per piece."""
    lines = ["NATS/1.0\r\n"]
    for name, value in headers.items():
        key = name.strip()
        if not key:
            continue
        if not _HEADER_KEY_RE.fullmatch(key):
            raise errors.BadHeaderError(key)
        lines.append(f"{key}: {value.strip().translate(_HEADER_VALUE_NEWLINES)}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode()


def hpub_command(subject: str, reply: str, headers: Mapping[str, Any], payload: bytes) -> bytes:
    """The HPUB command for `payload` with `headers`: nats-py's bytes, one copy of the payload."""
    block = header_block(headers)
    total = len(block) + len(payload)
    line = f"HPUB {subject} {reply} {len(block)} {total}\r\n".encode()
    return b"".join((line, block, payload, CRLF))


def _pub_line(subject: str, reply: str, size: int) -> bytes:
    return f"PUB {subject} {reply} {size}\r\n".encode()


def pub_command(subject: str, reply: str, payload: bytes) -> bytes:
    """The PUB command for `payload` (no headers): nats-py's bytes, one copy of the payload."""
    return b"".join((_pub_line(subject, reply, len(payload)), payload, CRLF))


async def publish_parts(nc: Client, subject: str, parts: Sequence[Buffer]) -> None:
    """Publish `b"".join(parts)` (no reply, no headers) without joining: any nats-py client.

    The PUB line, each part and the CRLF go into the client's outbound list as they are, in one
    step (no other command can land between them), and its flusher writes the list with one
    `writelines` (a writev on uvloop). A data frame is its small head and the bytes a client
    sent (`frames.data_frame_head`), so they reach the socket without being copied at all.
    The parts must not change until flushed: pass bytes, or views of bytes. nats-py's
    `publish` checks and errors, and its stats.
    """
    if not nc._skip_subject_validation:
        _validate_subject(subject)
    if nc.is_closed:
        raise errors.ConnectionClosedError
    if nc.is_draining_pubs:
        raise errors.ConnectionDrainingError
    size = sum(map(len, parts))
    pending_cap = nc._max_pending_size
    if not nc.is_connected and (pending_cap <= 0 or size + nc._pending_data_size > pending_cap):
        raise errors.OutboundBufferLimitError
    if size > nc._max_payload:
        raise errors.MaxPayloadError
    _append_pub(nc, subject, parts, size)
    if pending_cap > 0 and nc._pending_data_size > pending_cap:
        await nc._flush_pending(force_flush=True)
    if nc._flush_queue is not None and nc._flush_queue.empty():
        await nc._flush_pending()


def publish_parts_nowait(nc: Client, subject: str, messages: Sequence[Sequence[Buffer]]) -> bool:
    """`publish_parts` of each of `messages` (each given as its parts), all of them or none,
    without a suspension point: for callers in a protocol callback (bytes just read from a
    socket) that would otherwise wake a task only to publish them.

    Publishes only when nothing needs waiting for or reporting: connected, the flusher running,
    room in the outbound list, every payload within the server's limit, the subject valid.
    Otherwise returns False having done nothing, and the caller takes the awaitable path, which
    waits or raises nats-py's error. The flusher is woken, not awaited, so messages published
    in one turn of the event loop still leave in one write."""
    queue, flusher = nc._flush_queue, nc._flusher_task
    if not nc.is_connected or nc.is_draining_pubs or queue is None or queue.full():
        return False
    if flusher is None or flusher.done():
        return False
    sizes = [sum(map(len, parts)) for parts in messages]
    pending_cap = nc._max_pending_size
    if max(sizes, default=0) > nc._max_payload or (
        pending_cap > 0 and nc._pending_data_size + sum(sizes) > pending_cap
    ):
        return False
    if not nc._skip_subject_validation:
        try:
            _validate_subject(subject)
        except errors.BadSubjectError:
            return False
    for parts, size in zip(messages, sizes, strict=True):
        _append_pub(nc, subject, parts, size)
    if queue.empty():
        queue.put_nowait(asyncio.get_running_loop().create_future())
    return True


def _append_pub(nc: Client, subject: str, parts: Sequence[Buffer], size: int) -> None:
    nc.stats["out_msgs"] += 1
    nc.stats["out_bytes"] += size
    line = _pub_line(subject, "", size)
    nc._pending.append(line)
    nc._pending.extend(parts)
    nc._pending.append(CRLF)
    nc._pending_data_size += len(line) + size + len(CRLF)


DirectHandler = Callable[[Msg], None]
"""A synchronous message handler, called from the connection's read loop (see
`subscribe_direct`)."""


async def subscribe_direct(
    nc: Client, subject: str, handler: DirectHandler, *, queue: str = ""
) -> Subscription:
    """Subscribe `handler` so that it runs as each message is parsed, without a task hop.

    nats-py hands every message to a subscription's own task through a queue: one task switch
    per message before a callback starts. On a host running many relays that switch waits
    behind every other relay's work, for each frame and each log event. A direct handler is
    called in the read loop instead: in order, before the next message is parsed. So it must
    be quick and must not block; what has to wait (a publish, a retry) it starts as a task.
    It has no pending queue, so no slow-consumer drops: a busy handler slows the socket's
    reading, which is the back-pressure TCP and the server already apply. An exception it
    raises goes to the connection's error callback, as nats-py does for callbacks.

    On a client other than `NatsClient` it falls back to an ordinary callback.
    """
    if isinstance(nc, NatsClient):
        return await nc.subscribe_direct(subject, handler, queue=queue)

    async def callback(msg: Msg) -> None:
        handler(msg)

    return await nc.subscribe(subject, queue=queue, cb=callback)


class NatsClient(Client):
    """nats-py's client with `broker.nats_parser`, one-copy PUB and HPUB, a quicker header split
    (see the module docstring) and direct subscriptions (`subscribe_direct`)."""

    _parse_header_lines = staticmethod(parse_header_lines)

    def __init__(self) -> None:
        super().__init__()
        self._ps = Parser(self)
        self._direct: dict[int, DirectHandler] = {}

    async def subscribe_direct(
        self, subject: str, handler: DirectHandler, *, queue: str = ""
    ) -> Subscription:
        """See the module-level `subscribe_direct`."""
        sub = await self.subscribe(subject, queue=queue)
        # nats-py queued anything that came before this line (none can: the SUB is still in
        # the outbound buffer); hand it over first, in order
        while not sub._pending_queue.empty():
            msg = sub._pending_queue.get_nowait()
            sub._pending_size -= len(msg.data)
            exc = self._call_direct(handler, msg)
            if exc is not None:
                await self._error_cb(exc)
        self._direct[sub._id] = handler
        return sub

    def _remove_sub(self, sid: int, max_msgs: int = 0) -> None:
        self._direct.pop(sid, None)
        super()._remove_sub(sid, max_msgs)

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        handler = self._direct.get(sid)
        if handler is None:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        sub = self._subs.get(sid)
        if sub is None:
            return
        sub._received += 1
        hdr = await self._process_headers(headers)
        exc = self._call_direct(handler, self._build_message(sid, subject, reply, data, hdr))
        if exc is not None:
            await self._error_cb(exc)

    @staticmethod
    def _call_direct(handler: DirectHandler, msg: Msg) -> Exception | None:
        try:
            handler(msg)
        except Exception as exc:
            return exc
        return None

    async def _send_ping(self, future: asyncio.Future | None = None) -> None:
        """Commands still in the outbound buffer go out before the PING.

        nats-py writes the PING straight to the socket, ahead of a SUB or PUB the flusher has
        not written yet, so `subscribe(); flush()` could return before the server had the SUB:
        a request from another connection then got no-responders (a relay joining its queue
        group, a test's stand-in responder). `flush()` means "the server has what I sent"."""
        if self._pending_data_size and self.is_connected and self._transport is not None:
            self._transport.writelines(self._pending)
            self._pending = []
            self._pending_data_size = 0
        await super()._send_ping(future)

    async def _connect_to_server(self, s: Any) -> None:
        """nats-py's, with `ChunkTransport` for TCP servers (WebSocket ones keep nats-py's)."""
        if s.uri.scheme not in ("nats", "tls"):
            await super()._connect_to_server(s)
            return
        s.last_attempt = time.monotonic()
        if not isinstance(self._transport, ChunkTransport):
            self._transport = ChunkTransport()
        await self._transport.connect(
            s.uri, buffer_size=0, connect_timeout=self.options["connect_timeout"]
        )

    async def _process_headers(self, headers: bytes) -> dict[str, str] | None:
        """A block without a status line (every stored message) is split here directly; the
        rest (a status, a heartbeat) goes through nats-py."""
        if not headers:
            return None  # most messages: none at all
        if headers[:10] == _PLAIN_HEADER_LINE:
            return parse_header_lines(headers[10:]) or None
        return await super()._process_headers(headers)

    async def _send_publish(
        self,
        subject: str,
        reply: str,
        payload: bytes,
        payload_size: int,
        headers: dict[str, Any] | None,
    ) -> None:
        if not subject:
            await super()._send_publish(subject, reply, payload, payload_size, headers)
            return
        if headers is None:
            command = pub_command(subject, reply, payload)
        else:
            command = hpub_command(subject, reply, headers, payload)
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += payload_size
        await self._send_command(command)
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()
