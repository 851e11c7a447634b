"""Broker failures, rooted in `KubegateError`; NATS exceptions are kept as `__cause__`.

JetStream answers a failed publish or API call with an `err_code`; `from_jetstream` maps the
codes kubegate acts on to their own classes, so callers catch a meaning, not a number.
"""

from __future__ import annotations

from collections.abc import Mapping

from eventsourcing import persistence as es

from domain.errors import KubegateError


class BrokerError(KubegateError):
    """Root of broker failures."""


class NatsUnavailableError(BrokerError):
    """Could not reach NATS at the given URL(s)."""

    def __init__(self, url: str, detail: str = "") -> None:
        super().__init__(f"cannot reach NATS at {url}" + (f": {detail}" if detail else ""))
        self.url = url
        self.detail = detail


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


class StreamRevokedError(StreamAbortedError):
    """The relay cut the stream because the user's access to its cluster ended (it may apply
    a revocation before the edge does); `reason` says why."""


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


class BrokerTimeoutError(BrokerError, TimeoutError):
    """NATS did not answer in time. For an append the outcome is unknown: retry with the same
    message id and the log stores it at most once."""

    def __init__(self, operation: str, timeout: float) -> None:
        super().__init__(f"{operation}: no answer from NATS within {timeout:g}s")
        self.operation = operation
        self.timeout = timeout


class NoStreamError(BrokerError):
    """No JetStream stream takes this subject (or the stream does not exist)."""

    def __init__(self, subject: str) -> None:
        super().__init__(f"no JetStream stream for {subject!r}")
        self.subject = subject


class JetStreamError(BrokerError):
    """JetStream refused a request; `err_code` is the server's JetStream error code."""

    def __init__(self, description: str, *, code: int = 0, err_code: int = 0) -> None:
        super().__init__(f"JetStream error {err_code or code}: {description}")
        self.description = description
        self.code = code
        self.err_code = err_code


class ConcurrencyError(JetStreamError):
    """An append expected the subject's last sequence to be `expected`; it was not (10071).

    The log never overwrites: the caller reloads, re-checks its rule and tries again.
    `actual` is the subject's last sequence when known (None otherwise).
    """

    ERR_CODE = 10071

    def __init__(self, subject: str, expected: int, actual: int | None = None) -> None:
        detail = f"{subject}: expected last sequence {expected}"
        if actual is not None:
            detail += f", found {actual}"
        super().__init__(detail, code=400, err_code=self.ERR_CODE)
        self.subject = subject
        self.expected = expected
        self.actual = actual


class InvalidBatchError(BrokerError):
    """A batch the server would refuse, caught before sending (empty, too large, or an
    expectation on a subject written earlier in the same batch)."""


class AtomicBatchDisabledError(JetStreamError):
    """The stream does not allow atomic batches (`allow_atomic`), 10174."""

    ERR_CODE = 10174


class BatchTooLargeError(JetStreamError):
    """More messages in one atomic batch than the server allows (1000), 10199."""

    ERR_CODE = 10199


class DuplicateInBatchError(JetStreamError):
    """An atomic batch carried a message id the stream already holds (10201), and the stored
    messages are not this same batch, so it cannot count as a retried success."""

    ERR_CODE = 10201


class StreamNotFoundError(JetStreamError):
    """The named stream does not exist (10059)."""

    ERR_CODE = 10059


class BridgeError(BrokerError):
    """The sync-to-async bridge cannot run a call (closed, or called from its own loop)."""


class EventConflictError(BrokerError, es.IntegrityError):
    """eventsourcing's `IntegrityError` from the JetStream recorders: that aggregate version or
    tracking position is already recorded (or a version within one insert repeats)."""


class EventLogUnavailableError(BrokerError, es.OperationalError):
    """eventsourcing's `OperationalError`: the log did not answer (NATS down, timeout)."""


class EventLogDataError(BrokerError, es.DataError):
    """eventsourcing's `DataError`: an insert the log cannot store (more than one atomic
    batch holds, a stream that refuses atomic batches)."""


_BY_CODE: dict[int, type[JetStreamError]] = {
    AtomicBatchDisabledError.ERR_CODE: AtomicBatchDisabledError,
    BatchTooLargeError.ERR_CODE: BatchTooLargeError,
    DuplicateInBatchError.ERR_CODE: DuplicateInBatchError,
    StreamNotFoundError.ERR_CODE: StreamNotFoundError,
}


def from_jetstream(error: Mapping[str, object]) -> JetStreamError:
    """The typed error for a JetStream `{"code", "err_code", "description"}` answer.

    A conflict (10071) needs the subject and the expectation to be useful, so the log raises
    `ConcurrencyError` itself; here it maps to a plain `JetStreamError`.
    """
    err_code = int(error.get("err_code") or 0)  # type: ignore[call-overload]
    code = int(error.get("code") or 0)  # type: ignore[call-overload]
    description = str(error.get("description") or "")
    cls = _BY_CODE.get(err_code, JetStreamError)
    return cls(description, code=code, err_code=err_code)
