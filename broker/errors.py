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
