"""Errors of the simulator's streaming subresources (logs, exec, attach, port-forward).

Two kinds: `StreamStatusError` is a refusal kube-apiserver would send before any upgrade, so it
carries the `Status` fields; the protocol errors are malformed peer input found after an upgrade,
where the only answer left is to end the session (SPDY GOAWAY / RST_STREAM, WebSocket close).
"""

from __future__ import annotations

from typing import Any

from domain.errors import KubegateError


class StreamError(KubegateError):
    """Root of the streaming subresources' errors."""


class StreamStatusError(StreamError):
    """A request refused before upgrading; `status()` is the body kube-apiserver sends."""

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
        self.headers = dict(headers or {})

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


class UpgradeRefusedError(StreamError):
    """An upgrade the API server answers with a bare (non-Status) response, as kubelet does.

    Its plain text `body` and `headers` (e.g. X-Accepted-Stream-Protocol-Versions) are sent as
    they are: clients treat any non-101 answer as an upgrade failure and may fall back.
    """

    def __init__(self, code: int, body: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(body)
        self.code = code
        self.body = body
        self.headers = dict(headers or {})


class SpdyProtocolError(StreamError):
    """Malformed SPDY/3.1 input; `stream_id` is 0 when the whole session is broken."""

    def __init__(self, message: str, *, stream_id: int = 0, status: int = 1) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.status = status


class ChannelProtocolError(StreamError):
    """A malformed message of the remote-command channel protocol (channel.k8s.io family)."""


class SessionClosedError(StreamError):
    """Writing to a stream or session the peer (or the pod's deletion) has already closed."""


class RuntimeConfigError(StreamError):
    """The pod runtime was given something it cannot run (bad base dir, bad port annotation)."""
