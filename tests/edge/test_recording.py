"""Session recordings parse both WebSocket directions into channels and batch them as events."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime

from domain import events
from edge.recording import CLIENT_RAW, SERVER_RAW, TRUNCATED, SessionRecorder


def ws_frame(payload: bytes, *, masked: bool, opcode: int = 2, fin: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([mask_bit | 127]) + n.to_bytes(8, "big")
    if masked:
        key = os.urandom(4)
        body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return head + key + body
    return head + payload


def recorder(protocol: str = "v5.channel.k8s.io", **kw) -> tuple[SessionRecorder, list]:
    out: list[events.SessionRecordingChunk] = []
    rec = SessionRecorder(
        "req1",
        subprotocol=protocol,
        emit=out.append,
        clock=lambda: datetime(2026, 1, 1, tzinfo=UTC),
        actor="alice",
        **kw,
    )
    return rec, out


def channels(out: list) -> list[tuple[int, bytes]]:
    return [(e.channel, e.data) for e in out]


def test_channels_from_split_masked_and_plain_frames() -> None:
    rec, out = recorder()
    stdin = ws_frame(b"\x00ls -l\n", masked=True)
    rec.client(stdin[:3])
    rec.client(stdin[3:])
    rec.server(ws_frame(b"\x01total 0\n", masked=False) + ws_frame(b"\x02warn\n", masked=False))
    rec.server(ws_frame(b'\x03{"status":"Success"}', masked=False))
    rec.client(ws_frame(b"\xff\x00", masked=True))  # v5 close of stdin: nothing to keep
    rec.flush()
    assert channels(out) == [
        (0, b"ls -l\n"),
        (1, b"total 0\n"),
        (2, b"warn\n"),
        (3, b'{"status":"Success"}'),
    ]
    assert [e.seq for e in out] == [1, 2, 3, 4]
    assert all(e.request_id == "req1" and e.cause == "req1" for e in out)
    assert rec.reference == "kg.act.recording.req1"


def test_fragmented_and_large_messages() -> None:
    rec, out = recorder()
    big = b"\x01" + b"y" * 70000
    rec.server(ws_frame(big[:1000], masked=False, fin=False))
    rec.server(ws_frame(big[1000:], masked=False, opcode=0))
    rec.flush()
    assert b"".join(e.data for e in out if e.channel == 1) == b"y" * 70000


def test_base64_protocol_decodes_channel_digits() -> None:
    rec, out = recorder("base64.channel.k8s.io")
    rec.server(ws_frame(b"1" + base64.b64encode(b"hello"), masked=False))
    rec.flush()
    assert channels(out) == [(1, b"hello")]


def test_spdy_is_recorded_raw_by_direction() -> None:
    rec, out = recorder("SPDY/3.1")
    rec.client(b"\x80\x03\x00\x01")
    rec.server(b"\x80\x03\x00\x02")
    rec.flush()
    assert channels(out) == [(CLIENT_RAW, b"\x80\x03\x00\x01"), (SERVER_RAW, b"\x80\x03\x00\x02")]


def test_recording_stops_at_its_cap_and_says_so() -> None:
    rec, out = recorder(max_bytes=10, flush_s=100)
    rec.server(ws_frame(b"\x01" + b"a" * 8, masked=False))
    rec.server(ws_frame(b"\x01" + b"b" * 8, masked=False))
    rec.server(ws_frame(b"\x01" + b"c" * 8, masked=False))
    rec.flush()
    assert channels(out) == [(1, b"a" * 8), (TRUNCATED, b"recording truncated")]
    assert rec.truncated


def test_batches_merge_consecutive_pieces_of_a_channel() -> None:
    rec, out = recorder(flush_s=100, flush_bytes=1 << 20)
    for i in range(5):
        rec.server(ws_frame(b"\x01" + str(i).encode(), masked=False))
    assert out == []
    rec.flush()
    assert channels(out) == [(1, b"01234")]
