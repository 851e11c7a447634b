"""The `Status` objects of the streaming subresources, byte for byte as kube sends them.

The error channel of exec/attach carries Go's `json.Marshal(metav1.Status)`: no kind/apiVersion
(empty TypeMeta is omitted), `"metadata":{}` always, a cause's type under the JSON key "reason".
Refusals before an upgrade are full `Status` responses (`StreamStatusError`).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ops.sim.streams.errors import StreamStatusError, UpgradeRefusedError

NON_ZERO_EXIT_CODE = "NonZeroExitCode"
EXIT_CODE_CAUSE = "ExitCode"


def success() -> dict[str, Any]:
    return {"metadata": {}, "status": "Success"}


def exit_code(code: int) -> dict[str, Any]:
    """What the API server writes when the command exits non-zero (client-go reads the cause)."""
    return {
        "metadata": {},
        "status": "Failure",
        "message": (
            f"command terminated with non-zero exit code: command terminated with exit code {code}"
        ),
        "reason": NON_ZERO_EXIT_CODE,
        "details": {"causes": [{"reason": EXIT_CODE_CAUSE, "message": str(code)}]},
    }


def internal(message: str) -> dict[str, Any]:
    """`apierrors.NewInternalError(err)` as it appears on the error channel."""
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {message}",
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    }


def plain_text(status: dict[str, Any]) -> str:
    """The pre-v4 error channel: nothing on success, else the error text (`StatusError.Error()`)."""
    if status.get("status") == "Success":
        return ""
    return str(status.get("message", ""))


def encode(status: dict[str, Any]) -> bytes:
    return json.dumps(status, separators=(",", ":")).encode("utf-8")


def bad_request(message: str) -> StreamStatusError:
    return StreamStatusError(400, "BadRequest", message)


def not_found(message: str) -> StreamStatusError:
    return StreamStatusError(404, "NotFound", message)


def invalid(kind: str, name: str, field: str, value: Any, detail: str) -> StreamStatusError:
    """422 for request options that fail validation (e.g. PodLogOptions tailLines=-1)."""
    shown = json.dumps(value) if isinstance(value, str) else value
    return _invalid(kind, name, field, "FieldValueInvalid", f"Invalid value: {shown}: {detail}")


def forbidden_field(kind: str, name: str, field: str, detail: str) -> StreamStatusError:
    """422 for a combination of options that is not allowed (field.Forbidden)."""
    return _invalid(kind, name, field, "FieldValueForbidden", f"Forbidden: {detail}")


def _invalid(kind: str, name: str, field: str, reason: str, text: str) -> StreamStatusError:
    message = f'{kind} "{name}" is invalid: {field}: {text}'
    cause = {"reason": reason, "message": text, "field": field}
    return StreamStatusError(
        422, "Invalid", message, {"name": name, "kind": kind, "causes": [cause]}
    )


def response(error: StreamStatusError | UpgradeRefusedError) -> web.Response:
    """The HTTP answer for a refusal before (or instead of) an upgrade."""
    if isinstance(error, UpgradeRefusedError):
        return web.Response(
            status=error.code,
            text=error.body + ("\n" if error.body else ""),
            content_type="text/plain",
            charset="utf-8",
            headers=error.headers,
        )
    return web.Response(
        status=error.code,
        body=encode(error.status()),
        content_type="application/json",
        headers=error.headers,
    )
