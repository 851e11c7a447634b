"""Password logins of local users, with lockout, and the audit events of every login.

Flow of `PasswordLogin.login(user, password)`:

1. A name locked out now is refused at once (`LoginFailed` reason `locked`).
2. The user and its password hash are read from the control plane, and the password checked
   with argon2id; unknown users and users without a password are checked against a dummy hash,
   so they take as long as a wrong password and get the same answer.
3. The outcome is appended to the name's `login` subject *expecting the last sequence this
   replica has seen there*. If another replica wrote in between, the append fails, this replica
   waits for that event and judges again (the password is not checked twice). So lockout is
   decided from the log, and all replicas agree on it.
4. A counted failure that reaches the threshold is stored together with `UserLockedOut`, in
   one atomic append. A success stores `LoginSucceeded` and opens a console session.

Login events are written here directly with `broker.store.EventStore` (family `login`), not
through the control plane's aggregates: they are facts about attempts, not state.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from broker.errors import ConcurrencyError
from broker.store import EventStore
from domain import events
from domain.aggregates import Credential, User
from domain.control import MAX_NAME
from edge.console_sessions import ConsoleSessions, StartedSession
from edge.errors import (
    BadLoginRequestError,
    LockedOutError,
    LoginBusyError,
    LoginRefusedError,
    UserDisabledError,
)
from edge.identity_feed import IdentityFeed
from edge.identity_settings import IdentitySettings
from edge.lockout import COUNTED_REASONS, LockoutRule, LoginLedger
from edge.passwords import PasswordChecker
from edge.sessions import mint

log = logging.getLogger("kubegate.edge.login")

REFUSED = "invalid user name or password"
MAX_ATTEMPTS = 8


@dataclass(frozen=True)
class Attempt:
    """One login attempt's context, for its audit events."""

    user: str
    method: str
    source_ip: str = ""
    cause: str = ""


class LoginAudit:
    """Appends login events. `expect` (the name's last sequence) makes an append conflict
    when someone else wrote on that name since."""

    def __init__(self, store: EventStore, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock

    def _fields(self, attempt: Attempt) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "time": self.clock(),
            "actor": attempt.user or "anonymous",
            "cause": attempt.cause,
            "user": attempt.user,
            "method": attempt.method,
            "source_ip": attempt.source_ip,
        }

    async def succeeded(self, attempt: Attempt, session_id: str, expect: int | None) -> int:
        event = events.LoginSucceeded(**self._fields(attempt), session_id=session_id)
        return await self.store.append(event, expect_last_seq=expect)

    async def failed(
        self,
        attempt: Attempt,
        reason: str,
        expect: int | None,
        *,
        lock_until: datetime | None = None,
        failures: int = 0,
    ) -> list[int]:
        failed = events.LoginFailed(**self._fields(attempt), reason=reason)
        if lock_until is None:
            return [await self.store.append(failed, expect_last_seq=expect)]
        locked = events.UserLockedOut(**self._fields(attempt), until=lock_until, failures=failures)
        return await self.store.append_many([(failed, expect), (locked, None)])


def check_user_name(user: str) -> None:
    """Names that cannot exist (empty, too long, whitespace or control characters) are bad
    requests; anything else is judged like any other attempt."""
    if not isinstance(user, str) or not user:
        raise BadLoginRequestError("a login needs a user name")
    if len(user) > MAX_NAME or any(ch.isspace() or not ch.isprintable() for ch in user):
        raise BadLoginRequestError("that is not a valid user name")


class _NameLock:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class PasswordLogin:
    def __init__(
        self,
        *,
        control: Any,  # domain.control.ControlPlane
        audit: LoginAudit,
        ledger: LoginLedger,
        feed: IdentityFeed,
        checker: PasswordChecker,
        sessions: ConsoleSessions,
        settings: IdentitySettings,
        clock: Callable[[], datetime],
    ) -> None:
        self.control = control
        self.audit = audit
        self.ledger = ledger
        self.feed = feed
        self.checker = checker
        self.sessions = sessions
        self.settings = settings
        self.clock = clock
        self.rule = LockoutRule(
            settings.lockout_failures, settings.lockout_window, settings.lockout_for
        )
        self._locks: dict[str, _NameLock] = {}

    async def login(
        self, user: str, password: str, *, source_ip: str = "", cause: str = ""
    ) -> StartedSession:
        check_user_name(user)
        if (
            not isinstance(password, str)
            or len(password.encode()) > self.settings.max_password_bytes
        ):
            raise BadLoginRequestError("that is not a valid password")
        attempt = Attempt(user=user, method="password", source_ip=source_ip, cause=cause)
        until = self.ledger.record(user).locked_at(self.clock())
        if until is not None:
            return await self._settle(attempt, "locked", None)
        reason, needs_rehash = await self._judge_password(user, password)
        started = await self._settle(attempt, reason, mint() if not reason else None)
        if needs_rehash:
            await self._rehash(user, password)
        return started

    async def _judge_password(self, user: str, password: str) -> tuple[str, bool]:
        """The refusal reason ("" when the password is right) and whether to rehash."""
        found, credential = await asyncio.to_thread(self._load, user)
        stored = credential.password_hash if credential is not None else ""
        checked = await self.checker.check(stored or None, password)
        if found is None:
            return "unknown-user", False
        if not stored:
            return "no-password", False
        if not checked.ok:
            return "bad-password", False
        if not found.enabled or found.revoked:
            return "disabled", False
        return "", checked.needs_rehash

    def _load(self, user: str) -> tuple[User | None, Credential | None]:
        return self.control.find(User, user), self.control.find(Credential, user)

    async def _settle(self, attempt: Attempt, reason: str, minted: Any) -> StartedSession:
        """Record the outcome against the name's last sequence; judge again on a conflict.
        Attempts on one name settle one at a time here, so only other replicas conflict."""
        lock = self._locks.setdefault(attempt.user, _NameLock())
        lock.users += 1
        try:
            async with lock.lock:
                await self._record(attempt, reason, minted)
        finally:
            lock.users -= 1
            if not lock.users:
                del self._locks[attempt.user]
        return await self.sessions.open(minted, attempt.user, attempt.method)

    async def _record(self, attempt: Attempt, reason: str, minted: Any) -> None:
        for _ in range(MAX_ATTEMPTS):
            now = self.clock()
            record = self.ledger.record(attempt.user)
            until = record.locked_at(now)
            outcome = "locked" if until is not None else reason
            expect = record.last_seq
            try:
                if not outcome:
                    await self.audit.succeeded(attempt, minted.session_id, expect)
                    break
                lock_until = None
                if outcome in COUNTED_REASONS:
                    lock_until = self.rule.locks_after_failure(record, now)
                failures = record.failures_within(now, self.rule.window) + 1
                await self.audit.failed(
                    attempt, outcome, expect, lock_until=lock_until, failures=failures
                )
            except ConcurrencyError as exc:
                await self._catch_up(attempt.user, exc)
                continue
            shown = (until or record.locked_until) if outcome == "locked" else lock_until
            self._refuse(attempt.user, outcome, shown)
        else:
            raise LoginBusyError("could not record the login (too many at once for this user)")

    async def _catch_up(self, user: str, conflict: ConcurrencyError) -> None:
        actual = getattr(conflict, "actual", None)
        if actual is None:
            actual = await self.audit.store.last_seq("login", user)
        await self.feed.wait_applied(actual, self.settings.visible_within.total_seconds())

    def _refuse(self, user: str, outcome: str, until: datetime | None) -> None:
        log.info("login refused", extra={"user": user, "reason": outcome})
        if outcome == "locked" or until is not None:
            after = f" after {until.isoformat(timespec='seconds')}" if until else " later"
            raise LockedOutError(f"too many failed logins for {user}; try again{after}", until)
        if outcome == "disabled":
            raise UserDisabledError(f"user {user} is disabled", reason=outcome)
        raise LoginRefusedError(REFUSED, reason=outcome)

    async def _rehash(self, user: str, password: str) -> None:
        """The stored hash uses weaker parameters than ours: store a fresh one."""
        try:
            fresh = await asyncio.to_thread(self.checker.hash, password)
            await asyncio.to_thread(
                self.control.set_password_hash,
                user,
                fresh,
                actor=user,
                command_id=f"rehash:{uuid.uuid4().hex}",
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("could not upgrade a password hash", extra={"user": user}, exc_info=True)
