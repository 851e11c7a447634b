"""The remote-command channel protocol without a network."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ops.sim.streams import channel
from ops.sim.streams.errors import ChannelProtocolError


def test_negotiation_follows_the_clients_order() -> None:
    assert channel.negotiate(["v5.channel.k8s.io", "v4.channel.k8s.io"]) is channel.V5
    assert channel.negotiate(["v4.channel.k8s.io", "v5.channel.k8s.io"]) is channel.V4
    assert channel.negotiate(["nope", " base64.channel.k8s.io "]) is channel.V1_BASE64
    assert channel.negotiate([]) is channel.V1  # no subprotocol: kube's "" entry
    assert channel.negotiate(["nope"]) is None
    assert channel.negotiate(["v5.channel.k8s.io"], channel.PRE_V5) is None  # a v1.29 kubelet


@given(st.sampled_from([0, 1, 2, 3, 4]), st.binary(max_size=100))
def test_binary_and_base64_round_trip(stream: int, data: bytes) -> None:
    for protocol in (channel.V5, channel.V4, channel.V1):
        assert channel.decode(protocol, channel.encode(protocol, stream, data)) == channel.Data(
            stream, data
        )
    for protocol in (channel.V4_BASE64, channel.V1_BASE64):
        message = channel.encode(protocol, stream, data)
        assert isinstance(message, str) and message[0] == str(stream)
        assert channel.decode(protocol, message) == channel.Data(stream, data)


def test_v5_close_signal() -> None:
    assert channel.decode(channel.V5, b"\xff\x00") == channel.Close(channel.STDIN)
    with pytest.raises(ChannelProtocolError, match="exactly one channel"):
        channel.decode(channel.V5, b"\xff")
    with pytest.raises(ChannelProtocolError):
        channel.decode(channel.V5, b"\xff\x00\x01")
    # Before v5, 255 is just a (bogus) channel number, not a close signal.
    assert channel.decode(channel.V4, b"\xff\x00") == channel.Data(255, b"\x00")


def test_bad_messages() -> None:
    assert channel.decode(channel.V5, b"") is None
    with pytest.raises(ChannelProtocolError, match="text message"):
        channel.decode(channel.V5, "0aGk=")
    with pytest.raises(ChannelProtocolError, match="base64"):
        channel.decode(channel.V1_BASE64, "0!!not base64!!")


def test_error_channel_format_by_version() -> None:
    assert channel.V4.status_json and channel.V5.status_json
    assert not channel.V3.status_json and not channel.V1.status_json
    assert channel.V5.supports_close and not channel.V4.supports_close


def test_resize_events_split_and_joined() -> None:
    decoder = channel.ResizeDecoder()
    assert decoder.feed(b'{"Width":80,') == []
    assert decoder.feed(b'"Height":24}\n{"Width":100,"Height":40}{"Wid') == [
        channel.TerminalSize(80, 24),
        channel.TerminalSize(100, 40),
    ]
    assert decoder.feed(b'th":1,"Height":2}') == [channel.TerminalSize(1, 2)]


@pytest.mark.parametrize(
    "data",
    [b"[1,2]", b'{"Width":"80","Height":24}', b'{"Width":-1,"Height":24}', b"nonsense"],
)
def test_bad_resize_events(data: bytes) -> None:
    with pytest.raises(ChannelProtocolError):
        channel.ResizeDecoder().feed(data)


def test_unterminated_resize_object_is_bounded() -> None:
    decoder = channel.ResizeDecoder()
    with pytest.raises(ChannelProtocolError, match="unterminated"):
        decoder.feed(b'{"Width":' + b" " * (channel.ResizeDecoder.MAX_BUFFER + 1))
