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


class InvalidCommandError(CommandRejectedError):
    """A command whose arguments break a rule on their own (bad name, empty window, unknown
    role), whatever the state."""


class ConcurrentUpdateError(DomainError):
    """A command kept losing optimistic-concurrency races (others changed the same aggregates
    between its read and its write) and gave up after `attempts` tries; nothing was stored."""

    def __init__(self, command_id: str, attempts: int) -> None:
        super().__init__(f"command {command_id!r} lost {attempts} concurrent-update races")
        self.command_id = command_id
        self.attempts = attempts
