"""The remote-command channel protocol that exec and attach speak over WebSocket.

Every message starts with a channel byte (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize); the
base64 variants send text messages whose first character is the channel digit and whose rest is
base64. v5 adds the close signal `[255, channel]` (half-closes stdin: kubernetes#89899). The
error channel carries plain text before v4 and a `Status` JSON object from v4 on. Resize events
are JSON `{"Width": w, "Height": h}` objects, one after another, on channel 4.

Purely computational: negotiation, encoding and decoding; the session lives in `remotecommand`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass

from ops.sim.streams.errors import ChannelProtocolError

STDIN = 0
STDOUT = 1
STDERR = 2
ERROR = 3
RESIZE = 4
CLOSE = 255


@dataclass(frozen=True, slots=True)
class ChannelProtocol:
    name: str
    version: int
    base64: bool = False

    @property
    def supports_close(self) -> bool:
        return self.version >= 5

    @property
    def status_json(self) -> bool:
        """From v4 on the error channel carries a `Status` object, before that plain text."""
        return self.version >= 4


V5 = ChannelProtocol("v5.channel.k8s.io", 5)
V4 = ChannelProtocol("v4.channel.k8s.io", 4)
V4_BASE64 = ChannelProtocol("v4.base64.channel.k8s.io", 4, base64=True)
V3 = ChannelProtocol("v3.channel.k8s.io", 3)
V2 = ChannelProtocol("v2.channel.k8s.io", 2)
V1 = ChannelProtocol("channel.k8s.io", 1)
V1_BASE64 = ChannelProtocol("base64.channel.k8s.io", 1, base64=True)

SUPPORTED = (V5, V4, V4_BASE64, V3, V2, V1, V1_BASE64)
PRE_V5 = SUPPORTED[1:]
"""What kubelet serves itself: a v1.29 API server proxies WebSocket exec to it unchanged."""


def negotiate(
    requested: Iterable[str], allowed: Iterable[ChannelProtocol] = SUPPORTED
) -> ChannelProtocol | None:
    """The first protocol the client listed that we speak (the client's order wins, as in
    kubelet's handshake). A request without any subprotocol gets v1, like kube's "" entry."""
    names = [n.strip() for n in requested if n.strip()]
    speak = {p.name: p for p in allowed}
    if not names:
        return V1 if V1.name in speak else None
    for name in names:
        if name in speak:
            return speak[name]
    return None


def encode(protocol: ChannelProtocol, channel: int, data: bytes) -> bytes | str:
    """One outgoing message: bytes for binary protocols, str for base64 ones."""
    if protocol.base64:
        return chr(ord("0") + channel) + base64.b64encode(data).decode("ascii")
    return bytes([channel]) + data


@dataclass(frozen=True, slots=True)
class Data:
    channel: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    channel: int


def decode(protocol: ChannelProtocol, message: bytes | str) -> Data | Close | None:
    """One incoming message; None for an empty one (kube skips those)."""
    if isinstance(message, str):
        if not protocol.base64:
            raise ChannelProtocolError(f"text message on binary protocol {protocol.name}")
        raw = message.encode("utf-8")
    else:
        raw = bytes(message)
    if not raw:
        return None
    if protocol.supports_close and raw[0] == CLOSE:
        if len(raw) != 2:
            raise ChannelProtocolError(
                f"close signal must name exactly one channel, got {len(raw) - 1} bytes"
            )
        return Close(raw[1])
    if protocol.base64:
        channel = raw[0] - ord("0")
        try:
            payload = base64.b64decode(raw[1:], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ChannelProtocolError(f"bad base64 on channel {channel}") from exc
        return Data(channel, payload)
    return Data(raw[0], raw[1:])


@dataclass(frozen=True, slots=True)
class TerminalSize:
    width: int
    height: int


class ResizeDecoder:
    """Collects resize-channel bytes and yields each complete JSON size object.

    Objects may be split across messages or share one, as client-go writes them with a JSON
    encoder on a stream.
    """

    MAX_BUFFER = 64 * 1024

    def __init__(self) -> None:
        self._buffer = ""
        self._decoder = json.JSONDecoder()

    def feed(self, data: bytes) -> list[TerminalSize]:
        self._buffer += data.decode("utf-8", errors="replace")
        if len(self._buffer) > self.MAX_BUFFER:
            raise ChannelProtocolError("resize channel sent an unterminated object")
        sizes: list[TerminalSize] = []
        while True:
            text = self._buffer.lstrip()
            if not text:
                self._buffer = ""
                return sizes
            try:
                obj, end = self._decoder.raw_decode(text)
            except json.JSONDecodeError:
                self._buffer = text
                if text[0] != "{":
                    raise ChannelProtocolError("resize channel sent something not JSON") from None
                return sizes  # incomplete: wait for more
            self._buffer = text[end:]
            sizes.append(_size(obj))


def _size(obj: object) -> TerminalSize:
    if not isinstance(obj, dict):
        raise ChannelProtocolError("resize event is not an object")
    width, height = obj.get("Width", 0), obj.get("Height", 0)
    if not isinstance(width, int) or not isinstance(height, int):
        raise ChannelProtocolError("resize Width/Height must be integers")
    if not (0 <= width <= 0xFFFF and 0 <= height <= 0xFFFF):
        raise ChannelProtocolError("resize Width/Height out of range")
    return TerminalSize(width, height)
