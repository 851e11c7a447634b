"""Console session tokens, and the read model of the sessions that have not ended yet.

A token is `kgs.<session id>.<secret>`: the secret is 256 random bits; the log keeps only the
SHA-256 of the whole token (`ConsoleSessionStarted.token_hash`), so reading the log never
gives anyone a usable token. The session id in the token lets any replica find the session
without an index of hashes; the hash comparison is constant-time.

`SessionBook` folds the `session` family: sessions started and not ended, with their last
logged activity, so the sweeper knows which are due to end and when the next one is. Pure: no
I/O, time only from events and the `now` passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from domain import events

TOKEN_PREFIX = "kgs"
_TOKEN = re.compile(r"kgs\.(cs-[0-9a-f]{24})\.([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class MintedToken:
    session_id: str
    token: str

    @property
    def token_hash(self) -> str:
        return token_hash(self.token)


def mint() -> MintedToken:
    session_id = f"cs-{secrets.token_hex(12)}"
    return MintedToken(session_id, f"{TOKEN_PREFIX}.{session_id}.{secrets.token_urlsafe(32)}")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def session_id_of(token: str) -> str | None:
    """The session id a well-formed token names; None for anything else."""
    found = _TOKEN.fullmatch(token)
    return found.group(1) if found else None


@dataclass
class OpenSession:
    session_id: str
    user: str
    token_hash: str
    method: str
    started_at: datetime
    expires_at: datetime
    idle_timeout: timedelta
    last_active: datetime

    @property
    def idle_deadline(self) -> datetime:
        return self.last_active + self.idle_timeout

    def over_at(self, now: datetime) -> str:
        """`expired` or `idle` if it should have ended by `now`, else ""."""
        if now >= self.expires_at:
            return "expired"
        if now >= self.idle_deadline:
            return "idle"
        return ""

    def matches(self, token: str) -> bool:
        return hmac.compare_digest(self.token_hash, token_hash(token))


class SessionBook:
    def __init__(self) -> None:
        self.sessions: dict[str, OpenSession] = {}

    def get(self, session_id: str) -> OpenSession | None:
        return self.sessions.get(session_id)

    def apply(self, event: object) -> None:
        match event:
            case events.ConsoleSessionStarted():
                self.sessions[event.session_id] = OpenSession(
                    session_id=event.session_id,
                    user=event.user,
                    token_hash=event.token_hash,
                    method=event.method,
                    started_at=event.time,
                    expires_at=event.expires_at,
                    idle_timeout=timedelta(seconds=event.idle_timeout_s),
                    last_active=event.time,
                )
            case events.ConsoleSessionTouched():
                found = self.sessions.get(event.session_id)
                if found is not None and event.time > found.last_active:
                    found.last_active = event.time
            case events.ConsoleSessionEnded():
                self.sessions.pop(event.session_id, None)
            case _:
                pass

    def due(self, now: datetime) -> list[tuple[OpenSession, str]]:
        """Sessions past their expiry or idle deadline, with which."""
        return [(s, over) for s in self.sessions.values() if (over := s.over_at(now))]

    def next_deadline(self) -> datetime | None:
        return min(
            (min(s.expires_at, s.idle_deadline) for s in self.sessions.values()), default=None
        )

    def of_user(self, user: str) -> list[OpenSession]:
        return [s for s in self.sessions.values() if s.user == user]
