"""The NATS protocol parser our connections use: nats-py's, with one copy per message payload.

nats-py's own parser appends every read to a `bytearray`, copies each payload out twice
(`bytes(buf[:n])` makes a slice and then bytes of it) and deletes it from the front. For
256 KiB frames that arrive in 32 KiB reads, those copies were a quarter of an edge's CPU while
it streamed a large list (perf). This parser keeps the reads as they come, slices control lines
out of them in place, and joins each payload from the reads it spans once.

It stands in for `nats.protocol.parser.Parser` (same `parse` / `reset` and the same calls into
the client), installed by `broker.nats_client.NatsClient`. Its behaviour is pinned to
nats-py's by a test that feeds both the same byte streams, split at every place.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from nats.errors import ProtocolError
from nats.protocol import parser as stock

# nats-py's patterns, anchored by `match(buf, pos)` instead of `\A` (which only matches at 0).
MSG_RE = re.compile(rb"MSG\s+([^\s]+)\s+([^\s]+)\s+(([^\s]+)[^\S\r\n]+)?(\d+)\r\n")
HMSG_RE = re.compile(rb"HMSG\s+([^\s]+)\s+([^\s]+)\s+(([^\s]+)[^\S\r\n]+)?([\d]+)\s+(\d+)\r\n")
OK_RE = re.compile(rb"\+OK\s*\r\n")
ERR_RE = re.compile(rb"-ERR\s+('.+')?\r\n")
PING_RE = re.compile(rb"PING\s*\r\n")
PONG_RE = re.compile(rb"PONG\s*\r\n")
INFO_RE = re.compile(rb"INFO\s+([^\r\n]+)\r\n")

CRLF = b"\r\n"
MAX_CONTROL_LINE_SIZE = stock.MAX_CONTROL_LINE_SIZE

Buffer = bytes | bytearray | memoryview


def _take(parts: Sequence[Buffer], n: int) -> tuple[bytes, list[Buffer]]:
    """The first `n` bytes of `parts` joined (one copy), and what follows them, uncopied."""
    head: list[Buffer] = []
    for i, part in enumerate(parts):
        if n >= len(part):
            head.append(part)
            n -= len(part)
            continue
        view = memoryview(part)
        head.append(view[:n])
        return b"".join(head), [view[n:], *parts[i + 1 :]]
    return b"".join(head), []


class Parser(stock.Parser):
    """Parses what a NATS server sends; calls the client as nats-py's parser does."""

    def reset(self) -> None:
        super().reset()
        self._parts: list[Buffer] | None = None
        """While a payload is arriving: the reads since its control line (the first sliced)."""
        self._have = 0

    async def parse(self, data: bytes = b"") -> None:
        view: Buffer = data
        if self._parts is not None:
            self._parts.append(data)
            self._have += len(data)
            if self._have < self.needed + len(CRLF):
                return
            parts, self._parts, self._have = self._parts, None, 0
            rest = await self._payload(parts)
            view = rest[0] if len(rest) == 1 else b"".join(rest)
        elif self.buf:  # a control line split across reads
            self.buf.extend(data)
            view = bytes(self.buf)
            self.buf = bytearray()
        await self._scan(view)

    async def _payload(self, parts: Sequence[Buffer]) -> list[Buffer]:
        """Deliver the message whose payload (and CRLF) `parts` begin with; returns the rest."""
        hdr = None
        if self.header_needed > 0:
            hdr, parts = _take(parts, self.header_needed)
            payload, parts = _take(parts, self.needed - self.header_needed)
            self.header_needed = 0
        else:
            payload, parts = _take(parts, self.needed)
        _, rest = _take(parts, len(CRLF))
        self.state = stock.AWAITING_CONTROL_LINE
        arg = self.msg_arg
        await self.nc._process_msg(arg["sid"], arg["subject"], arg["reply"], payload, hdr)
        return rest

    async def _scan(self, view: Buffer) -> None:
        pos, end = 0, len(view)
        while pos < end:
            m = MSG_RE.match(view, pos)
            if m is not None:
                subject, sid, _, reply, needed = m.groups()
                self.header_needed = 0
            else:
                m = HMSG_RE.match(view, pos)
                if m is not None:
                    subject, sid, _, reply, header_size, needed = m.groups()
                    self.header_needed = int(header_size)
            if m is not None:
                try:
                    self.msg_arg["subject"] = subject
                    self.msg_arg["sid"] = int(sid)
                    self.msg_arg["reply"] = reply or b""
                    self.needed = int(needed)
                except ValueError as exc:
                    raise ProtocolError("nats: malformed MSG") from exc
                pos = m.end()
                needed = self.needed
                if end - pos < needed + len(CRLF):
                    self.state = stock.AWAITING_MSG_PAYLOAD
                    self._parts = [memoryview(view)[pos:]] if pos < end else []
                    self._have = end - pos
                    return
                # the whole message is in this read: slice it out (one copy), stay in place
                hdr = None
                if self.header_needed > 0:
                    split = pos + self.header_needed
                    hdr, payload = bytes(view[pos:split]), bytes(view[split : pos + needed])
                    self.header_needed = 0
                else:
                    payload = bytes(view[pos : pos + needed])
                pos += needed + len(CRLF)
                arg = self.msg_arg
                await self.nc._process_msg(arg["sid"], arg["subject"], arg["reply"], payload, hdr)
                continue
            pos = await self._control(view, pos, end)
            if pos < 0:
                return

    async def _control(self, view: Buffer, pos: int, end: int) -> int:
        """Handle the non-message control line at `pos`; its end, or -1 when incomplete."""
        if (m := OK_RE.match(view, pos)) is not None:
            return m.end()
        if (m := ERR_RE.match(view, pos)) is not None:
            await self.nc._process_err((m.group(1) or b"").decode().lower())
            return m.end()
        if (m := PING_RE.match(view, pos)) is not None:
            await self.nc._process_ping()
            return m.end()
        if (m := PONG_RE.match(view, pos)) is not None:
            await self.nc._process_pong()
            return m.end()
        if (m := INFO_RE.match(view, pos)) is not None:
            await self.nc._process_info(json.loads(m.group(1).decode()))
            return m.end()
        pending = bytes(view[pos:end])
        if len(pending) < MAX_CONTROL_LINE_SIZE and CRLF in pending:
            raise ProtocolError("nats: unknown protocol")
        self.buf = bytearray(pending)
        return -1
