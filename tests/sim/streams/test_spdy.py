"""The SPDY/3.1 codec without a network: round trips, header compression, malformed input."""

from __future__ import annotations

import hashlib
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ops.sim.streams import spdy
from ops.sim.streams.errors import SpdyProtocolError

stream_ids = st.integers(1, spdy.MAX_STREAM_ID)
names = st.text("abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=20)
headers = st.dictionaries(names, st.text(max_size=40), max_size=6)

frames = st.one_of(
    st.builds(spdy.DataFrame, stream_ids, st.binary(max_size=300), st.booleans()),
    st.builds(
        spdy.SynStreamFrame,
        stream_ids,
        headers,
        st.integers(0, spdy.MAX_STREAM_ID),
        st.integers(0, 7),
        st.integers(0, 255),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(spdy.SynReplyFrame, stream_ids, headers, st.booleans()),
    st.builds(spdy.HeadersFrame, stream_ids, headers, st.booleans()),
    st.builds(spdy.RstStreamFrame, stream_ids, st.integers(1, 11)),
    st.builds(
        spdy.SettingsFrame,
        st.lists(
            st.builds(
                spdy.Setting,
                st.integers(0, 0xFFFFFF),
                st.integers(0, 2**32 - 1),
                st.integers(0, 255),
            ),
            max_size=4,
        ).map(tuple),
        st.booleans(),
    ),
    st.builds(spdy.PingFrame, st.integers(0, 2**32 - 1)),
    st.builds(spdy.GoAwayFrame, st.integers(0, spdy.MAX_STREAM_ID), st.integers(0, 2)),
    st.builds(
        spdy.WindowUpdateFrame, st.integers(0, spdy.MAX_STREAM_ID), st.integers(1, 2**31 - 1)
    ),
)


def test_dictionary_is_the_spdy3_one() -> None:
    # The draft-3 dictionary: 1423 bytes, starting with the length-prefixed word "options".
    assert len(spdy.DICTIONARY) == 1423
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b"charset=iso-8859-1,utf-,*,enq=0.")
    digest = hashlib.sha256(spdy.DICTIONARY).hexdigest()
    assert digest == "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"


def test_header_blocks_use_the_dictionary_and_one_stream_per_direction() -> None:
    compressor = spdy.HeaderCompressor()
    block = {"streamtype": "data", "port": "8080", "requestid": "0"}
    first = compressor.compress(block)
    second = compressor.compress(block)
    assert len(second) < len(first)  # the shared zlib stream remembers the first block

    plain = zlib.decompressobj()
    with pytest.raises(zlib.error):  # the stream asks for the preset dictionary
        plain.decompress(first)
    reader = zlib.decompressobj(zdict=spdy.DICTIONARY)
    raw = reader.decompress(first)
    assert spdy.decode_header_block(raw) == block
    assert spdy.decode_header_block(reader.decompress(second)) == block

    fresh = spdy.HeaderDecompressor()
    with pytest.raises(SpdyProtocolError):  # a later block alone lacks the stream's history
        fresh.decompress(second)


def test_header_block_layout() -> None:
    raw = spdy.encode_header_block({"Port": "80", "multi": "a\x00b"})
    assert raw == (
        b"\x00\x00\x00\x02"
        b"\x00\x00\x00\x04port\x00\x00\x00\x0280"
        b"\x00\x00\x00\x05multi\x00\x00\x00\x03a\x00b"
    )


@given(st.lists(frames, max_size=12), st.integers(1, 50))
def test_frames_round_trip_however_the_bytes_are_split(frame_list: list, step: int) -> None:
    compressor = spdy.HeaderCompressor()
    wire = b"".join(spdy.encode_frame(f, compressor) for f in frame_list)
    decoder = spdy.FrameDecoder()
    decoded = []
    for start in range(0, len(wire), step):
        decoded += decoder.feed(wire[start : start + step])
    expected = [_normalised(f) for f in frame_list]
    assert decoded == expected
    assert decoder.buffered == 0


def _normalised(frame: spdy.Frame) -> spdy.Frame:
    """What the decoder gives back: header names lower case, as on the wire."""
    if isinstance(frame, spdy.SynStreamFrame | spdy.SynReplyFrame | spdy.HeadersFrame):
        lowered = {k.lower(): v for k, v in frame.headers.items()}
        return type(frame)(**{**_fields(frame), "headers": lowered})
    return frame


def _fields(frame: object) -> dict:
    return {name: getattr(frame, name) for name in frame.__slots__}  # type: ignore[attr-defined]


def test_known_frame_bytes() -> None:
    compressor = spdy.HeaderCompressor()
    assert spdy.encode_frame(spdy.PingFrame(7), compressor) == bytes.fromhex(
        "80030006000000040000 0007".replace(" ", "")
    )
    assert spdy.encode_frame(spdy.DataFrame(3, b"hi", fin=True), compressor) == (
        b"\x00\x00\x00\x03\x01\x00\x00\x02hi"
    )
    assert spdy.encode_frame(spdy.RstStreamFrame(5, spdy.RstStatus.CANCEL), compressor) == (
        bytes.fromhex("8003000300000008") + struct.pack(">II", 5, 5)
    )
    assert spdy.encode_frame(spdy.GoAwayFrame(9), compressor) == (
        bytes.fromhex("8003000700000008") + struct.pack(">II", 9, 0)
    )


def test_unknown_control_frames_are_skipped() -> None:
    credential = bytes.fromhex("8003000a00000003") + b"abc"  # type 10, CREDENTIAL (dropped in 3.1)
    ping = spdy.encode_frame(spdy.PingFrame(1), spdy.HeaderCompressor())
    assert spdy.FrameDecoder().feed(credential + ping) == [spdy.PingFrame(1)]


def _control(frame_type: int, payload: bytes, version: int = 3, flags: int = 0) -> bytes:
    head = struct.pack(">HHB", 0x8000 | version, frame_type, flags)
    return head + len(payload).to_bytes(3, "big") + payload


@pytest.mark.parametrize(
    ("wire", "problem"),
    [
        (_control(6, b"\x00\x00\x00\x01", version=2), "unsupported SPDY version 2"),
        (_control(6, b"\x00\x00\x01"), "PING of 3 bytes"),
        (_control(3, struct.pack(">II", 1, 0)), "status 0"),
        (_control(3, struct.pack(">II", 0, 5)), "stream 0"),
        (_control(7, b"\x00\x00\x00\x01"), "GOAWAY of 4 bytes"),
        (_control(9, struct.pack(">II", 1, 0)), "delta 0"),
        (_control(4, struct.pack(">I", 2) + b"\x00" * 8), "SETTINGS of 12 bytes"),
        (_control(1, b"\x00" * 9), "SYN_STREAM of 9 bytes"),
        (_control(1, struct.pack(">II", 1, 0) + b"\x00\x00" + b"not zlib"), "decompress"),
        (_control(2, struct.pack(">I", 0)), "SYN_REPLY on stream 0"),
    ],
)
def test_malformed_frames_are_protocol_errors(wire: bytes, problem: str) -> None:
    decoder = spdy.FrameDecoder()
    with pytest.raises(SpdyProtocolError, match=problem):
        decoder.feed(wire)
    with pytest.raises(SpdyProtocolError):  # a broken session stays broken
        decoder.feed(b"")


def _syn_stream_with_block(raw_block: bytes) -> bytes:
    compressor = zlib.compressobj(zdict=spdy.DICTIONARY)
    compressed = compressor.compress(raw_block) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return _control(1, struct.pack(">II", 1, 0) + b"\x00\x00" + compressed)


@pytest.mark.parametrize(
    ("block", "problem"),
    [
        (struct.pack(">I", 1) + struct.pack(">I", 10) + b"ab", "claims 1 pairs"),
        (struct.pack(">I", 1) + struct.pack(">I", 10) + b"abcd" + b"\x00" * 4, "truncated"),
        (
            struct.pack(">I", 2) + (struct.pack(">I", 1) + b"a" + struct.pack(">I", 0)) * 2,
            "duplicate header",
        ),
        (struct.pack(">I", 1) + struct.pack(">I", 0) + struct.pack(">I", 0), "empty header name"),
        (struct.pack(">I", 0) + b"xx", "stray bytes"),
    ],
)
def test_malformed_header_blocks_are_protocol_errors(block: bytes, problem: str) -> None:
    with pytest.raises(SpdyProtocolError, match=problem):
        spdy.FrameDecoder().feed(_syn_stream_with_block(block))


def test_header_block_bombs_are_refused() -> None:
    huge = spdy.encode_header_block({"x": "a" * 300_000})
    with pytest.raises(SpdyProtocolError, match="larger than"):
        spdy.FrameDecoder(max_header_block=64 * 1024).feed(_syn_stream_with_block(huge))


def test_oversized_frames_are_refused_before_buffering() -> None:
    decoder = spdy.FrameDecoder(max_frame_length=1024)
    header = b"\x00\x00\x00\x01\x00" + (2048).to_bytes(3, "big")
    with pytest.raises(SpdyProtocolError, match="exceeds") as caught:
        decoder.feed(header)
    assert caught.value.status == spdy.RstStatus.FRAME_TOO_LARGE


@given(st.binary(max_size=200))
def test_garbage_never_raises_anything_but_protocol_errors(data: bytes) -> None:
    decoder = spdy.FrameDecoder()
    try:
        decoder.feed(data)
    except SpdyProtocolError:
        pass


def test_encoding_rejects_out_of_range_values() -> None:
    compressor = spdy.HeaderCompressor()
    with pytest.raises(SpdyProtocolError):
        spdy.encode_frame(spdy.DataFrame(0, b"x"), compressor)
    with pytest.raises(SpdyProtocolError):
        spdy.encode_frame(spdy.WindowUpdateFrame(1, 0), compressor)
    with pytest.raises(SpdyProtocolError):
        spdy.encode_header_block({"": "x"})
