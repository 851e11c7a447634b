"""Password checks with argon2id (argon2-cffi), off the event loop and bounded.

Each check costs about 64 MiB and a core for a tenth of a second or more, so checks run in
worker threads, at most `concurrency` at once, with at most `queue` more waiting; beyond that a
login is refused as busy rather than letting a flood of guesses exhaust the machine.

A user without a password (unknown, or signing in through an IdP) is checked against a dummy
hash made with the same parameters, so the answer takes as long as a wrong password would.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from edge.errors import LoginBusyError

log = logging.getLogger("kubegate.edge.passwords")


@dataclass(frozen=True)
class Checked:
    ok: bool
    needs_rehash: bool = False


class PasswordChecker:
    def __init__(
        self, hasher: PasswordHasher | None = None, *, concurrency: int = 2, queue: int = 64
    ) -> None:
        self.hasher = hasher or PasswordHasher()
        self._dummy = self.hasher.hash(secrets.token_urlsafe(24))
        self._slots = asyncio.Semaphore(concurrency)
        self._queue = queue
        self._waiting = 0

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    async def check(self, stored_hash: str | None, password: str) -> Checked:
        """Whether `password` matches `stored_hash` (None or "": no password, always False,
        at the cost of a real check)."""
        if self._waiting >= self._queue:
            raise LoginBusyError("too many logins in progress; try again shortly")
        self._waiting += 1
        try:
            async with self._slots:
                return await asyncio.to_thread(self._check, stored_hash or None, password)
        finally:
            self._waiting -= 1

    def _check(self, stored_hash: str | None, password: str) -> Checked:
        try:
            self.hasher.verify(stored_hash or self._dummy, password)
        except VerificationError:
            return Checked(ok=False)
        except InvalidHashError:
            log.error("a stored password hash is not a valid argon2 hash")
            return Checked(ok=False)
        if stored_hash is None:  # the dummy matched a random secret: cannot happen
            return Checked(ok=False)
        return Checked(ok=True, needs_rehash=self.hasher.check_needs_rehash(stored_hash))
