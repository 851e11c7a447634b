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
