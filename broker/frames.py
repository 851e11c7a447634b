"""The edge <-> relay frame protocol: every wire struct of a proxied request, in one module.

A kubectl request becomes one *stream*: the edge sends `Open` as a NATS request to the cluster's
queue group, one relay replica answers `Accept` (or `Error`), and from then on both sides address
frames to each other's peer subject (`kg.s.<peer>.<stream>`). Frames are msgpack-encoded msgspec
structs tagged by `t`; docs/frames.md describes the protocol (sequence numbers, credit, liveness).

Directions:
  edge -> relay:  Open (request/reply), RequestChunk*, End, Window, Cancel
  relay -> edge:  Accept | Error (reply to Open), Head, ResponseChunk*, End | Error, Window
  both:           Heartbeat (per peer, not per stream, on `kg.s.<peer>.%HB`)

Decoding is strict: wrong types, missing fields, out-of-range values and bytes that are not
msgpack raise `MalformedFrameError`; anything longer than the size limit raises
`FrameTooLargeError` before it is parsed. Unknown extra fields are ignored so a newer peer may add
optional fields without breaking an older one; incompatible changes bump `PROTOCOL_VERSION`.
"""

from __future__ import annotations

import struct
import typing
from typing import Annotated, Final

import msgspec
from msgspec import Meta

from broker.errors import FrameTooLargeError, MalformedFrameError

PROTOCOL_VERSION: Final = 1
MAX_FRAME_BYTES: Final = 512 * 1024
"""Default upper bound of one encoded frame; below NATS `max_payload` (1 MiB in our servers)."""

MAX_HEADERS: Final = 512
MAX_HEADER_NAME: Final = 256
MAX_HEADER_VALUE: Final = 64 * 1024

StreamId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
"""Stream ids are subject-safe as they are, so a frame's subject tail *is* its stream id."""
PeerId = Annotated[str, Meta(min_length=1, max_length=200)]
Seq = Annotated[int, Meta(ge=0, le=2**53)]
Credit = Annotated[int, Meta(ge=0, le=2**40)]
ShortText = Annotated[str, Meta(max_length=256)]
HeaderPair = tuple[
    Annotated[str, Meta(min_length=1, max_length=MAX_HEADER_NAME)],
    Annotated[str, Meta(max_length=MAX_HEADER_VALUE)],
]
Headers = Annotated[list[HeaderPair], Meta(max_length=MAX_HEADERS)]


class ErrorCode:
    """Values of `Error.code`; the edge maps them to HTTP statuses / Kubernetes `Status`."""

    ABORTED = "aborted"  # cut on purpose (shutdown, an operator): message is the reason
    REVOKED = "revoked"  # the user's access here ended (policy changed): message says why
    INTERNAL = "internal"  # the relay's handler failed
    UPSTREAM = "upstream"  # the relay could not reach or talk to the API server
    PROTOCOL = "protocol"  # a frame broke the protocol (sequence gap, credit overrun, bad frame)
    MALFORMED = "malformed"  # the Open could not be decoded
    OVERLOADED = "overloaded"  # the relay is at its stream limit
    WRONG_CLUSTER = "wrong_cluster"  # the Open names another cluster
    UNSUPPORTED = "unsupported"  # protocol version not spoken by this relay
    DUPLICATE = "duplicate"  # a stream with this id is already open
    PEER_LOST = "peer_lost"  # the other side went silent


class _Frame(msgspec.Struct, tag_field="t", frozen=True, kw_only=True):
    """Base of every frame; `t` (the tag) names its type on the wire."""


class Open(_Frame, tag="open", kw_only=True):
    """Edge -> relay (as a NATS request): start a stream for one HTTP request."""

    stream: StreamId
    peer: PeerId  # the edge's peer id: where the relay sends this stream's frames
    cluster: PeerId
    method: Annotated[str, Meta(min_length=1, max_length=16)]
    path: Annotated[str, Meta(min_length=1, max_length=8192)]
    query: Annotated[str, Meta(max_length=32768)] = ""
    headers: Headers = []
    user: ShortText
    groups: Annotated[list[ShortText], Meta(max_length=1024)] = []
    request_id: ShortText = ""
    credit: Credit  # response bytes the relay may send before the edge grants more
    end: bool = False  # no request body follows (HTTP/2's END_STREAM on HEADERS): saves an End
    version: Annotated[int, Meta(ge=1)] = PROTOCOL_VERSION
    head_body: bool = False
    """The edge takes a whole small response in its `Head` (`Head.data`, `Head.end`). Relays
    that predate it ignore the field and answer with separate frames."""


class Accept(_Frame, tag="accept", kw_only=True):
    """Relay -> edge (reply to `Open`): this replica serves the stream."""

    relay: PeerId  # the relay's peer id: where the edge sends this stream's frames
    credit: Credit  # request-body bytes the edge may send before the relay grants more
    version: Annotated[int, Meta(ge=1)] = PROTOCOL_VERSION


class Head(_Frame, tag="head", kw_only=True):
    """Relay -> edge: response status and headers; exactly once, before any response bytes."""

    seq: Seq
    status: Annotated[int, Meta(ge=100, le=599)]
    headers: Headers = []
    data: bytes = b""
    """The response's first bytes (only to an edge that asked, `Open.head_body`)."""
    end: bool = False
    """No more bytes follow: the response is whole, as after an `End` (saves two frames)."""


class RequestChunk(_Frame, tag="req", kw_only=True):
    """Edge -> relay: request body bytes (after a 101: the tunnel's upstream)."""

    seq: Seq
    data: memoryview
    """Decoded as a view of the received message, not a copy (see `DataFrame`); any bytes
    when sending."""


class ResponseChunk(_Frame, tag="resp", kw_only=True):
    """Relay -> edge: response body bytes (after a 101: the tunnel's downstream)."""

    seq: Seq
    data: memoryview
    """As `RequestChunk.data`."""


class End(_Frame, tag="end", kw_only=True):
    """Half-close: the sender sends no more bytes in its direction."""

    seq: Seq


class Error(_Frame, tag="error", kw_only=True):
    """Relay -> edge: the stream failed (or, as the reply to `Open`, was refused)."""

    seq: Seq
    code: Annotated[str, Meta(min_length=1, max_length=64)]
    message: Annotated[str, Meta(max_length=4096)] = ""


class Cancel(_Frame, tag="cancel", kw_only=True):
    """Edge -> relay: give up the stream (client gone, revoked, protocol failure)."""

    seq: Seq
    reason: Annotated[str, Meta(max_length=4096)] = ""


class Window(_Frame, tag="window", kw_only=True):
    """Either way: the receiver grants `credit` more bytes in the direction it receives."""

    seq: Seq
    credit: Annotated[int, Meta(ge=1, le=2**40)]


class Heartbeat(_Frame, tag="hb", kw_only=True):
    """Per-peer liveness: `peer` is alive and holds these streams with the recipient.

    `streams` lists `(stream id, last seq sent on that stream)`. A listed stream is alive; a
    last-sent seq above what the recipient has received reveals lost frames.
    """

    peer: PeerId
    streams: Annotated[list[tuple[StreamId, Seq]], Meta(max_length=65536)] = []


Frame = (
    Open | Accept | Head | RequestChunk | ResponseChunk | End | Error | Cancel | Window | Heartbeat
)
"""Every frame type; `decode_frame` returns one of them."""

EDGE_TO_RELAY: Final = (RequestChunk, End, Window, Cancel)
"""Frame types a relay accepts on a stream subject."""
RELAY_TO_EDGE: Final = (Head, ResponseChunk, End, Window, Error)
"""Frame types an edge accepts on a stream subject."""

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Frame)


def frame_type_names() -> list[str]:
    """Every frame type's wire tag."""
    return [cls.__struct_config__.tag for cls in typing.get_args(Frame)]  # type: ignore[misc]


def frame_type(frame: Frame) -> str:
    """The frame's wire tag (`open`, `req`, ...), e.g. for metric labels."""
    return type(frame).__struct_config__.tag  # type: ignore[return-value]


def encode_frame(
    frame: Frame, max_bytes: int = MAX_FRAME_BYTES, *, validate: bool = False
) -> bytes:
    """msgpack bytes of `frame`; `FrameTooLargeError` if they would exceed `max_bytes`.

    Constructing a struct does not check its constraints; `validate=True` decodes the result
    again so a bad value fails here (`MalformedFrameError`) rather than at the peer. Worth it
    for `Open` (input from a client), not for data chunks.
    """
    data = _encoder.encode(frame)
    if len(data) > max_bytes:
        raise FrameTooLargeError(len(data), max_bytes, frame_type(frame))
    if validate:
        decode_frame(data, max_bytes)
    return data


DataFrame = RequestChunk | ResponseChunk
"""The frames that carry a stream's bytes. Their `data` decodes as a memoryview of the message
it came in: a chunk a sink writes on at once (a tunnel's socket) is never copied, and one that
waits for a reader is copied once, into bytes, when queued."""
_EMPTY_BIN = b"\xc4\x00"
_BIN8, _BIN16, _BIN32 = struct.Struct(">BB"), struct.Struct(">BH"), struct.Struct(">BI")


def data_frame_head(cls: type[DataFrame], seq: int, size: int) -> bytes:
    """The bytes of `cls(seq=seq, data=d)` that come before `d`, for any `d` of `size` bytes.

    `data` is a data frame's last field and msgpack writes a bin as its length and then the
    bytes as they are, so a frame is this head followed by the data itself: a sender can hand
    NATS the two pieces and never copy the data into a frame (`encode_frame` does).
    """
    empty = _encoder.encode(cls(seq=seq, data=b""))
    if size < 0x100:
        length = _BIN8.pack(0xC4, size)
    elif size < 0x10000:
        length = _BIN16.pack(0xC5, size)
    else:
        length = _BIN32.pack(0xC6, size)
    return empty[: -len(_EMPTY_BIN)] + length


def clip(text: str, limit: int = 4096) -> str:
    """`text` cut to `limit` characters, for reasons and messages with a wire limit."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def decode_frame(data: bytes, max_bytes: int = MAX_FRAME_BYTES) -> Frame:
    """The frame in `data`; `FrameTooLargeError` or `MalformedFrameError` if it is not one."""
    if len(data) > max_bytes:
        raise FrameTooLargeError(len(data), max_bytes)
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError too
        raise MalformedFrameError(str(exc)) from exc
