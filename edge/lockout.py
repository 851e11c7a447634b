"""Failed-login lockout, counted from the `login` family of the log.

`LoginLedger` folds LoginSucceeded / LoginFailed / UserLockedOut per user name (known or not:
unknown names lock out the same way, so a lockout says nothing about whether a user exists).
It also remembers each name's last log sequence: a login appends its outcome expecting that
sequence, so two replicas judging the same name at once cannot both miss a lockout (the loser
re-reads and judges again). Pure: no I/O, time only from events and the `now` passed in.

Counted failures: password logins refused for an unknown user, a wrong password, or a user
without a password. A refusal of a locked or disabled user does not count, nor do OIDC ones.
A success or a lockout starts the count afresh.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from domain import events

COUNTED_REASONS = frozenset({"unknown-user", "bad-password", "no-password"})


@dataclass
class LoginRecord:
    last_seq: int = 0
    """The last log sequence of this name's login subject this ledger has applied."""
    failures: list[datetime] = field(default_factory=list)
    """Times of counted failures since the last success or lockout (the latest few)."""
    locked_until: datetime | None = None

    def locked_at(self, now: datetime) -> datetime | None:
        """Until when the name is locked, if it is at `now`."""
        if self.locked_until is not None and now < self.locked_until:
            return self.locked_until
        return None

    def failures_within(self, now: datetime, window: timedelta) -> int:
        return sum(1 for at in self.failures if now - at < window)


class LoginLedger:
    """Per user name: recent failures, lockout and last sequence. `keep` bounds how many
    failure times a name keeps (the lockout threshold is enough)."""

    def __init__(self, keep: int = 5) -> None:
        self.keep = keep
        self.records: dict[str, LoginRecord] = {}

    def record(self, user: str) -> LoginRecord:
        return self.records.get(user) or LoginRecord()

    def apply(self, seq: int, event: object) -> None:
        if not isinstance(event, events.LoginSucceeded | events.LoginFailed | events.UserLockedOut):
            return
        record = self.records.setdefault(event.user, LoginRecord())
        record.last_seq = max(record.last_seq, seq)
        match event:
            case events.LoginSucceeded():
                record.failures.clear()
            case events.UserLockedOut():
                record.failures.clear()
                record.locked_until = event.until
            case events.LoginFailed() if (
                event.method == "password" and event.reason in COUNTED_REASONS
            ):
                record.failures.append(event.time)
                del record.failures[: -self.keep]


@dataclass(frozen=True)
class LockoutRule:
    failures: int
    window: timedelta
    lock_for: timedelta

    def locks_after_failure(self, record: LoginRecord, now: datetime) -> datetime | None:
        """If one more counted failure at `now` locks the name: until when."""
        if record.failures_within(now, self.window) + 1 >= self.failures:
            return now + self.lock_for
        return None
