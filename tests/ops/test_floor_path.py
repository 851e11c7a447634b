"""The floor path's NATS reader: messages and control lines split anywhere across reads."""

from __future__ import annotations

import asyncio

from ops.bench.floor_path import NatsLink


class _Written:
    """Stands in for the socket under the reader: keeps what it is asked to write."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


STREAM = (
    b"INFO {}\r\n"
    b"MSG floor.up.1 1 5\r\nhello\r\n"
    b"PING\r\n"
    b"MSG floor.open 2 floor.inbox.x 3\r\nabc\r\n"
    b"MSG floor.up.1 1 0\r\n\r\n"
    b"MSG floor.up.1 1 12\r\nline\r\nbreaks\r\n"
    b"PONG\r\n"
)
EXPECTED = [
    (1, b"hello", ""),
    (2, b"abc", "floor.inbox.x"),
    (1, b"", ""),
    (1, b"line\r\nbreaks", ""),
]


async def _read(pieces: list[bytes]) -> tuple[list[tuple[int, bytes, str]], bytes, bool]:
    link = NatsLink()
    link.transport = _Written()  # type: ignore[assignment]
    got: list[tuple[int, bytes, str]] = []
    for sid in (1, 2):
        link.subscribe(f"s{sid}", lambda p, r, sid=sid: got.append((sid, bytes(p), r)))
    ponged = asyncio.ensure_future(link.flush())
    await asyncio.sleep(0)  # its PING is written
    for piece in pieces:
        link.data_received(piece)
    await asyncio.sleep(0)
    return got, link.transport.data, ponged.done()  # type: ignore[attr-defined]


async def test_every_message_arrives_whole_wherever_the_reads_split() -> None:
    for cut in range(1, len(STREAM)):
        got, written, ponged = await _read([STREAM[:cut], STREAM[cut:]])
        assert got == EXPECTED, cut
        assert written.endswith(b"PING\r\nPONG\r\n"), cut  # our PING, then the answer to theirs
        assert ponged, cut


async def test_a_byte_at_a_time_loses_nothing() -> None:
    got, _, ponged = await _read([STREAM[i : i + 1] for i in range(len(STREAM))])
    assert got == EXPECTED and ponged
