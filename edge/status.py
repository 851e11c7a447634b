"""Kubernetes `Status` objects: how the edge answers every refusal and failure to a client.

kubectl prints `message` ("Error from server (Forbidden): ..."), so each message is one
readable line naming the cause.
"""

from __future__ import annotations

import msgspec

_encoder = msgspec.json.Encoder()

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


def status_body(
    code: int, message: str, *, reason: str = "", name: str = "", group: str = "", kind: str = ""
) -> bytes:
    """JSON bytes of a failure Status with `code` and a one-line `message`.

    Every field kubectl looks at is always present (`kind`, `apiVersion`, `status`): without
    them client-go does not recognise a Status and prints "unknown" instead of the message.
    """
    body: dict[str, object] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or REASONS.get(code, "Unknown"),
        "code": code,
    }
    if name or kind:
        details = {"name": name, "group": group, "kind": kind}
        body["details"] = {k: v for k, v in details.items() if v}
    return _encoder.encode(body)


def warning_header(message: str) -> tuple[str, str]:
    """An RFC 7234 `Warning` header carrying `message`.

    client-go prints every Warning header to stderr ("Warning: ..."), including on discovery
    requests, whose failures kubectl otherwise reports as a bare "unknown". So each refusal
    travels as a warning where kubectl would hide it, and the person at the terminal reads why.
    """
    text = message.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
    return ("Warning", f'299 kubegate "{text}"')
