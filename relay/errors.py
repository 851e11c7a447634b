"""Relay failures, rooted in `KubegateError`."""

from __future__ import annotations

from domain.errors import KubegateError


class RelayError(KubegateError):
    """Root of relay failures."""


class RelayConfigError(RelayError):
    """A relay setting that cannot work (idle period too short, no cluster name, ...)."""


class UpstreamError(RelayError):
    """The cluster's kube-apiserver could not be reached or broke a stream."""


class ApiServerUnavailableError(UpstreamError):
    """The kube-apiserver did not answer the relay's own credentials at start."""

    def __init__(self, url: str, detail: str) -> None:
        super().__init__(f"cannot reach the kube-apiserver at {url}: {detail}")
        self.url = url
        self.detail = detail


class JitError(RelayError):
    """A just-in-time service account could not be provisioned, renewed or removed."""

    def __init__(self, user: str, action: str, detail: str, *, status: int = 0) -> None:
        super().__init__(f"service account of {user!r}: {action} failed: {detail}")
        self.user = user
        self.action = action
        self.detail = detail
        self.status = status


class NoAccessError(RelayError):
    """The relay's own policy grants the user nothing on this cluster (defense in depth)."""

    def __init__(self, user: str, cluster: str) -> None:
        super().__init__(f"user {user!r} has no access to cluster {cluster!r}")
        self.user = user
        self.cluster = cluster


class KubeApiError(RelayError):
    """A control call on the relay's own credentials failed (status 0: no answer)."""

    def __init__(self, action: str, status: int, reason: str, message: str) -> None:
        detail = f"{status} {reason}: {message}" if status else message
        super().__init__(f"{action}: {detail}")
        self.action = action
        self.status = status
        self.reason = reason
        self.message = message


class KubeConflictError(KubeApiError):
    """409: the object exists, or changed since it was read (a precondition failed)."""
