"""Kubernetes `Status` objects: how the edge answers every refusal and failure to a client.

kubectl prints `message` ("Error from server (Forbidden): ..."), so each message is one
readable line naming the cause.
"""

from __future__ import annotations

import msgspec

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    431: "RequestHeaderFieldsTooLarge",
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class StatusDetails(msgspec.Struct, omit_defaults=True):
    name: str = ""
    group: str = ""
    kind: str = ""


class Status(msgspec.Struct, omit_defaults=True):
    kind: str = "Status"
    apiVersion: str = "v1"
    metadata: dict[str, str] = {}
    status: str = "Failure"
    message: str = ""
    reason: str = ""
    details: StatusDetails | None = None
    code: int = 0


_encoder = msgspec.json.Encoder()


def status_body(
    code: int, message: str, *, reason: str = "", name: str = "", group: str = "", kind: str = ""
) -> bytes:
    """JSON bytes of a failure Status with `code` and a one-line `message`."""
    details = StatusDetails(name=name, group=group, kind=kind) if (name or kind) else None
    return _encoder.encode(
        Status(
            message=message,
            reason=reason or REASONS.get(code, "Unknown"),
            details=details,
            code=code,
            metadata={},
        )
    )
