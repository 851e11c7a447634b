"""Prebuilt `Status` errors with the exact reasons and messages kube-apiserver uses.

`resource` arguments are qualified resource names as the API server prints them: "pods",
"deployments.apps".
"""

from __future__ import annotations

from typing import Any

from ops.sim.errors import StatusError


def _split(qualified: str) -> tuple[str, str]:
    resource, _, group = qualified.partition(".")
    return resource, group


def _details(qualified: str, name: str | None = None, **extra: Any) -> dict[str, Any]:
    resource, group = _split(qualified)
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    details["kind"] = resource
    details.update(extra)
    return details


def not_found(qualified: str, name: str) -> StatusError:
    return StatusError(
        404, "NotFound", f'{qualified} "{name}" not found', _details(qualified, name)
    )


def no_such_resource() -> StatusError:
    return StatusError(404, "NotFound", "the server could not find the requested resource", {})


def already_exists(qualified: str, name: str) -> StatusError:
    return StatusError(
        409, "AlreadyExists", f'{qualified} "{name}" already exists', _details(qualified, name)
    )


def conflict(qualified: str, name: str, why: str) -> StatusError:
    return StatusError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified} "{name}": {why}',
        _details(qualified, name),
    )


MODIFIED = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def modified(qualified: str, name: str) -> StatusError:
    return conflict(qualified, name, MODIFIED)


def forbidden(qualified: str, name: str, why: str) -> StatusError:
    label = f'{qualified} "{name}"' if name else qualified
    return StatusError(
        403, "Forbidden", f"{label} is forbidden: {why}", _details(qualified, name or None)
    )


def forbidden_path(why: str) -> StatusError:
    return StatusError(403, "Forbidden", f"forbidden: {why}", {})


def invalid(kind: str, group: str, name: str, causes: list[dict[str, str]]) -> StatusError:
    """422 Invalid; causes are {"reason": "FieldValueInvalid", "message": ..., "field": ...}."""
    summary = ", ".join(f"{c['field']}: {c['message']}" for c in causes)
    qualified = f"{kind}.{group}" if group else kind
    message = f'{qualified} "{name}" is invalid: '
    message += f"[{summary}]" if len(causes) > 1 else summary
    details: dict[str, Any] = {"name": name, "kind": kind, "causes": causes}
    if group:
        details = {"name": name, "group": group, "kind": kind, "causes": causes}
    return StatusError(422, "Invalid", message, details)


def bad_request(message: str) -> StatusError:
    return StatusError(400, "BadRequest", message)


def unauthorized() -> StatusError:
    return StatusError(401, "Unauthorized", "Unauthorized")


def method_not_allowed(
    message: str = "the server does not allow this method on the requested resource",
) -> StatusError:
    return StatusError(405, "MethodNotAllowed", message, {})


def not_acceptable(accept: str) -> StatusError:
    return StatusError(
        406,
        "NotAcceptable",
        f"only the following media types are accepted: application/json, application/yaml, "
        f"application/vnd.kubernetes.protobuf (asked for {accept})",
    )


def unsupported_media_type(content_type: str) -> StatusError:
    return StatusError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format: {content_type}",
    )


def too_large(limit: int) -> StatusError:
    return StatusError(413, "RequestEntityTooLarge", f"Request entity too large: limit is {limit}")


def expired(message: str) -> StatusError:
    return StatusError(410, "Expired", message)


def gone(message: str) -> StatusError:
    return StatusError(410, "Gone", message)


def timeout(message: str, retry_after: int = 1) -> StatusError:
    return StatusError(504, "Timeout", message, {"retryAfterSeconds": retry_after})


def internal(message: str) -> StatusError:
    return StatusError(
        500,
        "InternalError",
        f"Internal error occurred: {message}",
        {"causes": [{"message": message}]},
    )


def success(qualified: str, name: str, uid: str) -> dict[str, Any]:
    """The Status body a DELETE returns for resources that vanish at once."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": _details(qualified, name, uid=uid),
    }
