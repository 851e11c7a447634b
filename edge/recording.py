"""Session recordings of exec and attach: stdin, stdout and stderr, kept in the log.

The edge sees an upgraded connection's raw bytes. For the WebSocket channel protocols
(`v5.channel.k8s.io` ... `v1`, and `base64.channel.k8s.io`) it parses the frames in both
directions (RFC 6455; client frames are masked) and records each message's channel and payload:
0 stdin, 1 stdout, 2 stderr, 3 error (the exit Status), 4 resize. For SPDY sessions it records
the raw frames of each direction (channels 254 client->server, 255 server->client), enough for a
later replay tool to decode.

Chunks go to the activity stream as `SessionRecordingChunk` events on `kg.act.recording.<id>`,
batched (every `flush_bytes` or `flush_s`), so the recording is referenced by the request id
from `KubectlCompleted.recording`. A recording stops at `max_bytes` and says so.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from datetime import datetime

from domain import events

CLIENT_RAW = 254
SERVER_RAW = 255
TRUNCATED = 253


class _WebSocketParser:
    """Incremental RFC 6455 frame parser yielding (opcode, payload) of complete messages."""

    def __init__(self, masked: bool, max_message: int = 16 << 20) -> None:
        self.masked = masked
        self.max_message = max_message
        self.buffer = bytearray()
        self.fragments = bytearray()
        self.fragment_opcode = 0
        self.broken = False

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        if self.broken:
            return []
        self.buffer += data
        out: list[tuple[int, bytes]] = []
        while True:
            frame = self._frame()
            if frame is None:
                return out
            fin, opcode, payload = frame
            if opcode == 0:  # continuation
                self.fragments += payload
                if fin:
                    out.append((self.fragment_opcode, bytes(self.fragments)))
                    self.fragments.clear()
            elif opcode in (1, 2):
                if fin:
                    out.append((opcode, payload))
                else:
                    self.fragment_opcode = opcode
                    self.fragments = bytearray(payload)
            if len(self.fragments) > self.max_message:
                self.broken = True
                return out

    def _frame(self) -> tuple[bool, int, bytes] | None:
        buf = self.buffer
        if len(buf) < 2:
            return None
        fin = bool(buf[0] & 0x80)
        opcode = buf[0] & 0x0F
        masked = bool(buf[1] & 0x80)
        length = buf[1] & 0x7F
        pos = 2
        if length == 126:
            if len(buf) < 4:
                return None
            length = int.from_bytes(buf[2:4], "big")
            pos = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length = int.from_bytes(buf[2:10], "big")
            pos = 10
        mask = b""
        if masked:
            if len(buf) < pos + 4:
                return None
            mask = bytes(buf[pos : pos + 4])
            pos += 4
        if len(buf) < pos + length:
            return None
        payload = bytes(buf[pos : pos + length])
        del buf[: pos + length]
        if mask:
            payload = _unmask(payload, mask)
        return fin, opcode, payload


def _unmask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


class SessionRecorder:
    """Records one exec/attach session's channels; call `client()`/`server()` with raw bytes."""

    def __init__(
        self,
        request_id: str,
        *,
        subprotocol: str,
        emit: Callable[[events.Event], object],
        clock: Callable[[], datetime],
        actor: str,
        flush_bytes: int = 32 * 1024,
        flush_s: float = 0.2,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.request_id = request_id
        self.subprotocol = subprotocol
        self.emit = emit
        self.clock = clock
        self.actor = actor
        self.flush_bytes = flush_bytes
        self.flush_s = flush_s
        self.max_bytes = max_bytes
        self.websocket = "channel.k8s.io" in subprotocol
        self.base64 = subprotocol.startswith("base64.")
        self._from_client = _WebSocketParser(masked=True)
        self._from_server = _WebSocketParser(masked=False)
        self._started = time.monotonic()
        self._pending: list[tuple[int, float, bytes]] = []
        self._pending_bytes = 0
        self._last_flush = time.monotonic()
        self._seq = 0
        self.recorded = 0
        self.truncated = False

    @property
    def reference(self) -> str:
        return f"kg.act.recording.{self.request_id}"

    def client(self, data: bytes) -> None:
        if self.websocket:
            for _opcode, payload in self._from_client.feed(data):
                self._message(payload)
        else:
            self._add(CLIENT_RAW, data)

    def server(self, data: bytes) -> None:
        if self.websocket:
            for _opcode, payload in self._from_server.feed(data):
                self._message(payload)
        else:
            self._add(SERVER_RAW, data)

    def _message(self, payload: bytes) -> None:
        if not payload:
            return
        if self.base64:
            channel = payload[0] - ord("0")
            try:
                data = base64.b64decode(payload[1:])
            except ValueError:
                return
        else:
            channel, data = payload[0], payload[1:]
        if channel == 255 or not data:  # v5 close signal: no payload worth keeping
            return
        self._add(channel, data)

    def _add(self, channel: int, data: bytes) -> None:
        if self.truncated:
            return
        if self.recorded + len(data) > self.max_bytes:
            self.truncated = True
            self._pending.append((TRUNCATED, self._offset(), b"recording truncated"))
            self.flush()
            return
        self.recorded += len(data)
        self._pending.append((channel, self._offset(), bytes(data)))
        self._pending_bytes += len(data)
        if (
            self._pending_bytes >= self.flush_bytes
            or time.monotonic() - self._last_flush >= self.flush_s
        ):
            self.flush()

    def _offset(self) -> float:
        return (time.monotonic() - self._started) * 1000.0

    def flush(self) -> None:
        """Emit what is pending, merging consecutive pieces of one channel into one chunk."""
        self._last_flush = time.monotonic()
        merged: list[tuple[int, float, bytearray]] = []
        for channel, offset, data in self._pending:
            if merged and merged[-1][0] == channel and len(merged[-1][2]) < self.flush_bytes:
                merged[-1][2].extend(data)
            else:
                merged.append((channel, offset, bytearray(data)))
        self._pending.clear()
        self._pending_bytes = 0
        now = self.clock()
        for channel, offset, data in merged:
            self._seq += 1
            self.emit(
                events.SessionRecordingChunk(
                    id=f"{self.request_id}-r{self._seq}",
                    time=now,
                    actor=self.actor,
                    cause=self.request_id,
                    request_id=self.request_id,
                    seq=self._seq,
                    channel=channel,
                    offset_ms=round(offset, 3),
                    data=bytes(data),
                )
            )
