"""Errors of the Kubernetes API simulator.

`StatusError` carries a Kubernetes `Status` (code, reason, message, details): it is what the HTTP
layer turns into the JSON body kube-apiserver would send, so handlers never format responses.
"""

from __future__ import annotations

from typing import Any

from domain.errors import KubegateError


class SimError(KubegateError):
    """Root of the simulator's errors."""


class SimConfigError(SimError):
    """The simulator was configured with values it cannot serve (bad dir, port, TTL)."""


class StatusError(SimError):
    """A request the API server refuses; holds the `Status` fields kube-apiserver would return."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


class TokenError(SimError):
    """A bearer token that does not authenticate (bad signature, expired, unknown account)."""
