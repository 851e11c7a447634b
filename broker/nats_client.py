"""The nats-py client our connections use, minus two copies of every payload.

nats-py builds each PUB command as `header + payload + CRLF`: two copies of the payload before
it is written. For the 100-256 KiB frames of a port-forward or a large list those copies were
about an eighth of an edge's CPU (perf). This client joins the command in one copy, and parses
what the server sends with `broker.nats_parser` (one copy per payload instead of three).
Messages with headers go through nats-py's own path unchanged. Tests hold both to nats-py's
bytes and calls; since both lean on nats-py internals (`_send_publish`, `_ps`), pyproject pins
nats-py to the minor release they were checked against.
"""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client

from broker.nats_parser import Parser

CRLF = b"\r\n"


def pub_command(subject: str, reply: str, payload: bytes) -> bytes:
    """The PUB command for `payload` (no headers): nats-py's bytes, one copy of the payload."""
    return b"".join((f"PUB {subject} {reply} {len(payload)}\r\n".encode(), payload, CRLF))


class NatsClient(Client):
    """nats-py's client with `broker.nats_parser` and a one-copy PUB (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._ps = Parser(self)

    async def _send_publish(
        self,
        subject: str,
        reply: str,
        payload: bytes,
        payload_size: int,
        headers: dict[str, Any] | None,
    ) -> None:
        if headers is not None or not subject:
            await super()._send_publish(subject, reply, payload, payload_size, headers)
            return
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += payload_size
        await self._send_command(pub_command(subject, reply, payload))
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()
