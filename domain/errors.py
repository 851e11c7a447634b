"""The root of kubegate's error tree and the domain's own failures.

Every package has an `errors.py` whose root subclasses `KubegateError`; library exceptions are
converted at the package boundary with the original kept as `__cause__`.
"""

from __future__ import annotations


class KubegateError(Exception):
    """Root of every error kubegate raises on purpose."""


class DomainError(KubegateError):
    """A command or event the domain rejects."""


class MalformedEventError(DomainError):
    """Bytes that are not a kubegate event (bad JSON, missing envelope fields, wrong types)."""


class CommandRejectedError(DomainError):
    """A command that breaks a domain rule (unknown user, duplicate name, bad time window)."""


class NotFoundError(CommandRejectedError):
    """A command names something that does not exist."""


class AlreadyExistsError(CommandRejectedError):
    """A command creates something that already exists."""
