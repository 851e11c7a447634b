"""Driving the relay the way the edge does (frames through `EdgeClient`), plus a minimal
WebSocket client for the exec tunnel (polling with a deadline: `tests.support.eventually`)."""

from __future__ import annotations

import base64
import json
import os
import struct
from dataclasses import dataclass
from typing import Any

from broker.transport import ClientStream, EdgeClient


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers if k.lower() == name.lower()), "")


async def request(
    edge: EdgeClient,
    cluster: str,
    user: str,
    method: str,
    path: str,
    *,
    query: str = "",
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
) -> Answer:
    """One whole request/response through the relay."""
    if body is not None and not any(k.lower() == "content-type" for k, _ in headers or []):
        headers = [*(headers or []), ("Content-Type", "application/json")]
    stream = await edge.open(
        cluster,
        method=method,
        path=path,
        query=query,
        headers=headers or [],
        user=user,
        request_id=os.urandom(6).hex(),
        has_body=body is not None,
    )
    async with stream:
        if body is not None:
            await stream.send(body)
            await stream.end_send()
        head = await stream.response_head()
        data = b"".join([chunk async for chunk in stream])
    return Answer(head.status, head.headers, data)


async def open_watch(edge: EdgeClient, cluster: str, user: str, path: str) -> ClientStream:
    return await edge.open(
        cluster, method="GET", path=path, query="watch=true", user=user, has_body=False
    )


# -- a minimal WebSocket client (RFC 6455) over a tunnel ----------------------------------------


def websocket_headers(protocol: str) -> list[tuple[str, str]]:
    return [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", base64.b64encode(os.urandom(16)).decode()),
        ("Sec-WebSocket-Protocol", protocol),
    ]


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """A final, masked client frame."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


class WsReader:
    """Unmasked server frames out of a byte stream: (opcode, payload)."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buf += data
        out = []
        while len(self.buf) >= 2:
            b0, b1 = self.buf[0], self.buf[1]
            n, pos = b1 & 0x7F, 2
            if n == 126:
                if len(self.buf) < 4:
                    break
                n, pos = struct.unpack("!H", self.buf[2:4])[0], 4
            elif n == 127:
                if len(self.buf) < 10:
                    break
                n, pos = struct.unpack("!Q", self.buf[2:10])[0], 10
            if b1 & 0x80:
                pos += 4  # servers do not mask, but tolerate it
            if len(self.buf) < pos + n:
                break
            out.append((b0 & 0x0F, self.buf[pos : pos + n]))
            self.buf = self.buf[pos + n :]
        return out
