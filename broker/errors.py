"""Broker failures, rooted in `KubegateError`; NATS exceptions are kept as `__cause__`."""

from __future__ import annotations

from domain.errors import KubegateError


class BrokerError(KubegateError):
    """Root of broker failures."""


class NatsUnavailableError(BrokerError):
    """Could not reach NATS at the given URL(s)."""

    def __init__(self, url: str, detail: str = "") -> None:
        super().__init__(f"cannot reach NATS at {url}" + (f": {detail}" if detail else ""))
        self.url = url


# --- frames and the edge <-> relay transport (broker/frames.py, broker/transport*.py) ---


class FrameError(BrokerError):
    """Bytes that are not an acceptable frame."""


class MalformedFrameError(FrameError):
    """Not msgpack, an unknown frame type, a missing field or a value out of range."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"malformed frame: {detail}")
        self.detail = detail


class FrameTooLargeError(FrameError):
    """A frame longer than the limit; rejected before it is parsed."""

    def __init__(self, size: int, limit: int, frame_type: str = "") -> None:
        what = f"{frame_type} frame" if frame_type else "frame"
        super().__init__(f"{what} of {size} bytes exceeds the limit of {limit}")
        self.size = size
        self.limit = limit
        self.frame_type = frame_type


class TransportError(BrokerError):
    """Root of failures of the frame transport."""


class TransportClosedError(TransportError):
    """The edge client or relay server is closed, or its NATS connection is gone."""


class NoRelayError(TransportError):
    """No relay serves the cluster (NATS found no responder): the edge answers 503."""

    def __init__(self, cluster: str) -> None:
        super().__init__(f"no relay is connected for cluster {cluster!r}")
        self.cluster = cluster


class OpenTimeoutError(TransportError, TimeoutError):
    """A relay exists but none accepted the stream in time: the edge answers 504."""

    def __init__(self, cluster: str, timeout: float) -> None:
        super().__init__(f"no relay of cluster {cluster!r} accepted the stream in {timeout:g}s")
        self.cluster = cluster
        self.timeout = timeout


class OpenRejectedError(TransportError):
    """The relay refused the stream (`code` from `frames.ErrorCode`, e.g. overloaded)."""

    def __init__(self, cluster: str, code: str, message: str) -> None:
        super().__init__(f"relay of cluster {cluster!r} refused the stream: {code}: {message}")
        self.cluster = cluster
        self.code = code
        self.message = message


class StreamError(TransportError):
    """An open stream failed or was closed; `stream_id` names it."""

    def __init__(self, stream_id: str, message: str) -> None:
        super().__init__(f"stream {stream_id}: {message}")
        self.stream_id = stream_id


class StreamClosedError(StreamError):
    """The stream already finished (or this direction was half-closed): nothing more to do."""


class StreamCancelledError(StreamError):
    """The stream was cancelled; `by_peer` tells whether the other side did it."""

    def __init__(self, stream_id: str, reason: str, by_peer: bool) -> None:
        who = "the peer" if by_peer else "this side"
        super().__init__(stream_id, f"cancelled by {who}: {reason}")
        self.reason = reason
        self.by_peer = by_peer


class StreamAbortedError(StreamCancelledError):
    """The stream was cut on purpose (revocation, shutdown); `reason` says why."""


class RemoteStreamError(StreamError):
    """The relay reported a failure (`code` from `frames.ErrorCode`)."""

    def __init__(self, stream_id: str, code: str, message: str) -> None:
        super().__init__(stream_id, f"remote error {code}: {message}")
        self.code = code
        self.message = message


class PeerLostError(StreamError):
    """The other side went silent (no frame, no heartbeat) for longer than the dead interval."""

    def __init__(self, stream_id: str, peer: str, silent_for: float) -> None:
        super().__init__(stream_id, f"peer {peer!r} silent for {silent_for:.1f}s")
        self.peer = peer
        self.silent_for = silent_for


class StreamProtocolError(StreamError):
    """A frame broke the protocol: a sequence gap (lost frames), credit overrun, wrong order."""

    def __init__(self, stream_id: str, detail: str) -> None:
        super().__init__(stream_id, f"protocol violation: {detail}")
        self.detail = detail


class StreamStateError(StreamError):
    """A call that does not fit the stream's state (bytes before the head, a second head)."""
