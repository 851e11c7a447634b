"""The frame codec: every frame round-trips; anything else is a typed error, never a crash."""

from __future__ import annotations

import os

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker import frames, subjects
from broker.errors import FrameError, FrameTooLargeError, MalformedFrameError

SAMPLES: list[frames.Frame] = [
    frames.Open(
        stream="0a1b2c",
        peer="edge-1",
        cluster="prod.eu",
        method="GET",
        path="/api/v1/namespaces/default/pods",
        query="watch=1&resourceVersion=10",
        headers=[("Accept", "application/json"), ("Accept", "application/yaml")],
        user="alice@example.com",
        groups=["dev", "ops"],
        request_id="r-1",
        credit=512 * 1024,
    ),
    frames.Accept(relay="relay-a", credit=65536),
    frames.Head(seq=1, status=101, headers=[("Upgrade", "websocket")]),
    frames.RequestChunk(seq=3, data=b"\x00\xff" * 100),
    frames.ResponseChunk(seq=4, data=b""),
    frames.End(seq=5),
    frames.Error(seq=6, code=frames.ErrorCode.UPSTREAM, message="connection refused"),
    frames.Cancel(seq=7, reason="revoked"),
    frames.Window(seq=8, credit=1),
    frames.Heartbeat(peer="relay-a", streams=[("0a1b2c", 9), ("ff", 0)]),
]


@pytest.mark.parametrize("frame", SAMPLES, ids=frames.frame_type)
def test_round_trip(frame: frames.Frame) -> None:
    data = frames.encode_frame(frame, validate=True)
    assert frames.decode_frame(data) == frame


def test_oversize_rejected_before_parsing_and_before_sending() -> None:
    big = frames.ResponseChunk(seq=1, data=b"x" * 2000)
    with pytest.raises(FrameTooLargeError) as sent:
        frames.encode_frame(big, max_bytes=1000)
    assert sent.value.frame_type == "resp" and sent.value.limit == 1000
    data = frames.encode_frame(big)
    with pytest.raises(FrameTooLargeError) as received:
        frames.decode_frame(data, max_bytes=1000)
    assert received.value.size == len(data)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not msgpack at all",
        msgspec.msgpack.encode({"t": "nope", "seq": 1}),
        msgspec.msgpack.encode({"t": "end"}),  # missing seq
        msgspec.msgpack.encode({"t": "end", "seq": -1}),
        msgspec.msgpack.encode({"t": "head", "seq": 1, "status": 700}),
        msgspec.msgpack.encode({"t": "resp", "seq": 1, "data": "text, not bytes"}),
        msgspec.msgpack.encode({"t": "window", "seq": 1, "credit": 0}),
        msgspec.msgpack.encode({"t": "hb", "peer": "p", "streams": [["bad.id", 1]]}),
        msgspec.msgpack.encode([1, 2, 3]),
    ],
)
def test_malformed_is_a_typed_error(raw: bytes) -> None:
    with pytest.raises(MalformedFrameError):
        frames.decode_frame(raw)


def test_open_is_validated_before_it_leaves() -> None:
    bad = frames.Open(
        stream="not a subject token",
        peer="e",
        cluster="c",
        method="GET",
        path="/",
        user="u",
        credit=1,
    )
    with pytest.raises(MalformedFrameError):
        frames.encode_frame(bad, validate=True)


def test_unknown_fields_from_a_newer_peer_are_ignored() -> None:
    raw = msgspec.msgpack.encode({"t": "end", "seq": 4, "future_field": [1, 2]})
    assert frames.decode_frame(raw) == frames.End(seq=4)


@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_crash(raw: bytes) -> None:
    try:
        frames.decode_frame(raw, max_bytes=256)
    except FrameError:
        pass


@given(st.text(max_size=40))
def test_no_id_collides_with_the_heartbeat_token(value: str) -> None:
    assert subjects.token(value) != subjects.HEARTBEAT_TOKEN
    assert subjects.last_token(subjects.stream_subject("edge", value)) == subjects.token(value)
    for peer in (subjects.edge_peer("e1"), subjects.relay_peer("prod", "r1")):
        assert subjects.last_token(subjects.stream_subject(peer, value)) == subjects.token(value)


def _token_one_char_at_a_time(value: str) -> str:
    """The escaping `subjects.token` promises, spelled out character by character."""
    if not value:
        return "%00"
    if value == "\x00":
        return "%nul"  # "%00" is the empty id's
    unsafe = {".": "%2E", "*": "%2A", ">": "%3E", "%": "%25"}
    return "".join(
        unsafe.get(ch) or (f"%{ord(ch):02X}" if ord(ch) < 0x21 or ord(ch) == 0x7F else ch)
        for ch in value
    )


@given(st.text(max_size=60))
def test_a_token_is_one_valid_subject_token_that_gives_its_value_back(value: str) -> None:
    tok = subjects.token(value)
    assert tok == _token_one_char_at_a_time(value)
    assert tok and not any(ch in tok for ch in ".*> \t\r\n\x7f")
    assert all(ord(ch) > 0x20 for ch in tok)
    assert subjects.untoken(tok) == value


def test_tokens_of_typical_ids() -> None:
    assert subjects.token("alice@example.com") == "alice@example%2Ecom"
    assert subjects.token("a b\tc%d>*") == "a%20b%09c%25d%3E%2A"
    assert subjects.token("") == "%00"
    assert subjects.token("\x00") == "%nul" and subjects.untoken("%nul") == "\x00"
    assert subjects.token("a\x00") == "a%00"
    assert subjects.token("dev") == "dev"


def test_peer_subjects_scope_relays_by_cluster() -> None:
    edge = subjects.edge_peer("host-1")
    relay = subjects.relay_peer("prod.eu", "r-7")
    assert subjects.stream_subject(edge, "s1") == "kg.s.e.host-1.s1"
    assert subjects.stream_subject(relay, "s1") == "kg.s.r.prod%2Eeu.r-7.s1"
    assert subjects.peer_wildcard(relay) == "kg.s.r.prod%2Eeu.r-7.*"
    assert subjects.cluster_relays_wildcard("prod.eu") == "kg.s.r.prod%2Eeu.>"
    assert subjects.peer_heartbeat_subject(edge) == "kg.s.e.host-1.%HB"
    # Other peer ids stay in their own branch, so they never collide with a relay's.
    assert subjects.stream_subject("r/odd", "s1") == "kg.s.p.r/odd.s1"


BIN_LENGTH_EDGES = st.sampled_from([0, 1, 255, 256, 65535, 65536, 300_000]) | st.integers(0, 70_000)


@given(
    cls=st.sampled_from([frames.RequestChunk, frames.ResponseChunk]),
    seq=st.integers(0, 2**53),
    size=BIN_LENGTH_EDGES,
)
def test_a_data_frame_is_its_head_then_its_data(cls: type, seq: int, size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    encoded = frames.encode_frame(cls(seq=seq, data=data), max_bytes=1 << 20)
    assert frames.data_frame_head(cls, seq, size) + data == encoded
    assert frames.decode_frame(encoded, max_bytes=1 << 20) == cls(seq=seq, data=data)


def test_a_data_frame_decodes_to_a_view_of_the_message_not_a_copy() -> None:
    for cls in (frames.RequestChunk, frames.ResponseChunk):
        payload = os.urandom(70_000)
        message = frames.encode_frame(cls(seq=3, data=payload))
        frame = frames.decode_frame(message)
        assert isinstance(frame, cls) and frame.seq == 3
        assert isinstance(frame.data, memoryview)
        assert frame.data.obj is message  # the message's own bytes
        assert frame.data == payload
        # and it goes out again as the same bytes (a relay passing a chunk on)
        assert frames.encode_frame(cls(seq=3, data=frame.data)) == message
