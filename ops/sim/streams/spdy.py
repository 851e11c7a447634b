"""SPDY/3.1 framing: frames to bytes and back, with zlib-compressed name/value header blocks.

Kubernetes still speaks SPDY/3.1 for port-forward (also tunnelled inside WebSocket messages since
kubectl 1.31) and for exec/attach when WebSocket is off. This module is the wire codec only:
purely computational, no I/O, no asyncio. `spdy_session` runs it over a connection.

Written from the SPDY Protocol Draft 3.1 specification. Each direction of a connection has one
zlib stream for header blocks, primed with the draft's dictionary and flushed with Z_SYNC_FLUSH
after every block, so a `HeaderCompressor`/`HeaderDecompressor` pair lives as long as the session.
Header names are lower case; several values of one name are joined by NUL.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from ops.sim.streams.errors import SpdyProtocolError

VERSION = 3
MAX_LENGTH = 0xFFFFFF  # a frame's length field is 24 bits
MAX_STREAM_ID = 0x7FFFFFFF
FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02  # SYN_STREAM only
SETTINGS_FLAG_CLEAR = 0x01
DEFAULT_MAX_HEADER_BLOCK = 256 * 1024  # decompressed; guards against zlib bombs

_HEADER = struct.Struct(">IB3s")  # first word, flags, 24-bit length
_U32 = struct.Struct(">I")
_TWO_U32 = struct.Struct(">II")


class ControlType(IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    FRAME_TOO_LARGE = 11


class GoAwayStatus(IntEnum):
    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


def _build_dictionary() -> bytes:
    """The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1).

    It is a run of length-prefixed words (4-byte big-endian length, then the word) followed by a
    tail of common values written back to back.
    """
    words = (
        "options head post put delete trace accept accept-charset accept-encoding "
        "accept-language accept-ranges age allow authorization cache-control connection "
        "content-base content-encoding content-language content-length content-location "
        "content-md5 content-range content-type date etag expect expires from host if-match "
        "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
        "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
        "server te trailer transfer-encoding upgrade user-agent vary via warning "
        "www-authenticate method get status"
    ).split()
    words += ["200 OK"]
    words += "version HTTP/1.1 url public set-cookie keep-alive origin".split()
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504"
        "505203 Non-Authoritative Information204 No Content301 Moved Permanently"
        "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error"
        "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct "
        "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,"
        "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
        "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8"
        "charset=iso-8859-1,utf-,*,enq=0."
    )
    out = bytearray()
    for word in words:
        raw = word.encode("ascii")
        out += _U32.pack(len(raw)) + raw
    out += tail.encode("ascii")
    return bytes(out)


DICTIONARY = _build_dictionary()

Headers = Mapping[str, str]
"""Name/value pairs of a header block: lower-case names; several values joined by NUL."""


@dataclass(frozen=True, slots=True)
class DataFrame:
    stream_id: int
    data: bytes = b""
    fin: bool = False


@dataclass(frozen=True, slots=True)
class SynStreamFrame:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    associated_id: int = 0
    priority: int = 0
    slot: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass(frozen=True, slots=True)
class SynReplyFrame:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    fin: bool = False


@dataclass(frozen=True, slots=True)
class RstStreamFrame:
    stream_id: int
    status: int


@dataclass(frozen=True, slots=True)
class Setting:
    id: int
    value: int
    flags: int = 0


@dataclass(frozen=True, slots=True)
class SettingsFrame:
    settings: tuple[Setting, ...] = ()
    clear: bool = False


@dataclass(frozen=True, slots=True)
class PingFrame:
    ping_id: int


@dataclass(frozen=True, slots=True)
class GoAwayFrame:
    last_good_stream_id: int
    status: int = GoAwayStatus.OK


@dataclass(frozen=True, slots=True)
class HeadersFrame:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    fin: bool = False


@dataclass(frozen=True, slots=True)
class WindowUpdateFrame:
    stream_id: int
    delta: int


Frame = (
    DataFrame
    | SynStreamFrame
    | SynReplyFrame
    | RstStreamFrame
    | SettingsFrame
    | PingFrame
    | GoAwayFrame
    | HeadersFrame
    | WindowUpdateFrame
)


def encode_header_block(headers: Headers) -> bytes:
    """The uncompressed name/value block: count, then length-prefixed names and values."""
    out = bytearray(_U32.pack(len(headers)))
    for name, value in headers.items():
        raw_name = name.lower().encode("utf-8")
        raw_value = value.encode("utf-8")
        if not raw_name:
            raise SpdyProtocolError("empty header name")
        out += _U32.pack(len(raw_name)) + raw_name + _U32.pack(len(raw_value)) + raw_value
    return bytes(out)


def decode_header_block(block: bytes) -> dict[str, str]:
    """Parse an uncompressed name/value block; malformed or duplicate entries are errors."""
    view = memoryview(block)
    if len(view) < 4:
        raise SpdyProtocolError("header block shorter than its count")
    (count,) = _U32.unpack_from(view, 0)
    # Each pair takes at least 8 bytes (two lengths); reject counts the block cannot hold.
    if count > (len(view) - 4) // 8:
        raise SpdyProtocolError(f"header block claims {count} pairs in {len(view)} bytes")
    pos = 4
    headers: dict[str, str] = {}
    for _ in range(count):
        name, pos = _read_string(view, pos)
        value, pos = _read_string(view, pos)
        if not name:
            raise SpdyProtocolError("empty header name")
        key = name.lower()
        if key in headers:
            raise SpdyProtocolError(f"duplicate header {key!r}")
        headers[key] = value
    if pos != len(view):
        raise SpdyProtocolError(f"{len(view) - pos} stray bytes after the header block")
    return headers


def _read_string(view: memoryview, pos: int) -> tuple[str, int]:
    if pos + 4 > len(view):
        raise SpdyProtocolError("header block truncated in a length")
    (length,) = _U32.unpack_from(view, pos)
    pos += 4
    if pos + length > len(view):
        raise SpdyProtocolError("header block truncated in a name or value")
    try:
        text = bytes(view[pos : pos + length]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpdyProtocolError("header name or value is not UTF-8") from exc
    return text, pos + length


class HeaderCompressor:
    """The sending direction's zlib stream; one per session, blocks compressed in send order."""

    def __init__(self, level: int = zlib.Z_DEFAULT_COMPRESSION) -> None:
        self._zlib = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS, zdict=DICTIONARY)

    def compress(self, headers: Headers) -> bytes:
        raw = encode_header_block(headers)
        return self._zlib.compress(raw) + self._zlib.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    """The receiving direction's zlib stream; blocks must be fed in arrival order."""

    def __init__(self, max_block: int = DEFAULT_MAX_HEADER_BLOCK) -> None:
        self._zlib = zlib.decompressobj(zlib.MAX_WBITS, zdict=DICTIONARY)
        self._max_block = max_block

    def decompress(self, data: bytes) -> dict[str, str]:
        try:
            raw = self._zlib.decompress(data, self._max_block + 1)
        except zlib.error as exc:
            raise SpdyProtocolError(f"header block does not decompress: {exc}") from exc
        if len(raw) > self._max_block or self._zlib.unconsumed_tail:
            raise SpdyProtocolError(f"header block larger than {self._max_block} bytes")
        return decode_header_block(raw)


def _control(frame_type: ControlType, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_LENGTH:
        raise SpdyProtocolError(f"control frame of {len(payload)} bytes is too large")
    first = 0x80000000 | (VERSION << 16) | int(frame_type)
    return _HEADER.pack(first, flags, len(payload).to_bytes(3, "big")) + payload


def _check_stream_id(stream_id: int, *, allow_zero: bool = False) -> None:
    if not (0 if allow_zero else 1) <= stream_id <= MAX_STREAM_ID:
        raise SpdyProtocolError(f"stream id {stream_id} out of range")


def encode_frame(frame: Frame, compressor: HeaderCompressor) -> bytes:
    """Serialize one frame; header blocks go through the session's `compressor` (stateful)."""
    match frame:
        case DataFrame(stream_id=sid, data=data, fin=fin):
            _check_stream_id(sid)
            if len(data) > MAX_LENGTH:
                raise SpdyProtocolError(f"data frame of {len(data)} bytes is too large")
            flags = FLAG_FIN if fin else 0
            return _HEADER.pack(sid, flags, len(data).to_bytes(3, "big")) + bytes(data)
        case SynStreamFrame():
            _check_stream_id(frame.stream_id)
            _check_stream_id(frame.associated_id, allow_zero=True)
            flags = (FLAG_FIN if frame.fin else 0) | (
                FLAG_UNIDIRECTIONAL if frame.unidirectional else 0
            )
            payload = (
                _TWO_U32.pack(frame.stream_id, frame.associated_id)
                + bytes([(frame.priority & 0x7) << 5, frame.slot & 0xFF])
                + compressor.compress(frame.headers)
            )
            return _control(ControlType.SYN_STREAM, flags, payload)
        case SynReplyFrame(stream_id=sid, headers=headers, fin=fin):
            _check_stream_id(sid)
            payload = _U32.pack(sid) + compressor.compress(headers)
            return _control(ControlType.SYN_REPLY, FLAG_FIN if fin else 0, payload)
        case HeadersFrame(stream_id=sid, headers=headers, fin=fin):
            _check_stream_id(sid)
            payload = _U32.pack(sid) + compressor.compress(headers)
            return _control(ControlType.HEADERS, FLAG_FIN if fin else 0, payload)
        case RstStreamFrame(stream_id=sid, status=status):
            _check_stream_id(sid)
            return _control(ControlType.RST_STREAM, 0, _TWO_U32.pack(sid, status))
        case SettingsFrame(settings=settings, clear=clear):
            payload = _U32.pack(len(settings)) + b"".join(
                _TWO_U32.pack(((s.flags & 0xFF) << 24) | (s.id & 0xFFFFFF), s.value)
                for s in settings
            )
            return _control(ControlType.SETTINGS, SETTINGS_FLAG_CLEAR if clear else 0, payload)
        case PingFrame(ping_id=ping_id):
            return _control(ControlType.PING, 0, _U32.pack(ping_id))
        case GoAwayFrame(last_good_stream_id=last, status=status):
            _check_stream_id(last, allow_zero=True)
            return _control(ControlType.GOAWAY, 0, _TWO_U32.pack(last, status))
        case WindowUpdateFrame(stream_id=sid, delta=delta):
            _check_stream_id(sid, allow_zero=True)
            if not 1 <= delta <= 0x7FFFFFFF:
                raise SpdyProtocolError(f"window delta {delta} out of range")
            return _control(ControlType.WINDOW_UPDATE, 0, _TWO_U32.pack(sid, delta))
    raise TypeError(f"not a SPDY frame: {frame!r}")


class FrameDecoder:
    """Incremental parser: `feed()` bytes as they arrive, get the complete frames back.

    Header blocks are decompressed here, in arrival order, because the zlib stream is shared by
    every block of the connection. Unknown control frame types are skipped, as the draft asks.
    Any `SpdyProtocolError` leaves the decoder unusable: the session must GOAWAY.
    """

    def __init__(
        self,
        *,
        max_frame_length: int = MAX_LENGTH,
        max_header_block: int = DEFAULT_MAX_HEADER_BLOCK,
    ) -> None:
        self._buffer = bytearray()
        self._max_frame_length = max_frame_length
        self._decompressor = HeaderDecompressor(max_header_block)
        self._broken = False

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        if self._broken:
            raise SpdyProtocolError("decoder already failed")
        self._buffer += data
        frames: list[Frame] = []
        try:
            while len(self._buffer) >= 8:
                first, flags, raw_length = _HEADER.unpack_from(self._buffer, 0)
                length = int.from_bytes(raw_length, "big")
                if length > self._max_frame_length:
                    raise SpdyProtocolError(
                        f"frame of {length} bytes exceeds {self._max_frame_length}",
                        status=RstStatus.FRAME_TOO_LARGE,
                    )
                if len(self._buffer) < 8 + length:
                    break
                payload = bytes(self._buffer[8 : 8 + length])
                del self._buffer[: 8 + length]
                frame = self._parse(first, flags, payload)
                if frame is not None:
                    frames.append(frame)
        except SpdyProtocolError:
            self._broken = True
            raise
        return frames

    def _parse(self, first: int, flags: int, payload: bytes) -> Frame | None:
        if not first & 0x80000000:
            return DataFrame(first & MAX_STREAM_ID, payload, bool(flags & FLAG_FIN))
        version = (first >> 16) & 0x7FFF
        if version != VERSION:
            raise SpdyProtocolError(
                f"unsupported SPDY version {version}", status=RstStatus.UNSUPPORTED_VERSION
            )
        frame_type = first & 0xFFFF
        match frame_type:
            case ControlType.SYN_STREAM:
                _need(payload, 10, "SYN_STREAM")
                sid, assoc = _TWO_U32.unpack_from(payload, 0)
                return SynStreamFrame(
                    stream_id=_nonzero(sid & MAX_STREAM_ID, "SYN_STREAM"),
                    headers=self._decompressor.decompress(payload[10:]),
                    associated_id=assoc & MAX_STREAM_ID,
                    priority=payload[8] >> 5,
                    slot=payload[9],
                    fin=bool(flags & FLAG_FIN),
                    unidirectional=bool(flags & FLAG_UNIDIRECTIONAL),
                )
            case ControlType.SYN_REPLY | ControlType.HEADERS:
                name = ControlType(frame_type).name
                _need(payload, 4, name)
                (sid,) = _U32.unpack_from(payload, 0)
                sid = _nonzero(sid & MAX_STREAM_ID, name)
                headers = self._decompressor.decompress(payload[4:])
                fin = bool(flags & FLAG_FIN)
                if frame_type == ControlType.SYN_REPLY:
                    return SynReplyFrame(sid, headers, fin)
                return HeadersFrame(sid, headers, fin)
            case ControlType.RST_STREAM:
                _exact(payload, 8, "RST_STREAM")
                sid, status = _TWO_U32.unpack(payload)
                if status == 0:
                    raise SpdyProtocolError("RST_STREAM with status 0")
                return RstStreamFrame(_nonzero(sid & MAX_STREAM_ID, "RST_STREAM"), status)
            case ControlType.SETTINGS:
                _need(payload, 4, "SETTINGS")
                (count,) = _U32.unpack_from(payload, 0)
                if len(payload) != 4 + 8 * count:
                    raise SpdyProtocolError(f"SETTINGS of {len(payload)} bytes for {count} entries")
                settings = tuple(
                    Setting(id=word & 0xFFFFFF, value=value, flags=word >> 24)
                    for word, value in (
                        _TWO_U32.unpack_from(payload, 4 + 8 * i) for i in range(count)
                    )
                )
                return SettingsFrame(settings, bool(flags & SETTINGS_FLAG_CLEAR))
            case ControlType.PING:
                _exact(payload, 4, "PING")
                return PingFrame(_U32.unpack(payload)[0])
            case ControlType.GOAWAY:
                _exact(payload, 8, "GOAWAY")
                last, status = _TWO_U32.unpack(payload)
                return GoAwayFrame(last & MAX_STREAM_ID, status)
            case ControlType.WINDOW_UPDATE:
                _exact(payload, 8, "WINDOW_UPDATE")
                sid, delta = _TWO_U32.unpack(payload)
                delta &= 0x7FFFFFFF
                if delta == 0:
                    raise SpdyProtocolError("WINDOW_UPDATE with delta 0", stream_id=sid)
                return WindowUpdateFrame(sid & MAX_STREAM_ID, delta)
        return None  # unknown control types (e.g. CREDENTIAL) are ignored


def _need(payload: bytes, size: int, what: str) -> None:
    if len(payload) < size:
        raise SpdyProtocolError(f"{what} of {len(payload)} bytes is shorter than {size}")


def _exact(payload: bytes, size: int, what: str) -> None:
    if len(payload) != size:
        raise SpdyProtocolError(f"{what} of {len(payload)} bytes, expected {size}")


def _nonzero(stream_id: int, what: str) -> int:
    if stream_id == 0:
        raise SpdyProtocolError(f"{what} on stream 0")
    return stream_id
