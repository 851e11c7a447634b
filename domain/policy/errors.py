"""Failures of the policy model, rooted at `domain.errors.DomainError`.

Details live in attributes so callers can map them (to a Kubernetes `Status`, an HTTP error or
a form message) without parsing text.
"""

from __future__ import annotations

from domain.errors import CommandRejectedError, DomainError


class PolicyError(DomainError):
    """Root of the policy package's errors."""


class MalformedRequestError(PolicyError):
    """An HTTP request that cannot be turned into request attributes.

    `path` is the offending path; `detail` says what is wrong with it. The edge answers 400
    (kube-apiserver answers 500 for the one case it rejects; we reject more, see attributes).
    """

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"cannot interpret request path {path!r}: {detail}")
        self.path = path
        self.detail = detail


class NaiveTimeError(PolicyError):
    """A datetime without a timezone where the policy needs an instant."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} must be timezone-aware")
        self.what = what


class InvalidCallerError(PolicyError):
    """A `Caller` that names no known access path (`cli` or `browser`)."""


class InvalidRuleError(PolicyError):
    """An RBAC rule that Kubernetes would reject (no verbs, resources mixed with URLs, ...)."""

    def __init__(self, rule: object, detail: str) -> None:
        super().__init__(f"invalid rule: {detail}")
        self.rule = rule
        self.detail = detail


class BreakGlassRejectedError(CommandRejectedError, PolicyError):
    """A break-glass request, approval or denial that breaks the rules.

    `code` names the rule (`unknown-request`, `not-pending`, `not-approver`,
    `self-approval-disabled`, `reason-required`, `duration-out-of-bounds`, `unknown-user`,
    `user-disabled`, `unknown-cluster`, `invalid-role`, `approver-disabled`,
    `duplicate-request`).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
